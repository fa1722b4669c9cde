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

from artfs import Store

from conftest import make_bucket, run_artfs, write_tree
from mounts import MiB, errno_of, mounter, wait_for, weed  # noqa: F401  (mounter, weed: fixtures)

pytestmark = [pytest.mark.mount, pytest.mark.s3]

SIZE = 12 * MiB + 777
TIMEOUT = 3.0


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
    run_artfs(
        ["put", src, "--name", "p/outage", "--type", "dataset"], store=store, cache=str(tmp_path / "cli-cache"), env=env
    ).ok()
    m = mounter(store, "--timeout", str(TIMEOUT), "--refresh", "0.5", env=env)
    v0 = m.path("p/outage/v0")
    path = os.path.join(v0, "big.bin")
    with open(os.path.join(v0, "small.txt"), "rb") as f:
        assert f.read() == b"small and cached\n"

    fd = os.open(path, os.O_RDONLY)
    try:
        assert os.pread(fd, 64 << 10, 0) == data[: 64 << 10]
        fetched = _settled(m)
        far = SIZE - MiB // 2  # in the last piece, which the read-ahead has not reached
        assert not any(start <= far < end for _k, start, end in fetched), fetched

        weed.kill()
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # what we read again must come from artfs

        t0 = time.monotonic()
        assert errno_of(os.pread, fd, 4096, far) == errno.EIO
        elapsed = time.monotonic() - t0
        assert elapsed < TIMEOUT + 2, f"EIO took {elapsed:.1f}s with --timeout {TIMEOUT:g}"

        assert os.pread(fd, 64 << 10, 0) == data[: 64 << 10], "cached parts still read"
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
        assert got == data[far : far + 4096]
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
        run_artfs(
            ["put", src, "--name", "p/hang", "--type", "dataset"],
            store=store,
            cache=str(tmp_path / "cli-cache"),
            env=env,
        ).ok()
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
        assert got == data[far : far + 4096]
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


DEADLINE = 4.0


def _timed_errno(fn, *args) -> tuple[int | None, float]:
    t0 = time.monotonic()
    code = errno_of(fn, *args)
    return code, time.monotonic() - t0


def _read_file(path: str, size: int = -1) -> bytes:
    with open(path, "rb") as f:
        return f.read(size)


def _pread(path: str, off: int, size: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, size, off)
    finally:
        os.close(fd)


def _or_none(fn, *args):
    try:
        return fn(*args)
    except OSError as e:
        if e.errno != errno.EIO:
            raise
        return None


def test_one_deadline_per_read_whatever_it_waits_on(s3_endpoint, weed, mounter, tmp_path, monkeypatch):
    """With the store hung (SIGSTOP), every kind of read fails with EIO within 1.2 x --timeout:
    a random read (piece index, then pieces), a sequential read (chunks), a small file (its pack)
    and a reference (its source); after SIGCONT each reads its bytes again, with no remount."""
    env = {"AWS_ENDPOINT_URL": weed.endpoint, "ARTFS_S3_ATTEMPTS": "2", "ARTFS_S3_TIMEOUT": "30"}
    bucket = make_bucket(weed.endpoint)
    store = f"s3://{bucket}/reg"
    rng = random.Random(8)
    data = rng.randbytes(SIZE)
    smalls = {f"s{i:03d}.txt": rng.randbytes(3000) for i in range(40)}
    blocks = rng.randbytes(40 * MiB + 5)  # large enough to be stored as blocks
    src = write_tree(tmp_path / "src", {"big.bin": data, "blocks.bin": blocks, **smalls})
    cli_cache = str(tmp_path / "cli-cache")
    run_artfs(["put", src, "--name", "p/hang", "--type", "dataset"], store=store, cache=cli_cache, env=env).ok()
    referenced = rng.randbytes(3 * MiB)
    s3 = weed.client()
    s3.put_object(Bucket=bucket, Key="sources/ref.bin", Body=referenced)
    run_artfs(
        ["put", f"s3://{bucket}/sources/ref.bin", "--name", "p/ref", "--type", "model"],
        store=store,
        cache=cli_cache,
        env=env,
    ).ok()
    m = mounter(store, "--timeout", str(DEADLINE), "--refresh", "600", env=env)
    big, small = m.path("p/hang/v0/big.bin"), m.path("p/hang/v0/s017.txt")
    in_blocks = m.path("p/hang/v0/blocks.bin")
    monkeypatch.setenv("AWS_ENDPOINT_URL", weed.endpoint)  # this test's own server, for the check below
    assert Store(store, cli_cache).use_artifact("p/hang:v0").manifest.get("blocks.bin").blocks, "stored as blocks"
    ref = m.path("p/ref/v0/ref.bin")
    for path in (big, small, ref, in_blocks):
        os.stat(path)  # names and manifests are known before the store hangs
    far = SIZE - MiB // 2
    reads = {
        "a random read (piece index, then pieces)": (_pread, big, far, 4096),
        "a sequential read (chunks)": (_read_file, big, 2 * MiB),
        "a sequential read of a file stored as blocks": (_read_file, in_blocks, 2 * MiB),
        "a small file (its pack)": (_read_file, small),
        "a reference (its source)": (_pread, ref, MiB + 5, 4096),
    }
    os.killpg(weed.proc.pid, signal.SIGSTOP)
    try:
        slow = {}
        for what, (fn, *args) in reads.items():
            code, elapsed = _timed_errno(fn, *args)
            assert code == errno.EIO, f"{what}: {code}"
            if elapsed > 1.2 * DEADLINE:
                slow[what] = round(elapsed, 1)
        assert not slow, f"EIO later than 1.2 x --timeout {DEADLINE:g}s: {slow}"
    finally:
        os.killpg(weed.proc.pid, signal.SIGCONT)
    want = {
        "a random read (piece index, then pieces)": data[far : far + 4096],
        "a sequential read (chunks)": data[: 2 * MiB],
        "a sequential read of a file stored as blocks": blocks[: 2 * MiB],
        "a small file (its pack)": smalls["s017.txt"],
        "a reference (its source)": referenced[MiB + 5 : MiB + 5 + 4096],
    }
    for what, (fn, *args) in reads.items():
        got = wait_for(
            lambda fn=fn, args=args: _or_none(fn, *args), 60, f"{what} to read again after the store answers"
        )
        assert got == want[what], what
    assert m.mounted() and len(m.pids()) == 1
