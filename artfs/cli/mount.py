"""CLI verbs for the filesystem: mount, umount, prefetch."""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor

import click

from artfs.config import DEFAULT_CACHE_SIZE, parse_size
from artfs.names import normalize_path, parse_spec


def _size(ctx, param, value):
    return parse_size(value) if isinstance(value, str) else value


@click.command()
@click.argument("mountpoint", type=click.Path())  # checked by prepare_mountpoint: one clear line
@click.option("--foreground", "-f", is_flag=True, help="Stay in the foreground (for systemd).")
@click.option(
    "--cache-size",
    default=str(DEFAULT_CACHE_SIZE >> 30) + "G",
    callback=_size,
    show_default=True,
    help="Bound on the local content cache (e.g. 20G).",
)
@click.option(
    "--memory",
    default="256M",
    callback=_size,
    show_default=True,
    help="Bound on the manifest shards of big versions held in memory (e.g. 1G).",
)
@click.option("--refresh", default=5.0, show_default=True, help="Seconds between listings of versions and aliases.")
@click.option("--pin-aliases", is_flag=True, help="Freeze aliases (latest, best…) as they are at mount time.")
@click.option("--allow-other", is_flag=True, help="Let other users read the mount.")
@click.option(
    "--timeout", default=30.0, show_default=True, help="Seconds before a read the store cannot serve fails with EIO."
)
@click.option(
    "--sync-on-close/--no-sync-on-close",
    default=False,
    show_default=True,
    help="Drafts: a closed file is on disk when close() returns, as on a filesystem mounted "
    "`sync` (default: as ext4, it survives the daemon dying at once, and a host crash "
    "from the next fsync or commit on).",
)
@click.option("--log-file", default=None, help="Daemon log (default: CACHE/mount.log; stderr in --foreground).")
@click.option(
    "--metrics",
    default=None,
    metavar="HOST:PORT",
    help="Serve Prometheus metrics of the daemon at http://HOST:PORT/metrics (e.g. 127.0.0.1:9464).",
)
@click.option("--ready-fd", type=int, default=None, hidden=True)
@click.pass_obj
def mount(
    ctx,
    mountpoint,
    foreground,
    cache_size,
    memory,
    refresh,
    pin_aliases,
    allow_other,
    timeout,
    sync_on_close,
    log_file,
    metrics,
    ready_fd,
):
    """Mount the store at MOUNTPOINT: projects/artifacts/versions as folders."""
    from artfs.config import cache_dir, store_url
    from artfs.fs.daemon import MountOptions, prepare_mountpoint, setup_logging, start_daemon
    from artfs.fs.fuse.mount import run_foreground

    if refresh <= 0 or timeout <= 0:
        raise click.BadParameter("--refresh and --timeout must be positive")
    opts = MountOptions(
        mountpoint=os.path.abspath(mountpoint),
        store_url=store_url(ctx.store_url),
        cache_dir=cache_dir(ctx.cache),
        cache_size=cache_size,
        memory=memory,
        refresh=refresh,
        pin_aliases=pin_aliases,
        allow_other=allow_other,
        timeout=timeout,
        sync_on_close=sync_on_close,
        log_file=log_file,
        debug=ctx.debug,
        metrics=metrics,
    )
    if metrics:
        from artfs.fs.metrics import parse_address

        parse_address(metrics)  # a bad address is one line now, not a daemon that fails to start
    if foreground:
        setup_logging(ctx.debug, log_file)
        run_foreground(opts, ready_fd)
        return
    prepare_mountpoint(opts.mountpoint)  # report a bad mount point before forking
    opts.log_file = log_file or os.path.join(opts.cache_dir, "mount.log")
    # -P: a folder named artfs in the current directory must not shadow the installed package
    argv = [sys.executable, "-P", "-m", "artfs", "--store", opts.store_url, "--cache", opts.cache_dir]
    argv += ["--debug"] if ctx.debug else []
    argv += [
        "mount",
        opts.mountpoint,
        "--foreground",
        "--cache-size",
        str(cache_size),
        "--memory",
        str(memory),
        "--refresh",
        str(refresh),
        "--timeout",
        str(timeout),
        "--log-file",
        opts.log_file,
    ]
    argv += ["--sync-on-close"] if sync_on_close else []
    argv += ["--pin-aliases"] if pin_aliases else []
    argv += ["--allow-other"] if allow_other else []
    argv += ["--metrics", metrics] if metrics else []
    start_daemon(opts, argv)
    _mark_store(opts.store_url, timeout)
    click.echo(opts.mountpoint)


def _mark_store(url: str, timeout: float) -> None:
    """Once mounted, a location that held no store is made one and said so (as put and commit
    do), so a mistyped --store is seen at once, not as an empty tree. Within --timeout: the
    mount is up whatever the store does now."""
    from artfs.cli.format import note
    from artfs.errors import ArtfsError
    from artfs.fs.catalog import bounded
    from artfs.store.location import open_store
    from artfs.store.registry import Registry

    try:
        store = open_store(url)
        if bounded(Registry(store).mark_store, timeout, store.url)():
            note(f"artfs: created a new store at {store.url}")
    except (ArtfsError, OSError):
        pass  # the daemon logs what the store does


@click.command()
@click.argument("mountpoint", type=click.Path())
@click.option("--lazy", "-z", is_flag=True, help="Detach now even if busy.")
def umount(mountpoint, lazy):
    """Unmount an artfs mount."""
    from artfs.fs.daemon import unmount

    unmount(os.path.abspath(mountpoint), lazy)


@click.command()
@click.argument("spec")
@click.option("--path", "-p", default=None, help="Only this file or folder.")
@click.option("--cache-size", default=str(DEFAULT_CACHE_SIZE >> 30) + "G", callback=_size, show_default=True)
@click.option("--jobs", "-j", default=8, show_default=True, help="Parallel fetches.")
@click.pass_obj
def prefetch(ctx, spec, path, cache_size, jobs):
    """Warm the local cache with a version (or part of it) before a job reads it."""
    from artfs.content.cache import ContentCache
    from artfs.cli.format import note, progress_bar
    from artfs.errors import NotFound
    from artfs.content.fetch import contiguous, fetch_run, group, is_pack, pieces

    store = ctx.store
    rec = store.resolve(parse_spec(spec))
    m = store.manifest(rec)
    indices = m.under(normalize_path(path)) if path else range(len(m))
    if path and not indices:
        raise NotFound(f"{rec} has no file or folder {path!r}")
    cache = ContentCache(store.cache_dir, cache_size)
    todo = {p for i in indices for e in (m.entry(i),) if e.ref is None for p in pieces(e) if p.size}
    missing = [
        p for p in todo if not (cache.covers(p.key, p.offset, p.size) if is_pack(p.key) else cache.contains(p.digest))
    ]

    def fetch(run):
        got = dict(zip((p.digest for p in run), fetch_run(store.objects, run)))
        if is_pack(run[0].key):  # small files: one cache file per stretch, as the mount keeps them
            for start, parts in contiguous(run, got):
                cache.put_run(run[0].key, start, b"".join(parts))
        else:
            for p in run:
                cache.put(p.digest, got[p.digest])
        return sum(p.size for p in run)

    with progress_bar(sum(p.size for p in missing), f"prefetch {rec}") as bar:
        with ThreadPoolExecutor(jobs) as pool:
            for n in pool.map(fetch, list(group(missing, max_bytes=8 << 20))):
                bar(n)
    note(f"{rec}: {len(todo) - len(missing)} pieces were cached, {len(missing)} fetched")


def register(group: click.Group) -> None:
    for command in (mount, umount, prefetch):
        group.add_command(command)
