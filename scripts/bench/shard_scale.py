#!/usr/bin/env python3
"""Sharded manifests at 1M and 10M entries (issue 17): what building, opening, a lookup, a
listing and a one-file commit cost, measured on the manifest layer itself (no file is made:
entries name a synthetic pack, as a put of an image dataset would).

For each N: stream N entries (`train/cNNNN/img_NNNNNNN.jpg`, 1,000 per folder) through the
ShardWriter into a local store (peak memory of this process reported), then in a *fresh*
process: open the root, stat one deep file, list one folder, and report shards read and RSS;
then apply a one-file change through the commit's own code (versions/reshard.py) and report
the shards and bytes written against the whole manifest's.

    .venv/bin/python scripts/bench/shard_scale.py [--entries 1000000 10000000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from artfs.digest import digest_bytes  # noqa: E402
from artfs.store.backends.local import LocalStore  # noqa: E402
from artfs.store.manifest import Entry, Folder  # noqa: E402
from artfs.store.registry import Registry, manifest_key  # noqa: E402
from artfs.store.shards import ShardedManifest, ShardWriter  # noqa: E402

PER_FOLDER = 1000
PACK = bytes(32)


def _path(i: int) -> str:
    return f"train/c{i // PER_FOLDER:05d}/img_{i:08d}.jpg"


def build(store_dir: str, n: int) -> dict:
    objects = LocalStore(store_dir)
    written = [0]

    def put(digest: bytes, encoded: bytes) -> None:
        objects.put(manifest_key(digest.hex()), encoded)
        written[0] += len(encoded)

    started = time.perf_counter()
    w = ShardWriter(put)
    w.add(Folder("", 0o755, 1))
    w.add(Folder("train", 0o755, 1))
    for i in range(n):
        if i % PER_FOLDER == 0:
            w.add(Folder(f"train/c{i // PER_FOLDER:05d}", 0o755, 1))
        digest = digest_bytes(i.to_bytes(8, "little"))
        w.add(Entry(_path(i), 4000 + i % 1000, digest, 0o644, pack=PACK, offset=i * 4096, mtime_ns=1 + i))
    sharded = w.manifest(lambda d: None)  # type: ignore[arg-type,return-value]
    shards, root = sharded.shards, sharded.encode()
    digest = digest_bytes(root).hex()
    objects.put(manifest_key(digest), root)
    return {
        "seconds": time.perf_counter() - started,
        "shards": len(shards),
        "root_bytes": len(root),
        "manifest_bytes": written[0] + len(root),
        "digest": digest,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def mounted(store_dir: str, digest: str, n: int, find: bool) -> dict:
    """A real mount of the version: the daemon's RSS after mounting, after a `stat` of one deep
    file and an `ls` of its folder, after an `ls` of the folder of all folders, and (`find`)
    after a `find` of the whole version and after the kernel dropped the names it held."""
    from artfs.names import ArtifactName
    from artfs.store.shards import decode

    objects = LocalStore(store_dir)
    reg = Registry(objects)
    root = objects.get(manifest_key(digest))
    reg.commit(ArtifactName("scale", "big"), "dataset", decode(root, "root", reg.shard), root)
    mp, cache = tempfile.mkdtemp(prefix="artfs-mp-"), tempfile.mkdtemp(prefix="artfs-cache-")
    artfs = os.path.join(os.path.dirname(sys.executable), "artfs")
    subprocess.run([artfs, "--store", store_dir, "--cache", cache, "mount", mp], check=True, capture_output=True)
    out: dict = {}
    try:
        pid = int(subprocess.run(["pgrep", "-f", f"mount {mp} "], capture_output=True, text=True).stdout.split()[0])
        v0 = os.path.join(mp, "scale", "big", "v0")
        out["rss_mounted"] = _rss_mib(pid)
        deep = os.path.join(v0, _path(n * 7 // 10))
        t = time.perf_counter()
        os.stat(deep)
        assert len(os.listdir(os.path.dirname(deep))) == PER_FOLDER
        out["one_folder_s"], out["rss_one_folder"] = time.perf_counter() - t, _rss_mib(pid)
        t = time.perf_counter()
        out["train_names"] = len(os.listdir(os.path.join(v0, "train")))
        out["train_s"], out["rss_train"] = time.perf_counter() - t, _rss_mib(pid)
        if find:
            t = time.perf_counter()
            found = subprocess.run(["find", v0], capture_output=True, check=True).stdout.count(b"\n")
            out["find_names"], out["find_s"], out["rss_find"] = found, time.perf_counter() - t, _rss_mib(pid)
            # The kernel lets go of the names it held (as under memory pressure): FORGETs follow.
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("2\n")
            time.sleep(2)
            out["rss_dropped"] = _rss_mib(pid)
    finally:
        subprocess.run(["fusermount3", "-u", mp], check=False)
        shutil.rmtree(mp, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)
    return out


def touch(store_dir: str, digest: str, n: int) -> dict:
    """In a fresh process: open, stat one deep file, list one folder; then a one-file commit."""
    from artfs.versions import reshard

    objects = LocalStore(store_dir)
    reads: list[str] = []
    get = objects.get

    def counting_get(key, *a, **k):
        reads.append(key)
        return get(key, *a, **k)

    objects.get = counting_get  # type: ignore[method-assign]
    reg = Registry(objects)
    out = {}
    t = time.perf_counter()
    m = reg.manifest_by_digest(digest)
    out["open_s"], out["open_reads"] = time.perf_counter() - t, len(reads)
    deep = _path(n * 7 // 10)
    t, before = time.perf_counter(), len(reads)
    e = m.get(deep)
    assert e is not None and e.path == deep
    out["stat_ms"], out["stat_reads"] = (time.perf_counter() - t) * 1000, len(reads) - before
    folder = deep.rsplit("/", 1)[0]
    t, before = time.perf_counter(), len(reads)
    names = list(m.children(folder))
    assert len(names) == PER_FOLDER, len(names)
    out["ls_ms"], out["ls_reads"] = (time.perf_counter() - t) * 1000, len(reads) - before
    t, before = time.perf_counter(), len(reads)
    top = list(m.children("train"))
    out["ls_train_s"], out["ls_train_reads"], out["ls_train_names"] = (
        time.perf_counter() - t,
        len(reads) - before,
        len(top),
    )
    out["rss_mib"] = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    assert isinstance(m, ShardedManifest)
    written: list[int] = []

    def put(d: bytes, enc: bytes) -> None:
        objects.put(manifest_key(d.hex()), enc)
        written.append(len(enc))

    changed = Entry(deep, 1, digest_bytes(b"new"), 0o644, pack=PACK, offset=0, mtime_ns=2)
    t = time.perf_counter()
    new = reshard.apply(reshard.ShardPatch(m, files=n), [changed], [], put)
    assert new is not None and new.get(deep).size == 1
    root = new.encode()
    out["commit_s"] = time.perf_counter() - t
    out["commit_shards_written"] = len(written)
    out["commit_bytes"] = sum(written) + len(root)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--touch", nargs=3, help=argparse.SUPPRESS)  # store digest n (the fresh process)
    ap.add_argument("--mount", action="store_true", help="also mount each version and report the daemon's RSS")
    ap.add_argument("--find", action="store_true", help="with --mount: also `find` the whole version")
    args = ap.parse_args()
    if args.touch:
        print(json.dumps(touch(args.touch[0], args.touch[1], int(args.touch[2]))))
        return
    print(f"loadavg before: {open('/proc/loadavg').read().strip()}")
    print(
        "| entries | build s | µs/entry | build peak RSS MiB | shards | root KiB | manifest MiB "
        "| open s | stat: shards, ms | ls folder: shards, ms | ls train/: shards, s | RSS after MiB "
        "| one-file commit: shards, KiB, s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    mounts: list[tuple[int, dict]] = []
    for n in args.entries:
        with tempfile.TemporaryDirectory(prefix="artfs-shards-") as tmp:
            b = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    f"import json,sys; sys.path.insert(0,{ROOT!r}); sys.argv=['x'];"
                    f"import importlib.util as u; s=u.spec_from_file_location('b',{os.path.abspath(__file__)!r});"
                    f"m=u.module_from_spec(s); s.loader.exec_module(m); print(json.dumps(m.build({tmp!r},{n})))",
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            built = json.loads(b.stdout)
            t = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--touch", tmp, built["digest"], str(n)],
                capture_output=True,
                text=True,
            )
            if t.returncode:
                sys.exit(t.stderr)
            r = json.loads(t.stdout)
            mount = mounted(tmp, built["digest"], n, args.find) if args.mount else None
        print(
            f"| {n:,} | {built['seconds']:.1f} | {built['seconds'] / n * 1e6:.1f} | {built['peak_rss_mib']:.0f} "
            f"| {built['shards']:,} | {built['root_bytes'] / 1024:.0f} | {built['manifest_bytes'] / 2**20:.0f} "
            f"| {r['open_s']:.3f} | {r['stat_reads']}, {r['stat_ms']:.1f} | {r['ls_reads']}, {r['ls_ms']:.1f} "
            f"| {r['ls_train_reads']}, {r['ls_train_s']:.1f} | {r['rss_mib']:.0f} "
            f"| {r['commit_shards_written']}, {r['commit_bytes'] / 1024:.0f}, {r['commit_s']:.2f} |",
            flush=True,
        )
        if mount:
            mounts.append((n, mount))
    for n, r in mounts:
        print(
            f"mount of {n:,}: daemon RSS {r['rss_mounted']:.0f} MiB mounted, {r['rss_one_folder']:.0f} MiB after "
            f"stat + ls of one folder ({r['one_folder_s']:.2f} s), {r['rss_train']:.0f} MiB after ls of "
            f"train/ ({r['train_names']:,} folders, {r['train_s']:.1f} s)"
            + (
                f", {r['rss_find']:.0f} MiB after find ({r['find_names']:,} names, {r['find_s']:.0f} s), "
                f"{r['rss_dropped']:.0f} MiB once the kernel dropped them"
                if "find_s" in r
                else ""
            )
        )
    print(f"loadavg after: {open('/proc/loadavg').read().strip()}")


if __name__ == "__main__":
    main()
