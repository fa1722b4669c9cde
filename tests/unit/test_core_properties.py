"""Property-based tests of the filesystem core, driven without a kernel.

`artfs.fs.filesystem.FileSystem` is built as the mount daemon builds it (fs/daemon.py
`build`), over a local store in a temporary folder, with the no-op `Kernel`, and its
handlers are called as the kernel would call them, in one `trio.run`.

(a) Random sequences of draft operations (write, truncate, unlink, mkdir, rmdir, rename,
    chmod, commit) are checked against a model: a dict of paths to bytes and modes. The
    driver plays the kernel's VFS: it only sends requests the VFS would let through (it
    refuses, as the VFS does, an unlink of a folder or a rename of a folder into itself),
    and the core must carry out each one as the model says (or refuse it with the errno
    the model names: ENOTEMPTY). After every commit the new version, and a new draft of
    it, must show the model's tree.
(b) Random reads (offsets and sizes, sequential runs and seeks) of published files,
    small (packed) and large (chunked, > 1 MiB), on a cold cache, must return exactly the
    source bytes.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Iterator

import pytest
import trio
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import artfs
from artfs.errors import ArtfsError, errno_of
from artfs.fs.daemon import MountOptions, build
from artfs.fs.filesystem import FileSystem
from artfs.fs.kernel import Kernel
from artfs.fs.tree import ROOT_INO

MiB = 1 << 20
# Each example builds a store, a cache and drafts (SQLite, fsyncs) and removes them: on tmpfs
# that costs a fraction of what it costs on disk, and the unit level stays fast.
SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
# Modest and fast: the unit level runs in seconds (ARTFS_PROPERTY_EXAMPLES=1000 for a longer
# hunt). No example database (nothing left behind) and no "explain" phase (it reruns a
# failure ~100 times to annotate it).
SETTINGS = settings(
    deadline=None,
    max_examples=int(os.environ.get("ARTFS_PROPERTY_EXAMPLES", "60")),
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
)


# -- the core, as the daemon builds it ---------------------------------------------------


@dataclass
class Core:
    fs: FileSystem
    store_url: str

    async def lookup_path(self, start: int, path: str) -> int:
        ino = start
        for part in [p for p in path.split("/") if p]:
            ino = (await self.fs.lookup(ino, part.encode())).attr.ino
        return ino

    async def read_all(self, ino: int) -> bytes:
        size = (await self.fs.getattr(ino)).attr.size
        opened = await self.fs.open(ino, os.O_RDONLY)
        try:
            out = b""
            while True:  # as read(2) does: until a short read
                part = await self.fs.read(opened.fh, len(out), 128 << 10)
                out += part
                if not part:
                    break
            assert len(out) == size, f"read {len(out)} bytes of a file whose size is {size}"
            return out
        finally:
            await self.fs.release(opened.fh)

    async def tree(self, ino: int, prefix: str = "") -> dict[str, tuple]:
        """{path: ("dir", mode) | ("file", bytes, mode)} of everything under `ino`."""
        fh = await self.fs.opendir(ino)
        try:
            entries = [
                (name.decode(), reply) for _, name, reply, _ in self.fs.listing(fh, 0) if name not in (b".", b"..")
            ]  # listed as ext4 lists them; not entries of the tree
        finally:
            self.fs.releasedir(fh)
        out: dict[str, tuple] = {}
        for name, reply in entries:
            path = f"{prefix}{name}"
            child = (await self.fs.lookup(ino, name.encode())).attr  # what a lookup says, too
            assert child.ino == reply.attr.ino and child.mode == reply.attr.mode, path
            if stat.S_ISDIR(child.mode):
                out[path] = ("dir", stat.S_IMODE(child.mode))
                out.update(await self.tree(child.ino, path + "/"))
            else:
                assert stat.S_ISREG(child.mode), f"{path}: mode {child.mode:o}"
                out[path] = ("file", await self.read_all(child.ino), stat.S_IMODE(child.mode))
        return out


def open_core(resources: ExitStack, root: str, store_url: str) -> Core:
    cache = os.path.join(root, "cache")
    os.makedirs(cache, exist_ok=True)
    opts = MountOptions(
        mountpoint=os.path.join(root, "mnt"), store_url=store_url, cache_dir=cache, cache_size=1 << 30, refresh=0.0
    )
    return Core(build(opts, Kernel(), resources), store_url)


def run_core(root: str, store_url: str, body) -> None:
    """Runs `await body(core)` with the core's background work in a nursery, as the daemon does."""

    async def main():
        with ExitStack() as resources:
            core = open_core(resources, root, store_url)
            async with trio.open_nursery() as nursery:
                core.fs.content.attach(nursery)
                await body(core)
                # The nursery then waits for the read-ahead still running: nothing may write
                # into the folders after this returns (they are removed).

    trio.run(main)


def publish(store_url: str, root: str, files: dict[str, bytes], name: str = "p/a") -> None:
    src = os.path.join(root, "src")
    for path, data in files.items():
        full = os.path.join(src, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(data)
        os.chmod(full, 0o644)
    store = artfs.Store(store_url, os.path.join(root, "api-cache"))
    art = artfs.Artifact(name, type="dataset")
    art.add_dir(src)
    store.log_artifact(art)


# -- (a) draft operations against a model ------------------------------------------------

NAMES = ["a", "b", "c"]
paths = st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map("/".join)
modes = st.sampled_from([0o644, 0o600, 0o755, 0o700, 0o444, 0o4755, 0o1777])
ops = st.one_of(
    # Offsets near 1 MiB too: files that become chunked (large) objects when committed.
    st.tuples(
        st.just("write"),
        paths,
        st.integers(0, 3000) | st.integers(MiB - 200, MiB + 200),
        st.binary(max_size=400),
        st.booleans(),
    ),
    st.tuples(st.just("truncate"), paths, st.integers(0, 5000)),
    st.tuples(st.just("unlink"), paths),
    st.tuples(st.just("mkdir"), paths),
    st.tuples(st.just("rmdir"), paths),
    st.tuples(st.just("rename"), paths, paths),
    st.tuples(st.just("chmod"), paths, modes),
    st.tuples(st.just("commit")),
    # Descriptors held open across other operations (POSIX: they follow the file through
    # renames, see writes made by path, and keep an unlinked or replaced file readable).
    st.tuples(st.just("hold"), paths),
    st.tuples(st.just("read_held"), st.integers(0, 2)),
    st.tuples(st.just("write_held"), st.integers(0, 2), st.integers(0, 500), st.binary(min_size=1, max_size=100)),
)
seeds = st.dictionaries(st.sampled_from(["a", "b/c", "c/a/b", "big"]), st.binary(max_size=300), max_size=3)


@dataclass
class Model:
    """What a draft holds: {path: ["dir", mode] | ["file", bytes, mode]}."""

    nodes: dict[str, list] = field(default_factory=dict)

    def parent_ok(self, path: str) -> bool:
        parent = path.rpartition("/")[0]
        return parent == "" or (parent in self.nodes and self.nodes[parent][0] == "dir")

    def below(self, path: str) -> list[str]:
        return [p for p in self.nodes if p.startswith(path + "/")]

    def copy(self) -> "Model":
        return Model({p: list(n) for p, n in self.nodes.items()})

    def view(self) -> dict[str, tuple]:
        return {p: tuple(n) for p, n in self.nodes.items()}

    def identity(self) -> tuple:
        """A version's identity: paths, bytes, the executable bit and empty folders."""
        files = sorted((p, n[1], bool(n[2] & 0o111)) for p, n in self.nodes.items() if n[0] == "file")
        empty = sorted(p for p, n in self.nodes.items() if n[0] == "dir" and not self.below(p))
        return files, empty

    def as_version(self) -> dict[str, tuple]:
        """How a version shows the tree: write bits off."""
        return {p: (n[0], *n[1:-1], n[-1] & 0o7555) for p, n in self.nodes.items()}


def splice(old: bytes, off: int, data: bytes) -> bytes:
    padded = old + b"\0" * max(0, off - len(old))
    return padded[:off] + data + padded[off + len(data) :]


def resize(old: bytes, size: int) -> bytes:
    return old[:size] + b"\0" * max(0, size - len(old))


async def expect_errno(code: int, call) -> None:
    try:
        await call
    except ArtfsError as e:
        assert errno_of(e) == code, f"expected {errno.errorcode[code]}, got {e!r}"
    else:
        raise AssertionError(f"expected {errno.errorcode[code]}, but it succeeded")


class DraftDriver:
    """Plays the kernel's VFS over one draft: path in, the core's handlers out."""

    def __init__(self, core: Core, model: Model):
        self.core, self.fs, self.model = core, core.fs, model
        self.versions = 1  # v0 is the seed
        self.draft_number = 0
        self.committed = model.copy()  # the newest version's tree
        # Open read-write descriptors: (fh, the model's node of their file). The node is the
        # file's identity: a rename moves it, an unlink drops its name but not the node.
        self.held: list[tuple[int, list]] = []

    async def start(self) -> None:
        self.artifact = await self.core.lookup_path(ROOT_INO, "p/a")
        self.drafts = await self.core.lookup_path(self.artifact, "drafts")
        await self.new_draft()

    async def new_draft(self) -> None:
        self.draft_number += 1
        self.name = f"d{self.draft_number}"
        self.root = (await self.fs.mkdir(self.drafts, self.name.encode(), 0o755)).attr.ino
        await self.check_draft()

    async def where(self, path: str) -> tuple[int, bytes]:
        parent, _, name = path.rpartition("/")
        return await self.core.lookup_path(self.root, parent), name.encode()

    async def apply(self, op: tuple) -> None:
        await getattr(self, "op_" + op[0])(*op[1:])
        if op[0] in ("write", "truncate", "unlink", "mkdir", "rmdir", "rename", "chmod", "hold"):
            for path in {p for p in op[1:] if isinstance(p, str)}:
                await self.check_path(path)

    async def check_path(self, path: str) -> None:
        """What a lookup and a stat of `path` say right after an operation (the draft keeps
        names and attributes in memory too: they must not go stale)."""
        node = self.model.nodes.get(path)
        if node is None:
            if not self.model.parent_ok(path):
                return  # the VFS answers ENOENT / ENOTDIR itself
            parent_ino, name = await self.where(path)
            await expect_errno(errno.ENOENT, self.fs.lookup(parent_ino, name))
            return
        ino = await self.core.lookup_path(self.root, path)
        attr = (await self.fs.getattr(ino)).attr
        assert stat.S_ISDIR(attr.mode) == (node[0] == "dir"), path
        assert stat.S_IMODE(attr.mode) == node[-1], f"{path}: mode {attr.mode:o}, model {node[-1]:o}"
        if node[0] == "file":
            assert attr.size == len(node[1]), f"{path}: size {attr.size}, model {len(node[1])}"
            assert await self.core.read_all(ino) == node[1], path

    async def op_write(self, path: str, off: int, data: bytes, trunc: bool) -> None:
        m = self.model.nodes
        if not self.model.parent_ok(path) or (path in m and m[path][0] == "dir"):
            return  # the VFS answers ENOENT / ENOTDIR / EISDIR itself
        if path in m:
            flags = os.O_WRONLY | (os.O_TRUNC if trunc else 0)
            opened = await self.fs.open(await self.core.lookup_path(self.root, path), flags)
            old = b"" if trunc else m[path][1]
        else:
            parent, name = await self.where(path)
            opened, _ = await self.fs.create(parent, name, stat.S_IFREG | 0o644, os.O_WRONLY | os.O_CREAT)
            m[path] = ["file", b"", 0o644]
            old = b""
        try:
            if data:
                assert await self.fs.write(opened.fh, off, data) == len(data)
                m[path][1] = splice(old, off, data)
            else:
                m[path][1] = old
        finally:
            await self.fs.flush(opened.fh)
            await self.fs.release(opened.fh)

    async def op_truncate(self, path: str, size: int) -> None:
        m = self.model.nodes
        if path not in m or m[path][0] != "file":
            return
        reply = await self.fs.setattr(await self.core.lookup_path(self.root, path), size=size, mode=None, mtime_ns=None)
        assert reply.attr.size == size
        m[path][1] = resize(m[path][1], size)

    async def op_unlink(self, path: str) -> None:
        m = self.model.nodes
        if path not in m or m[path][0] != "file":
            return
        await self.fs.unlink(*await self.where(path))
        del m[path]

    async def op_mkdir(self, path: str) -> None:
        m = self.model.nodes
        if path in m or not self.model.parent_ok(path):
            return
        reply = await self.fs.mkdir(*await self.where(path), 0o755)
        assert stat.S_ISDIR(reply.attr.mode)
        m[path] = ["dir", 0o755]

    async def op_rmdir(self, path: str) -> None:
        m = self.model.nodes
        if path not in m or m[path][0] != "dir":
            return
        if self.model.below(path):
            await expect_errno(errno.ENOTEMPTY, self.fs.rmdir(*await self.where(path)))
            return
        await self.fs.rmdir(*await self.where(path))
        del m[path]

    async def op_rename(self, src: str, dst: str) -> None:
        m = self.model.nodes
        if src not in m or not self.model.parent_ok(dst) or src == dst:
            return
        if dst.startswith(src + "/") or src.startswith(dst + "/"):
            return  # into itself, or over its own ancestor: the VFS refuses (EINVAL, ENOTEMPTY)
        kind = m[src][0]
        if dst in m:
            if (kind == "dir") != (m[dst][0] == "dir"):
                return  # EISDIR / ENOTDIR from the VFS
            if m[dst][0] == "dir" and self.model.below(dst):
                call = self.fs.rename(*await self.where(src), *await self.where(dst), False, False)
                await expect_errno(errno.ENOTEMPTY, call)
                return
        await self.fs.rename(*await self.where(src), *await self.where(dst), False, False)
        moved = {p: n for p, n in m.items() if p == src or p.startswith(src + "/")}
        for p in moved:
            del m[p]
        m.pop(dst, None)
        for p, n in moved.items():
            m[dst + p[len(src) :]] = n

    async def op_chmod(self, path: str, mode: int) -> None:
        m = self.model.nodes
        if path not in m:
            return
        kind = stat.S_IFDIR if m[path][0] == "dir" else stat.S_IFREG
        reply = await self.fs.setattr(
            await self.core.lookup_path(self.root, path), size=None, mode=kind | mode, mtime_ns=None
        )
        assert stat.S_IMODE(reply.attr.mode) == mode
        m[path][-1] = mode

    async def op_hold(self, path: str) -> None:
        node = self.model.nodes.get(path)
        if node is None or node[0] != "file" or len(self.held) >= 3:
            return
        opened = await self.fs.open(await self.core.lookup_path(self.root, path), os.O_RDWR)
        self.held.append((opened.fh, node))

    async def op_read_held(self, i: int) -> None:
        if i < len(self.held):
            fh, node = self.held[i]
            assert await self.fs.read(fh, 0, len(node[1]) + 10) == node[1], "a held descriptor reads its file"

    async def op_write_held(self, i: int, off: int, data: bytes) -> None:
        if i < len(self.held):
            fh, node = self.held[i]
            assert await self.fs.write(fh, off, data) == len(data)
            node[1] = splice(node[1], off, data)

    async def release_held(self) -> None:
        for fh, _ in self.held:
            await self.fs.flush(fh)
            await self.fs.release(fh)
        self.held = []

    async def op_commit(self) -> None:
        await self.release_held()  # the draft goes away with the commit
        token = f"t{self.draft_number}"
        request = json.dumps({"token": token}).encode()
        if not self.model.nodes:
            await expect_errno(errno.EINVAL, self.fs.setxattr(self.root, b"user.artfs.commit", request))
            return  # nothing to commit: the draft stays
        await self.fs.setxattr(self.root, b"user.artfs.commit", request)
        result = json.loads(await self.fs.getxattr(self.drafts, f"user.artfs.result.{token}".encode()))
        if self.model.identity() == self.committed.identity():
            # Same content as the base: no new version; the base it names keeps its own modes.
            assert result == {"version": f"p/a:v{self.versions - 1}", "created": False}
            self.model.nodes = self.committed.copy().nodes
        else:
            assert result == {"version": f"p/a:v{self.versions}", "created": True}
            self.versions += 1
            self.committed = self.model.copy()
        version = await self.core.lookup_path(self.artifact, f"v{self.versions - 1}")
        assert await self.core.tree(version) == self.committed.as_version()
        with pytest.raises(ArtfsError):  # the committed draft is gone
            await self.fs.lookup(self.drafts, self.name.encode())
        await self.new_draft()  # a draft of latest shows the version's tree

    async def check_draft(self) -> None:
        assert await self.core.tree(self.root) == self.model.view()


@SETTINGS
@given(seed=seeds, steps=st.lists(ops, max_size=25))
def test_draft_operations_match_a_model(seed, steps):
    seed = {p: (d * 4000 if p == "big" else d) for p, d in seed.items()}  # "big": copied up on change
    with tempfile.TemporaryDirectory(dir=SCRATCH) as root:
        store_url = os.path.join(root, "store")
        publish(store_url, root, seed or {"a": b""})
        model = Model()
        for path, data in (seed or {"a": b""}).items():
            parts = path.split("/")
            for i in range(1, len(parts)):
                model.nodes["/".join(parts[:i])] = ["dir", 0o755]
            model.nodes[path] = ["file", data, 0o644]

        async def body(core: Core) -> None:
            driver = DraftDriver(core, model)
            await driver.start()
            for op in steps:
                await driver.apply(op)
            for i in range(len(driver.held)):
                await driver.op_read_held(i)
            await driver.check_draft()
            await driver.op_commit()  # whatever the sequence did, it commits to the model's tree

        os.umask(0o022)
        run_core(root, store_url, body)


def test_a_reader_opened_before_a_base_file_changes_reads_the_new_bytes():
    with tempfile.TemporaryDirectory(dir=SCRATCH) as root:
        store_url = os.path.join(root, "store")
        publish(store_url, root, {"f": b"base bytes"})

        async def body(core: Core) -> None:
            drafts = await core.lookup_path(ROOT_INO, "p/a/drafts")
            draft = (await core.fs.mkdir(drafts, b"d", 0o755)).attr.ino
            ino = await core.lookup_path(draft, "f")
            reader = await core.fs.open(ino, os.O_RDONLY)
            assert await core.fs.read(reader.fh, 0, 100) == b"base bytes"
            writer = await core.fs.open(ino, os.O_WRONLY)
            await core.fs.write(writer.fh, 0, b"NEW!")
            await core.fs.release(writer.fh)
            assert await core.read_all(ino) == b"NEW! bytes"  # a new descriptor sees the change
            assert await core.fs.read(reader.fh, 0, 100) == b"NEW! bytes"  # so must the old one

        run_core(root, store_url, body)


# -- (b) reads of published files --------------------------------------------------------


def _source_files() -> dict[str, bytes]:
    rnd = __import__("random").Random(7)
    files = {f"small/{i}.bin": rnd.randbytes(n) for i, n in enumerate([0, 1, 4095, 20_000, 70_000, 300_000])}
    files["large/one.bin"] = rnd.randbytes(MiB + 12_345)  # just over one chunk
    files["large/three.bin"] = rnd.randbytes(3 * MiB + 777)
    return files


SOURCES = _source_files()


@pytest.fixture(scope="module")
def published() -> Iterator[str]:
    with tempfile.TemporaryDirectory(dir=SCRATCH) as root:
        store_url = os.path.join(root, "store")
        publish(store_url, root, SOURCES)
        yield store_url


def reads_of(name: str):
    size = len(SOURCES[name])
    one = st.tuples(st.integers(0, size + 1000), st.sampled_from([1, 100, 4096, 65_536, 131_072, MiB + 3]))
    # Runs of sequential reads too: each read starts where the last one ended.
    run = st.tuples(st.integers(0, size), st.integers(1, 8), st.sampled_from([4096, 131_072])).map(
        lambda r: [(r[0] + i * r[2], r[2]) for i in range(r[1])]
    )
    return st.lists(st.one_of(one.map(lambda r: [r]), run), min_size=1, max_size=6).map(
        lambda rs: [r for group in rs for r in group]
    )


@st.composite
def file_and_reads(draw):
    name = draw(st.sampled_from(sorted(SOURCES)))
    return name, draw(reads_of(name))


@SETTINGS
@given(plans=st.lists(file_and_reads(), min_size=1, max_size=3))
def test_random_reads_of_published_files_return_the_source_bytes(published, plans):
    with tempfile.TemporaryDirectory(dir=SCRATCH) as root:  # a cold cache each time

        async def body(core: Core) -> None:
            version = await core.lookup_path(ROOT_INO, "p/a/v0")
            handles = []
            for name, reads in plans:  # several files open at once, reads interleaved
                ino = await core.lookup_path(version, name)
                assert (await core.fs.getattr(ino)).attr.size == len(SOURCES[name])
                handles.append((name, (await core.fs.open(ino, os.O_RDONLY)).fh, reads))
            for step in range(max(len(r) for _, _, r in handles)):
                for name, fh, reads in handles:
                    if step < len(reads):
                        off, size = reads[step]
                        got = await core.fs.read(fh, off, size)
                        assert got == SOURCES[name][off : off + size], f"{name} [{off}, +{size})"
            for _, fh, _ in handles:
                await core.fs.release(fh)

        run_core(root, published, body)
