"""`artfs mount --metrics`: the daemon's own counters over HTTP, parsed with prometheus_client's
parser, rising as a reader reads through the kernel; `artfs stats MOUNT` prints them for a person."""

from __future__ import annotations

import os
import socket
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import run_artfs, write_tree
from mounts import mounter  # noqa: F401  (mounter is a fixture)

pytestmark = pytest.mark.mount


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_counters_rise_as_a_reader_reads_through_the_mount(local_store_url, tmp_path, mounter):
    data = os.urandom(3 << 20)
    src = write_tree(tmp_path / "src", {"big.bin": data, "small.txt": b"small\n"})
    run_artfs(
        ["put", src, "--name", "p/data", "--type", "dataset"], store=local_store_url, cache=str(tmp_path / "cli-cache")
    ).ok()
    port = free_port()
    m = mounter(local_store_url, "--metrics", f"127.0.0.1:{port}")
    before = scrape(port)
    with open(m.path("p/data/v0/big.bin"), "rb") as f:
        assert f.read() == data
    after = scrape(port)
    served = after[("artfs_bytes_served_total", ())] - before.get(("artfs_bytes_served_total", ()), 0)
    assert served >= len(data)
    reads = ("artfs_fuse_requests_total", (("op", "read"),))
    assert after[reads] > before.get(reads, 0)
    assert after[("artfs_bytes_fetched_total", ())] >= len(data), "fetched from the store"
    r = run_artfs(["stats", m.mp]).ok()
    assert "read" in r.stdout


def test_a_bad_metrics_address_is_one_line_and_no_mount(local_store_url, tmp_path):
    mp = tmp_path / "mnt"
    mp.mkdir()
    r = run_artfs(["mount", str(mp), "--metrics", "nonsense"], store=local_store_url, cache=str(tmp_path / "c"))
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not os.path.ismount(mp)


def flushes(port: int) -> float:
    return scrape(port).get(("artfs_fuse_requests_total", (("op", "flush"),)), 0.0)


@pytest.mark.parametrize("sync_on_close", [False, True])
def test_flush_is_sent_once_per_mount_unless_close_has_work(local_store_url, tmp_path, mounter, sync_on_close):
    """As ext4 (the default), close() has nothing to do: the first FLUSH is answered ENOSYS and
    the kernel sends no more; with --sync-on-close every close of a written file is a FLUSH."""
    src = write_tree(tmp_path / "src", {f"f{i}.txt": b"x" * i for i in range(10)})
    run_artfs(
        ["put", src, "--name", "p/data", "--type", "dataset"], store=local_store_url, cache=str(tmp_path / "cli-cache")
    ).ok()
    port = free_port()
    m = mounter(local_store_url, "--metrics", f"127.0.0.1:{port}", *(["--sync-on-close"] if sync_on_close else []))
    os.mkdir(m.path("p/data/drafts/d"))
    for i in range(10):
        with open(m.path("p/data/v0", f"f{i}.txt"), "rb") as f:
            assert f.read() == b"x" * i
        with open(m.path("p/data/drafts/d", f"new{i}.txt"), "wb") as f:
            f.write(b"new")
    assert flushes(port) == (20 if sync_on_close else 1)
    with open(m.path("p/data/drafts/d", "new3.txt"), "rb") as f:
        assert f.read() == b"new"
