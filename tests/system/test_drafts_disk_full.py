"""A full cache disk: the writer gets ENOSPC, the mount stays up, the draft stays whole
and still commits. The cache lives on a 20 MiB tmpfs (unmounted afterwards, pass or fail)."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import tempfile

import pytest

from conftest import read_tree
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
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path = tempfile.mkdtemp(prefix="artfs-small-disk-")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", path], check=True)
    try:
        yield path
    finally:
        for m in mounter.mounts:
            cleanup(m.mp)
        if subprocess.run(["umount", path], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", path], capture_output=True)
        shutil.rmtree(path, ignore_errors=True)


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
    p = subprocess.run(["dd", "if=/dev/zero", f"of={draft}/dd.bin", "bs=1M", "count=40"], capture_output=True,
                       text=True, timeout=60)
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
