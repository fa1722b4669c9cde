"""A commit on a sharded version rewrites only the shards that changed.

A draft of a sharded base hands over what changed (new and changed entries and
folder records, paths removed) and how many files the result has. Each change
falls in one shard of the base (the first whose last key is at or after it); a
removed folder spans a run of them. Those shards are read, patched and cut
again where the paths say; every other shard is re-used by digest, unread, as
long as the new shards so far end where it begins. So a one-file commit to a
10M-file version reads and writes a shard or two and a new root.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field

from artfs.content.carry import CarriedRange
from artfs.errors import InvalidInput
from artfs.store.manifest import Entry, Folder, Manifest
from artfs.store.shards import ShardedManifest, ShardWriter, merged_items


class RemovedPaths:
    """Paths removed from a draft; a folder's with everything below it."""

    def __init__(self, removed: list[tuple[str, bool]]):
        self.paths = {p for p, _ in removed}
        self._folders = {p for p, folder in removed if folder}

    def covers(self, key: str) -> bool:
        if key in self.paths:
            return True
        cut = key.find("/")
        while cut > 0:
            if key[:cut] in self._folders:
                return True
            cut = key.find("/", cut + 1)
        return False


@dataclass
class ShardPatch:
    """What a draft of a sharded base changed (see drafts/draft.py _patch_snapshot)."""

    base: ShardedManifest
    entries: list[Entry] = field(default_factory=list)  # carried from the base, changed
    folders: list[Folder] = field(default_factory=list)  # recorded folders below moved ones
    removed: list[tuple[str, bool]] = field(default_factory=list)  # (path, is a folder)
    files: int | None = 0  # how many files the new version has (None: not known, not checked)
    counted_local: bool = True  # `files` counts the local files too (a draft's snapshot does)


def from_ranges(base: ShardedManifest, ranges: list, entries: list[Entry]) -> ShardPatch:
    """A patch from carried ranges and entries (as a Python API draft or a bench carries a
    base): base entries no range covers are removed, a moved range is removed where it was
    and put in anew where it goes; kept in place, a range costs nothing."""
    patch = ShardPatch(base, entries=list(entries), counted_local=False)
    covered = sorted((r.start, r.stop) for r in ranges if r.stop > r.start)
    at = 0
    for start, stop in [*covered, (len(base), len(base))]:
        patch.removed += [(base.paths[i], False) for i in range(at, start)]
        at = max(at, stop)
    files = len(entries)
    for r in ranges:
        files += r.stop - r.start
        if r.old != r.new:
            patch.removed.append((r.old, True))
            patch.entries += r.entries()
    patch.files = files
    return patch


def kept_but(base: ShardedManifest, removed: set[int], folders: set[str], entries: list[Entry]) -> ShardPatch:
    """A patch keeping every entry of `base` but those `removed` (by index) and the `folders`
    removed whole (their records too), with `entries` (references) put in."""
    ranges, at = [], 0
    for i in [*sorted(removed), len(base)]:
        if i > at:
            ranges.append(CarriedRange(base, at, i, "", ""))
        at = i + 1
    patch = from_ranges(base, ranges, entries)
    patch.removed += [(p, True) for p in sorted(folders)]
    return patch


def apply(
    patch: ShardPatch, entries: list[Entry], folders: list[Folder], put: Callable[[bytes, bytes], None]
) -> ShardedManifest | None:
    """The new manifest: the base with `entries` and `folders` (new or changed) put in and the
    removed paths taken out. None if its file count is not the draft's (then the caller builds
    the manifest whole: a safety net, never expected; a draft that kept folders unlisted
    cannot count their files without reading them, and is not checked)."""
    base = patch.base
    by_key: dict[str, Entry | Folder] = {}
    items: list[Entry | Folder] = [*patch.folders, *folders, *patch.entries, *entries]
    for item in items:
        if item.path in by_key and isinstance(by_key[item.path], Entry) != isinstance(item, Entry):
            raise InvalidInput(f"{item.path!r} is both a file and a folder")
        by_key[item.path] = item
    keys = sorted(by_key)
    gone = RemovedPaths(patch.removed)
    his = [s.hi for s in base.shards]
    last = len(his) - 1

    def owner(key: str) -> int:
        return min(bisect.bisect_left(his, key), last)

    dirty = {owner(k) for k in keys}
    for path, folder in patch.removed:
        dirty.add(owner(path))
        if folder:
            dirty.update(range(owner(path + "/"), owner(path + "0") + 1))
    writer = ShardWriter(put)
    pos = 0
    for k, info in enumerate(base.shards):
        if k not in dirty and writer.at_cut:
            writer.reuse(info, *base.outline_part(k))
            continue
        end = len(keys) if k == last else bisect.bisect_right(keys, info.hi, pos)
        for item in _merge(base.shard(k), [by_key[key] for key in keys[pos:end]], gone):
            writer.add(item)
        pos = end
    result = writer.manifest(base.shard_loader)
    return result if patch.files is None or len(result) == patch.files else None


def _merge(part: Manifest, changed: list[Entry | Folder], gone: RemovedPaths):
    """A shard's keys, less those removed, with `changed` (sorted) put in; a change wins."""
    mine = [item for item in merged_items(part) if not gone.covers(item.path)]
    i = j = 0
    while i < len(mine) or j < len(changed):
        if j == len(changed) or (i < len(mine) and mine[i].path < changed[j].path):
            yield mine[i]
            i += 1
        else:
            if i < len(mine) and mine[i].path == changed[j].path:
                i += 1  # replaced
            yield changed[j]
            j += 1
