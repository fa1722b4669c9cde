"""References (s3://, gs://, http(s)://, file://) against real servers on loopback:
SeaweedFS as the referenced S3 (a versioned and an unversioned bucket) and as the
GCS XML-API endpoint, nginx for HTTP (ETag, Range, If-Match), local files for file://.

The 10,001-object refusal is tested on file:// (10,001 tiny files take well under a
second); S3 and GCS prefixes are tested against a small max_objects instead, since
10,001 PUTs to SeaweedFS would take most of the test budget.
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import re
import secrets
import subprocess
import time

import pytest

from conftest import make_bucket, read_tree, run_artfs, s3_client, write_tree
from http_server import nginx_server  # noqa: F401  (fixture)
from mounts import mounter, errno_of  # noqa: F401  (fixture)

import artfs
from artfs.references import access as references
from artfs.errors import Conflict, InvalidInput, NotFound, ReferenceChanged, StoreUnavailable

MiB = 1 << 20
_n = itertools.count()


def marker(tag: str, size: int = 64) -> bytes:
    """Distinctive bytes: found in the store only if a reference was uploaded."""
    head = f"<<artfs-ref-{tag}-{secrets.token_hex(8)}>>".encode()
    return head + os.urandom(max(0, size - len(head)))


def unique(stem: str) -> str:
    return f"{stem}-{next(_n)}-{secrets.token_hex(3)}"


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def ref_buckets(s3_endpoint):
    """(versioned, unversioned) buckets on the session's SeaweedFS, holding referenced objects."""
    c = s3_client(s3_endpoint)
    versioned = make_bucket(s3_endpoint)
    c.put_bucket_versioning(Bucket=versioned, VersioningConfiguration={"Status": "Enabled"})
    assert c.get_bucket_versioning(Bucket=versioned).get("Status") == "Enabled"
    return versioned, make_bucket(s3_endpoint)


@pytest.fixture
def s3(s3_endpoint):
    return s3_client(s3_endpoint)


@pytest.fixture
def gs_env(s3_endpoint, monkeypatch):
    """gs:// through the XML API of 'GCS' = SeaweedFS, with HMAC keys (also for subprocesses)."""
    monkeypatch.setenv("ARTFS_REF_GS_ENDPOINT", s3_endpoint)
    monkeypatch.setenv("ARTFS_REF_GS_ACCESS_KEY_ID", "GOOGHMACKEY")
    monkeypatch.setenv("ARTFS_REF_GS_SECRET_ACCESS_KEY", "hmac-secret")


@pytest.fixture
def cli(local_store_url, cache_dir, tmp_path):
    def run(*args, **kw):
        kw.setdefault("store", local_store_url)
        kw.setdefault("cache", cache_dir)
        kw.setdefault("cwd", str(tmp_path))
        return run_artfs(args, **kw)

    run.store, run.cache = local_store_url, cache_dir
    return run


def store_bytes(store_path: str) -> bytes:
    out = bytearray()
    for dirpath, _dirs, files in os.walk(store_path):
        for fn in files:
            with open(os.path.join(dirpath, fn), "rb") as f:
                out += f.read()
    return bytes(out)


def put_objects(s3, bucket: str, objects: dict[str, bytes]) -> None:
    for key, data in objects.items():
        s3.put_object(Bucket=bucket, Key=key, Body=data)


# -- naming (W&B's table) -----------------------------------------------------------------------


def test_naming_follows_the_wandb_table(ref_buckets, s3):
    _, bucket = ref_buckets
    root = unique("naming")
    put_objects(
        s3,
        bucket,
        {
            f"{root}/model.h5": b"m",
            f"{root}/checkpoints/model.h5": b"c",
            f"{root}/images/cat.png": b"cat",
            f"{root}/images/dog.png": b"dog",
            f"{root}/images2/not-images.png": b"x",
            f"{root}/images/folder/": b"",
        },
    )
    base = f"s3://{bucket}/{root}"

    def names(uri, name=None):
        return sorted(e.path for e in references.resolve(uri, name))

    assert names(f"{base}/model.h5") == ["model.h5"]
    assert names(f"{base}/checkpoints/model.h5") == ["model.h5"]
    assert names(f"{base}/model.h5", "models/mymodel.h5") == ["models/mymodel.h5"]
    assert names(f"{base}/images") == ["cat.png", "dog.png"]  # not images2/, not the folder marker
    assert names(f"{base}/images/") == ["cat.png", "dog.png"]
    assert names(f"{base}/images", "images") == ["images/cat.png", "images/dog.png"]
    e = references.resolve(f"{base}/images/cat.png")[0]
    assert e.ref["uri"] == f"{base}/images/cat.png" and e.size == 3 and e.ref["etag"]
    with pytest.raises(NotFound, match="no such object"):
        references.resolve(f"{base}/nothing-here")


def test_file_naming_and_pins(tmp_path):
    src = write_tree(tmp_path / "data", {"a.txt": "a", "sub/b.txt": "bb", "big.bin": os.urandom(3 * MiB + 5)})
    os.chmod(os.path.join(src, "a.txt"), 0o755)
    by_path = {e.path: e for e in references.resolve(f"file://{src}", "d")}
    assert sorted(by_path) == ["d/a.txt", "d/big.bin", "d/sub/b.txt"]
    a, big = by_path["d/a.txt"], by_path["d/big.bin"]
    assert a.mode == 0o755 and a.size == 1 and len(a.digest) == 32 and "chunks" not in a.ref
    assert a.ref["uri"] == f"file://{src}/a.txt" and a.ref["mtime_ns"] == os.stat(f"{src}/a.txt").st_mtime_ns
    assert len(big.ref["chunks"]) == 4 * 32  # one blake3 per MiB chunk
    assert [e.path for e in references.resolve(f"file://{src}/sub/b.txt")] == ["b.txt"]
    with pytest.raises(InvalidInput, match="file:///"):
        references.resolve("file://relative/path")
    with pytest.raises(InvalidInput, match="unsupported reference scheme"):
        references.resolve("ftp://host/x")


# -- put and get, every scheme ---------------------------------------------------------------------


def test_put_get_info_every_scheme_and_nothing_is_uploaded(cli, ref_buckets, s3, nginx_server, gs_env, tmp_path):
    versioned, unversioned = ref_buckets
    root = unique("put")
    s3_data = {"images/cat.png": marker("s3-cat"), "images/sub/dog.png": marker("s3-dog")}
    put_objects(s3, versioned, {f"{root}/{k}": v for k, v in s3_data.items()})
    gs_data = marker("gs")
    put_objects(s3, unversioned, {f"{root}/weights.bin": gs_data})
    http_data = marker("http", 5000)
    nginx_server.put(f"{root}/page.bin", http_data)
    files = write_tree(tmp_path / "local-src", {"x.txt": marker("file-x"), "deep/y.bin": marker("file-y", 2 * MiB)})
    local = tmp_path / "notes.txt"
    local.write_bytes(b"stored, not referenced")

    out = cli(
        "put",
        f"s3://{versioned}/{root}/images",
        f"gs://{unversioned}/{root}/weights.bin",
        nginx_server.url(f"{root}/page.bin"),
        f"file://{files}",
        str(local),
        "--name",
        "demo/refs",
        "--type",
        "dataset",
    ).ok()
    assert out.out == "demo/refs:v0"

    ls = cli("ls", "demo/refs:v0").ok().stdout
    assert f"-> s3://{versioned}/{root}/images/cat.png" in ls
    info = json.loads(cli("info", "demo/refs:v0").ok().stdout)
    assert info["files"] == 7 and info["references"] == 6
    assert sorted(info["reference_uris"]) == sorted(
        [
            f"s3://{versioned}/{root}/images/cat.png",
            f"s3://{versioned}/{root}/images/sub/dog.png",
            f"gs://{unversioned}/{root}/weights.bin",
            nginx_server.url(f"{root}/page.bin"),
            f"file://{files}/x.txt",
            f"file://{files}/deep/y.bin",
        ]
    )

    root_dir = cli("get", "demo/refs:v0", "--root", str(tmp_path / "got")).ok().out
    got = read_tree(root_dir)
    assert got == {
        "images/cat.png": s3_data["images/cat.png"],
        "images/sub/dog.png": s3_data["images/sub/dog.png"],
        "weights.bin": gs_data,
        "page.bin": http_data,
        "local-src/x.txt": read_tree(files)["x.txt"],
        "local-src/deep/y.bin": read_tree(files)["deep/y.bin"],
        "notes.txt": b"stored, not referenced",
    }
    # A reference never becomes a stored object: none of its bytes are in the store.
    stored = store_bytes(cli.store)
    assert b"stored, not referenced" in stored
    for data in [*s3_data.values(), gs_data, http_data, *read_tree(files).values()]:
        assert data[:32] not in stored

    # The same URIs again: same pins, same manifest, no new version.
    again = cli(
        "put",
        f"s3://{versioned}/{root}/images",
        f"gs://{unversioned}/{root}/weights.bin",
        nginx_server.url(f"{root}/page.bin"),
        f"file://{files}",
        str(local),
        "--name",
        "demo/refs",
        "--type",
        "dataset",
    ).ok()
    assert again.out == "demo/refs:v0"


def test_single_uri_puts_objects_at_the_root(cli, ref_buckets, s3):
    _, bucket = ref_buckets
    root = unique("single")
    put_objects(s3, bucket, {f"{root}/a/1.txt": b"one", f"{root}/a/2.txt": b"two"})
    assert (
        cli("put", f"s3://{bucket}/{root}/a", "--name", "demo/single", "--type", "dataset").ok().out == "demo/single:v0"
    )
    assert cli("ls", "demo/single:v0").ok().stdout.splitlines() == [
        f"3\t1.txt\t-> s3://{bucket}/{root}/a/1.txt",
        f"3\t2.txt\t-> s3://{bucket}/{root}/a/2.txt",
    ]


def test_python_api_add_reference(local_store_url, cache_dir, ref_buckets, s3, nginx_server, tmp_path):
    _, bucket = ref_buckets
    root = unique("api")
    put_objects(s3, bucket, {f"{root}/ckpt/model.h5": b"weights"})
    nginx_server.put(f"{root}/labels.csv", b"id,label\n1,cat\n")
    store = artfs.Store(local_store_url, cache_dir)
    art = artfs.Artifact("demo/api", type="model")
    art.add_reference(f"s3://{bucket}/{root}/ckpt/model.h5", name="models/mymodel.h5")
    art.add_reference(nginx_server.url(f"{root}/labels.csv"))
    with art.new_file("README") as f:
        f.write("hi")
    assert art.files == ["README", "labels.csv", "models/mymodel.h5"]
    with pytest.raises(Conflict):
        art.new_file("labels.csv")
    store.log_artifact(art)
    assert art.qualified_name == "demo/api:v0"

    used = store.use_artifact("demo/api:latest")
    assert used.get_path("models/mymodel.h5").ref() == f"s3://{bucket}/{root}/ckpt/model.h5"
    assert used.get_path("labels.csv").is_reference
    with pytest.raises(InvalidInput, match="not a reference"):
        used.get_path("README").ref()
    path = used.get_path("models/mymodel.h5").download(str(tmp_path / "one"))
    assert open(path, "rb").read() == b"weights"
    assert read_tree(used.download(str(tmp_path / "all"))) == {
        "README": b"hi",
        "labels.csv": b"id,label\n1,cat\n",
        "models/mymodel.h5": b"weights",
    }

    # New drafts carry references over unread, like any entry; remove() drops one.
    draft = used.new_draft()
    draft.remove("labels.csv")
    draft.add_reference(f"s3://{bucket}/{root}/ckpt", name="more")
    store.log_artifact(draft)
    m = draft.manifest
    assert m.paths == ["README", "models/mymodel.h5", "more/model.h5"] and m.reference_count == 2
    assert m.get("models/mymodel.h5").ref == used.manifest.get("models/mymodel.h5").ref


# -- pins: what happens when the source changes --------------------------------------------------


def test_versioned_s3_serves_the_pinned_version_after_overwrite(cli, ref_buckets, s3, tmp_path):
    bucket, _ = ref_buckets
    key = f"{unique('ver')}/model.bin"
    s3.put_object(Bucket=bucket, Key=key, Body=b"version one")
    cli("put", f"s3://{bucket}/{key}", "--name", "demo/ver", "--type", "model").ok()
    entry = (
        artfs.Store(cli.store, cli.cache)
        .manifest(artfs.Store(cli.store, cli.cache).resolve("demo/ver:v0"))
        .get("model.bin")
    )
    assert entry.ref["version_id"] and entry.ref["etag"]
    s3.put_object(Bucket=bucket, Key=key, Body=b"version two, longer")
    s3.delete_object(Bucket=bucket, Key=key)  # even a delete marker on top does not matter
    root = cli("get", "demo/ver:v0", "--root", str(tmp_path / "got")).ok().out
    assert read_tree(root) == {"model.bin": b"version one"}
    assert references.read(entry, 8, 11) == b"one"


def test_unversioned_s3_overwrite_is_a_clear_error(cli, ref_buckets, s3, tmp_path):
    _, bucket = ref_buckets
    key = f"{unique('unver')}/model.bin"
    s3.put_object(Bucket=bucket, Key=key, Body=b"original")
    cli("put", f"s3://{bucket}/{key}", "--name", "demo/unver", "--type", "model").ok()
    s3.put_object(Bucket=bucket, Key=key, Body=b"replaced")  # same size, other bytes
    line = cli("get", "demo/unver:v0", "--root", str(tmp_path / "got")).fails(
        "model.bin", f"s3://{bucket}/{key}", "no longer matches"
    )
    assert "ETag" in line
    assert not os.path.exists(tmp_path / "got" / "model.bin")
    s3.delete_object(Bucket=bucket, Key=key)
    cli("get", "demo/unver:v0", "--root", str(tmp_path / "got")).fails("model.bin", "no longer")


def test_http_change_is_refused_and_ranges_are_pinned(nginx_server):
    rel = f"{unique('http')}/data.bin"
    data = os.urandom(300_000)
    nginx_server.put(rel, data, mtime=time.time() - 100)
    (e,) = references.resolve(nginx_server.url(rel))
    assert e.size == len(data) and e.ref["etag"].startswith('"')
    assert references.read(e, 1000, 2000) == data[1000:2000]
    assert references.read(e) == data
    nginx_server.put(rel, os.urandom(len(data)), mtime=time.time())  # same size, new ETag
    with pytest.raises(ReferenceChanged, match=re.escape(nginx_server.url(rel))):
        references.read(e, 0, 10)
    # nginx logs a request after its response has gone out: give the last line a moment.
    log_path = os.path.join(nginx_server.dir, "access.log")
    deadline = time.monotonic() + 5
    while '" 412 ' not in (access := open(log_path).read()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert '" 412 ' in access and '" 206 ' in access  # If-Match refused it; Range was honoured


def test_file_changes_are_caught_by_size_mtime_and_blake3(tmp_path):
    path = tmp_path / "big.bin"
    data = bytearray(os.urandom(3 * MiB + 100))
    path.write_bytes(data)
    (e,) = references.resolve(f"file://{path}")
    assert references.read(e, MiB + 5, MiB + 10) == data[MiB + 5 : MiB + 10]
    # Same size, same mtime, one byte different in chunk 2: only reads touching it fail.
    st = os.stat(path)
    with open(path, "r+b") as f:
        f.seek(2 * MiB + 7)
        f.write(bytes([data[2 * MiB + 7] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert references.read(e, 0, 100) == data[:100]
    with pytest.raises(ReferenceChanged, match="chunk 2"):
        references.read(e, 2 * MiB, 2 * MiB + 10)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    with pytest.raises(ReferenceChanged, match="modified"):
        references.read(e, 0, 100)
    small = tmp_path / "small.txt"
    small.write_bytes(b"hello")
    (s,) = references.resolve(f"file://{small}")
    st = os.stat(small)
    small.write_bytes(b"jello")
    os.utime(small, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(ReferenceChanged, match="blake3"):
        references.read(s, 0, 2)
    small.unlink()
    with pytest.raises(ReferenceChanged, match="no longer exists"):
        references.read(s)


# -- max_objects ------------------------------------------------------------------------------------


def test_a_folder_of_10001_files_is_refused_until_the_limit_is_raised(cli, tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(10_001):
        with open(folder / f"f{i:05d}", "wb") as f:
            f.write(b"%d" % i)
    line = cli("put", f"file://{folder}", "--name", "demo/many", "--type", "dataset").fails("10000", "--max-objects")
    assert "max_objects=" in line
    with pytest.raises(InvalidInput, match="more than 10000 objects.*max_objects="):
        artfs.Artifact("demo/many", "dataset").add_reference(f"file://{folder}")
    assert (
        cli(
            "put",
            f"file://{folder}",
            "--max-objects",
            "10001",
            "--no-checksum",
            "--name",
            "demo/many",
            "--type",
            "dataset",
        )
        .ok()
        .out
        == "demo/many:v0"
    )
    info = json.loads(cli("info", "demo/many:v0").ok().stdout)
    assert info["references"] == 10_001 and len(info["reference_uris"]) == 100


@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_bucket_prefix_over_max_objects_is_refused(ref_buckets, s3, gs_env, scheme):
    versioned, unversioned = ref_buckets
    bucket = versioned if scheme == "s3" else unversioned  # s3 lists versions here, gs plain objects
    root = unique("count")
    put_objects(s3, bucket, {f"{root}/{i}.txt": b"x" for i in range(5)})
    with pytest.raises(InvalidInput, match="more than 4 objects.*max_objects="):
        references.resolve(f"{scheme}://{bucket}/{root}", max_objects=4)
    assert len(references.resolve(f"{scheme}://{bucket}/{root}", max_objects=5)) == 5


# -- checksum=False --------------------------------------------------------------------------------


def test_no_checksum_keeps_only_the_uri(cli, ref_buckets, s3, nginx_server, tmp_path):
    _, bucket = ref_buckets
    key = f"{unique('nock')}/free.txt"
    s3.put_object(Bucket=bucket, Key=key, Body=b"first")
    nginx_server.put(f"{key}.html", b"<p>page</p>")
    local = tmp_path / "loose.txt"
    local.write_bytes(b"loose")
    uris = [f"s3://{bucket}/{key}", nginx_server.url(f"{key}.html"), f"file://{local}"]
    for uri in uris:
        (e,) = references.resolve(uri, checksum=False)
        assert e.ref == {"uri": uri} and e.size == -1
    cli("put", *uris, "--no-checksum", "--name", "demo/nock", "--type", "dataset").ok()
    s3.put_object(Bucket=bucket, Key=key, Body=b"second, longer")  # nothing pinned: the new bytes are served
    got = read_tree(cli("get", "demo/nock:v0", "--root", str(tmp_path / "got")).ok().out)
    assert got == {"free.txt": b"second, longer", "free.txt.html": b"<p>page</p>", "loose.txt": b"loose"}


# -- credentials and configuration ------------------------------------------------------------------


def test_missing_or_unknown_credentials_are_clear_errors(cli, ref_buckets, s3, nginx_server, tmp_path, monkeypatch):
    _, bucket = ref_buckets
    key = f"{unique('creds')}/x.txt"
    s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    uri = f"s3://{bucket}/{key}"
    args = ("put", uri, "--name", "demo/creds", "--type", "dataset")
    cli(*args, env={"ARTFS_REF_S3_PROFILE": "no-such-profile"}).fails("profile", "no-such-profile")
    empty = tmp_path / "empty-aws"
    empty.write_text("")
    no_keys = {
        "AWS_ACCESS_KEY_ID": "",
        "AWS_SECRET_ACCESS_KEY": "",
        "AWS_SHARED_CREDENTIALS_FILE": str(empty),
        "AWS_CONFIG_FILE": str(empty),
    }
    cli(*args, env=no_keys).fails("no credentials", uri.split("/")[2])
    # gs:// needs HMAC keys of its own (the AWS ones are not sent to Google)
    monkeypatch.delenv("ARTFS_REF_GS_ACCESS_KEY_ID", raising=False)
    cli("put", f"gs://{bucket}/{key}", "--name", "demo/creds", "--type", "dataset").fails("HMAC", "ARTFS_REF_GS_")
    # an HTTP endpoint that wants credentials
    nginx_server.put("private/secret.bin", b"secret")
    cli("put", nginx_server.url("private/secret.bin"), "--name", "demo/creds", "--type", "dataset").fails(
        "access denied", "401"
    )
    with pytest.raises(StoreUnavailable, match="401"):
        references.resolve(nginx_server.url("private/secret.bin"))


def test_endpoint_per_bucket_from_the_config_file(ref_buckets, s3, s3_endpoint, tmp_path, monkeypatch):
    _, bucket = ref_buckets
    key = f"{unique('cfg')}/x.txt"
    s3.put_object(Bucket=bucket, Key=key, Body=b"configured")
    dead = f"http://127.0.0.1:{_dead_port()}"
    monkeypatch.setenv("ARTFS_REF_S3_ENDPOINT", dead)
    monkeypatch.setenv("ARTFS_REF_ATTEMPTS", "1")
    monkeypatch.setenv("ARTFS_REF_CONFIG", str(tmp_path / "references.toml"))
    with pytest.raises(StoreUnavailable, match="cannot reach"):
        references.resolve(f"s3://{bucket}/{key}")
    (tmp_path / "references.toml").write_text(f'[s3.buckets."{bucket}"]\nendpoint = "{s3_endpoint}"\n')
    (e,) = references.resolve(f"s3://{bucket}/{key}")
    assert references.read(e) == b"configured"
    (tmp_path / "references.toml").write_text("[s3\n")
    with pytest.raises(InvalidInput, match="invalid references config"):
        references.resolve(f"s3://{bucket}/{key}")


def _dead_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- drafts ------------------------------------------------------------------------------------------


def test_ref_add_into_a_stored_draft_and_commit(cli, ref_buckets, s3, tmp_path):
    _, bucket = ref_buckets
    root = unique("draft")
    put_objects(s3, bucket, {f"{root}/imgs/a.png": b"A", f"{root}/imgs/b.png": b"BB", f"{root}/one.txt": b"1"})
    src = write_tree(tmp_path / "src", {"keep.txt": "kept", "sub/old.txt": "old"})
    cli("put", src, "--name", "demo/dr", "--type", "dataset").ok()
    assert cli("draft", "demo/dr:v0", "--name", "d1").ok().out == "demo/dr/drafts/d1"
    out = cli("ref", "add", "demo/dr/drafts/d1", f"s3://{bucket}/{root}/imgs", "--name", "sub/imgs").ok()
    assert out.stdout.split() == ["sub/imgs/a.png", "sub/imgs/b.png"]
    cli("ref", "add", "demo/dr/drafts/d1", f"s3://{bucket}/{root}/one.txt", "--name", "sub/old.txt").ok()  # replaces
    cli("ref", "add", "demo/dr/drafts/d1", f"s3://{bucket}/{root}/one.txt", "--name", "sub").fails("folder")
    cli("ref", "add", "demo/nope/drafts/zz", f"s3://{bucket}/{root}/one.txt").fails("no draft")
    assert cli("commit", "demo/dr/drafts/d1").ok().out == "demo/dr:v1"
    lines = cli("ls", "demo/dr:v1").ok().stdout.splitlines()
    assert lines == [
        "4\tkeep.txt",
        f"1\tsub/imgs/a.png\t-> s3://{bucket}/{root}/imgs/a.png",
        f"2\tsub/imgs/b.png\t-> s3://{bucket}/{root}/imgs/b.png",
        f"1\tsub/old.txt\t-> s3://{bucket}/{root}/one.txt",
    ]
    # A draft of v1 carries the references over (rows pointing into the base manifest).
    cli("draft", "demo/dr:v1", "--name", "d2").ok()
    cli("ref", "add", "demo/dr/drafts/d2", f"s3://{bucket}/{root}/one.txt", "--name", "extra.txt").ok()
    assert cli("commit", "demo/dr/drafts/d2").ok().out == "demo/dr:v2"
    got = read_tree(cli("get", "demo/dr:v2", "--root", str(tmp_path / "got")).ok().out)
    assert got == {
        "keep.txt": b"kept",
        "sub/imgs/a.png": b"A",
        "sub/imgs/b.png": b"BB",
        "sub/old.txt": b"1",
        "extra.txt": b"1",
    }


# -- the mount -----------------------------------------------------------------------------------------


@pytest.mark.mount
def test_mount_reads_references_of_every_scheme(cli, ref_buckets, s3, nginx_server, gs_env, mounter, tmp_path):
    versioned, unversioned = ref_buckets
    root = unique("mnt")
    big_s3 = os.urandom(2 * MiB + 12345)
    put_objects(s3, versioned, {f"{root}/big.bin": big_s3})
    put_objects(s3, unversioned, {f"{root}/g.bin": b"from gcs", f"{root}/free.txt": b"unpinned bytes"})
    http_data = os.urandom(150_000)
    nginx_server.put(f"{root}/h.bin", http_data)
    big_file = tmp_path / "big-file.bin"
    big_file.write_bytes(os.urandom(3 * MiB + 7))
    art = artfs.Artifact("demo/mnt", "dataset")
    art.add_reference(f"s3://{versioned}/{root}/big.bin")
    art.add_reference(f"gs://{unversioned}/{root}/g.bin", name="gcs/g.bin")
    art.add_reference(nginx_server.url(f"{root}/h.bin"))
    art.add_reference(f"file://{big_file}", name="local/big-file.bin")
    art.add_reference(f"s3://{unversioned}/{root}/free.txt", checksum=False)
    artfs.Store(cli.store, cli.cache).log_artifact(art)

    m = mounter(cli.store, cache=str(tmp_path / "mount-cache"))
    v0 = m.path("demo", "mnt", "v0")
    expect = {
        "big.bin": big_s3,
        "gcs/g.bin": b"from gcs",
        "h.bin": http_data,
        "local/big-file.bin": big_file.read_bytes(),
        "free.txt": b"unpinned bytes",
    }
    for rel, data in expect.items():
        if rel != "free.txt":
            assert os.stat(os.path.join(v0, rel)).st_size == len(data), rel  # the true size
    with open(os.path.join(v0, "big.bin"), "rb") as f:  # a ranged read in the middle
        f.seek(MiB + 1000)
        assert f.read(5000) == big_s3[MiB + 1000 : MiB + 6000]
    assert read_tree(v0) == expect  # free.txt has no known size: served with direct_io to its end
    assert subprocess.run(["cat", os.path.join(v0, "free.txt")], capture_output=True).stdout == b"unpinned bytes"
    assert os.getxattr(os.path.join(v0, "gcs/g.bin"), "user.artfs.ref").decode() == f"gs://{unversioned}/{root}/g.bin"
    assert "EIO" not in m.log()

    # A mounted draft: mkdir, `artfs ref add` through the Draft API, read, commit through the mount.
    os.mkdir(m.path("demo", "mnt", "drafts", "d"))
    d = m.path("demo", "mnt", "drafts", "d")
    cli("ref", "add", d, nginx_server.url(f"{root}/h.bin"), "--name", "added/h.bin", cache=m.cache).ok()
    assert open(os.path.join(d, "added", "h.bin"), "rb").read() == http_data
    assert open(os.path.join(d, "big.bin"), "rb").read(10) == big_s3[:10]  # carried from v0
    cli("ref", "add", d, nginx_server.url(f"{root}/h.bin")).fails("--cache")  # another cache: refused
    with open(os.path.join(d, "gcs", "g.bin"), "ab") as f:  # a change copies the source's bytes up first
        f.write(b" + local")
    assert open(os.path.join(d, "gcs", "g.bin"), "rb").read() == b"from gcs + local"
    assert cli("commit", d).ok().out == "demo/mnt:v1"
    m1 = artfs.Store(cli.store, cli.cache).manifest(artfs.Store(cli.store, cli.cache).resolve("demo/mnt:v1"))
    assert m1.reference_count == 5 and m1.get("added/h.bin").ref["uri"] == nginx_server.url(f"{root}/h.bin")
    assert m1.get("gcs/g.bin").ref is None and m1.get("gcs/g.bin").size == len(b"from gcs + local")


@pytest.mark.mount
def test_mount_serves_pinned_bytes_or_eio_with_one_log_line(cli, ref_buckets, s3, nginx_server, mounter, tmp_path):
    versioned, unversioned = ref_buckets
    root = unique("pins")
    put_objects(s3, versioned, {f"{root}/v.bin": b"pinned version"})
    put_objects(s3, unversioned, {f"{root}/u.bin": b"unversioned"})
    nginx_server.put(f"{root}/h.bin", b"http original", mtime=time.time() - 100)
    gone = tmp_path / "gone.txt"
    gone.write_bytes(b"soon deleted")
    uris = {
        "v.bin": f"s3://{versioned}/{root}/v.bin",
        "u.bin": f"s3://{unversioned}/{root}/u.bin",
        "h.bin": nginx_server.url(f"{root}/h.bin"),
        "gone.txt": f"file://{gone}",
    }
    cli("put", *uris.values(), "--name", "demo/pins", "--type", "dataset").ok()

    s3.put_object(Bucket=versioned, Key=f"{root}/v.bin", Body=b"overwritten!!")
    s3.put_object(Bucket=unversioned, Key=f"{root}/u.bin", Body=b"overwritten")
    nginx_server.put(f"{root}/h.bin", b"http changed!", mtime=time.time())
    gone.unlink()

    m = mounter(cli.store)
    v0 = m.path("demo", "pins", "v0")
    assert open(os.path.join(v0, "v.bin"), "rb").read() == b"pinned version"
    for rel in ("u.bin", "h.bin", "gone.txt"):
        path = os.path.join(v0, rel)
        assert errno_of(lambda p=path: open(p, "rb").read()) == errno.EIO, rel
        lines = [line for line in m.log().splitlines() if uris[rel] in line]
        assert len(lines) == 1, f"{rel}: expected one log line naming {uris[rel]}:\n{m.log()}"
        assert rel in lines[0] and "no longer matches" in lines[0] and "Traceback" not in m.log()
    root_dir = tmp_path / "got"
    cli("get", "demo/pins:v0", "--root", str(root_dir), "--path", "v.bin").ok()
    assert (root_dir / "v.bin").read_bytes() == b"pinned version"
