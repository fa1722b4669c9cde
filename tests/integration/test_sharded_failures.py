"""Failure paths of a streamed `artfs put` of a sharded version, as a user meets them: a full
disk, the store going away mid-put, a damaged shard. Each fails with one line and a non-zero
exit or finishes; nothing half-made is committed; the store still verifies; a re-run works.

Small thresholds (ARTFS_SHARDED_ABOVE, ARTFS_SHARD_FILES) make a few hundred files dozens of shards."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile

import pytest
from conftest import read_tree, run_artfs

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
def tiny_disk(tmp_path):
    """A 1 MiB tmpfs (unmounted afterwards, pass or fail)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path = tempfile.mkdtemp(prefix="artfs-tiny-disk-")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", path], check=True)
    try:
        yield path
    finally:
        if subprocess.run(["umount", path], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", path], capture_output=True)
        shutil.rmtree(path, ignore_errors=True)


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
