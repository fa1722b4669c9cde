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

Hashing while writing. A file written from offset 0 in order (cp, a download,
a tar member) has its blake3 digest and chunk digests computed as the bytes
pass through `write`, so committing it needs no hashing pass. Any other change
(a write elsewhere, a truncate, a copy-up) drops that state and the commit
hashes the file as before; `generation` lets the commit check the file did not
change while it was being uploaded.
"""

from __future__ import annotations

import ctypes
import os
import threading

from artfs.digest import Hasher, Hashes

JOURNAL_LIMIT = 256 << 10  # files up to this size are journaled at close instead of fsynced
# Writes ending within this many bytes of a file's start may be made on the mount's trio thread
# (a page-cache write of a small file, ~10 µs: cheaper than the hand-off to a worker thread);
# further ones, which dirty throttling may hold for long, go through a worker thread.
INLINE_WRITES = 1 << 20
RESERVE = 4 << 20  # disk space held back so that removing things works on a full disk

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


class WriteTracker:
    """Per-inode write state of one draft: generations and sequential hashes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._gen: dict[int, int] = {}
        self._seq: dict[int, Hasher] = {}

    def generation(self, ino: int) -> int:
        return self._gen.get(ino, 0)

    def start(self, ino: int) -> None:
        """The file is empty now (created, or opened with O_TRUNC): hash what follows."""
        with self._lock:
            self._gen[ino] = self._gen.get(ino, 0) + 1
            self._seq[ino] = Hasher()

    def changed(self, ino: int) -> None:
        """Changed other than by an in-order write: its bytes must be hashed at commit."""
        with self._lock:
            self._gen[ino] = self._gen.get(ino, 0) + 1
            self._seq.pop(ino, None)

    def write(self, ino: int, fd: int, data: bytes, off: int, wait: bool = True) -> int:
        """pwrite, feeding the sequential hash when the write continues it (`wait` False:
        WouldBlock rather than wait for the lock)."""
        if ino not in self._seq:
            if not wait:  # (rare: not worth a second lock-free path)
                raise WouldBlock()
            n = os.pwrite(fd, data, off)
            with self._lock:
                self._gen[ino] = self._gen.get(ino, 0) + 1
                self._seq.pop(ino, None)  # started meanwhile (O_TRUNC elsewhere): these bytes missed it
            return n
        # Under the lock: the order of the bytes written and the order they are hashed
        # must be the same, whatever order concurrent WRITEs arrive in.
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
            if seq is not None:
                if off == seq.size:
                    seq.update(memoryview(data)[:n])
                else:
                    del self._seq[ino]
            return n
        finally:
            self._lock.release()

    def in_order(self, ino: int, end: int) -> bool:
        """Whether the file's bytes up to `end` were all written in order from offset 0 (and
        nothing after them yet)."""
        seq = self._seq.get(ino)
        return seq is not None and seq.size == end

    def digest(self, ino: int, size: int) -> tuple[Hashes, int] | None:
        """(digests, generation) if the file's `size` bytes were all hashed in order."""
        with self._lock:
            seq = self._seq.get(ino)
            if seq is None or seq.size != size:
                return None
            return seq.result(), self._gen.get(ino, 0)

    forget = changed


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
