"""Verified ranged reads of one version file, without a mount and without trio.

The blocking twin of the mount's read path, for `artfs://` (fsspec): the disk
cache first, then one ranged GET per run of missing pieces, every piece
checked against its blake3 digest before a byte of it is returned, and what
was fetched handed to the same content cache a mount on this host uses (the
cache is content-addressed and its files are renamed into place, so two
processes share it safely). A small read of a large object fetches only the
64 KiB pieces that hold it, checked against the object's piece index.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Callable, Sequence

from cachetools import LRUCache

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
from artfs.digest import CHUNK_SIZE
from artfs.errors import CorruptRecord, NotFound
from artfs.references import access as references
from artfs.store.backends.base import ObjectStore
from artfs.store.manifest import Entry

log = logging.getLogger(__name__)

Companions = Callable[[], Sequence[Piece]] | None  # made only when a read goes to the store

SMALL_READ = CHUNK_SIZE // 4  # a read up to this size of a large object fetches pieces, not chunks
MEMORY_BYTES = 64 << 20  # verified pieces kept in memory (piece indexes, the chunks just read)
# A small file read from the disk cache brings the next ones of its cached run into memory: a
# loader walking a folder then opens one cache file per 64 files, not one per file.
DISK_AHEAD_FILES = 64
DISK_AHEAD_BYTES = 1 << 20


class VerifiedReader:
    """Thread-safe: fsspec users read from many threads (DataLoader workers, pyarrow)."""

    def __init__(self, objects: ObjectStore, cache: ContentCache):
        self.objects = objects
        self.cache = cache
        self._memory: LRUCache = LRUCache(maxsize=MEMORY_BYTES, getsizeof=len)
        self._lock = threading.Lock()
        self.fetches = 0  # ranged GETs issued (tests)
        atexit.register(self._drain)

    def _drain(self) -> None:
        try:
            self.cache.drain(timeout=10.0)  # what was fetched reaches the cache before exit
        except OSError as e:  # only a cache, and the interpreter is going away
            log.debug("cache not drained at exit: %s", e)

    def read(self, entry: Entry, start: int, end: int, companions: Companions = None) -> bytes:
        """Bytes [start, end) of the entry (clipped to its size), every one verified.
        `companions()`: pieces worth bringing along if the store must be asked anyway (read-ahead:
        the small files after this one in its pack), kept in memory for the reads to come."""
        if entry.ref is not None:
            return references.read(entry, start, end)
        end = min(end, entry.size)
        if end <= start:
            return b""
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
