"""Large files stored as blocks (store format): a 1-byte change to a large file stores one block,
not the file again; content identity, dedupe with files stored whole, download and gc keep working.
Real stores (local folder and SeaweedFS), no mount."""

from __future__ import annotations

import os

import pytest
from conftest import read_tree

from artfs.names import ArtifactName
from artfs.store.manifest import BLOCK_SIZE
from artfs.versions import lifecycle, publish
from artfs.versions.sources import walk_sources

A = ArtifactName("p", "big")
SIZE = 2 * BLOCK_SIZE + (5 << 20)  # three blocks, the last one short


@pytest.fixture
def blocks(monkeypatch):
    monkeypatch.setattr(publish, "STORE_BLOCKS", True)


def _stored_bytes(store) -> int:
    return sum(i.size for prefix in ("objects/", "pieces/", "packs/", "manifests/") for i in store.objects.list(prefix))


def _put(store, src):
    return store.publish(
        A, "model", walk_sources(str(src), None), base=store.registry.latest(A), same_as=store.registry.latest(A)
    )


def test_a_one_byte_change_stores_one_block(store, blocks, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    data = bytearray(os.urandom(SIZE))
    (src / "model.bin").write_bytes(data)
    v0 = _put(store, src)
    assert v0.created and v0.stats.objects_uploaded == 3
    entry = store.manifest(v0.version).get("model.bin")
    assert len(entry.blocks) == 3 * 32
    before = _stored_bytes(store)
    data[BLOCK_SIZE + 12345] ^= 1
    (src / "model.bin").write_bytes(data)
    v1 = _put(store, src)
    assert str(v1.version) == "p/big:v1"
    grown = _stored_bytes(store) - before
    assert BLOCK_SIZE <= grown < BLOCK_SIZE + (1 << 20), grown  # one block, its piece index, the manifest
    for rec, want in ((v0.version, None), (v1.version, bytes(data))):
        root = tmp_path / f"get-{rec.name}"
        store.download(rec, str(root))
        got = read_tree(root)["model.bin"]
        assert len(got) == SIZE and (want is None or got == want)


def test_same_bytes_stored_whole_before_are_not_stored_again_as_blocks(store, tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.bin").write_bytes(os.urandom(SIZE))
    monkeypatch.setattr(publish, "STORE_BLOCKS", False)
    v0 = _put(store, src)
    assert not store.manifest(v0.version).get("model.bin").blocks
    monkeypatch.setattr(publish, "STORE_BLOCKS", True)
    (src / "other.txt").write_text("a new small file\n")
    v1 = _put(store, src)
    assert v1.created and v1.stats.bytes_uploaded < (1 << 20), "the large file is reused as stored"
    assert not store.manifest(v1.version).get("model.bin").blocks


def test_identity_does_not_depend_on_how_bytes_are_stored(store, tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.bin").write_bytes(os.urandom(SIZE))
    monkeypatch.setattr(publish, "STORE_BLOCKS", True)
    blocked = store.publish(ArtifactName("p", "blocked"), "model", walk_sources(str(src), None)).version
    monkeypatch.setattr(publish, "STORE_BLOCKS", False)
    whole = store.publish(ArtifactName("p", "whole"), "model", walk_sources(str(src), None)).version
    m1, m2 = store.manifest(whole), store.manifest(blocked)
    assert m2.get("model.bin").blocks and not m1.get("model.bin").blocks
    assert m1.content_digest() == m2.content_digest()
    assert m1.get("model.bin").digest == m2.get("model.bin").digest


def test_gc_keeps_blocks_a_live_version_needs_and_removes_the_rest(store, blocks, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    data = bytearray(os.urandom(SIZE))
    (src / "model.bin").write_bytes(data)
    v0 = _put(store, src).version
    data[0] ^= 1
    (src / "model.bin").write_bytes(data)
    v1 = _put(store, src).version
    lifecycle.delete_version(store.registry, v0, force=True)
    report = lifecycle.collect(store.registry, grace=0, wait=0)
    assert any(key.startswith("objects/") for key, _ in report.deleted)  # v0's first block went
    root = tmp_path / "get"
    store.download(v1, str(root))
    assert read_tree(root)["model.bin"] == bytes(data)
