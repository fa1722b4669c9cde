"""Small files through artfs:// (fsspec), the mount and local disk, warm, in one run.

A data loader's access pattern: a map-style dataset of N small files read in listing order
by a PyTorch DataLoader (`--workers`, e.g. 0 and 4: a new set of forked worker processes
each epoch, DataLoader's default), or, where torch is not installed, a fork Pool of the same
shape. The dataset lists its files once in the main process, as a Dataset's __init__ does
(`fs.find` for artfs://), outside the timing; an epoch is one pass over every file.
Each source is warmed first (its cache full), then the sources are timed round by round,
interleaved so drift on a shared machine hits all alike; the median of `--rounds` is
reported, with the load average before and after.

    .venv/bin/python scripts/bench/fsspec_loader.py [--files 5000] [--size 4096] [--workers 0,4] [--rounds 3]

What "warm" means per source: local disk and the mount, the kernel's page cache (and the
mount's own caches); artfs://, the disk cache full. With workers, each epoch's new workers
start from what the main process knows (the listing), so every file is read from the disk
cache and checked against its digest again in each epoch; with 0 workers the main process
reads, and a file checked once is served again from memory (still in the same process);
the row "new fs" opens a new file system object (and lists) before each epoch, untimed, so
that row reads every file from the disk cache and checks it, in the main process. Before
each epoch the files its source reads from are read once with plain reads, untimed (the page
cache is dropped every few seconds on the shared machine this was written on). "nothing
read" is the loader's own cost per epoch (its workers, batches and collation).
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

ARTFS = os.path.join(os.path.dirname(sys.executable), "artfs")
_reader = None  # set before each epoch; forked workers inherit it: reads one path, returns its length


def _read(path: str) -> int:
    assert _reader is not None
    return _reader(path)


def _local(path: str) -> int:
    with open(path, "rb") as f:
        return len(f.read())


def cpu() -> float:
    """CPU seconds of this process and of its children that have ended (the loader's workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def epoch(paths: list[str], read, workers: int) -> tuple[float, float]:
    """Seconds to read every path once, in order (a DataLoader epoch), and the CPU seconds spent."""
    global _reader
    _reader = read
    used = cpu()
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

        loader = tud.DataLoader(Files(), batch_size=32, num_workers=workers)
        total = sum(int(b.sum()) for b in loader)
    elif workers == 0:
        total = sum(map(_read, paths))
    else:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            total = sum(pool.imap(_read, paths, chunksize=32))
    elapsed = time.perf_counter() - start
    assert total == len(paths) * SIZE, (total, len(paths) * SIZE)
    return elapsed, cpu() - used


SIZE = 0


def touch(paths: list[str]) -> None:
    """Reads the files with plain reads, untimed: puts them back in the page cache. (Something on
    this shared machine drops the page cache every few seconds; each epoch is preceded by this
    for the files its source reads from, so 'warm' means the same for every source.)"""
    for p in paths:
        with open(p, "rb") as f:
            while f.read(1 << 20):
                pass


def files_under(folder: str) -> list[str]:
    return [os.path.join(d, n) for d, _, ns in os.walk(folder) for n in ns]


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main() -> None:
    global SIZE
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--workers", default="0,4", help="comma-separated DataLoader num_workers values")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    SIZE = args.size
    warnings.filterwarnings("ignore", message=".*worker processes in total.*")  # 4 workers on 2 cores: meant
    workers = [int(w) for w in args.workers.split(",")]

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
        listed = fs.find("bench/small/v0")  # the dataset's file list, made once in the main process
        assert listed == [f"bench/small/v0/{n}" for n in names]

        def fs_open(p: str) -> int:
            with fs.open(p, "rb") as f:
                return len(f.read())

        local = [os.path.join(src, n) for n in names]
        mounted = [os.path.join(mnt, "bench", "small", "v0", n) for n in names]

        def new_fs_cat(p: str) -> int:
            return len(fresh[0].cat(p))

        def new_fs() -> list[str]:  # a new file system object: nothing read in memory, only listed
            fresh[0] = fsspec.filesystem("artfs", skip_instance_cache=True)
            fresh[0].find("bench/small/v0")
            return files_under(cache)

        fresh = [fs]
        sources = {  # name: (paths, read one, before an epoch: the files to have in the page cache)
            "nothing read (floor)": (local, lambda p: SIZE, lambda: []),
            "local disk (open/read)": (local, _local, lambda: local),
            "mount (open/read)": (mounted, _local, lambda: mounted),
            "artfs:// (fs.cat)": (listed, lambda p: len(fs.cat(p)), lambda: files_under(cache)),
            "artfs:// (fs.open/read)": (listed, fs_open, lambda: files_under(cache)),
            "artfs:// (new fs, cat)": (listed, new_fs_cat, new_fs),
        }
        for paths, read, _ in sources.values():  # warm: every cache full
            epoch(paths, read, max(workers))
            epoch(paths, read, 0)
        fs.reader.cache.drain()
        try:
            import torch

            how = f"torch {torch.__version__} DataLoader (batch 32)"
        except ImportError:
            how = "fork Pool (torch not installed)"
        print(f"{args.files} files of {args.size} B, {how}, warm, median of {args.rounds} epochs")
        import artfs

        print(f"artfs from {os.path.dirname(artfs.__file__)}; load average before: {loadavg()}")
        for w in workers:
            times: dict[str, list[float]] = {k: [] for k in sources}
            cpus: dict[str, list[float]] = {k: [] for k in sources}
            for _ in range(args.rounds):  # interleaved, so drift on a shared machine hits all alike
                for k, (paths, read, cached) in sources.items():
                    touch(cached())
                    wall, used = epoch(paths, read, w)
                    times[k].append(wall)
                    cpus[k].append(used)
            base = statistics.median(times["local disk (open/read)"])
            base_cpu = statistics.median(cpus["local disk (open/read)"])
            print(f"\nnum_workers={w}")
            print(f"{'source':<26}{'seconds':>9}{'files/s':>10}{'x local':>9}{'CPU s':>8}{'x local':>9}   epochs (s)")
            for k, ts in times.items():
                t, c = statistics.median(ts), statistics.median(cpus[k])
                runs = " ".join(f"{x:.3f}" for x in ts)
                print(f"{k:<26}{t:>9.3f}{args.files / t:>10.0f}{base / t:>9.2f}{c:>8.3f}{base_cpu / c:>9.2f}   {runs}")
            print("(CPU s: this process and its workers; the mount's daemon is not counted)")
        print(f"\nload average after: {loadavg()}")
    finally:
        subprocess.run([ARTFS, "umount", mnt], env=env, check=False)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
