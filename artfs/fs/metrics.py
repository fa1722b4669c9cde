"""The mount daemon's Prometheus metrics (`artfs mount --metrics HOST:PORT`).

Three sources, all read by one scrape:
  - FUSE requests, their latency and failures, and bytes served: the FUSE
    boundary calls `observe_request` once per request;
  - the store and the content cache, counted by wrapping the very objects the
    daemon built (`attach`): store GETs and bytes fetched, store errors, S3
    retries (attempts of the store's own retry policy), cache hits, misses and evictions;
  - gauges read at scrape time: cache bytes and bound, drafts on this host.
Names follow Prometheus conventions: `artfs_` prefix, `_total` counters,
`_seconds` and `_bytes` units. Nothing here imports pyfuse3.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from artfs.errors import ArtfsError, InvalidInput

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)
enabled = False  # set by serve(): the FUSE boundary skips observe_request when nobody scrapes

REQUESTS = Counter("artfs_fuse_requests", "FUSE requests answered, by operation", ["op"], registry=REGISTRY)
REQUEST_ERRORS = Counter(
    "artfs_fuse_request_errors", "FUSE requests answered with an error, by operation", ["op"], registry=REGISTRY
)
LATENCY = Histogram(
    "artfs_fuse_request_duration_seconds",
    "Time to answer a FUSE request, by operation",
    ["op"],
    buckets=(
        0.0001,
        0.00025,
        0.0005,
        0.001,
        0.0025,
        0.005,
        0.01,
        0.025,
        0.05,
        0.1,
        0.25,
        0.5,
        1.0,
        2.5,
        5.0,
        10.0,
        30.0,
    ),
    registry=REGISTRY,
)
BYTES_SERVED = Counter("artfs_bytes_served", "Bytes returned to readers by FUSE read requests", registry=REGISTRY)
STORE_GETS = Counter("artfs_store_gets", "GET requests to the object store for content and records", registry=REGISTRY)
BYTES_FETCHED = Counter("artfs_bytes_fetched", "Bytes read from the object store", registry=REGISTRY)
STORE_ERRORS = Counter("artfs_store_errors", "Object-store calls that failed (after any retries)", registry=REGISTRY)
STORE_RETRIES = Counter(
    "artfs_store_retries", "Object-store requests sent again after a failed attempt (S3)", registry=REGISTRY
)
CACHE_HITS = Counter("artfs_cache_hits", "Pieces found in the local content cache", registry=REGISTRY)
CACHE_MISSES = Counter(
    "artfs_cache_misses", "Pieces looked for in the local content cache and not found", registry=REGISTRY
)
CACHE_EVICTIONS = Counter(
    "artfs_cache_evictions", "Files evicted from the local content cache to keep its bound", registry=REGISTRY
)


def observe_request(op: str, seconds: float, failed: bool, result: Any = None) -> None:
    """One FUSE request answered: called by the boundary wrapper for every handler.
    `result`: what the handler returned (a read's bytes count as served)."""
    REQUESTS.labels(op).inc()
    LATENCY.labels(op).observe(seconds)
    if failed:
        REQUEST_ERRORS.labels(op).inc()
    elif op == "read" and isinstance(result, (bytes, bytearray, memoryview)):
        BYTES_SERVED.inc(len(result))


class _Gauges(Collector):
    """Values that are read, not counted: the cache's size and bound, drafts on this host."""

    def __init__(self) -> None:
        self.cache: Any = None
        self.drafts: Any = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self.cache is not None:
            yield GaugeMetricFamily("artfs_cache_size_bytes", "Bytes in the local content cache", value=self.cache.size)
            yield GaugeMetricFamily(
                "artfs_cache_limit_bytes", "Bound on the local content cache", value=self.cache.max_bytes
            )
        if self.drafts is not None:
            try:
                count = _count_drafts(self.drafts)
            except (ArtfsError, OSError) as e:
                log.debug("could not count drafts: %s", e)
            else:
                yield GaugeMetricFamily(
                    "artfs_drafts_open", "Drafts on this host not yet committed or discarded", value=count
                )


_GAUGES = _Gauges()
REGISTRY.register(_GAUGES)


def _count_drafts(drafts: Any) -> int:
    """Drafts of a DraftStore (`drafts.drafts` of the mount's DraftSet, or the store itself)."""
    from artfs.names import ArtifactName

    store = getattr(drafts, "drafts", drafts)
    return sum(
        len(store.names(ArtifactName(p, a))) for p in store.pending_projects() for a in store.pending_artifacts(p)
    )


def attach(objects: Any = None, cache: Any = None, drafts: Any = None) -> None:
    """Counts what the daemon's own store and cache objects do (call once, at start-up)."""
    if objects is not None:
        _wrap_store(objects)
    if cache is not None:
        _wrap_cache(cache)
        _GAUGES.cache = cache
    if drafts is not None:
        _GAUGES.drafts = drafts


def _failed(e: BaseException) -> bool:
    from artfs.errors import NotFound, PreconditionFailed

    return isinstance(e, (ArtfsError, OSError)) and not isinstance(e, (NotFound, PreconditionFailed))


def _wrap_store(objects: Any) -> None:
    get, get_parts = objects.get, objects.get_parts

    @functools.wraps(get)
    def counted_get(key: str, start: int = 0, end: int | None = None) -> bytes:
        STORE_GETS.inc()
        try:
            data = get(key, start, end)
        except BaseException as e:
            if _failed(e):
                STORE_ERRORS.inc()
            raise
        BYTES_FETCHED.inc(len(data))
        return data

    @functools.wraps(get_parts)
    def counted_parts(key: str, start: int, lengths: list[int]) -> Iterator[bytes]:
        STORE_GETS.inc()
        try:
            for part in get_parts(key, start, lengths):
                BYTES_FETCHED.inc(len(part))
                yield part
        except BaseException as e:
            if _failed(e):
                STORE_ERRORS.inc()
            raise

    objects.get, objects.get_parts = counted_get, counted_parts  # this instance only
    policy = getattr(objects, "retry", None)  # S3: the store's one retry policy (store/retry.py)
    if policy is not None and not isinstance(policy, _CountedRetries):
        objects.retry = _CountedRetries(policy)


class _CountedRetries:
    """The store's RetryPolicy, counting each attempt after a request's first as a retry."""

    def __init__(self, policy: Any):
        self._policy = policy

    def __getattr__(self, name: str) -> Any:  # attempts, deadline…: the policy's own
        return getattr(self._policy, name)

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        tries = 0

        def attempt(*a: Any, **k: Any) -> Any:
            nonlocal tries
            tries += 1
            if tries > 1:
                STORE_RETRIES.inc()
            return fn(*a, **k)

        return self._policy.call(attempt, *args, **kwargs)

    def tracker(self) -> Any:
        tracker = self._policy.tracker()
        again = tracker.again

        def counted_again(error: Any) -> None:
            again(error)  # raises when the policy is spent: then no retry follows
            STORE_RETRIES.inc()

        tracker.again = counted_again
        return tracker


def _wrap_cache(cache: Any) -> None:
    get, get_packed, evict = cache.get, cache.get_packed, cache._evict
    inside = threading.local()  # get_packed looks some files up with get: count them once

    @functools.wraps(get)
    def counted_get(digest: bytes, size: int) -> bytes | None:
        data = get(digest, size)
        if not getattr(inside, "packed", False):
            (CACHE_MISSES if data is None else CACHE_HITS).inc()
        return data

    @functools.wraps(get_packed)
    def counted_packed(pack_key: str, items: list[tuple[bytes, int, int]]) -> dict[bytes, bytes]:
        inside.packed = True
        try:
            found = get_packed(pack_key, items)
        finally:
            inside.packed = False
        CACHE_HITS.inc(len(found))
        CACHE_MISSES.inc(len(items) - len(found))
        return found

    lock = threading.Lock()

    @functools.wraps(evict)
    def counted_evict(extra: int = 0) -> None:
        # ContentCache keeps no eviction count of its own: the LRU table shrinks by what went.
        with lock:
            before = len(cache._lru)
            evict(extra)
            gone = before - len(cache._lru)
        if gone > 0:
            CACHE_EVICTIONS.inc(gone)

    cache.get, cache.get_packed, cache._evict = counted_get, counted_packed, counted_evict


def parse_address(text: str) -> tuple[str, int]:
    """'127.0.0.1:9101', '[::1]:9101', ':9101' (loopback) -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidInput(f"invalid metrics address {text!r}: use HOST:PORT, e.g. 127.0.0.1:9101")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def serve(address: str) -> tuple[str, int]:
    """Starts the /metrics endpoint in a daemon thread; (host, port) it listens on."""
    host, port = parse_address(address)
    try:
        server, _thread = start_http_server(port, addr=host, registry=REGISTRY)
    except OSError as e:
        raise InvalidInput(f"cannot serve metrics on {address}: {e.strerror or e}") from None
    bound = server.server_address
    global enabled
    enabled = True
    log.info("metrics at http://%s:%d/metrics", host, bound[1])
    return host, bound[1]
