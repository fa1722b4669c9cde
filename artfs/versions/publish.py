"""Turns files into stored content and a manifest: hash, dedupe, pack, upload.

Small files (up to SMALL_LIMIT) are packed, in path order, into pack objects
of about PACK_TARGET bytes, so reading a folder of small files cold costs a
few ranged GETs rather than one per file; each file keeps its own digest and
(pack, offset) in the manifest, and every pack has an index object listing
what it holds so later commits (of any artifact) reuse those bytes. Larger
files are stored alone under their digest, with per-chunk digests.

Each entry keeps its file's mode bits and mtime, and the manifest every
folder's (so empty folders are kept): `walk_sources` returns the folders it
walked beside the files, and `Publisher.build` records them.

Nothing is read twice for hashing and uploading without being checked: small
files are hashed from the very bytes packed, and large files are re-hashed
while they stream to the store, aborting the upload if they changed.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import stat as stat_mod
import tempfile
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO
from dataclasses import dataclass, field

import blake3
import msgpack

from artfs.content.carry import CarriedRange
from artfs.digest import (
    CHUNK_SIZE,
    DIGEST_SIZE,
    Hashes,
    digest_bytes,
    hash_file,
    needs_chunks,
)
from artfs.errors import ArtfsError, CorruptRecord, InvalidInput, NoSpace, NotFound
from artfs.store import pagecache
from artfs.store.backends.base import ObjectStore
from artfs.store.keys import damaged_marker, index_key, object_key, pack_key, pieces_key
from artfs.store.manifest import BLOCK_SIZE, OBJECT, Entry, Folder, Manifest
from artfs.store.registry import store_manifest
from artfs.store.shards import AnyManifest, ShardedManifest
from artfs.versions import reshard
from artfs.versions.reshard import ShardPatch
from artfs.versions.assemble import carried_folders, assemble_kept
from artfs.versions.dedupe import PackIndex  # noqa: F401 - its home before the shards; api/store.py imports it here

SMALL_LIMIT = CHUNK_SIZE
SMALL_REMEMBERED = 200_000  # new small files a publish remembers for dedupe within itself
STORED_RECORD = 72  # digest, pack id, offset (uint64)
PACK_TARGET = 16 << 20
BLOCK_WINDOW = 4  # blocks of one file in flight to the store (each held in memory while sent)
# Store files above BLOCK_SIZE as blocks: True, False, or None for "when this artfs's readers
# can read them" (content.fetch says so with READS_BLOCKS; until then, one object per file).
STORE_BLOCKS: bool | None = None


def stores_blocks() -> bool:
    if STORE_BLOCKS is not None:
        return STORE_BLOCKS
    from artfs.content import fetch

    return bool(getattr(fetch, "READS_BLOCKS", False))


@dataclass
class FileSource:
    """A local file to become the entry `path`."""

    path: str
    local: str
    mode: int | None = None  # None: take the executable bit from the local file
    # Digests computed as the file was written (drafts, see drafts/files.py), with its
    # BLOCK_SIZE block digests, and `unchanged()`, False once the file has been written to since.
    hashed: Hashes | None = None
    unchanged: Callable[[], bool] | None = None
    blocks: bytes = b""


class SourceList(list[FileSource]):
    """Files to publish, and the folders they were found in (`folders`: every folder walked,
    empty or not, with its mode and mtime)."""

    folders: list[Folder]

    def __init__(self, files: Iterable[FileSource] = (), folders: Iterable[Folder] = ()):
        super().__init__(files)
        self.folders = list(folders)


@dataclass
class Stats:
    files_hashed: int = 0
    bytes_hashed: int = 0
    objects_uploaded: int = 0
    bytes_uploaded: int = 0
    entries_reused: int = 0


@dataclass
class KnownContent:
    """What the store already holds, so it is not uploaded again."""

    # digest -> (pack, offset); pack None: in the pack being built
    small: dict[bytes, tuple[bytes | None, int]] = field(default_factory=dict)
    large: set[bytes] = field(default_factory=set)  # files stored whole, as objects/<digest>
    blocked: dict[bytes, bytes] = field(default_factory=dict)  # files stored as blocks: digest -> blocks
    blocks: set[bytes] = field(default_factory=set)  # blocks stored (objects/<block digest>)
    # Asked on a miss where the store holds a small file (PackIndex.find: only that digest's
    # shard of the dedupe index is read), so a commit's cost does not grow with the store.
    lookup: Callable[[bytes], tuple[bytes, int] | None] | None = None
    # Told by settle() where the small files this publish stored went (PackIndex.record).
    on_stored: Callable[[list[tuple[bytes, tuple[bytes, int]]]], None] | None = None
    # Stored objects `artfs verify` found damaged (keys): never reused, stored again instead.
    damaged: set[str] = field(default_factory=set)
    # Where this publish's new small files went, (digest, pack, offset) records spilled to a
    # file as packs are sealed: ten million of them would not fit in memory as objects.
    _stored: IO[bytes] | None = None

    def find_small(self, digest: bytes) -> tuple[bytes | None, int] | None:
        hit = self.small.get(digest)
        if hit is None and self.lookup is not None:
            hit = self.lookup(digest)
            if hit is not None:
                self.small[digest] = hit
        return hit

    def sealed(self, pack_id: bytes, members: list[tuple[bytes, int, int]]) -> None:
        """A pack of new small files was sealed: they are known by it from now on."""
        try:
            if self._stored is None:
                self._stored = tempfile.TemporaryFile(prefix="artfs-stored-")
            self._stored.write(b"".join(d + pack_id + offset.to_bytes(8, "little") for d, offset, _ in members))
        except OSError as e:
            raise self._spill_failed(e) from None
        small = self.small
        for digest, offset, _ in members:
            small[digest] = (pack_id, offset)
        # Bounded: the oldest go first (insertion order); a duplicate of one of them found
        # later is asked of the dedupe index, or stored again (space, never correctness).
        excess = len(small) - SMALL_REMEMBERED
        if excess > 0:
            for digest in list(itertools.islice(iter(small), excess)):
                if small[digest][0] is not None:
                    del small[digest]

    def settle(self) -> None:
        """After the publish stored its packs: tells on_stored where its new small files are,
        a sixteenth of the digests at a time."""
        if self._stored is None:
            return
        try:
            self._stored.flush()  # the last records reach the disk here: a full one fails now
        except OSError as e:
            raise self._spill_failed(e) from None
        f, self._stored = self._stored, None
        with f:
            if self.on_stored is not None:
                for nibble in range(16):
                    f.seek(0)
                    batch = []
                    while block := f.read(STORED_RECORD * 4096):
                        for k in range(0, len(block), STORED_RECORD):
                            rec = block[k : k + STORED_RECORD]
                            if rec[0] >> 4 == nibble:
                                batch.append((rec[:32], (rec[32:64], int.from_bytes(rec[64:], "little"))))
                    if batch:
                        self.on_stored(batch)

    def _spill_failed(self, e: OSError) -> Exception:
        """The spill file (in $TMPDIR) failed: dropped, records and all; a full disk is named."""
        with contextlib.suppress(OSError, AttributeError):
            self._stored.close()  # type: ignore[union-attr]
        self._stored = None
        where = f"no space left on {tempfile.gettempdir()} (TMPDIR) for the list of stored files"
        return NoSpace(f"{where}; nothing was committed") if e.errno in (errno.ENOSPC, errno.EDQUOT) else e

    def add_manifest(self, m: Manifest) -> None:
        # From the columns: an Entry object per entry costs more than all of this.
        digests, pack_ids, offsets = m.digests, m.pack_ids, m.offsets
        small, large, blocked = self.small, self.large, m.blocks
        for i, p in enumerate(m.packs):
            if p >= 0:
                small.setdefault(digests[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE], (pack_ids[p], offsets[i]))
            elif p == OBJECT and i not in blocked:
                large.add(digests[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE])
        for i, b in blocked.items():
            self.blocked[digests[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE]] = b
            self.blocks.update(b[k : k + DIGEST_SIZE] for k in range(0, len(b), DIGEST_SIZE))


class _VerifyingReader:
    """Streams a file to the store and raises at EOF if it no longer has `digest`."""

    def __init__(self, f, digest: bytes, path: str):
        self.f, self.digest, self.path = f, digest, path
        self.hasher = blake3.blake3()

    def read(self, n: int = -1) -> bytes:
        buf = self.f.read(n)
        if buf:
            self.hasher.update(buf)
        elif self.hasher.digest() != self.digest:
            raise CorruptRecord(f"{self.path} changed while it was being uploaded")
        return buf


class Publisher:
    def __init__(
        self, store: ObjectStore, known: KnownContent, workers: int = 8, progress: Callable[[int], None] | None = None
    ):
        self.store = store
        self.known = known
        self.stats = Stats()
        self.progress = progress or (lambda n: None)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="artfs-upload")
        self._futures: list[Future] = []
        self._lock = threading.Lock()
        self._pack = bytearray()
        self._pack_members: list[tuple[Entry, int]] = []  # entry, offset in the pack being built
        self._pack_index: list[tuple[bytes, int, int]] = []
        self._pending_duplicates: list[tuple[Entry, bytes]] = []
        self._mine: set[bytes] = set()  # large objects this publish stores (or found stored)
        self._patching: dict[bytes, bytearray] = {}  # damaged packs being put right (see verify)
        self._blocks = stores_blocks()
        self._block_pool = ThreadPoolExecutor(max_workers=BLOCK_WINDOW, thread_name_prefix="artfs-block")
        self.last_large: Future | None = None  # the upload `_add` just started (a large file)

    def build(
        self, files: Iterable[FileSource], carried: Iterable = (), folders: Iterable[Folder] | None = None
    ) -> AnyManifest:
        """Stores new content of `files` and returns the manifest of files + carried entries
        (Entry objects, and CarriedRanges: see carry.py). Its folders: `folders` (default:
        those `files` carries, if a SourceList), plus those below every carried range."""
        if folders is None:
            folders = getattr(files, "folders", ())
        entries: list[Entry] = []
        ranges: list[CarriedRange] = []
        patches: list[ShardPatch] = []
        for c in carried:
            if isinstance(c, ShardPatch):
                patches.append(c)
            else:
                (ranges if isinstance(c, CarriedRange) else entries).append(c)
        if ranges and isinstance(ranges[0].manifest, ShardedManifest):  # carried by range: patched
            patches.append(reshard.from_ranges(ranges[0].manifest, ranges, entries))
            entries, ranges = [], []
        try:
            for src in sorted(files, key=lambda s: s.path):
                entries.append(self.add(src))
            self.wait()
        finally:
            self.close()
        if patches:  # a draft of a sharded version: only the shards around the changes
            if not patches[0].counted_local and patches[0].files is not None:
                patches[0].files += len(entries)
            patched = reshard.apply(patches[0], entries, list(folders), self.put_shard)
            if patched is None:
                raise ArtfsError("the draft's changes do not add up to its files; nothing was committed")
            return patched
        if not ranges:
            return Manifest.from_entries(entries, folders)
        m = assemble_kept(entries, ranges)
        m.set_folders(list(folders) + carried_folders(ranges))
        return m

    def wait(self) -> None:
        """Seals the last pack and waits for every upload (raising the first failure)."""
        self.seal_pack()
        for fut in self._futures:
            fut.result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._block_pool.shutdown(wait=True, cancel_futures=True)

    def put_shard(self, digest: bytes, encoded: bytes) -> None:
        store_manifest(self.store, digest, encoded)

    def add(self, src: FileSource) -> Entry:
        """Stores `src` (a small file into the pack being built, a large one by an upload started
        here: `last_large`) and returns its entry, complete once its pack is sealed or upload done."""
        self.last_large = None
        try:
            st = os.stat(src.local)
        except OSError as e:
            raise InvalidInput(f"cannot read {src.local}: {e.strerror}") from None
        if not stat_mod.S_ISREG(st.st_mode):
            raise InvalidInput(f"{src.local} is not a regular file")
        mode = (st.st_mode if src.mode is None else src.mode) & 0o7777
        if st.st_size <= SMALL_LIMIT:
            try:
                with open(src.local, "rb") as f:
                    data = f.read(SMALL_LIMIT + 1)
            except OSError as e:
                raise InvalidInput(f"cannot read {src.local}: {e.strerror}") from None
            if len(data) <= SMALL_LIMIT:
                entry = self._add_small(src.path, data, mode)
                entry.mtime_ns = st.st_mtime_ns
                return entry
        entry = Entry(src.path, st.st_size, b"", mode, mtime_ns=st.st_mtime_ns)
        self.last_large = self._pool.submit(self._add_large, entry, src.local, src)
        self._futures.append(self.last_large)
        return entry

    def _add_small(self, path: str, data: bytes, mode: int) -> Entry:
        digest = digest_bytes(data)
        self._count_hashed(len(data))
        entry = Entry(path, len(data), digest, mode)
        where = self.known.find_small(digest)
        if where is not None and where[0] is not None and pack_key(where[0]) in self.known.damaged:
            if not self._patch_damaged_pack(where[0], where[1], data):
                where = None  # the pack is still damaged elsewhere: these bytes go into a new pack
        if where is not None and where[0] is not None:
            self.stats.entries_reused += 1
            entry.pack, entry.offset = where
        elif where is not None:
            # Same bytes as a file already in the pack being built: resolved when it is sealed.
            self._pending_duplicates.append((entry, digest))
        else:
            self.known.small[digest] = (None, len(self._pack))
            self._pack_members.append((entry, len(self._pack)))
            self._pack_index.append((digest, len(self._pack), len(data)))
            self._pack += data
            if len(self._pack) >= PACK_TARGET:
                self.seal_pack()
        return entry

    def seal_pack(self) -> None:
        if not self._pack_members:
            return
        data = bytes(self._pack)
        pack_id = digest_bytes(data)
        for entry, offset in self._pack_members:
            entry.pack, entry.offset = pack_id, offset
        self.known.sealed(pack_id, self._pack_index)
        index = msgpack.packb(self._pack_index)
        self._pack, self._pack_members, self._pack_index = bytearray(), [], []
        self._resolve_duplicates()
        self._futures.append(self._pool.submit(self._upload_pack, pack_id, data, index))

    def _resolve_duplicates(self) -> None:
        for entry, digest in self._pending_duplicates:
            entry.pack, entry.offset = self.known.small[digest]
        self._pending_duplicates = []

    def _upload_pack(self, pack_id: bytes, data: bytes, index: bytes) -> None:
        self.store.put(pack_key(pack_id), data)
        self.store.put(index_key(pack_id), index)  # after the pack: an index never names a missing pack
        self._count_uploaded(len(data))

    def _add_large(self, entry: Entry, local: str, src: FileSource | None = None) -> None:
        if (
            src is not None
            and src.hashed is not None
            and src.unchanged is not None
            and src.unchanged()
            and src.hashed[1] > SMALL_LIMIT
        ):
            self._add_hashed(entry, src)
            return
        digest, size, chunks, piece_digests = hash_file(local, chunked=needs_chunks(entry.size))
        self._count_hashed(size)
        if size <= SMALL_LIMIT:
            raise InvalidInput(f"{local} shrank while being read; try again")
        entry.digest, entry.size, entry.chunks = digest, size, chunks
        if self._blocks and size > BLOCK_SIZE:
            self._add_blocks(entry, local, piece_digests, None)
            return
        stored = self._stored_already(digest, size)
        self._add_piece_index(entry, piece_digests, new=not stored)
        if stored:
            return
        with open(local, "rb") as f:
            self.store.put_stream(object_key(digest), _VerifyingReader(f, digest, local))
        self._repaired(object_key(digest))
        self._count_uploaded(size)

    def _add_hashed(self, entry: Entry, src: FileSource) -> None:
        """A file hashed as it was written: not read again to hash it, uploaded seekably
        (in parallel parts); the upload is abandoned, nothing stored, if it was written to
        meanwhile, since its bytes would no longer match the digest they are stored under."""
        assert src.hashed is not None and src.unchanged is not None  # (checked by _add_large)
        digest, size, chunks, piece_digests = src.hashed
        chunked = needs_chunks(size)
        entry.digest, entry.size, entry.chunks = digest, size, chunks if chunked else b""
        self._count_hashed(size)  # (hashed earlier; counted for progress and statistics)
        if self._blocks and size > BLOCK_SIZE:
            known = src.blocks if len(src.blocks) == -(-size // BLOCK_SIZE) * DIGEST_SIZE else None
            self._add_blocks(entry, src.local, piece_digests, src.unchanged, known)
            return
        stored = self._stored_already(digest, size)
        self._add_piece_index(entry, piece_digests if chunked else b"", new=not stored)
        if stored:
            return
        if not self.store.put_file(object_key(digest), src.local, src.unchanged):
            raise CorruptRecord(f"{src.path} changed while it was being uploaded")
        self._repaired(object_key(digest))
        self._count_uploaded(size)

    def _add_blocks(
        self,
        entry: Entry,
        local: str,
        piece_digests: bytes,
        unchanged: Callable[[], bool] | None,
        known_blocks: bytes | None = None,
    ) -> None:
        """A large file (entry.digest, size, chunks known) stored as BLOCK_SIZE blocks, each
        uploaded unless the store has it: a small change to a large file stores one block.
        Read again, block by block (BLOCK_WINDOW blocks in memory at most), and checked
        against the whole file's digest: a file changed since it was hashed is refused.
        With `known_blocks` (hashed as it was written) only the blocks the store lacks are read."""
        with self._lock:
            blocks = self.known.blocked.get(entry.digest)
        whole = object_key(entry.digest)
        if blocks is None and whole not in self.known.damaged:
            info = self.store.head(whole)
            if info is not None and info.size == entry.size:
                # Stored whole before blocks existed: reused as it is.
                with self._lock:
                    self.stats.entries_reused += 1
                self._add_piece_index(entry, piece_digests, new=False)
                return
        if blocks is not None:
            with self._lock:
                self.stats.entries_reused += 1
            entry.blocks = blocks
            self._add_piece_index(entry, piece_digests, new=False)
            return
        if known_blocks is not None:
            assert unchanged is not None  # (known blocks come with their file's generation)
            self._add_known_blocks(entry, local, piece_digests, known_blocks, unchanged)
            return
        digests: list[bytes] = []
        sending: list[Future] = []
        whole_hash = blake3.blake3()
        with open(local, "rb", buffering=0) as f:
            for off in range(0, entry.size, BLOCK_SIZE):
                n = min(BLOCK_SIZE, entry.size - off)
                data = os.pread(f.fileno(), n, off)
                if len(data) != n:
                    raise CorruptRecord(f"{local} changed while it was being uploaded")
                whole_hash.update(data)
                d = digest_bytes(data)
                digests.append(d)
                if self._block_needed(d, n):
                    while len(sending) >= BLOCK_WINDOW:
                        sending.pop(0).result()
                    sending.append(self._block_pool.submit(self._upload_block, d, data))
            for fut in sending:
                fut.result()
        if whole_hash.digest() != entry.digest or (unchanged is not None and not unchanged()):
            raise CorruptRecord(f"{local} changed while it was being uploaded")
        entry.blocks = b"".join(digests)
        with self._lock:
            self.known.blocked[entry.digest] = entry.blocks
        self._add_piece_index(entry, piece_digests, new=True)

    def _add_known_blocks(
        self, entry: Entry, local: str, piece_digests: bytes, blocks: bytes, unchanged: Callable[[], bool]
    ) -> None:
        """Only the blocks the store lacks are read, each checked against its digest as it is
        sent (a block sent while the file was written, drafts/early.py, is not read again)."""
        count = len(blocks) // DIGEST_SIZE
        digests = [blocks[k * DIGEST_SIZE : (k + 1) * DIGEST_SIZE] for k in range(count)]
        sizes = [min(BLOCK_SIZE, entry.size - k * BLOCK_SIZE) for k in range(count)]
        needed = list(self._block_pool.map(self._block_needed, digests, sizes))  # (HEADs, several at once)
        sending: list[Future] = []
        with open(local, "rb", buffering=0) as f:
            for k, d, n in zip(range(count), digests, sizes):
                if not needed[k]:
                    continue
                data = os.pread(f.fileno(), n, k * BLOCK_SIZE)
                pagecache.drop(f.fileno(), k * BLOCK_SIZE, n)  # (a draft's data file, read once more)
                if len(data) != n or digest_bytes(data) != d:  # (stored only under its own digest)
                    raise CorruptRecord(f"{local} changed while it was being uploaded")
                while len(sending) >= BLOCK_WINDOW:
                    sending.pop(0).result()
                sending.append(self._block_pool.submit(self._upload_block, d, data))
            for fut in sending:
                fut.result()
        if not unchanged():
            raise CorruptRecord(f"{local} changed while it was being uploaded")
        entry.blocks = blocks
        with self._lock:
            self.known.blocked[entry.digest] = blocks
        self._add_piece_index(entry, piece_digests, new=True)

    def _block_needed(self, digest: bytes, size: int) -> bool:
        """Whether a block must be uploaded: not in the store whole, nor damaged there."""
        key = object_key(digest)
        with self._lock:
            known = digest in self.known.blocks
            self.known.blocks.add(digest)
        if key in self.known.damaged:
            return True
        if known:
            return False
        info = self.store.head(key)
        return info is None or info.size != size

    def _upload_block(self, digest: bytes, data: bytes) -> None:
        self.store.put(object_key(digest), data)
        self._repaired(object_key(digest))
        self._count_uploaded(len(data))

    def _add_piece_index(self, entry: Entry, piece_digests: bytes, new: bool) -> None:
        """Names the object's piece index in its entry, storing the index unless it is there
        (an object stored before piece indexes existed gets one now)."""
        if not piece_digests:
            return
        key = pieces_key(entry.digest)
        if new or not self.store.exists(key):
            self.store.put(key, piece_digests)
        entry.piece_index = digest_bytes(piece_digests)

    def _stored_already(self, digest: bytes, size: int) -> bool:
        """A large object with this digest is in the store, whole as far as its size and `artfs
        verify` tell (or is being stored by this publish). A damaged one is stored again."""
        key = object_key(digest)
        with self._lock:
            mine = digest in self._mine
            self._mine.add(digest)
        if mine:
            return True
        if key not in self.known.damaged:
            info = self.store.head(key)
            if info is not None and info.size == size:
                with self._lock:
                    self.stats.entries_reused += 1
                return True
        return False

    def _patch_damaged_pack(self, pack_id: bytes, offset: int, data: bytes) -> bool:
        """Puts the right bytes back into a pack `artfs verify` found damaged. A pack is named by
        the blake3 of its bytes, so once the patched bytes hash to its name again it is whole,
        and is stored again under the same key: every version using it is repaired."""
        key = pack_key(pack_id)
        with self._lock:
            blob = self._patching.get(pack_id)
        if blob is None:
            try:  # read outside the lock the upload threads share
                fetched = bytearray(self.store.get(key))
            except NotFound:  # collected since it was marked: nothing left to put right
                return False
            with self._lock:
                blob = self._patching.setdefault(pack_id, fetched)
        with self._lock:
            if offset + len(data) > len(blob):
                blob.extend(bytes(offset + len(data) - len(blob)))  # a truncated pack
            blob[offset : offset + len(data)] = data
            if digest_bytes(bytes(blob)) != pack_id:
                return False
            del self._patching[pack_id]
        self.store.put(key, bytes(blob))
        self._repaired(key)
        return True

    def _repaired(self, key: str) -> None:
        """The object is stored whole again: it is no longer damaged."""
        if key in self.known.damaged:
            self.store.delete(damaged_marker(key))
            self.known.damaged.discard(key)

    def _count_hashed(self, n: int) -> None:
        with self._lock:
            self.stats.files_hashed += 1
            self.stats.bytes_hashed += n
        self.progress(n)

    def _count_uploaded(self, n: int) -> None:
        with self._lock:
            self.stats.objects_uploaded += 1
            self.stats.bytes_uploaded += n
