"""Carrying a base version's entries into a new manifest by the column, not the entry.

A draft of a 100,000-file version in which one file changed carries 99,999
entries over unread. Making an `Entry` object for each and sorting and checking
them again cost ~10 µs an entry; a `CarriedRange` names a run of the base
manifest (a whole unmodified folder, possibly moved) and `assemble` copies its
columns straight into the new manifest.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass

from artfs.digest import CHUNK_SIZE, DIGEST_SIZE
from artfs.errors import InvalidInput
from artfs.names import normalize_path
from artfs.store.manifest import OBJECT, REFERENCE, Entry, Manifest
from artfs.store.shards import AnyManifest

_ZERO = bytes(DIGEST_SIZE)


@dataclass
class CarriedRange:
    """Entries start..stop of `manifest`, whose paths begin with `old` ('' = the root),
    carried under `new` instead."""

    manifest: AnyManifest  # (assemble() takes whole manifests only; sharded ones are patched)
    start: int
    stop: int
    old: str
    new: str

    def paths(self) -> list[str]:
        got = self.manifest.paths[self.start : self.stop]
        if self.old == self.new:
            return got
        cut = len(self.old) + 1 if self.old else 0
        prefix = f"{self.new}/" if self.new else ""
        return [prefix + p[cut:] for p in got]

    def entries(self) -> list[Entry]:
        out = []
        for i, path in zip(range(self.start, self.stop), self.paths()):
            e = self.manifest.entry(i)
            e.path = path
            out.append(e)
        return out


def expand(carried) -> list[Entry]:
    """Entries and ranges as plain entries."""
    out: list[Entry] = []
    for c in carried:
        out.extend(c.entries() if isinstance(c, CarriedRange) else [c])
    return out


def assemble(entries: list[Entry], ranges: list[CarriedRange]) -> Manifest:
    """The manifest of `entries` plus every range (all of one base manifest). The caller
    guarantees that they form a tree (a draft's namespace does); duplicates are refused."""
    base = ranges[0].manifest
    assert isinstance(base, Manifest), "a sharded base is patched (versions/reshard.py)"
    if any(r.manifest is not base for r in ranges):
        raise ValueError("carried ranges of different manifests")
    paths: list[str] = []
    source = array("q")  # >= 0: index in base; < 0: -1 - index in entries
    for r in ranges:
        paths += r.paths()
        source.extend(range(r.start, r.stop))
    for k, e in enumerate(entries):
        paths.append(normalize_path(e.path))
        source.append(-1 - k)
    order = sorted(range(len(paths)), key=paths.__getitem__)
    m = Manifest()
    m.paths = [paths[k] for k in order]
    for a, b in zip(m.paths, m.paths[1:]):
        if a == b:
            raise InvalidInput(f"duplicate path in manifest: {a}")
    pack_index: dict[bytes, int] = {}
    digests = bytearray()
    bsizes, bdigests, bmodes, bpacks, boffsets = base.sizes, base.digests, base.modes, base.packs, base.offsets
    bpack_ids, bchunks, bpieces, brefs = base.pack_ids, base.chunks, base.piece_indexes, base.refs
    sizes, modes, packs, offsets = m.sizes, m.modes, m.packs, m.offsets
    for j, k in enumerate(order):
        s = source[k]
        if s >= 0:
            sizes.append(bsizes[s])
            digests += bdigests[s * DIGEST_SIZE : (s + 1) * DIGEST_SIZE]
            modes.append(bmodes[s])
            offsets.append(boffsets[s])
            p = bpacks[s]
            if p >= 0:
                packs.append(pack_index.setdefault(bpack_ids[p], len(pack_index)))
            else:
                packs.append(p)
                if p == REFERENCE:
                    m.refs[j] = dict(brefs[s])
                elif s in bchunks:
                    m.chunks[j] = bchunks[s]
                    if s in bpieces:
                        m.piece_indexes[j] = bpieces[s]
            continue
        e = entries[-1 - s]
        sizes.append(e.size)
        digests += e.digest if len(e.digest) == DIGEST_SIZE else _ZERO
        modes.append(0o755 if e.mode & 0o111 else 0o644)
        offsets.append(e.offset)
        if e.ref is not None:
            packs.append(REFERENCE)
            m.refs[j] = dict(e.ref)
        elif e.pack is not None:
            packs.append(pack_index.setdefault(e.pack, len(pack_index)))
        else:
            packs.append(OBJECT)
            if e.size > CHUNK_SIZE:
                if len(e.chunks) != -(-e.size // CHUNK_SIZE) * DIGEST_SIZE:
                    raise InvalidInput(f"{e.path}: chunk digests missing")
                m.chunks[j] = e.chunks
                if e.piece_index:
                    m.piece_indexes[j] = e.piece_index
    m.pack_ids = list(pack_index)
    m.digests = bytes(digests)
    return m
