#!/usr/bin/env python3
"""Scale figures (issue 17): version listings, one-file commit cost in a big store,
many hosts on one bucket, and the bucket's request rate.

Everything runs on loopback against a SeaweedFS started here (tests/servers.py),
and every loop is bounded in count and time.

    .venv/bin/python scripts/bench/scale_bench.py listing  [--versions 1 100 1000]
    .venv/bin/python scripts/bench/scale_bench.py dedupe   [--entries 100000 1000000]
    .venv/bin/python scripts/bench/scale_bench.py hosts    [--hosts 8 32 64] [--seconds 40]
    .venv/bin/python scripts/bench/scale_bench.py shards   [--entries ...]  (shard_scale.py --mount --find)
    .venv/bin/python scripts/bench/scale_bench.py put      [--entries ...]  (put_scale.py: a streamed put)
    .venv/bin/python scripts/bench/scale_bench.py all      (each of the above, defaults)

`shards` and `put` run their own scripts (local store; 10M entries take ~30 min
and, with --find, memory for 10M names in the kernel and the daemon);
`big_version.py` makes and mounts a real 10M-file version end to end.

Figures are printed as Markdown tables (with /proc/loadavg beside them); --write
appends them to docs/benchmarks.md under "Scale".
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, ROOT)

from servers import SeaweedFS  # noqa: E402 - after the path is set

ARTFS = os.path.join(os.path.dirname(sys.executable), "artfs")
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "artfs-test",
    "AWS_SECRET_ACCESS_KEY": "artfs-test",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Bucket:
    """A SeaweedFS on loopback and one bucket in it; env points artfs and boto3 there."""

    def __init__(self):
        self.server = SeaweedFS().start()
        self.tmp = tempfile.mkdtemp(prefix="artfs-scale-")
        self.env = {
            **os.environ,
            **S3_ENV,
            "AWS_ENDPOINT_URL": self.server.endpoint,
            "AWS_CONFIG_FILE": os.path.join(self.tmp, "aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": os.path.join(self.tmp, "aws-creds"),
        }
        os.environ.update({k: v for k, v in self.env.items() if k.startswith("AWS_")})
        self.client = self.server.client()
        self.name = "scale"
        self.client.create_bucket(Bucket=self.name)
        self._n = 0

    def url(self, what: str) -> str:
        self._n += 1
        return f"s3://{self.name}/{what}-{self._n}"

    def artfs(self, args, store: str, cache: str, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
        env = {**self.env, "ARTFS_STORE": store, "ARTFS_CACHE": cache}
        p = subprocess.run(
            [ARTFS, *map(str, args)],
            check=False,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            **kw,
        )
        if p.returncode != 0:
            raise RuntimeError(f"artfs {' '.join(map(str, args))}: {p.stderr.strip()}")
        return p

    def close(self) -> None:
        self.server.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


# -- 1. version listings ---------------------------------------------------------------


def make_versions(b: Bucket, url: str, count: int) -> None:
    """v0 by `artfs put`, then v1..v(count-1) as copies of its record written straight to
    the bucket (as an older artfs, which kept no version index, would have left them)."""
    src = os.path.join(b.tmp, "one")
    os.makedirs(src, exist_ok=True)
    with open(os.path.join(src, "f.txt"), "w") as f:
        f.write("x")
    b.artfs(["put", "-n", "p/a", "-t", "dataset", src], url, os.path.join(b.tmp, "cache-put"))
    prefix = url.removeprefix(f"s3://{b.name}/")
    key0 = f"{prefix}/artifacts/p/a/versions/v0.json"
    body = b.client.get_object(Bucket=b.name, Key=key0)["Body"].read()

    def copy(n: int) -> None:
        b.client.put_object(Bucket=b.name, Key=f"{prefix}/artifacts/p/a/versions/v{n}.json", Body=body)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(copy, range(1, count)))


def time_cli(b: Bucket, url: str, args: list[str], repeat: int = 3) -> float:
    """Best of `repeat` fresh `artfs` processes (fresh cache folder each), in seconds."""
    best = float("inf")
    for _ in range(repeat):
        cache = os.path.join(b.tmp, f"cache-{time.monotonic_ns()}")
        t = time.monotonic()
        b.artfs(args, url, cache)
        best = min(best, time.monotonic() - t)
    return best


def time_versions_call(url: str) -> float:
    """Registry.versions() in a fresh Registry (nothing cached in memory), seconds."""
    code = (
        "import time,sys;from artfs.store.location import open_store;from artfs.store.registry import Registry;"
        "from artfs.names import ArtifactName;r=Registry(open_store(sys.argv[1]));t=time.monotonic();"
        "v=r.versions(ArtifactName('p','a'));print(time.monotonic()-t, len(v))"
    )
    p = subprocess.run([sys.executable, "-c", code, url], capture_output=True, text=True, check=True, timeout=600)
    return float(p.stdout.split()[0])


def bench_listing(b: Bucket, counts: list[int]) -> str:
    rows = []
    baseline = time_cli(b, "s3://" + b.name + "/nothing", ["--version"], repeat=3)
    for n in counts:
        url = b.url(f"listing{n}")
        make_versions(b, url, n)
        first_cli = time_cli(b, url, ["info", "p/a"], repeat=1)  # may build the version index
        cli = time_cli(b, url, ["info", "p/a"], repeat=3)
        ls = time_cli(b, url, ["ls", "p/a"], repeat=1)
        call = min(time_versions_call(url) for _ in range(3))
        rows.append(f"| {n:,} | {first_cli:.2f} | {cli:.2f} | {ls:.2f} | {call * 1000:.0f} |")
        print(rows[-1], flush=True)
    head = (
        "| versions | first `artfs info p/a` (s) | `artfs info p/a` (s, best of 3) | `artfs ls p/a` (s) "
        "| `Registry.versions()` in a fresh process (ms) |\n|---|---|---|---|---|"
    )
    return (
        f"{head}\n" + "\n".join(rows) + f"\n\n`artfs --version` alone (interpreter and imports): {baseline:.2f} s. "
        f"loadavg {loadavg()}.\n"
    )


# -- 2. publish, listing and one-file commits at 100k / 1M entries ------------------------

ONE_FILE_COMMIT = r"""
import json, os, sys, time
sys.path[:0] = [p for p in sys.argv[4:]]
from conftest import CountingStore
from artfs import Store
from artfs.store.location import open_store
from artfs.names import ArtifactName
from artfs.versions.publish import FileSource
from artfs.content.carry import CarriedRange
url, cache, new = sys.argv[1:4]
counter = CountingStore(open_store(url))
store = Store(url, cache, objects=counter)
t = time.monotonic()
base = store.registry.latest(ArtifactName("p", "a"))
m = store.manifest(base)
# Every base entry carried as one range, as a draft's commit carries its untouched folders.
r = store.publish(ArtifactName("p", "a"), None, [FileSource("extra/" + os.path.basename(new), new)],
                  [CarriedRange(m, 0, len(m), "", "")], base=base)
wall = time.monotonic() - t
reads = [(k, n) for k, n in counter.reads]
print(json.dumps({"seconds": wall, "version": r.version.number, "gets": len(reads),
                  "get_bytes": sum(n for _, n in reads),
                  "index_gets": sum(1 for k, _ in reads if k.startswith("index/")),
                  "dedupe_gets": sum(1 for k, _ in reads if k.startswith("dedupe/")),
                  "peak_rss_mib": __import__("resource").getrusage(0).ru_maxrss // 1024}))
"""


def make_tree(root: str, n: int) -> None:
    """n small files (64 random bytes each), 1,000 to a folder."""
    for i in range(n):
        if i % 1000 == 0:
            os.makedirs(os.path.join(root, f"d{i // 1000:05d}"), exist_ok=True)
        with open(os.path.join(root, f"d{i // 1000:05d}", f"f{i:08d}.bin"), "wb") as f:
            f.write(os.urandom(64))


def timed(cmd: list[str], env: dict, timeout: float) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (MiB) and stdout of a command, via /usr/bin/time."""
    t = time.monotonic()
    p = subprocess.run(
        ["/usr/bin/time", "-f", "%M", *cmd], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {p.stderr.strip()[-2000:]}")
    return time.monotonic() - t, int(p.stderr.strip().splitlines()[-1]) // 1024, p.stdout


def one_file_commit(b: Bucket, url: str, code_root: str, cache: str) -> dict:
    new = os.path.join(b.tmp, f"new-{time.monotonic_ns()}.bin")
    with open(new, "wb") as f:
        f.write(os.urandom(100))
    p = subprocess.run(
        [sys.executable, "-c", ONE_FILE_COMMIT, url, cache, new, code_root, os.path.join(ROOT, "tests")],
        env={**b.env, "PYTHONPATH": code_root},
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    if p.returncode != 0:
        raise RuntimeError(p.stderr[-3000:])
    return json.loads(p.stdout.strip().splitlines()[-1])


def bench_entries(b: Bucket, counts: list[int], before: str | None) -> str:
    rows, commits = [], []
    for n in counts:
        src = os.path.join(b.tmp, f"tree{n}")
        t = time.monotonic()
        make_tree(src, n)
        made = time.monotonic() - t
        url = b.url(f"entries{n}")
        env = {**b.env, "ARTFS_STORE": url, "ARTFS_CACHE": os.path.join(b.tmp, f"cache-put{n}")}
        put_s, put_rss, _ = timed([ARTFS, "put", "-n", "p/a", "-t", "dataset", src], env, 7200)
        shutil.rmtree(src, ignore_errors=True)
        env["ARTFS_CACHE"] = os.path.join(b.tmp, f"cache-ls{n}")
        ls_s, ls_rss, out = timed([ARTFS, "ls", "p/a:v0"], env, 3600)
        assert len(out.splitlines()) == n, len(out.splitlines())
        info_s, _, _ = timed([ARTFS, "info", "p/a"], env, 600)
        rows.append(f"| {n:,} | {put_s:.1f} | {put_rss:,} | {ls_s:.1f} | {ls_rss:,} | {info_s:.2f} |")
        print(rows[-1], f"(tree written in {made:.0f} s)", flush=True)
        # One-file commits (a new 100-byte file beside every entry of the latest version).
        tries = [("after (dedupe shards)", ROOT)]
        if before:
            tries.insert(0, ("before (main 3f3c43b: every pack index)", before))
        for label, code in tries:
            fresh = one_file_commit(b, url, code, os.path.join(b.tmp, f"cache-c-{time.monotonic_ns()}"))
            commits.append(
                f"| {n:,} | {label} | {fresh['seconds']:.2f} | {fresh['gets']} | "
                f"{fresh['get_bytes'] / 1e6:.1f} | {fresh['index_gets']} | {fresh['dedupe_gets']} | "
                f"{fresh['peak_rss_mib']} |"
            )
            print(commits[-1], flush=True)
    return (
        "| entries | `artfs put` (s) | put peak RSS (MiB) | `artfs ls p/a:v0` (s) | ls peak RSS (MiB) "
        "| `artfs info p/a` (s) |\n|---|---|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n\nOne-file commit (a new 100-byte file, every other entry carried from the latest version as "
        "one range, as a draft's commit does; "
        "a fresh process and a fresh cache):\n\n"
        "| entries in the store | code | seconds | GETs | MB read | `index/` GETs | `dedupe/` GETs | peak RSS (MiB) |"
        "\n|---|---|---|---|---|---|---|---|\n" + "\n".join(commits) + f"\n\nloadavg {loadavg()}.\n"
    )


# -- 3. many hosts on one bucket ---------------------------------------------------------


def bench_hosts(b: Bucket, counts: list[int], refresh: float, poll: float) -> tuple[str, str]:
    from hosts import RequestCounter, run_hosts

    proxy = RequestCounter(b.server.endpoint)
    env = {"AWS_ENDPOINT_URL": proxy.endpoint}
    os.environ["AWS_ENDPOINT_URL"] = proxy.endpoint  # run_hosts reads the records in-process too
    rows, rates = [], []
    try:
        for h in counts:
            root = tempfile.mkdtemp(prefix=f"artfs-hosts{h}-")
            t = time.monotonic()
            r = run_hosts(
                b.url(f"hosts{h}"),
                root,
                hosts=h,
                commits=1,
                refresh=refresh,
                env=env,
                deadline=900,
                read_sample=8,
                poll_seconds=poll,
            )
            shutil.rmtree(root, ignore_errors=True)
            print(r.summary(), f"({time.monotonic() - t:.0f} s)", r.errors[:5], flush=True)
            f = sorted(r.freshness) or [float("nan")]
            g = sorted(r.since_record) or [float("nan")]
            rows.append(
                f"| {h} | {len(r.commits)} | {'yes' if r.dense else 'NO'} | {r.reads} | {len(r.errors)} "
                f"| {f[len(f) // 2]:.2f} | {f[int(len(f) * 0.99)]:.2f} | {f[-1]:.2f} | {g[-1]:.2f} | {r.unseen} "
                f"| {sum(r.rss_kib) / 1024:,.0f} | {sum(r.rss_kib) / 1024 / max(1, len(r.rss_kib)):.0f} "
                f"| {r.mount_seconds:.0f} | {loadavg()} |"
            )
            c0, c1 = r.commit_window
            commit_reqs = proxy.between(c0, c1)
            p0, p1 = r.poll_window
            poll_reqs = proxy.between(p0, p1)
            span = max(p1 - p0, 1e-9)
            reads = sum(n for (k, _), n in poll_reqs.items() if k in ("GET", "HEAD", "LIST"))
            writes = sum(n for (k, _), n in poll_reqs.items() if k in ("PUT", "POST", "DELETE"))
            per_commit = sum(commit_reqs.values()) / max(1, len(r.commits))
            top = ", ".join(f"{k} {a} {n / span:.1f}" for (k, a), n in poll_reqs.most_common(4))
            ctop = ", ".join(f"{k} {a} {n / max(1, len(r.commits)):.1f}" for (k, a), n in commit_reqs.most_common(8))
            rates.append(
                f"| {h} | {refresh:g} | {span:.0f} | {reads / span:.1f} | {writes / span:.1f} "
                f"| {reads / span / h * refresh:.2f} | {top} | {per_commit:.0f} | {ctop} |"
            )
            print(rates[-1], flush=True)
    finally:
        proxy.close()
    table = (
        "| hosts | commits | versions dense | reads checked | errors | freshness p50 (s) | p99 (s) | max (s) "
        "| max from the record's creation (s) | (host, version) never seen | daemons' RSS total (MiB) "
        "| per daemon (MiB) | mounting all (s) | loadavg after |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows)
    )
    rate = (
        "| hosts | refresh (s) | polling window (s) | reads/s to the bucket | writes/s | reads per host per refresh "
        "| top (kind area: per s) | requests per commit | per commit (kind area: count) |\n"
        "|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rates)
    )
    return table, rate


def _sibling(script: str, *args: str) -> str:
    """What another scale script prints (its tables, with loadavg before and after)."""
    return subprocess.run(
        [sys.executable, os.path.join(HERE, script), *args], capture_output=True, text=True, check=True
    ).stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["listing", "dedupe", "hosts", "shards", "put", "all"])
    ap.add_argument("--versions", type=int, nargs="+", default=[1, 100, 1000])
    ap.add_argument("--entries", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--before", help="a folder holding an older `artfs` package to compare one-file commits with")
    ap.add_argument("--hosts", type=int, nargs="+", default=[8, 32, 64])
    ap.add_argument("--refresh", type=float, default=5.0)
    ap.add_argument("--poll", type=float, default=30.0, help="seconds every host keeps looking at the artifact")
    ap.add_argument("--write", action="store_true", help="append the tables to docs/benchmarks.md")
    args = ap.parse_args()
    out = []
    if args.what in ("shards", "all"):
        entries = [str(n) for n in args.entries]
        out.append(
            "### Sharded manifests (local store)\n\n"
            + _sibling("shard_scale.py", "--entries", *entries, "--mount", "--find")
        )
    if args.what in ("put", "all"):
        out.append(
            "### `artfs put`, streamed (local store)\n\n" + _sibling("put_scale.py", "--files", *map(str, args.entries))
        )
    b = Bucket() if args.what in ("listing", "dedupe", "hosts", "all") else None
    try:
        if args.what in ("listing", "all"):
            out.append("### Version listings (SeaweedFS, loopback)\n\n" + bench_listing(b, args.versions))
        if args.what in ("dedupe", "all"):
            out.append(
                "### Publish, listing and one-file commits by entries (SeaweedFS, loopback)\n\n"
                + bench_entries(b, args.entries, args.before)
            )
        if args.what in ("hosts", "all"):
            table, rate = bench_hosts(b, args.hosts, args.refresh, args.poll)
            out.append("### Many hosts on one bucket (SeaweedFS, loopback)\n\n" + table + "\n")
            out.append("### Requests the hosts send to the bucket\n\n" + rate + "\n")
    finally:
        if b is not None:
            b.close()
    text = "\n".join(out)
    print(text)
    if args.write:
        with open(os.path.join(ROOT, "docs", "benchmarks.md"), "a") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
