"""Drafts are durable: what was closed survives `kill -9` of the daemon and a remount,
and a draft survives a clean unmount. Local store; each test has its own mounts."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from conftest import read_tree
from mounts import mounter, wait_for  # noqa: F401  (mounter is a fixture)
from drafts_common import commit, read, write

pytestmark = pytest.mark.mount

ARTIFACT = "dur/a"

# Writes files one by one into a draft; after each close() succeeds it records the name.
# Every 9th file is large (written in many 64 KiB writes), so kills land mid-file too.
COPIER = r"""
import hashlib, os, sys
root, log_path, start = sys.argv[1], sys.argv[2], int(sys.argv[3])

def content(name, i):
    size = 400_000 if i % 9 == 0 else 1 + (i * 7919) % 20_000
    block = hashlib.sha256(name.encode()).digest()
    return (block * (size // 32 + 1))[:size]

with open(log_path, "a") as log:
    i = start
    while True:
        name = f"batch/{i % 7}/file{i:05d}.bin"
        data = content(name, i)
        try:
            path = os.path.join(root, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                for k in range(0, len(data), 65536):
                    f.write(data[k:k + 65536])
        except OSError:
            sys.exit(0)
        log.write(f"{name} {i}\n")
        log.flush()
        i += 1
"""


def content(name: str, i: int) -> bytes:
    size = 400_000 if i % 9 == 0 else 1 + (i * 7919) % 20_000
    block = hashlib.sha256(name.encode()).digest()
    return (block * (size // 32 + 1))[:size]


def closed_files(log_paths) -> dict[str, bytes]:
    out = {}
    for p in log_paths:
        if os.path.exists(p):
            with open(p) as f:
                for line in f:
                    if line.endswith("\n"):
                        name, i = line.split()
                        out[name] = content(name, int(i))
    return out


def is_stale(path: str) -> bool:
    """The daemon is gone but the mount is still there (statfs always reaches the daemon)."""
    try:
        os.statvfs(path)
        return False
    except OSError as e:
        return e.errno == errno.ENOTCONN


@pytest.fixture
def procs():
    """Subprocesses this test started: killed (by pid) on teardown, pass or fail."""
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def test_closed_files_survive_kill_9_of_the_daemon_mid_copy(mounter, tmp_path, procs):
    store, cache, mp = str(tmp_path / "store"), mounter.new_dir("cache"), mounter.new_dir("mnt")
    rnd = random.Random(4)
    logs = []
    rounds = 10
    for r in range(rounds):
        m = mounter(store, cache=cache, mp=mp, debug=False)  # `artfs mount` recovers the stale mount
        draft = m.path(ARTIFACT, "drafts", "d")
        if r == 0:
            os.makedirs(draft)
        else:  # the files closed before the last kill (all rounds' files are checked at the end)
            last = closed_files(logs[-1:])
            assert {k: read(os.path.join(draft, k)) for k in last} == last, f"round {r}"
        logs.append(str(tmp_path / f"closed-{r}.log"))
        copier = subprocess.Popen(
            [sys.executable, "-c", COPIER, draft, logs[-1], str(r * 1000)], stderr=subprocess.PIPE, text=True
        )
        procs.append(copier)
        wait_for(lambda: os.path.exists(logs[-1]) and os.path.getsize(logs[-1]) > 0, 20, "the copier to close a file")
        time.sleep(rnd.uniform(0.0, 0.4))
        os.kill(m.pid, signal.SIGKILL)
        copier.communicate(timeout=20)  # it sees ENOTCONN and stops
        wait_for(lambda: is_stale(mp), 10, "the mount to go stale")
        # (stat of the mount point may still succeed from the kernel's attribute cache:
        # `artfs mount` must see through that and recover the stale mount.)
    m = mounter(store, cache=cache, mp=mp, debug=False)
    draft = m.path(ARTIFACT, "drafts", "d")
    want = closed_files(logs)
    assert len(want) >= rounds
    tree = read_tree(draft)
    assert {k: tree.get(k) for k in want} == want
    # ...and the draft still commits, with every closed file in the version.
    assert commit(m, draft, "--type", "dataset").ok().out == f"{ARTIFACT}:v0"
    version = read_tree(m.path(ARTIFACT, "v0"))
    assert {k: version.get(k) for k in want} == want


def test_fsynced_data_of_an_open_file_survives_kill_9(mounter, tmp_path):
    store, cache, mp = str(tmp_path / "store"), mounter.new_dir("cache"), mounter.new_dir("mnt")
    m = mounter(store, cache=cache, mp=mp, debug=False)
    draft = m.path(ARTIFACT, "drafts", "d")
    os.makedirs(draft)
    f = open(os.path.join(draft, "journal.log"), "wb")
    try:
        f.write(b"entry 1\n")
        f.flush()
        os.fsync(f.fileno())
        os.kill(m.pid, signal.SIGKILL)
        wait_for(lambda: is_stale(mp), 10, "the mount to go stale")
    finally:
        try:
            f.close()
        except OSError:
            pass
    m = mounter(store, cache=cache, mp=mp, debug=False)
    assert read(m.path(ARTIFACT, "drafts", "d", "journal.log")) == b"entry 1\n"


def test_a_draft_survives_a_clean_unmount_and_remount(mounter, tmp_path):
    from conftest import run_artfs, write_tree

    store, cache = str(tmp_path / "store"), mounter.new_dir("cache")
    src = write_tree(tmp_path / "src", {"keep.txt": b"keep", "drop.txt": b"drop", "dir/x.txt": b"x"})
    run_artfs(["put", src, "--name", ARTIFACT, "--type", "dataset"], store=store, cache=str(tmp_path / "c")).ok()
    m = mounter(store, cache=cache, debug=False)
    draft = m.path(ARTIFACT, "drafts", "d")
    os.mkdir(draft)
    os.unlink(os.path.join(draft, "drop.txt"))
    os.rename(os.path.join(draft, "dir"), os.path.join(draft, "dir2"))
    write(os.path.join(draft, "keep.txt"), b"kept, changed")
    os.makedirs(os.path.join(draft, "new"))
    big = os.urandom(300_000)
    write(os.path.join(draft, "new/big.bin"), big)
    os.chmod(os.path.join(draft, "new/big.bin"), 0o755)
    m.umount()
    assert not m.mounted()
    m = mounter(store, cache=cache, debug=False)  # another mount point, same cache
    draft = m.path(ARTIFACT, "drafts", "d")
    assert os.listdir(m.path(ARTIFACT, "drafts")) == ["d"]
    want = {"keep.txt": b"kept, changed", "dir2/x.txt": b"x", "new/big.bin": big}
    assert read_tree(draft) == want
    assert os.stat(os.path.join(draft, "new/big.bin")).st_mode & 0o111
    assert commit(m, draft).ok().out == f"{ARTIFACT}:v1"
    assert read_tree(m.path(ARTIFACT, "v1")) == want
