"""A full cache disk: the writer gets ENOSPC, the mount stays up, the draft stays whole
and still commits. The cache lives on a 20 MiB tmpfs (unmounted afterwards, pass or fail)."""

from __future__ import annotations

import errno
import os
import subprocess

import pytest

from conftest import read_tree, tmpfs
from mounts import cleanup, mounter  # noqa: F401  (mounter is a fixture)
from drafts_common import commit, read, write

pytestmark = pytest.mark.mount

MiB = 1 << 20
ARTIFACT = "full/a"
KEEP = {f"keep/{i}.bin": bytes([i]) * (100_000 + i) for i in range(5)}


@pytest.fixture
def small_disk(mounter):
    """A 20 MiB tmpfs for the cache. Set up after `mounter`, so it is torn down first: the
    mounts whose cache it holds are stopped, then it is unmounted."""
    with tmpfs("20m") as path:
        try:
            yield path
        finally:
            for m in mounter.mounts:
                cleanup(m.mp)


def fill(path: str) -> int:
    """Writes 1 MiB blocks until the disk is full; returns the errno it stopped with."""
    block = os.urandom(MiB)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for _ in range(64):
            try:
                os.write(fd, block)
            except OSError as e:
                return e.errno
        return 0
    finally:
        try:
            os.close(fd)
        except OSError:
            pass


@pytest.fixture
def full(mounter, small_disk, tmp_path):
    """A mount whose cache is on the small disk, with a draft holding KEEP; then the disk is filled."""
    m = mounter(str(tmp_path / "store"), cache=small_disk, debug=False)
    draft = m.path(ARTIFACT, "drafts", "d")
    os.makedirs(draft)
    for k, v in KEEP.items():
        os.makedirs(os.path.dirname(os.path.join(draft, k)), exist_ok=True)
        write(os.path.join(draft, k), v)
    m.stopped_with = fill(os.path.join(draft, "huge.bin"))
    m.draft = draft
    return m


def test_writing_more_than_fits_gives_enospc(full):
    assert full.stopped_with == errno.ENOSPC


def test_dd_past_the_end_of_the_disk_fails_with_no_space(mounter, small_disk, tmp_path):
    m = mounter(str(tmp_path / "store"), cache=small_disk, debug=False)
    draft = m.path(ARTIFACT, "drafts", "d")
    os.makedirs(draft)
    p = subprocess.run(
        ["dd", "if=/dev/zero", f"of={draft}/dd.bin", "bs=1M", "count=40"], capture_output=True, text=True, timeout=60
    )
    assert p.returncode != 0 and "No space left on device" in p.stderr, p.stderr


def test_the_mount_stays_up_after_enospc(full):
    assert full.mounted() and len(full.pids()) == 1
    assert sorted(os.listdir(full.draft)) == ["huge.bin", "keep"]


def test_closed_files_are_intact_after_enospc(full):
    assert {k: v for k, v in read_tree(full.draft).items() if k.startswith("keep/")} == KEEP


def test_new_files_on_a_full_disk_fail_cleanly(full):
    errors = set()
    for i in range(20):
        try:
            write(os.path.join(full.draft, f"more{i}.bin"), os.urandom(64 * 1024))
        except OSError as e:
            errors.add(e.errno)
    assert errors <= {errno.ENOSPC}, errors  # never EIO
    assert errors, "a full disk accepted 1.25 MiB more"


def test_the_draft_commits_while_the_disk_is_full(full):
    huge = os.path.getsize(os.path.join(full.draft, "huge.bin"))
    assert huge > 10 * MiB
    assert commit(full, full.draft, "--type", "dataset").ok().out == f"{ARTIFACT}:v0"
    version = read_tree(full.path(ARTIFACT, "v0"))
    assert {k: v for k, v in version.items() if k != "huge.bin"} == KEEP
    assert len(version["huge.bin"]) == huge


def test_deleting_the_file_that_filled_the_disk_frees_space(full):
    os.unlink(os.path.join(full.draft, "huge.bin"))
    write(os.path.join(full.draft, "after.txt"), b"written after the disk was full\n")
    assert commit(full, full.draft, "--type", "dataset").ok().out == f"{ARTIFACT}:v0"
    assert read_tree(full.path(ARTIFACT, "v0")) == {**KEEP, "after.txt": b"written after the disk was full\n"}


def test_truncating_the_file_that_filled_the_disk_frees_space(full):
    os.truncate(os.path.join(full.draft, "huge.bin"), 0)
    write(os.path.join(full.draft, "after.txt"), b"after")
    assert read(os.path.join(full.draft, "after.txt")) == b"after"


def test_rm_rf_of_a_draft_on_a_full_disk_discards_it(full):
    subprocess.run(["rm", "-rf", full.draft], check=True, capture_output=True)
    assert os.listdir(full.path(ARTIFACT, "drafts")) == []


def test_statfs_of_the_mount_reports_the_drafts_disk(full):
    st = os.statvfs(full.mp)
    assert st.f_blocks * st.f_frsize <= 21 * MiB
    assert read(os.path.join(full.draft, "keep/0.bin")) == KEEP["keep/0.bin"]


# -- freeing space always works ---------------------------------------------------------------------
def _fill_with_small_files(draft: str, size: int = 8192) -> int:
    """Creates small files until the disk is full; returns how many were made."""
    os.makedirs(os.path.join(draft, "many"), exist_ok=True)
    data = os.urandom(size)
    for i in range(100_000):
        try:
            write(os.path.join(draft, "many", f"{i:06d}.bin"), data)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
            return i
    raise AssertionError("the small disk never filled")


@pytest.fixture
def full_of_small_files(mounter, small_disk, tmp_path):
    m = mounter(str(tmp_path / "store"), cache=small_disk, debug=False)
    m.draft = m.path(ARTIFACT, "drafts", "d")
    os.makedirs(m.draft)
    m.made = _fill_with_small_files(m.draft)
    return m


def test_rm_rf_of_a_draft_full_of_small_files_discards_it(full_of_small_files):
    m = full_of_small_files
    assert m.made > 100
    p = subprocess.run(["rm", "-rf", m.draft], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert os.listdir(m.path(ARTIFACT, "drafts")) == []


def test_unlink_and_rmdir_work_on_a_full_disk(full_of_small_files):
    m = full_of_small_files
    many = os.path.join(m.draft, "many")
    for name in sorted(os.listdir(many))[:50]:
        os.unlink(os.path.join(many, name))
    for name in sorted(os.listdir(many)):
        os.unlink(os.path.join(many, name))
    os.rmdir(many)
    assert os.listdir(m.draft) == []


def test_a_draft_full_of_small_files_commits(full_of_small_files):
    m = full_of_small_files
    assert commit(m, m.draft, "--type", "dataset").ok().out == f"{ARTIFACT}:v0"
    assert len(os.listdir(m.path(ARTIFACT, "v0", "many"))) >= m.made


def test_a_write_that_cannot_be_stored_logs_one_line_naming_the_cache(full_of_small_files):
    m = full_of_small_files
    for i in range(5):
        with pytest.raises(OSError) as e:
            write(os.path.join(m.draft, f"more{i}.bin"), os.urandom(MiB))
        assert e.value.errno == errno.ENOSPC
    lines = [line for line in m.log().splitlines() if "full" in line.lower() and m.cache in line]
    assert 1 <= len(lines) <= 2, lines


def test_rm_rf_of_a_draft_of_many_base_files_works_when_something_else_filled_the_disk(mounter, small_disk, tmp_path):
    """The content cache (or anything else) filled the disk: removing base files, which frees
    nothing by itself, must still work (the daemon keeps a small reserve for it)."""
    from conftest import run_artfs, write_tree

    store = str(tmp_path / "store")
    src = write_tree(tmp_path / "src", {f"d{i % 10}/f{i:04d}.txt": b"x" * 100 for i in range(400)})
    run_artfs(["put", src, "--name", ARTIFACT, "--type", "dataset"], store=store, cache=str(tmp_path / "c")).ok()
    m = mounter(store, cache=small_disk, debug=False)
    draft = m.path(ARTIFACT, "drafts", "d")
    os.mkdir(draft)
    assert len(read_tree(draft)) == 400
    fill(os.path.join(small_disk, "filler"))
    for i in range(3):  # and whatever is left
        fill(os.path.join(small_disk, f"filler{i}"))
    os.unlink(os.path.join(draft, "d0", "f0000.txt"))
    os.rename(os.path.join(draft, "d1"), os.path.join(draft, "d1-moved"))
    p = subprocess.run(["rm", "-rf", draft], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert os.listdir(m.path(ARTIFACT, "drafts")) == []


def test_a_commit_on_a_full_disk_works_when_the_store_has_packs_to_index(mounter, small_disk, tmp_path):
    """Committing reads the store's pack indexes, which are cached on the cache disk: when
    it is full they are only not cached."""
    from conftest import run_artfs, write_tree

    store = str(tmp_path / "store")
    src = write_tree(tmp_path / "src", {f"f{i:03d}.txt": os.urandom(200) for i in range(50)})
    run_artfs(["put", src, "--name", "other/a", "--type", "dataset"], store=store, cache=str(tmp_path / "c")).ok()
    m = mounter(store, cache=small_disk, debug=False)
    draft = m.path(ARTIFACT, "drafts", "d")
    os.makedirs(draft)
    write(os.path.join(draft, "new.txt"), b"a small new file\n")
    fill(os.path.join(small_disk, "filler"))
    assert commit(m, draft, "--type", "dataset").ok().out == f"{ARTIFACT}:v0"
    assert read_tree(m.path(ARTIFACT, "v0")) == {"new.txt": b"a small new file\n"}
