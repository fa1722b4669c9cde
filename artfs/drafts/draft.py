"""Drafts: mutable working copies of a version, kept on local disk until committed.

A draft is a folder holding `draft.json` (artifact, base version), a SQLite
namespace `tree.sqlite` and `data/<ino>` files for content written locally.
Files and folders from the base version are rows that point back into the
base manifest (`origin`), so nothing is copied until it is modified; a folder
lists its base children into the table only when first looked into, so a
draft of a million-file version costs nothing until used.

A reference added to a draft (`add_reference`) is a file row whose `origin` is
REF_ORIGIN followed by the encoded entry (URI, pin, size) instead of a base
path: it reads, renames and commits like an unmodified base file, and is never
copied. (A manifest path never starts with '/', so the two cannot be confused.)

Durability: every namespace change is a SQLite transaction with
synchronous=FULL (WAL), except creating a file, which becomes durable when it
is closed: `close_file(ino, fd)`, which the FUSE layer calls on flush and
fsync, journals a small file's bytes into the database (or fsyncs a large
one) in one synchronous transaction, so what was closed survives a crash of
the daemon or the host (see draft_files.py). A data file's size and times are
the file's own, so a write never touches the database.

Answering without a worker thread: the mount's Draft keeps a NamespaceCache,
the names of folders it has listed and the attributes it knows, so FUSE's
LOOKUP and GETATTR (several per file a `cp -r` writes) are answered on the
trio thread without SQLite. Every change made through this Draft updates it
after its transaction commits; a change made by another process (`artfs ref
add` on a mounted draft) writes a new token into `namespace.gen` after its
commit, and the cache is then not used until a worker thread has emptied it.

This module knows nothing of FUSE; errors are FsError carrying an errno.
"""

from __future__ import annotations

import base64
import ctypes
import errno
import json
import logging
import mmap
import os
import shutil
import sqlite3
import stat as stat_mod
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Callable

import msgpack

from artfs.content.carry import CarriedRange
from artfs.drafts.files import JOURNAL_LIMIT, WriteTracker, boot_id
from artfs.errors import ArtfsError, InvalidInput, NotFound
from artfs.store.manifest import Entry, Manifest
from artfs.names import ArtifactName, check_name, is_valid_name, normalize_path
from artfs.versions.publish import FileSource

ROOT = 1
FILE, DIR = "f", "d"
DRAFTS_FOLDER = "drafts"
REF_ORIGIN = "/ref:"  # origin of a file row that is a reference added to the draft
GEN_FILE = "namespace.gen"  # a token that a process changing a draft another process caches rewrites
NS_CACHE_LIMIT = 200_000  # names a NamespaceCache holds before it starts over
NS_DIR_LIMIT = 20_000  # a folder with more children is not cached (loading it costs a listing)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS node (
    ino INTEGER PRIMARY KEY AUTOINCREMENT,
    parent INTEGER NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    mode INTEGER NOT NULL,
    size INTEGER NOT NULL DEFAULT 0,
    mtime_ns INTEGER NOT NULL,
    origin TEXT,
    UNIQUE (parent, name)
);
CREATE TABLE IF NOT EXISTS journal (ino INTEGER PRIMARY KEY, mtime_ns INTEGER NOT NULL, data BLOB);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class FsError(ArtfsError):
    def __init__(self, code: int, message: str = ""):
        super().__init__(message or os.strerror(code))
        self.errno = code


@dataclass
class DraftInfo:
    project: str
    artifact: str
    name: str
    base: int | None  # version number, None for a draft of a new artifact
    base_manifest: str | None
    type: str | None
    created: float
    hold: str | None = None  # the store's hold on the base manifest (lifecycle.add_hold)

    @property
    def artifact_name(self) -> ArtifactName:
        return ArtifactName(self.project, self.artifact)

    def __str__(self) -> str:
        return f"{self.project}/{self.artifact}/drafts/{self.name}"


@dataclass
class Attr:
    ino: int
    kind: str
    mode: int  # permission bits only
    size: int
    mtime_ns: int

    @property
    def is_dir(self) -> bool:
        return self.kind == DIR

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
        self.big.clear()
        self.names = 0

    def clear(self) -> None:
        with self.lock:
            self._clear()

    def close(self) -> None:
        self._gen.close()

    # -- changes, made by the thread that committed them ------------------------------
    def load_dir(self, parent: int, rows) -> None:
        """`rows` (name, ino, kind, mode, size, mtime_ns, origin): all children of `parent`."""
        with self.lock:
            if len(rows) > NS_DIR_LIMIT:
                self.big.add(parent)
                return
            if self.names + len(rows) > NS_CACHE_LIMIT:
                self._clear()
            self.dirs[parent] = {r[0]: r[1] for r in rows}
            self.names += len(rows)
            for name, ino, kind, mode, size, mtime_ns, origin in rows:
                if kind == DIR or origin is not None:
                    self.attrs[ino] = Attr(ino, kind, mode, size, mtime_ns)

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
            self.dirs.pop(ino, None)

    def moved(self, parent: int, name: str, new_parent: int, new_name: str, ino: int, replaced: int | None) -> None:
        """A rename, seen by readers all at once."""
        with self.lock:
            old = self.dirs.get(parent)
            if old is not None and old.pop(name, None) is not None:
                self.names -= 1
            if replaced is not None:
                self.attrs.pop(replaced, None)
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

    def put(self, attr: Attr) -> None:
        with self.lock:
            self._put(attr)

    def put_local(self, attr: Attr, generation: int, current: Callable[[int], int]) -> None:
        """A local file's attributes read when its write generation was `generation`: kept
        only if no write came since (a write bumps the generation, then drops them)."""
        with self.lock:
            if current(attr.ino) == generation:
                self._put(attr)

    def drop(self, ino: int) -> None:
        with self.lock:
            self.attrs.pop(ino, None)

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


class Draft:
    def __init__(self, path: str, base: Manifest | None, durable: bool = True, cache_namespace: bool = False):
        """`cache_namespace`: keep a NamespaceCache (the mount owning the draft); without one,
        every change is announced in GEN_FILE for the process that may keep one."""
        self.path = path
        with open(os.path.join(path, "draft.json")) as f:
            self.info = DraftInfo(**json.load(f))
        self.base = base
        self.data_dir = os.path.join(path, "data")
        self._lock = threading.RLock()
        self.db = sqlite3.connect(os.path.join(path, "tree.sqlite"), check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA busy_timeout=5000")  # another process (a viewing mount, the CLI) writing
        # NORMAL by default: a change survives the process dying, and reaches the disk with
        # the next synchronous (FULL) transaction, which flushes every frame before it.
        # Namespace changes are FULL when durable; creating a file is made durable at close.
        self.db.execute("PRAGMA synchronous=NORMAL")
        self._synchronous = False
        self.durable = durable
        self.writes = WriteTracker()
        self._listed: set[int] = set()  # folders whose base children are in the table already
        self._tx_listed: list[int] = []  # ... once the transaction listing them commits
        self._journaled: set[int] = set()  # files whose bytes the journal holds (see close_file)
        self.ns = NamespaceCache(os.path.join(path, GEN_FILE)) if cache_namespace else None
        self._open_journal()

    def close(self) -> None:
        with self._lock:
            self.db.close()
            if self.ns is not None:
                self.ns.close()

    # -- transactions ------------------------------------------------------------------
    @contextmanager
    def _tx(self, sync: bool | None = None):
        """A write transaction; `sync`: flushed to disk at commit (default: if durable)."""
        sync = self.durable if sync is None else sync
        with self._lock:
            try:
                if sync != self._synchronous:
                    self.db.execute("PRAGMA synchronous=" + ("FULL" if sync else "NORMAL"))
                    self._synchronous = sync
                self._tx_listed = []
                self.db.execute("BEGIN IMMEDIATE")
                self._ns_check()
                changes = self.db.total_changes
                yield self.db
                self.db.execute("COMMIT")
                self._listed.update(self._tx_listed)
                if self.ns is None and self.db.total_changes != changes:
                    self._announce()
            except sqlite3.OperationalError as e:
                self.db.execute("ROLLBACK") if self.db.in_transaction else None
                if "full" in str(e):
                    raise FsError(errno.ENOSPC, f"draft {self.info}: disk full") from None
                raise
            except BaseException:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise

    # -- the namespace cache -----------------------------------------------------------------
    def _ns_check(self) -> None:
        """Under the lock, before reading the table to fill the cache: if another process
        changed the draft, start over (and forget which folders are listed: it may have
        listed some)."""
        if self.ns is not None and self.ns.check():
            self._listed.clear()

    def _announce(self) -> None:
        """Tells a process caching this draft's namespace (its mount) that it changed."""
        try:
            fd = os.open(os.path.join(self.path, GEN_FILE), os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.pwrite(fd, os.urandom(8), 0)
            finally:
                os.close(fd)
        except OSError as e:
            logging.getLogger(__name__).warning("draft %s: could not announce a change: %s", self.info, e)

    def cached_lookup(self, parent: int, name: str) -> Attr | None:
        """Child `name` from memory, on any thread: None if not known there, FsError(ENOENT)
        if known not to exist."""
        return None if self.ns is None else self.ns.lookup(parent, name)

    def cached_attr(self, ino: int) -> Attr | None:
        return None if self.ns is None else self.ns.attr(ino)

    def _ns_local(self, ino: int, mode: int, mtime_ns: int) -> Attr | None:
        """A local file's attributes, from its data file; kept in the cache if no write
        raced with reading them. None if the data file is gone."""
        gen = self.writes.generation(ino)
        try:
            st = os.stat(self.data_path(ino))
        except FileNotFoundError:
            return None
        attr = Attr(ino, FILE, mode, st.st_size, st.st_mtime_ns)
        if self.ns is not None:
            self.ns.put_local(attr, gen, self.writes.generation)
        return attr

    def _ns_fill(self, parent: int) -> None:
        """Under the lock, `parent` listed: its children into the cache, if not there yet."""
        ns = self.ns
        if ns is None or parent in ns.dirs or parent in ns.big or parent not in self._listed:
            return
        rows = self.db.execute("SELECT name, ino, kind, mode, size, mtime_ns, origin FROM node WHERE parent=? "
                               "LIMIT ?", (parent, NS_DIR_LIMIT + 1)).fetchall()
        ns.load_dir(parent, rows)

    def _ns_written(self, ino: int) -> None:
        """After a local file changed: its cached size and time are no longer right."""
        if self.ns is not None:
            self.ns.drop(ino)

    # -- the journal of closed small files (draft_files.py) ----------------------------------
    def _open_journal(self) -> None:
        """Adds the journal to a draft made by an older artfs, and after a reboot restores
        the closed files a host crash may have lost. A second mount viewing the draft
        read-only may find it locked: it then leaves this to the owner."""
        try:
            with self._lock:
                if self.db.execute("SELECT 1 FROM sqlite_master WHERE name='meta'").fetchone() is None:
                    self.db.executescript(_SCHEMA)
                boot = self.db.execute("SELECT value FROM meta WHERE key='boot'").fetchone()
                if boot is None or boot[0] != boot_id():
                    self._restore_after_reboot()
        except sqlite3.OperationalError as e:
            logging.getLogger(__name__).warning("draft %s: journal not checked: %s", self.info, e)
        try:
            with self._lock:  # a plain read (WAL: never blocked by a writer)
                self._journaled = {r[0] for r in self.db.execute("SELECT ino FROM journal WHERE data IS NOT NULL")}
        except sqlite3.OperationalError:  # a draft of an older artfs that could not be upgraded
            pass

    def _restore_after_reboot(self) -> None:
        rows = self.db.execute("SELECT ino, mtime_ns, data FROM journal WHERE data IS NOT NULL").fetchall()
        for ino, mtime_ns, data in rows:
            path = self.data_path(ino)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            os.utime(path, ns=(mtime_ns, mtime_ns))
        # A file created but never closed may have lost its data file: it is empty, as opened.
        for (ino,) in self.db.execute("SELECT ino FROM node WHERE kind=? AND origin IS NULL", (FILE,)).fetchall():
            if not os.path.exists(self.data_path(ino)):
                _create_empty(self.data_path(ino))
        if rows:
            logging.getLogger(__name__).warning("draft %s: restored %d closed files after a reboot", self.info,
                                                len(rows))
        _syncfs(self.data_dir)  # the restored files are on disk before their copies go
        with self._tx(sync=True) as db:
            db.execute("DELETE FROM journal")
            db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('boot', ?)", (boot_id(),))

    def close_file(self, ino: int, fd: int) -> None:
        """Makes a locally written file durable, data and namespace row, with one flush to
        disk for a small file (its bytes go into the journal) and two for a large one."""
        st = os.fstat(fd)
        if st.st_size > JOURNAL_LIMIT:
            os.fsync(fd)
        with self._tx(sync=True) as db:
            # Read under the lock: a later close of the same file journals later bytes.
            gen = self.writes.generation(ino)
            st = os.fstat(fd)
            data = None
            if st.st_size <= JOURNAL_LIMIT:
                data = os.pread(fd, st.st_size, 0)
                if len(data) != st.st_size:
                    raise FsError(errno.EIO, f"draft {self.info}: file {ino} changed while being closed")
            # Always a row (data NULL: fsynced, nothing to restore), so the commit writes and
            # flushes the WAL: that also makes the file's namespace row durable.
            db.execute("INSERT OR REPLACE INTO journal(ino, mtime_ns, data) SELECT ?, ?, ? "
                       "WHERE EXISTS (SELECT 1 FROM node WHERE ino=? AND origin IS NULL)",
                       (ino, st.st_mtime_ns, data, ino))
            if self.ns is not None:
                row = db.execute("SELECT mode FROM node WHERE ino=? AND origin IS NULL", (ino,)).fetchone()
                if row is not None:  # its size and time as closed, for the trio thread
                    self.ns.put_local(Attr(ino, FILE, row[0], st.st_size, st.st_mtime_ns), gen,
                                      self.writes.generation)
        if data is None:
            self._journaled.discard(ino)
        else:
            self._journaled.add(ino)

    def write(self, ino: int, fd: int, data: bytes, off: int) -> int:
        """pwrite into a local file. The first write after a close that journaled the file
        first makes that content durable in place (fsync), so the journal's copy is never
        restored over newer bytes."""
        if ino in self._journaled:
            os.fsync(fd)
            with self._tx(sync=True) as db:
                db.execute("UPDATE journal SET data=NULL WHERE ino=?", (ino,))
                self._journaled.discard(ino)
        try:
            return self.writes.write(ino, fd, data, off)
        finally:
            self._ns_written(ino)  # after the write's generation: see NamespaceCache.put_local

    def open_local(self, ino: int, flags: int) -> int:
        """A descriptor on a local file's data (O_TRUNC: emptied, hashed as written next)."""
        fd = os.open(self.data_path(ino), flags)
        if flags & os.O_TRUNC:
            self.writes.start(ino)
            self._ns_written(ino)
        return fd

    def truncate(self, ino: int, size: int) -> None:
        """Truncates a local file; journaled again, durably, if it was."""
        path = self.data_path(ino)
        os.truncate(path, size)
        # Emptied (as the kernel does for O_TRUNC, before the open): hash what is written next.
        self.writes.start(ino) if size == 0 else self.writes.changed(ino)
        self._ns_written(ino)
        if self.durable or ino in self._journaled:
            fd = os.open(path, os.O_RDONLY)
            try:
                self.close_file(ino, fd)
            finally:
                os.close(fd)

    def _forget_files(self, db, inos) -> None:
        for ino in inos:
            db.execute("DELETE FROM journal WHERE ino=?", (ino,))
            self._journaled.discard(ino)
            self.writes.forget(ino)

    def _row(self, ino: int):
        row = self.db.execute("SELECT ino, kind, mode, size, mtime_ns, origin FROM node WHERE ino=?", (ino,)).fetchone()
        if row is None:
            raise FsError(errno.ENOENT)
        return row

    def data_path(self, ino: int) -> str:
        return os.path.join(self.data_dir, str(ino))

    def _attr(self, row) -> Attr:
        """Under the lock (it may fill the cache): a row's attributes."""
        ino, kind, mode, size, mtime_ns, origin = row
        if kind == FILE and origin is None:
            return self._ns_local(ino, mode, mtime_ns) or Attr(ino, kind, mode, 0, mtime_ns)
        attr = Attr(ino, kind, mode, size, mtime_ns)
        if self.ns is not None:
            self.ns.put(attr)
        return attr

    # -- lazily listing base folders ----------------------------------------------------
    def _materialize(self, db, ino: int) -> None:
        if ino in self._listed:
            return
        row = db.execute("SELECT kind, origin FROM node WHERE ino=?", (ino,)).fetchone()
        if row is None:
            raise FsError(errno.ENOENT)
        kind, origin = row
        if kind != DIR:
            raise FsError(errno.ENOTDIR)
        if origin is None:
            self._tx_listed.append(ino)
            return
        m = self.base
        mtime_ns = int(self.info.created * 1e9)
        rows = []
        for name, i in m.children(origin):
            child = f"{origin}/{name}" if origin else name
            if i is None:
                rows.append((ino, name, DIR, 0o755, 0, mtime_ns, child))
            else:
                rows.append((ino, name, FILE, m.modes[i], max(m.sizes[i], 0), mtime_ns, child))
        db.executemany("INSERT INTO node(parent, name, kind, mode, size, mtime_ns, origin) VALUES (?,?,?,?,?,?,?)", rows)
        db.execute("UPDATE node SET origin=NULL WHERE ino=?", (ino,))
        self._tx_listed.append(ino)

    def _child(self, db, parent: int, name: str):
        self._materialize(db, parent)
        return db.execute("SELECT ino, kind, mode, size, mtime_ns, origin FROM node WHERE parent=? AND name=?",
                          (parent, name)).fetchone()

    # -- reading the namespace ----------------------------------------------------------
    def lookup(self, parent: int, name: str) -> Attr:
        with self._lock:
            self._ns_check()
            if parent in self._listed:  # a plain read: no write transaction
                row = self.db.execute("SELECT ino, kind, mode, size, mtime_ns, origin FROM node WHERE parent=? AND name=?",
                                      (parent, name)).fetchone()
            else:
                with self._tx(sync=False) as db:  # listing base children is not a change
                    row = self._child(db, parent, name)
            self._ns_fill(parent)  # the next lookups in this folder: from memory
            if row is None:
                raise FsError(errno.ENOENT)
            return self._attr(row)

    def getattr(self, ino: int) -> Attr:
        with self._lock:
            self._ns_check()
            return self._attr(self._row(ino))

    def listdir(self, ino: int) -> list[tuple[str, Attr]]:
        with self._lock:
            with self._tx(sync=False) as db:
                self._materialize(db, ino)
                rows = db.execute("SELECT name, ino, kind, mode, size, mtime_ns, origin FROM node WHERE parent=? "
                                  "ORDER BY name", (ino,)).fetchall()
            if self.ns is not None and ino not in self.ns.dirs:
                self.ns.load_dir(ino, rows)
            return [(r[0], self._attr(r[1:])) for r in rows]

    def base_entry(self, ino: int) -> Entry | None:
        """The base version's entry whose bytes this file still has, or None if written locally."""
        with self._lock:
            _, kind, _, _, _, origin = self._row(ino)
        if kind != FILE or origin is None:
            return None
        return self._origin_entry(origin)

    def _origin_entry(self, origin: str) -> Entry | None:
        if origin.startswith(REF_ORIGIN):
            d = msgpack.unpackb(base64.b64decode(origin[len(REF_ORIGIN):]), raw=False)
            return Entry(d["path"], d["size"], d["digest"], d["mode"], ref=d["ref"])
        return self.base.get(origin)

    def add_reference(self, path: str, entry: Entry) -> int:
        """Adds reference `entry` as file `path`; returns its inode (see add_references)."""
        return self.add_references([(path, entry)])[0]

    def add_references(self, items: list[tuple[str, Entry]]) -> list[int]:
        """Adds references as files, in one transaction (all or nothing): missing folders are
        made, a file already there is replaced (re-adding a URI re-pins it), a folder refused."""
        now = time.time_ns()
        inos, replaced = [], []
        with self._tx() as db:
            for path, entry in items:
                ino, old = self._add_reference(db, path, entry, now)
                inos.append(ino)
                if old is not None:
                    replaced.append(old)
            self._forget_files(db, replaced)
        if self.ns is not None:
            self.ns.clear()
        for old in replaced:
            _remove(self.data_path(old))
        return inos

    def _add_reference(self, db, path: str, entry: Entry, now: int) -> tuple[int, int | None]:
        if entry.ref is None:
            raise InvalidInput(f"{path}: not a reference")
        parts = normalize_path(path).split("/")
        for name in parts:
            check_entry_name(name)
        encoded = base64.b64encode(msgpack.packb(
            {"path": entry.path, "size": entry.size, "digest": entry.digest, "mode": entry.mode, "ref": entry.ref},
            use_bin_type=True)).decode()
        parent = ROOT
        for name in parts[:-1]:
            row = self._child(db, parent, name)
            if row is None:
                parent = db.execute("INSERT INTO node(parent, name, kind, mode, mtime_ns) VALUES (?,?,?,?,?)",
                                    (parent, name, DIR, 0o755, now)).lastrowid
            elif row[1] != DIR:
                raise FsError(errno.ENOTDIR, f"cannot add {path} to draft {self.info}: {name} is a file")
            else:
                parent = row[0]
        row = self._child(db, parent, parts[-1])
        if row is not None:
            if row[1] == DIR:
                raise FsError(errno.EISDIR, f"cannot add {path} to draft {self.info}: it is a folder")
            db.execute("DELETE FROM node WHERE ino=?", (row[0],))
        ino = db.execute("INSERT INTO node(parent, name, kind, mode, size, mtime_ns, origin) VALUES (?,?,?,?,?,?,?)",
                         (parent, parts[-1], FILE, _file_mode(entry.mode), max(entry.size, 0), now,
                          REF_ORIGIN + encoded)).lastrowid
        return ino, None if row is None else row[0]

    # -- changing the namespace ----------------------------------------------------------
    def _check_new(self, db, parent: int, name: str) -> None:
        check_entry_name(name)
        if self._child(db, parent, name) is not None:
            raise FsError(errno.EEXIST)

    def mkdir(self, parent: int, name: str, mode: int) -> Attr:
        with self._lock:
            with self._tx() as db:
                self._check_new(db, parent, name)
                cur = db.execute("INSERT INTO node(parent, name, kind, mode, mtime_ns) VALUES (?,?,?,?,?)",
                                 (parent, name, DIR, mode & 0o7777, time.time_ns()))
                row = self._row(cur.lastrowid)
                self._tx_listed.append(row[0])  # new: no base children to list
            attr = Attr(*row[:5])
            if self.ns is not None:
                self.ns.added(parent, name, attr, attr.ino, new_dir=True)
            return attr

    def create(self, parent: int, name: str, mode: int) -> Attr:
        attr, fd = self.create_open(parent, name, mode)
        os.close(fd)
        return attr

    def create_open(self, parent: int, name: str, mode: int) -> tuple[Attr, int]:
        """A new empty file written locally, and a read-write descriptor on it: all that
        FUSE's create needs, in one call. The data file exists before the row does; the row
        is not flushed to disk here but when the file is closed (close_file)."""
        fd = None
        try:
            with self._lock:
                with self._tx(sync=False) as db:
                    self._check_new(db, parent, name)
                    ino = db.execute("INSERT INTO node(parent, name, kind, mode, mtime_ns) VALUES (?,?,?,?,?)",
                                     (parent, name, FILE, _file_mode(mode), time.time_ns())).lastrowid
                    fd = os.open(self.data_path(ino), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
                    st = os.fstat(fd)
                self.writes.start(ino)
                attr = Attr(ino, FILE, _file_mode(mode), 0, st.st_mtime_ns)
                if self.ns is not None:
                    self.ns.added(parent, name, attr, ino)
        except BaseException:
            if fd is not None:
                os.close(fd)
            raise
        return attr, fd

    def unlink(self, parent: int, name: str) -> None:
        try:
            self._unlink(parent, name)
        except FsError as e:
            if e.errno != errno.ENOSPC:
                raise
            # The disk is full and recording the removal needs a little space: the file is
            # going away, so its own bytes make that room (else nothing in a full draft
            # could be deleted to free space). Open descriptors then read it as empty.
            with self._lock:
                row = self.db.execute("SELECT ino, kind, origin FROM node WHERE parent=? AND name=?",
                                      (parent, name)).fetchone()
            if row is None or row[1] != FILE or row[2] is not None:
                raise
            os.truncate(self.data_path(row[0]), 0)
            self._unlink(parent, name)

    def _unlink(self, parent: int, name: str) -> None:
        with self._lock:
            with self._tx() as db:
                row = self._child(db, parent, name)
                if row is None:
                    raise FsError(errno.ENOENT)
                if row[1] == DIR:
                    raise FsError(errno.EISDIR)
                db.execute("DELETE FROM node WHERE ino=?", (row[0],))
                self._forget_files(db, [row[0]])
            if self.ns is not None:
                self.ns.removed(parent, name, row[0])
        _remove(self.data_path(row[0]))  # open descriptors keep reading it, as POSIX says

    def rmdir(self, parent: int, name: str) -> None:
        with self._lock:
            with self._tx() as db:
                row = self._child(db, parent, name)
                if row is None:
                    raise FsError(errno.ENOENT)
                if row[1] != DIR:
                    raise FsError(errno.ENOTDIR)
                self._materialize(db, row[0])
                if db.execute("SELECT 1 FROM node WHERE parent=? LIMIT 1", (row[0],)).fetchone():
                    raise FsError(errno.ENOTEMPTY)
                db.execute("DELETE FROM node WHERE ino=?", (row[0],))
            if self.ns is not None:
                self.ns.removed(parent, name, row[0])

    def rename(self, parent: int, name: str, new_parent: int, new_name: str, noreplace: bool = False) -> int | None:
        """Moves an entry; returns the inode it replaced, if any."""
        check_entry_name(new_name)
        replaced = None
        with self._lock:
            with self._tx() as db:
                src = self._child(db, parent, name)
                if src is None:
                    raise FsError(errno.ENOENT)
                self._materialize(db, new_parent)
                if src[1] == DIR and self._is_ancestor(db, src[0], new_parent):
                    raise FsError(errno.EINVAL, "cannot move a folder into itself")
                dst = self._child(db, new_parent, new_name)
                if dst is not None:
                    if dst[0] == src[0]:
                        return None
                    if noreplace:
                        raise FsError(errno.EEXIST)
                    if dst[1] == DIR:
                        if src[1] != DIR:
                            raise FsError(errno.EISDIR)
                        self._materialize(db, dst[0])
                        if db.execute("SELECT 1 FROM node WHERE parent=? LIMIT 1", (dst[0],)).fetchone():
                            raise FsError(errno.ENOTEMPTY)
                    elif src[1] == DIR:
                        raise FsError(errno.ENOTDIR)
                    db.execute("DELETE FROM node WHERE ino=?", (dst[0],))
                    self._forget_files(db, [dst[0]])
                    replaced = dst[0]
                db.execute("UPDATE node SET parent=?, name=? WHERE ino=?", (new_parent, new_name, src[0]))
            if self.ns is not None:
                self.ns.moved(parent, name, new_parent, new_name, src[0], replaced)
        if replaced is not None:
            _remove(self.data_path(replaced))
        return replaced

    def _is_ancestor(self, db, ancestor: int, ino: int) -> bool:
        while ino and ino != ROOT:
            if ino == ancestor:
                return True
            ino = db.execute("SELECT parent FROM node WHERE ino=?", (ino,)).fetchone()[0]
        return ino == ancestor

    def setattr(self, ino: int, mode: int | None = None, mtime_ns: int | None = None) -> Attr:
        with self._lock:
            with self._tx() as db:
                row = self._row(ino)
                if mode is not None:
                    db.execute("UPDATE node SET mode=? WHERE ino=?",
                               (mode & 0o7777 if row[1] == DIR else _file_mode(mode), ino))
                if mtime_ns is not None:
                    if row[1] == FILE and row[5] is None:
                        os.utime(self.data_path(ino), ns=(mtime_ns, mtime_ns))
                        db.execute("UPDATE journal SET mtime_ns=? WHERE ino=?", (mtime_ns, ino))
                    else:
                        db.execute("UPDATE node SET mtime_ns=? WHERE ino=?", (mtime_ns, ino))
                row = self._row(ino)
            return self._attr(row)  # after the commit: into the cache too

    def make_local(self, ino: int, fill: Callable[[str], None] | None) -> None:
        """Turns a base file into a locally written one: `fill(tmp_path)` writes its current
        bytes (None: it starts empty, as for O_TRUNC). Atomic: the row changes only after."""
        with self._lock:
            row = self._row(ino)
            if row[1] != FILE:
                raise FsError(errno.EISDIR)
            if row[5] is None:
                return
            tmp = self.data_path(ino) + ".fill"
            _create_empty(tmp)
            if fill is not None:
                fill(tmp)
            os.utime(tmp, ns=(row[4], row[4]))
            _fsync_path(tmp)
            os.rename(tmp, self.data_path(ino))
            with self._tx() as db:
                db.execute("UPDATE node SET origin=NULL WHERE ino=?", (ino,))
            self.writes.changed(ino)
            self._ns_written(ino)

    # -- committing -------------------------------------------------------------------------
    def note_committed(self, version: str) -> None:
        """Remembers, beside the draft, what it became: a commit rerun after a crash that
        already removed the draft can still say which version was made."""
        note = os.path.join(os.path.dirname(self.path), f".committed-{self.info.name}")
        try:
            with open(note + ".tmp", "w") as f:
                f.write(version)
            os.replace(note + ".tmp", note)
        except OSError as e:  # a convenience only: the version exists whatever happens here
            logging.getLogger(__name__).warning("could not note that %s became %s: %s", self.info, version, e)

    def snapshot(self) -> tuple[list[FileSource], list]:
        """What a commit needs: local files to hash, and base entries carried over unread
        (Entry objects, and CarriedRanges for whole folders)."""
        files: list[FileSource] = []
        carried: list = []
        with self._tx() as db:
            rows = db.execute("SELECT ino, parent, name, kind, mode, origin FROM node").fetchall()
        children: dict[int, list] = {}
        for r in rows:
            children.setdefault(r[1], []).append(r)
        root = next((r for r in rows if r[0] == ROOT), None)

        def walk(row, path):
            ino, _, _, kind, mode, origin = row
            if kind == DIR:
                if origin is not None:  # never listed: the whole base folder, by the column
                    r = self.base.under(origin)
                    if len(r):
                        carried.append(CarriedRange(self.base, r.start, r.stop, origin, path))
                for child in children.get(ino, ()):
                    walk(child, f"{path}/{child[2]}" if path else child[2])
            elif origin is not None:
                e = self._origin_entry(origin)
                if e is not None:
                    e.path, e.mode = path, mode
                    carried.append(e)
            else:
                files.append(self._local_source(path, ino, mode))

        if root is not None:
            walk(root, "")
        return files, carried

    def _local_source(self, path: str, ino: int, mode: int) -> FileSource:
        """A locally written file; with its digests if they were computed as it was written
        (and `unchanged` saying whether it has been written to since)."""
        local = self.data_path(ino)
        src = FileSource(path, local, mode)
        try:
            size = os.stat(local).st_size
        except FileNotFoundError:
            return src
        known = self.writes.digest(ino, size)
        if known is not None:
            src.hashed, gen = known
            src.unchanged = lambda: self.writes.generation(ino) == gen
        return src


def check_entry_name(name: str) -> None:
    if name in ("", ".", "..") or "/" in name or "\x00" in name or "\n" in name:
        raise FsError(errno.EINVAL, f"invalid name {name!r}")
    if len(name.encode()) > 255:
        raise FsError(errno.ENAMETOOLONG)


def _file_mode(mode: int) -> int:
    return mode & 0o777


def _create_empty(path: str) -> None:
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    os.close(fd)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _syncfs(path: str) -> None:
    """Flushes the file system holding `path` (rare paths only: it flushes everything there)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if ctypes.CDLL(None, use_errno=True).syncfs(fd) != 0:
            os.sync()
    except (OSError, AttributeError):
        os.sync()
    finally:
        os.close(fd)


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DraftStore:
    """Every draft on this host, under CACHE/drafts/<project>/<artifact>/<draft>/.

    A project or artifact folder with no version yet ("pending", made by mkdir)
    is just its folder here.
    """

    def __init__(self, cache_dir: str, durable: bool = True):
        self.durable = durable
        self.root = os.path.join(cache_dir, DRAFTS_FOLDER)
        os.makedirs(self.root, exist_ok=True)
        for n in _listdir(self.root):
            if n.startswith(".discarded-"):  # a removal that a crash cut short
                shutil.rmtree(os.path.join(self.root, n), ignore_errors=True)

    def _dir(self, a: ArtifactName, name: str | None = None) -> str:
        parts = [self.root, a.project, a.name] + ([name] if name else [])
        return os.path.join(*parts)

    def pending_projects(self) -> list[str]:
        return sorted(p for p in _listdir(self.root) if is_valid_name(p))

    def pending_artifacts(self, project: str) -> list[str]:
        return sorted(a for a in _listdir(os.path.join(self.root, project)) if is_valid_name(a))

    def add_pending(self, project: str, artifact: str | None = None) -> None:
        check_name(project, "project")
        if artifact is not None:
            check_name(artifact, "artifact name")
        os.makedirs(os.path.join(self.root, project, *([artifact] if artifact else [])), exist_ok=True)

    def remove_pending(self, project: str, artifact: str | None = None) -> bool:
        path = os.path.join(self.root, project, *([artifact] if artifact else []))
        try:
            os.rmdir(path)
            return True
        except OSError:
            return False

    def names(self, a: ArtifactName) -> list[str]:
        d = self._dir(a)
        return sorted(n for n in _listdir(d) if is_valid_name(n) and os.path.exists(os.path.join(d, n, "draft.json")))

    def exists(self, a: ArtifactName, name: str) -> bool:
        return os.path.exists(os.path.join(self._dir(a, name), "draft.json"))

    def create(self, a: ArtifactName, name: str, base: int | None, base_manifest: str | None,
               type_: str | None, hold: str | None = None) -> DraftInfo:
        """Atomically makes an empty draft folder (a temp folder renamed into place)."""
        check_name(name, "draft name")
        final = self._dir(a, name)
        if os.path.exists(final):
            raise FsError(errno.EEXIST, f"draft {a}/drafts/{name} exists already")
        os.makedirs(self._dir(a), exist_ok=True)
        tmp = final + f".creating-{os.getpid()}"
        os.makedirs(os.path.join(tmp, "data"), exist_ok=True)
        info = DraftInfo(a.project, a.name, name, base, base_manifest, type_, time.time(), hold)
        with open(os.path.join(tmp, "draft.json"), "w") as f:
            json.dump(asdict(info), f)
            f.flush()
            os.fsync(f.fileno())
        db = sqlite3.connect(os.path.join(tmp, "tree.sqlite"), isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(_SCHEMA)
        db.execute("INSERT INTO node(ino, parent, name, kind, mode, mtime_ns, origin) VALUES (?,?,?,?,?,?,?)",
                   (ROOT, 0, "", DIR, 0o755, time.time_ns(), "" if base_manifest else None))
        db.execute("INSERT INTO meta(key, value) VALUES ('boot', ?)", (boot_id(),))
        db.close()
        try:
            os.rename(tmp, final)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise FsError(errno.EEXIST, f"draft {a}/drafts/{name} exists already") from None
        return info

    def open(self, a: ArtifactName, name: str, load_manifest: Callable[[str], Manifest],
             cache_namespace: bool = False) -> Draft:
        path = self._dir(a, name)
        if not self.exists(a, name):
            raise NotFound(f"no draft {a}/drafts/{name}")
        with open(os.path.join(path, "draft.json")) as f:
            try:
                base_digest = json.load(f).get("base_manifest")
            except ValueError:
                raise InvalidInput(f"draft {path} is damaged (draft.json)") from None
        return Draft(path, load_manifest(base_digest) if base_digest else None, self.durable, cache_namespace)

    def info(self, a: ArtifactName, name: str) -> DraftInfo | None:
        try:
            with open(os.path.join(self._dir(a, name), "draft.json")) as f:
                return DraftInfo(**json.load(f))
        except (OSError, ValueError, TypeError):
            return None

    def committed_as(self, a: ArtifactName, name: str) -> str | None:
        """The version a draft of this name last became (see Draft.note_committed)."""
        try:
            with open(os.path.join(self._dir(a), f".committed-{name}")) as f:
                return f.read().strip() or None
        except OSError:
            return None

    def discard(self, a: ArtifactName, name: str, then: Callable[[], None] | None = None,
                background: bool = False) -> None:
        """Removes a draft: renamed away first, so a crash never leaves half a draft.
        `then` runs as soon as the draft is gone, before its files are deleted (slow; in a
        thread of its own if `background`: a crash leaves the renamed folder, removed at
        the next start)."""
        path = self._dir(a, name)
        trash = os.path.join(self.root, f".discarded-{a.project}-{a.name}-{name}-{time.time_ns()}")
        try:
            os.rename(path, trash)
        except FileNotFoundError:
            return
        try:
            if then is not None:
                then()
        finally:
            if background:
                threading.Thread(target=shutil.rmtree, args=(trash, True), name="artfs-discard", daemon=True).start()
            else:
                shutil.rmtree(trash, ignore_errors=True)


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return []

