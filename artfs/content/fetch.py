"""Reading stored content back: entries become verified pieces fetched in ranged GETs.

A piece is the unit of verification: a whole small file inside a pack, or one
CHUNK_SIZE chunk of a large object, each with its own blake3 digest from the
manifest; for a random read, one PIECE_SIZE piece of a large object, whose
digest comes from the object's piece index (itself a piece, verified against
the digest the manifest names it by). Adjacent pieces of one object are
fetched in one ranged GET and split, and each piece is checked before anyone
sees it. A piece that fails its check costs only itself: the others of the same
GET are served (a damaged byte in a pack makes one file unreadable, not the
hundreds read with it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from artfs.digest import CHUNK_SIZE, DIGEST_SIZE, PIECE_SIZE, digest_bytes
from artfs.errors import CorruptRecord
from artfs.store.backends.base import ObjectStore
from artfs.store.keys import object_key, pack_key, pieces_key
from artfs.store.manifest import Entry

EMPTY_DIGEST = digest_bytes(b"")
READS_BLOCKS = True  # files stored as blocks (manifest `blocks`) are read here: publishers may write them


@dataclass(frozen=True)
class Piece:
    digest: bytes
    size: int
    key: str  # the store object holding it
    offset: int  # where in that object
    file_offset: int = 0  # where in the entry's file
    part: bool = False  # a PIECE_SIZE piece of a large object (random reads), not a whole chunk

    @property
    def end(self) -> int:
        return self.offset + self.size


def pieces(entry: Entry) -> list[Piece]:
    """The verified pieces of a stored entry, in file order."""
    if entry.pack is not None:
        return [Piece(entry.digest, entry.size, pack_key(entry.pack), entry.offset)]
    if entry.ref is not None:
        raise ValueError("references are fetched from their source")
    if not entry.chunks:
        return [Piece(entry.digest, entry.size, object_key(entry.digest), 0)]
    out = []
    for i in range(0, entry.size, CHUNK_SIZE):
        k = i // CHUNK_SIZE
        stored, at = entry.locate(i)  # the whole object, or the block holding this chunk
        out.append(
            Piece(
                entry.chunks[k * DIGEST_SIZE : (k + 1) * DIGEST_SIZE],
                min(CHUNK_SIZE, entry.size - i),
                object_key(stored),
                at,
                i,
            )
        )
    return out


def piece_index(entry: Entry) -> Piece | None:
    """Where the entry's piece index is stored, if it has one."""
    if not entry.piece_index or entry.pack is not None or entry.ref is not None:
        return None
    count = -(-entry.size // PIECE_SIZE)
    return Piece(entry.piece_index, count * DIGEST_SIZE, pieces_key(entry.digest), 0)


def pieces_covering(chunks: list[Piece], index: bytes | memoryview, start: int, end: int) -> list[Piece]:
    """The PIECE_SIZE pieces that hold bytes [start, end) of a large file, with their digests
    from its verified piece index; `chunks`: the file's chunks (in order) that hold those
    bytes, which say where each is stored (pieces never straddle chunks)."""
    first = chunks[0].file_offset
    out = []
    for k in range(start // PIECE_SIZE, (end - 1) // PIECE_SIZE + 1):
        at = k * PIECE_SIZE
        c = chunks[(at - first) // CHUNK_SIZE]
        out.append(
            Piece(
                bytes(index[k * DIGEST_SIZE : (k + 1) * DIGEST_SIZE]),  # (a key: the index may be a view)
                min(PIECE_SIZE, c.file_offset + c.size - at),
                c.key,
                c.offset + at - c.file_offset,
                at,
                True,
            )
        )
    return out


def verify(piece: Piece, data: bytes, where: str) -> bytes:
    if len(data) != piece.size or digest_bytes(data) != piece.digest:
        raise CorruptRecord(
            f"{where} bytes {piece.offset}-{piece.end}: content does not match its digest {piece.digest.hex()[:16]}…"
        )
    return data


OnBad = Callable[[Piece, CorruptRecord], None]


def _checked(p: Piece, data: bytes, key: str, on_bad: OnBad | None) -> bool:
    """Whether the piece's bytes are good; a bad one raises, or with `on_bad` is reported there."""
    try:
        verify(p, data, key)
        return True
    except CorruptRecord as e:
        if on_bad is None:
            raise
        on_bad(p, e)
        return False


def group(ps: Iterable[Piece], max_bytes: int = 32 << 20, max_gap: int = 64 << 10) -> Iterator[list[Piece]]:
    """Runs of pieces of one object that one ranged GET can cover (small gaps are read through)."""
    run: list[Piece] = []
    for p in sorted(ps, key=lambda p: (p.key, p.offset)):
        if run and (p.key != run[0].key or p.offset - run[-1].end > max_gap or p.end - run[0].offset > max_bytes):
            yield run
            run = []
        if p.size == 0:
            continue
        if not run or p.offset >= run[-1].offset:
            run.append(p)
    if run:
        yield run


def fetch_run(
    store: ObjectStore,
    run: list[Piece],
    on_piece: Callable[[Piece, bytes], None] | None = None,
    on_bad: OnBad | None = None,
) -> list[bytes]:
    """One ranged GET for a run of pieces; each piece verified as it arrives (and handed to
    `on_piece` at once, before the rest of the run is read). Returns their bytes in order.
    A piece that fails verification raises CorruptRecord, or, given `on_bad`, is reported
    there and left out (the rest of the run is still read and returned)."""
    key, start = run[0].key, run[0].offset
    lengths: list[int] = []
    wanted: list[Piece | None] = []  # None: a gap between pieces, read through and dropped
    pos = start
    for p in run:
        if p.offset < pos:  # overlapping pieces (one content stored twice in a pack): split a blob
            good = _fetch_blob(store, run, on_bad)
            for q, data in good:
                if on_piece is not None:
                    on_piece(q, data)
            return [data for _q, data in good]
        if p.offset > pos:
            lengths.append(p.offset - pos)
            wanted.append(None)
        lengths.append(p.size)
        wanted.append(p)
        pos = p.end
    out = []
    seen = 0
    for w, data in zip(wanted, store.get_parts(key, start, lengths)):
        if w is None:
            continue
        seen += 1
        if not _checked(w, data, key, on_bad):
            continue
        out.append(data)
        if on_piece is not None:
            on_piece(w, data)
    if seen != len(run):
        raise CorruptRecord(f"{key}: short read (object ends before byte {pos})")
    return out


def _fetch_blob(store: ObjectStore, run: list[Piece], on_bad: OnBad | None) -> list[tuple[Piece, bytes]]:
    start, end = run[0].offset, max(p.end for p in run)
    blob = store.get(run[0].key, start, end)
    if len(blob) != end - start:
        raise CorruptRecord(f"{run[0].key}: short read ({len(blob)} of {end - start} bytes)")
    view = memoryview(blob)
    out = []
    for p in run:
        data = bytes(view[p.offset - start : p.end - start])
        if _checked(p, data, run[0].key, on_bad):
            out.append((p, data))
    return out


def is_pack(key: str) -> bool:
    return key.startswith("packs/")


def contiguous(run: list[Piece], data: dict[bytes, bytes]) -> Iterator[tuple[int, list[bytes]]]:
    """(start, [bytes…]) for each stretch of the run with no gap between its pieces (a piece
    missing from `data`, one that failed verification, is a gap)."""
    start, end = 0, -1
    parts: list[bytes] = []
    for p in run:
        got = data.get(p.digest)
        if parts and (got is None or p.offset != end):
            yield start, parts
            parts = []
        if got is None:
            continue
        if not parts:
            start = p.offset
        parts.append(got)
        end = p.end
    if parts:
        yield start, parts
