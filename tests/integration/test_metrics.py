"""The daemon's Prometheus metrics without a kernel: the counters wired to a real store and a
real content cache (as `artfs mount --metrics` wires the daemon's own), served over HTTP,
scraped and parsed with prometheus_client's own parser; `artfs stats` prints them."""

from __future__ import annotations

import os
import socket
import urllib.request

import pytest
from conftest import run_artfs, write_tree
from prometheus_client.parser import text_string_to_metric_families

from artfs.api.fsspec_read import VerifiedReader
from artfs.api.store import Store
from artfs.content.cache import ContentCache
from artfs.errors import ArtfsError
from artfs.fs import metrics
from artfs.store.location import open_store


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(scraped, name: str, **labels) -> float:
    return scraped.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture(scope="module")
def endpoint():
    port = free_port()
    assert metrics.serve(f"127.0.0.1:{port}") == ("127.0.0.1", port)
    return port


def test_reads_move_store_and_cache_counters(artfs, store_url, tmp_path, endpoint):
    data = os.urandom(3_000_000)  # three distinct chunks
    write_tree(tmp_path / "src", {"big.bin": data, "small.txt": "hello\n"})
    artfs("put", str(tmp_path / "src"), "--name", "p/m", "--type", "dataset").ok()
    store = Store(store_url, artfs.cache)
    objects = open_store(store_url)
    cache = ContentCache(str(tmp_path / "metrics-cache"), 1 << 30)
    metrics.attach(objects=objects, cache=cache)
    m = store.manifest(store.resolve("p/m:v0"))
    big, small = m.get("big.bin"), m.get("small.txt")

    before = scrape(endpoint)
    reader = VerifiedReader(objects, cache)
    assert reader.read(big, 0, big.size) == data
    assert reader.read(small, 0, small.size) == b"hello\n"
    cold = scrape(endpoint)
    assert value(cold, "artfs_store_gets_total") >= value(before, "artfs_store_gets_total") + 2
    assert value(cold, "artfs_bytes_fetched_total") - value(before, "artfs_bytes_fetched_total") >= big.size
    assert value(cold, "artfs_cache_misses_total") >= value(before, "artfs_cache_misses_total") + 4  # 3 chunks, 1 file
    assert value(cold, "artfs_cache_limit_bytes") == 1 << 30

    cache.drain()
    again = VerifiedReader(objects, cache)  # its own memory is empty: the disk cache answers
    assert again.read(big, 0, big.size) == data
    warm = scrape(endpoint)
    assert value(warm, "artfs_cache_hits_total") >= value(cold, "artfs_cache_hits_total") + 3
    assert value(warm, "artfs_store_gets_total") == value(cold, "artfs_store_gets_total")
    assert value(warm, "artfs_cache_size_bytes") >= big.size


def test_fuse_requests_latency_and_bytes_served(endpoint):
    before = scrape(endpoint)
    metrics.observe_request("read", 0.003, False, b"x" * 4096)
    metrics.observe_request("read", 0.001, False, b"y" * 10)
    metrics.observe_request("lookup", 0.0002, True)
    after = scrape(endpoint)
    assert (
        value(after, "artfs_fuse_requests_total", op="read")
        == value(before, "artfs_fuse_requests_total", op="read") + 2
    )
    assert (
        value(after, "artfs_fuse_request_errors_total", op="lookup")
        == value(before, "artfs_fuse_request_errors_total", op="lookup") + 1
    )
    assert value(after, "artfs_bytes_served_total") == value(before, "artfs_bytes_served_total") + 4106
    assert (
        value(after, "artfs_fuse_request_duration_seconds_count", op="read")
        == value(before, "artfs_fuse_request_duration_seconds_count", op="read") + 2
    )
    assert value(after, "artfs_fuse_request_duration_seconds_bucket", op="read", le="0.005") >= 2
    assert all(name.startswith("artfs_") for name, _ in after)


def test_stats_prints_them_for_a_person(endpoint):
    metrics.observe_request("getattr", 0.0005, False)
    r = run_artfs(["stats", "--address", f"127.0.0.1:{endpoint}"]).ok()
    assert "FUSE requests" in r.out and "getattr" in r.out and "Bytes served" in r.out
    assert "Cache" in r.out and "hits" in r.out and "Store" in r.out
    raw = run_artfs(["stats", "--address", f"127.0.0.1:{endpoint}", "--raw"]).ok()
    assert "artfs_fuse_requests_total" in raw.out


def test_stats_bad_input_is_one_line(tmp_path):
    run_artfs(["stats", str(tmp_path)]).fails("not an artfs mount")
    run_artfs(["stats"]).fails("MOUNTPOINT")
    run_artfs(["stats", "--address", "nonsense"]).fails("invalid metrics address")
    run_artfs(["stats", "--address", f"127.0.0.1:{free_port()}"]).fails("no metrics at")


def test_a_small_cache_bound_counts_evictions(artfs, tmp_path, endpoint):
    data = os.urandom(3_000_000)
    write_tree(tmp_path / "src", {"big.bin": data})
    artfs("put", str(tmp_path / "src"), "--name", "p/e", "--type", "dataset").ok()
    store = Store(artfs.store, artfs.cache)
    objects = open_store(artfs.store)
    cache = ContentCache(str(tmp_path / "small-cache"), 1 << 20)  # room for one 1 MiB chunk
    metrics.attach(objects=objects, cache=cache)
    before = scrape(endpoint)
    big = store.manifest(store.resolve("p/e:v0")).get("big.bin")
    assert VerifiedReader(objects, cache).read(big, 0, big.size) == data
    cache.drain()
    after = scrape(endpoint)
    assert value(after, "artfs_cache_evictions_total") >= value(before, "artfs_cache_evictions_total") + 1
    assert value(after, "artfs_cache_size_bytes") <= 1 << 20


def test_an_unreachable_store_counts_retries_and_errors(s3_endpoint, tmp_path, endpoint, monkeypatch):
    from mounts import RestartableSeaweedFS

    weed = RestartableSeaweedFS().start()
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", weed.endpoint)
        monkeypatch.setenv("ARTFS_S3_ATTEMPTS", "3")
        monkeypatch.setenv("ARTFS_S3_TIMEOUT", "2")
        monkeypatch.setenv("ARTFS_RETRY_WAIT", "0.05")
        from conftest import make_bucket

        url = f"s3://{make_bucket(weed.endpoint)}/reg"
        write_tree(tmp_path / "src", {"a.bin": os.urandom(200_000)})
        run_artfs(
            ["put", str(tmp_path / "src"), "--name", "p/r", "--type", "dataset"],
            store=url,
            env={"AWS_ENDPOINT_URL": weed.endpoint},
        ).ok()
        store = Store(url, str(tmp_path / "cache"))
        entry = store.manifest(store.resolve("p/r:v0")).get("a.bin")
        objects = open_store(url)
        metrics.attach(objects=objects)
        before = scrape(endpoint)
        weed.kill()
        with pytest.raises(ArtfsError):  # the store's own error, after its retries
            VerifiedReader(objects, ContentCache(str(tmp_path / "cache"), 1 << 30)).read(entry, 0, entry.size)
        after = scrape(endpoint)
        assert value(after, "artfs_store_retries_total") >= value(before, "artfs_store_retries_total") + 2
        assert value(after, "artfs_store_errors_total") >= value(before, "artfs_store_errors_total") + 1
    finally:
        weed.stop()
