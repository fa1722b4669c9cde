"""Shared pieces of the drafts tests (tests/test_drafts_*.py); no tests of its own.

shared_mounter   module-scoped `mounts.Mounter`: one mount serves many tests of a module
                 (mounting costs ~2 s); every mount is still torn down, pass or fail
sh(*cmd)         runs a tool, asserts success, returns the CompletedProcess
read(path)       bytes of a file
put(store, name, files, tmp)             publishes {path: bytes} with the CLI, returns "p/a:vN"
store_keys(url)  every key of a store (a local folder or s3://bucket/prefix)
data_files(m, artifact, draft)           names in CACHE/drafts/p/a/d/data/ (locally written files)
commit(m, path, *flags)                  `artfs commit` against the mount's store and cache
versions(store, artifact)                [(name, aliases)] from `artfs ls p/a`
"""

from __future__ import annotations

import itertools
import os
import random
import subprocess

import pytest

from conftest import read_tree, run_artfs, write_tree
from mounts import Mount, Mounter

_names = itertools.count()


def unique(stem: str = "a") -> str:
    return f"{stem}{os.getpid()}x{next(_names)}"


def sh(*cmd, cwd=None, check=True, timeout=60, env=None) -> subprocess.CompletedProcess:
    p = subprocess.run(
        [str(c) for c in cmd],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    if check:
        assert p.returncode == 0, f"{' '.join(map(str, cmd))} -> {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def write(path: str, data: bytes, mode: str = "wb") -> None:
    with open(path, mode) as f:
        f.write(data)


def random_files(seed: int, n: int, max_size: int = 4000, prefix: str = "") -> dict[str, bytes]:
    rnd = random.Random(seed)
    return {f"{prefix}f{i:04d}.bin": rnd.randbytes(rnd.randrange(1, max_size)) for i in range(n)}


def put(store: str, name: str, files: dict, tmp, *flags: str, cache: str | None = None) -> str:
    src = write_tree(os.path.join(str(tmp), unique("src")), files)
    cache = cache or os.path.join(str(tmp), "cli-cache")
    return run_artfs(["put", src, "--name", name, "--type", "dataset", *flags], store=store, cache=cache).ok().out


def commit(m: Mount, path: str, *flags: str, timeout: float = 120):
    return run_artfs(["commit", path, *flags], store=m.store, cache=m.cache, timeout=timeout)


def versions(store: str, artifact: str, cache: str | None = None) -> list[tuple[str, str]]:
    """(version, aliases column) of every version, from `artfs ls p/a`."""
    out = run_artfs(["ls", artifact], store=store, cache=cache).ok().stdout
    return [(line.split("\t")[0], line.split("\t")[1]) for line in out.splitlines() if line.strip()]


def version_files(store: str, spec: str, tmp) -> dict[str, bytes]:
    """What `artfs get` downloads for a version (independent of any mount)."""
    root = os.path.join(str(tmp), unique("get"))
    run_artfs(["get", spec, "--root", root], store=store, cache=os.path.join(str(tmp), unique("get-cache"))).ok()
    return read_tree(root)


def draft_dir(cache: str, artifact: str, draft: str) -> str:
    return os.path.join(cache, "drafts", *artifact.split("/"), draft)


def data_files(cache: str, artifact: str, draft: str) -> list[str]:
    return sorted(os.listdir(os.path.join(draft_dir(cache, artifact, draft), "data")))


def store_keys(url: str) -> set[str]:
    if url.startswith("s3://"):
        from conftest import s3_client

        bucket, _, prefix = url[len("s3://") :].partition("/")
        client = s3_client(os.environ["AWS_ENDPOINT_URL"])
        keys = set()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix.rstrip("/") + "/"):
            for o in page.get("Contents", []):
                keys.add(o["Key"][len(prefix.rstrip("/")) + 1 :])
        return keys
    root = url.removeprefix("file://")
    out = set()
    for dirpath, _dirs, files in os.walk(root):
        for fn in files:
            rel = os.path.relpath(os.path.join(dirpath, fn), root)
            if not rel.startswith(".artfs-tmp"):
                out.add(rel.replace(os.sep, "/"))
    return out


def content_keys(keys: set[str]) -> dict[str, set[str]]:
    """Keys by top folder: packs, objects, manifests, index, artifacts."""
    out: dict[str, set[str]] = {}
    for k in keys:
        out.setdefault(k.split("/", 1)[0], set()).add(k)
    return out


@pytest.fixture(scope="module")
def shared_mounter(tmp_path_factory):
    """One Mounter for a whole module (mounts.Mounter, torn down the same way, pass or fail)."""
    m = Mounter(tmp_path_factory.mktemp("drafts"))
    try:
        yield m
    finally:
        left = m.teardown()
        assert not left, f"left behind after cleanup: {left}"
