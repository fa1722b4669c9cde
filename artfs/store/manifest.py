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
  reference  bytes outside the store (`refs[i]` holds the URI and its pin)
"""

from __future__ import annotations

import bisect
from array import array
from dataclasses import dataclass, field
from typing import Iterator

import msgpack
import zstandard

from artfs.digest import CHUNK_SIZE, DIGEST_SIZE, digest_bytes
from artfs.errors import CorruptRecord, InvalidInput
from artfs.names import normalize_path

FORMAT = 1
OBJECT = -1
REFERENCE = -2
UNKNOWN_SIZE = -1
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

    @property
    def is_reference(self) -> bool:
        return self.ref is not None

    @property
    def is_packed(self) -> bool:
        return self.pack is not None

    @property
    def hexdigest(self) -> str:
        return self.digest.hex()

    def same_content(self, other: "Entry") -> bool:
        return (self.digest, self.size, self.mode, self.ref) == (other.digest, other.size, other.mode, other.ref)


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

    # -- building -----------------------------------------------------------
    @classmethod
    def from_entries(cls, entries: list[Entry]) -> "Manifest":
        entries = sorted(entries, key=lambda e: e.path)
        m = cls()
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
            m.modes.append(0o755 if e.mode & 0o111 else 0o644)
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
            m.offsets.append(e.offset)
        m.pack_ids = list(pack_index)
        m.digests = bytes(digests)
        m._check_folders()
        return m

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
        )

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
        prefix = path + "/"
        i = bisect.bisect_left(self.paths, prefix)
        return i < len(self.paths) and self.paths[i].startswith(prefix)

    def children(self, path: str) -> Iterator[tuple[str, int | None]]:
        """(name, entry index) for files and (name, None) for folders directly in `path`."""
        prefix = f"{path}/" if path else ""
        i = bisect.bisect_left(self.paths, prefix)
        n = len(self.paths)
        while i < n and self.paths[i].startswith(prefix):
            rest = self.paths[i][len(prefix):]
            slash = rest.find("/")
            if slash < 0:
                yield rest, i
                i += 1
            else:
                sub = rest[:slash]
                yield sub, None
                # Skip the whole sub-folder: '0' sorts right after '/'.
                i = bisect.bisect_left(self.paths, prefix + sub + "0", i)

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
        raw = msgpack.packb(doc, use_bin_type=True)
        return zstandard.ZstdCompressor(level=3).compress(raw)

    @classmethod
    def decode(cls, data: bytes, name: str = "manifest") -> "Manifest":
        try:
            raw = zstandard.ZstdDecompressor().decompress(data, max_output_size=1 << 34)
            doc = msgpack.unpackb(raw, raw=False, strict_map_key=False)
            if doc.get("format") != FORMAT:
                raise ValueError(f"unknown format {doc.get('format')!r}")
            m = cls(paths=doc["paths"], digests=doc["digests"], pack_ids=doc["pack_ids"],
                    chunks=doc["chunks"], refs=doc["refs"], piece_indexes=doc.get("piece_indexes", {}))
            m.sizes.frombytes(doc["sizes"])
            m.modes.frombytes(doc["modes"])
            m.packs.frombytes(doc["packs"])
            m.offsets.frombytes(doc["offsets"])
        except Exception as e:  # any decoding failure is a corrupt record, whatever raised it
            raise CorruptRecord(f"corrupt {name}: {e}") from None
        m._validate(name)
        return m

    def _validate(self, name: str) -> None:
        n = len(self.paths)
        if not (len(self.sizes) == len(self.modes) == len(self.packs) == len(self.offsets) == n
                and len(self.digests) == n * DIGEST_SIZE):
            raise CorruptRecord(f"corrupt {name}: column lengths differ")
        if any(not isinstance(p, str) for p in self.paths):
            raise CorruptRecord(f"corrupt {name}: a path is not text")
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

    @property
    def digest(self) -> bytes:
        return digest_bytes(self.encode())


_BAD_FRAGMENTS = ("\x00", "\n/", "//", "/\n", "\n\n", "\n../", "/../", "/..\n", "\n..\n",
                  "\n./", "/./", "/.\n", "\n.\n")
