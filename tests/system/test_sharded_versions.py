"""A version whose manifest is split into shards looks and reads, through the mount, the CLI
and a draft, exactly like any other; the store keeps it in shards, and gc keeps them.

The thresholds are lowered (ARTFS_SHARDED_ABOVE, ARTFS_SHARD_FILES) so a few hundred files
make dozens of shards."""

from __future__ import annotations

import filecmp
import json
import os
import shutil

import msgpack
import pytest
import zstandard
from conftest import run_artfs
from drafts_common import sh, unique
from mounts import mounter, wait_for  # noqa: F401  (mounter is a fixture)

pytestmark = pytest.mark.mount

SMALL_SHARDS = {"ARTFS_SHARDED_ABOVE": "20", "ARTFS_SHARD_FILES": "6"}
T0 = 1_600_000_000_000_000_000


def _tree(root) -> str:
    for d in range(6):
        for f in range(40):
            name = ("a", "a-b", "a.c", "b", "deep/er", "z")[d]
            path = os.path.join(root, name, f"f{f:03d}.bin")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as out:
                out.write(os.urandom(50 + f))
            os.utime(path, ns=(T0 + f, T0 + f))
    os.makedirs(os.path.join(root, "empty", "inner"))
    with open(os.path.join(root, "top.sh"), "w") as out:
        out.write("#!/bin/sh\n")
    os.chmod(os.path.join(root, "top.sh"), 0o755)
    return str(root)


def _cli(store, cache, *args):
    return run_artfs(list(args), store=store, cache=cache, env=SMALL_SHARDS)


def _root_format(store: str, digest: str) -> int:
    with open(os.path.join(store, "manifests", digest), "rb") as f:
        doc = msgpack.unpackb(zstandard.ZstdDecompressor().decompress(f.read()), raw=False)
    return doc["format"]


def _same_tree(a: str, b: str) -> None:
    cmp = filecmp.dircmp(a, b)
    assert not (cmp.left_only or cmp.right_only or cmp.diff_files or cmp.funny_files), (a, b, cmp.report())
    _, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    assert not mismatch and not errors
    for sub in cmp.common_dirs:
        _same_tree(os.path.join(a, sub), os.path.join(b, sub))


def test_a_sharded_version_reads_lists_commits_and_survives_gc(mounter, tmp_path):
    store, cache = str(tmp_path / "store"), str(tmp_path / "cache")
    src = _tree(tmp_path / "src")
    artifact = f"{unique('p')}/big"
    _cli(store, cache, "put", src, "--name", artifact, "--type", "dataset").ok()
    info = json.loads(_cli(store, cache, "info", f"{artifact}:v0").ok().stdout)
    assert _root_format(store, info["digest"]) == 2, "stored as shards"
    assert info["files"] == 241
    os.utime(os.path.join(src, "a", "f001.bin"), ns=(T0 + 5, T0 + 5))  # times are not content
    again = _cli(store, cache, "put", src, "--name", artifact, "--type", "dataset").ok().stdout.strip()
    assert again.endswith(":v0"), "the same tree makes no new version"
    os.utime(os.path.join(src, "a", "f001.bin"), ns=(T0 + 1, T0 + 1))

    m = mounter(store, "--refresh", "0.3", cache=str(tmp_path / "mcache"), env=SMALL_SHARDS)
    v0 = m.path(artifact, "v0")
    _same_tree(src, v0)
    assert os.listdir(os.path.join(v0, "empty")) == ["inner"]
    assert sorted(os.listdir(v0)) == sorted(os.listdir(src))
    st = os.stat(os.path.join(v0, "a-b", "f007.bin"))
    assert st.st_mtime_ns == T0 + 7 and st.st_size == 57
    assert os.stat(os.path.join(v0, "top.sh")).st_mode & 0o111
    assert sh("find", v0, "-type", "f").stdout.count("\n") == 241

    # A draft of it: change one file, add one, remove one, add a folder; commit through the mount.
    draft = m.path(artifact, "drafts", "edit")
    os.mkdir(draft)
    expected = tmp_path / "expected"
    shutil.copytree(src, expected, symlinks=True)
    for root in (draft, expected):
        with open(os.path.join(root, "a.c", "f010.bin"), "wb") as f:
            f.write(b"changed")
        with open(os.path.join(root, "deep", "new.txt"), "w") as f:
            f.write("new")
        os.unlink(os.path.join(root, "z", "f039.bin"))
        os.mkdir(os.path.join(root, "made"))
    _cli(store, cache, "commit", draft).ok()
    wait_for(lambda: os.path.isdir(m.path(artifact, "v1")), 10, "v1 in the mount")
    _same_tree(str(expected), m.path(artifact, "v1"))
    _same_tree(src, v0)  # the base is as it was

    got = tmp_path / "got"
    _cli(store, cache, "get", f"{artifact}:v1", "--root", str(got)).ok()
    _same_tree(str(expected), str(got))
    assert os.path.isdir(got / "made") and os.path.isdir(got / "empty" / "inner")

    # gc keeps every shard of every live version.
    _cli(store, cache, "gc", "--grace", "0").ok()
    _cli(store, cache, "verify", f"{artifact}:v0").ok()
    _cli(store, cache, "verify", f"{artifact}:v1").ok()
    fresh = tmp_path / "fresh"
    _cli(store, str(tmp_path / "cache2"), "get", f"{artifact}:v1", "--root", str(fresh)).ok()
    _same_tree(str(expected), str(fresh))


def _manifest_keys(store: str) -> set[str]:
    return set(os.listdir(os.path.join(store, "manifests")))


def _edits(root: str) -> None:
    """Every kind of change a draft records, applied alike to a draft and to a local copy."""
    os.rename(os.path.join(root, "b"), os.path.join(root, "b2"))  # a folder never listed, moved
    os.rename(os.path.join(root, "a"), os.path.join(root, "tmp"))  # moved away and back
    os.rename(os.path.join(root, "tmp"), os.path.join(root, "a"))
    os.unlink(os.path.join(root, "a", "f000.bin"))
    shutil.rmtree(os.path.join(root, "z"))  # a whole folder removed
    os.chmod(os.path.join(root, "a-b"), 0o700)  # a folder's own record only
    os.utime(os.path.join(root, "a.c", "f001.bin"), ns=(T0 + 999, T0 + 999))  # a file's time only
    os.rename(os.path.join(root, "deep", "er", "f002.bin"), os.path.join(root, "deep", "moved.bin"))
    os.makedirs(os.path.join(root, "z", "again"))  # a removed path made again
    with open(os.path.join(root, "z", "again", "x"), "w") as f:
        f.write("x")
    os.rmdir(os.path.join(root, "empty", "inner"))


def test_a_commit_rewrites_only_the_shards_around_its_changes(mounter, tmp_path):
    store, cache = str(tmp_path / "store"), str(tmp_path / "cache")
    src = _tree(tmp_path / "src")
    artifact = f"{unique('p')}/big"
    _cli(store, cache, "put", src, "--name", artifact, "--type", "dataset").ok()
    m = mounter(store, "--refresh", "0.3", cache=str(tmp_path / "mcache"), env=SMALL_SHARDS)
    shards_of_v0 = len(_manifest_keys(store)) - 1

    # One file changed: a shard or two and a root are written, whatever the size.
    draft = m.path(artifact, "drafts", "one")
    os.mkdir(draft)
    with open(os.path.join(draft, "a-b", "f020.bin"), "wb") as f:
        f.write(b"one change")
    before = _manifest_keys(store)
    _cli(store, cache, "commit", draft).ok()
    written = _manifest_keys(store) - before
    assert 2 <= len(written) <= 4, f"{len(written)} manifest objects for a one-file change of {shards_of_v0} shards"
    wait_for(lambda: os.path.isdir(m.path(artifact, "v1")), 10, "v1 in the mount")
    with open(m.path(artifact, "v1", "a-b", "f020.bin"), "rb") as f:
        assert f.read() == b"one change"

    # Every kind of change at once, checked against the same changes on a local copy.
    expected = tmp_path / "expected"
    shutil.copytree(m.path(artifact, "v1"), expected)
    draft = m.path(artifact, "drafts", "many")
    os.mkdir(draft)
    _edits(draft)
    _edits(str(expected))
    _cli(store, cache, "commit", draft).ok()
    wait_for(lambda: os.path.isdir(m.path(artifact, "v2")), 10, "v2 in the mount")
    _same_tree(str(expected), m.path(artifact, "v2"))
    assert os.stat(m.path(artifact, "v2", "a-b")).st_mode & 0o777 == 0o500  # as kept, write bits off
    assert os.stat(m.path(artifact, "v2", "a.c", "f001.bin")).st_mtime_ns == T0 + 999
    got = tmp_path / "got"
    _cli(store, str(tmp_path / "cache2"), "get", f"{artifact}:v2", "--root", str(got)).ok()
    _same_tree(str(expected), str(got))
    assert os.listdir(got / "empty") == []


def test_listing_a_folder_of_many_sub_folders_reads_no_shard(mounter, tmp_path):
    """Class folders spread over every shard: `ls -l` of the folder holding them and `stat` of
    each come from the root (proved by taking every shard out of the store); a class's files
    need its shards."""
    store, cache = str(tmp_path / "store"), str(tmp_path / "cache")
    src = tmp_path / "src"
    for c in range(60):
        for f in range(5):
            path = src / "train" / f"c{c:03d}" / f"{f}.bin"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(os.urandom(10 + f))
        os.utime(path.parent, ns=(T0 + c, T0 + c))
    os.chmod(src / "train" / "c007", 0o700)
    artifact = f"{unique('p')}/classes"
    _cli(store, cache, "put", str(src), "--name", artifact, "--type", "dataset").ok()
    info = json.loads(_cli(store, cache, "info", f"{artifact}:v0").ok().stdout)
    assert _root_format(store, info["digest"]) == 2
    m = mounter(store, "--refresh", "0.3", cache=str(tmp_path / "mcache"), env=SMALL_SHARDS)
    v0 = m.path(artifact, "v0")
    assert os.listdir(v0) == ["train"]  # the root manifest is read

    aside = tmp_path / "aside"
    aside.mkdir()
    for key in _manifest_keys(store) - {info["digest"]}:
        shutil.move(os.path.join(store, "manifests", key), aside / key)
    assert len(os.listdir(aside)) > 20, "dozens of shards"
    assert sorted(os.listdir(os.path.join(v0, "train"))) == [f"c{c:03d}" for c in range(60)]
    for c in (0, 7, 59):
        st = os.stat(os.path.join(v0, "train", f"c{c:03d}"))
        assert st.st_mtime_ns == T0 + c and (st.st_mode & 0o777 == 0o500) == (c == 7)
    with pytest.raises(OSError):
        os.listdir(os.path.join(v0, "train", "c031"))  # its files are in a shard: not there

    for key in os.listdir(aside):
        shutil.move(aside / key, os.path.join(store, "manifests", key))
    assert sorted(os.listdir(os.path.join(v0, "train", "c031"))) == [f"{f}.bin" for f in range(5)]
    with open(os.path.join(v0, "train", "c031", "4.bin"), "rb") as f:
        assert f.read() == (src / "train" / "c031" / "4.bin").read_bytes()


def test_file_nodes_dropped_and_made_again_read_the_same(mounter, tmp_path):
    """The mount keeps a bounded number of file nodes whatever the kernel holds (a `find`
    over millions of files): a file whose node was dropped is made again from its inode
    number (fetching its shard again if that was dropped too), with the same number."""
    store, cache = str(tmp_path / "store"), str(tmp_path / "cache")
    src = _tree(tmp_path / "src")
    artifact = f"{unique('p')}/nodes"
    _cli(store, cache, "put", src, "--name", artifact, "--type", "dataset").ok()
    env = {**SMALL_SHARDS, "ARTFS_FILE_NODES": "8"}
    m = mounter(store, "--memory", "1K", cache=str(tmp_path / "mcache"), env=env)
    v0 = m.path(artifact, "v0")
    inos = {}
    for root, _, files in os.walk(v0):
        for name in files:
            inos[os.path.join(root, name)] = os.stat(os.path.join(root, name)).st_ino
    assert len(inos) == 241 and len(set(inos.values())) == 241
    held = open(os.path.join(v0, "a", "f001.bin"), "rb")  # open while its node is dropped
    _same_tree(src, v0)  # every file opened and read again: nodes made again
    assert held.read() == open(os.path.join(src, "a", "f001.bin"), "rb").read()
    held.close()
    for path, ino in inos.items():
        assert os.stat(path).st_ino == ino
    assert os.getxattr(os.path.join(v0, "z", "f003.bin"), "user.artfs.digest")
