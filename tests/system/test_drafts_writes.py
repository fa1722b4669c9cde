"""What makes writing into a draft cheap must never change what gets committed:
files hashed while written (in order, out of order, overwritten, truncated, reopened,
appended) commit with the right bytes and digest, on the local store and on S3; closed
small files come back from the draft's journal after a (simulated) reboot, and never
over newer bytes."""

from __future__ import annotations

import os
import random

import blake3
import pytest

from conftest import fresh_s3_url, new_draft_store, read_tree
from drafts_common import commit, read, shared_mounter, unique  # noqa: F401  (shared_mounter is a fixture)

MiB = 1 << 20


def _blob(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def _write_cases(root: str) -> dict[str, bytes]:
    """Writes each case into `root`; returns what each file must contain."""
    out = {}

    def put(name, data, chunk=128 * 1024):
        with open(os.path.join(root, name), "wb") as f:
            for k in range(0, len(data), chunk):
                f.write(data[k : k + chunk])
        out[name] = data

    put("in-order.bin", _blob(1, 3 * MiB + 123))
    put("exact-chunks.bin", _blob(2, 2 * MiB))
    put("odd-writes.bin", _blob(3, MiB + 7), chunk=4097)
    put("small.bin", _blob(4, 5000))

    data = _blob(5, 2 * MiB + 5)  # second half first, then the first half
    with open(os.path.join(root, "out-of-order.bin"), "wb") as f:
        f.seek(MiB)
        f.write(data[MiB:])
        f.seek(0)
        f.write(data[:MiB])
    out["out-of-order.bin"] = data

    data = bytearray(_blob(6, 2 * MiB))  # in order, then a patch in the middle
    with open(os.path.join(root, "patched.bin"), "wb") as f:
        f.write(data)
        f.seek(MiB + 10)
        f.write(b"patched")
    data[MiB + 10 : MiB + 17] = b"patched"
    out["patched.bin"] = bytes(data)

    data = _blob(7, 3 * MiB)  # in order, then truncated shorter
    with open(os.path.join(root, "truncated.bin"), "wb") as f:
        f.write(data)
        f.truncate(2 * MiB + 1)
    out["truncated.bin"] = data[: 2 * MiB + 1]

    data = _blob(8, 2 * MiB)  # truncated by path after close, then extended past the old end
    put("regrown.bin", data)
    os.truncate(os.path.join(root, "regrown.bin"), MiB)
    with open(os.path.join(root, "regrown.bin"), "ab") as f:
        f.write(b"x" * (2 * MiB))
    out["regrown.bin"] = data[:MiB] + b"x" * (2 * MiB)

    put("rewritten.bin", _blob(9, 2 * MiB))  # O_TRUNC and new, shorter bytes
    put("rewritten.bin", _blob(10, MiB + 1))

    put("appended.bin", _blob(11, 2 * MiB))  # reopened to append: no longer hashed in order
    with open(os.path.join(root, "appended.bin"), "ab") as f:
        f.write(b"tail")
    out["appended.bin"] += b"tail"

    data = _blob(12, 2 * MiB)  # two descriptors writing interleaved halves
    p = os.path.join(root, "two-writers.bin")
    with open(p, "wb") as a, open(p, "r+b") as b:
        b.seek(MiB)
        b.write(data[MiB:])
        b.flush()
        a.write(data[:MiB])
    out["two-writers.bin"] = data

    put("renamed-away.bin", _blob(13, 2 * MiB))
    os.rename(os.path.join(root, "renamed-away.bin"), os.path.join(root, "renamed.bin"))
    out["renamed.bin"] = out.pop("renamed-away.bin")
    return out


@pytest.mark.mount
@pytest.mark.parametrize("backend", ["local", pytest.param("s3", marks=pytest.mark.s3)])
def test_files_hashed_while_written_commit_the_right_bytes(backend, shared_mounter, tmp_path, request):
    store = str(tmp_path / "store") if backend == "local" else fresh_s3_url(request.getfixturevalue("s3_test_bucket"))
    m = shared_mounter(store)
    artifact = f"w/{unique()}"
    draft = m.path(artifact, "drafts", "d")
    os.makedirs(draft)
    want = _write_cases(draft)
    assert read_tree(draft) == want
    assert commit(m, draft, "--type", "dataset").ok().out == f"{artifact}:v0"
    got = read_tree(m.path(artifact, "v0"))
    assert got == want
    for name, data in want.items():
        digest = os.getxattr(m.path(artifact, "v0", name), "user.artfs.digest").decode()
        assert digest == blake3.blake3(data).hexdigest(), name


# -- the journal of closed small files, without FUSE ---------------------------------------


@pytest.fixture
def draft(tmp_path, monkeypatch):
    drafts, a = new_draft_store(tmp_path, monkeypatch)
    return lambda: drafts.open(a, "d", load_manifest=None)


def _new_file(d, name: str, data: bytes) -> int:
    from artfs.drafts.namespace import ROOT

    attr, fd = d.create_open(ROOT, name, 0o644)
    try:
        d.write(attr.ino, fd, data, 0)
        d.close_file(attr.ino, fd)
    finally:
        os.close(fd)
    return attr.ino


def test_closed_small_files_come_back_after_a_reboot(draft, monkeypatch):
    d = draft()
    small = _new_file(d, "small.txt", b"closed before the crash\n")
    empty = _new_file(d, "empty.txt", b"")
    d.close()
    # The host crashed before writing the files back: one lost its bytes, one its very inode.
    os.truncate(d.data_path(small), 0)
    os.unlink(d.data_path(empty))
    monkeypatch.setenv("ARTFS_TEST_BOOT_ID", "boot-2")
    d = draft()
    assert read(d.data_path(small)) == b"closed before the crash\n"
    assert read(d.data_path(empty)) == b""
    d.close()


def test_the_journal_is_not_restored_without_a_reboot(draft):
    d = draft()
    ino = _new_file(d, "f.txt", b"closed\n")
    d.close()
    with open(d.data_path(ino), "ab") as f:  # as the daemon would have, before being killed
        f.write(b"written later, never closed\n")
    d = draft()
    assert read(d.data_path(ino)) == b"closed\nwritten later, never closed\n"
    d.close()


def test_a_write_after_close_is_never_undone_by_the_journal(draft, monkeypatch):
    d = draft()
    ino = _new_file(d, "f.txt", b"closed\n")
    fd = os.open(d.data_path(ino), os.O_RDWR)
    try:
        d.write(ino, fd, b"CLOSED", 0)  # the closed bytes are made durable first, then changed
    finally:
        os.close(fd)
    d.close()
    monkeypatch.setenv("ARTFS_TEST_BOOT_ID", "boot-2")
    d = draft()
    assert read(d.data_path(ino)) == b"CLOSED\n"
    d.close()


def test_large_closed_files_are_fsynced_not_journaled(draft, monkeypatch):
    from artfs.drafts.files import JOURNAL_LIMIT

    d = draft()
    ino = _new_file(d, "big.bin", b"b" * (JOURNAL_LIMIT + 1))
    assert d.db.execute("SELECT data FROM journal WHERE ino=?", (ino,)).fetchone() == (None,)
    d.close()
    monkeypatch.setenv("ARTFS_TEST_BOOT_ID", "boot-2")
    d = draft()
    assert os.path.getsize(d.data_path(ino)) == JOURNAL_LIMIT + 1
    d.close()


def test_unlinked_files_leave_nothing_in_the_journal(draft):
    from artfs.drafts.namespace import ROOT

    d = draft()
    _new_file(d, "gone.txt", b"x")
    _new_file(d, "replaced.txt", b"y")
    _new_file(d, "kept.txt", b"z")
    d.unlink(ROOT, "gone.txt")
    d.rename(ROOT, "kept.txt", ROOT, "replaced.txt")
    assert d.db.execute("SELECT count(*) FROM journal").fetchone() == (1,)
    d.close()


def test_only_files_written_in_order_skip_hashing_at_commit(draft):
    from artfs.digest import hash_file
    from artfs.drafts.namespace import ROOT

    d = draft()
    data = _blob(20, 3 * MiB + 1)
    inos = {}
    for name in ("in-order", "out-of-order", "written-meanwhile"):
        attr, fd = d.create_open(ROOT, name, 0o644)
        parts = [(k, data[k : k + MiB]) for k in range(0, len(data), MiB)]
        for off, part in parts if name != "out-of-order" else parts[::-1]:
            d.write(attr.ino, fd, part, off)
        d.close_file(attr.ino, fd)
        os.close(fd)
        inos[name] = attr.ino
    files = {f.path: f for f in d.snapshot()[0]}
    assert files["out-of-order"].hashed is None
    src = files["in-order"]
    assert src.hashed == hash_file(src.local, chunked=True) and src.unchanged()
    late = files["written-meanwhile"]
    fd = os.open(late.local, os.O_RDWR)
    d.write(inos["written-meanwhile"], fd, b"!", 5)
    os.close(fd)
    assert not late.unchanged()  # the commit then refuses to store it under the old digest
    d.close()
