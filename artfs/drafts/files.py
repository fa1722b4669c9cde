"""The data files of a draft: made durable cheaply at close, hashed while written.

Durable close. fsync of a freshly created small file costs ~1-3 ms on ext4 (a
journal commit for its inode and directory entry), far more than writing it.
So at close a small file (up to JOURNAL_LIMIT) is copied into the draft's
SQLite `journal` table, in the same synchronous transaction that makes its
namespace row durable: one flush of the WAL (an overwrite, ~0.2 ms) covers
data and metadata. The data file itself is not fsynced. A copy is needed only
if the host crashed before the kernel wrote the file back, so it is restored
only when the host has booted since the draft was last opened
(`boot_id()` differs); after a daemon crash alone the data files are intact
(in the page cache) and the newer of the two. Larger files are fsynced; their
journal row has no data (nothing to restore), it only makes the row durable.

Hashing what was written in order. For a file written from offset 0 in order
(cp, a download, a tar member) `write` only counts how far it got; its blake3
digests (whole file, chunks, pieces, 16 MiB blocks) are computed once, from
the data file, block by block in the background as blocks complete (and
uploaded then: drafts/early.py), the rest at the commit; so the commit has no
second hashing pass and a WRITE never waits for a hash. Any other change (a
write elsewhere, a truncate, a copy-up) drops that state and the commit hashes
the file as before; `generation` lets the commit check the file did not change
while it was being uploaded.
"""

from __future__ import annotations

import ctypes
import os
import threading

from artfs.digest import Hasher, Hashes
from artfs.store import pagecache
from artfs.store.manifest import BLOCK_SIZE

JOURNAL_LIMIT = 256 << 10  # files up to this size are journaled at close instead of fsynced
# Writes ending within this many bytes of a file's start may be made on the mount's trio thread
# (a page-cache write of a small file, ~10 µs: cheaper than the hand-off to a worker thread);
# further ones, which dirty throttling may hold for long, go through a worker thread.
INLINE_WRITES = 1 << 20
RESERVE = 4 << 20  # disk space held back so that removing things works on a full disk
_READ = 4 << 20  # read back this much at a time to hash what the background did not

_boot: str | None = None


def boot_id() -> str:
    """Changes when the host reboots (and so after a host crash)."""
    global _boot
    if _boot is None:
        try:
            with open("/proc/sys/kernel/random/boot_id") as f:
                _boot = f.read().strip()
        except OSError:
            _boot = ""  # unknown: every open counts as after a reboot (restores: safe, slower)
    return os.environ.get("ARTFS_TEST_BOOT_ID", _boot)


class WouldBlock(Exception):
    """A call made with wait=False (on the mount's trio thread) would have had to wait for a
    lock another thread or process holds: the caller runs it again in a worker thread."""


class _InOrder:
    """A file written in order from offset 0 so far: how far, and its hashes (computed from
    the data file behind the writes, up to `hasher.size`)."""

    __slots__ = ("written", "_hasher", "reading")

    def __init__(self) -> None:
        self.written = 0
        self._hasher: Hasher | None = None  # (made when first needed: most files are small)
        self.reading = threading.Lock()  # one thread hashes the file at a time, in order

    @property
    def hashed(self) -> int:
        return 0 if self._hasher is None else self._hasher.size

    @property
    def hasher(self) -> Hasher:
        if self._hasher is None:
            self._hasher = Hasher(block_size=BLOCK_SIZE)
        return self._hasher


class WriteTracker:
    """Per-inode write state of one draft: generations, and the hashes of files written in
    order (each byte hashed once, after it was written, by `hash_block` in the background
    or by `digest` at the commit, never on the path of a WRITE)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._gen: dict[int, int] = {}
        self._seq: dict[int, _InOrder] = {}

    def generation(self, ino: int) -> int:
        return self._gen.get(ino, 0)

    def start(self, ino: int) -> None:
        """The file is empty now (created, or opened with O_TRUNC): track what follows."""
        with self._lock:
            self._gen[ino] = self._gen.get(ino, 0) + 1
            self._seq[ino] = _InOrder()

    def changed(self, ino: int) -> None:
        """Changed other than by an in-order write: its bytes must be hashed at commit."""
        with self._lock:
            self._gen[ino] = self._gen.get(ino, 0) + 1
            self._seq.pop(ino, None)

    def write(self, ino: int, fd: int, data: bytes, off: int, wait: bool = True) -> int:
        """pwrite, noting whether the write continues the file in order (`wait` False:
        WouldBlock rather than wait for the lock)."""
        if ino not in self._seq:
            if not wait:  # (rare: not worth a second lock-free path)
                raise WouldBlock()
            n = os.pwrite(fd, data, off)
            with self._lock:
                self._gen[ino] = self._gen.get(ino, 0) + 1
                self._seq.pop(ino, None)  # started meanwhile (O_TRUNC elsewhere): these bytes missed it
            return n
        # Under the lock, the pwrite and what it means for the file's order together: a thread
        # hashing the file checks under this lock that the bytes it read are still in order
        # (a write that changed them has dropped the file's state by then).
        if not self._lock.acquire(blocking=wait):
            raise WouldBlock()
        try:
            self._gen[ino] = self._gen.get(ino, 0) + 1
            seq = self._seq.get(ino)
            try:
                n = os.pwrite(fd, data, off)
            except BaseException:
                self._seq.pop(ino, None)
                raise
            behind = 0
            if seq is not None:
                if off == seq.written:
                    seq.written += n
                    behind = _crossed(off, n)
                else:
                    del self._seq[ino]
        finally:
            self._lock.release()
        if behind > 2 * BLOCK_SIZE:
            # A file streamed in keeps two blocks behind the write in the page cache, hashed
            # or not (the hashing, which waits for upload slots, reads older ones from disk).
            pagecache.drop(fd, 0, behind - 2 * BLOCK_SIZE)
        return n

    def in_order(self, ino: int, end: int) -> bool:
        """Whether the file's bytes up to `end` were all written in order from offset 0 (and
        nothing after them yet)."""
        seq = self._seq.get(ino)
        return seq is not None and seq.written == end

    def block_ready(self, ino: int) -> bool:
        """Whether a whole block written in order is not hashed yet."""
        with self._lock:
            seq = self._seq.get(ino)
            return seq is not None and seq.written - seq.hashed >= BLOCK_SIZE

    def hash_block(self, ino: int, path: str) -> tuple[bytes, bytes] | None:
        """The next whole BLOCK_SIZE block written in order and not hashed yet, read back from
        the data file `path` (page cache, or disk once the writes are two blocks ahead) and
        hashed: (its bytes, its digest); None if there is none (or the file stopped being
        written in order)."""
        seq = self._seq.get(ino)
        if seq is None:
            return None
        with seq.reading:
            start = seq.hashed
            if seq.written - start < BLOCK_SIZE:
                return None
            data = _pread(path, start, BLOCK_SIZE, release=start)
            if len(data) != BLOCK_SIZE:  # gone or cut short behind the writes' back: hashed at commit
                self._drop(ino, seq)
                return None
            if not self._current(ino, seq, start + BLOCK_SIZE):
                return None
            seq.hasher.update(data)
            return data, seq.hasher.last_block()

    def _drop(self, ino: int, seq: _InOrder) -> None:
        with self._lock:
            if self._seq.get(ino) is seq:
                del self._seq[ino]

    def _current(self, ino: int, seq: _InOrder, end: int) -> bool:
        """Whether bytes just read up to `end` are those written in order: no write changed
        them since (it would have dropped `seq`, under the lock, in the same step)."""
        with self._lock:
            return self._seq.get(ino) is seq and seq.written >= end

    def digest(self, ino: int, size: int, path: str) -> tuple[Hashes, bytes, int] | None:
        """(digests, BLOCK_SIZE block digests, generation) if the file's `size` bytes were all
        written in order; the bytes not hashed yet are read back from `path` and hashed now."""
        seq = self._seq.get(ino)
        if seq is None or seq.written != size:
            return None
        with seq.reading:
            while seq.hasher.size < size:
                start = seq.hasher.size
                data = _pread(path, start, min(_READ, size - start))
                if not data or not self._current(ino, seq, start + len(data)):
                    return None
                seq.hasher.update(data)
            with self._lock:
                if self._seq.get(ino) is not seq or seq.written != size:
                    return None
                return seq.hasher.result(), seq.hasher.blocks(), self._gen.get(ino, 0)

    forget = changed


def _crossed(off: int, n: int) -> int:
    """The BLOCK_SIZE boundary a write of `n` bytes at `off` reached or passed (0: none)."""
    end = (off + n) // BLOCK_SIZE * BLOCK_SIZE
    return end if end > off else 0


def _pread(path: str, off: int, n: int, release: int = 0) -> bytes:
    """`n` bytes at `off`; `release`: the file's first bytes, already hashed, leave the page
    cache (store/pagecache.py)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:  # unlinked (or its draft committed) meanwhile
        return b""
    try:
        data = os.pread(fd, n, off)
        if release:
            pagecache.drop(fd, 0, release)
        return data
    finally:
        os.close(fd)


def create_empty(path: str) -> None:
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    os.close(fd)


def remove_file(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def syncfs(path: str) -> None:
    """Flushes the file system holding `path` (rare paths only: it flushes everything there)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if ctypes.CDLL(None, use_errno=True).syncfs(fd) != 0:
            os.sync()
    except (OSError, AttributeError):
        os.sync()
    finally:
        os.close(fd)


def fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Reserve:
    """RESERVE bytes of disk kept in a file beside the drafts. A change that frees space
    (unlink, rmdir, rename) but first needs a little (SQLite's log) finds the disk full
    when something else filled it (the content cache, other files): it gives the reserve
    up and tries again, and the reserve is taken again once there is room."""

    def __init__(self, folder: str):
        self.path = os.path.join(folder, ".reserve")
        self._lock = threading.Lock()
        self.refill()

    def refill(self) -> None:
        if os.path.exists(self.path):
            return
        with self._lock:
            tmp = f"{self.path}.{os.getpid()}"
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                try:
                    os.posix_fallocate(fd, 0, RESERVE)
                finally:
                    os.close(fd)
                os.rename(tmp, self.path)
            except OSError:  # no room yet: taken again after the next change that frees some
                remove_file(tmp)

    def release(self) -> bool:
        """Gives the reserve up; False if there was none."""
        with self._lock:
            try:
                os.unlink(self.path)
                return True
            except FileNotFoundError:
                return False
