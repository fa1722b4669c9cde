"""Sharded manifests: a version of millions of files without loading them all.

A manifest of more than `SHARDED_ABOVE` files is stored as a root that lists
shards, each an ordinary (format 1) manifest of a contiguous run of the sorted
keys (file paths and folder paths), stored content-addressed beside the
manifests. The root keeps, per shard, its first and last key, its first file,
file count, size and content digest, so a lookup costs one shard, a listing
only the shards that hold the folder's own files (store/outline.py: the root
also keeps the folders), and whole-version figures no shard at all.

Where shards end is a function of the paths alone (a shard ends after a file
whose path hashes to 0 modulo `SHARD_FILES`, as content-defined chunking does
for bytes): the same tree always splits the same way, so identity (the
content digest) does not depend on history, and an edit touches only the
shards around it. A commit re-uses every unchanged shard by digest.
"""

from __future__ import annotations

import bisect
import os
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import msgpack
import zstandard

from artfs.digest import DIGEST_SIZE, digest_bytes
from artfs.errors import CorruptRecord, InvalidInput
from artfs.store.manifest import Entry, Folder, Manifest, decode_doc
from artfs.store.outline import Outline, OutlineWriter, Parents

FORMAT = 2
# Files; smaller manifests stay one object (one GET, as before). The variables are for tests
# and experiments: a store's readers need neither (the root says where shards are).
SHARDED_ABOVE = int(os.environ.get("ARTFS_SHARDED_ABOVE", 1 << 16))
# Files per shard on average: ~130 KiB stored, a few ms to decode.
SHARD_FILES = max(int(os.environ.get("ARTFS_SHARD_FILES", 4096)), 1)


def is_cut(path: str) -> bool:
    """Whether a shard ends after the file `path` (a function of the path only)."""
    return zlib.crc32(path.encode()) % SHARD_FILES == 0


@dataclass(frozen=True)
class ShardInfo:
    lo: str  # first key (file or folder path) in the shard
    hi: str  # last key
    first: str  # first file path ('' if the shard holds only folders)
    files: int
    digest: bytes  # of the shard's encoded manifest
    content: bytes  # the shard's content digest (times excluded)
    size: int
    refs: int

    def row(self) -> list:
        return [self.lo, self.hi, self.first, self.files, self.digest, self.content, self.size, self.refs]


def _key(item: Entry | Folder) -> str:
    return item.path


class ShardWriter:
    """Builds a sharded manifest from keys given in ascending order, storing each shard
    as it fills (`put(digest, encoded)`), so memory holds one shard, whatever the count."""

    def __init__(self, put: Callable[[bytes, bytes], None]):
        self._put = put
        self._files: list[Entry] = []
        self._folders: list[Folder] = []
        self._last: str | None = None
        self._open_files: list[str] = []  # files that may still prefix a later key (a conflict)
        self.shards: list[ShardInfo] = []
        self._outline = OutlineWriter()

    @property
    def at_cut(self) -> bool:
        return not self._files and not self._folders

    @property
    def last_key(self) -> str | None:
        return self._last

    def add(self, item: Entry | Folder) -> None:
        key = item.path
        if self._last is not None and key <= self._last:
            if key == self._last:
                raise InvalidInput(f"duplicate path in manifest: {key}")
            raise ValueError(f"keys out of order: {key!r} after {self._last!r}")
        stack = self._open_files
        while stack and not key < stack[-1] + "0":  # '0' sorts right after '/'
            stack.pop()
        if any(key.startswith(p + "/") for p in stack):
            raise InvalidInput(f"{next(p for p in stack if key.startswith(p + '/'))!r} is both a file and a folder")
        self._last = key
        if isinstance(item, Folder):
            self._folders.append(item)
            self._outline.add_folder(item)
            return
        stack.append(key)
        self._files.append(item)
        self._outline.add_file(key)
        if is_cut(key):
            self._flush()

    def reuse(self, info: ShardInfo, parents: Parents = None, folders: list[Folder] | None = None) -> None:
        """Appends a stored shard as it is (only at a cut, with keys above the last one), with
        its part of the base's outline (`folders` None: the base has none, nor will the result)."""
        if not self.at_cut:
            raise ValueError("a shard can be re-used only where one ends")
        if self._last is not None and info.lo <= self._last:
            raise ValueError(f"keys out of order: {info.lo!r} after {self._last!r}")
        self.shards.append(info)
        self._outline.reuse(parents, folders)
        self._last = info.hi
        self._open_files = []

    def _flush(self) -> None:
        if self.at_cut:
            return
        m = Manifest.from_entries(self._files, self._folders)
        encoded = m.encode()
        digest = digest_bytes(encoded)
        self._put(digest, encoded)
        keys = sorted([*m.paths, *m.folders])
        self.shards.append(
            ShardInfo(
                keys[0],
                keys[-1],
                m.paths[0] if m.paths else "",
                len(m),
                digest,
                m.content_digest(),
                m.total_size,
                m.reference_count,
            )
        )
        self._outline.end_shard()
        self._files, self._folders = [], []

    def manifest(self, load: Callable[[bytes], Manifest]) -> ShardedManifest:
        """The manifest written (every shard stored), reading shards through `load`."""
        self._flush()
        return ShardedManifest(self.shards, load, self._outline.result())


def encode_root(shards: list[ShardInfo], outline: Outline | None = None) -> bytes:
    doc: dict = {"format": FORMAT, "shards": [s.row() for s in shards]}
    if outline is not None:  # optional: readers without it read the shards' own folder records
        doc["outline"] = outline.doc()
    return zstandard.ZstdCompressor(level=3).compress(msgpack.packb(doc, use_bin_type=True))


def decode_root(doc: dict, name: str) -> list[ShardInfo]:
    try:
        shards = [ShardInfo(*row) for row in doc["shards"]]
    except Exception as e:  # noqa: BLE001 -- any malformed row is a corrupt record
        raise CorruptRecord(f"corrupt {name}: {e}") from None
    for a, b in zip(shards, shards[1:]):
        if not a.hi < b.lo:
            raise CorruptRecord(f"corrupt {name}: shards overlap")
    for s in shards:
        if not (
            isinstance(s.lo, str)
            and isinstance(s.hi, str)
            and s.lo <= s.hi
            and isinstance(s.digest, bytes)
            and len(s.digest) == DIGEST_SIZE
            and isinstance(s.files, int)
            and s.files >= 0
        ):
            raise CorruptRecord(f"corrupt {name}: bad shard row")
    return shards


def decode(
    data: bytes, name: str, load: Callable[[bytes], Manifest], peek: Callable[[bytes], Manifest | None] | None = None
) -> Manifest | ShardedManifest:
    """An encoded manifest of either format; a sharded one reads its shards through `load`
    (and `peek`: a shard if it is in memory, without waiting)."""
    doc = decode_doc(data, name)
    if doc.get("format") == FORMAT:
        rows = decode_root(doc, name)
        outline = Outline.from_doc(doc["outline"], len(rows), name) if "outline" in doc else None
        return ShardedManifest(rows, load, outline, peek)
    return Manifest.from_doc(doc, name)


def split(m: Manifest, put: Callable[[bytes, bytes], None], load: Callable[[bytes], Manifest]) -> ShardedManifest:
    """A whole in-memory manifest as shards (stored through `put`, read through `load`)."""
    w = ShardWriter(put)
    for item in merged_items(m):
        w.add(item)
    return w.manifest(load)


def merged_items(m: Manifest) -> Iterator[Entry | Folder]:
    """A manifest's files and folders in key order."""
    folders = m.folder_entries()
    f = 0
    for i in range(len(m)):
        path = m.paths[i]
        while f < len(folders) and folders[f].path < path:
            yield folders[f]
            f += 1
        yield m.entry(i)
    yield from folders[f:]


class _Paths(Sequence):
    def __init__(self, owner: ShardedManifest):
        self._owner = owner

    def __len__(self) -> int:
        return len(self._owner)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        part, j = self._owner.locate(i if i >= 0 else i + len(self))
        return part.paths[j]

    def __iter__(self) -> Iterator[str]:
        for _, part in self._owner.parts():
            yield from part.paths


class ShardedManifest:
    """The read side of a sharded manifest, with Manifest's access methods. Shards load
    through `load` (blocking: the store, then a bounded cache) on first need."""

    sharded = True

    def __init__(
        self,
        shards: list[ShardInfo],
        load: Callable[[bytes], Manifest],
        outline: Outline | None = None,
        peek: Callable[[bytes], Manifest | None] | None = None,
    ):
        self.shards = shards
        self._load = load
        self._peek = peek
        self.outline = outline
        self._los = [s.lo for s in shards]
        self._starts: list[int] = []
        n = 0
        for s in shards:
            self._starts.append(n)
            n += s.files
        self._count = n
        self.paths = _Paths(self)

    @property
    def shard_loader(self) -> Callable[[bytes], Manifest]:
        return self._load

    def with_loader(
        self, load: Callable[[bytes], Manifest], peek: Callable[[bytes], Manifest | None] | None = None
    ) -> ShardedManifest:
        return ShardedManifest(self.shards, load, self.outline, peek)

    def outline_part(self, k: int) -> tuple[Parents, list[Folder] | None]:
        """Shard `k`'s part of the outline, for re-using the shard (None, None: no outline)."""
        if self.outline is None:
            return None, None
        s = self.shards[k]
        return self.outline.parents[k], self.outline.recorded_between(s.lo, s.hi)

    # -- shards ------------------------------------------------------------------------
    def shard(self, k: int) -> Manifest:
        part = self._load(self.shards[k].digest)
        if len(part) != self.shards[k].files:
            raise CorruptRecord(f"corrupt manifest shard {self.shards[k].digest.hex()}: file count differs")
        return part

    def parts(self) -> Iterator[tuple[int, Manifest]]:
        """(index of its first file, shard) for every shard, in order."""
        for k in range(len(self.shards)):
            yield self._starts[k], self.shard(k)

    def locate(self, i: int) -> tuple[Manifest, int]:
        """The shard holding entry `i`, and its index there."""
        k = self._shard_of(i)
        return self.shard(k), i - self._starts[k]

    def locate_loaded(self, i: int) -> tuple[Manifest, int] | None:
        """`locate`, if the shard is in memory (None: it would have to be fetched)."""
        k = self._shard_of(i)
        part = self._peek(self.shards[k].digest) if self._peek is not None else None
        return None if part is None else (part, i - self._starts[k])

    def _shard_of(self, i: int) -> int:
        if not 0 <= i < self._count:
            raise IndexError(i)
        k = bisect.bisect_right(self._starts, i) - 1
        while self.shards[k].files == 0:  # folder-only shards share the next one's start
            k += 1
        return k

    def _shard_for(self, key: str) -> int:
        return max(bisect.bisect_right(self._los, key) - 1, 0)

    # -- access ---------------------------------------------------------------------
    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Entry]:
        for _, part in self.parts():
            yield from part

    def _covering(self, key: str) -> int | None:
        """The shard whose keys span `key`, if one does (else no shard holds it)."""
        if not self.shards:
            return None
        k = self._shard_for(key)
        return k if self.shards[k].lo <= key <= self.shards[k].hi else None

    def index(self, path: str) -> int | None:
        k = self._covering(path)
        i = None if k is None else self.shard(k).index(path)
        return None if k is None or i is None else self._starts[k] + i

    def entry(self, i: int) -> Entry:
        part, j = self.locate(i)
        return part.entry(j)

    def get(self, path: str) -> Entry | None:
        k = self._covering(path)
        return None if k is None else self.shard(k).get(path)

    def stat(self, i: int) -> tuple[int, int, int]:
        part, j = self.locate(i)
        return part.stat(j)

    def folder(self, path: str) -> Folder | None:
        if self.outline is not None:
            return self.outline.folder(path)
        k = self._covering(path)
        return None if k is None else self.shard(k).folder(path)

    def _position(self, key: str) -> int:
        """The global index of the first file at or after `key`."""
        if not self.shards:
            return 0
        k = self._shard_for(key)
        s = self.shards[k]
        if key > s.hi:
            return self._starts[k] + s.files
        if key <= s.lo:
            return self._starts[k]
        return self._starts[k] + bisect.bisect_left(self.shard(k).paths, key)

    def _first_file_from(self, key: str) -> str | None:
        i = self._position(key)
        if i >= self._count:
            return None
        k = bisect.bisect_right(self._starts, i) - 1
        while self.shards[k].files == 0:
            k += 1
        if i == self._starts[k]:
            return self.shards[k].first  # no shard read
        return self.shard(k).paths[i - self._starts[k]]

    def _has_files_under(self, path: str) -> bool:
        prefix = path + "/"
        first = self._first_file_from(prefix)
        return first is not None and first.startswith(prefix)

    def is_dir(self, path: str) -> bool:
        if path == "":
            return True
        known = None if self.outline is None else self.outline.is_dir(path)
        if known is not None:
            return known
        return self.folder(path) is not None or self._has_files_under(path)

    def under(self, path: str) -> range:
        if not path:
            return range(self._count)
        i = self.index(path)
        if i is not None:
            return range(i, i + 1)
        return range(self._position(path + "/"), self._position(path + "0"))

    def children(self, path: str) -> Iterator[tuple[str, int | None]]:
        prefix = f"{path}/" if path else ""
        end = f"{path}0" if path else None
        found: dict[str, int | None] = {}
        outline = self.outline
        if outline is not None:
            found.update((name, None) for name in outline.recorded.folder_names(path))
        k = self._shard_for(prefix)
        while k < len(self.shards):
            s = self.shards[k]
            if end is not None and s.lo >= end:
                break
            inside = _only_child(s, prefix)
            if outline is not None and outline.holds_files_in(k, path) is False:  # sub-folders only, named
                found.update((name, None) for name in outline.names_in(k, path))
            elif inside is not None:  # wholly inside one sub-folder: named without reading it
                found.setdefault(inside, None)
            elif s.hi >= prefix:
                start = self._starts[k]
                for name, i in self.shard(k).children(path):
                    if i is None:
                        found.setdefault(name, None)
                    else:
                        found[name] = start + i
            k += 1
        return iter(sorted(found.items()))

    def subfolder_count(self, path: str) -> int:
        return sum(1 for _, i in self.children(path) if i is None)

    def folders_under(self, path: str) -> list[Folder]:
        if not path:
            return self.folder_entries()
        if self.outline is not None:
            return self.outline.recorded.folders_under(path)
        out: list[Folder] = []
        k = self._shard_for(path)
        while k < len(self.shards) and self.shards[k].lo < path + "0":
            if self.shards[k].hi >= path:
                out += self.shard(k).folders_under(path)
            k += 1
        return out

    def folder_entries(self) -> list[Folder]:
        if self.outline is not None:
            return self.outline.recorded.folder_entries()
        return [f for _, part in self.parts() for f in part.folder_entries()]

    def empty_folders(self) -> list[str]:
        known = None if self.outline is None else self.outline.empty_folders()
        if known is not None:
            return known
        return [f.path for f in self.folder_entries() if f.path and not self._has_files_under(f.path)]

    @property
    def total_size(self) -> int:
        return sum(s.size for s in self.shards)

    @property
    def reference_count(self) -> int:
        return sum(s.refs for s in self.shards)

    def reference_uris(self, limit: int) -> list[str]:
        out: list[str] = []
        for k, s in enumerate(self.shards):
            if len(out) >= limit:
                break
            if s.refs:  # only shards that hold references are read
                out += self.shard(k).reference_uris(limit - len(out))
        return out

    # -- identity --------------------------------------------------------------------
    def encode(self) -> bytes:
        return encode_root(self.shards, self.outline)

    @property
    def digest(self) -> bytes:
        return digest_bytes(self.encode())

    def content_digest(self) -> bytes:
        """Over the shards' content digests: shards end where the paths say, so the same
        tree has the same digest however it was made."""
        return digest_bytes(msgpack.packb(["sharded", [s.content for s in self.shards]], use_bin_type=True))


def _only_child(s: ShardInfo, prefix: str) -> str | None:
    """The sub-folder of `prefix` that holds every key of shard `s`, if one does."""
    if not (s.lo.startswith(prefix) and s.hi.startswith(prefix)):
        return None
    lo, hi = s.lo[len(prefix) :], s.hi[len(prefix) :]
    cut = hi.find("/")
    if cut < 0:
        return None
    name = hi[:cut]
    # Not when `lo` is the folder's own key: a sibling "name-x" sorts between "name" and "name/".
    return name if lo.startswith(name + "/") else None


AnyManifest = Manifest | ShardedManifest
