"""A streamed walk of a folder yields what the listing walk finds, in the order of manifest keys."""

import os

import pytest

from artfs.errors import InvalidInput
from artfs.store.manifest import Folder
from artfs.versions.publish import FileSource
from artfs.versions.sources import TreeWalk, walk_sources


def _make(root):
    for rel in ["a/x", "a-b", "a.c/y", "b/c/d/e", "z", "a/sub/q"]:
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(rel)
    os.makedirs(os.path.join(root, "empty", "inner"))
    os.symlink(os.path.join(root, "b"), os.path.join(root, "link"))


def test_the_streamed_walk_finds_what_the_listing_finds_in_key_order(tmp_path):
    _make(tmp_path)
    listed = walk_sources(str(tmp_path), None)
    items = list(TreeWalk(str(tmp_path)))
    keys = [i.path for i in items]
    assert keys == sorted(keys) and len(set(keys)) == len(keys), "strictly ascending, as a manifest sorts"
    assert sorted((f.path, f.local) for f in listed) == [(i.path, i.local) for i in items if isinstance(i, FileSource)]
    assert sorted(f.path for f in listed.folders) == [i.path for i in items if isinstance(i, Folder)]
    assert TreeWalk(str(tmp_path)).totals() == (len(listed), sum(os.path.getsize(f.local) for f in listed))


def test_a_link_loop_and_a_broken_link_are_refused(tmp_path):
    os.makedirs(tmp_path / "d")
    os.symlink(tmp_path, tmp_path / "d" / "up")
    with pytest.raises(InvalidInput, match="loop"):
        list(TreeWalk(str(tmp_path)))
    os.unlink(tmp_path / "d" / "up")
    os.symlink(tmp_path / "nowhere", tmp_path / "d" / "broken")
    with pytest.raises(InvalidInput, match="broken symbolic link"):
        list(TreeWalk(str(tmp_path)))
