"""Many hosts on one bucket (issue 17), at a size the suite can run: 8 mount daemons, each
with its own cache and mount point, on one SeaweedFS bucket, all committing through their
mounts at once and reading each other's versions. The bigger runs (32, 64 hosts) are in
scripts/bench/scale_bench.py; the figures in docs/benchmarks.md ("Scale")."""

from __future__ import annotations

import pytest
from conftest import fresh_s3_url
from hosts import run_hosts

REFRESH = 1.0


@pytest.mark.s3
def test_eight_hosts_commit_and_read_on_one_bucket(s3_test_bucket, tmp_path):
    report = run_hosts(fresh_s3_url(s3_test_bucket), str(tmp_path), hosts=8, commits=2, refresh=REFRESH, deadline=240)
    print(report.summary())
    assert report.errors == []
    assert len(report.commits) == 16
    # v0 (the seed) and one version per commit: no gap, no duplicate, none lost.
    assert report.versions == list(range(17)) and report.dense
    assert sorted(report.made) == list(range(1, 17))
    # Everyone saw every other host's commits, within the refresh interval and a second.
    assert report.unseen == 0 and len(report.freshness) == 16 * 7
    assert max(report.freshness) <= REFRESH + 1.0, sorted(report.freshness)[-5:]
    assert report.reads == 8 * 16
    assert len(report.rss_kib) == 8 and all(r > 0 for r in report.rss_kib)
