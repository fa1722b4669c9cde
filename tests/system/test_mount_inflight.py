"""No head-of-line blocking in the kernel's queue: a read of a file the mount holds is not
queued behind READs that wait on the store. With the store hung (SIGSTOP) while several
large files are read cold, their READs all wait on it; a small read of a cached file still
answers at once (the kernel keeps only so many READs in flight per mount: 12 by default,
which these streams alone fill, so the mount raises it)."""

from __future__ import annotations

import errno
import os
import random
import signal
import threading
import time

import pytest

from conftest import make_bucket, run_artfs, write_tree
from mounts import MiB, mounter, weed  # noqa: F401  (mounter, weed: fixtures)

pytestmark = [pytest.mark.mount, pytest.mark.s3]

STREAMS = 6
TIMEOUT = 20.0  # the streams' READs wait this long on the hung store


def test_a_cached_file_reads_at_once_while_streams_wait_on_a_hung_store(s3_endpoint, weed, mounter, tmp_path):
    env = {"AWS_ENDPOINT_URL": weed.endpoint, "ARTFS_S3_ATTEMPTS": "1", "ARTFS_S3_TIMEOUT": "60"}
    store = f"s3://{make_bucket(weed.endpoint)}/reg"
    rng = random.Random(13)
    hot = rng.randbytes(4 * MiB)
    files = {"hot.bin": hot, **{f"cold{i}.bin": rng.randbytes(12 * MiB) for i in range(STREAMS)}}
    src = write_tree(tmp_path / "src", files)
    run_artfs(
        ["put", src, "--name", "p/queue", "--type", "dataset"], store=store, cache=str(tmp_path / "c"), env=env
    ).ok()
    m = mounter(store, "--timeout", str(TIMEOUT), env=env)
    v0 = m.path("p/queue/v0")
    with open(os.path.join(v0, "hot.bin"), "rb") as f:
        assert f.read() == hot  # now the mount holds it
    fd = os.open(os.path.join(v0, "hot.bin"), os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # so each read below is a READ to artfs

    outcomes: dict[int, str] = {}

    def stream(i: int) -> None:
        try:
            with open(os.path.join(v0, f"cold{i}.bin"), "rb", buffering=0) as f:
                got = b"".join(iter(lambda: f.read(MiB), b""))
            outcomes[i] = "bytes" if got == files[f"cold{i}.bin"] else "WRONG BYTES"
        except OSError as e:
            outcomes[i] = "EIO" if e.errno == errno.EIO else f"errno {e.errno}"

    os.killpg(weed.proc.pid, signal.SIGSTOP)
    threads = [threading.Thread(target=stream, args=(i,), daemon=True) for i in range(STREAMS)]
    try:
        for t in threads:
            t.start()
        time.sleep(1.5)  # the streams' READs are out, waiting on the store
        assert not outcomes, "the store is hung: no stream can have finished"
        slow = []
        for off in random.Random(3).sample(range(0, len(hot), 4096), 20):
            t0 = time.monotonic()
            assert os.pread(fd, 4096, off) == hot[off : off + 4096]
            if time.monotonic() - t0 > 2.0:
                slow.append(round(time.monotonic() - t0, 1))
        assert not slow, f"reads of a cached file waited behind the streams: {slow} s"
    finally:
        os.killpg(weed.proc.pid, signal.SIGCONT)
        os.close(fd)
    for t in threads:
        t.join(TIMEOUT * 3)
    assert set(outcomes.values()) <= {"bytes", "EIO"}, outcomes
