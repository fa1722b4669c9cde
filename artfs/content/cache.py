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

Small files live in the store's packs and are fetched a run at a time; a
run is cached as ONE file (`runs/<pack>.<start>.<end>`, a byte range of the
pack) rather than one file per small file: creating a file costs this disk
far more than writing 4 KiB into one. Each small file read from a run is
still checked against its own digest, and a run that gives a bad file is
dropped whole.

The 64 KiB pieces of a large object fetched for random reads are cached as
`parts/<object>.<offset>` (each verified against the object's piece index when
read back), not by digest: when a whole chunk of that object is cached later,
the parts it covers are dropped, so the cache keeps each byte once, in this
process or any later one.

The mount hands pieces over with `put_later`: writer threads store them while
the reader is already being answered, so a cold read does not wait for the
disk. What is queued is served from the queue; what does not fit in the queue
is not cached (it is still served); `drain` at unmount writes what is queued.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import mmap
import os
import queue
import threading
import time
from collections import OrderedDict

from artfs.digest import digest_bytes

log = logging.getLogger(__name__)

DIRECT_MIN = 64 << 10  # smaller pieces are not worth the aligned copy
_BLOCK = 4096  # O_DIRECT alignment of buffer address, file offset and length
_BUFFER = (1 << 20) + _BLOCK  # one CHUNK_SIZE piece, plus the block that shows a file is too long
RUNS = "runs"
PARTS = "parts"
QUEUE_BYTES = 256 << 20  # pieces waiting for a writer thread, at most
WRITERS = 2
STALE_TEMP = 3600.0  # seconds after which a temp file in the cache is a leftover


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
        self._queued: dict = {}  # digest, or (pack key, start): verified bytes waiting for a writer
        self._queued_bytes = 0
        self._queue: queue.Queue = queue.Queue()
        self._writers: list[threading.Thread] = []
        self._lru: OrderedDict[str, int] = OrderedDict()  # file name (hex digest, or run) -> size
        self._bytes = 0
        self._runs: dict[str, list[tuple[int, int]]] = {}  # pack hex -> cached (start, end) ranges
        self._parts: dict[str, set[int]] = {}  # object hex -> offsets of its cached parts
        os.makedirs(os.path.join(self.root, RUNS), exist_ok=True)
        os.makedirs(os.path.join(self.root, PARTS), exist_ok=True)
        self._remove_stale_temps()
        self._scan()

    def _remove_stale_temps(self) -> None:
        """Temp files left by a process killed while writing. Only old ones: another process
        sharing this cache may be writing the recent ones right now."""
        cutoff = time.time() - STALE_TEMP
        for name in os.listdir(self._tmp):
            path = os.path.join(self._tmp, name)
            try:
                if os.stat(path).st_mtime < cutoff:
                    os.unlink(path)
            except OSError:
                pass

    def _scan(self) -> None:
        found = []
        folders = [os.path.join(self.root, sub) for sub in os.listdir(self.root) if len(sub) == 2]
        folders += [os.path.join(self.root, RUNS, sub) for sub in os.listdir(os.path.join(self.root, RUNS))]
        folders += [os.path.join(self.root, PARTS, sub) for sub in os.listdir(os.path.join(self.root, PARTS))]
        for d in folders:
            for name in os.listdir(d):
                try:
                    st = os.stat(os.path.join(d, name))
                except (FileNotFoundError, NotADirectoryError):
                    continue
                found.append((st.st_mtime, name, st.st_size))
        for _, name, size in sorted(found):
            run = _parse_run(name)
            if run is not None:
                self._runs.setdefault(run[0], []).append(run[1:])
            part = _parse_part(name)
            if part is not None:
                self._parts.setdefault(part[0], set()).add(part[1])
            self._lru[name] = size
            self._bytes += size
        self._evict()

    def _path(self, name: str) -> str:
        dots = name.count(".")
        if dots == 2:  # a run: <pack hex>.<start>.<end>
            return os.path.join(self.root, RUNS, name[:2], name)
        if dots == 1:  # a part: <object hex>.<offset>
            return os.path.join(self.root, PARTS, name[:2], name)
        return os.path.join(self.root, name[:2], name)

    @property
    def size(self) -> int:
        return self._bytes

    def get(self, digest: bytes, size: int) -> bytes | None:
        """The cached bytes with this digest, or None (also when the file was corrupt)."""
        return self._get(digest, digest.hex(), size, digest)

    def get_part(self, key: str, offset: int, digest: bytes, size: int) -> bytes | None:
        """The cached part of object `key` at `offset`, if its bytes have this digest."""
        name = _part_name(key, offset)
        return self._get(("part", name), name, size, digest)

    def _get(self, item, h: str, size: int, digest: bytes) -> bytes | None:
        data = self._queued.get(item)
        if data is not None:
            return data
        try:
            data = self._read_direct(self._path(h), size) if self._use_direct(size) else None
            if data is None:
                with open(self._path(h), "rb") as f:
                    data = f.read()
        except OSError:
            return None
        if len(data) != size or digest_bytes(data) != digest:
            log.warning("cache file %s is corrupt; dropping it and fetching again", self._path(h))
            self._drop(h)
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

    def known(self, digest: bytes) -> bool:
        """`contains` from memory alone (no disk access: safe on the trio thread). What another
        process sharing the cache wrote or evicted since is not seen; a wrong answer costs a
        fetch, never wrong bytes (every cache read is verified)."""
        return digest in self._queued or digest.hex() in self._lru

    def has_part(self, key: str, offset: int) -> bool:
        with self._lock:
            return offset in self._parts.get(_pack_hex(key), ())

    def put_later(self, digest: bytes, data: bytes) -> None:
        """Queues verified bytes for a writer thread; skipped when the queue is full."""
        self._enqueue(digest, data)

    def put_part_later(self, key: str, offset: int, data: bytes) -> None:
        """Queues verified bytes [offset, offset + len(data)) of the large object `key`."""
        obj = _pack_hex(key)
        self._enqueue(("part", f"{obj}.{offset}"), data, (obj, offset))

    def drop_parts(self, key: str, start: int, end: int) -> None:
        """Drops the cached parts of object `key` within [start, end): a whole chunk holding
        those bytes is cached now (the cache keeps each byte once)."""
        obj = _pack_hex(key)
        with self._lock:
            offsets = self._parts.get(obj)
            if not offsets:
                return
            gone = [o for o in offsets if start <= o < end]
            for o in gone:
                offsets.discard(o)
            if not offsets:
                del self._parts[obj]
            for o in gone:  # not yet written: the writer skips (or removes) them
                data = self._queued.pop(("part", f"{obj}.{o}"), None)
                if data is not None:
                    self._queued_bytes -= len(data)
        for o in gone:
            self._drop(f"{obj}.{o}")

    def put_run_later(self, pack_key: str, start: int, data: bytes) -> None:
        """Queues bytes [start, start + len(data)) of a pack, every file in them verified."""
        self._enqueue((pack_key, start), data)

    def _enqueue(self, item, data: bytes, part: tuple[str, int] | None = None) -> None:
        with self._lock:
            if item in self._queued or self._queued_bytes + len(data) > QUEUE_BYTES:
                return
            self._queued[item] = data
            self._queued_bytes += len(data)
            if part is not None:  # known from now on, so drop_parts finds it even while queued
                self._parts.setdefault(part[0], set()).add(part[1])
            if not self._writers:
                for i in range(WRITERS):
                    t = threading.Thread(target=self._write_queued, name=f"cache-writer-{i}", daemon=True)
                    t.start()
                    self._writers.append(t)
        self._queue.put(item)

    def drain(self, timeout: float = 60.0) -> None:
        """Returns once everything queued is written (or failed and was logged), or after
        `timeout` seconds of a disk that does not take it (what is left is not cached)."""
        deadline = time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                left = deadline - time.monotonic()
                if left <= 0:
                    log.warning("gave up writing %d pieces to the cache", self._queue.unfinished_tasks)
                    return
                self._queue.all_tasks_done.wait(left)

    def _write_queued(self) -> None:
        while True:
            item = self._queue.get()
            try:
                data = self._queued.get(item)
                if data is None:
                    pass  # dropped while queued (drop_parts)
                elif isinstance(item, tuple) and item[0] == "part":
                    self._put_part(item[1], data)
                elif isinstance(item, tuple):
                    self.put_run(item[0], item[1], data)
                else:
                    self.put(item, data)
            except Exception as e:  # the cache is only a cache; the bytes were served already
                log.warning("could not cache %s: %s", item, e)
            finally:
                with self._lock:
                    data = self._queued.pop(item, None)
                    if data is not None:
                        self._queued_bytes -= len(data)
                self._queue.task_done()

    def _put_part(self, name: str, data: bytes) -> None:
        obj, offset = name.split(".")
        os.makedirs(os.path.join(self.root, PARTS, name[:2]), exist_ok=True)
        if self._store_file(name, data, direct=self._use_direct(len(data))):
            with self._lock:
                if ("part", name) in self._queued:
                    self._parts.setdefault(obj, set()).add(int(offset))  # (evicted meanwhile)
                    return
            self._drop(name)  # drop_parts ran while it was being written

    def put(self, digest: bytes, data: bytes) -> None:
        """Stores verified bytes. A full disk is logged and skipped: the cache is only a cache."""
        self._store_file(digest.hex(), data, direct=self._use_direct(len(data)))

    # -- runs of small files --------------------------------------------------------------
    def put_run(self, pack_key: str, start: int, data: bytes) -> None:
        """Stores bytes [start, start + len(data)) of a pack (every file in them verified)."""
        pack = _pack_hex(pack_key)
        end = start + len(data)
        with self._lock:
            if any(s <= start and end <= e for s, e in self._runs.get(pack, ())):
                return  # already covered (another reader, or a run that began earlier)
        os.makedirs(os.path.join(self.root, RUNS, pack[:2]), exist_ok=True)
        if self._store_file(f"{pack}.{start}.{end}", data, direct=False):
            with self._lock:
                known = self._runs.setdefault(pack, [])
                if (start, end) not in known:
                    known.append((start, end))

    def get_packed(self, pack_key: str, items: list[tuple[bytes, int, int]]) -> dict[bytes, bytes]:
        """The verified bytes of those (digest, offset, size) files of one pack that a cached
        run (or, from `artfs prefetch` of old, a file of their own) holds."""
        pack = _pack_hex(pack_key)
        out: dict[bytes, bytes] = {}
        with self._lock:
            ranges = list(self._runs.get(pack, ()))
        if not all(any(s <= o and o + n <= e for s, e in ranges) for _, o, n in items):
            ranges = self._look_for_runs(pack)  # another process (a second mount, prefetch) may have some
        opened: dict[tuple[int, int], int] = {}
        try:
            for digest, offset, size in items:
                run = next(((s, e) for s, e in ranges if s <= offset and offset + size <= e), None)
                if run is None:
                    data = self.get(digest, size)
                    if data is not None:
                        out[digest] = data
                    continue
                name = f"{pack}.{run[0]}.{run[1]}"
                try:
                    fd = opened.get(run)
                    if fd is None:
                        fd = opened[run] = os.open(self._path(name), os.O_RDONLY)
                    data = os.pread(fd, size, offset - run[0])
                except OSError:
                    self._forget(name)
                    ranges.remove(run)
                    continue
                if len(data) != size or digest_bytes(data) != digest:
                    log.warning("cache file %s is corrupt; dropping it and fetching again", self._path(name))
                    self._drop(name)
                    ranges.remove(run)
                    continue
                out[digest] = data
                self._touch(name)
        finally:
            for fd in opened.values():
                os.close(fd)
        return out

    def _look_for_runs(self, pack: str) -> list[tuple[int, int]]:
        try:
            names = [n for n in os.listdir(os.path.join(self.root, RUNS, pack[:2])) if n.startswith(pack + ".")]
        except OSError:
            names = []
        with self._lock:
            known = self._runs.setdefault(pack, [])
            for name in names:
                run = _parse_run(name)
                if run is not None and run[1:] not in known:
                    known.append(run[1:])
                    if name not in self._lru:  # (this process may be just writing it)
                        self._lru[name] = run[2] - run[1]
                        self._bytes += run[2] - run[1]
            return list(known)

    def covers(self, pack_key: str, offset: int, size: int) -> bool:
        with self._lock:
            return any(s <= offset and offset + size <= e for s, e in self._runs.get(_pack_hex(pack_key), ()))

    # -- files ------------------------------------------------------------------------------
    def _store_file(self, name: str, data: bytes, direct: bool) -> bool:
        path = self._path(name)
        tmp = os.path.join(self._tmp, f"{name}.{os.getpid()}.{threading.get_ident()}")
        try:
            if not (direct and self._write_direct(tmp, data)):
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
                log.warning("cache disk is full; serving %s without caching it", name[:16])
                self._evict(extra=len(data) * 4)
                return False
            raise
        with self._lock:
            if name not in self._lru:
                self._lru[name] = len(data)
                self._bytes += len(data)
            self._lru.move_to_end(name)
        self._evict()
        return True

    def _touch(self, name: str) -> None:
        with self._lock:
            if name in self._lru:
                self._lru.move_to_end(name)

    def _drop(self, name: str) -> None:
        try:
            os.unlink(self._path(name))
        except OSError:
            pass
        self._forget(name)

    def _forget(self, name: str) -> None:
        with self._lock:
            size = self._lru.pop(name, None)
            if size is not None:
                self._bytes -= size
            run = _parse_run(name)
            if run is not None and run[1:] in self._runs.get(run[0], ()):
                self._runs[run[0]].remove(run[1:])
            part = _parse_part(name)
            if part is not None and part[0] in self._parts:
                self._parts[part[0]].discard(part[1])

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
            view = memoryview(data)
            if not _page_aligned(view):
                buf = self._buffer()
                buf[:aligned] = view[:aligned]
                view = memoryview(buf)
            _write_all(fd, view[:aligned])  # (a page-aligned piece, as S3 reads give, as it is)
            if aligned < len(data):  # the tail is no whole block: through the page cache
                fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_DIRECT)
                _write_all(fd, memoryview(data)[aligned:])
        finally:
            os.close(fd)
        return True

    def discard(self, digest: bytes) -> None:
        self._drop(digest.hex())

    def _evict(self, extra: int = 0) -> None:
        victims = []
        with self._lock:
            while self._lru and self._bytes + extra > self.max_bytes:
                name, size = self._lru.popitem(last=False)
                self._bytes -= size
                run = _parse_run(name)
                if run is not None and run[1:] in self._runs.get(run[0], ()):
                    self._runs[run[0]].remove(run[1:])
                part = _parse_part(name)
                if part is not None and part[0] in self._parts:
                    self._parts[part[0]].discard(part[1])
                victims.append(name)
        for name in victims:
            try:
                os.unlink(self._path(name))
            except OSError:
                pass


def _page_aligned(view: memoryview) -> bool:
    """Whether the bytes start at a block boundary in memory (O_DIRECT can write them as they are)."""
    if view.readonly or not view.contiguous:
        return False  # (bytes: never aligned, and ctypes cannot look into a read-only buffer)
    return ctypes.addressof(ctypes.c_char.from_buffer(view)) % _BLOCK == 0


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view) :]


def _pack_hex(pack_key: str) -> str:
    return pack_key.rsplit("/", 1)[-1]


def _parse_run(name: str) -> tuple[str, int, int] | None:
    parts = name.split(".")
    if len(parts) != 3:
        return None
    try:
        return parts[0], int(parts[1]), int(parts[2])
    except ValueError:
        return None


def _part_name(key: str, offset: int) -> str:
    return f"{_pack_hex(key)}.{offset}"


def _parse_part(name: str) -> tuple[str, int] | None:
    obj, dot, offset = name.partition(".")
    if not dot or not offset.isdigit():
        return None
    return obj, int(offset)
