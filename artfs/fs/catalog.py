"""What the mount shows above version trees: projects, artifacts, versions, aliases.

A thread-safe view of the registry that is refreshed at most every `refresh`
seconds per listing. Called from worker threads only (it blocks on the store).
With `pin_aliases`, every artifact's aliases are read when the mount starts
(`pin()`) and never change: `latest` is the newest version made before then,
and an artifact made since has no other alias.
While the store is unreachable, listings seen before are served as they were.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

from artfs.errors import StoreUnavailable
from artfs.names import LATEST, ArtifactName
from artfs.store.registry import Registry, VersionRecord

log = logging.getLogger(__name__)

# A listing lives refresh × (1 - U(0, JITTER)): hosts that mounted and looked together (a job's
# start) drift apart instead of asking the bucket in lockstep forever (docs/scale.md).
JITTER = 0.2


def _run(future: Future, load) -> None:
    try:
        future.set_result(load())
    except BaseException as e:  # handed to whoever waits for the listing
        future.set_exception(e)


def bounded(fn, timeout: float | None, url: str):
    """`fn` made to give up after `timeout` seconds with StoreUnavailable (it runs in a daemon
    thread that is left to finish on its own): for loads a hung store could stall for long."""

    def call(*args):
        future: Future = Future()
        threading.Thread(
            target=_run, args=(future, functools.partial(fn, *args)), name="artfs-load", daemon=True
        ).start()
        try:
            return future.result(timeout=timeout)
        except FutureTimeout:
            raise StoreUnavailable(f"{url} did not answer within {timeout:g}s") from None

    return call


@dataclass
class ArtifactState:
    type: str | None
    versions: dict[int, VersionRecord]
    aliases: dict[str, int]  # including latest

    @property
    def newest(self) -> VersionRecord | None:
        return self.versions[max(self.versions)] if self.versions else None


class Catalog:
    def __init__(
        self, registry: Registry, refresh: float = 5.0, pin_aliases: bool = False, timeout: float | None = None
    ):
        self.registry = registry
        self.refresh = refresh
        self.pin_aliases = pin_aliases
        self.timeout = timeout  # a listing waits this long for the store, then shows the last one
        self._lock = threading.RLock()
        # Listings load in (daemon) threads of their own, one load per listing at a time, so a
        # hung store costs callers `timeout` (not the S3 client's retries) and few threads.
        self._loading: dict[tuple, Future] = {}
        self._cache: dict[tuple, tuple[float, object]] = {}
        self._took: dict[tuple, float] = {}  # how long each listing's last load took
        self._pinned: dict[ArtifactName, dict[str, int]] = {}
        self._outage = False
        self.started = time.time()

    def _cached(self, key: tuple, load):
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if hit and now - hit[0] < self.refresh:
                # Reloaded ahead of expiry by what the last load took, answered from the cache
                # meanwhile: a listing looked at often is then never older than `refresh`,
                # however slow the bucket (a busy bucket would otherwise add its load time).
                if now - hit[0] >= self.refresh - min(self._took.get(key, 0.0), self.refresh / 2):
                    self._load(key, load, now)
                return hit[1]
            future = self._load(key, load, now)
            if hit is not None and self._outage:
                return hit[1]  # known to be down: answer now; the load goes on in the background
        try:
            return future.result(timeout=self.timeout)
        except FutureTimeout:
            error = StoreUnavailable(f"{self.registry.store.url} did not answer within {self.timeout:g}s")
        except StoreUnavailable as e:
            error = e
        if hit is None:
            raise error
        # The store is down: keep showing what we last saw, so cached content stays reachable.
        if not self._outage:
            self._outage = True
            log.warning("%s; showing listings as last seen until the store is back", error)
        return hit[1]

    def _load(self, key: tuple, load, now: float) -> Future:
        """The listing's load in progress, started if none is (the caller holds the lock)."""
        future = self._loading.get(key)
        if future is None:
            future = self._loading[key] = Future()
            future.add_done_callback(functools.partial(self._loaded, key, now))
            threading.Thread(target=_run, args=(future, load), name="artfs-catalog", daemon=True).start()
        return future

    def _loaded(self, key: tuple, started: float, future: Future) -> None:
        with self._lock:
            if self._loading.get(key) is not future:
                return  # invalidated while loading: this result may predate the change
            del self._loading[key]
            if future.exception() is None:
                self._took[key] = time.monotonic() - started
                self._cache[key] = (started - self.refresh * random.uniform(0, JITTER), future.result())
                if self._outage:
                    self._outage = False
                    log.info("the store is reachable again")

    def invalidate(self, artifact: ArtifactName | None = None) -> None:
        with self._lock:
            if artifact is None:
                self._cache.clear()
                self._loading.clear()
            else:
                for key in (("artifact", artifact), ("artifacts", artifact.project)):
                    self._cache.pop(key, None)
                    self._loading.pop(key, None)

    def projects(self) -> list[str]:
        return self._cached(("projects",), self.registry.projects)

    def artifacts(self, project: str) -> list[str]:
        return self._cached(("artifacts", project), lambda: self.registry.artifacts(project))

    def pin(self) -> None:
        """With pin_aliases: reads every artifact's aliases now (one GET each, in parallel),
        so an alias moved after the mount started is not seen, whenever it is first looked at."""
        if self.pin_aliases:
            self._pinned = bounded(self._all_aliases, self.timeout, self.registry.store.url)()

    def _all_aliases(self) -> dict[ArtifactName, dict[str, int]]:
        names = [ArtifactName(p, a) for p in self.registry.projects() for a in self.registry.artifacts(p)]
        with ThreadPoolExecutor(16) as pool:
            return dict(zip(names, pool.map(self.registry.aliases, names)))

    def artifact(self, a: ArtifactName) -> ArtifactState:
        return self._cached(("artifact", a), lambda: self._load_artifact(a))

    def _load_artifact(self, a: ArtifactName) -> ArtifactState:
        type_ = self.registry.artifact_type(a)
        versions = {r.number: r for r in self.registry.versions(a)} if type_ else {}
        if self.pin_aliases:
            # As they were when the mount started; `latest` is the newest version made before.
            aliases = {k: v for k, v in self._pinned.get(a, {}).items() if v in versions}
            before = [n for n, r in versions.items() if r.created <= self.started]
            if before:
                aliases[LATEST] = max(before)
        else:
            aliases = {k: v for k, v in self.registry.aliases(a).items() if v in versions} if versions else {}
            if versions:
                aliases[LATEST] = max(versions)
        return ArtifactState(type_, versions, aliases)
