"""Mounting and unmounting: `artfs umount`, fusermount3, signals, a crashed daemon's stale
mount, bad mount points, and a remount reusing the cache. Backend-independent, so these
run on the local store only.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess

import pytest

from conftest import run_artfs, write_tree
from mounts import errno_of, mounter, wait_for  # noqa: F401  (mounter is a fixture)

pytestmark = pytest.mark.mount

DATA = {"weights.bin": os.urandom(3 << 20), "config.json": b'{"layers": 3}\n'}


@pytest.fixture
def store(local_store_url, tmp_path):
    src = write_tree(tmp_path / "src", DATA)
    run_artfs(
        ["put", src, "--name", "p/model", "--type", "model"], store=local_store_url, cache=str(tmp_path / "cli-cache")
    ).ok()
    return local_store_url


def read(path):
    with open(path, "rb") as f:
        return f.read()


def gone(m, pids):
    return not m.mounted() and not any(os.path.exists(f"/proc/{p}") and _running(p) for p in pids)


def _running(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_mount_returns_once_mounted_and_the_daemon_is_detached(store, mounter):
    m = mounter(store)
    assert read(m.path("p/model/v0/config.json")) == DATA["config.json"]  # usable at once
    pid = m.pid
    assert os.getsid(pid) == pid, "the daemon runs in a session of its own"


def test_a_mount_of_a_location_with_no_store_makes_one_and_says_so(tmp_path, mounter):
    """A mistyped --store is seen at once (as `put` says it), not served as an empty tree."""
    new = str(tmp_path / "new-store")
    m = mounter(new)
    assert m.result.stderr.strip() == f"artfs: created a new store at {new}"
    assert os.listdir(m.mp) == []
    assert run_artfs(["ls"], store=new).ok().stdout == "", "a store now, if an empty one"
    again = mounter(new)
    assert again.result.stderr == ""


def test_artfs_umount_unmounts_and_the_daemon_exits(store, mounter):
    m = mounter(store)
    pids = m.pids()
    r = run_artfs(["umount", m.mp]).ok()
    assert r.stderr == ""
    wait_for(lambda: gone(m, pids), 10, "unmount and daemon exit")
    assert os.listdir(m.mp) == []


def test_fusermount_u_unmounts_and_the_daemon_exits(store, mounter):
    m = mounter(store)
    pids = m.pids()
    subprocess.run(["fusermount3", "-u", m.mp], check=True, timeout=10)
    wait_for(lambda: gone(m, pids), 10, "daemon exit")
    assert "unmounted" in m.log()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_to_the_daemon_unmounts(store, mounter, sig):
    m = mounter(store)
    pids = m.pids()
    os.kill(m.pid, sig)
    wait_for(lambda: gone(m, pids), 10, f"unmount after {sig.name}")
    assert f"signal {sig.name}: unmounting" in m.log()


def test_umount_of_a_busy_mount_says_so_and_lazy_detaches(store, mounter):
    m = mounter(store)
    pids = m.pids()
    with open(m.path("p/model/v0/weights.bin"), "rb") as f:
        line = run_artfs(["umount", m.mp]).fails("busy")
        assert m.mp in line
        run_artfs(["umount", "-z", m.mp]).ok()
        assert not m.mounted()
        assert f.read() == DATA["weights.bin"], "an open file keeps working after a lazy unmount"
    wait_for(lambda: gone(m, pids), 10, "daemon exit once the last file is closed")


def test_umount_of_something_not_mounted_is_one_line(tmp_path):
    run_artfs(["umount", str(tmp_path)]).fails("cannot unmount", str(tmp_path))


def test_kill_9_leaves_a_stale_mount_that_mount_recovers(store, mounter):
    m = mounter(store)
    os.kill(m.pid, signal.SIGKILL)
    wait_for(lambda: errno_of(os.listdir, m.mp) == errno.ENOTCONN, 10, "the mount to go stale")
    p = subprocess.run(["ls", m.mp], capture_output=True, text=True, timeout=10)
    assert p.returncode != 0 and "Transport endpoint is not connected" in p.stderr
    m2 = mounter(store, mp=m.mp)  # `artfs mount` over the stale mount
    lines = [line for line in m2.result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "stale" in lines[0] and m.mp in lines[0], m2.result.stderr
    assert m2.result.out == m.mp
    assert read(m2.path("p/model/v0/weights.bin")) == DATA["weights.bin"]


@pytest.mark.parametrize("what", ["a file", "missing", "already mounted"])
def test_mount_on_a_bad_mount_point_is_one_clear_line(store, mounter, tmp_path, what):
    if what == "a file":
        target = str(tmp_path / "plain-file")
        open(target, "w").close()
        expected = "not a directory"
    elif what == "missing":
        target = str(tmp_path / "no" / "such")
        expected = "not a directory"
    else:
        target = mounter(store).mp
        expected = "already"
    r = run_artfs(["mount", target], store=store, cache=str(tmp_path / "cache-x"))
    line = r.fails(expected)
    assert target in line
    if what == "already mounted":
        assert os.listdir(os.path.join(target, "p")) == ["model"], "the existing mount is untouched"


def test_mount_of_an_unreachable_store_fails_clearly(tmp_path, mounter):
    mp = str(tmp_path / "mnt")
    os.mkdir(mp)
    r = run_artfs(
        ["mount", mp, "--timeout", "3"],
        store="s3://no-such-bucket-artfs/x",
        cache=str(tmp_path / "c"),
        env={
            "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
            "AWS_ACCESS_KEY_ID": "x",
            "AWS_SECRET_ACCESS_KEY": "x",
            "AWS_DEFAULT_REGION": "us-east-1",
            "ARTFS_S3_ATTEMPTS": "1",
        },
        timeout=60,
    )
    r.fails("127.0.0.1:9")
    assert not os.path.ismount(mp)


def test_remount_reuses_the_cache(store, mounter):
    m = mounter(store)
    assert read(m.path("p/model/v0/weights.bin")) == DATA["weights.bin"]
    assert m.fetches()
    m.umount()
    m2 = mounter(store, cache=m.cache)
    assert read(m2.path("p/model/v0/weights.bin")) == DATA["weights.bin"]
    assert m2.fetches() == [], "everything came from the cache the first mount filled"


def test_mount_works_from_a_folder_that_holds_an_artfs_folder(store, mounter, tmp_path):
    """The daemon imports the installed artfs, never ./artfs of wherever `artfs mount` ran."""
    os.makedirs(tmp_path / "work" / "artfs")
    (tmp_path / "work" / "artfs" / "__init__.py").write_text('raise SystemExit("the wrong artfs was imported")\n')
    mp = tmp_path / "mnt"
    mp.mkdir()
    run_artfs(["mount", "../mnt"], store=store, cache=str(tmp_path / "c"), cwd=str(tmp_path / "work")).ok()
    assert read(str(mp / "p/model/v0/config.json")) == DATA["config.json"]
    subprocess.run(["fusermount3", "-u", str(mp)], check=True, timeout=10)


def test_daemon_leaves_the_folder_it_was_started_from(store, tmp_path):
    """Relative store and cache paths still work, and the starting folder is not kept busy."""
    work = tmp_path / "work"
    (work / "mnt").mkdir(parents=True)
    local = store if "://" in store else os.path.relpath(store, work)
    run_artfs(["--store", local, "--cache", "cache", "mount", "mnt"], cwd=str(work)).ok()
    mp = str(work / "mnt")
    try:
        pid = int(
            subprocess.run(["pgrep", "-f", f"mount {mp}|mount mnt"], capture_output=True, text=True).stdout.split()[0]
        )
        assert os.readlink(f"/proc/{pid}/cwd") == "/"
        assert read(os.path.join(mp, "p/model/v0/config.json")) == DATA["config.json"]
        assert os.path.isdir(work / "cache" / "content"), "the relative cache folder is the one under work/"
    finally:
        subprocess.run(["fusermount3", "-u", mp], timeout=10)
