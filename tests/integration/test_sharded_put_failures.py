"""Failure paths of a streamed `artfs put` of a sharded version, as a user meets them: a full
disk, the store going away mid-put, a damaged shard. Each fails with one line and a non-zero
exit or finishes; nothing half-made is committed; the store still verifies; a re-run works.

Small thresholds (ARTFS_SHARDED_ABOVE, ARTFS_SHARD_FILES) make a few hundred files dozens of shards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from conftest import ARTFS_BIN, make_bucket, read_tree, run_artfs, tmpfs
from mounts import wait_for, weed  # noqa: F401  (weed is a fixture)

SMALL_SHARDS = {"ARTFS_SHARDED_ABOVE": "20", "ARTFS_SHARD_FILES": "6"}


def _tree(root, folders: int, files: int, size: int = 60) -> str:
    for d in range(folders):
        os.makedirs(os.path.join(root, f"d{d}"), exist_ok=True)
        for f in range(files):
            with open(os.path.join(root, f"d{d}", f"f{f:03d}"), "wb") as out:
                out.write(os.urandom(size))
    return str(root)


def _cli(store, cache, *args, env=None):
    return run_artfs(list(args), store=store, cache=cache, env={**SMALL_SHARDS, **(env or {})})


def _latest(store, cache, artifact) -> str:
    return json.loads(_cli(store, cache, "info", artifact).ok().stdout)["version"]


# -- 1. a full disk under a streamed put ----------------------------------------------------


@pytest.fixture
def tiny_disk():
    with tmpfs("1m") as path:
        yield path


def _fill_but(disk: str, left: int) -> str:
    """Fills `disk` but for `left` bytes (enough for Python to accept it as TMPDIR, too little
    for the list of 1,500 stored files a put spills there); returns the filler's path."""
    st = os.statvfs(disk)
    filler = os.path.join(disk, "filler")
    with open(filler, "wb") as f:
        f.write(b"\0" * (st.f_bavail * st.f_frsize - left))
    return filler


def test_a_full_tmpdir_fails_a_streamed_put_with_one_line_and_a_rerun_works(tiny_disk, tmp_path):
    store, cache = str(tmp_path / "store"), str(tmp_path / "cache")
    artifact = "full/big"
    first = _tree(tmp_path / "first", 3, 20)
    assert _cli(store, cache, "put", first, "--name", artifact, "--type", "dataset").ok().out == f"{artifact}:v0"

    src = _tree(tmp_path / "src", 10, 150)
    tmp = os.path.join(tiny_disk, "tmp")
    os.mkdir(tmp)
    filler = _fill_but(tiny_disk, 16 << 10)
    failed = _cli(store, cache, "put", src, "--name", artifact, "--type", "dataset", env={"TMPDIR": tmp})
    line = failed.fails("no space left on", tmp)
    assert "internal error" not in line
    assert _latest(store, cache, artifact) == "v0", "nothing was committed"
    _cli(store, cache, "verify", f"{artifact}:v0").ok()

    os.unlink(filler)
    again = _cli(store, cache, "put", src, "--name", artifact, "--type", "dataset", env={"TMPDIR": tmp}).ok()
    assert again.out == f"{artifact}:v1"
    _cli(store, cache, "verify", f"{artifact}:v1").ok()
    got = tmp_path / "got"
    _cli(store, str(tmp_path / "cache2"), "get", f"{artifact}:v1", "--root", str(got)).ok()
    assert read_tree(str(got)) == read_tree(src)


def test_a_full_cache_disk_does_not_stop_a_streamed_put(tiny_disk, tmp_path):
    # The cache only speeds a put up (the dedupe index of an old store is cached there):
    # a full one costs nothing but the caching.
    store, cache = str(tmp_path / "store"), os.path.join(tiny_disk, "cache")
    src = _tree(tmp_path / "src", 4, 30)
    _fill_but(tiny_disk, 0)
    assert _cli(store, cache, "put", src, "--name", "full/c", "--type", "dataset").ok().out == "full/c:v0"
    _cli(store, str(tmp_path / "c2"), "verify", "full/c:v0").ok()


# -- 2. the store going away in the middle of a streamed put ----------------------------------


def _big_tree(root) -> str:
    _tree(root, 20, 40, 3000)  # 800 small files: packs
    _tree(os.path.join(root, "big"), 1, 40, 1_500_000)  # large files (over 1 MiB): objects of their own
    return str(root)


def _objects(client, bucket: str, prefix: str) -> dict[str, object]:
    """key -> LastModified of every object under `prefix`."""
    out: dict[str, object] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out.update({o["Key"]: o["LastModified"] for o in page.get("Contents", [])})
    return out


def _start_put(store: str, cache: str, src: str, env: dict) -> subprocess.Popen:
    full = {**os.environ, **SMALL_SHARDS, **env, "ARTFS_STORE": store, "ARTFS_CACHE": cache}
    cmd = [ARTFS_BIN, "put", src, "--name", "p/a", "--type", "dataset"]
    return subprocess.Popen(cmd, env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _when_uploading(client, bucket: str, put: subprocess.Popen) -> None:
    """Returns once the put has stored some of its content, but is not done."""
    wait_for(lambda: _objects(client, bucket, "reg/objects/") or put.poll() is not None, 60, "the first upload")
    assert put.poll() is None, f"the put finished before the store went away: {put.communicate()}"


@pytest.mark.s3
def test_a_put_outlives_a_store_that_hangs_for_a_few_seconds(s3_endpoint, weed, tmp_path):
    env = {"AWS_ENDPOINT_URL": weed.endpoint, "ARTFS_S3_TIMEOUT": "2"}
    bucket = make_bucket(weed.endpoint)
    store, cache = f"s3://{bucket}/reg", str(tmp_path / "cache")
    src = _big_tree(tmp_path / "src")
    put = _start_put(store, cache, src, env)
    _when_uploading(weed.client(), bucket, put)
    os.killpg(weed.proc.pid, signal.SIGSTOP)
    time.sleep(4)
    os.killpg(weed.proc.pid, signal.SIGCONT)
    out, err = put.communicate(timeout=120)
    assert put.returncode == 0 and out.strip() == "p/a:v0", (out, err)
    assert "Traceback" not in err
    got = tmp_path / "got"
    run_artfs(["get", "p/a:v0", "--root", got], store=store, cache=str(tmp_path / "c2"), env=env).ok()
    assert read_tree(got) == read_tree(src)
    run_artfs(["verify", "p/a:v0"], store=store, cache=str(tmp_path / "c3"), env=env).ok()


@pytest.mark.s3
def test_a_put_whose_store_dies_fails_with_one_line_commits_nothing_and_a_rerun_dedupes(s3_endpoint, weed, tmp_path):
    env = {"AWS_ENDPOINT_URL": weed.endpoint, "ARTFS_S3_ATTEMPTS": "2", "ARTFS_S3_TIMEOUT": "2"}
    bucket = make_bucket(weed.endpoint)
    store, cache = f"s3://{bucket}/reg", str(tmp_path / "cache")
    src = _big_tree(tmp_path / "src")
    client = weed.client()
    put = _start_put(store, cache, src, env)
    _when_uploading(client, bucket, put)
    weed.kill()
    out, err = put.communicate(timeout=120)
    weed.restart()
    assert put.returncode != 0 and not out.strip(), (out, err)
    lines = [line for line in err.splitlines() if line.strip() and "created a new store" not in line]
    assert len(lines) == 1 and lines[0].startswith("artfs: error:") and store in lines[0], err
    assert not _objects(client, bucket, "reg/artifacts/p/a/versions/"), "no version record, not even a half one"
    run_artfs(["info", "p/a"], store=store, cache=cache, env=env).fails("no versions")

    stored = _objects(client, bucket, "reg/objects/")
    time.sleep(1.1)  # (LastModified counts seconds)
    again = run_artfs(["put", src, "--name", "p/a", "--type", "dataset"], store=store, cache=cache, env=env)
    assert again.ok().out == "p/a:v0"
    after = _objects(client, bucket, "reg/objects/")
    assert all(after[k] == stored[k] for k in stored), "what the failed put stored is not uploaded again"
    run_artfs(["verify", "p/a:v0"], store=store, cache=str(tmp_path / "c3"), env=env).ok()
    got = tmp_path / "got"
    run_artfs(["get", "p/a:v0", "--root", got], store=store, cache=str(tmp_path / "c2"), env=env).ok()
    assert read_tree(got) == read_tree(src)
