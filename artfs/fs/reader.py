"""The read policy for stored files: what one READ fetches, and what it fetches ahead.

A small file comes whole with the rest of its pack run (verified, and pushed
into the kernel's page cache of the neighbours it knows); a large file is read
by 1 MiB chunk with a read-ahead window that doubles while reading stays
sequential; a small random read of chunks not at hand fetches only the 64 KiB
pieces it covers, verified by the object's piece index. No FUSE here: the
kernel is reached through the `Kernel` the filesystem was given.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import trio

from artfs.content.fetch import Piece, piece_index, pieces
from artfs.digest import CHUNK_SIZE
from artfs.errors import StoreUnavailable
from artfs.fs.content import FAILURE_MEMO, ContentSource
from artfs.fs.tree import FILE, Node
from artfs.store.keys import pack_key
from artfs.store.manifest import Entry

if TYPE_CHECKING:
    from artfs.fs.kernel import Kernel
    from artfs.fs.tree import Tree

SMALL_RUN_BYTES = 4 << 20  # read-ahead through a pack when a small file is opened
SMALL_RUN_FILES = 512
MAX_WINDOW = 64  # chunks of read-ahead for a sequentially read large file
RUN_CHUNKS = 8  # chunks fetched by one ranged GET of read-ahead
SMALL_READ = CHUNK_SIZE // 4  # random READs up to this size fetch pieces, not whole chunks
SEQUENTIAL_SLACK = CHUNK_SIZE  # wide enough for out-of-order READs, narrow enough for seeks


def describe(node: Node) -> str:
    """How an EIO's log line names a stored file: its artifact, version (or draft) and path."""
    if node.version is not None:
        return f"{node.artifact}:{node.version.name}/{node.path}"
    if node.draft_name:
        return f"{node.artifact}/drafts/{node.draft_name}/{node.path}"
    return node.path


class OpenFile:
    """One open() of a stored file: its pieces and its read-ahead state."""

    __slots__ = ("node", "pieces", "index", "data", "next_offset", "window", "size", "failed")

    def __init__(self, node: Node, size: int):
        self.node = node
        self.size = size
        self.pieces: list[Piece] = []
        self.index: Piece | None = None  # the piece index of a large object, for random reads
        self.data: bytes | None = None  # whole content for small files
        self.next_offset = 0
        self.window = 0
        self.failed: tuple[float, str] | None = None  # (when, why) a READ of this handle failed


class StoredReader:
    def __init__(self, tree: "Tree", content: ContentSource, kernel: "Kernel"):
        self.tree = tree
        self.content = content
        self.kernel = kernel

    async def open(self, node: Node, entry: Entry) -> OpenFile:
        """A handle reading a stored (non-reference) entry of a version, or unmodified in a draft."""
        f = OpenFile(node, entry.size)
        f.pieces = pieces(entry)
        f.index = piece_index(entry)
        if entry.pack is not None:
            f.data = self.content.peek(f.pieces[0])
            if f.data is None:
                if node.kind == FILE and node.immutable:
                    neighbours, inodes = self._pack_neighbours(node)
                    f.data = await self.content.get(
                        f.pieces[0], neighbours, self._kernel_store(inodes), where=describe(node)
                    )
                else:
                    f.data = await self.content.get(f.pieces[0], where=describe(node))
        return f

    def _pack_neighbours(self, node: Node) -> tuple[list[Piece], dict[bytes, int]]:
        """The files after this one in the same pack, which one GET brings along, and the inodes
        the kernel holds for this file and those (by digest). Read straight from the manifest's
        columns: this runs on every cold open."""
        m, i = node.part, node.index
        pack = m.packs[i]
        key = pack_key(m.pack_ids[pack])
        digests, sizes, offsets, packs = m.digests, m.sizes, m.offsets, m.packs
        out, total = [], 0
        inodes = {digests[i * 32 : (i + 1) * 32]: node.ino}
        end = min(len(m), i + 1 + SMALL_RUN_FILES)
        for j in range(i + 1, end):
            if packs[j] != pack or total >= SMALL_RUN_BYTES:
                break
            digest = digests[j * 32 : (j + 1) * 32]
            if not self.content.cached_digest(digest):
                out.append(Piece(digest, sizes[j], key, offsets[j]))
                known = self.tree.known(node.key[:4] + (node.offset + j,))
                if known is not None and known.lookups > 0:
                    inodes.setdefault(digest, known.ino)
            total += sizes[j]
        return out, inodes

    def _kernel_store(self, inodes: dict[bytes, int]) -> Callable[[Piece, bytes], None]:
        """Puts loaded small files straight into the kernel's page cache of their inodes (they
        are immutable and opened with keep_cache), so reading them later costs no READ request.
        Runs in the loading worker thread: the store can wait on a page lock that only a reply
        from the trio thread releases."""
        kernel = self.kernel

        def store(piece: Piece, data: bytes) -> None:
            ino = inodes.get(piece.digest)
            if ino is not None and data:
                kernel.store(ino, data)

        return store

    async def read(self, f: OpenFile, off: int, size: int) -> bytes:
        if f.data is not None:
            return f.data[off : off + size]
        # The kernel retries a failed READ at once, maybe by another path to the same bytes
        # (a failed read-ahead of whole chunks comes back as a random read through the piece
        # index, stored under another key for a file kept as blocks): it fails at once too,
        # so a reader's EIO comes within one --timeout.
        if (
            f.failed is not None
            and trio.current_time() - f.failed[0] < FAILURE_MEMO
            and not self._at_hand(f, off, size)
        ):
            raise StoreUnavailable(f.failed[1])
        try:
            return await self._read(f, off, size)
        except StoreUnavailable as e:
            f.failed = (trio.current_time(), str(e))
            raise

    def _at_hand(self, f: OpenFile, off: int, size: int) -> bool:
        """Whether the chunks holding [off, off + size) need no store GET (what is cached reads on)."""
        end = min(off + size, f.size)
        if end <= off:
            return True
        return all(self.content.at_hand(p) for p in f.pieces[off // CHUNK_SIZE : (end - 1) // CHUNK_SIZE + 1])

    async def _read(self, f: OpenFile, off: int, size: int) -> bytes:
        ps = f.pieces
        total = f.size
        if off >= total or size == 0:
            return b""
        end = min(off + size, total)
        first, last = off // CHUNK_SIZE, (end - 1) // CHUNK_SIZE
        deadline = self.content.deadline()  # one for all this READ waits on
        # Read-ahead doubles while reads are sequential and stops after a seek. It starts only
        # at exactly where the last read ended (a random read that merely lands nearby must
        # not start megabytes of read-ahead); once going, the kernel's own readahead sends
        # several READs at once and they may be answered in any order, so it goes on while
        # reads stay within a READ's size of the furthest point read so far.
        if off == f.next_offset or (f.window and abs(off - f.next_offset) <= SEQUENTIAL_SLACK):
            f.window = min(max(f.window * 2, 2), MAX_WINDOW)
            f.next_offset = max(f.next_offset, end)
        else:
            f.window = 0  # random access: fetch only what is asked for
            f.next_offset = end
            # A small random read of chunks not at hand (memory, on their way, disk cache):
            # only the 64 KiB pieces it needs, verified by the piece index.
            if (
                f.index is not None
                and end - off <= SMALL_READ
                and not all(self.content.at_hand(p) for p in ps[first : last + 1])
            ):
                data = await self.content.read_pieces(
                    f.index, ps[first : last + 1], off, end, where=describe(f.node), deadline=deadline
                )
                if data is not None:
                    return data
                f.index = None  # no usable piece index: whole chunks from now on
        if f.window:
            # Whole runs at fixed boundaries: each ranged GET brings RUN_CHUNKS chunks, rather
            # than one new chunk per GET as the window slides forward.
            # Once reading is clearly sequential, GETs double (the store spends less per byte).
            run = RUN_CHUNKS if f.window < MAX_WINDOW else 2 * RUN_CHUNKS
            start = (last + 1) - (last + 1) % run
            stop = min(len(ps), -(-(last + 1 + f.window) // run) * run)
            for k in range(start, stop, run):
                self.content.prefetch(ps[k : k + run])
        parts = []
        for p in ps[first : last + 1]:
            # a stream's own reads leave its read-ahead in the stream segment of memory
            parts.append(await self.content.get(p, where=describe(f.node), deadline=deadline, promote=not f.window))
        blob = parts[0] if len(parts) == 1 else b"".join(parts)
        start = off - first * CHUNK_SIZE
        if start == 0 and len(blob) == end - off:
            return blob  # a whole chunk: no copy (a chunk read off the socket is a bytearray)
        return blob[start : start + (end - off)]
