"""Serving the kernel: mount, answer FUSE requests until unmounted or signalled, unmount.

The wiring of the layers, the start-up handshake and stale mounts are fs/daemon.py's.
The daemon unmounts on SIGTERM/SIGINT/SIGHUP and tells systemd READY=1 when run under it.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
from contextlib import ExitStack

import pyfuse3
import trio

from artfs.fs.filesystem import FileSystem
from artfs.fs.daemon import MountOptions, build, notify_systemd, prepare_mountpoint, raise_read_ahead, report_ready
from artfs.fs.fuse.ops import FuseKernel, Operations

log = logging.getLogger("artfs.mount")


async def _ready_after_init(fs: FileSystem, mountpoint: str, ready_fd: int | None) -> None:
    """Says "ready" once the kernel's INIT is answered and the readahead raised. The kernel
    sets the mount's readahead from the INIT reply (raising it earlier is silently undone),
    and a file takes its readahead when it is opened: a file opened before the raise would
    be read in 128 KiB READs for as long as it stays open."""
    await fs.initialized.wait()
    await trio.sleep(0)  # init() runs just before the reply goes out; let it go
    try:
        await trio.to_thread.run_sync(raise_read_ahead, mountpoint)
    except Exception as e:  # a faster mount is not worth failing the mount for
        log.warning("could not raise the readahead of %s: %s", mountpoint, e)
    report_ready(ready_fd, "ready")
    notify_systemd("READY=1")


def run_foreground(opts: MountOptions, ready_fd: int | None = None) -> None:
    """Mounts and serves until unmounted or signalled. Reports readiness on `ready_fd`.
    Everything opened for the mount is closed when it ends, in reverse order (one ExitStack)."""
    with ExitStack() as resources:
        try:
            mountpoint = prepare_mountpoint(opts.mountpoint)
            fs = build(opts, FuseKernel(), resources)
            fs.tree.catalog.projects()  # fail now, clearly (within --timeout), if the store is unreachable
            fs.tree.catalog.pin()  # --pin-aliases: every alias as it is now
            fuse_options = set(pyfuse3.default_options) | {"fsname=artfs", "subtype=artfs"}
            if opts.allow_other:
                fuse_options.add("allow_other")
            pyfuse3.init(Operations(fs), mountpoint, fuse_options)
            resources.callback(log.info, "unmounted %s", mountpoint)
            resources.callback(pyfuse3.close, unmount=True)
            resources.callback(notify_systemd, "STOPPING=1")
            os.chdir("/")  # like any daemon: do not keep the folder it was started from busy
        except Exception as e:
            report_ready(ready_fd, f"error: {e}")
            raise
        log.info("mounted on %s", mountpoint)
        trio.run(_serve, fs, mountpoint, ready_fd)


async def _serve(fs: FileSystem, mountpoint: str, ready_fd: int | None) -> None:
    # Every FUSE request allocates a handful of short-lived trio objects; at Python's default
    # threshold the cyclic collector then ran every few requests and took ~10% of a cold read.
    # Startup's long-lived objects are frozen out of its view.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    async with trio.open_nursery() as nursery:
        fs.content.attach(nursery)
        nursery.start_soon(_stop_on_signal)
        nursery.start_soon(_ready_after_init, fs, mountpoint, ready_fd)
        await pyfuse3.main(min_tasks=4, max_tasks=64)
        nursery.cancel_scope.cancel()


async def _stop_on_signal() -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for sig in signals:
            log.info("signal %s: unmounting", signal.Signals(sig).name)
            pyfuse3.terminate()
            return
