"""Through the kernel: the daemon answers errnos and lives on, whatever a handler meets."""

from __future__ import annotations

import errno
import os
import shutil

import pytest

from conftest import run_artfs, write_tree
from mounts import errno_of, mounter  # noqa: F401  (mounter is a fixture)

pytestmark = pytest.mark.mount


@pytest.fixture
def store(local_store_url, tmp_path):
    src = write_tree(tmp_path / "src", {"a.txt": b"alpha\n"})
    run_artfs(
        ["put", src, "--name", "p/data", "--type", "dataset"], store=local_store_url, cache=str(tmp_path / "cli-cache")
    ).ok()
    return local_store_url


def test_statfs_after_the_drafts_folder_is_deleted_answers_and_the_daemon_lives(store, mounter):
    m = mounter(store)
    shutil.rmtree(os.path.join(m.cache, "drafts"), ignore_errors=True)
    assert errno_of(os.statvfs, m.mp) in (None, errno.ENOENT)
    with open(m.path("p/data/v0/a.txt"), "rb") as f:
        assert f.read() == b"alpha\n", "the daemon still serves"


def test_a_name_over_255_bytes_is_enametoolong_everywhere(store, mounter):
    m = mounter(store)
    long = "x" * 256
    assert errno_of(os.stat, m.path("p/data/v0", long)) == errno.ENAMETOOLONG
    assert errno_of(os.stat, m.path(long)) == errno.ENAMETOOLONG
    os.mkdir(m.path("p/data/drafts/d"))
    assert errno_of(os.open, m.path("p/data/drafts/d", long), os.O_CREAT | os.O_WRONLY) == errno.ENAMETOOLONG
    assert errno_of(os.mkdir, m.path("p/data/drafts/d", "y" * 255)) is None, "255 bytes is a valid name"


def test_a_name_that_is_not_utf8_is_einval_in_a_draft(store, mounter):
    m = mounter(store)
    os.mkdir(m.path("p/data/drafts/d"))
    bad = os.fsencode(m.path("p/data/drafts/d")) + b"/caf\xe9"
    assert errno_of(os.open, bad, os.O_CREAT | os.O_WRONLY) == errno.EINVAL
    assert "Traceback" not in m.log()


def test_expected_errnos_are_not_logged_at_warning(store, mounter):
    m = mounter(store)
    for i in range(20):
        assert errno_of(os.stat, m.path(f"p/data/v0/missing-{i}")) == errno.ENOENT
        assert errno_of(os.open, m.path("p/data/v0/a.txt"), os.O_WRONLY) == errno.EROFS
    warnings = [line for line in m.log().splitlines() if " WARNING " in line or " ERROR " in line]
    assert not [w for w in warnings if "missing-" in w or "read-only" in w]
    assert any(" DEBUG artfs.fs: lookup: missing-3" in line for line in m.log().splitlines()), "at DEBUG"
