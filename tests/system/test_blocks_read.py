"""Files stored as blocks read through the mount like any other: sequentially, and by random
reads that fall in one block or straddle two (each verified). Local store."""

from __future__ import annotations

import os
import random

import pytest
from conftest import run_artfs
from drafts_common import shared_mounter, unique  # noqa: F401  (shared_mounter is a fixture)
from mounts import wait_for

pytestmark = pytest.mark.mount

MiB = 1 << 20


@pytest.fixture(scope="module")
def env(shared_mounter, tmp_path_factory):  # noqa: F811
    store = str(tmp_path_factory.mktemp("blocks") / "store")
    return store, shared_mounter(store, "--refresh", "0.3")


def test_a_file_stored_as_blocks_reads_back_whole_and_at_random(env, tmp_path):
    from artfs import Store
    from artfs.names import parse_artifact_name

    store, m = env
    artifact = f"{unique('p')}/a"
    data = random.Random(7).randbytes(40 * MiB + 12345)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "big.bin").write_bytes(data)
    run_artfs(["put", str(tmp_path / "src"), "--name", artifact, "--type", "model"], store=store, cache=m.cache).ok()
    rec = Store(store, str(tmp_path / "c")).resolve(artifact)
    assert Store(store, str(tmp_path / "c")).manifest(rec).get("big.bin").blocks, "stored as blocks"
    assert parse_artifact_name(artifact)
    wait_for(lambda: os.path.isdir(m.path(artifact, "v0")), 10, "v0 in the mount")
    path = m.path(artifact, "v0", "big.bin")
    rnd = random.Random(1)
    with open(path, "rb", buffering=0) as f:
        for start in [16 * MiB - 100, 32 * MiB - 4096, 5, 40 * MiB] + [rnd.randrange(len(data)) for _ in range(20)]:
            assert os.pread(f.fileno(), 5000, start) == data[start : start + 5000], start
    with open(path, "rb") as f:
        assert f.read() == data
