"""A version keeps the tree, seen through the kernel: version folders show the files' and folders'
modes and mtimes as put, a draft of it starts from them (so `rsync -a` finds nothing to copy), and
a git clone committed through a draft is a sound repository in the version."""

from __future__ import annotations

import os
import re
import shutil

import pytest
from conftest import run_artfs
from drafts_common import sh, shared_mounter, unique  # noqa: F401  (shared_mounter is a fixture)

pytestmark = pytest.mark.mount

T0 = 1_600_000_000_123_456_789


@pytest.fixture(scope="module")
def env(shared_mounter, tmp_path_factory):  # noqa: F811
    store = str(tmp_path_factory.mktemp("tree") / "store")
    return store, shared_mounter(store, "--refresh", "0.3")


def _cli(env, *args):
    store, m = env
    return run_artfs(list(args), store=store, cache=m.cache)


def _source(root) -> str:
    os.makedirs(os.path.join(root, "sub", "empty"))
    for i, (name, mode) in enumerate([("a.txt", 0o644), ("run.sh", 0o750), ("sub/b.bin", 0o600)]):
        path = os.path.join(root, name)
        with open(path, "wb") as f:
            f.write(os.urandom(1000 + i))
        os.chmod(path, mode)
        os.utime(path, ns=(T0 + i, T0 + i))
    for i, d in enumerate(["sub/empty", "sub", "."]):
        os.utime(os.path.join(root, d), ns=(T0 + 100 + i, T0 + 100 + i))
    return str(root)


def _wait_version(m, artifact, version):
    from mounts import wait_for

    wait_for(lambda: os.path.isdir(m.path(artifact, version)), 10, f"{artifact}:{version} in the mount")


def test_version_folders_show_modes_and_times_as_put(env, tmp_path):
    _, m = env
    artifact = f"{unique('p')}/a"
    src = _source(tmp_path / "src")
    _cli(env, "put", src, "--name", artifact, "--type", "dataset").ok()
    _wait_version(m, artifact, "v0")
    v0 = m.path(artifact, "v0")
    st = os.stat(os.path.join(v0, "run.sh"))
    assert (st.st_mode & 0o7777, st.st_mtime_ns) == (0o550, T0 + 1)  # write bits off: versions never change
    st = os.stat(os.path.join(v0, "sub", "b.bin"))
    assert (st.st_mode & 0o7777, st.st_mtime_ns) == (0o400, T0 + 2)
    st = os.stat(os.path.join(v0, "sub", "empty"))
    assert (os.listdir(os.path.join(v0, "sub", "empty")), st.st_mtime_ns) == ([], T0 + 100)
    assert sorted(os.listdir(os.path.join(v0, "sub"))) == ["b.bin", "empty"]


def test_rsync_into_a_draft_of_the_put_version_transfers_no_file(env, tmp_path):
    _, m = env
    artifact = f"{unique('p')}/a"
    src = _source(tmp_path / "src")
    _cli(env, "put", src, "--name", artifact, "--type", "dataset").ok()
    _wait_version(m, artifact, "v0")
    draft = m.path(artifact, "drafts", "d")
    os.mkdir(draft)
    out = sh("rsync", "-a", "--stats", src + "/", draft + "/").stdout
    assert re.search(r"Number of regular files transferred: 0\b", out), out
    assert _cli(env, "commit", draft).ok().stdout.strip() == f"{artifact}:v0", "only times could differ: no new version"


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_a_git_clone_committed_through_a_draft_passes_git_fsck_in_the_version(env, tmp_path):
    _, m = env
    artifact = f"{unique('p')}/a"
    repo = tmp_path / "repo"
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
    sh(*git, "init", "-q", repo)
    (repo / "a.txt").write_text("a\n")
    sh(*git, "-C", repo, "add", "a.txt")
    sh(*git, "-C", repo, "commit", "-q", "-m", "one")
    os.makedirs(m.path(artifact.split("/")[0], "a"), exist_ok=True)
    draft = m.path(artifact, "drafts", "d")
    os.mkdir(draft)
    sh(*git, "clone", "-q", repo, os.path.join(draft, "clone"))
    assert _cli(env, "commit", draft, "--type", "code").ok().stdout.strip() == f"{artifact}:v0"
    _wait_version(m, artifact, "v0")
    clone = m.path(artifact, "v0", "clone")
    fsck = sh("git", "-c", f"safe.directory={clone}", "-C", clone, "fsck", "--strict", check=False)
    assert fsck.returncode == 0, fsck.stderr
    assert os.path.isdir(os.path.join(clone, ".git", "refs", "tags"))
