"""The registry and the publish/download machinery, in process, on both backends.

Covers versions, aliases and records (and what happens when records are
damaged), "only changed bytes move" with a request-counting store, and
small-file packing.
"""

import os

import pytest

from conftest import read_tree, write_tree
from artfs import Store
from artfs.digest import CHUNK_SIZE, PIECE_SIZE
from artfs.errors import Conflict, CorruptRecord, InvalidInput, NotFound
from artfs.names import ArtifactName
from artfs.versions.publish import PACK_TARGET
from artfs.versions.sources import walk_sources
from artfs.store.location import open_store

A = ArtifactName("p", "a")


def put(store: Store, src, name=A, type_="dataset", **kwargs):
    """What `artfs put DIR` does: publish DIR as the next version, unless unchanged."""
    latest = store.registry.latest(name)
    return store.publish(name, type_, walk_sources(str(src), None), base=latest, same_as=latest, **kwargs)


@pytest.fixture
def tree(tmp_path):
    def make(files, name="src"):
        root = tmp_path / name
        if root.exists():
            import shutil

            shutil.rmtree(root)
        return write_tree(root, files)

    return make


# -- versions -------------------------------------------------------------------------


def test_versions_are_dense_and_latest_moves(store, tree):
    r0 = put(store, tree({"a.txt": "one"}))
    assert r0.created and str(r0.version) == "p/a:v0"
    same = put(store, tree({"a.txt": "one"}))
    assert not same.created and same.version.number == 0
    r1 = put(store, tree({"a.txt": "two"}))
    assert r1.created and r1.version.number == 1 and r1.version.base == 0
    assert [v.number for v in store.registry.versions(A)] == [0, 1]
    assert store.registry.latest(A).number == 1
    assert store.resolve("p/a").number == 1
    assert store.resolve("p/a:latest").number == 1
    assert store.resolve("p/a:v0").number == 0


def test_version_record_fields(store, tree):
    rec = put(store, tree({"x/a.bin": b"12345", "b.txt": "hi"}), description="desc", metadata={"k": [1, 2]}).version
    back = store.resolve("p/a:v0")
    assert back.type == "dataset" and back.size == 7 and back.files == 2
    assert back.description == "desc" and back.metadata == {"k": [1, 2]}
    assert back.manifest == rec.manifest and len(back.manifest) == 64
    assert back.base is None and back.created > 0
    assert {"user", "host", "run", "command"} <= set(back.creator)


def test_type_clash_is_refused_before_anything_is_uploaded(store, tree):
    put(store, tree({"a": "1"}))
    before = sorted(o.key for o in store.objects.list(""))
    with pytest.raises(Conflict, match="already exists with type 'dataset'"):
        put(store, tree({"a": "something new"}), type_="model")
    assert sorted(o.key for o in store.objects.list("")) == before
    with pytest.raises(InvalidInput):
        store.registry.ensure_artifact(ArtifactName("p", "new"), None)


def test_unknown_things_are_not_found(store, tree):
    with pytest.raises(NotFound, match="does not exist"):
        store.resolve("p/nothing")
    put(store, tree({"a": "1"}))
    with pytest.raises(NotFound):
        store.resolve("p/a:v7")
    with pytest.raises(NotFound):
        store.resolve("p/a:best")
    assert store.registry.versions(ArtifactName("p", "nothing")) == []


def test_projects_and_artifacts(store, tree):
    src = tree({"a": "1"})
    put(store, src, ArtifactName("p1", "x"))
    put(store, src, ArtifactName("p1", "y"), "model")
    put(store, src, ArtifactName("p2", "z"))
    assert store.registry.projects() == ["p1", "p2"]
    assert store.registry.artifacts("p1") == ["x", "y"]
    assert store.registry.artifact_type(ArtifactName("p1", "y")) == "model"


def test_empty_put_is_refused(store, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInput):
        put(store, tmp_path / "empty")
    assert store.registry.versions(A) == []


# -- aliases --------------------------------------------------------------------------


def test_aliases(store, tree):
    put(store, tree({"a": "1"}), aliases=["best", "prod"])
    put(store, tree({"a": "2"}))
    reg = store.registry
    assert reg.aliases(A) == {"best": 0, "prod": 0}
    assert reg.aliases_by_version(A) == {0: ["best", "prod"], 1: ["latest"]}
    reg.set_alias(A, "best", 1)  # moves
    assert reg.aliases_by_version(A) == {0: ["prod"], 1: ["latest", "best"]}
    assert store.resolve("p/a:best").number == 1
    reg.remove_alias(A, "prod", 0)
    assert reg.aliases(A) == {"best": 1}
    with pytest.raises(NotFound):
        reg.remove_alias(A, "best", 0)  # it is on v1, not v0
    with pytest.raises(NotFound):
        reg.remove_alias(A, "nope")
    for bad in ("latest",):
        with pytest.raises(InvalidInput):
            reg.set_alias(A, bad, 0)
        with pytest.raises(InvalidInput):
            reg.remove_alias(A, bad, 1)
    for bad in ("v0", "drafts", "..", "a/b"):
        with pytest.raises(InvalidInput):
            reg.set_alias(A, bad, 0)
    with pytest.raises(NotFound):
        reg.set_alias(A, "future", 5)
    assert reg.aliases(A) == {"best": 1}


def test_alias_on_unchanged_put_lands_on_the_existing_version(store, tree):
    put(store, tree({"a": "1"}))
    again = put(store, tree({"a": "1"}), aliases=["best"])
    assert not again.created
    assert store.registry.aliases(A) == {"best": 0}


def test_set_description_and_metadata(store, tree):
    rec = put(store, tree({"a": "1"}), description="old", metadata={"a": 1, "b": 2}).version
    rec = store.set_info(rec, "new", {"b": 3, "c": 4}, merge=True)
    assert (rec.description, rec.metadata) == ("new", {"a": 1, "b": 3, "c": 4})
    rec = store.set_info(rec, None, {"z": 0}, merge=False)
    back = Store(store.url, store.cache_dir).resolve("p/a:v0")
    assert (back.description, back.metadata) == ("new", {"z": 0})
    with pytest.raises(InvalidInput):
        store.set_info(rec, None, "[1, 2]", merge=False)
    with pytest.raises(InvalidInput):
        store.set_info(rec, None, "{bad json", merge=False)


def test_update_with_a_stale_record_keeps_both_changes(store, tree):
    rec = put(store, tree({"a": "1"})).version
    other = Store(store.url, store.cache_dir)
    other.set_info(other.resolve("p/a:v0"), "from other", None, merge=False)
    store.set_info(rec, None, {"k": 1}, merge=True)  # rec is stale: CAS re-reads and re-applies
    back = other.resolve("p/a:v0")
    assert (back.description, back.metadata) == ("from other", {"k": 1})


# -- damaged records --------------------------------------------------------------------


def _damage(store, key, data):
    open_store(store.url).put(key, data)


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"{not json",
        b"[]",
        b'{"format": 2}',
        b'{"format": 1}',
        b'{"format": 1, "manifest": "xyz", "type": "dataset", "created": 1}',
    ],
)
def test_corrupt_version_record_is_named(store, tree, bad):
    put(store, tree({"a": "1"}))
    key = "artifacts/p/a/versions/v0.json"
    _damage(store, key, bad)
    fresh = Store(store.url, store.cache_dir)
    with pytest.raises(CorruptRecord, match=key):
        fresh.resolve("p/a:v0")


def test_corrupt_alias_record_is_named(store, tree):
    put(store, tree({"a": "1"}), aliases=["best"])
    key = "artifacts/p/a/aliases.json"
    _damage(store, key, b'{"aliases": ')
    with pytest.raises(CorruptRecord, match=key):
        Store(store.url, store.cache_dir).resolve("p/a:best")


def test_corrupt_artifact_record_is_named(store, tree):
    put(store, tree({"a": "1"}))
    key = "artifacts/p/a/artifact.json"
    _damage(store, key, b"garbage")
    with pytest.raises(CorruptRecord, match=key):
        put(Store(store.url, store.cache_dir), tree({"a": "2"}))


@pytest.mark.parametrize("how", ["truncated", "flipped", "empty"])
def test_corrupt_manifest_is_named(store, tree, how):
    rec = put(store, tree({"a": "1", "b": "2"})).version
    key = f"manifests/{rec.manifest}"
    raw = open_store(store.url).get(key)
    bad = {"truncated": raw[: len(raw) // 2], "flipped": raw[:5] + bytes([raw[5] ^ 1]) + raw[6:], "empty": b""}[how]
    _damage(store, key, bad)
    fresh = Store(store.url, store.cache_dir)
    with pytest.raises(CorruptRecord, match=key):
        fresh.manifest(fresh.resolve("p/a:v0"))


# -- only changed bytes move -------------------------------------------------------------


def _dataset(seed: int = 0):
    big = {f"weights/part{i}.bin": os.urandom(5 * CHUNK_SIZE + 123 * i) for i in range(8)}  # ~40 MiB
    small = {f"images/class_{i % 10}/img_{i:04d}.jpg": os.urandom(2000 + 37 * i) for i in range(600)}  # ~7.8 MB
    return {**big, **small, "labels.csv": "".join(f"img_{i:04d},{i % 10}\n" for i in range(600))}


def _stored(counter):
    """Writes of content and registry records; commit markers (locks/, written and removed
    around every commit for gc) and lineage records are bookkeeping, not data moved."""
    return [(k, n) for k, n in counter.writes if not k.startswith(("locks/", "lineage/"))]


def test_only_changed_bytes_move(counted, tree, tmp_path):
    store, counter = counted
    files = _dataset()
    total = sum(len(v) if isinstance(v, bytes) else len(v.encode()) for v in files.values())
    assert total > 47 << 20
    put(store, tree(files))
    uploaded = sum(n for k, n in counter.writes if k.startswith(("objects/", "packs/")))
    assert uploaded == total, "the first put uploads every byte once"

    # Same content again: no version, and nothing content-like is written at all.
    counter.reset()
    assert not put(store, tree(files)).created
    assert _stored(counter) == []

    # One large file changed: that file's bytes, one manifest, one version record.
    counter.reset()
    files["weights/part3.bin"] = os.urandom(len(files["weights/part3.bin"]))
    r = put(store, tree(files))
    assert r.created and r.version.number == 1
    kinds = sorted(k.split("/")[0] if not k.startswith("artifacts/") else k for k, _ in _stored(counter))
    assert kinds == [
        "artifacts/p/a/version-index/b0.json",
        "artifacts/p/a/versions/v1.json",
        "manifests",
        "objects",
        "pieces",
    ], counter.writes
    assert counter.written("objects/")[0][1] == len(files["weights/part3.bin"])
    assert counter.written("pieces/")[0][1] == -(-len(files["weights/part3.bin"]) // PIECE_SIZE) * 32
    manifest_bytes = counter.written("manifests/")[0][1]
    assert manifest_bytes < 64 << 10
    assert r.stats.bytes_uploaded == len(files["weights/part3.bin"])

    # One small file changed: a pack holding just that file, its index, manifest, record.
    counter.reset()
    files["images/class_3/img_0123.jpg"] = os.urandom(4000)
    r = put(store, tree(files))
    assert r.version.number == 2
    kinds = sorted(k.split("/")[0] if not k.startswith("artifacts/") else k for k, _ in _stored(counter))
    assert kinds == [
        "artifacts/p/a/version-index/b0.json",
        "artifacts/p/a/versions/v2.json",
        "dedupe",
        "index",
        "manifests",
        "packs",
    ], counter.writes
    assert counter.written("packs/")[0][1] == 4000
    assert counter.written("index/")[0][1] < 200

    # And all three versions still read back exactly.
    out = tmp_path / "out"
    store.download(store.resolve("p/a:v2"), str(out))
    assert read_tree(out) == {k: v.encode() if isinstance(v, str) else v for k, v in files.items()}


def test_identical_files_are_stored_once_across_artifacts(counted, tree):
    store, counter = counted
    files = {"big.bin": os.urandom(3 * CHUNK_SIZE), "s1.txt": "same small", "s2.txt": "same small"}
    put(store, tree(files))
    counter.reset()
    put(store, tree(files), ArtifactName("other", "copy"), "model")
    assert counter.written("objects/") == [] and counter.written("packs/") == []


def test_small_files_are_packed(counted, tree, tmp_path):
    store, counter = counted
    files = {f"d{i // 100:02d}/f{i:05d}.txt": f"small file number {i}\n" * (1 + i % 50) for i in range(2000)}
    put(store, tree(files))
    raw = open_store(store.url)
    packs = list(raw.list("packs/"))
    assert 1 <= len(packs) <= 3, f"2000 small files should make a handful of packs, not {len(packs)}"
    assert list(raw.list("objects/")) == []
    assert all(p.size <= PACK_TARGET + CHUNK_SIZE for p in packs)

    # Reading them all back cold costs a few ranged GETs, not one per file.
    counter.reset()
    fresh = Store(store.url, str(tmp_path / "cache2"), objects=counter)
    out = tmp_path / "out"
    fresh.download(fresh.resolve("p/a:v0"), str(out))
    content_reads = counter.read_from("packs/") + counter.read_from("objects/")
    assert len(content_reads) <= 5, len(content_reads)
    assert read_tree(out) == {k: v.encode() for k, v in files.items()}


# -- download ---------------------------------------------------------------------------


def test_download_is_exact_and_resumes_nothing_twice(counted, tree, tmp_path):
    store, counter = counted
    files = {"big.bin": os.urandom(2 * CHUNK_SIZE + 7), "a/b/c.txt": "c", "empty": b"", "x.sh": "#!/bin/sh\n"}
    src = tree(files)
    os.chmod(os.path.join(src, "x.sh"), 0o755)
    rec = put(store, src).version
    out = tmp_path / "out"
    stats = store.download(rec, str(out))
    assert read_tree(out) == {k: v.encode() if isinstance(v, str) else v for k, v in files.items()}
    assert stats.files_written == 4
    assert os.stat(out / "x.sh").st_mode & 0o111
    counter.reset()
    stats = store.download(rec, str(out))
    assert stats.files_written == 0 and stats.files_skipped == 4 and stats.bytes_fetched == 0
    assert counter.read_from("packs/") == [] and counter.read_from("objects/") == []
    # A changed local file is fetched again.
    (out / "a/b/c.txt").write_text("tampered")
    stats = store.download(rec, str(out))
    assert stats.files_written == 1 and (out / "a/b/c.txt").read_text() == "c"


def test_download_one_path(store, tree, tmp_path):
    rec = put(store, tree({"images/a.png": "A", "images/b.png": "B", "labels.csv": "L"})).version
    store.download(rec, str(tmp_path / "one"), "images/a.png")
    assert read_tree(tmp_path / "one") == {"images/a.png": b"A"}
    store.download(rec, str(tmp_path / "dir"), "images")
    assert read_tree(tmp_path / "dir") == {"images/a.png": b"A", "images/b.png": b"B"}
    with pytest.raises(NotFound):
        store.download(rec, str(tmp_path / "none"), "nope.txt")


@pytest.mark.parametrize("where", ["pack", "object", "truncated pack", "truncated object", "missing pack"])
def test_damaged_content_is_never_written(store, tree, tmp_path, where):
    files = {"big.bin": os.urandom(3 * CHUNK_SIZE), "s/one.txt": "one" * 100, "s/two.txt": "two" * 100}
    rec = put(store, tree(files)).version
    raw = open_store(store.url)
    kind = "packs/" if "pack" in where else "objects/"
    key = next(iter(raw.list(kind))).key
    data = raw.get(key)
    if where.startswith("truncated"):
        raw.put(key, data[: len(data) - 10])
    elif where.startswith("missing"):
        raw.delete(key)
    else:
        i = len(data) - 5
        raw.put(key, data[:i] + bytes([data[i] ^ 0x40]) + data[i + 1 :])
    out = tmp_path / "out"
    with pytest.raises((CorruptRecord, NotFound), match=key):
        store.download(rec, str(out))
    # Whatever was written is right; nothing else is there.
    for rel, data in read_tree(out).items():
        if rel.endswith(".artfs-part"):
            continue
        assert data == (files[rel].encode() if isinstance(files[rel], str) else files[rel]), rel


def test_interrupted_download_resumes_from_verified_chunks(counted, tree, tmp_path):
    store, counter = counted
    big = os.urandom(4 * CHUNK_SIZE + 99)
    rec = put(store, tree({"big.bin": big})).version
    out = tmp_path / "out"
    out.mkdir()
    # What an interrupted get leaves: two good chunks, then garbage.
    (out / "big.bin.artfs-part").write_bytes(big[: 2 * CHUNK_SIZE] + b"\0" * 1000)
    counter.reset()
    stats = store.download(rec, str(out))
    assert (out / "big.bin").read_bytes() == big
    assert not (out / "big.bin.artfs-part").exists()
    assert stats.bytes_fetched == len(big) - 2 * CHUNK_SIZE
    assert sum(n for _, n in counter.read_from("objects/")) == len(big) - 2 * CHUNK_SIZE
