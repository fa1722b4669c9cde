#!/usr/bin/env python3
"""A version of N files end to end (issue 17): put, mount, list, stat, read, commit a one-file
change through a draft, on a local store, with the memory and store writes of each step.

    .venv/bin/python scripts/bench/big_version.py [--files 10000000] [--unique-every 10] [--tree DIR]

The tree (folders of 1,000 files, one in `--unique-every` with bytes of its own, the rest
empty) is made under a scratch folder unless --tree names one made before (put_scale.py's
layout). Everything made is removed at the end.
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

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from put_scale import PER_FOLDER, make_tree  # noqa: E402

ARTFS = os.path.join(os.path.dirname(sys.executable), "artfs")


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def _manifests(store: str) -> dict[str, int]:
    folder = os.path.join(store, "manifests")
    return {name: os.path.getsize(os.path.join(folder, name)) for name in os.listdir(folder)}


def _timed(fn):
    t = time.perf_counter()
    got = fn()
    return got, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=10_000_000)
    ap.add_argument("--unique-every", type=int, default=10)
    ap.add_argument("--tree", default=None)
    args = ap.parse_args()
    n = args.files
    scratch = tempfile.mkdtemp(prefix="artfs-big-")
    store, cache, mp = (os.path.join(scratch, x) for x in ("store", "cache", "mnt"))
    os.makedirs(mp)
    env = dict(os.environ, ARTFS_STORE=store, ARTFS_CACHE=cache)
    rows: list[tuple[str, str]] = []
    try:
        tree = args.tree
        if tree is None:
            tree = os.path.join(scratch, "tree")
            _, seconds = _timed(lambda: make_tree(tree, n, args.unique_every))
            rows.append(("make the tree", f"{seconds:.0f} s"))
        print(f"loadavg before: {open('/proc/loadavg').read().strip()}", flush=True)
        cmd = ["/usr/bin/time", "-v", ARTFS, "--quiet", "put", tree, "--name", "big/set", "--type", "dataset"]
        p, seconds = _timed(lambda: subprocess.run(cmd, env=env, capture_output=True, text=True))
        if p.returncode:
            sys.exit(p.stderr[-2000:])
        peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1)) / 1024
        before = _manifests(store)
        rows.append(("`artfs put`", f"{seconds:.0f} s, {seconds / n * 1e6:.0f} µs/file, peak RSS {peak:.0f} MiB"))
        rows.append(("manifest objects", f"{len(before):,} ({sum(before.values()) / 2**20:.0f} MiB)"))

        subprocess.run([ARTFS, "mount", mp, "--refresh", "1"], env=env, check=True, capture_output=True)
        pid = int(subprocess.run(["pgrep", "-f", f"mount {mp} "], capture_output=True, text=True).stdout.split()[0])
        v0 = os.path.join(mp, "big", "set", "v0")
        rows.append(("daemon RSS, mounted", f"{_rss_mib(pid):.0f} MiB"))
        names, seconds = _timed(lambda: os.listdir(v0))
        rows.append(("`ls v0`", f"{len(names):,} names, {seconds:.2f} s"))
        k = n * 7 // 10 // PER_FOLDER * PER_FOLDER  # a file with bytes of its own, deep in the tree
        rel = os.path.join(f"c{k // PER_FOLDER:05d}", f"img_{k:08d}.bin")
        st, seconds = _timed(lambda: os.stat(os.path.join(v0, rel)))
        rows.append(("`stat` of one file", f"{seconds * 1000:.0f} ms"))

        def read() -> bytes:
            with open(os.path.join(v0, rel), "rb") as f:
                return f.read()

        data, seconds = _timed(read)
        assert data == k.to_bytes(8, "little") * (8 + k % 17), "the bytes put"
        rows.append(("`cat` of that file", f"{seconds * 1000:.0f} ms"))
        names, seconds = _timed(lambda: os.listdir(os.path.dirname(os.path.join(v0, rel))))
        assert len(names) == PER_FOLDER
        rows.append(("`ls` of its folder", f"{seconds * 1000:.0f} ms"))
        rows.append(("daemon RSS after those", f"{_rss_mib(pid):.0f} MiB"))

        draft = os.path.join(mp, "big", "set", "drafts", "one")
        os.mkdir(draft)
        with open(os.path.join(draft, rel), "wb") as f:
            f.write(b"changed")
        p, seconds = _timed(lambda: subprocess.run([ARTFS, "commit", draft], env=env, capture_output=True, text=True))
        if p.returncode:
            sys.exit(p.stderr[-2000:])
        after = _manifests(store)
        new = {k: v for k, v in after.items() if k not in before}
        rows.append(
            (
                "one-file commit through a draft",
                f"{seconds:.1f} s, {len(new)} manifest objects, {sum(new.values()) / 1024:.0f} KiB",
            )
        )
        rows.append(("daemon RSS after the commit", f"{_rss_mib(pid):.0f} MiB"))
        deadline = time.monotonic() + 30
        while not os.path.isdir(os.path.join(mp, "big", "set", "v1")) and time.monotonic() < deadline:
            time.sleep(0.2)
        with open(os.path.join(mp, "big", "set", "v1", rel), "rb") as f:
            assert f.read() == b"changed"
        rows.append(("v1 reads the change", "yes"))
    finally:
        subprocess.run(["fusermount3", "-u", mp], check=False, capture_output=True)
        print(f"loadavg after: {open('/proc/loadavg').read().strip()}")
        print(f"| {n:,} files | |\n|---|---|")
        for what, figure in rows:
            print(f"| {what} | {figure} |")
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
