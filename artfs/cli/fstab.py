"""`mount.fuse.artfs`: the mount(8) helper behind an fstab line of type `fuse.artfs`.

    s3://bucket/prefix  /mnt/artfs  fuse.artfs  cache=/var/cache/artfs,cache_size=50G,refresh=5,allow_other,_netdev  0 0

`mount /mnt/artfs` then runs `/sbin/mount.fuse.artfs SOURCE MOUNTPOINT -o OPTIONS`
(install it with `ln -s /opt/artfs/.venv/bin/mount.fuse.artfs /sbin/`), which
becomes `artfs --store SOURCE [--cache DIR] mount MOUNTPOINT [flags]`: the
daemon starts and the helper returns once the mount is ready, as mount(8)
expects. The calling convention is mount.fuse3's: the source may also be
written `artfs#SOURCE`, and `-s` (sloppy), `-f` (fake), `-n`, `-v` and
`-t TYPE` are accepted.

Options (`-o`, comma separated):
    cache=DIR          local content cache (default: ARTFS_CACHE or the user cache dir)
    cache_size=SIZE    bound on the cache, e.g. 50G
    memory=SIZE        bound on manifest shards held in memory, e.g. 1G
    refresh=SECONDS    how often version lists and aliases are re-read
    pin_aliases        freeze aliases as they are at mount time
    allow_other        let other users read the mount
    timeout=SECONDS    a read the store cannot serve fails with EIO after this long
    log_file=FILE      daemon log (default: CACHE/mount.log)
    debug              log at debug level
Generic mount(8) options (rw, ro, defaults, _netdev, nofail, noauto, auto,
user, users, dev, nodev, suid, nosuid, exec, noexec, x-systemd.*, comment=*)
are ignored; anything else is refused with one line and exit code 1 (unless
`-s` is given, then it is ignored with a warning).
"""

from __future__ import annotations

import contextlib
import io
import sys

USAGE = "usage: mount.fuse.artfs SOURCE MOUNTPOINT [-o OPTION[,OPTION…]]"

# option -> (artfs mount flag, takes a value)
VALUE_OPTIONS = {
    "cache_size": "--cache-size",
    "memory": "--memory",
    "refresh": "--refresh",
    "timeout": "--timeout",
    "log_file": "--log-file",
}
FLAG_OPTIONS = {"pin_aliases": "--pin-aliases", "allow_other": "--allow-other"}
IGNORED = {
    "rw",
    "ro",
    "defaults",
    "_netdev",
    "nofail",
    "noauto",
    "auto",
    "user",
    "users",
    "nouser",
    "owner",
    "group",
    "dev",
    "nodev",
    "suid",
    "nosuid",
    "exec",
    "noexec",
    "atime",
    "noatime",
    "relatime",
    "norelatime",
    "strictatime",
    "diratime",
    "nodiratime",
    "async",
    "sync",
    "loud",
    "silent",
}
IGNORED_PREFIXES = ("x-", "comment=")


class UsageError(Exception):
    pass


def parse(argv: list[str]) -> tuple[str, str, list[str], dict]:
    """(source, mountpoint, options, flags) from mount(8)'s helper arguments."""
    positional: list[str] = []
    options: list[str] = []
    flags = {"sloppy": False, "fake": False}
    args = list(argv)
    while args:
        a = args.pop(0)
        if a == "-o":
            if not args:
                raise UsageError("-o needs a value")
            options += [o for o in args.pop(0).split(",") if o]
        elif a.startswith("-o") and len(a) > 2:
            options += [o for o in a[2:].split(",") if o]
        elif a == "-t":
            if not args:
                raise UsageError("-t needs a value")
            args.pop(0)
        elif a.startswith("-t") and len(a) > 2:
            pass
        elif a.startswith("-") and len(a) > 1 and set(a[1:]) <= set("sfnvh"):
            if "h" in a:
                raise UsageError(USAGE)
            flags["sloppy"] |= "s" in a
            flags["fake"] |= "f" in a
        elif a.startswith("-") and len(a) > 1:
            raise UsageError(f"unknown argument {a!r}; {USAGE}")
        else:
            positional.append(a)
    if len(positional) != 2:
        raise UsageError(USAGE)
    source, mountpoint = positional
    if "#" in source and source.split("#", 1)[0] in ("artfs", ""):
        source = source.split("#", 1)[1]  # mount.fuse's old `TYPE#SOURCE` form
    if not source:
        raise UsageError("no store given as the source (e.g. s3://bucket/prefix or /srv/artfs-store)")
    return source, mountpoint, options, flags


def to_artfs_args(source: str, mountpoint: str, options: list[str], sloppy: bool = False) -> list[str]:
    """The `artfs` command line (without the program name) that performs this mount."""
    top = ["--store", source]
    flags: list[str] = []
    for opt in options:
        name, eq, value = opt.partition("=")
        if name == "cache":
            if not value:
                raise UsageError("option cache needs a folder: cache=/var/cache/artfs")
            top += ["--cache", value]
        elif name == "debug" and not eq:
            top.append("--debug")
        elif name in VALUE_OPTIONS:
            if not value:
                raise UsageError(f"option {name} needs a value: {name}=…")
            flags += [VALUE_OPTIONS[name], value]
        elif name in FLAG_OPTIONS and not eq:
            flags.append(FLAG_OPTIONS[name])
        elif opt in IGNORED or name in IGNORED or opt.startswith(IGNORED_PREFIXES):
            continue
        elif sloppy:
            print(f"mount.fuse.artfs: ignoring unknown option {opt!r}", file=sys.stderr)
        else:
            known = ", ".join(["cache", *VALUE_OPTIONS, *FLAG_OPTIONS, "debug"])
            raise UsageError(f"unknown option {opt!r} (artfs knows {known})")
    return [*top, "mount", mountpoint, *flags]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    try:
        source, mountpoint, options, flags = parse(argv)
        args = to_artfs_args(source, mountpoint, options, flags["sloppy"])
    except UsageError as e:
        print(f"mount.fuse.artfs: {e}", file=sys.stderr)
        sys.exit(1)
    if flags["fake"]:
        return
    from artfs.cli.main import main as artfs_main

    # `artfs mount` prints the mount point; mount(8) helpers stay quiet on success.
    with contextlib.redirect_stdout(io.StringIO()):
        artfs_main(args)


if __name__ == "__main__":
    main()
