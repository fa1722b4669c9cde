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
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_counters_rise_as_a_reader_reads_through_the_mount(local_store_url, tmp_path, mounter):
    data = os.urandom(3 << 20)
    src = write_tree(tmp_path / "src", {"big.bin": data, "small.txt": b"small\n"})
    run_artfs(["put", src, "--name", "p/data", "--type", "dataset"], store=local_store_url,
              cache=str(tmp_path / "cli-cache")).ok()
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
