"""What the mount shows above version trees: projects, artifacts, versions, aliases.

A thread-safe view of the registry that is refreshed at most every `refresh`
seconds per listing. Called from worker threads only (it blocks on the store).
With `pin_aliases`, each artifact's aliases are read once and never change.
While the store is unreachable, listings seen before are served as they were.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from ..errors import StoreUnavailable
from ..names import LATEST, ArtifactName
from ..registry import Registry, VersionRecord

log = logging.getLogger(__name__)


@dataclass
class ArtifactState:
    type: str | None
    versions: dict[int, VersionRecord]
    aliases: dict[str, int]  # including latest

    @property
    def newest(self) -> VersionRecord | None:
        return self.versions[max(self.versions)] if self.versions else None


class Catalog:
    def __init__(self, registry: Registry, refresh: float = 5.0, pin_aliases: bool = False):
        self.registry = registry
        self.refresh = refresh
        self.pin_aliases = pin_aliases
        self._lock = threading.Lock()
        self._cache: dict[tuple, tuple[float, object]] = {}
        self._pinned: dict[ArtifactName, dict[str, int]] = {}
        self._outage = False
        self.started = time.time()

    def _cached(self, key: tuple, load):
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
        if hit and now - hit[0] < self.refresh:
            return hit[1]
        try:
            value = load()
        except StoreUnavailable as e:
            if hit is None:
                raise
            # The store is down: keep showing what we last saw, so cached content stays reachable.
            if not self._outage:
                self._outage = True
                log.warning("%s; showing listings as last seen until the store is back", e)
            return hit[1]
        if self._outage:
            self._outage = False
            log.info("the store is reachable again")
        with self._lock:
            self._cache[key] = (now, value)
        return value

    def invalidate(self, artifact: ArtifactName | None = None) -> None:
        with self._lock:
            if artifact is None:
                self._cache.clear()
            else:
                self._cache.pop(("artifact", artifact), None)
                self._cache.pop(("artifacts", artifact.project), None)

    def projects(self) -> list[str]:
        return self._cached(("projects",), self.registry.projects)

    def artifacts(self, project: str) -> list[str]:
        return self._cached(("artifacts", project), lambda: self.registry.artifacts(project))

    def artifact(self, a: ArtifactName) -> ArtifactState:
        return self._cached(("artifact", a), lambda: self._load_artifact(a))

    def _load_artifact(self, a: ArtifactName) -> ArtifactState:
        type_ = self.registry.artifact_type(a)
        versions = {r.number: r for r in self.registry.versions(a)} if type_ else {}
        if self.pin_aliases and a in self._pinned:
            aliases = self._pinned[a]
        else:
            aliases = {k: v for k, v in self.registry.aliases(a).items() if v in versions} if versions else {}
            if versions:
                aliases[LATEST] = max(versions)
            if self.pin_aliases:
                # Pinned at mount time: a version committed since (before this first look) is
                # not `latest`. Other aliases are pinned as first seen.
                before = [n for n, r in versions.items() if r.created <= self.started]
                if before:
                    aliases[LATEST] = max(before)
                self._pinned[a] = aliases
        return ArtifactState(type_, versions, aliases)
