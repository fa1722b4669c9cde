"""Inside a draft, through the real kernel: the file operations people and tools use.

One mount (local store) serves the whole module; each test works in a draft of its own:
`draft` is a fresh draft of posix/base:v0 (base files visible), `fresh` an empty draft of
a new artifact of its own (for tests that commit and look at the version).
"""

from __future__ import annotations

import errno
import os
import random
import stat
import tarfile
import time

import blake3
import pytest

from conftest import read_tree, write_tree
from mounts import errno_of
from drafts_common import commit, data_files, read, sh, shared_mounter, unique, write  # noqa: F401

pytestmark = pytest.mark.mount

BASE = "posix/base"
rnd = random.Random(7)
BASE_FILES = {
    "README.md": b"base readme\n",
    "data/a.bin": rnd.randbytes(3000),
    "data/b.bin": rnd.randbytes(5000),
    "data/nested/c.txt": b"nested c\n",
    "data/nested/deeper/d.txt": b"deeper d\n",
    "other/keep.txt": b"keep me\n",
    "bin/run.sh": b"#!/bin/sh\necho run\n",
    "big.bin": rnd.randbytes(2 * (1 << 20) + 4321),  # several 1 MiB pieces
}


@pytest.fixture(scope="module")
def posix(shared_mounter, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("posix-src")
    store = str(tmp / "store")
    src = write_tree(tmp / "src", BASE_FILES)
    os.chmod(os.path.join(src, "bin/run.sh"), 0o755)
    from conftest import run_artfs

    run_artfs(["put", src, "--name", BASE, "--type", "dataset"], store=store, cache=str(tmp / "cli-cache")).ok()
    return shared_mounter(store, "--refresh", "0.5")


@pytest.fixture
def draft(posix):
    """A fresh draft of posix/base (latest = v0): its path in the mount."""
    name = unique("d")
    path = posix.path(BASE, "drafts", name)
    os.mkdir(path)
    return path


@pytest.fixture
def fresh(posix):
    """(draft path, artifact) for an empty draft of a new artifact of this test's own."""
    artifact = f"posix/{unique('new')}"
    path = posix.path(artifact, "drafts", "d")
    os.makedirs(path)
    return path, artifact


def commit_fresh(posix, fresh) -> str:
    path, artifact = fresh
    out = commit(posix, path, "--type", "dataset").ok().out
    assert out == f"{artifact}:v0"
    return posix.path(artifact, "v0")


def draft_name(path: str) -> str:
    return os.path.basename(path)


# -- base files -------------------------------------------------------------------------------


def test_base_files_are_visible_with_exact_bytes(draft):
    assert read_tree(draft) == BASE_FILES


def test_reading_base_files_copies_nothing(posix, draft):
    read_tree(draft)
    assert data_files(posix.cache, BASE, draft_name(draft)) == []


def test_base_executable_keeps_its_mode(draft):
    assert stat.S_IMODE(os.stat(os.path.join(draft, "bin/run.sh")).st_mode) & 0o111
    assert not stat.S_IMODE(os.stat(os.path.join(draft, "README.md")).st_mode) & 0o111


def test_draft_folders_are_writable_directories(draft):
    st = os.stat(draft)
    assert stat.S_ISDIR(st.st_mode) and st.st_mode & 0o200


# -- writing files ----------------------------------------------------------------------------


def test_create_and_write_a_new_file(draft):
    write(os.path.join(draft, "new.txt"), b"fresh content\n")
    assert read(os.path.join(draft, "new.txt")) == b"fresh content\n"
    assert "new.txt" in os.listdir(draft)
    assert os.stat(os.path.join(draft, "new.txt")).st_size == 14


def test_write_a_new_file_in_a_new_folder(draft):
    os.makedirs(os.path.join(draft, "x/y"))
    write(os.path.join(draft, "x/y/z.bin"), b"z" * 70000)
    assert read(os.path.join(draft, "x/y/z.bin")) == b"z" * 70000


def test_overwrite_a_base_file(posix, draft):
    write(os.path.join(draft, "data/a.bin"), b"replaced")
    assert read(os.path.join(draft, "data/a.bin")) == b"replaced"
    assert read(posix.path(BASE, "v0/data/a.bin")) == BASE_FILES["data/a.bin"]


def test_overwrite_copies_up_only_that_file(posix, draft):
    write(os.path.join(draft, "data/a.bin"), b"replaced")
    assert len(data_files(posix.cache, BASE, draft_name(draft))) == 1


def test_overwrite_in_place_keeps_the_rest(draft):
    path = os.path.join(draft, "big.bin")
    with open(path, "r+b") as f:
        f.seek(1 << 20)
        f.write(b"PATCH")
    want = bytearray(BASE_FILES["big.bin"])
    want[1 << 20 : (1 << 20) + 5] = b"PATCH"
    assert read(path) == bytes(want)


def test_append_with_shell_redirection(draft):
    sh("sh", "-c", f"echo appended >> '{draft}/README.md'")
    assert read(os.path.join(draft, "README.md")) == b"base readme\nappended\n"


def test_append_to_a_large_base_file(draft):
    with open(os.path.join(draft, "big.bin"), "ab") as f:
        f.write(b"tail")
    assert read(os.path.join(draft, "big.bin")) == BASE_FILES["big.bin"] + b"tail"


def test_append_to_a_new_file_twice(draft):
    path = os.path.join(draft, "log.txt")
    for line in (b"one\n", b"two\n"):
        with open(path, "ab") as f:
            f.write(line)
    assert read(path) == b"one\ntwo\n"


def test_truncate_s_shrinks_and_extends(draft):
    path = os.path.join(draft, "data/b.bin")
    sh("truncate", "-s", "100", path)
    assert read(path) == BASE_FILES["data/b.bin"][:100]
    sh("truncate", "-s", "200", path)
    assert read(path) == BASE_FILES["data/b.bin"][:100] + b"\0" * 100


def test_truncate_to_zero_of_a_base_file(draft):
    path = os.path.join(draft, "big.bin")
    os.truncate(path, 0)
    assert os.stat(path).st_size == 0 and read(path) == b""


def test_open_with_o_trunc_empties_a_base_file(draft):
    path = os.path.join(draft, "data/a.bin")
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    os.close(fd)
    assert read(path) == b""
    write(path, b"after")
    assert read(path) == b"after"


def test_ftruncate_on_an_open_file(draft):
    path = os.path.join(draft, "t.bin")
    with open(path, "wb") as f:
        f.write(b"0123456789")
        f.flush()
        f.truncate(4)
    assert read(path) == b"0123"


# -- namespace ------------------------------------------------------------------------------


def test_rename_a_base_file(draft):
    os.rename(os.path.join(draft, "README.md"), os.path.join(draft, "READ.txt"))
    assert not os.path.exists(os.path.join(draft, "README.md"))
    assert read(os.path.join(draft, "READ.txt")) == BASE_FILES["README.md"]


def test_rename_a_file_across_folders(draft):
    os.rename(os.path.join(draft, "data/nested/c.txt"), os.path.join(draft, "other/c.txt"))
    assert read(os.path.join(draft, "other/c.txt")) == BASE_FILES["data/nested/c.txt"]
    assert "c.txt" not in os.listdir(os.path.join(draft, "data/nested"))


def test_rename_an_unlisted_base_folder_into_another_unlisted_folder(posix, draft):
    # Neither folder has been listed or looked into before the rename.
    os.rename(os.path.join(draft, "data/nested"), os.path.join(draft, "other/moved"))
    got = read_tree(draft)
    want = {k: v for k, v in BASE_FILES.items() if not k.startswith("data/nested/")}
    want["other/moved/c.txt"] = BASE_FILES["data/nested/c.txt"]
    want["other/moved/deeper/d.txt"] = BASE_FILES["data/nested/deeper/d.txt"]
    assert got == want
    assert data_files(posix.cache, BASE, draft_name(draft)) == []  # moved, not copied


def test_rename_a_whole_top_folder(draft):
    os.rename(os.path.join(draft, "data"), os.path.join(draft, "dataset"))
    assert sorted(os.listdir(draft)) == ["README.md", "big.bin", "bin", "dataset", "other"]
    assert read(os.path.join(draft, "dataset/nested/deeper/d.txt")) == BASE_FILES["data/nested/deeper/d.txt"]


def test_renamed_folder_lands_in_the_version(posix, fresh):
    path, _ = fresh
    os.makedirs(os.path.join(path, "a/b"))
    write(os.path.join(path, "a/b/f.txt"), b"f")
    os.mkdir(os.path.join(path, "c"))
    os.rename(os.path.join(path, "a"), os.path.join(path, "c/a2"))
    v0 = commit_fresh(posix, fresh)
    assert read_tree(v0) == {"c/a2/b/f.txt": b"f"}


def test_rename_a_folder_into_itself_is_einval(draft):
    assert errno_of(os.rename, os.path.join(draft, "data"), os.path.join(draft, "data/nested/x")) == errno.EINVAL


def test_rename_over_a_non_empty_folder_is_enotempty(draft):
    os.mkdir(os.path.join(draft, "empty"))
    assert errno_of(os.rename, os.path.join(draft, "empty"), os.path.join(draft, "other")) == errno.ENOTEMPTY


def test_rename_noreplace_is_eexist(draft):
    # mv -n / renameat2(RENAME_NOREPLACE)
    p = sh(
        "mv", "--no-clobber", "--verbose", os.path.join(draft, "README.md"), os.path.join(draft, "big.bin"), check=False
    )
    assert read(os.path.join(draft, "big.bin")) == BASE_FILES["big.bin"]
    assert os.path.exists(os.path.join(draft, "README.md")), p.stderr


def test_a_base_file_shows_its_digest_until_it_is_written(draft):
    path = os.path.join(draft, "data/a.bin")
    assert os.getxattr(path, "user.artfs.digest") == blake3.blake3(BASE_FILES["data/a.bin"]).hexdigest().encode()
    write(path, b"changed")
    assert errno_of(os.getxattr, path, "user.artfs.digest") == errno.ENODATA
    assert errno_of(os.getxattr, os.path.join(draft, "data"), "user.artfs.digest") == errno.ENODATA


def test_unlink_a_base_file(draft):
    os.unlink(os.path.join(draft, "data/a.bin"))
    assert not os.path.exists(os.path.join(draft, "data/a.bin"))
    assert sorted(os.listdir(os.path.join(draft, "data"))) == ["b.bin", "nested"]


def test_unlink_a_new_file(posix, draft):
    write(os.path.join(draft, "gone.txt"), b"x")
    os.unlink(os.path.join(draft, "gone.txt"))
    assert "gone.txt" not in os.listdir(draft)
    assert data_files(posix.cache, BASE, draft_name(draft)) == []


def test_unlink_a_missing_file_is_enoent(draft):
    assert errno_of(os.unlink, os.path.join(draft, "nope")) == errno.ENOENT


def test_mkdir_and_rmdir(draft):
    path = os.path.join(draft, "newdir")
    os.mkdir(path)
    assert os.path.isdir(path) and os.listdir(path) == []
    os.rmdir(path)
    assert not os.path.exists(path)


def test_mkdir_of_an_existing_name_is_eexist(draft):
    assert errno_of(os.mkdir, os.path.join(draft, "data")) == errno.EEXIST
    assert errno_of(os.mkdir, os.path.join(draft, "README.md")) == errno.EEXIST


def test_rmdir_of_a_non_empty_unlisted_base_folder_is_enotempty(draft):
    assert errno_of(os.rmdir, os.path.join(draft, "data/nested")) == errno.ENOTEMPTY
    assert read(os.path.join(draft, "data/nested/c.txt")) == BASE_FILES["data/nested/c.txt"]


def test_rmdir_of_a_base_folder_emptied_first(draft):
    os.unlink(os.path.join(draft, "other/keep.txt"))
    os.rmdir(os.path.join(draft, "other"))
    assert "other" not in os.listdir(draft)


def test_rmdir_of_a_file_is_enotdir(draft):
    assert errno_of(os.rmdir, os.path.join(draft, "README.md")) == errno.ENOTDIR


def test_rm_rf_of_a_base_folder(draft):
    sh("rm", "-rf", os.path.join(draft, "data"))
    assert sorted(os.listdir(draft)) == ["README.md", "big.bin", "bin", "other"]


# -- attributes -------------------------------------------------------------------------------


def test_chmod_x_is_kept_in_the_version(posix, fresh):
    path, _ = fresh
    write(os.path.join(path, "tool.sh"), b"#!/bin/sh\n")
    write(os.path.join(path, "plain.txt"), b"plain\n")
    sh("chmod", "+x", os.path.join(path, "tool.sh"))
    assert os.stat(os.path.join(path, "tool.sh")).st_mode & 0o111
    v0 = commit_fresh(posix, fresh)
    assert stat.S_IMODE(os.stat(os.path.join(v0, "tool.sh")).st_mode) == 0o555
    assert stat.S_IMODE(os.stat(os.path.join(v0, "plain.txt")).st_mode) == 0o444


def test_chmod_of_a_base_file_does_not_copy_it(posix, draft):
    os.chmod(os.path.join(draft, "README.md"), 0o755)
    assert stat.S_IMODE(os.stat(os.path.join(draft, "README.md")).st_mode) == 0o755
    assert data_files(posix.cache, BASE, draft_name(draft)) == []


def test_touch_d_sets_the_mtime(draft):
    for name in ("README.md", "new.txt"):
        path = os.path.join(draft, name)
        sh("touch", "-d", "2001-02-03 04:05:06 UTC", path)
        assert os.stat(path).st_mtime == 981173106, name


def test_utime_of_a_folder(draft):
    os.utime(os.path.join(draft, "data"), (1000000000, 1000000000))
    assert os.stat(os.path.join(draft, "data")).st_mtime == 1000000000


def test_chown_is_accepted_and_ignored(draft):
    path = os.path.join(draft, "README.md")
    os.chown(path, 1234, 1234)
    assert read(path) == BASE_FILES["README.md"]


def test_fsync_makes_the_written_bytes_durable_on_disk(posix, draft):
    path = os.path.join(draft, "synced.bin")
    with open(path, "wb") as f:
        f.write(b"durable bytes")
        f.flush()
        os.fsync(f.fileno())
        ino = os.stat(path).st_ino
        (name,) = data_files(posix.cache, BASE, draft_name(draft))
        assert read(os.path.join(posix.cache, "drafts", BASE, draft_name(draft), "data", name)) == b"durable bytes"
    assert ino  # stat through the kernel worked while the file was open


def test_statfs_reports_free_space(draft):
    st = os.statvfs(draft)
    assert st.f_bavail > 0 and st.f_namemax == 255


# -- tools ----------------------------------------------------------------------------------


def _sample_tree(root: str) -> dict[str, bytes]:
    r = random.Random(3)
    files = {f"s/{i % 4}/f{i}.bin": r.randbytes(r.randrange(0, 9000)) for i in range(40)}
    files["s/top.txt"] = b"top\n"
    write_tree(root, files)
    os.chmod(os.path.join(root, "s/top.txt"), 0o755)
    os.utime(os.path.join(root, "s/top.txt"), (1500000000, 1500000000))
    return files


def test_cp_a_copies_a_tree_with_modes_and_times(draft, tmp_path):
    files = _sample_tree(str(tmp_path / "src"))
    sh("cp", "-a", str(tmp_path / "src/s"), os.path.join(draft, "s"))
    assert read_tree(os.path.join(draft, "s")) == {k[2:]: v for k, v in files.items()}
    st = os.stat(os.path.join(draft, "s/top.txt"))
    assert stat.S_IMODE(st.st_mode) == 0o755 and st.st_mtime == 1500000000


def test_rsync_a_copies_a_tree_and_a_second_run_changes_nothing(draft, tmp_path):
    files = _sample_tree(str(tmp_path / "src"))
    sh("rsync", "-a", str(tmp_path / "src/s") + "/", os.path.join(draft, "s/"))
    assert read_tree(os.path.join(draft, "s")) == {k[2:]: v for k, v in files.items()}
    again = sh("rsync", "-a", "--itemize-changes", str(tmp_path / "src/s") + "/", os.path.join(draft, "s/"))
    assert again.stdout.strip() == ""


def test_rsync_replaces_a_base_file_by_temp_and_rename(draft, tmp_path):
    src = write_tree(tmp_path / "src", {"README.md": b"new readme from rsync\n"})
    sh("rsync", "-a", src + "/", draft + "/")
    assert read(os.path.join(draft, "README.md")) == b"new readme from rsync\n"
    assert read(os.path.join(draft, "data/a.bin")) == BASE_FILES["data/a.bin"]


def test_tar_x_unpacks_into_a_draft(draft, tmp_path):
    files = _sample_tree(str(tmp_path / "src"))
    archive = str(tmp_path / "t.tar")
    with tarfile.open(archive, "w") as t:
        t.add(str(tmp_path / "src/s"), arcname="s")
    sh("tar", "xf", archive, "-C", draft)
    assert read_tree(os.path.join(draft, "s")) == {k[2:]: v for k, v in files.items()}
    assert os.stat(os.path.join(draft, "s/top.txt")).st_mtime == 1500000000


def test_cp_a_tree_lands_in_the_version(posix, fresh, tmp_path):
    path, _ = fresh
    files = _sample_tree(str(tmp_path / "src"))
    sh("cp", "-a", str(tmp_path / "src/s"), os.path.join(path, "s"))
    v0 = commit_fresh(posix, fresh)
    assert read_tree(v0) == files
    assert stat.S_IMODE(os.stat(os.path.join(v0, "s/top.txt")).st_mode) == 0o555


def test_editor_save_temp_fsync_rename_over_original(posix, draft):
    original = os.path.join(draft, "README.md")
    tmp = os.path.join(draft, ".README.md.swp")
    with open(tmp, "wb") as f:
        f.write(b"edited readme\n")
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, original)
    assert read(original) == b"edited readme\n"
    assert ".README.md.swp" not in os.listdir(draft)


def test_editor_save_lands_in_the_version(posix, fresh):
    path, _ = fresh
    write(os.path.join(path, "notes.txt"), b"v1\n")
    with open(os.path.join(path, "notes.txt~"), "wb") as f:
        f.write(b"v2\n")
        os.fsync(f.fileno())
    os.rename(os.path.join(path, "notes.txt~"), os.path.join(path, "notes.txt"))
    assert read_tree(commit_fresh(posix, fresh)) == {"notes.txt": b"v2\n"}


def test_git_clone_into_a_draft_and_git_status_is_clean(draft, tmp_path):
    repo = str(tmp_path / "repo")
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
        "HOME": str(tmp_path),
    }
    sh("git", "init", "-q", "-b", "main", repo, env=env)
    write_tree(repo, {"a.txt": "a\n", "src/b.py": "print('b')\n", "run.sh": "#!/bin/sh\n"})
    os.chmod(os.path.join(repo, "run.sh"), 0o755)
    sh("git", "add", "-A", cwd=repo, env=env)
    sh("git", "commit", "-q", "-m", "first", cwd=repo, env=env)
    clone = os.path.join(draft, "clone")
    sh("git", "clone", "-q", repo, clone, env=env)
    assert sh("git", "status", "--porcelain", cwd=clone, env=env).stdout == ""
    assert sh("git", "log", "--format=%s", cwd=clone, env=env).stdout == "first\n"
    write(os.path.join(clone, "a.txt"), b"changed\n")
    assert sh("git", "status", "--porcelain", cwd=clone, env=env).stdout == " M a.txt\n"
    sh("git", "commit", "-qam", "second", cwd=clone, env=env)
    assert sh("git", "status", "--porcelain", cwd=clone, env=env).stdout == ""


def test_shared_mmap_writes_land_in_the_file(draft):
    import mmap

    path = os.path.join(draft, "mapped.bin")
    write(path, b"\0" * 8192)
    with open(path, "r+b") as f:
        m = mmap.mmap(f.fileno(), 8192)
        m[4096:4101] = b"hello"
        m.flush()
        m.close()
    assert read(path)[4096:4101] == b"hello"


def test_sqlite_database_in_a_draft_with_wal(draft):
    import sqlite3

    db = sqlite3.connect(os.path.join(draft, "t.db"))
    try:
        assert db.execute("PRAGMA journal_mode=WAL").fetchone() == ("wal",)
        db.execute("CREATE TABLE t(x)")
        db.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(100)])
        db.commit()
        assert db.execute("SELECT count(*), sum(x) FROM t").fetchone() == (100, 4950)
    finally:
        db.close()


# -- open files -----------------------------------------------------------------------------


def test_unlink_while_open_keeps_a_new_file_readable(draft):
    path = os.path.join(draft, "open.bin")
    write(path, b"still here" * 1000)
    with open(path, "rb") as f:
        os.unlink(path)
        assert not os.path.exists(path)
        assert f.read() == b"still here" * 1000


def test_unlink_while_open_keeps_a_base_file_readable(draft):
    path = os.path.join(draft, "data/b.bin")
    with open(path, "rb") as f:
        os.unlink(path)
        assert f.read() == BASE_FILES["data/b.bin"]


def test_truncate_and_chmod_after_unlink_of_an_open_file(draft):
    # What SQLite does with its temp files: create, unlink at once, then use and truncate.
    path = os.path.join(draft, "temp.db")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"0123456789")
        os.unlink(path)
        os.ftruncate(fd, 4)
        assert os.fstat(fd).st_size == 4
        assert os.pread(fd, 100, 0) == b"0123"
        os.fchmod(fd, 0o600)
        os.ftruncate(fd, 0)
        assert os.pread(fd, 100, 0) == b""
    finally:
        os.close(fd)
    assert "temp.db" not in os.listdir(draft)


def test_write_after_unlink_of_an_open_file(draft):
    path = os.path.join(draft, "scratch.bin")
    with open(path, "w+b") as f:
        os.unlink(path)
        f.write(b"scratch")
        f.flush()
        f.seek(0)
        assert f.read() == b"scratch"
    assert "scratch.bin" not in os.listdir(draft)


def test_fstat_of_an_unlinked_open_file(draft):
    path = os.path.join(draft, "tmpfile")
    with open(path, "w+b") as f:
        f.write(b"12345")
        f.flush()
        os.unlink(path)
        st = os.fstat(f.fileno())
        assert st.st_size == 5 and st.st_nlink == 0 and stat.S_ISREG(st.st_mode)


def test_unlinked_open_file_is_readable_after_the_attribute_timeout(draft):
    path = os.path.join(draft, "late.bin")
    write(path, b"late" * 100)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.unlink(path)
        time.sleep(1.3)  # draft attributes are cached for 1 s: the kernel asks again
        assert os.pread(fd, 400, 0) == b"late" * 100
    finally:
        os.close(fd)


def test_rename_over_an_open_file(draft):
    target, other = os.path.join(draft, "target.txt"), os.path.join(draft, "other.txt")
    write(target, b"old target")
    write(other, b"new target")
    with open(target, "rb") as f:
        os.rename(other, target)
        assert f.read() == b"old target"
    assert read(target) == b"new target"
    assert not os.path.exists(other)


def test_rename_over_an_open_base_file(draft):
    target = os.path.join(draft, "data/a.bin")
    write(os.path.join(draft, "repl"), b"replacement")
    with open(target, "rb") as f:
        os.rename(os.path.join(draft, "repl"), target)
        assert f.read() == BASE_FILES["data/a.bin"]
    assert read(target) == b"replacement"


def test_two_descriptors_see_each_others_writes(draft):
    path = os.path.join(draft, "shared.txt")
    with open(path, "wb") as w:
        w.write(b"first")
        w.flush()
        with open(path, "rb") as r:
            assert r.read() == b"first"


# -- refused operations -------------------------------------------------------------------------


def test_hard_link_is_eperm(draft):
    assert errno_of(os.link, os.path.join(draft, "README.md"), os.path.join(draft, "hl")) == errno.EPERM


def test_symlink_is_enotsup(draft):
    assert errno_of(os.symlink, "README.md", os.path.join(draft, "sl")) == errno.ENOTSUP
    assert "sl" not in os.listdir(draft)


def test_mkfifo_is_refused(draft):
    assert errno_of(os.mkfifo, os.path.join(draft, "fifo")) in (errno.ENOTSUP, errno.EPERM)


def test_mknod_of_a_device_is_refused(draft):
    assert errno_of(os.mknod, os.path.join(draft, "null"), stat.S_IFCHR | 0o600, os.makedev(1, 3)) in (
        errno.ENOTSUP,
        errno.EPERM,
    )


def test_user_xattrs_in_a_draft_are_enotsup(draft):
    assert errno_of(os.setxattr, os.path.join(draft, "README.md"), "user.x", b"1") == errno.ENOTSUP


def test_rename_across_drafts_is_exdev(posix, draft):
    other = posix.path(BASE, "drafts", unique("o"))
    os.mkdir(other)
    assert errno_of(os.rename, os.path.join(draft, "README.md"), os.path.join(other, "README.md")) == errno.EXDEV


def test_mv_across_drafts_falls_back_to_copy(posix, draft):
    other = posix.path(BASE, "drafts", unique("o"))
    os.mkdir(other)
    sh("mv", os.path.join(draft, "README.md"), os.path.join(other, "moved.md"))
    assert read(os.path.join(other, "moved.md")) == BASE_FILES["README.md"]
    assert not os.path.exists(os.path.join(draft, "README.md"))


@pytest.mark.parametrize("op", ["create", "write", "mkdir", "unlink", "rename", "chmod", "truncate"])
def test_writes_in_a_version_are_erofs(posix, op):
    v0 = posix.path(BASE, "v0")
    f = os.path.join(v0, "README.md")
    ops = {
        "create": lambda: os.close(os.open(os.path.join(v0, "new"), os.O_CREAT | os.O_WRONLY, 0o644)),
        "write": lambda: os.close(os.open(f, os.O_WRONLY)),
        "mkdir": lambda: os.mkdir(os.path.join(v0, "d")),
        "unlink": lambda: os.unlink(f),
        "rename": lambda: os.rename(f, os.path.join(v0, "x")),
        "chmod": lambda: os.chmod(f, 0o777),
        "truncate": lambda: os.truncate(f, 0),
    }
    assert errno_of(ops[op]) == errno.EROFS


def test_a_draft_file_cannot_move_into_a_version(posix, draft):
    assert errno_of(os.rename, os.path.join(draft, "README.md"), posix.path(BASE, "v0/x")) in (errno.EROFS, errno.EXDEV)


def test_empty_folders_are_kept_in_the_version(posix, fresh):
    path, _ = fresh
    os.makedirs(os.path.join(path, "empty/inner"))
    write(os.path.join(path, "f.txt"), b"f")
    version = commit_fresh(posix, fresh)
    assert sorted(os.listdir(version)) == ["empty", "f.txt"]
    assert os.listdir(os.path.join(version, "empty")) == ["inner"]
    assert os.listdir(os.path.join(version, "empty", "inner")) == []


# -- answers from the daemon's memory (drafts.NamespaceCache) -------------------------------------
def test_a_file_added_by_artfs_ref_add_is_seen_at_once(posix, draft, tmp_path):
    """The daemon answers lookups in listed folders from memory; a change made by another
    process (`artfs ref add` on the mounted draft) must be seen at once all the same."""
    src = tmp_path / "ref.txt"
    src.write_bytes(b"referenced bytes")
    os.mkdir(os.path.join(draft, "sub"))
    write(os.path.join(draft, "sub", "here.txt"), b"here")
    assert sorted(os.listdir(os.path.join(draft, "sub"))) == ["here.txt"]
    assert sorted(os.listdir(os.path.join(draft, "data"))) == ["a.bin", "b.bin", "nested"]
    for missing in ("sub/ref.txt", "data/ref.txt"):  # known missing, from memory
        assert errno_of(os.stat, os.path.join(draft, missing)) == errno.ENOENT
    from conftest import run_artfs

    for name in ("sub/ref.txt", "data/ref.txt"):
        run_artfs(["ref", "add", draft, f"file://{src}", "--name", name], store=posix.store, cache=posix.cache).ok()
        assert read(os.path.join(draft, name)) == b"referenced bytes"
    assert sorted(os.listdir(os.path.join(draft, "sub"))) == ["here.txt", "ref.txt"]
    assert os.getxattr(os.path.join(draft, "sub/ref.txt"), "user.artfs.ref") == f"file://{src}".encode()
    write(os.path.join(draft, "sub", "after.txt"), b"after")  # and the daemon's own changes go on
    assert sorted(os.listdir(os.path.join(draft, "sub"))) == ["after.txt", "here.txt", "ref.txt"]
    assert read(os.path.join(draft, "data", "a.bin")) == BASE_FILES["data/a.bin"]


def test_attributes_from_memory_follow_every_change(draft):
    """Sizes, modes and times answered from memory after each kind of change (the kernel's
    own attribute cache, 1 s in drafts, is let expire before each look)."""
    path = os.path.join(draft, "grow.txt")

    def fresh_stat(p=path):
        time.sleep(1.1)
        return os.stat(p)

    write(path, b"0123456789")
    assert fresh_stat().st_size == 10
    with open(path, "ab") as f:  # written after a close: the cached size is dropped
        f.write(b"abcde")
        f.flush()
        assert fresh_stat().st_size == 15  # while still open
    assert fresh_stat().st_size == 15
    os.truncate(path, 3)
    assert fresh_stat().st_size == 3
    os.chmod(path, 0o755)
    assert stat.S_IMODE(fresh_stat().st_mode) == 0o755
    os.utime(path, (1_000_000_000, 1_000_000_000))
    assert fresh_stat().st_mtime == 1_000_000_000
    os.mkdir(os.path.join(draft, "dir"))
    os.chmod(os.path.join(draft, "dir"), 0o700)
    assert stat.S_IMODE(fresh_stat(os.path.join(draft, "dir")).st_mode) == 0o700
    os.rename(path, os.path.join(draft, "dir", "moved.txt"))
    assert errno_of(os.stat, path) == errno.ENOENT
    assert fresh_stat(os.path.join(draft, "dir", "moved.txt")).st_size == 3
    with open(os.path.join(draft, "README.md"), "r+b") as f:  # a base file, copied up by the write
        f.write(b"B")
    assert fresh_stat(os.path.join(draft, "README.md")).st_size == len(BASE_FILES["README.md"])
    assert read(os.path.join(draft, "README.md")) == b"B" + BASE_FILES["README.md"][1:]
    os.unlink(os.path.join(draft, "dir", "moved.txt"))
    os.rmdir(os.path.join(draft, "dir"))
    assert errno_of(os.stat, os.path.join(draft, "dir")) == errno.ENOENT
    assert "README.md" in os.listdir(draft) and "dir" not in os.listdir(draft)


# -- bytes written to a file still open: seen by every other look, committed, in any write pattern ----
def test_bytes_of_a_file_still_being_written_are_seen_by_every_other_look(posix, fresh, tmp_path):
    path, artifact = fresh
    p = os.path.join(path, "open.bin")
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, b"first ")
        os.write(fd, b"bytes")
        time.sleep(1.1)  # the kernel's attributes expire: the daemon answers
        assert os.stat(p).st_size == 11
        assert read(p) == b"first bytes"  # another open
        os.write(fd, b", then more")
        assert read(p) == b"first bytes, then more"
        q = os.path.join(path, "listed.bin")
        fd2 = os.open(q, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd2, b"x" * 1000)
            time.sleep(1.1)
            assert {e.name: e.stat().st_size for e in os.scandir(path)}["listed.bin"] == 1000
            fd3 = os.open(os.path.join(path, "committed-open.bin"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                os.write(fd3, b"written, not closed, committed")
                v0 = commit_fresh(posix, fresh)
            finally:
                os.close(fd3)
            assert read(os.path.join(v0, "committed-open.bin")) == b"written, not closed, committed"
            assert read(os.path.join(v0, "listed.bin")) == b"x" * 1000
            assert read(os.path.join(v0, "open.bin")) == b"first bytes, then more"
        finally:
            os.close(fd2)
    finally:
        os.close(fd)


@pytest.mark.parametrize("pattern", ["in-order", "past-the-buffer", "seek-back", "rdwr", "append", "fsync"])
def test_bytes_written_in_any_pattern_land_in_the_file(posix, fresh, pattern):
    path, artifact = fresh
    p = os.path.join(path, "f.bin")
    data = random.Random(pattern).randbytes(200_000)
    flags = os.O_CREAT | os.O_EXCL | (os.O_RDWR if pattern == "rdwr" else os.O_WRONLY)
    if pattern == "append":
        flags |= os.O_APPEND
    fd = os.open(p, flags, 0o644)
    try:
        if pattern == "seek-back":
            os.write(fd, data[:5000])
            os.pwrite(fd, data[1000:2000], 1000)  # rewrites the same bytes, out of order
            os.pwrite(fd, data[5000:], 5000)
        else:
            for k in range(0, len(data), 7000):
                os.write(fd, data[k : k + 7000])
        if pattern == "rdwr":
            assert os.pread(fd, 100, 50) == data[50:150]
        if pattern == "fsync":
            os.fsync(fd)
            assert read(p) == data
    finally:
        os.close(fd)
    assert read(p) == data
    assert os.stat(p).st_size == len(data)
    v0 = commit_fresh(posix, fresh)
    assert read(os.path.join(v0, "f.bin")) == data


def test_the_mount_survived_the_module(posix):
    # Every test above ran in the same daemon: no handler took it down.
    assert posix.mounted() and len(posix.pids()) == 1
    assert "Traceback" not in posix.log(), posix.log()[-4000:]
