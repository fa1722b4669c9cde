"""The local content cache: verified pieces on disk, keyed by their blake3 digest.

Content-addressed, so it needs no invalidation and two mounts may share one
folder: every file is written to a temp name and renamed into place, and
every read is verified against the digest the caller expects, so a corrupt
or half-written file is dropped and fetched again, never served. The size
bound is kept by evicting the least recently used files; each process keeps
its own recency order, seeded from the files' mtimes at start.

Pieces of 64 KiB and more move with O_DIRECT where the file system allows it:
the kernel then copies straight between our buffer and the disk instead of
allocating page-cache pages for bytes the mount's own page cache (or memory
LRU) already holds. On the machines measured that made a warm read several
times cheaper in CPU (docs/benchmarks.md); the tail of a piece that is not a
whole number of blocks goes through the page cache as usual.

The mount hands pieces over with `put_later`: writer threads store them while
the reader is already being answered, so a cold read does not wait for the
disk. What is queued is served from the queue; what does not fit in the queue
is not cached (it is still served); `drain` at unmount writes what is queued.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import mmap
import os
import queue
import threading
from collections import OrderedDict

from .digest import digest_bytes

log = logging.getLogger(__name__)

DIRECT_MIN = 64 << 10  # smaller pieces are not worth the aligned copy
_BLOCK = 4096  # O_DIRECT alignment of buffer address, file offset and length
_BUFFER = (1 << 20) + _BLOCK  # one CHUNK_SIZE piece, plus the block that shows a file is too long
QUEUE_BYTES = 256 << 20  # pieces waiting for a writer thread, at most
WRITERS = 2


class ContentCache:
    def __init__(self, root: str, max_bytes: int):
        self.root = os.path.join(root, "content")
        self.max_bytes = max_bytes
        self._tmp = os.path.join(self.root, "tmp")
        os.makedirs(self._tmp, exist_ok=True)
        for i in range(256):  # made once here, not per put (an exception per existing dir adds up)
            os.makedirs(os.path.join(self.root, f"{i:02x}"), exist_ok=True)
        self._lock = threading.Lock()
        self._direct = hasattr(os, "O_DIRECT")  # off after the first EINVAL (tmpfs, some FUSE disks)
        self._buffers = threading.local()  # one aligned buffer per worker thread
        self._queued: dict[bytes, bytes] = {}  # digest -> verified bytes waiting for a writer
        self._queued_bytes = 0
        self._queue: queue.Queue = queue.Queue()
        self._writers: list[threading.Thread] = []
        self._lru: OrderedDict[str, int] = OrderedDict()  # hex digest -> size
        self._bytes = 0
        self._scan()

    def _scan(self) -> None:
        found = []
        for sub in os.listdir(self.root):
            if len(sub) != 2:
                continue
            d = os.path.join(self.root, sub)
            for name in os.listdir(d):
                try:
                    st = os.stat(os.path.join(d, name))
                except FileNotFoundError:
                    continue
                found.append((st.st_mtime, name, st.st_size))
        for _, name, size in sorted(found):
            self._lru[name] = size
            self._bytes += size
        self._evict()

    def _path(self, hexdigest: str) -> str:
        return os.path.join(self.root, hexdigest[:2], hexdigest)

    @property
    def size(self) -> int:
        return self._bytes

    def get(self, digest: bytes, size: int) -> bytes | None:
        """The cached bytes with this digest, or None (also when the file was corrupt)."""
        data = self._queued.get(digest)
        if data is not None:
            return data
        h = digest.hex()
        try:
            data = self._read_direct(self._path(h), size) if self._use_direct(size) else None
            if data is None:
                with open(self._path(h), "rb") as f:
                    data = f.read()
        except OSError:
            return None
        if len(data) != size or digest_bytes(data) != digest:
            log.warning("cache file %s is corrupt; dropping it and fetching again", self._path(h))
            self.discard(digest)
            return None
        with self._lock:
            if h in self._lru:
                self._lru.move_to_end(h)
            else:
                self._lru[h] = size
                self._bytes += size
        return data

    def contains(self, digest: bytes) -> bool:
        return digest in self._queued or os.path.exists(self._path(digest.hex()))

    def put_later(self, digest: bytes, data: bytes) -> None:
        """Queues verified bytes for a writer thread; skipped when the queue is full."""
        with self._lock:
            if digest in self._queued or self._queued_bytes + len(data) > QUEUE_BYTES:
                return
            self._queued[digest] = data
            self._queued_bytes += len(data)
            if not self._writers:
                for i in range(WRITERS):
                    t = threading.Thread(target=self._write_queued, name=f"cache-writer-{i}", daemon=True)
                    t.start()
                    self._writers.append(t)
        self._queue.put(digest)

    def drain(self) -> None:
        """Returns once everything queued is written (or failed and was logged)."""
        self._queue.join()

    def _write_queued(self) -> None:
        while True:
            digest = self._queue.get()
            try:
                self.put(digest, self._queued[digest])
            except Exception as e:  # the cache is only a cache; the bytes were served already
                log.warning("could not cache %s: %s", digest.hex()[:16], e)
            finally:
                with self._lock:
                    self._queued_bytes -= len(self._queued.pop(digest))
                self._queue.task_done()

    def put(self, digest: bytes, data: bytes) -> None:
        """Stores verified bytes. A full disk is logged and skipped: the cache is only a cache."""
        h = digest.hex()
        path = self._path(h)
        tmp = os.path.join(self._tmp, f"{h}.{os.getpid()}.{threading.get_ident()}")
        try:
            if not (self._use_direct(len(data)) and self._write_direct(tmp, data)):
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                try:
                    _write_all(fd, memoryview(data))
                finally:
                    os.close(fd)
            try:
                os.rename(tmp, path)
            except FileNotFoundError:  # its folder was removed under us
                os.makedirs(os.path.dirname(path), exist_ok=True)
                os.rename(tmp, path)
        except OSError as e:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                log.warning("cache disk is full; serving %s without caching it", h[:16])
                self._evict(extra=len(data) * 4)
                return
            raise
        with self._lock:
            if h not in self._lru:
                self._lru[h] = len(data)
                self._bytes += len(data)
            self._lru.move_to_end(h)
        self._evict()

    # -- O_DIRECT -------------------------------------------------------------------------
    def _use_direct(self, size: int) -> bool:
        return self._direct and DIRECT_MIN <= size <= _BUFFER - _BLOCK

    def _buffer(self) -> mmap.mmap:
        buf = getattr(self._buffers, "buf", None)
        if buf is None:
            buf = self._buffers.buf = mmap.mmap(-1, _BUFFER)  # page-aligned
        return buf

    def _open_direct(self, path: str, flags: int) -> int | None:
        try:
            return os.open(path, flags | os.O_DIRECT, 0o644)
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            log.info("the cache folder does not take O_DIRECT; using the page cache")
            self._direct = False
            return None

    def _read_direct(self, path: str, size: int) -> bytes | None:
        """The file's bytes if it has exactly `size` of them (else a wrong-length bytes), or None
        when O_DIRECT is not available here."""
        fd = self._open_direct(path, os.O_RDONLY)
        if fd is None:
            return None
        buf = self._buffer()
        try:
            want = -(-(size + 1) // _BLOCK) * _BLOCK  # one byte more than expected shows a long file
            got = os.preadv(fd, [memoryview(buf)[:want]], 0)
        finally:
            os.close(fd)
        return buf[:got]

    def _write_direct(self, path: str, data: bytes) -> bool:
        fd = self._open_direct(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        if fd is None:
            return False
        try:
            aligned = len(data) - len(data) % _BLOCK
            buf = self._buffer()
            buf[:aligned] = data[:aligned]
            _write_all(fd, memoryview(buf)[:aligned])
            if aligned < len(data):  # the tail is no whole block: through the page cache
                fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_DIRECT)
                _write_all(fd, memoryview(data)[aligned:])
        finally:
            os.close(fd)
        return True

    def discard(self, digest: bytes) -> None:
        h = digest.hex()
        try:
            os.unlink(self._path(h))
        except OSError:
            pass
        with self._lock:
            size = self._lru.pop(h, None)
            if size is not None:
                self._bytes -= size

    def _evict(self, extra: int = 0) -> None:
        victims = []
        with self._lock:
            while self._lru and self._bytes + extra > self.max_bytes:
                h, size = self._lru.popitem(last=False)
                self._bytes -= size
                victims.append(h)
        for h in victims:
            try:
                os.unlink(self._path(h))
            except OSError:
                pass


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view):]
