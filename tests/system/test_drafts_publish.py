"""Publishing with drafts, through the real kernel, on the local store and on SeaweedFS:
mkdir makes drafts, `artfs draft` makes drafts of other versions, `artfs commit` turns a
draft (or a plain folder) into the next version, and only what changed is uploaded.

One mount per backend serves the module; every test works on an artifact of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import ARTFS_BIN, fresh_s3_url, read_tree, run_artfs, write_tree
from mounts import wait_for
from drafts_common import (  # noqa: F401  (shared_mounter is a fixture)
    content_keys,
    data_files,
    draft_dir,
    random_files,
    read,
    sh,
    shared_mounter,
    store_keys,
    unique,
    version_files,
    versions,
    write,
)

pytestmark = pytest.mark.mount

V0 = {"README.md": b"first\n", "data/x.csv": b"id\n1\n", "data/old.txt": b"old\n"}
V1 = {"README.md": b"second\n", "data/x.csv": b"id\n1\n2\n", "data/y.csv": b"y\n", "img/0.bin": b"\x00" * 3000}


def on_s3_too(test):
    """The key tests run on SeaweedFS as well (each S3 CLI call costs ~1 s of boto3 start-up)."""
    test.on_s3_too = True
    return test


def pytest_generate_tests(metafunc):
    if "env" in metafunc.fixturenames:
        backends = ["local"]
        if getattr(metafunc.function, "on_s3_too", False):
            backends.append(pytest.param("s3", marks=pytest.mark.s3))
        metafunc.parametrize("env", backends, indirect=True, scope="module")


@pytest.fixture(scope="module")
def env(request, shared_mounter, tmp_path_factory):
    """(store URL, the mount, an in-process Store for setup): one per backend for the module."""
    from artfs import Store

    if request.param == "local":
        store = str(tmp_path_factory.mktemp("publish") / "store")
    else:
        store = fresh_s3_url(request.getfixturevalue("s3_test_bucket"))
    m = shared_mounter(store, "--refresh", "0.3")
    return store, m, Store(store, str(tmp_path_factory.mktemp("setup-cache")))


class Ctx:
    """One test's artifact, on the module's mount."""

    def __init__(self, store, m, setup_store, tmp):
        self.store, self.m, self.setup_store, self.tmp = store, m, setup_store, str(tmp)
        self.project = unique("p")
        self.artifact = f"{self.project}/a"

    def cli(self, *args, **kw):
        return run_artfs(args, store=self.store, cache=self.m.cache, **kw)

    def put(self, files: dict) -> str:
        """Publishes the next version (setup: in process, as `artfs put` would)."""
        from artfs.names import parse_artifact_name
        from artfs.versions.sources import walk_sources

        src = write_tree(os.path.join(self.tmp, unique("src")), files)
        st, a = self.setup_store, parse_artifact_name(self.artifact)
        rec = st.publish(a, "dataset", walk_sources(src, None), base=st.registry.latest(a)).version
        wait_for(lambda: os.path.isdir(self.path(rec.name)), 10, f"{rec} in the mount")
        return str(rec)

    def path(self, *parts) -> str:
        return self.m.path(self.artifact, *parts)

    def draft(self, name: str = "d") -> str:
        path = self.path("drafts", name)
        os.mkdir(path)
        return path

    def commit(self, path, *flags):
        return self.cli("commit", path, *flags)

    def versions(self) -> list[str]:
        return [v for v, _ in versions(self.store, self.artifact, cache=self.m.cache)]

    def info(self, version: str) -> dict:
        return json.loads(self.cli("info", f"{self.artifact}:{version}").ok().stdout)


@pytest.fixture
def ctx(env, tmp_path):
    return Ctx(*env, tmp_path)


@pytest.fixture
def two(ctx):
    """ctx with v0 and v1 published."""
    assert ctx.put(V0) == f"{ctx.artifact}:v0"
    assert ctx.put(V1) == f"{ctx.artifact}:v1"
    return ctx


# -- making drafts --------------------------------------------------------------------------


@on_s3_too
def test_mkdir_in_drafts_makes_a_draft_of_latest(two):
    d = two.draft()
    assert read_tree(d) == V1
    assert os.getxattr(d, "user.artfs.base") == f"{two.artifact}:v1".encode()


def test_draft_reads_base_files_without_copying_them(two):
    d = two.draft()
    read_tree(d)
    assert data_files(two.m.cache, two.artifact, "d") == []


def test_ls_drafts_lists_every_draft(two):
    assert os.listdir(two.path("drafts")) == []
    for name in ("mine", "yours", "z-9"):
        two.draft(name)
    assert sorted(os.listdir(two.path("drafts"))) == ["mine", "yours", "z-9"]


def test_mkdir_of_an_existing_draft_is_eexist(two):
    two.draft("d")
    with pytest.raises(FileExistsError):
        os.mkdir(two.path("drafts", "d"))


def test_rm_rf_discards_a_draft(two):
    d = two.draft()
    write(os.path.join(d, "new.bin"), b"x" * 100)
    sh("rm", "-rf", d)
    assert not os.path.exists(d)
    assert os.listdir(two.path("drafts")) == []
    assert not os.path.exists(draft_dir(two.m.cache, two.artifact, "d"))
    assert two.versions() == ["v0", "v1"]


def test_rmdir_of_a_non_empty_draft_is_refused(two):
    d = two.draft()
    with pytest.raises(OSError) as e:
        os.rmdir(d)
    assert e.value.errno == 39  # ENOTEMPTY: only rm -rf (which empties it first) discards
    assert os.path.isdir(d)


def test_mkdir_p_makes_a_draft_of_a_new_artifact(ctx):
    d = ctx.m.path(ctx.project, "newname", "drafts", "d")
    os.makedirs(d)
    assert os.listdir(d) == []
    assert os.listdir(ctx.m.path(ctx.project, "newname", "drafts")) == ["d"]
    assert ctx.project in os.listdir(ctx.m.mp)


def test_first_commit_without_a_type_is_refused_clearly(ctx):
    d = ctx.m.path(ctx.project, "newname", "drafts", "d")
    os.makedirs(d)
    write(os.path.join(d, "f.txt"), b"f")
    ctx.commit(d).fails("type")
    assert read(os.path.join(d, "f.txt")) == b"f"  # the draft is kept


def test_first_commit_with_a_type_makes_v0(ctx):
    name = f"{ctx.project}/newname"
    d = ctx.m.path(name, "drafts", "d")
    os.makedirs(d)
    write(os.path.join(d, "f.txt"), b"f")
    assert ctx.commit(d, "--type", "model").ok().out == f"{name}:v0"
    assert read_tree(ctx.m.path(name, "v0")) == {"f.txt": b"f"}
    assert json.loads(ctx.cli("info", f"{name}:v0").ok().stdout)["type"] == "model"


def test_type_given_beforehand_with_artfs_draft(ctx):
    name = f"{ctx.project}/typed"
    assert ctx.cli("draft", name, "--name", "d", "--type", "model").ok().out == f"{name}/drafts/d"
    d = ctx.m.path(name, "drafts", "d")
    wait_for(lambda: os.path.isdir(d), 5, "the draft in the mount")
    write(os.path.join(d, "w.bin"), b"weights")
    assert ctx.commit(d).ok().out == f"{name}:v0"
    assert json.loads(ctx.cli("info", f"{name}:v0").ok().stdout)["type"] == "model"


def test_artfs_draft_of_an_older_version_appears_in_the_mount(two):
    assert two.cli("draft", f"{two.artifact}:v0", "--name", "old").ok().out == f"{two.artifact}/drafts/old"
    assert "old" in os.listdir(two.path("drafts"))
    d = two.path("drafts", "old")
    assert read_tree(d) == V0
    assert os.getxattr(d, "user.artfs.base") == f"{two.artifact}:v0".encode()


def test_commit_of_a_draft_of_an_older_version(two):
    two.cli("draft", f"{two.artifact}:v0", "--name", "old").ok()
    d = two.path("drafts", "old")
    write(os.path.join(d, "README.md"), b"fixed first\n")
    assert two.commit(d).ok().out == f"{two.artifact}:v2"
    assert read_tree(two.path("v2")) == {**V0, "README.md": b"fixed first\n"}
    assert two.info("v2")["base"] == "v0"


def test_unchanged_draft_of_an_older_version_prints_it_and_keeps_latest(two):
    two.cli("draft", f"{two.artifact}:v0", "--name", "old").ok()
    assert two.commit(two.path("drafts", "old")).ok().out == f"{two.artifact}:v0"
    assert two.versions() == ["v0", "v1"]
    assert os.readlink(two.path("latest")) == "v1"


def test_artfs_draft_of_a_missing_version_fails_cleanly(two):
    two.cli("draft", f"{two.artifact}:v9", "--name", "x").fails()
    assert os.listdir(two.path("drafts")) == []


# -- committing -----------------------------------------------------------------------------


def test_commit_prints_the_next_version(two):
    d = two.draft()
    write(os.path.join(d, "data/z.csv"), b"z\n")
    assert two.commit(d).ok().out == f"{two.artifact}:v2"
    assert two.versions() == ["v0", "v1", "v2"]


@on_s3_too
def test_commit_moves_latest_and_the_version_is_visible_at_once(two):
    d = two.draft()
    write(os.path.join(d, "data/z.csv"), b"z\n")
    two.commit(d).ok()
    assert os.readlink(two.path("latest")) == "v2"
    assert "v2" in os.listdir(two.path())
    assert read_tree(two.path("v2")) == {**V1, "data/z.csv": b"z\n"}
    assert read_tree(two.path("latest")) == {**V1, "data/z.csv": b"z\n"}


def test_commit_removes_the_draft_folder(two):
    d = two.draft()
    write(os.path.join(d, "data/z.csv"), b"z\n")
    two.commit(d).ok()
    assert not os.path.exists(d)
    assert os.listdir(two.path("drafts")) == []
    assert not os.path.exists(draft_dir(two.m.cache, two.artifact, "d"))


def test_committed_content_is_the_drafts_content(two, tmp_path):
    d = two.draft()
    write(os.path.join(d, "README.md"), b"third\n")  # replaced
    os.unlink(os.path.join(d, "data/y.csv"))  # removed
    os.rename(os.path.join(d, "img"), os.path.join(d, "images"))  # moved
    write(os.path.join(d, "new/batch.bin".replace("/", "_")), b"batch")  # added
    want = {
        "README.md": b"third\n",
        "data/x.csv": V1["data/x.csv"],
        "images/0.bin": V1["img/0.bin"],
        "new_batch.bin": b"batch",
    }
    assert read_tree(d) == want
    two.commit(d).ok()
    assert version_files(two.store, f"{two.artifact}:v2", tmp_path) == want  # as another host downloads it


@on_s3_too
def test_commit_of_a_path_with_a_trailing_slash(two):
    d = two.draft()
    write(os.path.join(d, "n.txt"), b"n")
    assert two.commit(d + "/").ok().out == f"{two.artifact}:v2"


def test_commit_of_dot_from_inside_the_draft(two):
    d = two.draft()
    write(os.path.join(d, "n.txt"), b"n")
    assert run_artfs(["commit", "."], store=two.store, cache=two.m.cache, cwd=d).ok().out == f"{two.artifact}:v2"
    assert not os.path.exists(d)


def test_commit_with_no_change_prints_the_base_and_makes_nothing(two):
    d = two.draft()
    read_tree(d)
    assert two.commit(d).ok().out == f"{two.artifact}:v1"
    assert two.versions() == ["v0", "v1"]
    assert not os.path.exists(d)


def test_commit_of_changes_that_were_undone_makes_nothing(two):
    d = two.draft()
    write(os.path.join(d, "tmp.bin"), b"t")
    os.unlink(os.path.join(d, "tmp.bin"))
    write(os.path.join(d, "README.md"), V1["README.md"])  # copied up, same bytes
    assert two.commit(d).ok().out == f"{two.artifact}:v1"
    assert two.versions() == ["v0", "v1"]


def test_commit_of_a_draft_emptied_is_refused(two):
    d = two.draft()
    for name in os.listdir(d):
        sh("rm", "-rf", os.path.join(d, name))
    two.commit(d).fails("nothing")
    assert two.versions() == ["v0", "v1"]


def test_commit_sets_aliases_description_and_metadata(two):
    d = two.draft()
    write(os.path.join(d, "n.txt"), b"n")
    meta = {"epochs": 3, "nested": {"ok": True}}
    two.commit(d, "--alias", "best", "--alias", "prod", "--description", "with n", "--metadata", json.dumps(meta)).ok()
    info = two.info("v2")
    assert {"best", "prod"} <= set(info["aliases"])
    assert info["description"] == "with n"
    assert info["metadata"] == meta
    assert os.readlink(two.path("best")) == "v2"
    assert os.getxattr(two.path("v2"), "user.artfs.description") == b"with n"


def test_commit_with_bad_metadata_fails_cleanly_and_keeps_the_draft(two):
    d = two.draft()
    write(os.path.join(d, "n.txt"), b"n")
    two.commit(d, "--metadata", "[1, 2]").fails("metadata")
    assert read(os.path.join(d, "n.txt")) == b"n"
    assert two.versions() == ["v0", "v1"]


def test_commit_with_a_reserved_alias_fails_cleanly_and_keeps_the_draft(two):
    d = two.draft()
    write(os.path.join(d, "n.txt"), b"n")
    two.commit(d, "--alias", "v7").fails()
    assert read(os.path.join(d, "n.txt")) == b"n"
    assert two.versions() == ["v0", "v1"]


def test_stored_commit_of_a_draft_a_mount_serves_is_refused(two):
    d = two.draft()
    write(os.path.join(d, "n.txt"), b"n")
    two.cli("commit", f"{two.artifact}/drafts/d").fails("mount")
    assert read(os.path.join(d, "n.txt")) == b"n"


def test_commit_of_a_plain_folder_with_name(two, tmp_path):
    src = write_tree(tmp_path / "folder", {"only.txt": b"only\n", "sub/two.bin": b"2" * 5000})
    assert two.commit(src, "--name", two.artifact).ok().out == f"{two.artifact}:v2"
    wait_for(lambda: os.path.isdir(two.path("v2")), 5, "v2 in the mount")
    assert read_tree(two.path("v2")) == {"only.txt": b"only\n", "sub/two.bin": b"2" * 5000}


def test_commit_of_a_plain_folder_as_a_new_artifact(ctx, tmp_path):
    src = write_tree(tmp_path / "folder", {"a.txt": b"a"})
    name = f"{ctx.project}/fresh"
    ctx.commit(src, "--name", name).fails("type")
    assert ctx.commit(src, "--name", name, "--type", "dataset").ok().out == f"{name}:v0"


def test_commit_of_a_plain_folder_equal_to_latest_makes_nothing(two, tmp_path):
    src = write_tree(tmp_path / "folder", V1)
    assert two.commit(src, "--name", two.artifact).ok().out == f"{two.artifact}:v1"
    assert two.versions() == ["v0", "v1"]


def test_commit_of_a_plain_folder_without_name_is_refused(two, tmp_path):
    src = write_tree(tmp_path / "folder", {"a.txt": b"a"})
    two.commit(src).fails("--name")


# -- only what changed moves -------------------------------------------------------------------


@pytest.fixture
def many(ctx):
    """ctx whose v0 has 300 small files."""
    ctx.files = random_files(11, 300, max_size=3000, prefix="f/")
    ctx.put(ctx.files)
    return ctx


@on_s3_too
def test_one_changed_file_uploads_one_pack_and_one_manifest(many):
    d = many.draft()
    write(os.path.join(d, "f/f0123.bin"), b"corrected" * 400)
    before = store_keys(many.store)
    assert many.commit(d).ok().out == f"{many.artifact}:v1"
    added = content_keys(store_keys(many.store) - before)
    assert len(added.get("packs", set()) | added.get("objects", set())) == 1, added
    assert len(added.get("manifests", set())) == 1, added
    if not many.store.startswith("s3://"):
        (key,) = added.get("packs", set()) | added.get("objects", set())
        assert os.path.getsize(os.path.join(many.store, key)) < 8000  # the changed file, not the version


def test_renames_and_deletions_upload_no_content(many):
    d = many.draft()
    os.rename(os.path.join(d, "f"), os.path.join(d, "g"))
    os.unlink(os.path.join(d, "g/f0007.bin"))
    before = store_keys(many.store)
    assert many.commit(d).ok().out == f"{many.artifact}:v1"
    added = content_keys(store_keys(many.store) - before)
    assert not added.get("packs") and not added.get("objects"), added
    assert len(added.get("manifests", set())) == 1
    want = {"g/" + k[2:]: v for k, v in many.files.items() if k != "f/f0007.bin"}
    assert read_tree(many.path("v1")) == want


def test_an_unlisted_folder_moved_deeper_is_carried_whole(many):
    d = many.draft()
    os.mkdir(os.path.join(d, "archive"))
    os.rename(os.path.join(d, "f"), os.path.join(d, "archive/2024"))
    assert many.commit(d).ok().out == f"{many.artifact}:v1"
    assert read_tree(many.path("v1")) == {"archive/2024/" + k[2:]: v for k, v in many.files.items()}


def test_a_second_mount_of_the_same_cache_shows_drafts_read_only(two, shared_mounter):
    d = two.draft()
    write(os.path.join(d, "n.txt"), b"n")
    other = shared_mounter(two.store, cache=two.m.cache, debug=False)
    try:
        od = other.path(two.artifact, "drafts", "d")
        assert read(os.path.join(od, "n.txt")) == b"n"
        with pytest.raises(OSError) as e:
            write(os.path.join(od, "m.txt"), b"m")
        assert e.value.errno == 30  # EROFS: the first mount owns this cache's drafts
    finally:
        other.umount()
    assert os.listdir(d) != []


# -- concurrency --------------------------------------------------------------------------------


@on_s3_too
def test_two_drafts_of_one_base_committed_at_once_give_two_versions(two):
    d1, d2 = two.draft("one"), two.draft("two")
    write(os.path.join(d1, "from-one.txt"), b"one")
    write(os.path.join(d1, "README.md"), b"readme of one\n")
    write(os.path.join(d2, "from-two.txt"), b"two")
    os.unlink(os.path.join(d2, "data/y.csv"))
    env = {**os.environ, "ARTFS_STORE": two.store, "ARTFS_CACHE": two.m.cache}
    procs = {
        d: subprocess.Popen(
            [ARTFS_BIN, "commit", d], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for d in (d1, d2)
    }
    outs = {}
    for d, p in procs.items():
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        outs[d] = out.strip()
    assert sorted(outs.values()) == [f"{two.artifact}:v2", f"{two.artifact}:v3"]
    assert two.versions() == ["v0", "v1", "v2", "v3"]
    v_one, v_two = outs[d1].rsplit(":", 1)[1], outs[d2].rsplit(":", 1)[1]
    assert read_tree(two.path(v_one)) == {**V1, "from-one.txt": b"one", "README.md": b"readme of one\n"}
    assert read_tree(two.path(v_two)) == {k: v for k, v in {**V1, "from-two.txt": b"two"}.items() if k != "data/y.csv"}
    assert os.readlink(two.path("latest")) == "v3"


WRITER = r"""
import os, sys
root, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
for i in range(n):
    folder = os.path.join(root, "shared", str(i % 5))
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{tag}-{i}.txt"), "wb") as f:
        f.write(f"{tag} {i}\n".encode() * (i + 1))
"""


def test_two_processes_writing_different_files_in_one_draft_both_land(two):
    d = two.draft()
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, d, tag, "30"], stderr=subprocess.PIPE, text=True)
        for tag in ("left", "right")
    ]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    want = dict(V1)
    for tag in ("left", "right"):
        for i in range(30):
            want[f"shared/{i % 5}/{tag}-{i}.txt"] = f"{tag} {i}\n".encode() * (i + 1)
    assert read_tree(d) == want
    assert two.commit(d).ok().out == f"{two.artifact}:v2"
    assert read_tree(two.path("v2")) == want
