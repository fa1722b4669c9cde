"""gs:// references through GCS's JSON API, against fake-gcs-server on loopback
(STORAGE_EMULATOR_HOST, as Google's client libraries use it): pins by generation and MD5,
prefixes up to max_objects, ranged reads, versioned and unversioned buckets, and W&B's gs://
entries in and out."""

from __future__ import annotations

import json

import pytest
from gcs_server import gcs_emulator, gcs_env  # noqa: F401  (fixtures)

import artfs
from artfs.errors import InvalidInput, ReferenceChanged
from artfs.references import access


def test_an_object_is_pinned_by_generation_and_md5(gcs_env):  # noqa: F811
    bucket = gcs_env.bucket()
    data = bytes(range(256)) * 1000
    generation = gcs_env.put(bucket, "models/w.bin", data)
    (e,) = access.resolve(f"gs://{bucket}/models/w.bin")
    meta = gcs_env.metadata(bucket, "models/w.bin")
    assert e.path == "w.bin" and e.size == len(data)
    assert e.ref == {
        "uri": f"gs://{bucket}/models/w.bin",
        "generation": generation,
        "md5": meta["md5Hash"],
        "gcs_etag": meta["etag"],
    }
    assert access.read(e) == data
    assert access.read(e, 1000, 1010) == data[1000:1010]  # one ranged GET, verified by its headers
    assert access.read(e, len(data) - 3) == data[-3:]


def test_a_prefix_expands_up_to_max_objects(gcs_env):  # noqa: F811
    bucket = gcs_env.bucket()
    for key in ("imgs/cat.png", "imgs/sub/dog.png", "imgs/zebra.png", "other.txt"):
        gcs_env.put(bucket, key, key.encode())
    entries = access.resolve(f"gs://{bucket}/imgs", name="images")
    assert [e.path for e in entries] == ["images/cat.png", "images/sub/dog.png", "images/zebra.png"]
    assert [access.read(e) for e in entries] == [b"imgs/cat.png", b"imgs/sub/dog.png", b"imgs/zebra.png"]
    with pytest.raises(InvalidInput, match="more than 2 objects"):
        access.resolve(f"gs://{bucket}/imgs/", max_objects=2)
    (bare,) = access.resolve(f"gs://{bucket}/other.txt", checksum=False)
    assert bare.ref == {"uri": f"gs://{bucket}/other.txt"} and access.read(bare) == b"other.txt"


def test_versioned_bucket_serves_the_pinned_generation_after_overwrite(gcs_env, local_store_url, cache_dir):  # noqa: F811
    bucket = gcs_env.bucket(versioned=True)
    gcs_env.put(bucket, "data.csv", b"a,b\n1,2\n")
    store = artfs.Store(local_store_url, cache_dir)
    art = artfs.Artifact("demo/gcs", type="dataset")
    art.add_reference(f"gs://{bucket}/data.csv")
    store.log_artifact(art)
    gcs_env.put(bucket, "data.csv", b"a,b\n9,9\n")  # a new generation
    v0 = store.use_artifact("demo/gcs:v0")
    with open(v0.get_path("data.csv").download(root=str(cache_dir) + "/dl"), "rb") as f:
        assert f.read() == b"a,b\n1,2\n"


def test_unversioned_overwrite_is_refused_naming_entry_and_uri(gcs_env):  # noqa: F811
    bucket = gcs_env.bucket()
    gcs_env.put(bucket, "x.bin", b"first")
    (e,) = access.resolve(f"gs://{bucket}/x.bin", name="data/x.bin")
    gcs_env.put(bucket, "x.bin", b"other")
    with pytest.raises(ReferenceChanged, match=rf"data/x.bin.*gs://{bucket}/x.bin.*generation"):
        access.read(e)


def test_cli_put_and_get_through_the_json_api(gcs_env, artfs, tmp_path):  # noqa: F811
    bucket = gcs_env.bucket()
    gcs_env.put(bucket, "set/a.txt", b"A")
    gcs_env.put(bucket, "set/b/c.txt", b"C")
    assert artfs("put", f"gs://{bucket}/set", "--name", "demo/set", "--type", "dataset").ok().out == "demo/set:v0"
    root = artfs("get", "demo/set:v0", "--root", str(tmp_path / "got")).ok().out
    assert (tmp_path / "got" / "b" / "c.txt").read_bytes() == b"C" and root.endswith("got")
    info = json.loads(artfs("info", "demo/set:v0").ok().out)
    assert info["references"] == 2


def test_wandb_gs_entries_in_and_out(gcs_env, artfs, tmp_path):  # noqa: F811
    """A W&B manifest's gs:// entry (digest: the JSON API etag; versionID: the generation)
    imports as a pinned reference, reads, and exports to the same W&B digest."""
    from wandb.sdk.artifacts.artifact_manifest import ArtifactManifest

    bucket = gcs_env.bucket(versioned=True)
    generation = gcs_env.put(bucket, "w/model.pt", b"weights")
    meta = gcs_env.metadata(bucket, "w/model.pt")
    doc = {
        "version": 1,
        "storagePolicy": "wandb-storage-policy-v1",
        "storagePolicyConfig": {"storageLayout": "V2"},
        "contents": {
            "model.pt": {
                "digest": meta["etag"],
                "ref": f"gs://{bucket}/w/model.pt",
                "size": 7,
                "extra": {"versionID": int(generation)},
            }
        },
    }
    (tmp_path / "m.json").write_text(json.dumps(doc))
    (tmp_path / "files").mkdir()
    artfs(
        "wandb",
        "import",
        str(tmp_path / "m.json"),
        "--files",
        str(tmp_path / "files"),
        "--name",
        "demo/m",
        "--type",
        "model",
    ).ok()
    gcs_env.put(bucket, "w/model.pt", b"newer weights")
    artfs("get", "demo/m:v0", "--root", str(tmp_path / "got")).ok()
    assert (tmp_path / "got" / "model.pt").read_bytes() == b"weights"
    out = artfs("wandb", "export", "demo/m:v0").ok().stdout
    assert (
        ArtifactManifest.from_manifest_json(json.loads(out)).digest()
        == ArtifactManifest.from_manifest_json(doc).digest()
    )
    # a version made by artfs from the same object exports W&B's digest too (the etag is pinned)
    artfs("put", f"gs://{bucket}/w/model.pt", "--name", "demo/m2", "--type", "model").ok()
    again = json.loads(artfs("wandb", "export", "demo/m2:v0").ok().stdout)["contents"]["model.pt"]
    assert again["digest"] == gcs_env.metadata(bucket, "w/model.pt")["etag"]
    assert again["extra"] == {"versionID": int(gcs_env.metadata(bucket, "w/model.pt")["generation"])}


def test_hmac_keys_keep_the_xml_api(gcs_env, monkeypatch):  # noqa: F811
    """With HMAC keys configured, gs:// still goes through the XML interop API (here to an
    endpoint that does not answer, so the error names it)."""
    from artfs.errors import StoreUnavailable

    monkeypatch.setenv("ARTFS_REF_GS_ACCESS_KEY_ID", "GOOG1")
    monkeypatch.setenv("ARTFS_REF_GS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("ARTFS_REF_GS_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("ARTFS_REF_ATTEMPTS", "1")
    access._fetchers.clear()
    try:
        with pytest.raises(StoreUnavailable, match="127.0.0.1:9"):
            access.resolve("gs://some-bucket/x.bin")
    finally:
        access._fetchers.clear()
