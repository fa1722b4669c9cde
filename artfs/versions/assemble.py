"""Manifests of a commit that carries whole folders of its base by range (content/carry.py)
with what `carry.assemble` leaves out: times, full modes and blocks of the entries kept."""

from __future__ import annotations

import bisect
from array import array

from artfs.content.carry import CarriedRange, assemble
from artfs.names import normalize_path
from artfs.store.manifest import Entry, Folder, Manifest


def assemble_kept(entries: list[Entry], ranges: list[CarriedRange]) -> Manifest:
    """carry.assemble, plus what it leaves out: the times and the blocks of every entry, and
    the full mode bits of `entries` (it keeps only their executable bit). A range is a whole
    folder, so its entries are contiguous in the new manifest too."""
    m = assemble(entries, ranges)
    base = ranges[0].manifest
    assert isinstance(base, Manifest)  # (assemble checked it)
    times = array("q", bytes(8 * len(m))) if base.mtimes or any(e.mtime_ns for e in entries) else None
    for r in ranges:
        if r.stop <= r.start:
            continue
        first = base.paths[r.start]
        if r.old != r.new:
            rest = first[len(r.old) + 1 :] if r.old else first
            first = f"{r.new}/{rest}" if r.new else rest
        j = m.index(first)
        if j is None:
            continue
        if times is not None and base.mtimes:
            times[j : j + r.stop - r.start] = base.mtimes[r.start : r.stop]
        for i, b in base.blocks.items():
            if r.start <= i < r.stop:
                m.blocks[j + i - r.start] = b
    for e in entries:
        j = m.index(normalize_path(e.path))
        if j is None:
            continue
        if times is not None:
            times[j] = e.mtime_ns
        m.modes[j] = e.mode & 0o7777
        if e.blocks:
            m.blocks[j] = e.blocks
    if times is not None:
        m.mtimes = times
    return m


def carried_folders(ranges: list[CarriedRange]) -> list[Folder]:
    """The base's recorded folders below each carried range, under the range's new name."""
    out = []
    for r in ranges:
        base = r.manifest
        assert isinstance(base, Manifest)  # whole manifests only (sharded ones are patched)
        prefix = f"{r.old}/" if r.old else ""
        lo = bisect.bisect_left(base.folders, prefix)
        for i in range(lo, len(base.folders)):
            p = base.folders[i]
            if not p.startswith(prefix):
                break
            if not p:
                continue  # the root: the caller records it
            rest = p[len(prefix) :]
            out.append(Folder(f"{r.new}/{rest}" if r.new else rest, base.folder_modes[i], base.folder_mtimes[i]))
    return out
