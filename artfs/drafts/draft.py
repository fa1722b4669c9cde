"""Drafts: mutable working copies of a version, kept on local disk until committed.

A draft is a folder holding `draft.json` (artifact, base version), a SQLite
namespace `tree.sqlite` and `data/<ino>` files for content written locally.
The layers of a Draft, each a module of this package: namespace.py (inodes,
attributes, the mount's in-memory cache of them), table.py (the SQLite table
and lazily listed base folders), staging.py (local files: durable close,
journal, copy-up), and here the changes a person makes and what a commit
takes. store.py keeps every draft of a host.

This package knows nothing of FUSE; errors are FsError carrying an errno.
"""

from __future__ import annotations

import base64
import errno
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from typing import TypeVar

import msgpack

from artfs.content.carry import CarriedRange
from artfs.drafts.files import WouldBlock, remove_file
from artfs.drafts.namespace import DIR, FILE, ROOT, Attr, check_entry_name, file_mode
from artfs.drafts.staging import StagedDraft
from artfs.drafts.table import REF_ORIGIN
from artfs.errors import ArtfsError, FsError, InvalidInput
from artfs.names import normalize_path
from artfs.store.manifest import Entry, Folder
from artfs.store.shards import AnyManifest, ShardedManifest
from artfs.versions.publish import SMALL_LIMIT, FileSource, SourceList
from artfs.versions.reshard import RemovedPaths, ShardPatch


T = TypeVar("T")


class Draft(StagedDraft):
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
            remove_file(self.data_path(old))
        return inos

    def _add_reference(self, db, path: str, entry: Entry, now: int) -> tuple[int, int | None]:
        if entry.ref is None:
            raise InvalidInput(f"{path}: not a reference")
        parts = normalize_path(path).split("/")
        for name in parts:
            check_entry_name(name)
        encoded = base64.b64encode(
            msgpack.packb(
                {"path": entry.path, "size": entry.size, "digest": entry.digest, "mode": entry.mode, "ref": entry.ref},
                use_bin_type=True,
            )
        ).decode()
        parent = ROOT
        for name in parts[:-1]:
            row = self._child(db, parent, name)
            if row is None:
                parent = db.execute(
                    "INSERT INTO node(parent, name, kind, mode, mtime_ns, ctime_ns) VALUES (?,?,?,?,?,?)",
                    (parent, name, DIR, 0o755, now, now),
                ).lastrowid
            elif row[1] != DIR:
                raise FsError(errno.ENOTDIR, f"cannot add {path} to draft {self.info}: {name} is a file")
            else:
                parent = row[0]
        row = self._child(db, parent, parts[-1])
        if row is not None:
            if row[1] == DIR:
                raise FsError(errno.EISDIR, f"cannot add {path} to draft {self.info}: it is a folder")
            db.execute("DELETE FROM node WHERE ino=?", (row[0],))
        ino = db.execute(
            "INSERT INTO node(parent, name, kind, mode, size, mtime_ns, origin) VALUES (?,?,?,?,?,?,?)",
            (parent, parts[-1], FILE, file_mode(entry.mode), max(entry.size, 0), now, REF_ORIGIN + encoded),
        ).lastrowid
        return ino, None if row is None else row[0]

    # -- changing the namespace ----------------------------------------------------------
    def _check_new(self, db, parent: int, name: str) -> None:
        check_entry_name(name)
        if self._child(db, parent, name) is not None:
            raise FsError(errno.EEXIST)

    def mkdir(self, parent: int, name: str, mode: int) -> Attr:
        now = time.time_ns()
        with self._lock:
            with self._tx() as db:
                self._check_new(db, parent, name)
                cur = db.execute(
                    "INSERT INTO node(parent, name, kind, mode, mtime_ns, ctime_ns, atime_ns) VALUES (?,?,?,?,?,?,?)",
                    (parent, name, DIR, mode & 0o7777, now, now, now),
                )
                self._touch(db, parent, now)
                ino = cur.lastrowid
                self._tx_listed.append(ino)  # new: no base children to list
            attr = Attr(ino, DIR, mode & 0o7777, 0, now, now, now, 2)
            if self.ns is not None:
                self.ns.added(parent, name, attr, attr.ino, new_dir=True)
                self.ns.touched(parent, now, subdirs=1)
            return attr

    def create(self, parent: int, name: str, mode: int) -> Attr:
        attr, fd = self.create_open(parent, name, mode)
        os.close(fd)
        return attr

    def create_open(self, parent: int, name: str, mode: int, wait: bool = True) -> tuple[Attr, int]:
        """A new empty file written locally, and a read-write descriptor on it: all that
        FUSE's create needs, in one call. The data file exists before the row does; the row
        is not flushed to disk here but when the file is closed (close_file). `wait` False
        (the mount's trio thread): WouldBlock rather than wait for a lock."""
        fd = None
        if not wait and parent not in self._listed:  # listing a base folder first: too long
            raise WouldBlock()
        if not self._lock.acquire(blocking=wait):
            raise WouldBlock()
        try:
            with self._lock:
                with self._tx(sync=False, wait=wait) as db:
                    check_entry_name(name)
                    self._materialize(db, parent)
                    now = time.time_ns()
                    try:  # (UNIQUE(parent, name) says whether it exists: no SELECT first)
                        ino = db.execute(
                            "INSERT INTO node(parent, name, kind, mode, mtime_ns) VALUES (?,?,?,?,?)",
                            (parent, name, FILE, file_mode(mode), now),
                        ).lastrowid
                    except sqlite3.IntegrityError:
                        raise FsError(errno.EEXIST) from None
                    self._touch(db, parent, now)
                    try:
                        fd = os.open(self.data_path(ino), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
                    except OSError as e:
                        if e.errno in (errno.ENOSPC, errno.EDQUOT):
                            raise self.no_space() from None
                        raise
                    st = os.fstat(fd)
                self.writes.start(ino)
                attr = Attr(ino, FILE, file_mode(mode), 0, st.st_mtime_ns, st.st_ctime_ns, st.st_atime_ns)
                if self.ns is not None:
                    self.ns.added(parent, name, attr, ino)
                    self.ns.touched(parent, now)
        except BaseException:
            if fd is not None:
                os.close(fd)
            raise
        finally:
            self._lock.release()
        return attr, fd

    def _freeing(self, change: Callable[[], T]) -> T:
        """Runs a change that frees space, or moves things, and so must work on a full disk:
        if the disk is full, once more after giving up the reserve (files.Reserve), which
        is taken again as soon as there is room."""
        try:
            result = change()
        except ArtfsError as e:
            if e.errno != errno.ENOSPC or self.reserve is None or not self.reserve.release():
                raise
            logging.getLogger(__name__).warning(
                "draft %s: %s; the reserve was given up so that removing files still works", self.info, e
            )
            result = change()
        if self.reserve is not None:
            self.reserve.refill()
        return result

    def unlink(self, parent: int, name: str) -> None:
        self._freeing(lambda: self._unlink_or_shrink(parent, name))

    def _unlink_or_shrink(self, parent: int, name: str) -> None:
        try:
            self._unlink(parent, name)
        except ArtfsError as e:
            if e.errno != errno.ENOSPC:
                raise
            # The disk is full and recording the removal needs a little space: the file is
            # going away, so its own bytes make that room (else nothing in a full draft
            # could be deleted to free space). Open descriptors then read it as empty.
            with self._lock:
                row = self.db.execute(
                    "SELECT ino, kind, origin FROM node WHERE parent=? AND name=?", (parent, name)
                ).fetchone()
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
                self._note_removed(db, parent, name, False)
                db.execute("DELETE FROM node WHERE ino=?", (row[0],))
                self._forget_files(db, [row[0]])
                now = time.time_ns()
                self._touch(db, parent, now)
            if self.ns is not None:
                self.ns.removed(parent, name, row[0])
                self.ns.touched(parent, now)
        remove_file(self.data_path(row[0]))  # open descriptors keep reading it, as POSIX says

    def rmdir(self, parent: int, name: str) -> None:
        self._freeing(lambda: self._rmdir(parent, name))

    def _rmdir(self, parent: int, name: str) -> None:
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
                self._note_removed(db, parent, name, True)
                db.execute("DELETE FROM node WHERE ino=?", (row[0],))
                now = time.time_ns()
                self._touch(db, parent, now)
            if self.ns is not None:
                self.ns.removed(parent, name, row[0])
                self.ns.touched(parent, now, subdirs=-1)

    def rename(self, parent: int, name: str, new_parent: int, new_name: str, noreplace: bool = False) -> int | None:
        """Moves an entry; returns the inode it replaced, if any."""
        return self._freeing(lambda: self._rename(parent, name, new_parent, new_name, noreplace))

    def _rename(self, parent: int, name: str, new_parent: int, new_name: str, noreplace: bool) -> int | None:
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
                    self._note_removed(db, new_parent, new_name, dst[1] == DIR)
                    db.execute("DELETE FROM node WHERE ino=?", (dst[0],))
                    self._forget_files(db, [dst[0]])
                    replaced = dst[0]
                self._note_removed(db, parent, name, src[1] == DIR)
                now = time.time_ns()
                db.execute(
                    "UPDATE node SET parent=?, name=?, ctime_ns=? WHERE ino=?", (new_parent, new_name, now, src[0])
                )
                self._touch(db, parent, now)
                self._touch(db, new_parent, now)
            if self.ns is not None:
                self.ns.moved(parent, name, new_parent, new_name, src[0], replaced)
                self.ns.drop(src[0])  # its ctime
                moved_dir = src[1] == DIR
                lost_dir = replaced is not None and dst is not None and dst[1] == DIR
                if new_parent == parent:
                    self.ns.touched(parent, now, subdirs=-1 if lost_dir else 0)
                else:
                    self.ns.touched(parent, now, subdirs=-1 if moved_dir else 0)
                    self.ns.touched(new_parent, now, subdirs=(1 if moved_dir else 0) - (1 if lost_dir else 0))
        if replaced is not None:
            remove_file(self.data_path(replaced))
        return replaced

    def _note_removed(self, db, parent: int, name: str, folder: bool) -> None:
        """Logs a path leaving the tree (with everything below it, for a folder), for a commit
        that rewrites only the shards of a sharded base that changed."""
        if self.base is None or not self.base.sharded:
            return
        path = [name]
        while parent != ROOT:
            parent, name = db.execute("SELECT parent, name FROM node WHERE ino=?", (parent,)).fetchone()
            path.append(name)
        db.execute("INSERT OR REPLACE INTO removed(path, dir) VALUES (?, ?)", ("/".join(reversed(path)), int(folder)))

    def _is_ancestor(self, db, ancestor: int, ino: int) -> bool:
        while ino and ino != ROOT:
            if ino == ancestor:
                return True
            ino = db.execute("SELECT parent FROM node WHERE ino=?", (ino,)).fetchone()[0]
        return ino == ancestor

    def setattr(
        self,
        ino: int,
        mode: int | None = None,
        mtime_ns: int | None = None,
        atime_ns: int | None = None,
        wait: bool = True,
    ) -> Attr:
        """chmod and utime; the ctime moves to now, as on ext4 (a local file's data file
        keeps its size and times; its row the mode and the ctime of a chmod). `wait` False
        (the mount's trio thread): WouldBlock rather than wait for a lock or a flush."""
        if not wait and self.durable:
            raise WouldBlock()
        if not self._lock.acquire(blocking=wait):
            raise WouldBlock()
        try:
            with self._tx(wait=wait) as db:
                row = self._row(ino, db)
                db.execute("UPDATE node SET ctime_ns=? WHERE ino=?", (time.time_ns(), ino))
                if mode is not None:
                    db.execute(
                        "UPDATE node SET mode=? WHERE ino=?", (mode & 0o7777 if row[1] == DIR else file_mode(mode), ino)
                    )
                if mtime_ns is not None or atime_ns is not None:
                    if row[1] == FILE and row[5] is None:
                        path = self.data_path(ino)
                        st = os.stat(path)
                        mtime = st.st_mtime_ns if mtime_ns is None else mtime_ns
                        os.utime(path, ns=(st.st_atime_ns if atime_ns is None else atime_ns, mtime))
                        db.execute("UPDATE journal SET mtime_ns=? WHERE ino=?", (mtime, ino))
                    else:
                        if mtime_ns is not None:
                            db.execute("UPDATE node SET mtime_ns=? WHERE ino=?", (mtime_ns, ino))
                        if atime_ns is not None:
                            db.execute("UPDATE node SET atime_ns=? WHERE ino=?", (atime_ns, ino))
                row = self._row(ino, db)
            return self._attr(row)  # after the commit: into the cache too
        finally:
            self._lock.release()

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

    def snapshot(self) -> tuple[SourceList, list]:
        """What a commit needs: local files to hash (with every folder, `.folders`), and base
        entries carried over unread (Entry objects, and CarriedRanges for whole folders; for a
        sharded base, one ShardPatch: only what changed)."""
        files = SourceList()
        carried: list = []
        with self._tx() as db:
            rows = db.execute("SELECT ino, parent, name, kind, mode, origin, mtime_ns, ctime_ns FROM node").fetchall()
            removed = db.execute("SELECT path, dir FROM removed").fetchall() if self.base and self.base.sharded else []
        children: dict[int, list] = {}
        for r in rows:
            children.setdefault(r[1], []).append(r)
        root = next((r for r in rows if r[0] == ROOT), None)
        if self.base is not None and self.base.sharded:
            assert isinstance(self.base, ShardedManifest)
            return self._patch_snapshot(self.base, root, children, [(p, bool(d)) for p, d in removed])

        def walk(row, path):
            ino, _, _, kind, mode, origin, mtime_ns, _ = row
            if kind == DIR:
                files.folders.append(Folder(path, mode, mtime_ns))
                if origin is not None:  # never listed: the whole base folder, by the column
                    base = self._base()
                    r = base.under(origin)
                    if len(r):
                        carried.append(CarriedRange(base, r.start, r.stop, origin, path))
                    files.folders.extend(_folders_below(base, origin, path))
                for child in children.get(ino, ()):
                    walk(child, f"{path}/{child[2]}" if path else child[2])
            elif origin is not None:
                e = self._origin_entry(origin)
                if e is not None:
                    e.path, e.mode, e.mtime_ns = path, mode, mtime_ns
                    carried.append(e)
            else:
                files.append(self._local_source(path, ino, mode))

        if root is not None:
            walk(root, "")
        return files, carried

    def _patch_snapshot(self, base: ShardedManifest, root, children: dict, removed: list) -> tuple[SourceList, list]:
        """A commit on a sharded base: what changed (local files, carried entries moved or with
        new modes or times, folder records changed, paths removed), never what did not, so
        the commit rewrites only the shards around the changes (versions/reshard.py)."""
        files = SourceList()
        patch = ShardPatch(base, removed=removed)
        gone = RemovedPaths(removed)

        def walk(row, path):
            ino, _, _, kind, mode, origin, mtime_ns, ctime_ns = row
            base_origin = origin is not None and not origin.startswith(REF_ORIGIN)
            # Unchanged since it came from the base: same place, never touched, not put back
            # after something at its path was removed.
            in_place = base_origin and origin == path and not gone.covers(path)
            clean = in_place and not ctime_ns  # a folder's ctime is its record's, not its content's
            if kind == DIR:
                if origin is not None:
                    clean_record = clean
                else:  # listed here: its place in the base is known by its record there
                    kept = Folder(path, mode, mtime_ns)
                    clean_record = not ctime_ns and not gone.covers(path) and base.folder(path) == kept
                if not clean_record:
                    files.folders.append(Folder(path, mode, mtime_ns))
                if origin is not None and not in_place:  # never listed, moved: put in anew
                    r = base.under(origin)
                    patch.entries.extend(CarriedRange(base, r.start, r.stop, origin, path).entries())
                    patch.folders.extend(_folders_below(base, origin, path))
                    patch.files = None if patch.files is None else patch.files + len(r)
                elif origin is not None:
                    # Never listed and in place: kept as the base has it, unread. (Counting its
                    # files would read the shards of every such folder: the count is not checked.)
                    patch.files = None
                for child in children.get(ino, ()):
                    walk(child, f"{path}/{child[2]}" if path else child[2])
                return
            patch.files = None if patch.files is None else patch.files + 1
            if origin is None:
                files.append(self._local_source(path, ino, mode))
            elif not clean:
                e = self._origin_entry(origin)
                if e is not None:
                    e.path, e.mode, e.mtime_ns = path, mode, mtime_ns
                    patch.entries.append(e)

        if root is not None:
            walk(root, "")
        return files, [patch]

    def _local_source(self, path: str, ino: int, mode: int) -> FileSource:
        """A locally written file; with its digests if they were computed as it was written
        (and `unchanged` saying whether it has been written to since)."""
        local = self.data_path(ino)
        src = FileSource(path, local, mode)
        try:
            size = os.stat(local).st_size
        except FileNotFoundError:
            return src
        if size <= SMALL_LIMIT:
            return src  # (packed: the commit reads it whole anyway, and hashes what it packs)
        known = self.writes.digest(ino, size, local)
        if known is not None:
            src.hashed, src.blocks, gen = known
            src.unchanged = lambda: self.writes.generation(ino) == gen
        return src


def _folders_below(base: AnyManifest, old: str, new: str) -> list[Folder]:
    """The base's recorded folders strictly below `old`, renamed to be below `new`."""
    prefix = f"{old}/" if old else ""
    out = []
    for f in base.folders_under(old):
        if f.path and f.path.startswith(prefix):
            rest = f.path[len(prefix) :]
            out.append(Folder(f"{new}/{rest}" if new else rest, f.mode, f.mtime_ns))
    return out
