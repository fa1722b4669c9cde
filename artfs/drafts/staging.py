"""A draft's locally written files: durable as on ext4, journaled, copied up from the base.

Durability, as ext4 promises it (docs/semantics.md): bytes written and namespace
changes survive the daemon dying at once (data files are written through to
the page cache; SQLite runs in WAL mode with synchronous=NORMAL, so a
committed transaction is in the WAL file), and survive a host crash once the
file is fsynced or the draft committed. `close_file(ino, fd)`, called on
fsync (and on every close with the mount's --sync-on-close), journals a small
file's bytes into the database (or fsyncs a large one) in one synchronous
(FULL) transaction, which also flushes every namespace change before it (see
files.py). A data file's size and times are the file's own, so a write never
touches the database.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
from collections.abc import Callable

from artfs.drafts.files import (
    INLINE_WRITES,
    JOURNAL_LIMIT,
    WouldBlock,
    boot_id,
    create_empty,
    fsync_path,
    remove_file,
    syncfs,
)
from artfs.drafts.info import SCHEMA
from artfs.drafts.namespace import FILE, Attr
from artfs.drafts.table import DraftTable
from artfs.errors import FsError
from artfs.store.shards import AnyManifest


class StagedDraft(DraftTable):
    def __init__(self, path: str, base: AnyManifest | None, durable: bool = False, cache_namespace: bool = False):
        super().__init__(path, base, durable, cache_namespace)
        self._journaled: set[int] = set()  # files whose bytes the journal holds (see close_file)
        self._open_journal()

    # -- attributes of written files, without SQLite ----------------------------------
    def _ns_written(self, ino: int) -> None:
        """After a local file changed: its cached size and time are no longer right, but its
        mode and ctime are (the kernel asks for the attributes of a file it wrote to: a stat
        of the data file answers, on the mount's trio thread, see cached_attr)."""
        if self.ns is not None:
            self.ns.wrote(ino)

    def cached_attr(self, ino: int) -> Attr | None:
        a = super().cached_attr(ino)
        if a is not None or self.ns is None:
            return a
        row = self.ns.written_row(ino)
        if row is None:
            return None
        gen = self.writes.generation(ino)
        try:
            st = os.stat(self.data_path(ino))  # (its inode is cached: no disk read)
        except FileNotFoundError:  # unlinked meanwhile: the worker thread's answer
            return None
        mode, ctime_ns = row
        attr = Attr(ino, FILE, mode, st.st_size, st.st_mtime_ns, max(st.st_ctime_ns, ctime_ns), st.st_atime_ns)
        self.ns.put_local(attr, gen, self.writes.generation)
        return attr

    # -- the journal of closed small files (files.py) ----------------------------------
    def _open_journal(self) -> None:
        """Adds the journal to a draft made by an older artfs, and after a reboot restores
        the closed files a host crash may have lost. A second mount viewing the draft
        read-only may find it locked: it then leaves this to the owner."""
        try:
            with self._lock:
                if self.db.execute("SELECT 1 FROM sqlite_master WHERE name='meta'").fetchone() is None:
                    self.db.executescript(SCHEMA)
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
                create_empty(self.data_path(ino))
        if rows:
            logging.getLogger(__name__).warning(
                "draft %s: restored %d closed files after a reboot", self.info, len(rows)
            )
        syncfs(self.data_dir)  # the restored files are on disk before their copies go
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
            db.execute(
                "INSERT OR REPLACE INTO journal(ino, mtime_ns, data) SELECT ?, ?, ? "
                "WHERE EXISTS (SELECT 1 FROM node WHERE ino=? AND origin IS NULL)",
                (ino, st.st_mtime_ns, data, ino),
            )
            if self.ns is not None:
                row = db.execute("SELECT mode, ctime_ns FROM node WHERE ino=? AND origin IS NULL", (ino,)).fetchone()
                if row is not None:  # its size and times as closed, for the trio thread
                    st = os.fstat(fd)  # (after the read above, which may have moved its atime)
                    attr = Attr(
                        ino, FILE, row[0], st.st_size, st.st_mtime_ns, max(st.st_ctime_ns, row[1]), st.st_atime_ns
                    )
                    self.ns.put_local(attr, gen, self.writes.generation)
        if data is None:
            self._journaled.discard(ino)
        else:
            self._journaled.add(ino)

    def write(self, ino: int, fd: int, data: bytes, off: int, wait: bool = True) -> int:
        """pwrite into a local file. The first write after a close that journaled the file
        first makes that content durable in place (fsync), so the journal's copy is never
        restored over newer bytes. `wait` False (the mount's trio thread): WouldBlock
        instead of anything that may wait (a lock, that fsync, a write past INLINE_WRITES)."""
        if not wait and (ino in self._journaled or off + len(data) > INLINE_WRITES):
            raise WouldBlock()
        if ino in self._journaled:
            os.fsync(fd)
            with self._tx(sync=True) as db:
                db.execute("UPDATE journal SET data=NULL WHERE ino=?", (ino,))
                self._journaled.discard(ino)
        try:
            return self.writes.write(ino, fd, data, off, wait)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise self.no_space() from None
            raise
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

    def make_local(self, ino: int, fill: Callable[[str], None] | None) -> None:
        """Turns a base file into a locally written one: `fill(tmp_path)` writes its current
        bytes (None: it starts empty, as for O_TRUNC). Atomic: the row changes only after."""
        tmp = self.copy_up_begin(ino)
        if tmp is None:
            return
        try:
            if fill is not None:
                fill(tmp)
            self.copy_up_end(ino, tmp)
        except BaseException:
            remove_file(tmp)
            raise

    def copy_up_begin(self, ino: int) -> str | None:
        """The first step of turning a base file into a local one, for a caller that writes its
        bytes piece by piece (so a huge file never sits in memory whole): an empty temp file
        to write them into, then copy_up_end. None if the file is local already."""
        with self._lock:
            row = self._row(ino)
            if row[1] != FILE:
                raise FsError(errno.EISDIR)
            if row[5] is None:
                return None
            tmp = f"{self.data_path(ino)}.fill-{os.urandom(4).hex()}"  # two openers: two temps
            create_empty(tmp)
            return tmp

    def copy_up_end(self, ino: int, tmp: str) -> None:
        """`tmp` (from copy_up_begin, now holding the base bytes) becomes the file's data; if
        another copy-up won the race, `tmp` is dropped. The copy is fsynced before the row
        says so: a crash must never leave a base file's bytes lost."""
        with self._lock:
            row = self._row(ino)
            if row[5] is None:
                remove_file(tmp)
                return
            os.utime(tmp, ns=(row[4], row[4]))
            fsync_path(tmp)
            os.rename(tmp, self.data_path(ino))
            with self._tx() as db:
                db.execute("UPDATE node SET origin=NULL WHERE ino=?", (ino,))
            self.writes.changed(ino)
            self._ns_written(ino)
