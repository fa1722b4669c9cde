"""The mount's drafts: which exist, opening them, making them with mkdir, committing.

One mount at a time owns the drafts of a cache folder (an flock on
CACHE/drafts/.lock); a second mount sharing the cache shows drafts but
refuses to change them, with a log line saying why.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import threading
import time

from artfs.api.store import Published, Store
from artfs.digest import digest_bytes
from artfs.drafts.draft import Draft
from artfs.drafts.store import DraftStore
from artfs.errors import FsError, StoreUnavailable
from artfs.fs.catalog import Catalog, bounded
from artfs.names import ArtifactName
from artfs.store.manifest import Manifest
from artfs.store.registry import VersionRecord
from artfs.versions.distributed import Distributed

log = logging.getLogger(__name__)

PENDING = -1  # the version number shown for a distributed version not yet finished


class DraftSet:
    def __init__(self, store: Store, catalog: Catalog, durable: bool = False):
        self.store = store
        self.catalog = catalog
        self.drafts = DraftStore(store.cache_dir, durable)
        self._open: dict[tuple[ArtifactName, str], Draft] = {}
        self._pending: dict[ArtifactName, tuple[float, dict]] = {}
        self._lock = threading.Lock()
        self._lockfile = open(os.path.join(self.drafts.root, ".lock"), "a")
        try:
            fcntl.flock(self._lockfile, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.writable = True
        except OSError:
            self.writable = False
            log.warning("another mount owns the drafts in %s: drafts are read-only here", self.drafts.root)

    def check_writable(self) -> None:
        if not self.writable:
            raise FsError(errno.EROFS, "drafts of this cache are owned by another mount")

    def names(self, a: ArtifactName) -> list[str]:
        return self.drafts.names(a)

    def pending(self, a: ArtifactName) -> dict[str, tuple[VersionRecord, Manifest]]:
        """Distributed versions still being built, as read-only trees (refreshed like listings)."""
        now = time.monotonic()
        with self._lock:
            hit = self._pending.get(a)
        if hit and now - hit[0] < self.catalog.refresh:
            return hit[1]
        try:  # within --timeout, as listings: the drafts folder lists while the store is away
            out = bounded(self._load_pending, self.catalog.timeout, self.store.url)(a)
        except StoreUnavailable as e:
            log.debug("distributed versions of %s as last seen: %s", a, e)
            return hit[1] if hit else {}
        with self._lock:
            self._pending[a] = (now, out)
        return out

    def _load_pending(self, a: ArtifactName) -> dict[str, tuple[VersionRecord, Manifest]]:
        dist = Distributed(self.store)
        out = {}
        for pid in dist.pending_ids(a):
            merged = dist.merged(a, pid)
            identity = digest_bytes("\n".join(merged.parts).encode()).hex()
            rec = VersionRecord(
                artifact=a,
                number=PENDING,
                manifest=identity,
                type="",
                created=time.time(),
                size=merged.manifest.total_size,
                files=len(merged.manifest),
                description=f"distributed version {pid!r}, not finished",
            )
            out[pid] = (rec, merged.manifest)
        return out

    def get(self, a: ArtifactName, name: str) -> Draft:
        with self._lock:
            d = self._open.get((a, name))
        if d is None:
            # The owner caches the namespace (only it changes the draft, but for `artfs ref
            # add`, which announces its changes); a read-only viewer would see it go stale.
            d = self.drafts.open(a, name, self.store.registry.manifest_by_digest, cache_namespace=self.writable)
            with self._lock:
                d = self._open.setdefault((a, name), d)
        return d

    def create(self, a: ArtifactName, name: str) -> Draft:
        """mkdir in drafts/: a draft of `latest`, or an empty one for a new artifact."""
        self.check_writable()
        state = self.catalog.artifact(a)
        base = state.newest
        self.store.create_draft(self.drafts, a, name, base, state.type)
        return self.get(a, name)

    def discard(self, a: ArtifactName, name: str) -> None:
        self.check_writable()
        with self._lock:
            d = self._open.pop((a, name), None)
        if d is not None:
            d.close()
        # Deleting the files goes on after this returns (a commit answers sooner).
        self.store.discard_draft(self.drafts, a, name, background=True)

    def commit(self, a: ArtifactName, name: str, **options) -> Published:
        self.check_writable()
        draft = self.get(a, name)
        result = self.store.commit_draft(draft, **options)
        self.discard(a, name)
        self.catalog.invalidate(a)
        log.info("committed draft %s as %s", draft.info, result.version)
        return result

    def close(self) -> None:
        with self._lock:
            for d in self._open.values():
                d.close()
            self._open.clear()
