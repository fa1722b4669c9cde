#!/usr/bin/env python3
"""How a manifest of N entries (default 1,000,000) builds, encodes and loads.

Builds a realistic image-dataset manifest (`train/class_123/img_000456.jpg`,
almost all packed small files, ~1% large chunked objects, a few references),
encodes it to a file, then loads it in a *fresh* subprocess (so nothing from
the build is still in memory) the way the registry does: read, verify the
blake3 digest, decode. Reports load time and memory per entry.

Targets (issue 2): load < 3 s, < 300 bytes of memory per entry.

    .venv/bin/python scripts/bench/manifest_scale.py [--entries N] [--keep FILE]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import subprocess
import sys
import tempfile
import time

TARGET_SECONDS = 3.0
TARGET_BYTES_PER_ENTRY = 300


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def build(n: int, seed: int = 0):
    from artfs.digest import CHUNK_SIZE, DIGEST_SIZE
    from artfs.store.manifest import Entry, Manifest

    rng = random.Random(seed)
    entries = []
    pack_size, pack_id, offset = 16 << 20, rng.randbytes(32), 0
    splits = ("train", "val", "test")
    for i in range(n):
        split = splits[0] if i % 10 < 8 else splits[1 + i % 2]
        path = f"{split}/class_{i % 1000:03d}/img_{i:06d}.jpg"
        digest = rng.randbytes(DIGEST_SIZE)
        r = i % 1000
        if r < 10:  # ~1%: a large file stored alone, chunked
            size = rng.randrange(CHUNK_SIZE + 1, 8 * CHUNK_SIZE)
            chunks = rng.randbytes(-(-size // CHUNK_SIZE) * DIGEST_SIZE)
            entries.append(Entry(path.replace(".jpg", ".tiff"), size, digest, 0o644, chunks=chunks))
        elif r == 10:  # ~0.1%: a reference
            entries.append(
                Entry(
                    path,
                    rng.randrange(1 << 20),
                    bytes(DIGEST_SIZE),
                    0o644,
                    ref={"uri": f"s3://other-bucket/raw/{i:06d}.jpg", "etag": f'"{rng.randbytes(16).hex()}"'},
                )
            )
        else:  # packed small file, 20-200 KB
            size = rng.randrange(20_000, 200_000)
            if offset + size > pack_size:
                pack_id, offset = rng.randbytes(32), 0
            entries.append(Entry(path, size, digest, 0o644, pack=pack_id, offset=offset))
            offset += size
    return Manifest.from_entries(entries)


def load_child(path: str, mode: str) -> None:
    """Runs in a fresh interpreter: load the manifest as the registry does, report JSON.

    mode "time": no tracing (tracemalloc slows allocation-heavy code a lot); RSS growth.
    mode "memory": the same load under tracemalloc, for bytes kept and peak.
    mode "phases": where decode time goes (zstd, msgpack, columns + validation).
    """
    import tracemalloc

    import msgpack
    import zstandard

    import artfs.store.manifest  # noqa: F401 - imported before measuring, as in a running process
    from artfs.digest import digest_bytes
    from artfs.store.manifest import Manifest

    expected = os.path.basename(path)
    gc.collect()
    if mode == "phases":
        with open(path, "rb") as f:
            data = f.read()
        t0 = time.perf_counter()
        raw = zstandard.ZstdDecompressor().decompress(data, max_output_size=1 << 34)
        t1 = time.perf_counter()
        doc = msgpack.unpackb(raw, raw=False, strict_map_key=False)
        t2 = time.perf_counter()
        del doc, raw
        gc.collect()
        t3 = time.perf_counter()
        m = Manifest.decode(data, path)
        t4 = time.perf_counter()
        print(
            json.dumps({"zstd_s": t1 - t0, "msgpack_s": t2 - t1, "decode_s": t4 - t3, "rest_s": (t4 - t3) - (t2 - t0)})
        )
        return
    rss0 = rss_bytes()
    if mode == "memory":
        tracemalloc.start()
    t0 = time.perf_counter()
    with open(path, "rb") as f:
        data = f.read()
    t_read = time.perf_counter()
    if digest_bytes(data).hex() != expected:
        raise SystemExit("digest mismatch")
    t_digest = time.perf_counter()
    m = Manifest.decode(data, path)
    t_decode = time.perf_counter()
    del data
    gc.collect()
    current, peak = tracemalloc.get_traced_memory() if mode == "memory" else (0, 0)
    tracemalloc.stop()
    rss1 = rss_bytes()
    # Touch it the way a reader does, to be sure it is usable.
    t1 = time.perf_counter()
    probe = m.get("train/class_123/img_000123.jpg")
    listing = sum(1 for _ in m.children("train/class_123"))
    t_lookup = time.perf_counter() - t1
    print(
        json.dumps(
            {
                "entries": len(m),
                "read_s": t_read - t0,
                "digest_s": t_digest - t_read,
                "decode_s": t_decode - t_digest,
                "load_s": t_decode - t0,
                "traced_bytes": current,
                "traced_peak": peak,
                "rss_delta": rss1 - rss0,
                "lookup_s": t_lookup,
                "probe_found": probe is not None,
                "listing": listing,
            }
        )
    )


def child(path: str, mode: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", path, "--mode", mode], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--keep", help="also keep the encoded manifest at this path")
    ap.add_argument("--runs", type=int, default=3, help="timed loads (the best is reported)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="time", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        load_child(args.child, args.mode)
        return

    from artfs.digest import digest_bytes

    n = args.entries
    t0 = time.perf_counter()
    m = build(n)
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    data = m.encode()
    t_encode = time.perf_counter() - t0
    hexdigest = digest_bytes(data).hex()
    del m
    gc.collect()

    with tempfile.TemporaryDirectory(prefix="artfs-bench-") as tmp:
        path = os.path.join(tmp, hexdigest)
        with open(path, "wb") as f:
            f.write(data)
        if args.keep:
            with open(args.keep, "wb") as f:
                f.write(data)
        runs = [child(path, "time") for _ in range(args.runs)]
        mem = child(path, "memory")
        phases = child(path, "phases")
    best = min(runs, key=lambda r: r["load_s"])
    per_entry = mem["traced_bytes"] / n
    rss_per_entry = best["rss_delta"] / n

    ok = "OK" if best["load_s"] < TARGET_SECONDS else "MISSED"
    mem_ok = "OK" if per_entry < TARGET_BYTES_PER_ENTRY else "MISSED"
    rows = [
        ("entries", f"{n:,}", ""),
        ("build (from Entry objects)", f"{t_build:.2f} s", ""),
        ("encode (msgpack + zstd)", f"{t_encode:.2f} s", ""),
        ("encoded size", f"{len(data) / 1e6:.1f} MB", f"{len(data) / n:.0f} B/entry"),
        ("load: read file", f"{best['read_s']:.3f} s", ""),
        ("load: blake3 verify", f"{best['digest_s']:.3f} s", ""),
        (
            "load: decode + validate",
            f"{best['decode_s']:.3f} s",
            f"separate run: zstd {phases['zstd_s']:.2f} s, msgpack {phases['msgpack_s']:.2f} s, "
            f"columns+validate {phases['rest_s']:.2f} s",
        ),
        (f"load total (best of {len(runs)})", f"{best['load_s']:.2f} s", f"target < {TARGET_SECONDS:.0f} s: {ok}"),
        ("load total (every run)", ", ".join(f"{r['load_s']:.2f}" for r in runs) + " s", ""),
        (
            "memory kept (tracemalloc)",
            f"{mem['traced_bytes'] / 1e6:.0f} MB",
            f"{per_entry:.0f} B/entry, target < {TARGET_BYTES_PER_ENTRY}: {mem_ok}",
        ),
        ("memory peak while loading", f"{mem['traced_peak'] / 1e6:.0f} MB", f"{mem['traced_peak'] / n:.0f} B/entry"),
        ("RSS growth (untraced run)", f"{best['rss_delta'] / 1e6:.0f} MB", f"{rss_per_entry:.0f} B/entry"),
        ("lookup + list one folder", f"{best['lookup_s'] * 1e3:.2f} ms", f"{best['listing']} entries listed"),
    ]
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    print(f"manifest scale benchmark (python {sys.version.split()[0]}, {os.cpu_count()} CPUs)")
    for a, b, c in rows:
        print(f"  {a:<{w0}}  {b:>{w1}}  {c}")


if __name__ == "__main__":
    main()
