"""A version keeps the tree as it was put: empty folders, file and folder mtimes (ns), mode bits;
`artfs get` gives it back; a put that differs only in times makes no new version. Real store, CLI as
a subprocess, no mount."""

import os
import shutil
import subprocess

import pytest
from conftest import ArtfsCLI

T0 = 1_600_000_000_123_456_789  # a time with nanoseconds, far from now


def _tree(root):
    """A small git-like tree: files with odd modes and exact times, empty folders (nested too)."""
    os.makedirs(root / "src" / "pkg")
    os.makedirs(root / ".git" / "refs" / "tags")
    os.makedirs(root / ".git" / "objects" / "info")
    os.makedirs(root / "empty" / "deeper")
    files = {
        "src/pkg/run.sh": (b"#!/bin/sh\necho hi\n", 0o750),
        "src/readme": (b"text\n", 0o600),
        ".git/HEAD": (b"ref: refs/heads/main\n", 0o644),
        "big.bin": (os.urandom(3 << 20), 0o644),
        "tool": (b"suid\n", 0o4755),
        "shared": (b"sgid\n", 0o2750),
    }
    for i, (path, (data, mode)) in enumerate(sorted(files.items())):
        (root / path).write_bytes(data)
        os.chmod(root / path, mode)
        os.utime(root / path, ns=(T0 + i, T0 + i))
    os.chmod(root / "empty", 0o1777)  # sticky, as /tmp
    folders = [
        "src/pkg",
        "src",
        ".git/refs/tags",
        ".git/refs",
        ".git/objects/info",
        ".git/objects",
        ".git",
        "empty/deeper",
        "empty",
        ".",
    ]
    for i, d in enumerate(folders):  # deepest first: setting a folder's time after its children's
        os.utime(root / d, ns=(T0 + 1000 + i, T0 + 1000 + i))
    return files, folders


def _snapshot(root):  # root: a pathlib.Path
    """{relative path: (kind, mode, mtime_ns, bytes or None)} of every file and folder below root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            rel = os.path.relpath(full, root)
            data = (root / rel).read_bytes() if name in filenames else None
            out[rel] = ("d" if data is None else "f", st.st_mode & 0o7777, st.st_mtime_ns, data)
    st = os.stat(root)
    out["."] = ("d", st.st_mode & 0o7777, st.st_mtime_ns, None)
    return out


@pytest.fixture
def cli(tmp_path):
    return ArtfsCLI(str(tmp_path / "store"), str(tmp_path / "cache"), cwd=str(tmp_path))


def test_get_gives_back_the_tree_as_put(cli, tmp_path):
    _tree(tmp_path / "src")
    assert cli("put", "src", "--name", "p/tree", "--type", "dataset").ok().stdout == "p/tree:v0\n"
    cli("get", "p/tree:v0", "--root", "out").ok()
    assert _snapshot(tmp_path / "out") == _snapshot(tmp_path / "src")


def test_get_of_a_folder_keeps_its_empty_folders(cli, tmp_path):
    _tree(tmp_path / "src")
    cli("put", "src", "--name", "p/tree", "--type", "dataset").ok()
    cli("get", "p/tree:v0", "--root", "out", "--path", ".git").ok()
    assert os.path.isdir(tmp_path / "out" / ".git" / "refs" / "tags")
    assert os.path.isdir(tmp_path / "out" / ".git" / "objects" / "info")
    assert not os.path.exists(tmp_path / "out" / "empty")


def test_a_put_differing_only_in_times_or_group_bits_makes_no_new_version(cli, tmp_path):
    _tree(tmp_path / "src")
    cli("put", "src", "--name", "p/tree", "--type", "dataset").ok()
    os.utime(tmp_path / "src" / "src" / "readme", ns=(T0 + 99, T0 + 99))
    os.utime(tmp_path / "src" / "empty", ns=(T0 + 99, T0 + 99))
    os.chmod(tmp_path / "src" / "src" / "readme", 0o640)
    assert cli("put", "src", "--name", "p/tree", "--type", "dataset").ok().stdout == "p/tree:v0\n"
    os.chmod(tmp_path / "src" / "src" / "readme", 0o700)  # the executable bit is content
    assert cli("put", "src", "--name", "p/tree", "--type", "dataset").ok().stdout == "p/tree:v1\n"
    os.mkdir(tmp_path / "src" / "new-empty")  # so is an empty folder
    assert cli("put", "src", "--name", "p/tree", "--type", "dataset").ok().stdout == "p/tree:v2\n"
    shutil.rmtree(tmp_path / "src" / "empty")
    assert cli("put", "src", "--name", "p/tree", "--type", "dataset").ok().stdout == "p/tree:v3\n"


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_a_git_clone_put_and_got_passes_git_fsck(cli, tmp_path):
    repo = tmp_path / "repo"
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
    subprocess.run(git + ["init", "-q", str(repo)], check=True)
    (repo / "a.txt").write_text("a\n")
    subprocess.run(git + ["-C", str(repo), "add", "a.txt"], check=True)
    subprocess.run(git + ["-C", str(repo), "commit", "-q", "-m", "one"], check=True)
    subprocess.run(git + ["clone", "-q", str(repo), str(tmp_path / "clone")], check=True)
    cli("put", "clone", "--name", "p/git", "--type", "code").ok()
    cli("get", "p/git:v0", "--root", "back").ok()
    fsck = subprocess.run(
        ["git", "-C", str(tmp_path / "back"), "fsck", "--strict"], check=False, capture_output=True, text=True
    )
    assert fsck.returncode == 0, fsck.stderr
    status = subprocess.run(
        ["git", "-C", str(tmp_path / "back"), "status", "--porcelain"], capture_output=True, text=True, check=True
    )
    assert status.stdout == ""


def test_the_python_download_gives_back_the_tree_as_put(cli, tmp_path, monkeypatch):
    import artfs

    _tree(tmp_path / "src")
    cli("put", "src", "--name", "p/tree", "--type", "dataset").ok()
    monkeypatch.setenv("ARTFS_STORE", cli.store)
    monkeypatch.setenv("ARTFS_CACHE", cli.cache)
    root = artfs.use_artifact("p/tree:v0").download(str(tmp_path / "py"))
    assert _snapshot(tmp_path / "py") == _snapshot(tmp_path / "src") and os.path.samefile(root, tmp_path / "py")


def test_several_paths_put_keep_their_empty_folders(cli, tmp_path):
    _tree(tmp_path / "src")
    cli("put", "src/.git", "src/empty", "src/big.bin", "--name", "p/several", "--type", "dataset").ok()
    cli("get", "p/several:v0", "--root", "out").ok()
    for folder in (".git/refs/tags", ".git/objects/info", "empty/deeper"):
        assert os.path.isdir(tmp_path / "out" / folder), folder
    assert os.stat(tmp_path / "out" / "empty").st_mode & 0o7777 == 0o1777
