"""What the mount's trio thread may do itself in a draft (wait=False): create a file and
write the start of it, and read a written file's attributes without SQLite. It must never
wait (a lock another thread or process holds: WouldBlock, and nothing changed), and what
it did must be what the worker-thread path would have done. Without FUSE."""

from __future__ import annotations

import os
import sqlite3
import threading
import time

import pytest
from conftest import new_draft_store

from artfs.drafts.files import INLINE_WRITES, WouldBlock
from artfs.drafts.namespace import ROOT
from artfs.digest import digest_bytes
from artfs.errors import FsError


@pytest.fixture
def drafts(tmp_path, monkeypatch):
    store, a = new_draft_store(tmp_path, monkeypatch)
    owner = store.open(a, "d", load_manifest=None, cache_namespace=True)
    other = store.open(a, "d", load_manifest=None)  # another process's view (no cache)
    owner.listdir(ROOT)
    yield owner, other
    owner.close()
    other.close()


def _exists(d, parent: int, name: str) -> bool:
    try:
        d.lookup(parent, name)
        return True
    except FsError:
        return False


def test_create_without_waiting_makes_the_same_file(drafts):
    owner, other = drafts
    attr, fd = owner.create_open(ROOT, "f", 0o640, wait=False)
    try:
        assert owner.write(attr.ino, fd, b"hello", 0, wait=False) == 5
    finally:
        os.close(fd)
    seen = other.lookup(ROOT, "f")
    assert (seen.ino, seen.mode, seen.size) == (attr.ino, 0o640, 5)
    with open(owner.data_path(attr.ino), "rb") as f:
        assert f.read() == b"hello"
    # Written in order from the start: known to be, as on the worker-thread path (hashed when asked).
    known = owner.writes.digest(attr.ino, 5, owner.data_path(attr.ino))
    assert known is not None and known[0][0] == digest_bytes(b"hello")


def test_create_would_block_while_another_thread_holds_the_draft(drafts):
    owner, other = drafts
    held, release = threading.Event(), threading.Event()

    def holder():
        with owner._lock:
            held.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    held.wait(10)
    try:
        t0 = time.monotonic()
        with pytest.raises(WouldBlock):
            owner.create_open(ROOT, "f", 0o644, wait=False)
        assert time.monotonic() - t0 < 0.5
    finally:
        release.set()
        t.join()
    assert not _exists(other, ROOT, "f")  # nothing was made
    _, fd = owner.create_open(ROOT, "f", 0o644, wait=False)  # and once free, it works
    os.close(fd)
    assert _exists(other, ROOT, "f")


def test_create_would_block_while_another_process_writes_the_table(drafts, tmp_path):
    owner, other = drafts
    db = sqlite3.connect(os.path.join(owner.path, "tree.sqlite"), isolation_level=None)
    db.execute("BEGIN IMMEDIATE")  # as `artfs ref add` on the mounted draft, mid-transaction
    try:
        t0 = time.monotonic()
        with pytest.raises(WouldBlock):
            owner.create_open(ROOT, "f", 0o644, wait=False)
        assert time.monotonic() - t0 < 0.5  # not the 5 s busy timeout
    finally:
        db.execute("ROLLBACK")
        db.close()
    assert not _exists(other, ROOT, "f")
    _, fd = owner.create_open(ROOT, "f", 0o644)  # the worker-thread path then succeeds
    os.close(fd)
    assert _exists(other, ROOT, "f")


def test_only_the_start_of_a_file_is_written_without_waiting(drafts):
    owner, _ = drafts
    attr, fd = owner.create_open(ROOT, "big", 0o644)
    try:
        chunk = os.urandom(128 << 10)
        off = 0
        while off + len(chunk) <= INLINE_WRITES:
            assert owner.write(attr.ino, fd, chunk, off, wait=False) == len(chunk)
            off += len(chunk)
        with pytest.raises(WouldBlock):
            owner.write(attr.ino, fd, chunk, off, wait=False)
        assert os.fstat(fd).st_size == off  # the refused write wrote nothing
        assert owner.write(attr.ino, fd, chunk, off) == len(chunk)  # as the worker thread does
        assert owner.writes.in_order(attr.ino, off + len(chunk))  # still known to be written in order
    finally:
        os.close(fd)


def test_a_written_file_s_attributes_come_from_memory_and_are_the_table_s(drafts):
    owner, other = drafts
    attr, fd = owner.create_open(ROOT, "f", 0o600)
    try:
        owner.write(attr.ino, fd, b"x" * 100, 0, wait=False)
        owner.setattr(attr.ino, mode=0o755)
        owner.write(attr.ino, fd, b"y" * 50, 100, wait=False)
        cached = owner.cached_attr(attr.ino)  # the trio thread's answer
        assert cached is not None
        assert cached == other.getattr(attr.ino)
        assert (cached.mode, cached.size) == (0o755, 150)
    finally:
        os.close(fd)
    owner.unlink(ROOT, "f")
    assert owner.cached_attr(attr.ino) is None  # gone: not answered from memory


def test_chmod_and_utime_without_waiting_are_the_table_s(drafts):
    owner, other = drafts
    attr, fd = owner.create_open(ROOT, "f", 0o600)
    os.close(fd)
    sub = owner.mkdir(ROOT, "sub", 0o755)
    got = owner.setattr(attr.ino, mode=0o755, wait=False)
    assert got.mode == 0o755 and got == other.getattr(attr.ino)
    got = owner.setattr(attr.ino, mtime_ns=1_234_567_890_123, atime_ns=1_000_000_000_000, wait=False)
    assert (got.mtime_ns, got.atime_ns) == (1_234_567_890_123, 1_000_000_000_000)
    assert got == other.getattr(attr.ino) == owner.cached_attr(attr.ino)
    got = owner.setattr(sub.ino, mode=0o700, mtime_ns=5_000_000_000, wait=False)
    assert (got.mode, got.mtime_ns) == (0o700, 5_000_000_000) and got == other.getattr(sub.ino)


def test_chmod_would_block_while_another_process_writes_the_table(drafts):
    owner, other = drafts
    attr, fd = owner.create_open(ROOT, "f", 0o600)
    os.close(fd)
    db = sqlite3.connect(os.path.join(owner.path, "tree.sqlite"), isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(WouldBlock):
            owner.setattr(attr.ino, mode=0o755, wait=False)
    finally:
        db.execute("ROLLBACK")
        db.close()
    assert other.getattr(attr.ino).mode == 0o600  # nothing changed
    assert owner.setattr(attr.ino, mode=0o755).mode == 0o755
