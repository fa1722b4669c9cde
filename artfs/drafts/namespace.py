"""A draft's namespace as the mount sees it: inodes, attributes, names, and the cache of them.

Answering without a worker thread: the mount's Draft keeps a NamespaceCache,
the names of folders it has listed and the attributes it knows, so FUSE's
LOOKUP and GETATTR (several per file a `cp -r` writes) are answered on the
trio thread without SQLite. Every change made through this Draft updates it
after its transaction commits; a change made by another process (`artfs ref
add` on a mounted draft) writes a new token into `namespace.gen` after its
commit, and the cache is then not used until a worker thread has emptied it.
"""

from __future__ import annotations

import errno
import mmap
import os
import stat as stat_mod
import threading
from collections.abc import Callable
from dataclasses import dataclass

from artfs.errors import FsError

ROOT = 1
FILE, DIR = "f", "d"
GEN_FILE = "namespace.gen"  # a token that a process changing a draft another process caches rewrites
NS_CACHE_LIMIT = 200_000  # names a NamespaceCache holds before it starts over
NS_DIR_LIMIT = 20_000  # a folder with more children is not cached (loading it costs a listing)


@dataclass
class Attr:
    ino: int
    kind: str
    mode: int  # permission bits only
    size: int
    mtime_ns: int
    ctime_ns: int = 0  # 0: the mtime
    atime_ns: int = 0  # 0: the mtime
    nlink: int = 0  # 0: 2 for a folder (no subfolder known), 1 for a file

    @property
    def is_dir(self) -> bool:
        return self.kind == DIR

    @property
    def st_ctime_ns(self) -> int:
        return self.ctime_ns or self.mtime_ns

    @property
    def st_atime_ns(self) -> int:
        return self.atime_ns or self.mtime_ns

    @property
    def st_nlink(self) -> int:
        return self.nlink or (2 if self.is_dir else 1)

    @property
    def st_mode(self) -> int:
        return (stat_mod.S_IFDIR if self.is_dir else stat_mod.S_IFREG) | self.mode


class NamespaceCache:
    """What the trio thread may answer without SQLite (see the module docstring).

    `dirs` holds the complete name -> inode map of some listed folders (so a name
    missing from it does not exist), `attrs` the attributes of some nodes: folders,
    base files, and local files as of their last close (a write drops them). Readers
    and writers take `lock`, which is never held during I/O. Writers hold the
    Draft's lock too and change this only after their transaction committed."""

    def __init__(self, gen_path: str):
        fd = os.open(gen_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < 8:
                os.pwrite(fd, os.urandom(8), 0)
            self._gen = mmap.mmap(fd, 8, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)
        self.lock = threading.Lock()
        self.seen = self._gen[:8]
        self.dirs: dict[int, dict[str, int]] = {}
        self.attrs: dict[int, Attr] = {}
        self.big: set[int] = set()  # folders too big to cache
        # Local files written since their attributes were cached: ino -> (mode, ctime_ns) of
        # their row, so that their attributes are those plus a stat of their data file, with
        # no SQLite (a write changes only the data file's size and times).
        self.written: dict[int, tuple[int, int]] = {}
        self.names = 0

    def valid(self) -> bool:
        """False if another process changed the draft since the cache was last emptied (or
        the draft was closed: committed or discarded while the kernel still asks)."""
        try:
            return self._gen[:8] == self.seen
        except ValueError:  # closed
            return False

    def check(self) -> bool:
        """Empties the cache if another process changed the draft; True if it did."""
        if self.valid():
            return False
        try:
            token = self._gen[:8]
        except ValueError:  # closed: the Draft's own calls fail on its closed database
            return False
        with self.lock:
            self._clear()
            self.seen = token
        return True

    def _clear(self) -> None:
        self.dirs.clear()
        self.attrs.clear()
        self.written.clear()
        self.big.clear()
        self.names = 0

    def clear(self) -> None:
        with self.lock:
            self._clear()

    def close(self) -> None:
        self._gen.close()

    # -- changes, made by the thread that committed them ------------------------------
    def load_dir(self, parent: int, names: dict[str, int], attrs: list[Attr]) -> None:
        """`names`: all children of `parent`; `attrs`: those of some of them (folders, base files)."""
        with self.lock:
            if len(names) > NS_DIR_LIMIT:
                self.big.add(parent)
                return
            if self.names + len(names) > NS_CACHE_LIMIT:
                self._clear()
            self.dirs[parent] = names
            self.names += len(names)
            for a in attrs:
                self.attrs[a.ino] = a

    def too_big(self, parent: int) -> None:
        with self.lock:
            self.big.add(parent)

    def touched(self, ino: int, now_ns: int, subdirs: int = 0) -> None:
        """A folder whose entries changed: its mtime and ctime are `now_ns`, and it has
        `subdirs` more subfolders (so links) than before."""
        with self.lock:
            a = self.attrs.get(ino)
            if a is not None:
                self.attrs[ino] = Attr(a.ino, a.kind, a.mode, a.size, now_ns, now_ns, a.atime_ns, a.st_nlink + subdirs)

    def added(self, parent: int, name: str, attr: Attr, ino: int, new_dir: bool = False) -> None:
        with self.lock:
            names = self.dirs.get(parent)
            if names is not None:
                names[name] = ino
                self.names += 1
            self._put(attr)
            if new_dir:
                self.dirs[ino] = {}

    def removed(self, parent: int, name: str, ino: int) -> None:
        with self.lock:
            names = self.dirs.get(parent)
            if names is not None and names.pop(name, None) is not None:
                self.names -= 1
            self.attrs.pop(ino, None)
            self.written.pop(ino, None)
            self.dirs.pop(ino, None)

    def moved(self, parent: int, name: str, new_parent: int, new_name: str, ino: int, replaced: int | None) -> None:
        """A rename, seen by readers all at once."""
        with self.lock:
            old = self.dirs.get(parent)
            if old is not None and old.pop(name, None) is not None:
                self.names -= 1
            if replaced is not None:
                self.attrs.pop(replaced, None)
                self.written.pop(replaced, None)
                self.dirs.pop(replaced, None)
            new = self.dirs.get(new_parent)
            if new is not None:
                if new_name not in new:
                    self.names += 1
                new[new_name] = ino

    def _put(self, attr: Attr) -> None:
        if len(self.attrs) >= NS_CACHE_LIMIT:
            self._clear()
        self.attrs[attr.ino] = attr
        self.written.pop(attr.ino, None)

    def put(self, attr: Attr) -> None:
        with self.lock:
            self._put(attr)

    def put_local(self, attr: Attr, generation: int, current: Callable[[int], int]) -> None:
        """A local file's attributes read when its write generation was `generation`: kept
        only if no write came since (a write bumps the generation, then drops them)."""
        with self.lock:
            if current(attr.ino) == generation:
                self._put(attr)
            else:  # (its mode may be new: a chmod read these)
                self.written.pop(attr.ino, None)

    def drop(self, ino: int) -> None:
        with self.lock:
            self.attrs.pop(ino, None)
            self.written.pop(ino, None)

    def wrote(self, ino: int) -> None:
        """A local file's bytes changed: its cached size and times are stale, its row's mode
        and ctime are not (see `written`)."""
        with self.lock:
            a = self.attrs.pop(ino, None)
            if a is not None and a.kind == FILE:
                if len(self.written) >= NS_CACHE_LIMIT:
                    self.written.clear()
                # (a.ctime_ns: the row's, or the data file's older one: the stat's is newer)
                self.written[ino] = (a.mode, a.ctime_ns)

    # -- reads, on any thread -----------------------------------------------------------
    def lookup(self, parent: int, name: str) -> Attr | None:
        """The child's attributes; None if not known here; FsError(ENOENT) if it does not exist."""
        if not self.valid():
            return None
        with self.lock:
            names = self.dirs.get(parent)
            if names is None:
                return None
            ino = names.get(name)
            if ino is None:
                raise FsError(errno.ENOENT)
            return self.attrs.get(ino)

    def attr(self, ino: int) -> Attr | None:
        if not self.valid():
            return None
        with self.lock:
            return self.attrs.get(ino)

    def written_row(self, ino: int) -> tuple[int, int] | None:
        """(mode, ctime_ns) of a local file written since its attributes were cached."""
        if not self.valid():
            return None
        with self.lock:
            return self.written.get(ino)


def check_entry_name(name: str) -> None:
    if name in ("", ".", "..") or "/" in name or "\x00" in name or "\n" in name:
        raise FsError(errno.EINVAL, f"invalid name {name!r}")
    if len(name.encode()) > 255:
        raise FsError(errno.ENAMETOOLONG)


def file_mode(mode: int) -> int:
    """The permission bits a file keeps: all of them, setuid, setgid and sticky included
    (a version records them; the mount is nosuid, so they grant nothing there)."""
    return mode & 0o7777
