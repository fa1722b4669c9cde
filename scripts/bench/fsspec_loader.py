"""Small files through artfs:// (fsspec), the mount and local disk, warm, in one run.

A data loader's access pattern: a map-style dataset of N small files read in listing order,
by `workers` processes (a PyTorch DataLoader with num_workers when torch is installed; else
a fork Pool of the same shape, which is what a DataLoader's workers are). Each source is
warmed first (its cache full), then timed `rounds` times; the median is reported.

    .venv/bin/python scripts/bench/fsspec_loader.py [--files 5000] [--size 4096] [--workers 2]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ARTFS = os.path.join(os.path.dirname(sys.executable), "artfs")
_reader = None  # set in each worker (fork): reads one path, returns its length


def _read(path: str) -> int:
    assert _reader is not None
    return _reader(path)


def _local(path: str) -> int:
    with open(path, "rb") as f:
        return len(f.read())


def loader(paths: list[str], read, workers: int) -> float:
    """Seconds to read every path once, in order, by `workers` processes."""
    global _reader
    _reader = read
    start = time.perf_counter()
    try:
        import torch.utils.data as tud
    except ImportError:
        tud = None
    if tud is not None:

        class Files(tud.Dataset):
            def __len__(self):
                return len(paths)

            def __getitem__(self, i):
                return _read(paths[i])

        total = sum(int(b.sum()) for b in tud.DataLoader(Files(), batch_size=32, num_workers=workers))
    else:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            total = sum(pool.imap(_read, paths, chunksize=32))
    elapsed = time.perf_counter() - start
    assert total > 0
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    root = tempfile.mkdtemp(prefix="artfs-bench-fsspec-")
    src, store, cache, mnt = (os.path.join(root, d) for d in ("src", "store", "cache", "mnt"))
    env = {**os.environ, "ARTFS_STORE": store, "ARTFS_CACHE": cache}
    os.environ.update({"ARTFS_STORE": store, "ARTFS_CACHE": cache})
    names = [f"d{i // 1000:02d}/f{i:05d}.bin" for i in range(args.files)]
    for name in names:
        os.makedirs(os.path.join(src, os.path.dirname(name)), exist_ok=True)
        with open(os.path.join(src, name), "wb") as f:
            f.write(os.urandom(args.size))
    subprocess.run(
        [ARTFS, "put", src, "--name", "bench/small", "--type", "dataset"],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    os.makedirs(mnt)
    subprocess.run([ARTFS, "mount", mnt], env=env, check=True, stdout=subprocess.DEVNULL)
    try:
        import fsspec

        fs = fsspec.filesystem("artfs")
        sources = {
            "local disk": ([os.path.join(src, n) for n in names], _local),
            "mount": ([os.path.join(mnt, "bench", "small", "v0", n) for n in names], _local),
            "artfs:// (fsspec)": ([f"bench/small/v0/{n}" for n in names], lambda p: len(fs.cat(p))),
        }
        for paths, read in sources.values():  # warm: every cache full
            loader(paths, read, args.workers)
            fs.reader.cache.drain()
        times: dict[str, list[float]] = {k: [] for k in sources}
        for _ in range(args.rounds):  # interleaved, so drift on a shared machine hits all alike
            for k, (paths, read) in sources.items():
                times[k].append(loader(paths, read, args.workers))
        try:
            import torch  # noqa: F401

            how = "torch DataLoader"
        except ImportError:
            how = "fork Pool (torch not installed)"
        print(f"{args.files} files of {args.size} B, {args.workers} workers, {how}, warm, median of {args.rounds}")
        base = statistics.median(times["local disk"])
        print(f"{'source':<20}{'seconds':>9}{'files/s':>10}{'x local':>9}")
        for k, ts in times.items():
            t = statistics.median(ts)
            print(f"{k:<20}{t:>9.3f}{args.files / t:>10.0f}{base / t:>9.2f}")
    finally:
        subprocess.run([ARTFS, "umount", mnt], env=env, check=False)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
