"""The Python API as a user of it sees it, on every store backend (`store_url`: local and S3)."""

from __future__ import annotations

import os
import shutil
from collections import Counter

import pytest

import artfs
from artfs.errors import Conflict, InvalidInput, NotFound
from artfs.store.backends.base import ObjectStore
from artfs.store.location import open_store


# -- helpers -----------------------------------------------------------------------
def write_tree(root, files: dict[str, bytes | str]) -> str:
    for rel, data in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
    return str(root)


def read_tree(root) -> dict[str, bytes]:
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for fn in files:
            full = os.path.join(dirpath, fn)
            with open(full, "rb") as f:
                out[os.path.relpath(full, root).replace(os.sep, "/")] = f.read()
    return out


class CountingStore(ObjectStore):
    """Wraps a real object store and counts writes by key kind (objects, packs, manifests, …)."""

    def __init__(self, inner: ObjectStore):
        self.inner, self.url = inner, inner.url
        self.puts: Counter = Counter()
        self.bytes_put = 0

    def reset(self) -> None:
        self.puts.clear()
        self.bytes_put = 0

    def _count(self, key: str, n: int) -> None:
        parts = key.split("/")  # objects/…, packs/…, index/…, manifests/…, or artifacts/p/a/<record>
        if parts[0] in ("locks", "lineage"):
            return  # bookkeeping (commit markers, lineage), not content or records
        kind = parts[0] if parts[0] != "artifacts" else parts[3]  # versions, aliases.json, artifact.json
        self.puts[kind] += 1
        self.bytes_put += n

    def get(self, key, start=0, end=None):
        return self.inner.get(key, start, end)

    def get_with_etag(self, key):
        return self.inner.get_with_etag(key)

    def put(self, key, data, *, if_none_match=False, if_match=None):
        etag = self.inner.put(key, data, if_none_match=if_none_match, if_match=if_match)
        self._count(key, len(data))
        return etag

    def put_stream(self, key, stream):
        data = stream.read()
        assert stream.read() == b""  # lets a verifying reader check its digest
        self.inner.put(key, data)
        self._count(key, len(data))

    def head(self, key):
        return self.inner.head(key)

    def list(self, prefix):
        return self.inner.list(prefix)

    def list_prefixes(self, prefix):
        return self.inner.list_prefixes(prefix)

    def delete(self, key, *, if_match=None):
        return self.inner.delete(key, if_match=if_match)


@pytest.fixture
def env(store_url, tmp_path, monkeypatch):
    """ARTFS_STORE names the store under test; the working directory is a scratch folder."""
    monkeypatch.setenv("ARTFS_STORE", store_url)
    monkeypatch.setenv("ARTFS_CACHE", str(tmp_path / "cache"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


@pytest.fixture
def counting(store_url, tmp_path):
    """An explicit artfs.Store over the store under test, counting what it writes."""
    objects = CountingStore(open_store(store_url))
    return artfs.Store(store_url, str(tmp_path / "cache-counting"), objects=objects), objects


# -- round trips --------------------------------------------------------------------------
def test_log_and_use_round_trip_with_nested_names(env):
    src = write_tree(
        env / "src",
        {
            "model.h5": b"weights" * 100,
            "images/cat.png": b"cat",
            "images/dog.png": b"dog",
            "images/deep/er/owl.png": b"owl",
        },
    )
    art = artfs.Artifact("bikes", type="dataset", description="bikes", metadata={"classes": 3})
    assert art.is_draft and art.version is None and art.state == "PENDING"
    art.add_file(os.path.join(src, "model.h5"), name="models/best/model.h5")
    art.add_file(os.path.join(src, "model.h5"))  # basename
    art.add_dir(os.path.join(src, "images"), name="images")
    with art.new_file("notes/README.txt") as f:
        f.write("hello\n")
    with art.new_file("raw.bin", mode="wb") as f:
        f.write(bytes(range(256)))
    expected = {
        "model.h5": b"weights" * 100,
        "models/best/model.h5": b"weights" * 100,
        "images/cat.png": b"cat",
        "images/dog.png": b"dog",
        "images/deep/er/owl.png": b"owl",
        "notes/README.txt": b"hello\n",
        "raw.bin": bytes(range(256)),
    }
    assert art.files == sorted(expected)

    logged = artfs.log_artifact(art, project="demo", aliases=["best"])
    assert logged is art
    assert (logged.version, logged.project, logged.name) == ("v0", "demo", "bikes")
    assert logged.qualified_name == "demo/bikes:v0"
    assert logged.aliases == ["latest", "best"]
    assert not logged.is_draft and logged.state == "COMMITTED"

    used = artfs.use_artifact("demo/bikes:best")
    assert (used.name, used.project, used.version, used.type) == ("bikes", "demo", "v0", "dataset")
    assert used.aliases == ["latest", "best"]
    assert used.description == "bikes" and used.metadata == {"classes": 3}
    assert used.digest == logged.digest and len(used.digest) == 64
    assert used.size == sum(len(v) for v in expected.values())
    assert used.files == sorted(expected) and used.file_count == len(expected)
    assert used.manifest.get("raw.bin").size == 256
    assert used.base_version is None

    path = used.download()
    assert path == str(env / "artifacts" / "bikes" / "v0")
    assert read_tree(path) == expected
    assert read_tree(artfs.use_artifact("bikes:v0", project="demo").download(root="elsewhere")) == expected
    assert read_tree(used.download(root="part", path_prefix="images/deep")) == {"images/deep/er/owl.png": b"owl"}


def test_add_dir_without_name_lands_at_the_root_and_name_is_a_prefix(env):
    src = write_tree(env / "d", {"a.txt": "a", "sub/b.txt": "b"})
    art = artfs.Artifact("demo/dirs", "dataset")
    art.add_dir(src)
    art.add_dir(src, name="pre/fix/")
    assert art.files == ["a.txt", "pre/fix/a.txt", "pre/fix/sub/b.txt", "sub/b.txt"]
    logged = artfs.log_artifact(art)
    assert logged.qualified_name == "demo/dirs:v0"
    assert read_tree(logged.download()) == {
        "a.txt": b"a",
        "sub/b.txt": b"b",
        "pre/fix/a.txt": b"a",
        "pre/fix/sub/b.txt": b"b",
    }


def test_remove_a_file_and_a_folder_prefix(env):
    src = write_tree(
        env / "d", {"keep.txt": "k", "drop.txt": "d", "dir/x": "x", "dir/sub/y": "y", "dirty/z": "z", "other/w": "w"}
    )
    art = artfs.Artifact("demo/rm", "dataset")
    art.add_dir(src)
    art.remove("drop.txt")
    art.remove("dir/")  # everything under dir/, but not dirty/
    art.remove("other")  # a folder without the slash
    assert art.files == ["dirty/z", "keep.txt"]
    with pytest.raises(NotFound, match="no file or folder 'nothing'"):
        art.remove("nothing")
    logged = artfs.log_artifact(art)
    assert read_tree(logged.download()) == {"keep.txt": b"k", "dirty/z": b"z"}


def test_same_content_makes_no_new_version(env):
    src = write_tree(env / "d", {"a.txt": "a", "b/c.txt": "c"})

    def log(**kw):
        art = artfs.Artifact("demo/same", "dataset")
        art.add_dir(src)
        return artfs.log_artifact(art, **kw)

    first = log()
    again = log(aliases=["prod"])  # no new version, but the alias lands on v0
    assert (first.version, again.version) == ("v0", "v0")
    assert again.aliases == ["latest", "prod"]
    write_tree(src, {"b/c.txt": "changed"})
    changed = log()
    assert changed.version == "v1" and changed.base_version == "v0"
    assert changed.aliases == ["latest"]
    assert artfs.use_artifact("demo/same:prod").version == "v0"
    assert artfs.use_artifact("demo/same").version == "v1"


def test_new_draft_moves_only_what_changed(env, counting):
    store, objects = counting
    files = {f"img/{i:03d}.png": f"image {i}" for i in range(30)}
    files["big.bin"] = os.urandom((1 << 20) + 12345)  # stored alone, not packed
    files["labels.csv"] = "id,label\n1,cat\n"
    src = write_tree(env / "v0", files)
    art = artfs.Artifact("demo/inc", "dataset", description="first", metadata={"n": 32})
    art.add_dir(src)
    v0 = store.log_artifact(art)
    assert v0.version == "v0"
    shutil.rmtree(src)  # the base's files are never read again: they need not exist

    draft = store.use_artifact("demo/inc:latest").new_draft()
    assert draft.is_draft and draft.base_version == "v0" and draft.version is None
    assert draft.description == "first" and draft.metadata == {"n": 32}
    assert draft.files == sorted(files)
    new = write_tree(env / "new", {"added.txt": "brand new", "labels.csv": "id,label\n1,dog\n"})
    draft.add_file(os.path.join(new, "added.txt"), name="img/added.txt")  # add
    draft.remove("img/007.png")  # remove
    draft.add_file(os.path.join(new, "labels.csv"))  # replace a carried file
    draft.metadata["n"] = 33
    objects.reset()
    v1 = store.log_artifact(draft, aliases=["fixed"])

    assert v1 is draft and v1.version == "v1" and v1.base_version == "v0"
    assert v1.aliases == ["latest", "fixed"] and v1.metadata == {"n": 33}
    assert v1._stats.files_hashed == 2  # only the two local files were read
    # One pack (+ its index) holding the two new small files, one manifest, one version
    # record, the alias record (+ the version index's copy of the record, and the two new
    # files' dedupe shards): no object for the untouched big file, no old image re-sent.
    puts = Counter(objects.puts)
    assert 1 <= puts.pop("dedupe") <= 2  # (one shard if both digests share a prefix)
    assert puts == Counter(
        {"packs": 1, "index": 1, "manifests": 1, "versions": 1, "aliases.json": 1, "version-index": 1}
    )
    assert objects.bytes_put < 64 << 10

    expected = dict(files)
    del expected["img/007.png"]
    expected["img/added.txt"] = "brand new"
    expected["labels.csv"] = "id,label\n1,dog\n"
    expected = {k: v.encode() if isinstance(v, str) else v for k, v in expected.items()}
    assert read_tree(store.use_artifact("demo/inc:v1").download(root="v1")) == expected
    assert read_tree(store.use_artifact("demo/inc:v0").download(root="v0"))["img/007.png"] == b"image 7"

    # A draft left as its base makes no new version.
    objects.reset()
    same = store.log_artifact(store.use_artifact("demo/inc:v1").new_draft())
    assert same.version == "v1" and objects.puts["versions"] == 0 and objects.puts["packs"] == 0


def test_new_draft_of_an_older_version_and_folder_edits(env):
    src = write_tree(env / "d", {"a/x": "x", "a/y": "y", "b": "b"})
    art = artfs.Artifact("demo/old", "dataset")
    art.add_dir(src)
    artfs.log_artifact(art)
    write_tree(src, {"b": "b2"})
    artfs.log_artifact(artfs.Artifact("demo/old", "dataset").add_dir(src))
    draft = artfs.use_artifact("demo/old:v0").new_draft()
    draft.remove("a")
    with draft.new_file("a") as f:  # a file where a folder was
        f.write("now a file")
    v2 = artfs.log_artifact(draft)
    assert v2.version == "v2" and v2.base_version == "v0"
    assert read_tree(v2.download()) == {"a": b"now a file", "b": b"b"}

    clash = artfs.use_artifact("demo/old:v0").new_draft()
    clash.add_file(os.path.join(src, "b"), name="b/inside")  # "b" is a carried file
    with pytest.raises(InvalidInput, match="both a file and a folder"):
        artfs.log_artifact(clash)


def test_save_changes_description_metadata_and_aliases(env):
    src = write_tree(env / "d", {"a.txt": "a"})
    artfs.log_artifact(
        artfs.Artifact("demo/meta", "model", description="d0", metadata={"old": 1, "keep": 2}).add_dir(src),
        aliases=["candidate"],
    )
    write_tree(src, {"a.txt": "a2"})
    artfs.log_artifact(artfs.Artifact("demo/meta", "model").add_dir(src))

    art = artfs.use_artifact("demo/meta:v0")
    assert art.aliases == ["candidate"]
    art.description = "the first model"
    art.metadata["old"] = "new value"
    del art.metadata["keep"]
    art.aliases.append("best")
    art.aliases.remove("candidate")
    assert art.save() is art

    again = artfs.use_artifact("demo/meta:best")
    assert again.version == "v0"
    assert again.description == "the first model"
    assert again.metadata == {"old": "new value"}  # replaced, not merged
    assert again.aliases == ["best"]
    with pytest.raises(NotFound, match="no alias 'candidate'"):
        artfs.use_artifact("demo/meta:candidate")

    again.metadata = {"entirely": "new"}
    again.aliases = ["prod"]
    again.save()
    assert artfs.use_artifact("demo/meta:prod").metadata == {"entirely": "new"}

    # Moving an alias from another version.
    v1 = artfs.use_artifact("demo/meta:v1")
    v1.aliases.append("prod")
    v1.save()
    assert artfs.use_artifact("demo/meta:prod").version == "v1"
    assert artfs.use_artifact("demo/meta:v0").aliases == []

    # latest is derived: it can be neither removed nor added by hand.
    latest = artfs.use_artifact("demo/meta:latest")
    latest.aliases.remove("latest")
    with pytest.raises(InvalidInput, match="latest"):
        latest.save()
    old = artfs.use_artifact("demo/meta:v0")
    old.aliases.append("latest")
    with pytest.raises(InvalidInput, match="latest"):
        old.save()
    bad = artfs.use_artifact("demo/meta:v0")
    bad.aliases.append("v7")
    with pytest.raises(InvalidInput, match="reserved"):
        bad.save()
    assert artfs.use_artifact("demo/meta:latest").version == "v1"


def test_get_path_download_and_ref(env):
    src = write_tree(env / "d", {"images/cat.png": b"meow", "labels.csv": "l"})
    artfs.log_artifact(artfs.Artifact("demo/paths", "dataset").add_dir(src))
    art = artfs.use_artifact("demo/paths")
    entry = art.get_path("images/cat.png")
    assert (entry.path, entry.size, entry.is_reference) == ("images/cat.png", 4, False)
    local = entry.download()
    assert local == str(env / "artifacts" / "paths" / "v0" / "images" / "cat.png")
    assert open(local, "rb").read() == b"meow"
    assert not os.path.exists(env / "artifacts" / "paths" / "v0" / "labels.csv")  # only that file
    there = art.get_path("labels.csv").download(root=str(env / "one"))
    assert there == str(env / "one" / "labels.csv") and open(there).read() == "l"
    with pytest.raises(InvalidInput, match="not a reference"):
        entry.ref()
    with pytest.raises(NotFound, match="no file 'images/dog.png'"):
        art.get_path("images/dog.png")
    with pytest.raises(InvalidInput, match="is a folder"):
        art.get_path("images")


def test_two_stores_at_once(env, store_url, tmp_path):
    one = artfs.Store(store_url, str(tmp_path / "c1"))
    two = artfs.Store(str(tmp_path / "second-store"), str(tmp_path / "c2"))
    src = write_tree(env / "d", {"a.txt": "from one"})
    a1 = one.log_artifact(artfs.Artifact("demo/x", "dataset").add_dir(src))
    write_tree(src, {"a.txt": "from two"})
    two.log_artifact(artfs.Artifact("demo/x", "dataset").add_dir(src))
    two.log_artifact(artfs.Artifact("demo/x", "dataset").add_file(os.path.join(src, "a.txt"), name="b.txt"))
    assert a1.store is one
    assert [one.use_artifact("demo/x").version, two.use_artifact("demo/x").version] == ["v0", "v1"]
    assert open(one.use_artifact("demo/x").get_path("a.txt").download(root="r1")).read() == "from one"
    assert open(two.use_artifact("demo/x:v0").get_path("a.txt").download(root="r2")).read() == "from two"
    # Copying between stores goes through local files; a draft stays with its store.
    draft = one.use_artifact("demo/x").new_draft()
    with pytest.raises(InvalidInput, match="store it came from"):
        two.log_artifact(draft)
    copy = artfs.Artifact("demo/copy", "dataset").add_dir(one.use_artifact("demo/x").download(root="cp"))
    assert two.log_artifact(copy).files == ["a.txt"]
    with pytest.raises(NotFound):
        one.use_artifact("demo/copy")


def test_errors_are_clear(env):
    src = write_tree(env / "d", {"a.txt": "a"})
    with pytest.raises(InvalidInput, match="invalid artifact name"):
        artfs.Artifact("bad name!", "dataset")
    with pytest.raises(InvalidInput, match="invalid project"):
        artfs.Artifact("../x", "dataset")
    with pytest.raises(InvalidInput, match=":version"):
        artfs.Artifact("demo/x:v0", "dataset")
    with pytest.raises(InvalidInput, match="invalid type"):
        artfs.Artifact("demo/x", "data set")
    with pytest.raises(InvalidInput, match="metadata"):
        artfs.Artifact("demo/x", "dataset", metadata=[1, 2])
    art = artfs.Artifact("demo/x", "dataset")
    with pytest.raises(NotFound, match="no such file"):
        art.add_file(str(env / "missing.txt"))
    with pytest.raises(InvalidInput, match="use add_dir"):
        art.add_file(src)
    with pytest.raises(InvalidInput, match="use add_file"):
        art.add_dir(os.path.join(src, "a.txt"))
    with pytest.raises(InvalidInput, match="'..' is not allowed"):
        art.add_file(os.path.join(src, "a.txt"), name="../escape.txt")
    with pytest.raises(InvalidInput, match="newline"):  # a manifest could not be read back
        art.add_file(os.path.join(src, "a.txt"), name="new\nline.txt")
    with pytest.raises(InvalidInput, match="must be relative"):
        art.add_file(os.path.join(src, "a.txt"), name="/abs.txt")
    with pytest.raises(InvalidInput, match="nothing to commit"):
        artfs.log_artifact(art)
    art.add_file(os.path.join(src, "a.txt"))
    write_tree(env / "e", {"a.txt": "other"})
    with pytest.raises(Conflict, match="already has 'a.txt'"):
        art.add_file(str(env / "e" / "a.txt"))
    art.add_file(str(env / "e" / "a.txt"), overwrite=True)
    with pytest.raises(InvalidInput, match="reserved"):
        artfs.log_artifact(art, aliases=["drafts"])
    f = art.new_file("open.txt")
    f.write("x")
    with pytest.raises(InvalidInput, match="still open"):
        artfs.log_artifact(art)
    f.close()
    logged = artfs.log_artifact(art)
    assert read_tree(logged.download()) == {"a.txt": b"other", "open.txt": b"x"}
    with pytest.raises(InvalidInput, match="already logged"):
        artfs.log_artifact(logged)
    with pytest.raises(InvalidInput, match="new_draft"):
        logged.add_file(os.path.join(src, "a.txt"), name="more.txt")

    noproj = artfs.Artifact("x", "dataset").add_dir(src)
    with pytest.raises(InvalidInput, match="project="):
        artfs.log_artifact(noproj)
    with pytest.raises(InvalidInput, match="not 'other'"):
        artfs.log_artifact(artfs.Artifact("demo/x", "dataset").add_dir(src), project="other")
    with pytest.raises(Conflict, match="already exists with type 'dataset'"):
        artfs.log_artifact(artfs.Artifact("demo/x", "model").add_dir(src))
    with pytest.raises(NotFound, match="demo/x:v9 does not exist"):
        artfs.use_artifact("demo/x:v9")
    with pytest.raises(NotFound, match="no alias 'nope'"):
        artfs.use_artifact("demo/x:nope")
    with pytest.raises(NotFound, match="does not exist"):
        artfs.use_artifact("demo/never")
    with pytest.raises(InvalidInput, match="PROJECT/NAME"):
        artfs.use_artifact("just-a-name")
    with pytest.raises(InvalidInput, match="not logged yet"):
        artfs.Artifact("demo/x", "dataset").download()
    assert artfs.use_artifact("demo/x").version == "v0"  # nothing above harmed what was stored


def test_new_file_discarded_on_error_and_use_artifact_of_a_draft(env):
    art = artfs.Artifact("demo/nf", "dataset")
    with pytest.raises(RuntimeError):
        with art.new_file("broken.txt") as f:
            f.write("half")
            raise RuntimeError("boom")
    assert art.files == []
    with art.new_file("ok.txt") as f:
        print("line", file=f)
    logged = artfs.use_artifact(art)  # an unlogged artifact is logged first, like wandb
    assert logged.version == "v0" and logged.files == ["ok.txt"]
    assert read_tree(logged.download()) == {"ok.txt": b"line\n"}


def test_a_draft_of_a_sharded_version_writes_only_the_shards_it_changes(env, counting, monkeypatch):
    from artfs.store import shards

    monkeypatch.setattr(shards, "SHARDED_ABOVE", 40)
    monkeypatch.setattr(shards, "SHARD_FILES", 5)
    store, objects = counting
    files = {f"{d}/{i:03d}.png": f"image {d} {i}" for d in ("a", "a-b", "b", "c") for i in range(60)}
    src = write_tree(env / "v0", files)
    from artfs.names import ArtifactName
    from artfs.versions.sources import TreeWalk

    published = store.publish(ArtifactName("demo", "sharded"), "dataset", TreeWalk(src))  # as `artfs put`
    v0 = store.use_artifact("demo/sharded:v0")
    assert published.version.name == "v0" and v0.manifest.folder("c") is not None
    assert isinstance(store.use_artifact("demo/sharded:v0").manifest, shards.ShardedManifest)
    shard_count = len(store.use_artifact("demo/sharded:v0").manifest.shards)

    draft = store.use_artifact("demo/sharded:v0").new_draft()
    new = write_tree(env / "new", {"x.txt": "new", "y.txt": "replaced"})
    draft.add_file(os.path.join(new, "x.txt"), name="a-b/new.txt")
    draft.add_file(os.path.join(new, "y.txt"), name="b/010.png")  # replaces a carried file
    draft.remove("a/005.png")
    draft.remove("c")  # a whole folder
    objects.reset()
    v1 = store.log_artifact(draft)
    assert v1.version == "v1"
    assert objects.puts["manifests"] < shard_count / 2, f"{objects.puts['manifests']} of {shard_count} shards"

    expected = {k: v.encode() for k, v in files.items() if not k.startswith("c/") and k != "a/005.png"}
    expected["a-b/new.txt"], expected["b/010.png"] = b"new", b"replaced"
    assert read_tree(store.use_artifact("demo/sharded:v1").download(root="v1")) == expected
    assert not os.path.exists("v1/c"), "a folder removed whole is gone, not left empty"

    # artfs:// reads it too (a lookup and a listing read only their shards).
    import fsspec

    fs = fsspec.filesystem("artfs", store=store.url, cache=str(env / "fscache"), skip_instance_cache=True)
    assert fs.cat("demo/sharded/v1/b/010.png") == b"replaced"
    assert len(fs.ls("demo/sharded/v1/a-b", detail=False)) == 61
    assert sorted(fs.find("demo/sharded/v1/a")) == sorted(
        f"demo/sharded/v1/{p}" for p in expected if p.startswith("a/")
    )


def test_add_dir_keeps_empty_folders_and_remove_takes_them(env):
    src = write_tree(env / "src", {"a/x.txt": "x"})
    os.makedirs(os.path.join(src, "a", "empty"))
    os.makedirs(os.path.join(src, "gone", "deep"))
    art = artfs.Artifact("demo/folders", "dataset")
    art.add_dir(src)
    art.remove("gone")  # an empty folder is something to remove
    logged = artfs.log_artifact(art)
    root = logged.download(root="got")
    assert os.path.isdir(os.path.join(root, "a", "empty")) and os.listdir(os.path.join(root, "a", "empty")) == []
    assert not os.path.exists(os.path.join(root, "gone"))
    with pytest.raises(NotFound):
        artfs.use_artifact("demo/folders:v0").new_draft().remove("nothing-here")
