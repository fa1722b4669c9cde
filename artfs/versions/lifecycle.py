"""Deleting versions and collecting garbage without ever losing what someone needs.

The protocol (docs/store-format.md, "Garbage collection") in short:
- Every commit, upsert and draft creation holds a *commit marker*
  `locks/commits/<id>.json` while it runs: written first, deleted last.
- GC takes the *GC lock* `locks/gc.json` (create-if-absent), then refuses to
  delete anything while any fresh commit marker exists; a committer that
  finds a fresh GC lock after writing its marker steps back and waits. Both
  sides write before they look, so with a strongly consistent store at least
  one of them sees the other: a commit never reuses content GC is deleting.
- Live content is everything reachable from a non-deleted version, a pending
  distributed part, or a *hold* (`holds/<id>.json`: the base manifest of a
  draft on some host). Unreachable objects are deleted only when older than
  the grace period too, so an upload whose marker was lost is still safe.
- Markers and the GC lock are re-written every HEARTBEAT seconds while held,
  so a long upload or a long GC is never mistaken for a dead one; only a
  marker not re-written for STALE_COMMIT (a lock for STALE_GC_LOCK) is
  ignored (broken), and the GC lock is broken and released only by
  compare-and-swap on its ETag, so two GCs never both hold it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field

from artfs.errors import Conflict, CorruptRecord, InvalidInput, NotFound, PreconditionFailed
from artfs.store.manifest import OBJECT
from artfs.store.shards import ShardedManifest
from artfs.names import ArtifactName
from artfs.store.registry import Registry, VersionRecord, manifest_key
from artfs.store.backends.base import ObjectStore

log = logging.getLogger(__name__)

GC_LOCK = "locks/gc.json"
COMMITS = "locks/commits/"
HOLDS = "holds/"
PARTS = "parts/"  # pending distributed versions; see distributed.py
STALE_COMMIT = 6 * 3600.0  # a commit marker older than this belongs to a dead process
STALE_GC_LOCK = 3600.0
GC_WAIT = 60.0
HEARTBEAT = 300.0  # a held marker or gc lock is re-written this often


def _marker(**extra) -> bytes:
    return json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "time": time.time(), **extra}).encode()


def _fresh(objects: ObjectStore, key: str, max_age: float) -> bool:
    info = objects.head(key)
    return info is not None and time.time() - info.mtime < max_age


class _Heartbeat:
    """Re-writes a held marker every HEARTBEAT seconds (by compare-and-swap when `etag` is
    given; `lost` turns true if someone else replaced or removed it meanwhile)."""

    def __init__(self, objects: ObjectStore, key: str, etag: str | None = None):
        self.objects, self.key, self.etag = objects, key, etag
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="artfs-heartbeat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT):
            try:
                if self.etag is None:
                    self.objects.put(self.key, _marker())
                else:
                    self.etag = self.objects.put(self.key, _marker(), if_match=self.etag)
            except PreconditionFailed:
                self.lost = True
                return
            except Exception as e:  # retried at the next beat; staleness takes hours
                log.warning("could not refresh %s: %s", self.key, e)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@contextmanager
def commit_guard(objects: ObjectStore, wait: float = GC_WAIT):
    """Held while content is uploaded and a record points at it (see the module doc)."""
    key = f"{COMMITS}{uuid.uuid4().hex}.json"
    deadline = time.monotonic() + wait
    while True:
        objects.put(key, _marker())
        if not _fresh(objects, GC_LOCK, STALE_GC_LOCK):
            break
        objects.delete(key)
        if time.monotonic() > deadline:
            raise Conflict("a garbage collection is running on this store; try again when it has finished")
        time.sleep(1.0)
    beat = _Heartbeat(objects, key)
    failed = True
    try:
        yield
        failed = False
    finally:
        beat.stop()
        try:
            objects.delete(key)
        except Exception as e:  # a leftover marker only delays GC until it is stale
            # Under a commit that failed (the store went away) its own error is the one line.
            log.log(logging.DEBUG if failed else logging.WARNING, "could not remove commit marker %s: %s", key, e)


def live_base(reg: Registry, base: VersionRecord | None) -> VersionRecord | None:
    """`base` if it is still a live version (call under commit_guard: then gc cannot collect it
    before the commit is done), else None: a deleted base's content may already be collected."""
    if base is None:
        return None
    try:
        return reg.version(base.artifact, base.number)
    except NotFound:
        return None


def check_carried(objects: ObjectStore, base: VersionRecord | None, carried) -> None:
    """Under commit_guard, when `base` (whose files `carried` keeps) was deleted: every stored
    object those entries need must still exist, else the commit fails instead of making a
    version whose bytes are missing. (A draft's hold keeps them; a Python draft has none.)"""
    from artfs.store.keys import object_key, pack_key

    keys = set()
    for e in carried:
        if e.pack is not None:
            keys.add(pack_key(e.pack))
        elif e.ref is None and e.digest:
            keys.update(object_key(d) for d in e.object_digests())  # the blocks of a file stored so
    for key in sorted(keys):
        if not objects.exists(key):
            raise NotFound(
                f"{base} was deleted and its files were collected ({key} is gone): add those files again to commit them"
            )


# -- holds: drafts keep their base content alive --------------------------------------
def add_hold(objects: ObjectStore, manifest: str, label: str) -> str:
    key = f"{HOLDS}{uuid.uuid4().hex}.json"
    objects.put(key, _marker(manifest=manifest, label=label))
    return key


def release_hold(objects: ObjectStore, key: str | None) -> None:
    if key and key.startswith(HOLDS):
        objects.delete(key)


# -- deleting versions -----------------------------------------------------------------------
def delete_version(reg: Registry, rec: VersionRecord, force: bool = False) -> VersionRecord:
    """Tombstones a version (its number is never reused) and drops the aliases naming it."""
    a = rec.artifact
    aliases = [k for k, v in reg.aliases(a).items() if v == rec.number]
    if aliases and not force:
        raise Conflict(f"{rec} has aliases {', '.join(aliases)}: remove them first or use --force")
    if not force and [r.number for r in reg.versions(a)] == [rec.number]:
        raise Conflict(f"{rec} is the only version of {a}: use --force to delete it anyway")
    for alias in aliases:
        try:
            reg.remove_alias(a, alias, rec.number)
        except NotFound:
            pass  # moved or removed meanwhile

    def tombstone(r: VersionRecord) -> VersionRecord:
        r.deleted = True
        return r

    return reg.update_version(rec, tombstone)


def prune_plan(reg: Registry, a: ArtifactName, keep: int) -> list[VersionRecord]:
    """Versions without aliases (latest counts as one), oldest first, sparing the newest `keep`."""
    if keep < 0:
        raise InvalidInput("--keep must be 0 or more")
    versions = reg.versions(a)
    if not versions and reg.artifact_type(a) is None:
        raise NotFound(f"artifact {a} does not exist")
    named = set(reg.aliases(a).values())
    if versions:
        named.add(versions[-1].number)  # latest
    spare = {r.number for r in versions[-keep:]} if keep else set()
    return [r for r in versions if r.number not in named and r.number not in spare]


# -- garbage collection ---------------------------------------------------------------------------
@dataclass
class GcReport:
    live_manifests: int = 0
    deleted: list[tuple[str, int]] = field(default_factory=list)  # key, size
    kept_young: int = 0
    aborted: str = ""

    @property
    def bytes_freed(self) -> int:
        return sum(s for _, s in self.deleted)


def live_manifests(reg: Registry) -> set[str]:
    objects = reg.store
    live: set[str] = set()
    for p in reg.projects():
        for name in reg.artifacts(p):
            for r in reg.versions(ArtifactName(p, name)):
                live.add(r.manifest)
    for info in objects.list(HOLDS):
        live |= _manifests_in(objects, info.key)
    for info in objects.list(PARTS):
        if info.key.endswith(".json"):
            live |= _manifests_in(objects, info.key)
    return live


def _manifests_in(objects: ObjectStore, key: str) -> set[str]:
    try:
        doc = json.loads(objects.get(key))
    except NotFound:
        return set()  # released meanwhile
    except ValueError:  # what it holds is unknown: deleting anything could lose it
        raise CorruptRecord(f"corrupt record {key}: gc cannot tell what it keeps alive; nothing was deleted") from None
    if not isinstance(doc, dict):
        raise CorruptRecord(f"corrupt record {key}: gc cannot tell what it keeps alive; nothing was deleted")
    return {m for m in (doc.get("manifest"), *doc.get("manifests", [])) if isinstance(m, str) and len(m) == 64}


def collect(reg: Registry, grace: float = 3600.0, dry_run: bool = False, wait: float = GC_WAIT) -> GcReport:
    objects = reg.store
    report = GcReport()
    if dry_run:
        return _sweep(reg, grace, report, delete=False)
    beat = _Heartbeat(objects, GC_LOCK, _take_gc_lock(objects))
    try:
        deadline = time.monotonic() + wait
        while _fresh_commits(objects):
            if time.monotonic() > deadline:
                report.aborted = "commits are in flight on this store; nothing was deleted (try again later)"
                return report
            time.sleep(1.0)
        return _sweep(reg, grace, report, delete=True, lost=lambda: beat.lost)
    finally:
        beat.stop()
        try:
            objects.delete(GC_LOCK, if_match=beat.etag)  # only if it is still ours
        except PreconditionFailed:
            log.warning("the gc lock was taken over by another gc before this one finished")


def _take_gc_lock(objects: ObjectStore) -> str:
    """Creates the gc lock and returns its ETag; breaks a stale one (by compare-and-swap)."""
    busy = Conflict("another garbage collection is running on this store")
    try:
        return objects.put(GC_LOCK, _marker(), if_none_match=True)
    except PreconditionFailed:
        info = objects.head(GC_LOCK)
        if info is not None and time.time() - info.mtime < STALE_GC_LOCK:
            raise busy from None
        try:
            if info is not None:
                objects.delete(GC_LOCK, if_match=info.etag)  # left by a dead gc (unless just replaced)
            return objects.put(GC_LOCK, _marker(), if_none_match=True)
        except PreconditionFailed:
            raise busy from None


def _fresh_commits(objects: ObjectStore) -> bool:
    now = time.time()
    return any(now - i.mtime < STALE_COMMIT for i in objects.list(COMMITS))


def _sweep(reg: Registry, grace: float, report: GcReport, delete: bool, lost=lambda: False) -> GcReport:
    from artfs.store.keys import index_key, object_key, pack_key, pieces_key

    objects = reg.store
    manifests = live_manifests(reg)
    report.live_manifests = len(manifests)
    live = {manifest_key(m) for m in manifests}
    for m in manifests:
        whole = reg.manifest_by_digest(m)
        if isinstance(whole, ShardedManifest):  # its shards are manifests too
            live.update(manifest_key(s.digest.hex()) for s in whole.shards)
        for _, man in whole.parts():
            for pack_id in man.pack_ids:
                live.add(pack_key(pack_id))
                live.add(index_key(pack_id))
            digests = man.digests
            for i, where in enumerate(man.packs):
                if where == OBJECT:
                    digest = digests[i * 32 : (i + 1) * 32]
                    live.add(object_key(digest))
                    live.add(pieces_key(digest))
            for b in man.blocks.values():  # files stored as blocks: each block is an object
                live.update(object_key(b[k : k + 32]) for k in range(0, len(b), 32))
    now = time.time()
    # Index objects go before their packs, so an index never names a missing pack.
    for prefix in ("manifests/", "index/", "packs/", "pieces/", "objects/"):
        for info in objects.list(prefix):
            if info.key in live:
                continue
            if now - info.mtime < grace:
                report.kept_young += 1
                continue
            if delete and lost():
                report.aborted = "the gc lock was taken over (this gc was stalled too long); stopped deleting"
                return report
            report.deleted.append((info.key, info.size))
            if delete:
                objects.delete(info.key)
    return report
