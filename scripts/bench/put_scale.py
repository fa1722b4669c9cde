#!/usr/bin/env python3
"""`artfs put` of N small files (issue 17): time per file and peak memory, for several N.

Makes N files of 64-200 bytes (unique content, 1,000 per folder) under a scratch folder,
then times `artfs put` of it into a fresh local store, with the peak RSS of the whole
command (GNU time's "Maximum resident set size"). The tree is made once for the largest N;
smaller N put a subset of its folders.

    .venv/bin/python scripts/bench/put_scale.py [--files 100000 1000000] [--scratch DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

PER_FOLDER = 1000
ARTFS = os.path.join(os.path.dirname(sys.executable), "artfs")


def make_tree(root: str, n: int, unique_every: int = 1) -> None:
    """N files, one in `unique_every` with content of its own (64-200 bytes), the rest empty
    (an inode and no block: ten million of them fit on this disk)."""
    for i in range(n):
        folder = os.path.join(root, f"c{i // PER_FOLDER:05d}")
        if i % PER_FOLDER == 0:
            os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"img_{i:08d}.bin"), "wb") as f:
            if i % unique_every == 0:
                f.write(i.to_bytes(8, "little") * (8 + i % 17))


def put(tree: str, store: str, cache: str) -> tuple[float, float]:
    env = dict(os.environ, ARTFS_STORE=store, ARTFS_CACHE=cache)
    started = time.perf_counter()
    p = subprocess.run(
        ["/usr/bin/time", "-v", ARTFS, "--quiet", "put", tree, "--name", "scale/put", "--type", "dataset"],
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if p.returncode:
        sys.exit(p.stderr[-2000:])
    peak_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1))
    return seconds, peak_kib / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--scratch", default=None, help="where to make the tree (default: a temporary folder)")
    ap.add_argument(
        "--unique-every", type=int, default=1, help="one file in K has content of its own, the rest are empty"
    )
    args = ap.parse_args()
    scratch = tempfile.mkdtemp(prefix="artfs-put-", dir=args.scratch)
    try:
        tree = os.path.join(scratch, "tree")
        biggest = max(args.files)
        t = time.perf_counter()
        make_tree(tree, biggest, args.unique_every)
        print(f"made {biggest:,} files (1 in {args.unique_every} with content) in {time.perf_counter() - t:.0f} s")
        print(f"loadavg before: {open('/proc/loadavg').read().strip()}")
        print("| files | put s | µs/file | peak RSS MiB |")
        print("|---|---|---|---|")
        for n in sorted(args.files):
            subset = os.path.join(scratch, f"subset-{n}")
            os.makedirs(subset)
            for k in range(-(-n // PER_FOLDER)):
                os.symlink(os.path.join(tree, f"c{k:05d}"), os.path.join(subset, f"c{k:05d}"))
            seconds, peak = put(subset, os.path.join(scratch, f"store-{n}"), os.path.join(scratch, f"cache-{n}"))
            print(f"| {n:,} | {seconds:.1f} | {seconds / n * 1e6:.0f} | {peak:.0f} |", flush=True)
            shutil.rmtree(os.path.join(scratch, f"store-{n}"), ignore_errors=True)
        print(f"loadavg after: {open('/proc/loadavg').read().strip()}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
