"""A damaged byte in a stored pack costs only what it damages: the one small file whose
bytes are bad is an EIO (its log line names the file, the version and the object), and
every other file of the same pack, fetched in the same GET, is verified and served on
its own."""

from __future__ import annotations

import errno
import os
import random

import pytest

from artfs import Store
from artfs.store.keys import pack_key
from artfs.store.location import open_store
from conftest import run_artfs, write_tree
from mounts import mounter  # noqa: F401  (mounter is a fixture)

pytestmark = pytest.mark.mount

NAME = "demo/shards"
COUNT = 300


@pytest.fixture
def shards(store_url, tmp_path):
    rng = random.Random(13)
    files = {f"part{i // 100}/f{i:04d}.bin": rng.randbytes(rng.randrange(1000, 6000)) for i in range(COUNT)}
    src = write_tree(tmp_path / "src", files)
    run_artfs(
        ["put", src, "--name", NAME, "--type", "dataset"], store=store_url, cache=str(tmp_path / "cli-cache")
    ).ok()
    manifest = Store(store_url, str(tmp_path / "cli-cache2")).use_artifact(f"{NAME}:v0").manifest
    return store_url, files, manifest


def damage(store_url: str, manifest, path: str) -> str:
    """Flips one byte in the middle of `path`'s bytes in its stored pack; returns the pack's key."""
    entry = manifest.get(path)
    assert entry.pack is not None, "small files are stored in packs"
    key = pack_key(entry.pack)
    objects = open_store(store_url)
    blob = bytearray(objects.get(key))
    blob[entry.offset + entry.size // 2] ^= 0x01
    objects.put(key, bytes(blob))
    return key


def read_all(root: str, names) -> tuple[dict[str, bytes], dict[str, int]]:
    got, failed = {}, {}
    for name in names:
        try:
            with open(os.path.join(root, name), "rb") as f:
                got[name] = f.read()
        except OSError as e:
            failed[name] = e.errno
    return got, failed


@pytest.mark.parametrize("first", ["a neighbour", "the damaged file"])
def test_a_damaged_byte_in_a_pack_fails_only_its_file(shards, mounter, first):
    store, files, manifest = shards
    names = sorted(files)
    bad = names[150]
    same_pack = [n for n in names if manifest.get(n).pack == manifest.get(bad).pack]
    assert len(same_pack) > 100, "the test needs many neighbours in the damaged pack"
    key = damage(store, manifest, bad)
    m = mounter(store)
    root = m.path(NAME, "v0")
    # Either the damaged file is fetched as a neighbour of one opened before it, or it is
    # opened first and its neighbours come along in its GET.
    order = names if first == "a neighbour" else [bad] + [n for n in names if n != bad]
    got, failed = read_all(root, order)
    assert failed == {bad: errno.EIO}
    assert got == {n: files[n] for n in names if n != bad}, "every other file reads its stored bytes"
    eio = [line for line in m.log().splitlines() if bad in line and "does not match" in line]
    assert eio, m.log()
    assert "v0" in eio[0] and key in eio[0], f"the EIO line names the file, the version and the object: {eio[0]}"
    assert read_all(root, [bad])[1] == {bad: errno.EIO}, "still unreadable, never other bytes"
