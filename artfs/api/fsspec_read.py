"""Verified ranged reads of one version file, without a mount and without trio.

The blocking twin of the mount's read path, for `artfs://` (fsspec): the disk
cache first, then one ranged GET per run of missing pieces, every piece
checked against its blake3 digest before a byte of it is returned, and what
was fetched handed to the same content cache a mount on this host uses (the
cache is content-addressed and its files are renamed into place, so two
processes share it safely). A small read of a large object fetches only the
64 KiB pieces that hold it, checked against the object's piece index.

Small files, warm (the loader's case): a cached run of a pack is read whole, once,
into memory, and each file is cut from it and checked against its own digest when
it is first asked for; a file checked once is kept (bounded) in memory by digest
and served again without hashing. Nothing from the disk cache is served unchecked.
"""

from __future__ import annotations

import atexit
import copy
import io
import logging
import os
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from fsspec.spec import AbstractBufferedFile

from artfs.content.cache import ContentCache
from artfs.content.fetch import (
    Piece,
    contiguous,
    fetch_run,
    group,
    is_pack,
    piece_index,
    pieces,
    pieces_covering,
)
from artfs.digest import CHUNK_SIZE, DIGEST_SIZE, digest_bytes
from artfs.errors import CorruptRecord, NotFound
from artfs.references import access as references
from artfs.store.backends.base import ObjectStore
from artfs.store.keys import pack_key
from artfs.store.manifest import Entry, Manifest

log = logging.getLogger(__name__)

Companions = Callable[[], Sequence[Piece]] | None  # made only when a read goes to the store

SMALL_READ = CHUNK_SIZE // 4  # a read up to this size of a large object fetches pieces, not chunks
MEMORY_BYTES = 64 << 20  # verified pieces kept in memory (piece indexes, the chunks just read)
# A small file read from the disk cache brings the next ones of its cached run into memory: a
# loader walking a folder then opens one cache file per 64 files, not one per file.
DISK_AHEAD_FILES = 64
DISK_AHEAD_BYTES = 1 << 20
READ_AHEAD_BYTES = 4 << 20  # small files brought along by a cold read of one of them
READ_AHEAD_FILES = 512
# Cached runs are read in windows of WINDOW bytes of the pack, kept in memory up to HELD_BYTES
# (each file checked when first cut from one). Not whole runs: a DataLoader's N workers take
# alternate batches, and each would read every run whole for 1/N of its files.
WINDOW = 256 << 10
HELD_BYTES = 64 << 20


def pack_neighbours(m: Manifest, i: int) -> list[Piece]:
    """The small files after entry `i` in the same pack, up to READ_AHEAD_BYTES: one GET brings
    them along with it, as the mount does on a cold open (a folder is read in manifest order)."""
    pack = m.packs[i]
    if pack < 0:
        return []
    key = pack_key(m.pack_ids[pack])
    out, total = [], 0
    for j in range(i + 1, min(len(m), i + 1 + READ_AHEAD_FILES)):
        if m.packs[j] != pack or total >= READ_AHEAD_BYTES:
            break
        out.append(Piece(m.digests[j * DIGEST_SIZE : (j + 1) * DIGEST_SIZE], m.sizes[j], key, m.offsets[j]))
        total += m.sizes[j]
    return out


class Verified:
    """Verified bytes by digest, least recently used dropped past `limit` bytes. Thread-safe."""

    def __init__(self, limit: int, items: OrderedDict[bytes, bytes] | None = None):
        self.limit = limit
        self._items: OrderedDict[bytes, bytes] = items if items is not None else OrderedDict()
        self._bytes = sum(len(v) for v in self._items.values())
        self._lock = threading.Lock()

    def copy_for_child(self) -> Verified:
        """The same bytes with a new lock (in a forked child the parent's may be held)."""
        return Verified(self.limit, self._items)

    def get(self, digest: bytes) -> bytes | None:
        with self._lock:
            data = self._items.get(digest)
            if data is not None:
                self._items.move_to_end(digest)
            return data

    def __contains__(self, digest: bytes) -> bool:
        return digest in self._items

    def __setitem__(self, digest: bytes, data: bytes) -> None:
        if len(data) > self.limit:
            return
        with self._lock:
            old = self._items.pop(digest, None)
            if old is not None:
                self._bytes -= len(old)
            self._items[digest] = data
            self._bytes += len(data)
            while self._bytes > self.limit:
                self._bytes -= len(self._items.popitem(last=False)[1])


class _Window:
    """Bytes [start, end) of a pack, read from a cached run; `checked`: offset -> digest of the
    files cut from it and verified (served again without hashing)."""

    __slots__ = ("run", "start", "end", "data", "checked")

    def __init__(self, run: str, start: int, data: bytes):
        self.run, self.start, self.end, self.data = run, start, start + len(data), data
        self.checked: dict[int, bytes] = {}


class RunCache(ContentCache):
    """The content cache, plus what the warm small-file path needs: where a cached run is, a
    byte range of it, a child's copy without the start-up scan. (Candidates for ContentCache
    itself; kept here so the mount's cache is untouched.)"""

    def run_for(self, pack_key: str, offset: int, size: int) -> tuple[str, int, int] | None:
        """(file name, start, end) of a cached run of the pack holding [offset, offset + size)."""
        pack = pack_key.rsplit("/", 1)[-1]
        for attempt in range(2):
            with self._lock:
                for s, e in self._runs.get(pack, ()):
                    if s <= offset and offset + size <= e:
                        return f"{pack}.{s}.{e}", s, e
            if attempt == 0:
                self._look_for_runs(pack)  # another process (a mount, a worker) may have written it
        return None

    def read_run(self, name: str, at: int, size: int) -> bytes | None:
        """`size` bytes at `at` in the run file, unverified: the caller checks each file it cuts."""
        try:
            fd = os.open(self._path(name), os.O_RDONLY)
        except OSError:
            self._forget(name)
            return None
        try:
            return os.pread(fd, size, at)
        except OSError:
            return None
        finally:
            os.close(fd)

    def drop_run(self, name: str) -> None:
        log.warning("cache file %s is corrupt; dropping it and fetching again", self._path(name))
        self._drop(name)

    def for_child(self) -> RunCache:
        """This cache for a forked child (a DataLoader worker): what is known of the folder is
        kept (no new scan), the locks, queue and writer threads are new (the parent's may be
        held or gone). Nothing queued is carried over: the parent writes it."""
        child = copy.copy(self)
        child._lock = threading.Lock()
        child._buffers = threading.local()
        child._queued, child._queued_bytes, child._writers = {}, 0, []
        child._queue = queue.Queue()
        child._lru = OrderedDict(self._lru)
        child._runs = {k: list(v) for k, v in self._runs.items()}
        child._parts = {k: set(v) for k, v in self._parts.items()}
        return child


class VerifiedReader:
    """Thread-safe: fsspec users read from many threads (DataLoader workers, pyarrow)."""

    def __init__(self, objects: ObjectStore, cache: ContentCache, memory: Verified | None = None):
        self.objects = objects
        self.cache = cache
        self._memory = memory if memory is not None else Verified(MEMORY_BYTES)
        # windows of cached runs: by (pack key, offset // WINDOW), oldest first
        self._held: OrderedDict[tuple[str, int], _Window] = OrderedDict()
        self._held_bytes = 0
        self._lock = threading.Lock()
        self.hashed = 0  # small files checked against their digest on the warm path (tests)
        self.fetches = 0  # ranged GETs issued (tests)
        atexit.register(self._drain)

    def _drain(self) -> None:
        try:
            self.cache.drain(timeout=10.0)  # what was fetched reaches the cache before exit
        except OSError as e:  # only a cache, and the interpreter is going away
            log.debug("cache not drained at exit: %s", e)

    def memory(self) -> Verified:
        return self._memory

    def small(self, digest: bytes, size: int, key: str, offset: int) -> bytes | None:
        """A whole small file of a pack, verified: from a window of a cached run held in memory
        (read from the disk cache once), else from memory; None when neither holds it, or when
        the cached copy is damaged (the run is dropped: the caller reads it from the store)."""
        where = (key, offset // WINDOW)
        win = self._held.get(where)
        if win is None or offset + size > win.end or offset < win.start:
            data = self._memory.get(digest)  # read ahead from the store, not yet in a run on disk
            if data is not None or not isinstance(self.cache, RunCache):
                return data
            win = self._read_window(self.cache, where, offset, size)
            if win is None:
                return None
        at = offset - win.start
        data = win.data[at : at + size]
        if win.checked.get(offset) == digest:  # cut and checked before, in this process
            return data
        self.hashed += 1
        if len(data) != size or digest_bytes(data) != digest:
            with self._lock:
                for k in [k for k, w in self._held.items() if w.run == win.run]:
                    self._held_bytes -= len(self._held.pop(k).data)
            if isinstance(self.cache, RunCache):
                self.cache.drop_run(win.run)
            return None
        win.checked[offset] = digest
        return data

    def _read_window(self, cache: RunCache, where: tuple[str, int], offset: int, size: int) -> _Window | None:
        found = cache.run_for(where[0], offset, size)
        if found is None:
            return None
        name, s, e = found
        start, end = max(s, where[1] * WINDOW), min(e, (where[1] + 1) * WINDOW)
        if offset + size > end:  # the file runs past the window: read just it
            start, end = offset, offset + size
        raw = cache.read_run(name, start - s, end - start)
        if raw is None:
            return None
        win = _Window(name, start, raw)
        if end - start == size and start == offset and offset // WINDOW != (offset + size - 1) // WINDOW:
            return win  # (a file across windows: served, not held under one window's key)
        with self._lock:
            old = self._held.pop(where, None)
            if old is not None:
                self._held_bytes -= len(old.data)
            self._held[where] = win
            self._held_bytes += len(raw)
            while self._held_bytes > HELD_BYTES and len(self._held) > 1:
                self._held_bytes -= len(self._held.popitem(last=False)[1].data)
        return win

    def read(self, entry: Entry, start: int, end: int, companions: Companions = None) -> bytes:
        """Bytes [start, end) of the entry (clipped to its size), every one verified.
        `companions()`: pieces worth bringing along if the store must be asked anyway (read-ahead:
        the small files after this one in its pack), kept in memory for the reads to come."""
        if entry.ref is not None:
            return references.read(entry, start, end)
        end = min(end, entry.size)
        if end <= start:
            return b""
        if entry.pack is not None:
            whole = self.small(entry.digest, entry.size, pack_key(entry.pack), entry.offset)
            if whole is not None:
                return whole if start == 0 and end == entry.size else whole[start:end]
        ps = pieces(entry)
        index = piece_index(entry)
        if index is not None and end - start <= SMALL_READ:
            data = self._read_by_index(index, ps, start, end)
            if data is not None:
                return data
        wanted = [p for p in ps if p.file_offset < end and p.file_offset + p.size > start]
        got = self._load(wanted, companions)
        blob = b"".join(got[p.digest] for p in wanted)
        skip = start - wanted[0].file_offset
        return blob[skip : skip + (end - start)]

    def _read_by_index(self, index: Piece, chunks: list[Piece], start: int, end: int) -> bytes | None:
        try:
            digests = self._load([index])[index.digest]
        except (NotFound, CorruptRecord) as e:
            log.warning("piece index of %s unusable, reading whole chunks: %s", chunks[0].key, e)
            return None
        wanted = pieces_covering(chunks, digests, start, end)
        got = self._load(wanted)
        blob = b"".join(got[p.digest] for p in wanted)
        skip = start - wanted[0].file_offset
        return blob[skip : skip + (end - start)]

    def _cached_ahead(self, run: list[Piece], more: Sequence[Piece]) -> list[Piece]:
        """Up to DISK_AHEAD_FILES of `more` that the disk cache holds and memory does not."""
        out: list[Piece] = []
        key, total = run[0].key, 0
        for c in more:
            if len(out) >= DISK_AHEAD_FILES or total >= DISK_AHEAD_BYTES:
                break
            if c.size and c.key == key and c.digest not in self._memory and self.cache.covers(key, c.offset, c.size):
                out.append(c)
                total += c.size
        return out

    def _load(self, wanted: list[Piece], companions: Companions = None) -> dict[bytes, bytes]:
        """digest -> verified bytes for each piece: memory, the disk cache, then the store."""
        out: dict[bytes, bytes] = {}
        missing = []
        with self._lock:
            for p in wanted:
                if p.size == 0:
                    out[p.digest] = b""
                elif (data := self._memory.get(p.digest)) is not None:
                    out[p.digest] = data
        more: Sequence[Piece] | None = None
        for run in group([p for p in wanted if p.digest not in out]):
            if is_pack(run[0].key):
                ahead: list[Piece] = []
                if companions is not None:  # the next files, from the same cached run: one open
                    more = companions()
                    ahead = self._cached_ahead(run, more)
                found = self.cache.get_packed(run[0].key, [(p.digest, p.offset, p.size) for p in run + ahead])
                with self._lock:
                    for c in ahead:
                        if c.digest in found:
                            self._memory[c.digest] = found[c.digest]
            else:
                found = {p.digest: d for p in run if (d := self.cache.get(p.digest, p.size)) is not None}
            out.update(found)
            missing += [p for p in run if p.digest not in found]
        if missing and companions is not None:  # the store is asked anyway: bring along what is not at hand
            asked = {p.digest for p in missing}
            more = companions() if more is None else more
            with self._lock:
                extra = [
                    c
                    for c in more
                    if c.size
                    and c.digest not in asked
                    and c.digest not in self._memory
                    and not self.cache.covers(c.key, c.offset, c.size)
                ]
            missing += extra
        fetched: dict[bytes, bytes] = {}

        def arrived(p: Piece, data: bytes) -> None:
            fetched[p.digest] = data
            if not is_pack(p.key):
                self.cache.put_later(p.digest, data)

        for run in group(missing):
            with self._lock:
                self.fetches += 1
            fetch_run(self.objects, run, arrived)
            if is_pack(run[0].key):  # small files: cached as one file per contiguous stretch
                for at, parts in contiguous(run, fetched):
                    self.cache.put_run_later(run[0].key, at, b"".join(parts))
        out.update(fetched)
        with self._lock:
            for digest, data in fetched.items():  # read-ahead lives here until it is read
                self._memory[digest] = data
            for p in wanted:
                if p.size >= (64 << 10):  # small files from the disk cache are cheap to find again
                    self._memory[p.digest] = out[p.digest]
        return out


class ArtfsFile(AbstractBufferedFile):
    """A version file open for reading; fsspec's read-ahead cache over verified ranged reads."""

    DEFAULT_BLOCK_SIZE = 4 * CHUNK_SIZE  # whole chunks: the unit a large object is verified in

    def __init__(
        self,
        fs: Any,  # the ArtfsFileSystem
        path: str,
        entry: Entry,
        companions: Companions = None,
        block_size: int | None = None,
        cache_options: dict | None = None,
        cache_type: str = "readahead",
        **kwargs: Any,
    ):
        self.entry = entry
        self.companions = companions
        size = entry.size if entry.size >= 0 else None
        if size is None:  # a reference of unknown size: learn it by reading it whole
            data = fs.read_range(entry, 0, 1 << 62, path)
            size = len(data)
        super().__init__(
            fs,
            path,
            mode="rb",
            block_size=block_size or self.DEFAULT_BLOCK_SIZE,
            cache_type=cache_type,
            cache_options=cache_options,
            size=size,
            **kwargs,
        )

    def _fetch_range(self, start: int, end: int) -> bytes:
        return self.fs.read_range(self.entry, start, end, self.path, self.companions)


class SmallFile(io.BytesIO):
    """A small file open for reading whose verified bytes were at hand when it was opened (a
    warm pack run): served from memory, as fsspec's own memory file system does, without the
    buffered file's per-open machinery."""

    def __init__(self, fs: Any, path: str, data: bytes):
        super().__init__(data)
        self.fs, self.path, self.size = fs, path, len(data)

    @property
    def mode(self) -> str:
        return "rb"

    @property
    def details(self) -> dict[str, Any]:
        return self.fs.info(self.path)

    def info(self) -> dict[str, Any]:
        return self.details

    @property
    def full_name(self) -> str:
        return f"artfs://{self.path}"
