"""A small change to a large base file in a draft: the daemon's memory stays bounded whatever the
file's size (the copy-up streams), and, where large files are stored as blocks, the commit stores
one block, not the file again. Local store, through the kernel."""

from __future__ import annotations

import os

import pytest
from conftest import run_artfs
from drafts_common import shared_mounter, unique  # noqa: F401  (shared_mounter is a fixture)
from mounts import wait_for

pytestmark = pytest.mark.mount

MiB = 1 << 20
SIZE = 256 * MiB  # above the daemon's memory cache (256 MiB): a whole-file copy-up would show


@pytest.fixture(scope="module")
def env(shared_mounter, tmp_path_factory):  # noqa: F811
    store = str(tmp_path_factory.mktemp("large") / "store")
    return store, shared_mounter(store, "--refresh", "0.3")


def _peak_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def _stored_bytes(store: str) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(store):
        total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
    return total


def test_a_one_byte_change_to_a_large_file_keeps_the_daemon_small(env, tmp_path):
    store, m = env
    artifact = f"{unique('p')}/a"
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "ckpt.bin", "wb") as f:
        f.writelines(bytes([i % 251]) * MiB for i in range(SIZE // MiB))
    run_artfs(["put", str(src), "--name", artifact, "--type", "model"], store=store, cache=m.cache).ok()
    wait_for(lambda: os.path.isdir(m.path(artifact, "v0")), 10, "v0 in the mount")
    draft = m.path(artifact, "drafts", "d")
    os.mkdir(draft)
    peak, stored = _peak_rss(m.pid), _stored_bytes(store)
    with open(os.path.join(draft, "ckpt.bin"), "r+b") as f:
        f.seek(SIZE // 2 + 7)
        f.write(b"\xff")
    out = run_artfs(["commit", draft], store=store, cache=m.cache, timeout=300).ok()
    assert out.stdout.strip() == f"{artifact}:v1"
    grown = _peak_rss(m.pid) - peak
    assert grown < 200 * MiB, f"daemon peak memory grew by {grown >> 20} MiB"
    with open(m.path(artifact, "v1", "ckpt.bin"), "rb") as f:
        f.seek(SIZE // 2 + 6)
        assert f.read(3) == bytes([(SIZE // 2 // MiB) % 251, 0xFF, (SIZE // 2 // MiB) % 251])
    from artfs.versions.publish import stores_blocks

    if stores_blocks():
        assert _stored_bytes(store) - stored < 40 * MiB
