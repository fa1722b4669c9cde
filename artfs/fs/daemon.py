"""The mount daemon's life outside FUSE: options, wiring the layers, the start-up
handshake with `artfs mount`, stale mounts, systemd and unmounting.

`artfs mount` starts the daemon as a child (`--foreground --ready-fd N`) and
returns once the child reports the mount is up (`report_ready`), or prints why
it is not. fs/fuse/mount.py serves the kernel; this module knows no FUSE.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import ExitStack
from dataclasses import dataclass

from artfs.content.cache import ContentCache
from artfs.errors import ArtfsError, CorruptRecord, InvalidInput, NotFound, StoreUnavailable
from artfs.fs.catalog import Catalog, bounded
from artfs.fs.content import ContentSource
from artfs.fs.draftset import DraftSet
from artfs.fs.filesystem import FileSystem
from artfs.fs import metrics
from artfs.fs.kernel import Kernel
from artfs.fs.tree import Tree
from artfs.versions import lineage

log = logging.getLogger("artfs.mount")

READ_AHEAD_KB = 4096
# READs the kernel keeps in flight for the mount (its default is 12). Page-cache misses go out
# as background READs, so with 12 a cold stream's READs, all waiting on the store, made a
# small read of a cached file queue behind them in the kernel (head-of-line p99 11-52 ms
# against 1.5-5 ms with 64: docs/benchmarks.md, issue 13).
MAX_BACKGROUND = 64
FUSECTL = "/sys/fs/fuse/connections"


@dataclass
class MountOptions:
    mountpoint: str
    store_url: str | None = None
    cache_dir: str | None = None
    cache_size: int = 50 << 30
    memory: int = 256 << 20  # manifest shards held decoded (sharded versions)
    refresh: float = 5.0
    pin_aliases: bool = False
    sync_on_close: bool = False  # drafts: close() durable across a host crash (default, as ext4: at fsync/commit)
    allow_other: bool = False
    timeout: float = 30.0
    threads: int = 8
    log_file: str | None = None
    debug: bool = False
    metrics: str | None = None  # HOST:PORT to serve Prometheus metrics at


def is_stale(path: str) -> bool:
    # statfs always reaches the daemon; stat may be answered from the kernel's attribute
    # cache for a while after the daemon died (and then the mount looks alive).
    for probe in (os.statvfs, os.stat):
        try:
            probe(path)
        except OSError as e:
            if e.errno == errno.ENOTCONN:
                return True
    return False


def unmount(path: str, lazy: bool = False) -> None:
    cmd = ["fusermount3", "-u"] + (["-z"] if lazy else []) + [path]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        msg = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"fusermount3 exited {r.returncode}"
        raise ArtfsError(f"cannot unmount {path}: {msg}")


def prepare_mountpoint(path: str) -> str:
    path = os.path.abspath(path)
    if is_stale(path):
        log.info("%s is a stale mount (its daemon died); unmounting it first", path)
        print(f"artfs: {path} was a stale mount (its daemon died); recovering it", file=sys.stderr)
        unmount(path, lazy=True)
    if not os.path.isdir(path):
        raise InvalidInput(f"mount point {path} is not a directory")
    if os.path.ismount(path):
        raise InvalidInput(f"{path} is already a mount point (artfs umount {path} first)")
    return path


def raise_read_ahead(path: str) -> None:
    """pyfuse3 does not negotiate readahead; as root we can raise it for bigger READs."""
    # Never stat() our own mount point here: nothing serves it yet (deadlock).
    dev = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == path:
                dev = fields[2]
    if dev is None:
        return
    knob = f"/sys/class/bdi/{dev}/read_ahead_kb"
    try:
        with open(knob, "w") as f:
            f.write(str(READ_AHEAD_KB))
    except OSError as e:
        log.info("could not raise %s (%s); reads use the kernel default", knob, e.strerror)
    raise_max_background(dev)


def raise_max_background(dev: str) -> None:
    """More READs in flight for the mount (fusectl's knobs, root only), so a small read is not
    queued behind a stream's. fusectl is mounted if it is not yet (systemd mounts it at boot)."""
    conn = os.path.join(FUSECTL, dev.split(":")[1])
    try:
        if not os.path.isdir(conn) and os.path.isdir(FUSECTL) and not os.listdir(FUSECTL):
            subprocess.run(["mount", "-t", "fusectl", "none", FUSECTL], capture_output=True, timeout=10)
        for name, value in (("max_background", MAX_BACKGROUND), ("congestion_threshold", MAX_BACKGROUND * 3 // 4)):
            with open(os.path.join(conn, name), "w") as f:
                f.write(str(value))
    except (OSError, subprocess.SubprocessError) as e:
        log.info("could not raise the READs in flight for %s (%s); the kernel default holds", conn, e)


def notify_systemd(state: str) -> None:
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(state.encode(), addr)


def setup_logging(debug: bool, log_file: str | None) -> None:
    handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    logging.getLogger("botocore").setLevel(logging.WARNING)


def _manifest_loader(load):
    def load_manifest(rec):
        try:
            return load(rec)
        except NotFound:  # a version listed is there: its manifest missing is damage (EIO), not ENOENT
            raise CorruptRecord(f"{rec}: manifest manifests/{rec.manifest} is missing from the store") from None

    return load_manifest


class ShardFetches:
    """A mount's shard fetches, each given up after `timeout` (EIO), the fetch left to finish in
    its own thread. The registry lets one caller at a time fetch a shard; one that comes while
    an earlier fetch of it still hangs fails at once instead of waiting its own `timeout`
    after the earlier caller's (with N users of one shard, the N-th waited N x --timeout)."""

    def __init__(self, fetch, timeout: float | None, url: str):
        self._fetch, self._timeout, self._url = fetch, timeout, url
        self._lock = threading.Lock()
        self._hung: dict[str, Future] = {}

    def __call__(self, hexdigest: str) -> bytes:
        with self._lock:
            if hexdigest in self._hung:
                raise StoreUnavailable(f"{self._url} did not answer: an earlier fetch of this shard still waits")
            future: Future = Future()
            self._hung[hexdigest] = future
        threading.Thread(target=self._run, args=(hexdigest, future), name="artfs-shard", daemon=True).start()
        try:
            return future.result(timeout=self._timeout)
        except FutureTimeout:
            raise StoreUnavailable(f"{self._url} did not answer within {self._timeout:g}s") from None
        except NotFound:  # a root names it: a missing shard is damage (EIO), not "no such file"
            raise CorruptRecord(f"manifest shard manifests/{hexdigest} is missing from the store") from None

    def _run(self, hexdigest: str, future: Future) -> None:
        data, error = None, None
        try:
            data = self._fetch(hexdigest)
        except BaseException as e:  # handed to the caller, if it still waits
            error = e
        with self._lock:  # done before the caller hears: the next caller fetches anew
            del self._hung[hexdigest]
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(data)


def build(opts: MountOptions, kernel: Kernel, resources: ExitStack) -> FileSystem:
    """The layers a mount serves, each registered on `resources` to be closed at unmount."""
    from artfs.api.store import Store

    store = Store(opts.store_url, opts.cache_dir, shard_memory=opts.memory)
    cache = ContentCache(store.cache_dir, opts.cache_size)
    catalog = Catalog(store.registry, opts.refresh, opts.pin_aliases, timeout=opts.timeout)
    load_manifest = _manifest_loader(bounded(store.manifest, opts.timeout, store.url))  # hung: EIO after --timeout
    # So is a shard of a sharded manifest (read by the lookups and listings that need it).
    store.registry.fetch_shard = ShardFetches(store.registry.fetch_manifest, opts.timeout, store.url)
    drafts = DraftSet(store, catalog, opts.sync_on_close)
    resources.callback(drafts.close)
    tree = Tree(catalog, load_manifest, drafts, uid=os.getuid(), gid=os.getgid())
    content = ContentSource(store.objects, cache, threads=opts.threads, timeout=opts.timeout)
    resources.callback(content.close)

    def record_use(rec):
        lineage.record_use(store.registry, rec, "mount")

    if opts.metrics:
        metrics.attach(store.objects, cache, drafts)
        metrics.serve(opts.metrics)

    log.info("serving %s (cache %s)", store.url, store.cache_dir)
    return FileSystem(tree, content, opts.refresh, on_first_read=record_use, kernel=kernel)


def report_ready(fd: int | None, message: str) -> None:
    if fd is None:
        return
    try:
        os.write(fd, (message + "\n").encode())
        os.close(fd)
    except OSError:
        pass


def start_daemon(opts: MountOptions, argv: list[str], wait: float = 60.0) -> None:
    """Runs `argv` (the same mount in --foreground) detached; returns when it is mounted."""
    read_end, write_end = os.pipe()
    log_path = opts.log_file
    assert log_path is not None  # `artfs mount` sets it (default CACHE/mount.log)
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "ab") as log_out, open(os.devnull, "rb") as devnull:
        proc = subprocess.Popen(
            argv + ["--ready-fd", str(write_end)],
            stdin=devnull,
            stdout=log_out,
            stderr=log_out,
            pass_fds=(write_end,),
            start_new_session=True,
            close_fds=True,
        )
    os.close(write_end)
    deadline = time.monotonic() + wait
    message = b""
    with os.fdopen(read_end, "rb") as pipe:
        os.set_blocking(pipe.fileno(), True)
        while time.monotonic() < deadline:
            chunk = pipe.readline()
            message += chunk
            if not chunk or chunk.endswith(b"\n"):
                break
    text = message.decode(errors="replace").strip()
    if text == "ready":
        return
    if proc.poll() is None and not text:
        proc.terminate()
    raise ArtfsError(text.removeprefix("error: ") if text else f"the mount daemon exited; see {log_path}")
