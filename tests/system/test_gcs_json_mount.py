"""A gs:// reference (GCS JSON API, fake-gcs-server on loopback) read through a real mount:
lazily, by range, pinned."""

from __future__ import annotations

import os
import re

import pytest
from gcs_server import gcs_emulator, gcs_env  # noqa: F401  (fixtures)
from mounts import mounter  # noqa: F401  (fixture)

import artfs

MiB = 1 << 20
GS_READ = re.compile(r"gs read (\S+) bytes=(\d+)-(\d*)")


@pytest.mark.mount
def test_mount_reads_a_gs_reference_by_range(gcs_env, mounter, local_store_url, cache_dir):  # noqa: F811
    bucket = gcs_env.bucket(versioned=True)
    data = os.urandom(24 * MiB + 5)
    gcs_env.put(bucket, "big/blob.bin", data)
    art = artfs.Artifact("demo/gcsmnt", "dataset")
    art.add_reference(f"gs://{bucket}/big/blob.bin")
    artfs.Store(local_store_url, cache_dir).log_artifact(art)
    gcs_env.put(bucket, "big/blob.bin", b"overwritten")  # the pinned generation is still served

    m = mounter(local_store_url)
    path = m.path("demo", "gcsmnt", "v0", "blob.bin")
    assert os.stat(path).st_size == len(data)
    with open(path, "rb") as f:
        f.seek(17 * MiB + 123)
        assert f.read(4096) == data[17 * MiB + 123 : 17 * MiB + 123 + 4096]
    reads = [
        (int(a), int(b) if b else None)
        for uri, a, b in GS_READ.findall(m.log())
        if uri == f"gs://{bucket}/big/blob.bin"
    ]
    assert reads, m.log()
    assert all(end is not None and end - start < 8 * MiB for start, end in reads), reads  # never the whole object
    assert sum(end - start + 1 for start, end in reads) < len(data) // 2
    assert os.getxattr(path, "user.artfs.ref").decode() == f"gs://{bucket}/big/blob.bin"
