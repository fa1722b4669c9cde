"""Verified content for the filesystem: memory, then the disk cache, then the store.

Concurrency in trio's terms: all bookkeeping (the memory LRU and the in-flight
table) happens on the trio thread, so it needs no locks; only disk and store
I/O run in worker threads, bounded by one CapacityLimiter. Every piece has an
in-flight Event while it is being loaded, so any number of readers waiting
for one piece cause a single fetch ("single flight").

A read has one deadline (`deadline()`, --timeout from when it began) for all it
waits on: the piece index, the pieces, someone else's fetch of them. A piece
whose stored bytes fail verification is an EIO for that piece only; the others
fetched with it are served (`where` names the file in that EIO's message).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence

import trio

from artfs.content.cache import ContentCache
from artfs.content.fetch import (
    EMPTY_DIGEST,
    Piece,
    contiguous,
    fetch_run,
    group,
    is_pack,
    pieces_covering,
)
from artfs.errors import CorruptRecord, NotFound, StoreUnavailable
from artfs.store.backends.base import ObjectStore

log = logging.getLogger(__name__)

# After a load fails (store down or hung), the same pieces fail at once for this long instead
# of waiting out --timeout again: the kernel retries a failed read-ahead READ immediately
# with a READ of its own, which would double the time a reader waits for its EIO.
FAILURE_MEMO = 1.0
# Pieces this large are handed to their readers the moment they are verified; a run of small
# files is handed over whole (a thread-to-trio call per 4 KiB file would cost more than it saves).
EARLY_PIECE_BYTES = 256 << 10
# What a sequential stream's read-ahead may take of the memory cache, at most: a cold stream
# through a large file must not push out the files read at random (no head-of-line blocking).
STREAM_SHARE = 0.5


class Memory:
    """Verified pieces in memory, least recently used first out, in two segments: pieces read
    ahead for a sequential stream, and the rest (read on demand, or read ahead and then read
    again at random). Streams together hold at most `stream_bytes`; the rest may use what the
    streams leave free, and streams take it back down to `max_bytes - stream_bytes`. So one
    scan through a file larger than memory leaves the hot pieces where they are. Trio thread
    only (no locks)."""

    __slots__ = ("max_bytes", "stream_bytes", "_main", "_stream", "_main_used", "_stream_used")

    def __init__(self, max_bytes: int, stream_bytes: int):
        self.max_bytes = max_bytes
        self.stream_bytes = min(stream_bytes, max_bytes)
        self._main: OrderedDict[bytes, bytes] = OrderedDict()
        self._stream: OrderedDict[bytes, bytes] = OrderedDict()
        self._main_used = 0
        self._stream_used = 0

    def __contains__(self, digest: bytes) -> bool:
        return digest in self._main or digest in self._stream

    def get(self, digest: bytes, promote: bool = False) -> bytes | None:
        """The piece's bytes; `promote`: a read other than the stream's own moves it out of the
        stream segment (it is wanted for itself now)."""
        data = self._main.get(digest)
        if data is not None:
            self._main.move_to_end(digest)
            return data
        data = self._stream.get(digest)
        if data is not None:
            if promote:
                del self._stream[digest]
                self._stream_used -= len(data)
                self.put(digest, data)
            else:
                self._stream.move_to_end(digest)
        return data

    def put(self, digest: bytes, data: bytes, stream: bool = False) -> None:
        if digest in self:
            return
        if stream:
            self._stream[digest] = data
            self._stream_used += len(data)
        else:
            self._main[digest] = data
            self._main_used += len(data)
        self._evict()

    def _evict(self) -> None:
        while self._stream_used > self.stream_bytes:
            self._stream_used -= len(self._stream.popitem(last=False)[1])
        while self._main_used + self._stream_used > self.max_bytes:
            if self._stream and (self._main_used <= self.max_bytes - self.stream_bytes or not self._main):
                self._stream_used -= len(self._stream.popitem(last=False)[1])
            else:
                self._main_used -= len(self._main.popitem(last=False)[1])


class ContentSource:
    def __init__(
        self,
        store: ObjectStore,
        cache: ContentCache,
        *,
        memory_bytes: int = 256 << 20,
        threads: int = 8,
        timeout: float = 30.0,
    ):
        self.store = store
        self.cache = cache
        self.timeout = timeout
        self.limiter = trio.CapacityLimiter(threads)  # blocking work of the file system (ops)
        # Store fetches have threads of their own: a fetch abandoned at --timeout keeps its
        # thread until the S3 client gives up, and must not starve lookups and draft writes.
        self._fetch_limiter = trio.CapacityLimiter(threads)
        # Loads the disk cache holds whole never queue behind store fetches: a file already
        # cached reads at disk speed while another is read cold (no head-of-line blocking).
        self._disk_limiter = trio.CapacityLimiter(threads)
        self._memory = Memory(memory_bytes, int(memory_bytes * STREAM_SHARE))
        self._inflight: dict[bytes, trio.Event] = {}
        self._failed: dict[bytes, tuple[float, str]] = {}  # digest -> (when, why) of a failed load
        self._failed_objects: dict[str, tuple[float, str]] = {}  # the same, by the object it is in
        self._nursery: trio.Nursery | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self.fetches = 0  # ranged GETs issued, for tests and stats

    def attach(self, nursery: trio.Nursery) -> None:
        """Background read-ahead runs in this nursery."""
        self._nursery = nursery
        self._token = trio.lowlevel.current_trio_token()

    def deadline(self) -> float:
        """When a read starting now must have failed by, whatever it waits on (trio's clock)."""
        return trio.current_time() + self.timeout

    async def get(
        self,
        piece: Piece,
        companions: Sequence[Piece] = (),
        on_loaded=None,
        *,
        where: str = "",
        deadline: float | None = None,
        promote: bool = True,
    ) -> bytes:
        """The verified bytes of `piece`, loading `companions` (read-ahead) in the same trip.
        `promote=False`: the read is a sequential stream's, which leaves what it read ahead
        in the stream segment of memory (`Memory`).
        `on_loaded(piece, bytes)` is called in the worker thread for each piece this call loads.
        Raises StoreUnavailable once `deadline` (default: --timeout from now) has passed, and
        CorruptRecord, naming `where`, if the stored bytes of `piece` fail verification."""
        if piece.size == 0:
            return b""
        if deadline is None:
            deadline = self.deadline()
        while True:
            data = self._memory.get(piece.digest, promote)
            if data is not None:
                return data
            failed = self._failed.get(piece.digest) or self._failed_objects.get(_object_of(piece.key))
            if failed is not None and trio.current_time() - failed[0] < FAILURE_MEMO:
                raise StoreUnavailable(failed[1])
            event = self._inflight.get(piece.digest)
            if event is None:
                break
            with trio.move_on_at(deadline):
                await event.wait()  # someone else is loading it; if they failed we try ourselves
            if trio.current_time() >= deadline and piece.digest not in self._memory:
                raise StoreUnavailable(f"timed out after {self.timeout:g}s reading {piece.key}")
        bad: dict[bytes, CorruptRecord] = {}
        loaded = await self._load([piece, *companions], on_loaded, deadline, bad)
        data = loaded.get(piece.digest)
        if data is None:
            damaged = bad.get(piece.digest)
            if damaged is not None:
                raise CorruptRecord(f"{where}: {damaged}" if where else str(damaged))
            raise StoreUnavailable(f"could not load {piece.key}")
        return data

    async def read_pieces(
        self, index: Piece, chunks: list[Piece], start: int, end: int, *, where: str = "", deadline: float | None = None
    ) -> bytes | None:
        """Bytes [start, end) of a large object for a random read: only the PIECE_SIZE pieces
        that hold them, in one ranged GET, each verified against the object's piece index.
        None if the index is missing or does not match its digest: the caller then reads the
        `chunks` holding those bytes, verified against the manifest."""
        key = chunks[0].key
        if deadline is None:
            deadline = self.deadline()  # one for the index and the pieces together
        try:
            try:
                digests = await self.get(index, deadline=deadline)
            except (NotFound, CorruptRecord) as e:
                log.warning("piece index of %s unusable, reading whole chunks: %s", key, e)
                return None
            wanted = pieces_covering(chunks, digests, start, end)
            parts = [await self.get(wanted[0], wanted[1:], where=where, deadline=deadline)]
            for p in wanted[1:]:
                parts.append(await self.get(p, where=where, deadline=deadline))
        except StoreUnavailable as e:
            # The kernel retries a failed READ at once; the retry (no longer a seek, so it reads
            # whole chunks) must fail at once too, not wait out --timeout a second time.
            self._note_failure(chunks, str(e))
            raise
        blob = parts[0] if len(parts) == 1 else b"".join(parts)
        skip = start - wanted[0].file_offset
        return blob[skip : skip + (end - start)]

    def at_hand(self, piece: Piece) -> bool:
        """In memory, being loaded, or in the disk cache: no store GET of its own needed.
        Asked on the trio thread for each random READ, so the disk cache is asked from memory."""
        d = piece.digest
        return d in self._memory or d in self._inflight or self.cache.known(d)

    def _on_disk(self, pieces: list[Piece]) -> bool:
        """Whether the disk cache holds every one of these pieces (no store GET needed). Asked on
        the trio thread for every load and read-ahead, so from memory: a stat of the cache folder
        there waits on a disk that a cold stream keeps busy, and every request waits with it. A
        wrong answer (another mount added or removed the piece) only picks the other thread
        pool: the load itself looks at the disk cache first."""
        for p in pieces:
            if is_pack(p.key):
                if not self.cache.covers(p.key, p.offset, p.size):
                    return False
            elif p.part:
                if not self.cache.has_part(p.key, p.offset):
                    return False
            elif not self.cache.known(p.digest):
                return False
        return True

    def close(self) -> None:
        """At unmount: what was fetched but not yet written to the disk cache is written."""
        self.cache.drain()

    def spawn(self, fn, *args) -> None:
        """Runs blocking `fn(*args)` in a worker thread in the background; failures are logged."""
        if self._nursery is not None:
            self._nursery.start_soon(self._quietly, fn, args)

    async def _quietly(self, fn, args) -> None:
        try:
            await trio.to_thread.run_sync(fn, *args, limiter=self.limiter)
        except Exception as e:
            log.warning("background %s failed: %s", getattr(fn, "__name__", fn), e)

    def prefetch(self, pieces: list[Piece]) -> None:
        """Starts loading pieces in the background (no-op for ones cached or in flight)."""
        if self._nursery is None:
            return
        todo = [p for p in pieces if p.size and p.digest not in self._memory and p.digest not in self._inflight]
        if not todo:
            return
        self._claim(todo)
        deadline = self.deadline()
        if len(todo) > 1 and self._on_disk(todo):
            # From the disk cache, chunk by chunk in parallel: O_DIRECT reads have no readahead,
            # so one thread reading a run in turn would keep the disk one request deep.
            for p in todo:
                self._nursery.start_soon(self._background, [p], deadline)
        else:
            self._nursery.start_soon(self._background, todo, deadline)

    def cached(self, piece: Piece) -> bool:
        return piece.size == 0 or piece.digest in self._memory

    def cached_digest(self, digest: bytes) -> bool:
        return digest in self._memory or digest in self._inflight

    def peek(self, piece: Piece) -> bytes | None:
        """The piece's bytes if they are in memory now (no waiting, no I/O)."""
        if piece.size == 0:
            return b""
        return self._memory.get(piece.digest)

    def _claim(self, pieces: list[Piece]) -> None:
        for p in pieces:
            self._inflight[p.digest] = trio.Event()

    def _release(self, pieces: list[Piece]) -> None:
        for p in pieces:
            event = self._inflight.pop(p.digest, None)
            if event is not None:
                event.set()

    async def _background(self, pieces: list[Piece], deadline: float) -> None:
        try:
            await self._run_claimed(pieces, None, deadline, {}, stream=True)
        except Exception as e:  # read-ahead failures surface on the real read, once
            log.debug("read-ahead of %s failed: %s", pieces[0].key, e)

    async def _load(
        self, pieces: list[Piece], on_loaded, deadline: float, bad: dict[bytes, CorruptRecord]
    ) -> dict[bytes, bytes]:
        first, rest = pieces[0], pieces[1:]
        todo = [first] + [p for p in rest if p.size and p.digest not in self._memory and p.digest not in self._inflight]
        self._claim(todo)
        return await self._run_claimed(todo, on_loaded, deadline, bad)

    async def _run_claimed(
        self,
        pieces: list[Piece],
        on_loaded,
        deadline: float,
        bad: dict[bytes, CorruptRecord],
        stream: bool = False,
    ) -> dict[bytes, bytes]:
        """Loads claimed pieces by `deadline`; those whose stored bytes are damaged go to `bad`.
        `stream`: read ahead, kept in the stream segment of memory."""
        try:
            with trio.fail_at(deadline):
                loaded = await trio.to_thread.run_sync(
                    self._load_blocking,
                    pieces,
                    self._arrived_stream if stream else self._arrived_in_thread,
                    on_loaded,
                    bad,
                    limiter=self._disk_limiter if self._on_disk(pieces) else self._fetch_limiter,
                    abandon_on_cancel=True,
                )
        except trio.TooSlowError:
            self._note_failure(pieces, f"timed out after {self.timeout:g}s reading {pieces[0].key}")
            raise StoreUnavailable(f"timed out after {self.timeout:g}s reading {pieces[0].key}") from None
        except StoreUnavailable as e:
            self._note_failure(pieces, str(e))
            raise
        finally:
            self._release(pieces)
        for digest, data in loaded.items():
            self._memory.put(digest, data, stream)
            self._failed.pop(digest, None)
        if loaded and self._failed_objects:
            for key in {p.key for p in pieces}:
                self._failed_objects.pop(_object_of(key), None)
        return loaded

    def _arrived_in_thread(self, piece: Piece, data: bytes, stream: bool = False) -> None:
        """A large piece is verified: wake its readers now rather than when the run is done."""
        if piece.size >= EARLY_PIECE_BYTES and self._token is not None:
            try:  # fire and forget: the fetch thread goes on reading while trio wakes the readers
                self._token.run_sync_soon(self._arrived, piece.digest, data, stream)
            except trio.RunFinishedError:  # unmounting; nobody is waiting any more
                pass

    def _arrived_stream(self, piece: Piece, data: bytes) -> None:
        self._arrived_in_thread(piece, data, True)

    def _arrived(self, digest: bytes, data: bytes, stream: bool = False) -> None:
        self._memory.put(digest, data, stream)
        self._failed.pop(digest, None)
        event = self._inflight.pop(digest, None)
        if event is not None:
            event.set()

    def _note_failure(self, pieces: list[Piece], why: str) -> None:
        now = trio.current_time()
        if len(self._failed) > 4096:
            self._failed = {d: f for d, f in self._failed.items() if now - f[0] < FAILURE_MEMO}
            self._failed_objects = {k: f for k, f in self._failed_objects.items() if now - f[0] < FAILURE_MEMO}
        # By object too: the kernel's retry of a failed READ may take another path to the same
        # bytes (a failed read-ahead of whole chunks is retried as a random read, through the
        # piece index), and must fail at once as well, not wait out --timeout again.
        for key in {p.key for p in pieces}:
            self._failed_objects[_object_of(key)] = (now, why)
        for p in pieces:
            self._failed[p.digest] = (now, why)

    def _from_disk(self, p: Piece) -> bytes | None:
        if p.part:
            return self.cache.get_part(p.key, p.offset, p.digest, p.size)
        return self.cache.get(p.digest, p.size)

    def _load_blocking(
        self, pieces: list[Piece], arrived, on_loaded, bad: dict[bytes, CorruptRecord]
    ) -> dict[bytes, bytes]:
        """Worker thread: disk cache first, then one ranged GET per run of misses. A piece that
        fails verification goes to `bad` (logged once here, with its object and range); the
        rest of its GET is served."""
        out: dict[bytes, bytes] = {}
        missing = []
        for run in group(pieces):
            if is_pack(run[0].key):
                found = self.cache.get_packed(run[0].key, [(p.digest, p.offset, p.size) for p in run])
            else:
                found = {p.digest: d for p in run if (d := self._from_disk(p)) is not None}
            for p in run:
                data = found.get(p.digest)
                if data is None:
                    missing.append(p)
                else:
                    out[p.digest] = data
                    arrived(p, data)

        def fetched(p: Piece, data: bytes) -> None:
            # the reader need not wait for the disk: writer threads cache what is fetched
            if p.part:
                self.cache.put_part_later(p.key, p.offset, data)
            elif not is_pack(p.key):
                self.cache.put_later(p.digest, data)
                self.cache.drop_parts(p.key, p.offset, p.end)  # each byte cached once
            out[p.digest] = data
            arrived(p, data)

        def damaged(p: Piece, e: CorruptRecord) -> None:
            log.warning("%s; the other files fetched with it are served", e)
            bad[p.digest] = e

        for run in group(missing):
            self.fetches += 1
            log.debug("fetch %s bytes %d-%d (%d pieces)", run[0].key, run[0].offset, max(p.end for p in run), len(run))
            fetch_run(self.store, run, fetched, damaged)
            if is_pack(run[0].key):  # small files: one cache file per contiguous stretch
                for start, parts in contiguous(run, out):
                    self.cache.put_run_later(run[0].key, start, b"".join(parts))
        if on_loaded is not None:
            for p in pieces:
                if p.digest in out:
                    on_loaded(p, out[p.digest])
        return out


def _object_of(key: str) -> str:
    """What the store keys of one object (its chunks, pieces and piece index) have in common."""
    return key.rsplit("/", 1)[-1]


__all__ = ["EMPTY_DIGEST", "ContentSource"]
