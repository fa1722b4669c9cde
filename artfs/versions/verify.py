"""Checking a version's stored bytes against its digests, from the store itself (not a cache).

Every stored entry's pieces are read back in ranged GETs (small files of one
pack together) and hashed; each damaged file is named with the object that
holds it. Objects found damaged are marked in the store (`damaged/<key>`, store/keys.py), so
a later publish of the same bytes uploads them again instead of trusting them.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator

from artfs.content.fetch import Piece, group, pieces
from artfs.digest import digest_bytes
from artfs.errors import ArtfsError, CorruptRecord, NotFound
from artfs.store.backends.base import ObjectStore
from artfs.store.keys import damaged_marker
from artfs.store.manifest import Manifest
from artfs.store.shards import AnyManifest, ShardedManifest


@dataclass(frozen=True)
class Damage:
    path: str
    key: str  # the stored object holding the bad bytes
    why: str


@dataclass
class Report:
    files: int  # stored files checked
    references: int  # entries whose bytes live at their source (not checked here)
    damaged: list[Damage]
    unlisted: int = 0  # files of damaged manifest shards (each one Damage, not a Damage a file)


def verify_manifest(
    objects: ObjectStore, manifest: AnyManifest, jobs: int = 8, progress: Callable[[int], None] | None = None
) -> Report:
    report = Report(0, 0, [])
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for part in _readable_parts(manifest, report):  # a shard at a time: bounded memory
            _verify_part(objects, part, pool, progress, report)
    damaged = report.damaged
    # (A damaged shard is not marked: a publish stores a manifest object only if it is missing.)
    for key in sorted({d.key for d in damaged if not d.key.startswith("manifests/")}):
        try:
            objects.put(damaged_marker(key), b"")
        except ArtfsError:
            pass  # the report still names it; marking is what lets a later publish repair it
    damaged.sort(key=lambda d: d.path)
    return report


def _readable_parts(manifest: AnyManifest, report: Report) -> Iterator[Manifest]:
    """The manifest's parts; a shard that cannot be read is reported (with the range of paths
    it lists) and the others are still checked."""
    if not isinstance(manifest, ShardedManifest):
        yield from (part for _, part in manifest.parts())
        return
    for k, info in enumerate(manifest.shards):
        try:
            part = manifest.shard(k)
        except (CorruptRecord, NotFound) as e:
            report.files += info.files
            report.unlisted += info.files
            why = f"the manifest shard listing {info.files} file(s) cannot be read ({e})"
            paths = info.lo if info.lo == info.hi else f"{info.lo} … {info.hi}"
            report.damaged.append(Damage(paths, f"manifests/{info.digest.hex()}", why))
            continue
        yield part


def _verify_part(
    objects: ObjectStore,
    part: Manifest,
    pool: ThreadPoolExecutor,
    progress: Callable[[int], None] | None,
    report: Report,
) -> None:
    owners: dict[Piece, list[str]] = {}
    for entry in part:
        if entry.ref is not None:
            report.references += 1
            continue
        report.files += 1
        for p in pieces(entry):
            owners.setdefault(p, []).append(entry.path)
    runs = list(group(owners))
    # Pieces of size 0 are left out of runs: an empty file is whole by definition.

    def check(run: list[Piece]) -> list[Damage]:
        found = []
        start, end = run[0].offset, max(p.end for p in run)
        try:
            blob = objects.get(run[0].key, start, end)
        except NotFound:
            return [Damage(path, run[0].key, "the object is missing") for p in run for path in owners[p]]
        for p in run:
            data = blob[p.offset - start : p.end - start]
            if len(data) != p.size:
                why = f"the object ends early ({len(blob)} of {end - start} bytes)"
            elif digest_bytes(data) != p.digest:
                why = f"bytes {p.offset}-{p.end} do not match their blake3 {p.digest.hex()[:16]}…"
            else:
                continue
            found += [Damage(path, p.key, why) for path in owners[p]]
        if progress is not None:
            progress(end - start)
        return found

    report.damaged += [d for found in pool.map(check, runs) for d in found]
