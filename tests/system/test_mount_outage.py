"""A store outage in the middle of reading, on an S3 server of this test's own (SeaweedFS,
killed and restarted on the same ports and data): uncached reads fail with EIO within
--timeout, cached ones keep working, the mount stays up, and reads recover afterwards.
"""

from __future__ import annotations

import errno
import os
import random
import signal
import time

import pytest

from conftest import make_bucket, run_artfs, write_tree
from mounts import MiB, RestartableSeaweedFS, errno_of, mounter, wait_for  # noqa: F401

pytestmark = [pytest.mark.mount, pytest.mark.s3]

SIZE = 12 * MiB + 777
TIMEOUT = 3.0


@pytest.fixture
def weed():
    server = RestartableSeaweedFS().start()
    try:
        yield server
    finally:
        server.stop()


def _settled(m, quiet: float = 0.5):
    """Waits until the daemon has made no new fetch for `quiet` seconds (read-ahead done)."""
    last, since = None, time.monotonic()
    while time.monotonic() - since < quiet:
        now = len(m.fetches())
        if now != last:
            last, since = now, time.monotonic()
        time.sleep(0.05)
    return m.fetches()


def test_store_outage_mid_read(s3_endpoint, weed, mounter, tmp_path):
    env = {"AWS_ENDPOINT_URL": weed.endpoint, "ARTFS_S3_ATTEMPTS": "1", "ARTFS_S3_TIMEOUT": "2"}
    store = f"s3://{make_bucket(weed.endpoint)}/reg"
    data = random.Random(5).randbytes(SIZE)
    src = write_tree(tmp_path / "src", {"big.bin": data, "small.txt": b"small and cached\n"})
    run_artfs(["put", src, "--name", "p/outage", "--type", "dataset"], store=store, cache=str(tmp_path / "cli-cache"),
              env=env).ok()
    m = mounter(store, "--timeout", str(TIMEOUT), "--refresh", "0.5", env=env)
    v0 = m.path("p/outage/v0")
    path = os.path.join(v0, "big.bin")
    with open(os.path.join(v0, "small.txt"), "rb") as f:
        assert f.read() == b"small and cached\n"

    fd = os.open(path, os.O_RDONLY)
    try:
        assert os.pread(fd, 64 << 10, 0) == data[:64 << 10]
        fetched = _settled(m)
        far = SIZE - MiB // 2  # in the last piece, which the read-ahead has not reached
        assert not any(start <= far < end for _k, start, end in fetched), fetched

        weed.kill()
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # what we read again must come from artfs

        t0 = time.monotonic()
        assert errno_of(os.pread, fd, 4096, far) == errno.EIO
        elapsed = time.monotonic() - t0
        assert elapsed < TIMEOUT + 2, f"EIO took {elapsed:.1f}s with --timeout {TIMEOUT:g}"

        assert os.pread(fd, 64 << 10, 0) == data[:64 << 10], "cached parts still read"
        with open(os.path.join(v0, "small.txt"), "rb") as f:
            assert f.read() == b"small and cached\n"
        assert sorted(os.listdir(v0)) == ["big.bin", "small.txt"], "the mount stays up"
        time.sleep(0.6)  # past --refresh: listings above the version are served as last seen
        assert os.listdir(m.mp) == ["p"] and os.readlink(m.path("p/outage/latest")) == "v0"
        assert m.mounted() and len(m.pids()) == 1
        assert "timed out" in m.log() or "cannot reach" in m.log(), "the failure is logged"

        t = time.monotonic()
        weed.restart()
        print(f"weed restarted in {time.monotonic() - t:.1f}s")
        t = time.monotonic()
        got = wait_for(lambda: _try_pread(fd, 4096, far), 20, "reads to recover after the store returns")
        print(f"reads recovered in {time.monotonic() - t:.1f}s")
        assert got == data[far:far + 4096]
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    with open(path, "rb") as f:
        assert f.read() == data, "the whole file reads correctly after the outage"


def _try_pread(fd, n, off):
    try:
        return os.pread(fd, n, off)
    except OSError as e:
        if e.errno != errno.EIO:
            raise
        return None


def test_store_that_hangs_fails_reads_within_timeout(s3_endpoint, weed, mounter, tmp_path):
    """A store that accepts connections but never answers (SIGSTOP): EIO after --timeout,
    not after the S3 client's own (long) timeouts; everything recovers on SIGCONT."""
    env = {"AWS_ENDPOINT_URL": weed.endpoint, "ARTFS_S3_ATTEMPTS": "2", "ARTFS_S3_TIMEOUT": "30"}
    store = f"s3://{make_bucket(weed.endpoint)}/reg"
    data = random.Random(6).randbytes(SIZE)
    for n, files in enumerate([{"other.txt": b"v0\n"}, {"big.bin": data}]):  # v0, v1
        src = write_tree(tmp_path / f"src-v{n}", files)
        run_artfs(["put", src, "--name", "p/hang", "--type", "dataset"], store=store,
                  cache=str(tmp_path / "cli-cache"), env=env).ok()
    m = mounter(store, "--timeout", str(TIMEOUT), "--refresh", "0.5", env=env)
    v1 = m.path("p/hang/v1")
    fd = os.open(os.path.join(v1, "big.bin"), os.O_RDONLY)
    try:
        assert os.pread(fd, 4096, 0) == data[:4096]
        _settled(m)
        os.killpg(weed.proc.pid, signal.SIGSTOP)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            far = SIZE - MiB // 2
            t0 = time.monotonic()
            assert errno_of(os.pread, fd, 4096, far) == errno.EIO
            elapsed = time.monotonic() - t0
            assert elapsed < TIMEOUT + 2, f"EIO took {elapsed:.1f}s with --timeout {TIMEOUT:g}"
            assert os.pread(fd, 4096, 0) == data[:4096], "cached parts still read"
            # past --refresh, each level of the path is looked up again: the first lookup
            # waits --timeout for the store, then the mount knows it is down and answers
            # from the listings it has
            t0 = time.monotonic()
            assert sorted(os.listdir(v1)) == ["big.bin"]
            elapsed = time.monotonic() - t0
            assert elapsed < TIMEOUT + 2, f"a path lookup took {elapsed:.1f}s with --timeout {TIMEOUT:g}"
            time.sleep(0.6)
            t0 = time.monotonic()
            assert os.listdir(m.mp) == ["p"], "listings are served as last seen"
            assert os.readlink(m.path("p/hang/latest")) == "v1"
            elapsed = time.monotonic() - t0
            assert elapsed < 1, f"listing took {elapsed:.1f}s while the store is known to be down"
            t0 = time.monotonic()
            assert errno_of(os.listdir, m.path("p/hang/v0")) == errno.EIO, "its manifest was never loaded"
            elapsed = time.monotonic() - t0
            assert elapsed < TIMEOUT + 2, f"EIO took {elapsed:.1f}s with --timeout {TIMEOUT:g}"
        finally:
            os.killpg(weed.proc.pid, signal.SIGCONT)
        got = wait_for(lambda: _try_pread(fd, 4096, far), 30, "reads to recover after the store answers again")
        assert got == data[far:far + 4096]
    finally:
        os.close(fd)


def test_mount_of_a_store_that_hangs_fails_within_timeout(s3_endpoint, weed, mounter, tmp_path):
    env = {"AWS_ENDPOINT_URL": weed.endpoint}  # the S3 client's own retries and timeouts: long
    store = f"s3://{make_bucket(weed.endpoint)}/reg"
    mp = tmp_path / "mnt"
    mp.mkdir()
    os.killpg(weed.proc.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        r = run_artfs(["mount", str(mp), "--timeout", str(TIMEOUT)], store=store, cache=str(tmp_path / "c"), env=env)
        elapsed = time.monotonic() - t0
    finally:
        os.killpg(weed.proc.pid, signal.SIGCONT)
    r.fails("did not answer within 3s", store)
    assert elapsed < TIMEOUT + 5, f"took {elapsed:.1f}s with --timeout {TIMEOUT:g}"
    assert not os.path.ismount(mp)
