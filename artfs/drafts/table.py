"""A draft's SQLite table: transactions, rows, attributes, lazily listed base folders.

Files and folders from the base version are rows that point back into the
base manifest (`origin`), so nothing is copied until it is modified; a folder
lists its base children into the table only when first looked into, so a
draft of a million-file version costs nothing until used.

A reference added to a draft (`add_reference`) is a file row whose `origin` is
REF_ORIGIN followed by the encoded entry (URI, pin, size) instead of a base
path: it reads, renames and commits like an unmodified base file, and is never
copied. (A manifest path never starts with '/', so the two cannot be confused.)
"""

from __future__ import annotations

import base64
import errno
import json
import logging
import os
import sqlite3
import threading
from contextlib import contextmanager

import msgpack

from artfs.drafts.files import Reserve, WouldBlock, WriteTracker
from artfs.drafts.info import ADDED_COLUMNS, ADDED_INDEX, ADDED_REMOVED, DraftInfo
from artfs.drafts.namespace import (
    DIR,
    FILE,
    GEN_FILE,
    NS_DIR_LIMIT,
    Attr,
    NamespaceCache,
)
from artfs.errors import FsError, NoSpace
from artfs.store.manifest import Entry
from artfs.store.shards import AnyManifest

REF_ORIGIN = "/ref:"  # origin of a file row that is a reference added to the draft
ROW = "ino, kind, mode, size, mtime_ns, origin, ctime_ns, atime_ns"  # what _attr takes


class DraftTable:
    def __init__(self, path: str, base: AnyManifest | None, durable: bool = False, cache_namespace: bool = False):
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
        self._quick_db: sqlite3.Connection | None = None
        # NORMAL by default: a change survives the process dying, and reaches the disk with
        # the next synchronous (FULL) transaction, which flushes every frame before it.
        # Namespace changes are FULL only with sync-on-close (`durable`); else at the next fsync.
        self.db.execute("PRAGMA synchronous=NORMAL")
        self._synchronous = False
        self.durable = durable
        self.writes = WriteTracker()
        self._listed: set[int] = set()  # folders whose base children are in the table already
        self._tx_listed: list[int] = []  # ... once the transaction listing them commits
        self.ns = NamespaceCache(os.path.join(path, GEN_FILE)) if cache_namespace else None
        self.reserve: Reserve | None = None  # given by the DraftStore (see files.Reserve)
        self._add_columns()

    def no_space(self) -> NoSpace:
        """What a change that cannot be stored raises: the one line the log shows names the
        cache folder whose disk is full (CACHE/drafts/<project>/<artifact>/<draft>)."""
        cache = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(self.path))))
        return NoSpace(
            f"the disk holding the cache {cache} is full: drafts there cannot store more "
            "(delete files in drafts, or free space on that disk)"
        )

    def _add_columns(self) -> None:
        """A draft made by an older artfs gets the columns added since (see info.ADDED_COLUMNS)."""
        try:
            with self._lock:
                have = {r[1] for r in self.db.execute("PRAGMA table_info(node)")}
                for name, decl in ADDED_COLUMNS.items():
                    if have and name not in have:
                        self.db.execute(f"ALTER TABLE node ADD COLUMN {name} {decl}")
                if have and self.db.execute("SELECT 1 FROM sqlite_master WHERE name='node_kind'").fetchone() is None:
                    self.db.execute(ADDED_INDEX)
                if have:
                    self.db.execute(ADDED_REMOVED)
        except sqlite3.OperationalError as e:  # locked by its owner: it adds them
            logging.getLogger(__name__).warning("draft %s: columns not added: %s", self.info, e)

    def close(self) -> None:
        with self._lock:
            self.db.close()
            if self._quick_db is not None:
                self._quick_db.close()
            if self.ns is not None:
                self.ns.close()

    # -- transactions ------------------------------------------------------------------
    @contextmanager
    def _tx(self, sync: bool | None = None, wait: bool = True):
        """A write transaction; `sync`: flushed to disk at commit (default: if durable).
        `wait` False (with sync False): WouldBlock instead of waiting for another process's
        transaction, on a second connection whose busy timeout is 0."""
        sync = self.durable if sync is None else sync
        with self._lock:
            db = self.db if wait or sync else self._quick()
            try:
                if db is self.db and sync != self._synchronous:
                    db.execute("PRAGMA synchronous=" + ("FULL" if sync else "NORMAL"))
                    self._synchronous = sync
                self._tx_listed = []
                try:
                    db.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError as e:
                    if db is not self.db and ("locked" in str(e) or "busy" in str(e)):
                        raise WouldBlock() from None
                    raise
                self._ns_check()
                changes = db.total_changes
                yield db
                db.execute("COMMIT")
                self._listed.update(self._tx_listed)
                if self.ns is None and db.total_changes != changes:
                    self._announce()
            except sqlite3.OperationalError as e:
                db.execute("ROLLBACK") if db.in_transaction else None
                if "full" in str(e):
                    raise self.no_space() from None
                raise
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    def _quick(self) -> sqlite3.Connection:
        """The connection of transactions that must not wait (see _tx)."""
        if self._quick_db is None:
            db = sqlite3.connect(os.path.join(self.path, "tree.sqlite"), check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA busy_timeout=0")
            db.execute("PRAGMA synchronous=NORMAL")
            self._quick_db = db
        return self._quick_db

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

    def _ns_local(self, ino: int, mode: int, ctime_ns: int = 0) -> Attr | None:
        """A local file's attributes, from its data file (its size and times: writes and
        utime change them there; a chmod only the row's ctime); kept in the cache if no
        write raced with reading them. None if the data file is gone."""
        gen = self.writes.generation(ino)
        try:
            st = os.stat(self.data_path(ino))
        except FileNotFoundError:
            return None
        attr = Attr(ino, FILE, mode, st.st_size, st.st_mtime_ns, max(st.st_ctime_ns, ctime_ns), st.st_atime_ns)
        if self.ns is not None:
            self.ns.put_local(attr, gen, self.writes.generation)
        return attr

    def _ns_fill(self, parent: int) -> None:
        """Under the lock, `parent` listed: its children into the cache, if not there yet."""
        ns = self.ns
        if ns is None or parent in ns.dirs or parent in ns.big or parent not in self._listed:
            return
        rows = self.db.execute(
            f"SELECT name, {ROW} FROM node WHERE parent=? LIMIT ?", (parent, NS_DIR_LIMIT + 1)
        ).fetchall()
        self._ns_load(parent, rows)

    def _ns_load(self, parent: int, rows) -> None:
        """Under the lock: a listed folder's children (rows: name + ROW) into the cache, with
        the attributes of its folders and base files."""
        if self.ns is None:
            return
        if len(rows) > NS_DIR_LIMIT:
            self.ns.too_big(parent)
            return
        attrs = [self._make_attr(r[1:]) for r in rows if r[2] == DIR or r[6] is not None]
        self.ns.load_dir(parent, {r[0]: r[1] for r in rows}, [a for a in attrs if a is not None])

    def _ns_written(self, ino: int) -> None:
        """After a local file changed: its cached size and time are no longer right."""
        if self.ns is not None:
            self.ns.drop(ino)

    def _row(self, ino: int, db: sqlite3.Connection | None = None):
        row = (db or self.db).execute(f"SELECT {ROW} FROM node WHERE ino=?", (ino,)).fetchone()
        if row is None:
            raise FsError(errno.ENOENT)
        return row

    def data_path(self, ino: int) -> str:
        return os.path.join(self.data_dir, str(ino))

    def _attr(self, row) -> Attr:
        """Under the lock (it may fill the cache): a row's (ROW) attributes."""
        attr = self._make_attr(row)
        if attr is None:  # a local file whose data file is gone
            return Attr(row[0], row[1], row[2], 0, row[4], row[6], row[7])
        if self.ns is not None and not (row[1] == FILE and row[5] is None):
            self.ns.put(attr)
        return attr

    def _make_attr(self, row) -> Attr | None:
        ino, kind, mode, size, mtime_ns, origin, ctime_ns, atime_ns = row
        if kind == FILE and origin is None:
            return self._ns_local(ino, mode, ctime_ns)
        nlink = 2 + self._subdirs(ino, origin) if kind == DIR else 1
        return Attr(ino, kind, mode, size, mtime_ns, ctime_ns, atime_ns, nlink)

    def _subdirs(self, ino: int, origin: str | None) -> int:
        """How many folders a folder holds (its link count is 2 more, as on ext4)."""
        if origin is None or origin.startswith(REF_ORIGIN):
            return self.db.execute("SELECT count(*) FROM node WHERE parent=? AND kind=?", (ino, DIR)).fetchone()[0]
        return self._base().subfolder_count(origin)

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
        m = self._base()
        # Modes and times as the base version keeps them (older manifests keep no times:
        # then the draft's creation, as a version's folder shows its own).
        created = int(self.info.created * 1e9)
        rows = []
        for name, i in m.children(origin):
            child = f"{origin}/{name}" if origin else name
            if i is None:
                f = m.folder(child)
                mode, mtime_ns = (f.mode, f.mtime_ns or created) if f is not None else (0o755, created)
                rows.append((ino, name, DIR, mode & 0o7777, 0, mtime_ns, child))
            else:
                size, mode, mtime_ns = m.stat(i)
                rows.append((ino, name, FILE, mode, size, mtime_ns or created, child))
        db.executemany(
            "INSERT INTO node(parent, name, kind, mode, size, mtime_ns, origin) VALUES (?,?,?,?,?,?,?)", rows
        )
        db.execute("UPDATE node SET origin=NULL WHERE ino=?", (ino,))
        root = m.folder("") if origin == "" else None
        if root is not None and root.mtime_ns:
            db.execute("UPDATE node SET mode=?, mtime_ns=? WHERE ino=?", (root.mode, root.mtime_ns, ino))
        self._tx_listed.append(ino)

    def _child(self, db, parent: int, name: str):
        self._materialize(db, parent)
        return db.execute(f"SELECT {ROW} FROM node WHERE parent=? AND name=?", (parent, name)).fetchone()

    @staticmethod
    def _touch(db, ino: int, now_ns: int) -> None:
        """A folder whose entries changed: mtime and ctime now, as ext4 sets them."""
        db.execute("UPDATE node SET mtime_ns=?, ctime_ns=? WHERE ino=?", (now_ns, now_ns, ino))

    # -- reading the namespace ----------------------------------------------------------
    def lookup(self, parent: int, name: str) -> Attr:
        with self._lock:
            self._ns_check()
            if parent in self._listed:  # a plain read: no write transaction
                row = self.db.execute(f"SELECT {ROW} FROM node WHERE parent=? AND name=?", (parent, name)).fetchone()
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
                rows = db.execute(f"SELECT name, {ROW} FROM node WHERE parent=? ORDER BY name", (ino,)).fetchall()
            if self.ns is not None and ino not in self.ns.dirs:
                self._ns_load(ino, rows)
            return [(r[0], self._attr(r[1:])) for r in rows]

    def base_entry(self, ino: int) -> Entry | None:
        """The base version's entry whose bytes this file still has, or None if written locally."""
        with self._lock:
            row = self._row(ino)
        kind, origin = row[1], row[5]
        if kind != FILE or origin is None:
            return None
        return self._origin_entry(origin)

    def _origin_entry(self, origin: str) -> Entry | None:
        if origin.startswith(REF_ORIGIN):
            d = msgpack.unpackb(base64.b64decode(origin[len(REF_ORIGIN) :]), raw=False)
            return Entry(d["path"], d["size"], d["digest"], d["mode"], ref=d["ref"])
        return self._base().get(origin)

    def _base(self) -> AnyManifest:
        """The base manifest, which a row with an origin (other than a reference) implies."""
        if self.base is None:
            raise FsError(errno.EIO, f"draft {self.info}: a row points into a base it does not have")
        return self.base
