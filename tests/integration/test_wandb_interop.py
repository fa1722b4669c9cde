"""W&B artifacts in and out of artfs, with the real W&B SDK (offline, no network) as the
other side: it writes the manifests `artfs wandb import` reads, and its own
`ArtifactManifest.from_manifest_json(...).digest()` checks what `artfs wandb export` writes.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
from conftest import s3_client

from http_server import nginx_server  # noqa: F401  (fixture)

wandb = pytest.importorskip("wandb")
from wandb.sdk.artifacts.artifact_manifest import ArtifactManifest  # noqa: E402  (after the skip)


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))


def write(path, data: bytes) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def source_tree(root) -> str:
    """Files as a W&B user has them before logging."""
    write(os.path.join(root, "labels.csv"), b"id,label\n1,cat\n2,dog\n")
    write(os.path.join(root, "images", "cat.png"), b"\x89PNG cat" * 100)
    write(os.path.join(root, "images", "dog.png"), b"\x89PNG dog" * 3000)
    write(os.path.join(root, "big.bin"), os.urandom(3 << 20))  # more than one 1 MiB chunk
    write(os.path.join(root, "empty.txt"), b"")
    return str(root)


def sdk_artifact(src: str, extra_refs=()) -> wandb.Artifact:
    art = wandb.Artifact("bikes", type="dataset")
    art.add_file(os.path.join(src, "labels.csv"))
    art.add_file(os.path.join(src, "big.bin"))
    art.add_file(os.path.join(src, "empty.txt"))
    art.add_dir(os.path.join(src, "images"), name="images")
    for uri, name, checksum in extra_refs:
        art.add_reference(uri, name=name, checksum=checksum)
    return art


def download_layout(src: str, dest: str) -> str:
    """The folder `artifact.download()` makes of the SDK artifact above."""
    for rel in ("labels.csv", "big.bin", "empty.txt", "images/cat.png", "images/dog.png"):
        os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
        shutil.copy(os.path.join(src, rel), os.path.join(dest, rel))
    return dest


def exported_digest(text: str) -> str:
    return ArtifactManifest.from_manifest_json(json.loads(text)).digest()


def test_import_then_export_gives_the_sdk_digest(
    artfs,
    tmp_path,
    nginx_server,  # noqa: F811
    s3_endpoint,
    new_bucket,
    monkeypatch,
):
    src = source_tree(tmp_path / "src")
    nginx_server.put("wandb-interop/data.bin", b"served bytes")
    url = nginx_server.url("wandb-interop/data.bin")
    bucket = new_bucket()
    client = s3_client(s3_endpoint)
    client.put_object(Bucket=bucket, Key="raw/one.bin", Body=b"one")
    client.put_object(Bucket=bucket, Key="raw/two.bin", Body=b"two two")
    monkeypatch.setenv("AWS_S3_ENDPOINT_URL", s3_endpoint)  # W&B's own variable for it
    local_ref = write(tmp_path / "outside" / "ref.txt", b"a local file, referenced")
    art = sdk_artifact(
        src,
        [
            (url, "web/data.bin", True),
            (f"s3://{bucket}/raw", "raw", True),
            ("file://" + local_ref, "ref.txt", True),
            ("http://127.0.0.1:9/unpinned.bin", "unpinned.bin", False),
        ],
    )
    doc = art.manifest.to_manifest_json()
    assert doc["contents"]["raw/one.bin"]["ref"] == f"s3://{bucket}/raw/one.bin"  # the SDK did pin it
    manifest_file = tmp_path / "manifest.json"
    manifest_file.write_text(json.dumps(doc))
    files = download_layout(src, str(tmp_path / "downloaded"))

    assert (
        artfs(
            "wandb",
            "import",
            str(manifest_file),
            "--files",
            files,
            "--name",
            "demo/bikes",
            "--type",
            "dataset",
            "--alias",
            "from-wandb",
        )
        .ok()
        .out
        == "demo/bikes:v0"
    )

    info = json.loads(artfs("info", "demo/bikes:from-wandb").ok().out)
    assert info["files"] == 10 and info["references"] == 5
    got = tmp_path / "got"
    artfs("get", "demo/bikes:v0", "--root", str(got), "--path", "images").ok()
    assert (got / "images" / "dog.png").read_bytes() == b"\x89PNG dog" * 3000
    artfs("get", "demo/bikes:v0", "--root", str(got), "--path", "raw").ok()
    assert (got / "raw" / "two.bin").read_bytes() == b"two two"
    artfs("get", "demo/bikes:v0", "--root", str(got), "--path", "web").ok()
    assert (got / "web" / "data.bin").read_bytes() == b"served bytes"

    out = tmp_path / "exported.json"
    artfs("wandb", "export", "demo/bikes:v0", "-o", str(out)).ok()
    assert exported_digest(out.read_text()) == art.manifest.digest()
    assert artfs("wandb", "export", "demo/bikes:latest").ok().stdout == out.read_text()

    # the pins came along: a changed S3 object is refused, not served
    client.put_object(Bucket=bucket, Key="raw/one.bin", Body=b"changed")
    artfs("get", "demo/bikes:v0", "--root", str(tmp_path / "again"), "--path", "raw/one.bin").fails("raw/one.bin")


def test_export_of_a_version_made_by_artfs_gives_the_sdk_digest(artfs, tmp_path, nginx_server):  # noqa: F811
    """No import: MD5s are computed at export, from the store (local and S3 stores)."""
    src = source_tree(tmp_path / "src")
    nginx_server.put("wandb-interop/page.html", b"<html>served</html>")
    url = nginx_server.url("wandb-interop/page.html")
    local_ref = write(tmp_path / "outside" / "ref.txt", b"referenced")
    artfs(
        "put",
        os.path.join(src, "labels.csv"),
        os.path.join(src, "big.bin"),
        os.path.join(src, "empty.txt"),
        os.path.join(src, "images"),
        url,
        "file://" + local_ref,
        "--name",
        "demo/bikes",
        "--type",
        "dataset",
    ).ok()
    sdk = sdk_artifact(src, [(url, "page.html", True), ("file://" + local_ref, "ref.txt", True)])

    text = artfs("wandb", "export", "demo/bikes:v0").ok().stdout
    assert exported_digest(text) == sdk.manifest.digest()
    assert (
        json.loads(text)["contents"]["images/cat.png"] == sdk.manifest.to_manifest_json()["contents"]["images/cat.png"]
    )
    # and an import of the SDK's manifest with the same files finds that very version
    (tmp_path / "m.json").write_text(json.dumps(sdk.manifest.to_manifest_json()))
    files = download_layout(src, str(tmp_path / "downloaded"))
    assert (
        artfs(
            "wandb", "import", str(tmp_path / "m.json"), "--files", files, "--name", "demo/bikes", "--type", "dataset"
        )
        .ok()
        .out
        == "demo/bikes:v0"
    )


def test_refused_import_names_every_mismatching_file_and_stores_nothing(artfs, tmp_path):
    src = source_tree(tmp_path / "src")
    art = sdk_artifact(src)
    (tmp_path / "m.json").write_text(json.dumps(art.manifest.to_manifest_json()))
    files = download_layout(src, str(tmp_path / "downloaded"))
    write(os.path.join(files, "images", "cat.png"), b"\x89PNG CAT" * 100)  # same size, other bytes
    os.unlink(os.path.join(files, "labels.csv"))
    write(os.path.join(files, "empty.txt"), b"not empty")

    line = artfs(
        "wandb", "import", str(tmp_path / "m.json"), "--files", files, "--name", "demo/bikes", "--type", "dataset"
    ).fails("images/cat.png", "labels.csv", "empty.txt", "nothing stored")
    assert "big.bin" not in line and "dog.png" not in line
    artfs("ls", "demo/bikes").fails("no artfs store at")  # nothing at all was stored
    artfs("ls").fails("no artfs store at")


def test_an_xxh128_manifest_is_refused(artfs, tmp_path):
    src = source_tree(tmp_path / "src")
    art = wandb.Artifact("fast", type="dataset", digest_algorithm="XXH128")
    art.add_file(os.path.join(src, "labels.csv"))
    (tmp_path / "m.json").write_text(json.dumps(art.manifest.to_manifest_json()))
    artfs(
        "wandb", "import", str(tmp_path / "m.json"), "--files", src, "--name", "demo/fast", "--type", "dataset"
    ).fails("labels.csv", "XXH128", "MD5")
    artfs("ls", "demo/fast").fails("no artfs store at")  # nothing at all was stored


def test_bad_import_input_is_one_line(artfs, tmp_path):
    (tmp_path / "notjson.json").write_text("{nope")
    (tmp_path / "other.json").write_text(json.dumps({"hello": 1}))
    artfs(
        "wandb",
        "import",
        str(tmp_path / "notjson.json"),
        "--files",
        str(tmp_path),
        "--name",
        "p/a",
        "--type",
        "dataset",
    ).fails("not JSON")
    artfs(
        "wandb", "import", str(tmp_path / "other.json"), "--files", str(tmp_path), "--name", "p/a", "--type", "dataset"
    ).fails("not a W&B artifact manifest")
    artfs(
        "wandb",
        "import",
        str(tmp_path / "missing.json"),
        "--files",
        str(tmp_path),
        "--name",
        "p/a",
        "--type",
        "dataset",
    ).fails("no such file")
    artfs("wandb", "export", "p/nothing:v0").fails("no artfs store at")
    (tmp_path / "m.json").write_text(json.dumps({"version": 1, "contents": {"a": {"digest": "x", "size": 1}}}))
    artfs(
        "wandb",
        "import",
        str(tmp_path / "m.json"),
        "--files",
        str(tmp_path / "nowhere"),
        "--name",
        "p/a",
        "--type",
        "dataset",
    ).fails("nowhere", "no such folder")
    assert "import" in artfs("wandb", "--help").ok().stdout and "wandb" in artfs("--help").ok().stdout


def test_artfs_wandb_layer_logs_what_the_sdk_would(tmp_path, monkeypatch):
    """The same files through `artfs.wandb` and through the SDK: the same W&B manifest digest."""
    import warnings

    import artfs.wandb as awb

    monkeypatch.setenv("ARTFS_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("ARTFS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ARTFS_RUN_ID", raising=False)
    warnings.simplefilter("ignore", awb.ArtfsWandbWarning)
    src = source_tree(tmp_path / "src")
    with awb.init(project="demo") as run:
        mine = awb.Artifact("bikes", type="dataset")
        for rel in ("labels.csv", "big.bin", "empty.txt"):
            mine.add_file(os.path.join(src, rel))
        mine.add_dir(os.path.join(src, "images"), name="images")
        run.log_artifact(mine)
    assert mine.manifest.digest() == sdk_artifact(src).manifest.digest()


def test_export_in_small_batches_gives_the_same_manifest(tmp_path, monkeypatch, local_store_url, cache_dir):
    """Export holds about EXPORT_BATCH bytes on disk at a time; the result does not depend on it."""
    import artfs
    from artfs.wandb import manifest

    src = source_tree(tmp_path / "src")
    store = artfs.Store(local_store_url, cache_dir)
    art = artfs.Artifact("demo/bikes", "dataset")
    for rel in ("labels.csv", "big.bin", "empty.txt"):
        art.add_file(os.path.join(src, rel))
    art.add_dir(os.path.join(src, "images"), name="images")
    store.log_artifact(art)
    monkeypatch.setattr(manifest, "EXPORT_BATCH", 1000)
    doc = manifest.export_manifest(store, store.resolve("demo/bikes:v0"))
    assert ArtifactManifest.from_manifest_json(doc).digest() == sdk_artifact(src).manifest.digest()
