#!/usr/bin/env python3
"""How the shape of an upload changes what SeaweedFS spends to ingest it.

artfs stores a large file as 16 MiB blocks, each an object named by its blake3. This script
uploads --blocks such blocks (1 GiB by default: random bytes, each block distinct) to one
SeaweedFS on loopback, in each of these shapes, and reports the wall time and SeaweedFS's
CPU seconds (from /proc):

    single-w4     one PUT per block, 4 blocks in flight (what artfs does)
    single-w8     one PUT per block, 8 in flight
    parts3-w2     each block a multipart upload of three ~5.3 MiB parts sent at once, 2 blocks
                  in flight (6 parts)
    parts3-w4     the same, 4 blocks in flight (12 parts)
    artfs-w4      artfs's own S3Store.put, 4 blocks in flight (the commit's BLOCK_WINDOW)

Every shape uses a client that neither signs nor checksums the body (as artfs's uploader).
Before each measurement --warm-gib GiB of memory is touched and freed (on this VM first
touches of memory left unused cost host faults; see publish_bench.py), the order of shapes
rotates each repetition, and medians are reported.

    .venv/bin/python scripts/bench/s3_shapes.py                 # 1 GiB, 4 repetitions
    .venv/bin/python scripts/bench/s3_shapes.py --blocks 16 --reps 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, ROOT)

import boto3  # noqa: E402
import botocore.config  # noqa: E402
from servers import SeaweedFS  # noqa: E402 - after the path is set

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mount_bench import cpu_seconds, warm_memory  # noqa: E402

BLOCK = 16 << 20
BUCKET = "shapes"


class Shapes:
    def __init__(self, weed: SeaweedFS, blocks: int):
        base = weed.client()
        self.client = boto3.session.Session().client(
            "s3",
            aws_access_key_id="artfs-test",
            aws_secret_access_key="artfs-test",
            endpoint_url=weed.endpoint,
            region_name=base.meta.region_name,
            config=base.meta.config.merge(
                botocore.config.Config(
                    max_pool_connections=64,
                    request_checksum_calculation="when_required",
                    s3={"payload_signing_enabled": False, "addressing_style": "path"},
                )
            ),
        )
        self.blocks = blocks
        self._seed = [os.urandom(BLOCK) for _ in range(4)]

    def body(self, run: str, i: int) -> bytes:
        return self._seed[i % 4][:-32] + f"{run}/{i}".encode().ljust(32, b".")

    def single(self, run: str, at_once: int) -> None:
        def send(i):
            self.client.put_object(Bucket=BUCKET, Key=f"{run}/{i}", Body=self.body(run, i))

        with ThreadPoolExecutor(at_once) as pool:
            list(pool.map(send, range(self.blocks)))

    def parts(self, run: str, at_once: int, count: int = 3) -> None:
        part_pool = ThreadPoolExecutor(at_once * count)

        def send(i):
            data, key = self.body(run, i), f"{run}/{i}"
            upload = self.client.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
            size = -(-len(data) // count)

            def part(k):
                r = self.client.upload_part(
                    Bucket=BUCKET, Key=key, UploadId=upload, PartNumber=k + 1, Body=data[k * size : (k + 1) * size]
                )
                return {"PartNumber": k + 1, "ETag": r["ETag"]}

            done = list(part_pool.map(part, range(count)))
            self.client.complete_multipart_upload(
                Bucket=BUCKET, Key=key, UploadId=upload, MultipartUpload={"Parts": done}
            )

        with part_pool, ThreadPoolExecutor(at_once) as pool:
            list(pool.map(send, range(self.blocks)))

    def artfs(self, run: str, at_once: int, store) -> None:
        def send(i):
            store.put(f"objects/{run}-{i}", self.body(run, i))

        with ThreadPoolExecutor(at_once) as pool:
            list(pool.map(send, range(self.blocks)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--blocks", type=int, default=64, help="16 MiB blocks per measurement")
    p.add_argument("--reps", type=int, default=4)
    p.add_argument("--warm-gib", type=int, default=3)
    a = p.parse_args(argv)
    with SeaweedFS(volume_size_mb=1024, max_volumes=200) as weed:
        os.environ.update(
            AWS_ACCESS_KEY_ID="artfs-test",
            AWS_SECRET_ACCESS_KEY="artfs-test",
            AWS_ENDPOINT_URL=weed.endpoint,
            AWS_DEFAULT_REGION="us-east-1",
        )
        from artfs.store.backends.s3 import S3Store

        shapes = Shapes(weed, a.blocks)
        shapes.client.create_bucket(Bucket=BUCKET)
        store = S3Store(BUCKET, "artfs")
        cases = {
            "single-w4": lambda run: shapes.single(run, 4),
            "single-w8": lambda run: shapes.single(run, 8),
            "parts3-w2": lambda run: shapes.parts(run, 2),
            "parts3-w4": lambda run: shapes.parts(run, 4),
            "artfs-w4": lambda run: shapes.artfs(run, 4, store),
        }
        names = list(cases)
        wall: dict[str, list[float]] = {n: [] for n in names}
        weed_cpu: dict[str, list[float]] = {n: [] for n in names}
        mib = a.blocks * BLOCK / 2**20
        for rep in range(a.reps):
            for name in names[rep % len(names) :] + names[: rep % len(names)]:
                warmed = warm_memory(a.warm_gib) if a.warm_gib else 0.0
                time.sleep(1)
                c0, t0 = cpu_seconds(weed.proc.pid), time.monotonic()
                cases[name](f"{name}-{rep}")
                wall[name].append(time.monotonic() - t0)
                weed_cpu[name].append(cpu_seconds(weed.proc.pid) - c0)
                print(
                    f"rep {rep + 1} {name:10s} {wall[name][-1]:6.2f} s  SeaweedFS {weed_cpu[name][-1]:5.2f} CPU-s"
                    f"  (warmed {a.warm_gib} GiB in {warmed:.1f} s)",
                    flush=True,
                )
        print(f"\n{mib:.0f} MiB as 16 MiB blocks, {a.reps} repetitions, medians (samples)\n")
        print("| shape | MB/s | s | SeaweedFS CPU-s |")
        print("|---|---|---|---|")
        for n in names:
            s = statistics.median(wall[n])
            samples = ", ".join(f"{v:.2f}" for v in wall[n])
            print(
                f"| {n} | {a.blocks * BLOCK / s / 1e6:.0f} | {s:.2f} ({samples}) | {statistics.median(weed_cpu[n]):.1f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
