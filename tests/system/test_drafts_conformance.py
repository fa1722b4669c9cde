"""Timestamps, link counts and names inside a draft behave as on ext4, checked through the kernel in
the style of a POSIX conformance suite: each case is a syscall, the result it must have, or the errno.

One mount (local store); each test works in a draft of its own of conf/base:v0, which holds
`dir/sub/f.txt`, `dir/g.txt` and `top.txt` (so base folders are checked as well as new ones).
"""

from __future__ import annotations

import errno
import os
import shutil
import time

import pytest

from conftest import run_artfs, write_tree
from drafts_common import sh, shared_mounter, unique  # noqa: F401  (shared_mounter is a fixture)
from mounts import errno_of

pytestmark = pytest.mark.mount

BASE = "conf/base"
FILES = {"dir/sub/f.txt": b"f\n", "dir/g.txt": b"g\n", "top.txt": b"t\n"}
TICK = 0.02  # longer than the gap between two timestamps of ext4 (ns) and of the mount


@pytest.fixture(scope="module")
def mount(shared_mounter, tmp_path_factory):  # noqa: F811
    tmp = tmp_path_factory.mktemp("conf-src")
    store = str(tmp / "store")
    src = write_tree(tmp / "src", FILES)
    run_artfs(["put", src, "--name", BASE, "--type", "dataset"], store=store, cache=str(tmp / "c")).ok()
    return shared_mounter(store, "--refresh", "0.5")


@pytest.fixture
def d(mount):
    path = mount.path(BASE, "drafts", unique("d"))
    os.mkdir(path)
    return path


def _times(path):
    st = os.stat(path)
    return st.st_mtime_ns, st.st_ctime_ns


def _changes_parent_times(d, parent_rel, action):
    parent = os.path.join(d, parent_rel)
    before = _times(parent)
    time.sleep(TICK)
    action()
    after = _times(parent)
    return after[0] > before[0] and after[1] > before[1]


# -- the parent's mtime and ctime move when its entries change ------------------------------------
@pytest.mark.parametrize("parent_rel", ["", "dir", "dir/sub"])
@pytest.mark.parametrize("call", ["creat", "mkdir", "unlink", "rmdir", "rename-away", "rename-in"])
def test_the_parent_folder_mtime_and_ctime_move(d, parent_rel, call):
    parent = os.path.join(d, parent_rel)
    target = os.path.join(parent, "x")
    elsewhere = os.path.join(d, "elsewhere-" + call)
    if call in ("unlink", "rename-away"):
        open(target, "w").close()
    if call == "rmdir":
        os.mkdir(target)
    if call == "rename-in":
        open(elsewhere, "w").close()
    actions = {
        "creat": lambda: open(target, "w").close(),
        "mkdir": lambda: os.mkdir(target),
        "unlink": lambda: os.unlink(target),
        "rmdir": lambda: os.rmdir(target),
        "rename-away": lambda: os.rename(target, elsewhere),
        "rename-in": lambda: os.rename(elsewhere, target),
    }
    assert _changes_parent_times(d, parent_rel, actions[call]), f"{call} in {parent_rel or 'the root'}"


# -- ctime moves on every change of the inode; mtime only when its content changes --------------
@pytest.mark.parametrize("rel", ["top.txt", "dir", "new.txt"])
@pytest.mark.parametrize("call", ["chmod", "utime", "rename"])
def test_ctime_moves_on_every_change(d, rel, call):
    path = os.path.join(d, rel)
    if rel == "new.txt":
        open(path, "w").close()
    mtime, ctime = _times(path)
    time.sleep(TICK)
    if call == "chmod":
        os.chmod(path, 0o700)
    elif call == "utime":
        os.utime(path, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    else:
        os.rename(path, path + ".moved")
        path += ".moved"
    new_mtime, new_ctime = _times(path)
    assert new_ctime > ctime
    assert new_mtime == (1_000_000_000_000_000_000 if call == "utime" else mtime)


def test_write_moves_mtime_and_ctime_of_a_base_file(d):
    path = os.path.join(d, "dir", "g.txt")
    mtime, ctime = _times(path)
    time.sleep(TICK)
    with open(path, "a") as f:
        f.write("more\n")
    new_mtime, new_ctime = _times(path)
    assert new_mtime > mtime and new_ctime > ctime


def test_utime_sets_atime_and_mtime_apart(d):
    path = os.path.join(d, "top.txt")
    os.utime(path, ns=(1_500_000_000_111_111_111, 1_600_000_000_222_222_222))
    st = os.stat(path)
    assert (st.st_atime_ns, st.st_mtime_ns) == (1_500_000_000_111_111_111, 1_600_000_000_222_222_222)
    new = os.path.join(d, "new.txt")
    open(new, "w").close()
    os.utime(new, ns=(1_500_000_000_333_333_333, 1_600_000_000_444_444_444))
    st = os.stat(new)
    assert (st.st_atime_ns, st.st_mtime_ns) == (1_500_000_000_333_333_333, 1_600_000_000_444_444_444)


# -- link counts -------------------------------------------------------------------------------
def test_a_folder_has_two_links_plus_one_per_subfolder(d):
    assert os.stat(d).st_nlink == 2 + 1  # dir
    assert os.stat(os.path.join(d, "dir")).st_nlink == 2 + 1  # dir/sub (a base folder)
    assert os.stat(os.path.join(d, "dir", "sub")).st_nlink == 2
    os.mkdir(os.path.join(d, "dir", "new"))
    os.makedirs(os.path.join(d, "n", "a"))
    os.mkdir(os.path.join(d, "n", "b"))
    assert os.stat(os.path.join(d, "dir")).st_nlink == 2 + 2
    assert os.stat(os.path.join(d, "n")).st_nlink == 2 + 2
    assert os.stat(d).st_nlink == 2 + 2
    os.rename(os.path.join(d, "n", "b"), os.path.join(d, "dir", "b"))
    assert (os.stat(os.path.join(d, "n")).st_nlink, os.stat(os.path.join(d, "dir")).st_nlink) == (3, 5)
    os.rmdir(os.path.join(d, "n", "a"))
    assert os.stat(os.path.join(d, "n")).st_nlink == 2
    assert os.stat(os.path.join(d, "top.txt")).st_nlink == 1


def test_find_walks_a_draft_whole(d):
    """find trusts nlink (2 + subfolders) to stop looking for folders: a wrong count hides some."""
    os.makedirs(os.path.join(d, "a", "b", "c"))
    open(os.path.join(d, "a", "b", "c", "deep.txt"), "w").close()
    found = sorted(sh("find", ".", "-type", "d", cwd=d).stdout.split())
    assert found == [".", "./a", "./a/b", "./a/b/c", "./dir", "./dir/sub"]


# -- names ---------------------------------------------------------------------------------------
LONG = "x" * 256


@pytest.mark.parametrize("call", ["creat", "mkdir", "stat", "rename-to"])
def test_a_name_over_255_bytes_is_enametoolong(d, call):
    path = os.path.join(d, LONG)
    calls = {
        "creat": lambda: open(path, "w"),
        "mkdir": lambda: os.mkdir(path),
        "stat": lambda: os.stat(path),
        "rename-to": lambda: os.rename(os.path.join(d, "top.txt"), path),
    }
    assert errno_of(calls[call]) == errno.ENAMETOOLONG


def test_a_name_of_255_bytes_works(d):
    path = os.path.join(d, "é" * 127 + "x")  # 255 bytes of UTF-8
    open(path, "w").close()
    assert os.path.basename(path) in os.listdir(d)


def test_a_name_over_255_bytes_outside_drafts_is_enametoolong(mount):
    assert errno_of(os.stat, mount.path(BASE, "v0", LONG)) == errno.ENAMETOOLONG


@pytest.mark.parametrize("call", ["creat", "mkdir"])
def test_a_name_that_is_not_utf8_is_einval(d, call):
    path = os.path.join(os.fsencode(d), b"bad-\xff-name")
    calls = {"creat": lambda: open(path, "w"), "mkdir": lambda: os.mkdir(path)}
    assert errno_of(calls[call]) == errno.EINVAL


def test_listings_hold_dot_and_dotdot(d, mount):
    for folder in (d, os.path.join(d, "dir"), mount.path(BASE, "v0"), mount.path(BASE, "v0", "dir")):
        names = sh("ls", "-a", folder).stdout.split()
        assert names[:2] == [".", ".."] and names.count(".") == 1, folder
    assert sorted(os.listdir(os.path.join(d, "dir"))) == ["g.txt", "sub"]  # (os.listdir drops them)


# -- tools that rely on these ---------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_status_with_the_untracked_cache_sees_a_new_file(d):
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "core.untrackedCache=true"]
    repo = os.path.join(d, "repo")
    sh(*git, "init", "-q", repo)
    sh(*git, "-C", repo, "config", "core.untrackedCache", "true")
    open(os.path.join(repo, "a.txt"), "w").close()
    assert "a.txt" in sh(*git, "-C", repo, "status", "--porcelain", "-uall").stdout
    sh(*git, "-C", repo, "add", "a.txt")
    sh(*git, "-C", repo, "commit", "-q", "-m", "one")
    assert sh(*git, "-C", repo, "status", "--porcelain", "-uall").stdout == ""  # the cache is now filled
    time.sleep(TICK)
    open(os.path.join(repo, "b.txt"), "w").close()
    assert "?? b.txt" in sh(*git, "-C", repo, "status", "--porcelain", "-uall").stdout
