"""Mounting: the daemon's wiring, start-up handshake, stale mounts and unmounting.

`artfs mount` starts the daemon as a child (`--foreground --ready-fd N`) and
returns once the child reports the mount is up, or prints why it is not.
The daemon unmounts on SIGTERM/SIGINT and tells systemd READY=1 when run
under it.
"""

from __future__ import annotations

import errno
import gc
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

import pyfuse3
import trio

from artfs.versions import lineage
from artfs.content.cache import ContentCache
from artfs.errors import ArtfsError, InvalidInput
from artfs.fs.catalog import Catalog, bounded
from artfs.fs.content import ContentSource
from artfs.fs.draftset import DraftSet
from artfs.fs.fuse.ops import Operations
from artfs.fs.tree import Tree

log = logging.getLogger("artfs.mount")

READ_AHEAD_KB = 4096


@dataclass
class MountOptions:
    mountpoint: str
    store_url: str | None = None
    cache_dir: str | None = None
    cache_size: int = 50 << 30
    refresh: float = 5.0
    pin_aliases: bool = False
    sync_on_close: bool = True  # drafts: close() durable across a host crash (else: at fsync/commit)
    allow_other: bool = False
    timeout: float = 30.0
    threads: int = 8
    log_file: str | None = None
    debug: bool = False


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


def _raise_read_ahead(path: str) -> None:
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


async def _ready_after_init(ops: Operations, mountpoint: str, ready_fd: int | None) -> None:
    """Says "ready" once the kernel's INIT is answered and the readahead raised. The kernel
    sets the mount's readahead from the INIT reply (raising it earlier is silently undone),
    and a file takes its readahead when it is opened: a file opened before the raise would
    be read in 128 KiB READs for as long as it stays open."""
    await ops.initialized.wait()
    await trio.sleep(0)  # init() runs just before the reply goes out; let it go
    try:
        await trio.to_thread.run_sync(_raise_read_ahead, mountpoint)
    except Exception as e:  # a faster mount is not worth failing the mount for
        log.warning("could not raise the readahead of %s: %s", mountpoint, e)
    _report(ready_fd, "ready")
    _notify_systemd("READY=1")


def _notify_systemd(state: str) -> None:
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


def build(opts: MountOptions):
    from artfs.api.store import Store

    store = Store(opts.store_url, opts.cache_dir)
    cache = ContentCache(store.cache_dir, opts.cache_size)
    catalog = Catalog(store.registry, opts.refresh, opts.pin_aliases, timeout=opts.timeout)
    load_manifest = bounded(store.manifest, opts.timeout, store.url)  # a hung store: EIO after --timeout
    tree = Tree(catalog, load_manifest, DraftSet(store, catalog, opts.sync_on_close), uid=os.getuid(), gid=os.getgid())
    content = ContentSource(store.objects, cache, threads=opts.threads, timeout=opts.timeout)
    def record_use(rec):
        lineage.record_use(store.registry, rec, "mount")

    return store, Operations(tree, content, opts.refresh, on_first_read=record_use)


def run_foreground(opts: MountOptions, ready_fd: int | None = None) -> None:
    """Mounts and serves until unmounted or signalled. Reports readiness on `ready_fd`."""
    try:
        mountpoint = prepare_mountpoint(opts.mountpoint)
        store, ops = build(opts)
        ops.tree.catalog.projects()  # fail now, clearly (within --timeout), if the store is unreachable
        ops.tree.catalog.pin()  # --pin-aliases: every alias as it is now
        fuse_options = set(pyfuse3.default_options) | {"fsname=artfs", "subtype=artfs"}
        if opts.allow_other:
            fuse_options.add("allow_other")
        pyfuse3.init(ops, mountpoint, fuse_options)
        os.chdir("/")  # like any daemon: do not keep the folder it was started from busy
    except Exception as e:
        _report(ready_fd, f"error: {e}")
        raise
    try:
        log.info("mounted %s on %s (cache %s)", store.url, mountpoint, store.cache_dir)
        trio.run(_serve, ops, mountpoint, ready_fd)
    finally:
        _notify_systemd("STOPPING=1")
        pyfuse3.close(unmount=True)
        ops.content.close()
        log.info("unmounted %s", mountpoint)


async def _serve(ops: Operations, mountpoint: str, ready_fd: int | None) -> None:
    # Every FUSE request allocates a handful of short-lived trio objects; at Python's default
    # threshold the cyclic collector then ran every few requests and took ~10% of a cold read.
    # Startup's long-lived objects are frozen out of its view.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    async with trio.open_nursery() as nursery:
        ops.content.attach(nursery)
        nursery.start_soon(_stop_on_signal)
        nursery.start_soon(_ready_after_init, ops, mountpoint, ready_fd)
        await pyfuse3.main(min_tasks=4, max_tasks=64)
        nursery.cancel_scope.cancel()


async def _stop_on_signal() -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for sig in signals:
            log.info("signal %s: unmounting", signal.Signals(sig).name)
            pyfuse3.terminate()
            return


def _report(fd: int | None, message: str) -> None:
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
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "ab") as log_out, open(os.devnull, "rb") as devnull:
        proc = subprocess.Popen(
            argv + ["--ready-fd", str(write_end)],
            stdin=devnull, stdout=log_out, stderr=log_out,
            pass_fds=(write_end,), start_new_session=True, close_fds=True,
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
