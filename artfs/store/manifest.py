"""The manifest: the immutable, sorted list of a version's entries.

Held in columns (one list of paths plus packed arrays) rather than one object
per entry, so a million-entry version costs ~150 bytes an entry in memory and
loads in well under a second. Paths are sorted, so a directory is a
contiguous range found by bisection; no per-directory index is kept.

Where an entry's bytes live:
  packed     small file inside a pack object, at `offset` (PACKED >= 0 names the pack)
  object     large file stored alone under its digest, verified per CHUNK_SIZE chunk;
             newer ones also name a piece index (digests of PIECE_SIZE pieces, stored
             beside the object) by its digest, so a small range can be verified alone
  blocks     large file stored as BLOCK_SIZE blocks, each an object under its own digest
             (`blocks[i]`), so a small change to a large file stores one new block; its
             chunk digests and piece index are those of the whole file, as for `object`
  reference  bytes outside the store (`refs[i]` holds the URI and its pin)

What a version keeps of the tree besides bytes (optional columns, absent in
manifests made before them): each file's mtime in nanoseconds (`mtimes`), its
permission bits including setuid/setgid/sticky (`modes`; older manifests hold
only 0o644/0o755), and every folder with its mode and mtime (`folders`), so
empty folders are kept. None of these is the version's identity: that is
`content_digest()`, over paths, bytes, the executable bit and empty folders.
"""

from __future__ import annotations

import bisect
import itertools
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import msgpack
import zstandard

from artfs.digest import CHUNK_SIZE, DIGEST_SIZE, digest_bytes
from artfs.errors import CorruptRecord, InvalidInput
from artfs.names import normalize_path

FORMAT = 1
OBJECT = -1
REFERENCE = -2
UNKNOWN_SIZE = -1
# Large files above this are stored as blocks of this size: a whole number of chunks, so a
# chunk (the unit of verification) never straddles two objects.
BLOCK_SIZE = 16 << 20
_ZERO = bytes(DIGEST_SIZE)


@dataclass
class Entry:
    path: str
    size: int
    digest: bytes
    mode: int = 0o644
    pack: bytes | None = None  # pack id for packed entries
    offset: int = 0
    chunks: bytes = b""  # concatenated chunk digests for stored objects > CHUNK_SIZE
    piece_index: bytes = b""  # digest of the object's piece index (b"": none, made before them)
    ref: dict | None = None  # {"uri": ..., pin fields...} for references
    mtime_ns: int = 0  # modification time; 0: not known (made before manifests kept times)
    blocks: bytes = b""  # stored as blocks: the digest of each BLOCK_SIZE block, concatenated

    @property
    def is_reference(self) -> bool:
        return self.ref is not None

    @property
    def is_packed(self) -> bool:
        return self.pack is not None

    @property
    def hexdigest(self) -> str:
        return self.digest.hex()

    def locate(self, offset: int) -> tuple[bytes, int]:
        """The digest of the stored object holding byte `offset` of a stored (not packed)
        file, and where in that object it is."""
        if not self.blocks:
            return self.digest, offset
        k = offset // BLOCK_SIZE
        return self.blocks[k * DIGEST_SIZE : (k + 1) * DIGEST_SIZE], offset - k * BLOCK_SIZE

    def object_digests(self) -> list[bytes]:
        """The digests of the objects a stored (not packed) file's bytes are in."""
        if not self.blocks:
            return [self.digest]
        return [self.blocks[k : k + DIGEST_SIZE] for k in range(0, len(self.blocks), DIGEST_SIZE)]

    def same_content(self, other: Entry) -> bool:
        """Same bytes and executable bit (times and other mode bits are not content)."""
        return (self.digest, self.size, bool(self.mode & 0o111), self.ref) == (
            other.digest,
            other.size,
            bool(other.mode & 0o111),
            other.ref,
        )


@dataclass
class Folder:
    """A folder of a version ('' is the version's root)."""

    path: str
    mode: int = 0o755
    mtime_ns: int = 0  # 0: not known


@dataclass
class Manifest:
    paths: list[str] = field(default_factory=list)
    sizes: array = field(default_factory=lambda: array("q"))
    digests: bytes = b""
    modes: array = field(default_factory=lambda: array("H"))
    packs: array = field(default_factory=lambda: array("l"))
    offsets: array = field(default_factory=lambda: array("Q"))
    pack_ids: list[bytes] = field(default_factory=list)
    chunks: dict[int, bytes] = field(default_factory=dict)
    piece_indexes: dict[int, bytes] = field(default_factory=dict)
    refs: dict[int, dict] = field(default_factory=dict)
    blocks: dict[int, bytes] = field(default_factory=dict)
    mtimes: array = field(default_factory=lambda: array("q"))  # empty: no times known
    folders: list[str] = field(default_factory=list)  # sorted; empty: only those files imply
    folder_modes: array = field(default_factory=lambda: array("H"))
    folder_mtimes: array = field(default_factory=lambda: array("q"))

    # -- building -----------------------------------------------------------
    @classmethod
    def from_entries(cls, entries: list[Entry], folders: Iterable[Folder] = ()) -> Manifest:
        entries = sorted(entries, key=lambda e: e.path)
        m = cls()
        if any(e.mtime_ns for e in entries):
            m.mtimes = array("q", (e.mtime_ns for e in entries))
        pack_index: dict[bytes, int] = {}
        digests = bytearray()
        previous = None
        for i, e in enumerate(entries):
            path = normalize_path(e.path)
            if path == previous:
                raise InvalidInput(f"duplicate path in manifest: {path}")
            if previous is not None and path.startswith(previous + "/"):
                raise InvalidInput(f"{previous!r} is both a file and a folder")
            previous = path
            m.paths.append(path)
            m.sizes.append(e.size)
            digests += e.digest if len(e.digest) == DIGEST_SIZE else _ZERO
            m.modes.append(e.mode & 0o7777)
            if e.ref is not None:
                m.packs.append(REFERENCE)
                m.refs[i] = dict(e.ref)
            elif e.pack is not None:
                m.packs.append(pack_index.setdefault(e.pack, len(pack_index)))
            else:
                m.packs.append(OBJECT)
                if e.size > CHUNK_SIZE:
                    expected = -(-e.size // CHUNK_SIZE) * DIGEST_SIZE
                    if len(e.chunks) != expected:
                        raise InvalidInput(f"{path}: chunk digests missing")
                    m.chunks[i] = e.chunks
                    if e.piece_index:
                        m.piece_indexes[i] = e.piece_index
                    if e.blocks:
                        if len(e.blocks) != block_count(e.size) * DIGEST_SIZE:
                            raise InvalidInput(f"{path}: block digests missing")
                        m.blocks[i] = e.blocks
            m.offsets.append(e.offset)
        m.pack_ids = list(pack_index)
        m.digests = bytes(digests)
        m._check_folders()
        m.set_folders(folders)
        return m

    def set_folders(self, folders: Iterable[Folder]) -> None:
        """Records folders (with their modes and times); a path given twice keeps the first."""
        by_path: dict[str, Folder] = {}
        for f in folders:
            by_path.setdefault(normalize_path(f.path) if f.path else "", f)
        self.folders = sorted(by_path)
        self.folder_modes = array("H", (by_path[p].mode & 0o7777 for p in self.folders))
        self.folder_mtimes = array("q", (by_path[p].mtime_ns for p in self.folders))
        for p in self.folders:
            if self.index(p) is not None:
                raise InvalidInput(f"{p!r} is both a file and a folder")

    def _check_folders(self) -> None:
        # A file "a" and "a/b" can be non-adjacent ("a", "a-b", "a/b"): check each
        # folder prefix against the set of files once, at build time only.
        files = set(self.paths)
        for p in self.paths:
            cut = p.rfind("/")
            while cut > 0:
                if p[:cut] in files:
                    raise InvalidInput(f"{p[:cut]!r} is both a file and a folder")
                cut = p.rfind("/", 0, cut)

    # -- access ---------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.paths)

    def entry(self, i: int) -> Entry:
        p = self.packs[i]
        return Entry(
            path=self.paths[i],
            size=self.sizes[i],
            digest=self.digests[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE],
            mode=self.modes[i],
            pack=self.pack_ids[p] if p >= 0 else None,
            offset=self.offsets[i],
            chunks=self.chunks.get(i, b""),
            piece_index=self.piece_indexes.get(i, b""),
            ref=self.refs.get(i),
            mtime_ns=self.mtimes[i] if self.mtimes else 0,
            blocks=self.blocks.get(i, b""),
        )

    sharded = False

    def stat(self, i: int) -> tuple[int, int, int]:
        """Entry `i`'s size (0 if unknown), mode bits and mtime in ns (0: not known)."""
        return max(self.sizes[i], 0), self.modes[i], self.mtimes[i] if self.mtimes else 0

    def parts(self) -> Iterator[tuple[int, Manifest]]:
        """(index of its first entry, part) for each stored part: one, unless sharded."""
        yield 0, self

    def locate(self, i: int) -> tuple[Manifest, int]:
        """The part holding entry `i`, and its index there."""
        return self, i

    locate_loaded = locate  # one part, always in memory

    def folder(self, path: str) -> Folder | None:
        """A recorded folder's mode and time (None: not recorded, as in older manifests)."""
        i = bisect.bisect_left(self.folders, path)
        if i < len(self.folders) and self.folders[i] == path:
            return Folder(path, self.folder_modes[i], self.folder_mtimes[i])
        return None

    def folders_under(self, path: str) -> list[Folder]:
        """Recorded folders at or below `path` ('' = all)."""
        if not path:
            return self.folder_entries()
        lo = bisect.bisect_left(self.folders, path)
        hi = bisect.bisect_left(self.folders, path + "0", lo)
        return [
            Folder(p, self.folder_modes[i], self.folder_mtimes[i])
            for i, p in enumerate(self.folders[lo:hi], lo)
            if p == path or p.startswith(path + "/")
        ]

    def folder_entries(self) -> list[Folder]:
        return [Folder(p, self.folder_modes[i], self.folder_mtimes[i]) for i, p in enumerate(self.folders)]

    def _has_files_under(self, path: str) -> bool:
        prefix = path + "/"
        i = bisect.bisect_left(self.paths, prefix)
        return i < len(self.paths) and self.paths[i].startswith(prefix)

    def empty_folders(self) -> list[str]:
        """Recorded folders with no file below them (the root excluded)."""
        return [p for p in self.folders if p and not self._has_files_under(p)]

    def __iter__(self) -> Iterator[Entry]:
        return (self.entry(i) for i in range(len(self.paths)))

    def index(self, path: str) -> int | None:
        i = bisect.bisect_left(self.paths, path)
        return i if i < len(self.paths) and self.paths[i] == path else None

    def get(self, path: str) -> Entry | None:
        i = self.index(path)
        return None if i is None else self.entry(i)

    def is_dir(self, path: str) -> bool:
        if path == "":
            return True
        return self._has_files_under(path) or self.folder(path) is not None

    def children(self, path: str) -> Iterator[tuple[str, int | None]]:
        """(name, entry index) for files and (name, None) for folders directly in `path`."""
        if not self.folders:
            return self._file_children(path)
        out = list(self._file_children(path))
        names = {name for name, _ in out}
        extra: list[tuple[str, int | None]] = [(n, None) for n in self.folder_names(path) if n not in names]
        if not extra:
            return iter(out)
        return iter(sorted(out + extra, key=lambda c: c[0]))

    def folder_names(self, path: str) -> Iterator[str]:
        """Names of recorded folders directly in `path`."""
        prefix = f"{path}/" if path else ""
        folders = self.folders
        i = bisect.bisect_left(folders, prefix)
        if not prefix and i < len(folders) and folders[i] == "":
            i += 1  # the root itself
        seen = set()
        while i < len(folders) and folders[i].startswith(prefix):
            rest = folders[i][len(prefix) :]
            sub = rest.split("/", 1)[0]
            if sub not in seen:  # "a/b" may come after "a" and a sibling "a-b"
                seen.add(sub)
                yield sub
            if sub == rest:
                i += 1
            else:  # skip the rest of the sub-folder: '0' sorts right after '/'
                i = bisect.bisect_left(folders, prefix + sub + "0", i)

    def _file_children(self, path: str) -> Iterator[tuple[str, int | None]]:
        prefix = f"{path}/" if path else ""
        i = bisect.bisect_left(self.paths, prefix)
        n = len(self.paths)
        while i < n and self.paths[i].startswith(prefix):
            rest = self.paths[i][len(prefix) :]
            slash = rest.find("/")
            if slash < 0:
                yield rest, i
                i += 1
            else:
                sub = rest[:slash]
                yield sub, None
                # Skip the whole sub-folder: '0' sorts right after '/'.
                i = bisect.bisect_left(self.paths, prefix + sub + "0", i)

    def subfolder_count(self, path: str) -> int:
        """How many folders are directly in `path`."""
        if self.folders:  # recorded: counted without walking the files
            return sum(1 for _ in self.folder_names(path))
        return sum(1 for _, i in self._file_children(path) if i is None)

    def under(self, path: str) -> range:
        """Indices of entries at or below `path` ('' = everything)."""
        if not path:
            return range(len(self.paths))
        i = self.index(path)
        if i is not None:
            return range(i, i + 1)
        lo = bisect.bisect_left(self.paths, path + "/")
        hi = bisect.bisect_left(self.paths, path + "0", lo)
        return range(lo, hi)

    @property
    def total_size(self) -> int:
        return sum(s for s in self.sizes if s > 0)

    @property
    def reference_count(self) -> int:
        return len(self.refs)

    def reference_uris(self, limit: int) -> list[str]:
        """The URIs of the first `limit` references, in path order."""
        return [self.refs[i]["uri"] for i in sorted(self.refs)[:limit]]

    # -- encoding -------------------------------------------------------------
    def encode(self) -> bytes:
        doc = {
            "format": FORMAT,
            "paths": self.paths,
            "sizes": self.sizes.tobytes(),
            "digests": self.digests,
            "modes": self.modes.tobytes(),
            "packs": self.packs.tobytes(),
            "offsets": self.offsets.tobytes(),
            "pack_ids": self.pack_ids,
            "chunks": self.chunks,
            "refs": self.refs,
        }
        if self.piece_indexes:  # absent before piece indexes existed: older readers ignore it
            doc["piece_indexes"] = self.piece_indexes
        if self.blocks:  # files stored as blocks (older readers cannot read those files)
            doc["blocks"] = self.blocks
        if self.mtimes:  # the tree's times and folders: optional, older readers ignore them
            doc["mtimes"] = self.mtimes.tobytes()
        if self.folders:
            doc["folders"] = self.folders_doc()
        raw = msgpack.packb(doc, use_bin_type=True)
        return zstandard.ZstdCompressor(level=3).compress(raw)

    @classmethod
    def decode(cls, data: bytes, name: str = "manifest") -> Manifest:
        return cls.from_doc(decode_doc(data, name), name)

    @classmethod
    def from_doc(cls, doc: dict, name: str = "manifest") -> Manifest:
        try:
            if doc.get("format") != FORMAT:
                raise ValueError(f"unknown format {doc.get('format')!r}")
            m = cls(
                paths=doc["paths"],
                digests=doc["digests"],
                pack_ids=doc["pack_ids"],
                chunks=doc["chunks"],
                refs=doc["refs"],
                piece_indexes=doc.get("piece_indexes", {}),
                blocks=doc.get("blocks", {}),
            )
            m.sizes.frombytes(doc["sizes"])
            m.modes.frombytes(doc["modes"])
            m.packs.frombytes(doc["packs"])
            m.offsets.frombytes(doc["offsets"])
            if "mtimes" in doc:
                m.mtimes.frombytes(doc["mtimes"])
            if "folders" in doc:
                m.load_folders(doc["folders"])
        except Exception as e:  # noqa: BLE001 -- any decoding failure is a corrupt record, whatever raised it
            raise CorruptRecord(f"corrupt {name}: {e}") from None
        m._validate(name)
        return m

    def _validate(self, name: str) -> None:
        n = len(self.paths)
        if not (
            len(self.sizes) == len(self.modes) == len(self.packs) == len(self.offsets) == n
            and len(self.digests) == n * DIGEST_SIZE
        ):
            raise CorruptRecord(f"corrupt {name}: column lengths differ")
        if len(self.mtimes) not in (0, n):
            raise CorruptRecord(f"corrupt {name}: column lengths differ")
        if any(not isinstance(p, str) for p in self.paths):
            raise CorruptRecord(f"corrupt {name}: a path is not text")
        self.validate_folders(name)
        if n == 0:
            return
        # One pass over the joined text finds any '..', '.', empty, absolute or NUL path.
        joined = "\n" + "\n".join(self.paths) + "\n"
        if joined.count("\n") != n + 1 or any(bad in joined for bad in _BAD_FRAGMENTS):
            raise CorruptRecord(f"corrupt {name}: a path is not normalized")
        if any(a >= b for a, b in zip(self.paths, self.paths[1:])):
            raise CorruptRecord(f"corrupt {name}: paths are not sorted and unique")
        if self.packs and (max(self.packs) >= len(self.pack_ids) or min(self.packs) < REFERENCE):
            raise CorruptRecord(f"corrupt {name}: bad pack index")
        for i, d in self.piece_indexes.items():
            if not (isinstance(d, bytes) and len(d) == DIGEST_SIZE and i in self.chunks):
                raise CorruptRecord(f"corrupt {name}: bad piece index of entry {i}")
        for i, b in self.blocks.items():
            if not (isinstance(b, bytes) and i in self.chunks and len(b) == block_count(self.sizes[i]) * DIGEST_SIZE):
                raise CorruptRecord(f"corrupt {name}: bad blocks of entry {i}")

    def validate_folders(self, name: str) -> None:
        f = self.folders
        if not (isinstance(f, list) and len(f) == len(self.folder_modes) == len(self.folder_mtimes)):
            raise CorruptRecord(f"corrupt {name}: folder columns differ")
        if any(not isinstance(p, str) for p in f):
            raise CorruptRecord(f"corrupt {name}: a folder path is not text")
        if any(a >= b for a, b in itertools.pairwise(f)):
            raise CorruptRecord(f"corrupt {name}: folders are not sorted and unique")
        named = [p for p in f if p]  # '' is the root
        if named:
            joined = "\n" + "\n".join(named) + "\n"
            if joined.count("\n") != len(named) + 1 or any(bad in joined for bad in _BAD_FRAGMENTS):
                raise CorruptRecord(f"corrupt {name}: a folder path is not normalized")

    def folders_doc(self) -> dict:
        return {"paths": self.folders, "modes": self.folder_modes.tobytes(), "mtimes": self.folder_mtimes.tobytes()}

    def load_folders(self, doc: dict) -> None:
        """The folder columns from `folders_doc()` (unchecked: see validate_folders)."""
        self.folders = doc["paths"]
        self.folder_modes.frombytes(doc["modes"])
        self.folder_mtimes.frombytes(doc["mtimes"])

    @property
    def digest(self) -> bytes:
        return digest_bytes(self.encode())

    def content_digest(self) -> bytes:
        """The version's identity: paths, bytes (digests, sizes, reference pins), the
        executable bit and empty folders, never times or other mode bits, nor where the
        bytes are stored. Equal for an old manifest and a new one of the same tree."""
        modes = array("H", (0o755 if m & 0o111 else 0o644 for m in self.modes))
        doc = [self.paths, self.sizes.tobytes(), self.digests, modes.tobytes(), self.refs, self.empty_folders()]
        return digest_bytes(msgpack.packb(doc, use_bin_type=True))


def decode_doc(data: bytes, name: str = "manifest") -> dict:
    """An encoded manifest (of any format) as its document."""
    try:
        raw = zstandard.ZstdDecompressor().decompress(data, max_output_size=1 << 34)
        doc = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except Exception as e:  # noqa: BLE001 -- any decoding failure is a corrupt record, whatever raised it
        raise CorruptRecord(f"corrupt {name}: {e}") from None
    if not isinstance(doc, dict):
        raise CorruptRecord(f"corrupt {name}: not a manifest")
    return doc


def block_count(size: int) -> int:
    return -(-size // BLOCK_SIZE)


_BAD_FRAGMENTS = (
    "\x00",
    "\n/",
    "//",
    "/\n",
    "\n\n",
    "\n../",
    "/../",
    "/..\n",
    "\n..\n",
    "\n./",
    "/./",
    "/.\n",
    "\n.\n",
)
