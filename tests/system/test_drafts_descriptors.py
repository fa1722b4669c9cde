"""Through the kernel: every descriptor of a draft file sees the same bytes, as on ext4, also
a reader opened on a base file before another descriptor first changes it (copy-up)."""

from __future__ import annotations

import os

import pytest

from conftest import run_artfs, write_tree
from mounts import mounter  # noqa: F401  (mounter is a fixture)

pytestmark = pytest.mark.mount


@pytest.mark.parametrize("change", ["append", "truncate", "overwrite-start"])
def test_a_reader_opened_before_the_first_change_sees_the_new_bytes(local_store_url, tmp_path, mounter, change):
    base = b"base bytes\n" * 1000
    src = write_tree(tmp_path / "src", {"data.txt": base})
    run_artfs(
        ["put", src, "--name", "p/a", "--type", "dataset"], store=local_store_url, cache=str(tmp_path / "cli-cache")
    ).ok()
    m = mounter(local_store_url)
    os.mkdir(m.path("p/a/drafts/d"))
    path = m.path("p/a/drafts/d/data.txt")
    reader = os.open(path, os.O_RDONLY)
    try:
        assert os.pread(reader, 10, 0) == b"base bytes"
        if change == "append":
            with open(path, "ab") as f:
                f.write(b"more\n")
            expected = base + b"more\n"
        elif change == "truncate":
            os.truncate(path, 4)
            expected = base[:4]
        else:
            fd = os.open(path, os.O_WRONLY)
            os.pwrite(fd, b"BASE", 0)
            os.close(fd)
            expected = b"BASE" + base[4:]
        assert os.pread(reader, len(expected) + 100, 0) == expected
        assert os.fstat(reader).st_size == len(expected)
    finally:
        os.close(reader)
