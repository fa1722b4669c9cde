"""The mount through the real kernel: what a user sees with ordinary tools, on the
local store and on SeaweedFS. Tests that read content mount a fresh mount point with a
fresh cache (the `mounter` fixture); tests that only look at names, attributes and
errors share one mount per backend. Nothing is left mounted or running, pass or fail.
"""

from __future__ import annotations

import errno
import hashlib
import json
import mmap
import os
import random
import shutil
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import blake3
import pytest

from conftest import fresh_s3_url, read_tree, run_artfs, write_tree
from mounts import MiB, errno_of, mounter, mounting, wait_for  # noqa: F401  (mounter is a fixture)

pytestmark = pytest.mark.mount

NAME = "demo/bike-dataset"
BIG = 5 * MiB + 12345  # chunked: read in ranged, verified 1 MiB pieces


def v1_files() -> dict[str, bytes]:
    rnd = random.Random(1)
    files = {
        "big.bin": rnd.randbytes(BIG),
        "exactly-1MiB.bin": rnd.randbytes(MiB),
        "1MiB-plus-1.bin": rnd.randbytes(MiB + 1),
        "empty": b"",
        "README.md": b"Bikes, counted by hand.\n",
        "bin/count.sh": b"#!/bin/sh\necho 42\n",
    }
    for i in range(240):
        files[f"images/{i % 6}/img{i:03d}.jpg"] = rnd.randbytes(rnd.randrange(1, 6000))
    return files


V0_FILES = {"README.md": b"Bikes, first try.\n", "labels.csv": b"id,bikes\n1,3\n"}
EXECUTABLE = {"bin/count.sh"}
V1_METADATA = {"epochs": 3, "source": "hand-counted", "nested": {"ok": True}}


@dataclass
class Dataset:
    """demo/bike-dataset with v0 (alias best) and v1 (latest), published with the CLI."""

    store: str
    src: str  # v1's files on disk
    files: dict[str, bytes]
    tmp: str

    def cli(self, *args, **kw):
        kw.setdefault("cache", os.path.join(self.tmp, "cli-cache"))
        return run_artfs(args, store=self.store, **kw)

    def put(self, folder: str, *args) -> str:
        return self.cli("put", folder, "--name", NAME, "--type", "dataset", *args).ok().out

    def record(self, spec: str):
        from artfs import Store

        return Store(self.store, os.path.join(self.tmp, "cli-cache")).resolve(spec)


def publish_dataset(store: str, tmp) -> Dataset:
    tmp = str(tmp)
    v0 = write_tree(os.path.join(tmp, "src-v0"), V0_FILES)
    files = v1_files()
    src = write_tree(os.path.join(tmp, "src-v1"), files)
    for rel in EXECUTABLE:
        os.chmod(os.path.join(src, rel), 0o755)
    ds = Dataset(store, src, files, tmp)
    assert ds.put(v0, "--description", "first try") == f"{NAME}:v0"
    ds.cli("alias", "add", f"{NAME}:v0", "best").ok()
    assert ds.put(src, "--description", "all the bikes", "--metadata", json.dumps(V1_METADATA)) == f"{NAME}:v1"
    return ds


@pytest.fixture(scope="module", params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def shared(request, tmp_path_factory) -> Dataset:
    """The dataset published once per backend for the tests that only read it."""
    tmp = tmp_path_factory.mktemp(f"dataset-{request.param}")
    if request.param == "local":
        store = str(tmp / "store")
    else:
        store = fresh_s3_url(request.getfixturevalue("s3_test_bucket"))
    return publish_dataset(store, tmp)


@pytest.fixture(scope="module")
def shared_mount(shared, tmp_path_factory):
    """One mount of `shared` for the tests that only look (no cold-read or cache checks)."""
    with mounting(tmp_path_factory.mktemp("shared-mount")) as m:
        yield m(shared.store)


@pytest.fixture
def ds(store_url, tmp_path) -> Dataset:
    """The dataset in a store of this test's own, for tests that commit more versions."""
    return publish_dataset(store_url, tmp_path)


def sh(*cmd, cwd=None, check=True, timeout=60) -> subprocess.CompletedProcess:
    p = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    if check:
        assert p.returncode == 0, f"{' '.join(map(str, cmd))} -> {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def evict_page_cache(path: str) -> None:
    """Drops the kernel's cached pages of one file, so the next read goes to the daemon."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


# -- layout --------------------------------------------------------------------------------------


def test_artifact_folder_shows_versions_aliases_and_drafts(shared, shared_mount):
    m = shared_mount
    assert sh("ls", m.path(NAME)).stdout.split() == ["best", "drafts", "latest", "v0", "v1"]
    assert os.listdir(m.mp) == ["demo"]
    assert os.listdir(m.path("demo")) == ["bike-dataset"]
    assert os.readlink(m.path(NAME, "latest")) == "v1"
    assert sh("readlink", m.path(NAME, "best")).stdout.strip() == "v0"
    assert stat.S_ISLNK(os.lstat(m.path(NAME, "latest")).st_mode)
    assert sorted(os.listdir(m.path(NAME, "latest"))) == sorted(
        ["big.bin", "exactly-1MiB.bin", "1MiB-plus-1.bin", "empty", "README.md", "bin", "images"]
    )
    assert sorted(os.listdir(m.path(NAME, "best"))) == ["README.md", "labels.csv"]


def test_listing_and_stat_fetch_no_content(shared, mounter):
    m = mounter(shared.store)
    v1 = m.path(NAME, "v1")
    sh("ls", "-lR", v1)
    sh("find", v1, "-type", "f")
    sh("du", "-sh", v1)
    sh("getfattr", "-d", "-m", "user.artfs", m.path(NAME, "v1", "big.bin"))
    assert m.fetches() == [], "listing must not fetch file content"
    pieces = [f for _d, _s, fs in os.walk(os.path.join(m.cache, "content")) for f in fs]
    assert pieces == [], f"nothing may be cached by a listing: {pieces}"


# -- ordinary tools read exactly the stored bytes ---------------------------------------------


def _python_read_all(v1, out):
    return read_tree(v1)


def _cat(v1, out):
    got = {}
    for rel in ("big.bin", "exactly-1MiB.bin", "1MiB-plus-1.bin", "empty", "README.md"):
        got[rel] = subprocess.run(["cat", os.path.join(v1, rel)], capture_output=True, check=True).stdout
    return got


def _cp_r(v1, out):
    sh("cp", "-r", v1, out)
    return read_tree(out)


def _tar(v1, out):
    os.makedirs(out)
    tarball = out + ".tar"
    sh("tar", "-C", v1, "-cf", tarball, ".")
    sh("tar", "-C", out, "-xf", tarball)
    return read_tree(out)


def _rsync_a(v1, out):
    sh("rsync", "-a", v1 + "/", out + "/")
    return read_tree(out)


def _md5sum(v1, out):
    lines = sh("find", ".", "-type", "f", "-exec", "md5sum", "{}", "+", cwd=v1).stdout.splitlines()
    return {line.split(None, 1)[1].removeprefix("./"): line.split()[0] for line in lines}


def _mmap(v1, out):
    got = {}
    for rel in ("big.bin", "exactly-1MiB.bin", "1MiB-plus-1.bin", "README.md"):
        with open(os.path.join(v1, rel), "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            # random slices first (page faults out of order, backwards), then the whole mapping
            rnd = random.Random(rel)
            spans = sorted(
                ((a := rnd.randrange(len(mm))), min(len(mm), a + rnd.randrange(1, 300_000))) for _ in range(20)
            )[::-1]
            got.update({f"{rel}[{a}:{b}]": mm[a:b] for a, b in spans})
            got[rel] = mm[:]
    return got


TOOLS = {
    "python-read": _python_read_all,
    "cat": _cat,
    "cp -r": _cp_r,
    "tar": _tar,
    "rsync -a": _rsync_a,
    "md5sum": _md5sum,
    "mmap": _mmap,
}


@pytest.mark.parametrize("tool", list(TOOLS))
def test_tool_reads_exactly_the_stored_bytes(shared, mounter, tmp_path, tool):
    m = mounter(shared.store)
    got = TOOLS[tool](m.path(NAME, "v1"), str(tmp_path / "out"))
    if tool == "md5sum":
        expected = {rel: hashlib.md5(data).hexdigest() for rel, data in shared.files.items()}
    elif tool in ("cat", "mmap"):
        expected = {}
        for key in got:
            rel, _, span = key.partition("[")
            a, b = map(int, span.rstrip("]").split(":")) if span else (0, None)
            expected[key] = shared.files[rel][a:b]
        assert len(got) >= 4
    else:
        expected = shared.files
    assert got.keys() == expected.keys()
    bad = [rel for rel in expected if got[rel] != expected[rel]]
    assert not bad, f"{tool} read different bytes for {bad}"


def test_rsync_a_keeps_modes_and_times(shared, mounter, tmp_path):
    m = mounter(shared.store)
    out = str(tmp_path / "out")
    sh("rsync", "-a", m.path(NAME, "v1") + "/", out + "/")
    src = os.path.join(shared.tmp, "src-v1")
    assert os.stat(os.path.join(out, "bin/count.sh")).st_mode & 0o777 == 0o555
    assert os.stat(os.path.join(out, "README.md")).st_mode & 0o777 == 0o444
    for rel in ("big.bin", "README.md"):  # the files' own times, as put (a version keeps them)
        assert os.stat(os.path.join(out, rel)).st_mtime_ns == os.stat(os.path.join(src, rel)).st_mtime_ns, rel


def test_find_lists_every_file_and_folder(shared, shared_mount):
    m = shared_mount
    v1 = m.path(NAME, "v1")
    files = sh("find", ".", "-type", "f", cwd=v1).stdout.split()
    assert sorted(f.removeprefix("./") for f in files) == sorted(shared.files)
    dirs = sh("find", ".", "-mindepth", "1", "-type", "d", cwd=v1).stdout.split()
    expected_dirs = {os.path.dirname(rel) for rel in shared.files if "/" in rel}
    expected_dirs |= {os.path.dirname(d) for d in expected_dirs if "/" in d}
    assert sorted(d.removeprefix("./") for d in dirs) == sorted(expected_dirs)


def test_du_counts_the_true_sizes(shared, shared_mount):
    m = shared_mount
    v1 = m.path(NAME, "v1")
    total = sum(len(d) for d in shared.files.values())
    assert int(sh("du", "-sb", v1).stdout.split()[0]) == total  # apparent size, in bytes
    human = sh("du", "-sh", v1).stdout.split()[0]
    assert human.endswith("M") and abs(float(human[:-1]) - total / MiB) < 0.5, human


def test_stat_shows_sizes_read_only_modes_and_times_as_put(shared, shared_mount):
    m = shared_mount
    created = shared.record(f"{NAME}:v1").created
    v1, src = m.path(NAME, "v1"), os.path.join(shared.tmp, "src-v1")
    for rel, data in shared.files.items():
        st = os.stat(os.path.join(v1, rel))
        assert stat.S_ISREG(st.st_mode) and st.st_size == len(data), rel
        assert stat.S_IMODE(st.st_mode) == (0o555 if rel in EXECUTABLE else 0o444), rel
        assert st.st_mtime_ns == os.stat(os.path.join(src, rel)).st_mtime_ns, rel  # the file's own time
    for d in ("images", "images/3"):  # folders: their mode (write bits off) and time, as put
        st = os.stat(os.path.join(v1, d))
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o555
        assert st.st_mtime_ns == os.stat(os.path.join(src, d)).st_mtime_ns, d
    st = os.stat(v1)  # a version's own folder: its creation
    assert stat.S_IMODE(st.st_mode) == 0o555 and abs(st.st_mtime - created) < 0.001
    assert abs(os.stat(m.path(NAME, "v0")).st_mtime - shared.record(f"{NAME}:v0").created) < 0.001
    out = sh("stat", "-c", "%s %a %Y", os.path.join(v1, "big.bin")).stdout.split()
    assert out == [str(BIG), "444", str(int(os.stat(os.path.join(src, "big.bin")).st_mtime))]
    assert sh(os.path.join(v1, "bin/count.sh")).stdout == "42\n", "the exec bit is kept"


# -- extended attributes ---------------------------------------------------------------------


def getfattr(path: str) -> dict[str, str]:
    out = sh("getfattr", "-d", "-m", "user.artfs", "--absolute-names", path).stdout
    attrs = {}
    for line in out.splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            attrs[k] = json.loads(v) if v.startswith('"') else v
    return attrs


def test_file_xattrs_show_the_blake3_digest(shared, shared_mount):
    m = shared_mount
    for rel in ("big.bin", "README.md", "empty", "images/2/img008.jpg"):
        attrs = getfattr(m.path(NAME, "v1", rel))
        assert attrs == {"user.artfs.digest": blake3.blake3(shared.files[rel]).hexdigest()}, rel


def test_version_folder_xattrs_show_type_description_metadata_version(shared, shared_mount):
    m = shared_mount
    attrs = getfattr(m.path(NAME, "v1"))
    assert attrs["user.artfs.type"] == "dataset"
    assert attrs["user.artfs.description"] == "all the bikes"
    assert json.loads(attrs["user.artfs.metadata"]) == V1_METADATA
    assert attrs["user.artfs.version"] == f"{NAME}:v1"
    assert getfattr(m.path(NAME, "v0"))["user.artfs.description"] == "first try"
    assert getfattr(m.path(NAME, "latest/"))["user.artfs.version"] == f"{NAME}:v1"


def test_no_security_labels_or_acls_so_ls_stops_asking(shared, shared_mount):
    """ENOTSUP (not "no such attribute") for security.* and ACLs: `ls -l` then stops asking for
    them after the first file of the mount, instead of two requests per file listed."""
    path = shared_mount.path(NAME, "v1", "README.md")
    for name in ("security.selinux", "system.posix_acl_access", "trusted.x"):
        assert errno_of(os.getxattr, path, name) == errno.EOPNOTSUPP, name
    assert errno_of(os.getxattr, path, "user.other") == errno.ENODATA
    trace = subprocess.run(
        ["strace", "-f", "-e", "trace=getxattr,lgetxattr", "ls", "-lR", shared_mount.path(NAME, "v1", "images")],
        capture_output=True,
        text=True,
    )
    assert trace.returncode == 0, trace.stderr[-2000:]
    asked = [line for line in trace.stderr.splitlines() if "xattr(" in line]
    listed = sum(len(files) for _d, _s, files in os.walk(shared_mount.path(NAME, "v1", "images")))
    assert listed >= 200 and len(asked) <= 6, asked[:10]


# -- refresh and aliases ----------------------------------------------------------------------


def _commit_v2(ds: Dataset) -> dict[str, bytes]:
    files = dict(ds.files)
    files["big.bin"] = random.Random(2).randbytes(BIG)
    files["new.txt"] = b"a new file in v2\n"
    src = write_tree(os.path.join(ds.tmp, "src-v2"), files)
    assert ds.put(src) == f"{NAME}:v2"
    return files


def test_new_version_appears_and_latest_moves_within_refresh(ds, mounter):
    m = mounter(ds.store, "--refresh", "0.5")
    assert os.readlink(m.path(NAME, "latest")) == "v1"
    assert "v2" not in os.listdir(m.path(NAME))
    files = _commit_v2(ds)  # another process
    t0 = time.monotonic()
    wait_for(lambda: os.readlink(m.path(NAME, "latest")) == "v2", 10, "latest -> v2")
    wait_for(lambda: "v2" in os.listdir(m.path(NAME)), 10, "v2 in the listing")
    elapsed = time.monotonic() - t0
    assert elapsed < 0.5 + 2.5, f"took {elapsed:.2f}s with --refresh 0.5"
    assert read(m.path(NAME, "latest", "big.bin")) == files["big.bin"]
    assert read(m.path(NAME, "latest", "new.txt")) == files["new.txt"]
    assert read(m.path(NAME, "v1", "big.bin")) == ds.files["big.bin"]


def test_pin_aliases_keeps_latest_where_it_was(ds, mounter):
    m = mounter(ds.store, "--refresh", "0.5", "--pin-aliases")
    assert os.readlink(m.path(NAME, "latest")) == "v1"
    _commit_v2(ds)
    ds.cli("alias", "add", f"{NAME}:v1", "best").ok()
    wait_for(lambda: "v2" in os.listdir(m.path(NAME)), 10, "v2 in the listing (versions still refresh)")
    time.sleep(1.0)  # two more refresh intervals
    assert os.readlink(m.path(NAME, "latest")) == "v1"
    assert os.readlink(m.path(NAME, "best")) == "v0"
    assert read(m.path(NAME, "latest", "big.bin")) == ds.files["big.bin"]


def test_pin_aliases_pins_latest_at_mount_time_not_first_look(ds, mounter):
    m = mounter(ds.store, "--refresh", "0.5", "--pin-aliases")
    _commit_v2(ds)  # after the mount, before anything looked at the artifact
    assert sorted(os.listdir(m.path(NAME))) == ["best", "drafts", "latest", "v0", "v1", "v2"]
    assert os.readlink(m.path(NAME, "latest")) == "v1"


def test_pin_aliases_pins_every_alias_at_mount_time_not_first_look(ds, mounter):
    m = mounter(ds.store, "--refresh", "0.5", "--pin-aliases")
    ds.cli("alias", "add", f"{NAME}:v1", "best").ok()  # moved after the mount, before any look
    ds.cli("alias", "add", f"{NAME}:v1", "new-alias").ok()
    assert os.readlink(m.path(NAME, "best")) == "v0"
    assert "new-alias" not in os.listdir(m.path(NAME))
    unpinned = mounter(ds.store)
    assert os.readlink(unpinned.path(NAME, "best")) == "v1"


def test_readlink_never_fails_while_an_alias_moves(local_store_url, mounter, tmp_path):
    ds = publish_dataset(local_store_url, tmp_path)
    m = mounter(ds.store, "--refresh", "0.1")
    best = m.path(NAME, "best")
    seen, errors = set(), []
    done = threading.Event()

    def reader():
        while not done.is_set():
            try:
                seen.add(os.readlink(best))
            except OSError as e:
                errors.append(errno.errorcode.get(e.errno, e.errno))

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for i in range(6):
            ds.cli("alias", "add", f"{NAME}:v{(i + 1) % 2}", "best").ok()
            time.sleep(0.15)
    finally:
        done.set()
        for t in threads:
            t.join(10)
    assert not errors, f"readlink failed {len(errors)} times: {set(errors)}"
    assert seen == {"v0", "v1"}


def test_open_file_keeps_reading_its_version(ds, mounter):
    m = mounter(ds.store, "--refresh", "0.5")
    path = m.path(NAME, "latest", "big.bin")
    with open(path, "rb") as f:
        head = f.read(MiB + 7)
        files = _commit_v2(ds)
        wait_for(lambda: os.readlink(m.path(NAME, "latest")) == "v2", 10, "latest -> v2")
        assert read(path) == files["big.bin"], "a new open sees the new version"
        rest = f.read()
    assert head + rest == ds.files["big.bin"], "the file opened before keeps its version's bytes"


# -- errors ---------------------------------------------------------------------------------------


def test_writes_fail_with_erofs(shared, shared_mount):
    m = shared_mount
    v1 = m.path(NAME, "v1")
    f = os.path.join(v1, "README.md")
    checks = {
        "open O_RDWR": lambda: os.close(os.open(f, os.O_RDWR)),
        "open O_WRONLY": lambda: os.close(os.open(f, os.O_WRONLY)),
        "open O_APPEND": lambda: os.close(os.open(f, os.O_WRONLY | os.O_APPEND)),
        "create": lambda: os.close(os.open(os.path.join(v1, "new"), os.O_CREAT | os.O_WRONLY, 0o644)),
        "create in subfolder": lambda: open(os.path.join(v1, "images", "0", "x.jpg"), "wb").close(),
        "truncate": lambda: os.truncate(f, 0),
        "unlink": lambda: os.unlink(f),
        "rename": lambda: os.rename(f, os.path.join(v1, "moved.md")),
        "mkdir": lambda: os.mkdir(os.path.join(v1, "newdir")),
        "rmdir": lambda: os.rmdir(os.path.join(v1, "images", "0")),
        "chmod": lambda: os.chmod(f, 0o777),
        "utime": lambda: os.utime(f, (0, 0)),
        "symlink": lambda: os.symlink("README.md", os.path.join(v1, "link")),
        "setxattr": lambda: os.setxattr(f, "user.x", b"1"),
        "remove an alias": lambda: os.unlink(m.path(NAME, "latest")),
        "remove a version": lambda: os.rmdir(m.path(NAME, "v0")),
    }
    wrong = {what: errno_of(fn) for what, fn in checks.items()}
    wrong = {what: errno.errorcode.get(e, e) for what, e in wrong.items() if e != errno.EROFS}
    assert not wrong, f"not EROFS: {wrong}"
    commands = [
        ["touch", os.path.join(v1, "new")],
        ["mkdir", os.path.join(v1, "d")],
        ["rm", f],
        ["mv", f, os.path.join(v1, "x")],
        ["sh", "-c", f"echo hi > {f}"],
        ["cp", "/etc/hostname", v1],
    ]
    for cmd in commands:
        p = sh(*cmd, check=False)
        assert p.returncode != 0 and "Read-only file system" in p.stderr, (cmd, p.stderr)
    assert read(f) == shared.files["README.md"]


def test_unknown_paths_are_enoent(shared, shared_mount):
    m = shared_mount
    for rel in (
        "nope",
        "demo/nope",
        f"{NAME}/nope",
        f"{NAME}/v9",
        f"{NAME}/v1/nope",
        f"{NAME}/v1/images/nope",
        f"{NAME}/latest/nope",
        f"{NAME}/drafts/nope",
    ):
        assert errno_of(os.stat, m.path(rel)) == errno.ENOENT, rel
    p = sh("cat", m.path(NAME, "v1", "missing.txt"), check=False)
    assert p.returncode != 0 and "No such file or directory" in p.stderr


# -- concurrency, verification ---------------------------------------------------------------

READER = r"""
import hashlib, os, sys, time
path, go = sys.argv[1], sys.argv[2]
while not os.path.exists(go):
    time.sleep(0.001)
h = hashlib.sha256()
with open(path, "rb") as f:
    while True:
        b = f.read(200_000)
        if not b:
            break
        h.update(b)
print(h.hexdigest())
"""


def test_concurrent_readers_get_correct_bytes_with_one_fetch_per_piece(shared, mounter, tmp_path):
    m = mounter(shared.store)
    path = m.path(NAME, "v1", "big.bin")
    expected = hashlib.sha256(shared.files["big.bin"]).hexdigest()
    go = str(tmp_path / "go")
    procs = [
        subprocess.Popen([sys.executable, "-c", READER, path, go], stdout=subprocess.PIPE, text=True) for _ in range(4)
    ]
    results, errors = [], []
    barrier = threading.Barrier(9)

    def thread_reader():
        try:
            barrier.wait()
            h = hashlib.sha256()
            with open(path, "rb") as f:
                while b := f.read(131072):
                    h.update(b)
            results.append(h.hexdigest())
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=thread_reader) for _ in range(8)]
    try:
        for t in threads:
            t.start()
        time.sleep(0.3)  # let the processes start and wait for the signal
        open(go, "w").close()
        barrier.wait()
        for t in threads:
            t.join(60)
        outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert not errors, errors
    assert results == [expected] * 8
    assert outs == [expected] * 4
    fetched = sorted(m.fetches(), key=lambda f: f[1])
    assert len({key for key, _, _ in fetched}) == 1, fetched
    covered = 0
    for _key, start, end in fetched:
        assert start == covered, f"byte ranges fetched twice or skipped: {fetched}"
        covered = end
    assert covered == BIG, f"fetched {covered} of {BIG} bytes: {fetched}"


def _cache_files(cache: str) -> dict[str, str]:
    """Cache files named by the digest of what they hold: pieces of large files, and small
    files that `artfs prefetch` of old stored one by one."""
    root = os.path.join(cache, "content")
    return {
        name: os.path.join(d, name)
        for d, _dirs, names in os.walk(root)
        if os.path.basename(d) != "tmp" and "runs" not in d.split(os.sep)
        for name in names
    }


def _cached_runs(cache: str) -> dict[tuple[str, int, int], str]:
    """Cache files holding a run of small files: bytes [start, end) of the store's packs/<pack>."""
    root = os.path.join(cache, "content", "runs")
    out = {}
    for d, _dirs, names in os.walk(root):
        for name in names:
            pack, start, end = name.split(".")
            out[(pack, int(start), int(end))] = os.path.join(d, name)
    return out


def _resident_bytes(path: str) -> int:
    """How much of the file the kernel's page cache holds (util-linux fincore; opens, never reads)."""
    out = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--output", "RES", path], capture_output=True, text=True, check=True
    ).stdout
    return int(out.strip())


def test_readahead_is_raised_before_mount_returns(shared, mounter):
    # A file takes the mount's readahead when it is opened; one opened at once after `artfs
    # mount` must not be stuck with the kernel's 128 KiB (and 128 KiB READs) while it is open.
    m = mounter(shared.store)
    devices = [line.split()[2] for line in open("/proc/self/mountinfo") if line.split()[4] == m.mp]
    assert len(devices) == 1
    with open(f"/sys/class/bdi/{devices[0]}/read_ahead_kb") as f:
        assert int(f.read()) >= 1024


def test_small_neighbours_are_in_the_page_cache_before_they_are_read(shared, mounter):
    m = mounter(shared.store)
    folder = m.path(NAME, "v1", "images", "2")
    names = sorted(os.listdir(folder))  # the kernel now knows their inodes
    assert read(os.path.join(folder, names[0])) == shared.files[f"images/2/{names[0]}"]
    later = [n for n in names[1:] if shared.files[f"images/2/{n}"]]
    assert all(_resident_bytes(os.path.join(folder, n)) > 0 for n in later), (
        "the run fetched for the first file was stored into the page cache of the rest"
    )
    assert {n: read(os.path.join(folder, n)) for n in later} == {n: shared.files[f"images/2/{n}"] for n in later}
    assert len(m.fetches()) == 1, m.fetches()


def test_corrupt_cache_file_is_detected_and_fetched_again(shared, mounter):
    m = mounter(shared.store)
    path = m.path(NAME, "v1", "big.bin")
    assert read(path) == shared.files["big.bin"]
    m.umount()  # the cache is written behind the reads; unmounting writes what is queued
    # one cached 1 MiB piece of big.bin: flip a byte in the middle
    chunk = shared.files["big.bin"][2 * MiB : 3 * MiB]
    victim = _cache_files(m.cache)[blake3.blake3(chunk).hexdigest()]
    with open(victim, "r+b") as f:
        f.seek(MiB // 2)
        byte = f.read(1)
        f.seek(MiB // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    evict_page_cache(victim)
    m2 = mounter(shared.store, cache=m.cache)  # a remount reuses the cache
    assert read(m2.path(NAME, "v1", "big.bin")) == shared.files["big.bin"]
    assert "is corrupt" in m2.log()
    assert [(start, end) for _key, start, end in m2.fetches()] == [(2 * MiB, 3 * MiB)], "only the bad piece is fetched"
    m2.umount()
    assert blake3.blake3(read(victim)).hexdigest() == os.path.basename(victim), "the cache file is good again"


def test_corrupt_cache_file_of_a_range_not_yet_read(shared, mounter):
    m = mounter(shared.store)
    shared.cli("prefetch", f"{NAME}:v1", "--path", "big.bin", cache=m.cache).ok()  # the mount's own cache
    victim = _cache_files(m.cache)[blake3.blake3(shared.files["big.bin"][4 * MiB : 5 * MiB]).hexdigest()]
    with open(victim, "r+b") as f:
        f.write(b"\0" * 16)
    evict_page_cache(victim)
    with open(m.path(NAME, "v1", "big.bin"), "rb") as f:
        f.seek(4 * MiB)
        assert f.read(MiB) == shared.files["big.bin"][4 * MiB : 5 * MiB]
    assert "is corrupt" in m.log()


def test_cache_stays_within_cache_size(shared, mounter):
    m = mounter(shared.store, "--cache-size", "2M")
    assert read_tree(m.path(NAME, "v1")) == shared.files  # ~9 MiB through a 2 MiB cache
    m.umount()  # writes what is still queued for the cache
    held = sum(os.path.getsize(p) for p in [*_cache_files(m.cache).values(), *_cached_runs(m.cache).values()])
    assert 0 < held <= 2 * MiB, held


def test_two_mounts_can_share_one_cache(shared, mounter):
    a = mounter(shared.store)
    b = mounter(shared.store, cache=a.cache)
    results = {}

    def reader(m):
        results[m.mp] = read_tree(m.path(NAME, "v1"))

    threads = [threading.Thread(target=reader, args=(m,)) for m in (a, b, a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 2 and all(got == shared.files for got in results.values())
    a.umount()
    b.umount()  # both have written what they queued for the cache
    for digest, path in _cache_files(a.cache).items():
        assert blake3.blake3(read(path)).hexdigest() == digest, f"cache file {path} is not what its name says"
    from artfs import Store

    objects = Store(shared.store, os.path.join(shared.tmp, "cli-cache")).objects
    runs = _cached_runs(a.cache)
    assert runs, "the small files were cached as runs"
    for (pack, start, end), path in runs.items():
        assert read(path) == objects.get(f"packs/{pack}", start, end), f"cache file {path} is not what its name says"


# -- prefetch ---------------------------------------------------------------------------------------


def test_prefetch_then_read_with_the_store_away(local_store_url, mounter, tmp_path):
    ds = publish_dataset(local_store_url, tmp_path)
    m = mounter(ds.store, "--refresh", "60")
    p = ds.cli("prefetch", f"{NAME}:v1", cache=m.cache).ok()
    assert "fetched" in p.stderr
    v1 = m.path(NAME, "v1")
    sh("find", v1)  # the tree is known (listings fetch no content)
    away = ds.store + ".away"
    os.rename(ds.store, away)
    try:
        assert read_tree(v1) == ds.files
    finally:
        if os.path.exists(ds.store):  # made again by the daemon's lineage note (which failed)
            shutil.rmtree(ds.store)
        os.rename(away, ds.store)
    assert m.fetches() == [], "everything came from the prefetched cache"


def test_prefetch_of_a_path_only_fetches_that_path(local_store_url, tmp_path):
    ds = publish_dataset(local_store_url, tmp_path)
    cache = str(tmp_path / "pcache")
    out = ds.cli("prefetch", f"{NAME}:v1", "--path", "images/1", cache=cache).ok()
    assert "fetched" in out.stderr and " 0 fetched" not in out.stderr, out.stderr
    runs = [read(p) for p in _cached_runs(cache).values()]
    wanted = [d for rel, d in ds.files.items() if rel.startswith("images/1/")]
    assert wanted and all(any(d in run for run in runs) for d in wanted), "the small files are cached, as runs"
    others = [d for rel, d in ds.files.items() if not rel.startswith("images/1/") and 64 < len(d) < MiB]
    assert not any(d in run for d in others for run in runs), "nothing outside the path"
    assert blake3.blake3(ds.files["big.bin"][:MiB]).hexdigest() not in _cache_files(cache)
    again = ds.cli("prefetch", f"{NAME}:v1", "--path", "images/1", cache=cache).ok()
    assert " 0 fetched" in again.stderr, again.stderr
