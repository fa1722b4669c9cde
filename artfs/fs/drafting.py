"""Requests that change drafts, answered without FUSE. Everything outside a draft is read-only.

A mixin of `filesystem.FileSystem`, which supplies the state it uses: `tree`,
`content`, `handles`, `kernel`, `_results` (commit outcomes), `_blocking` (run
in a worker thread), `reply`, `reply_of`, `_open_stored` and `_refs`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import trio

from artfs.versions.download import copy_entry
from artfs.versions.publish import stores_blocks
from artfs.errors import ArtfsError, FsError, InvalidInput, NotSupported, ReadOnly
from artfs.drafts.draft import Draft
from artfs.drafts.early import EarlyBlocks
from artfs.drafts.files import WouldBlock
from artfs.fs.content import ContentSource
from artfs.fs.handles import Handles
from artfs.fs.kernel import Kernel
from artfs.fs.reader import OpenFile
from artfs.fs.refs import RefHandle, RefReader
from artfs.fs.replies import Opened, Reply
from artfs.fs.tree import DRAFT, DRAFTS_DIR, IN_DRAFT, PROJECT, ROOT, Attr, Node, Tree
from artfs.store.manifest import BLOCK_SIZE, Entry
from artfs.names import kernel_name as file_name
from artfs.store.registry import check_creator, check_metadata


log = logging.getLogger("artfs.fs")
T = TypeVar("T")

COMMIT_XATTR = "user.artfs.commit"


class DraftFile:
    """One open() of a locally written draft file: an OS descriptor on its data file."""

    __slots__ = ("node", "fd", "dirty")

    def __init__(self, node: Node, fd: int):
        self.node, self.fd, self.dirty = node, fd, False


def _read_only(node: Node) -> ReadOnly:
    return ReadOnly(f"{node.kind} {node.key} is read-only: write in a draft")


class DraftChanges:
    # Supplied by FileSystem, which this is a mixin of (declared for the type checker).
    tree: Tree
    content: ContentSource
    handles: Handles
    kernel: Kernel
    _results: MutableMapping[str, bytes]
    _refs: RefReader
    _early: EarlyBlocks | None = None  # large files' blocks uploaded as they are written

    if TYPE_CHECKING:

        async def _blocking(self, fn: Callable[..., T], *args: Any) -> T: ...
        def reply(self, node: Node, a: Attr | None = None) -> Reply: ...
        async def reply_of(self, node: Node) -> Reply: ...
        async def _open_stored(self, node: Node, entry: Entry) -> OpenFile | RefHandle: ...
        async def node(self, ino: int) -> Node: ...

    @staticmethod
    def _draft(node: Node) -> Draft:
        assert node.draft is not None, node  # every node in IN_DRAFT has its draft
        return node.draft

    def _in_draft(self, node: Node) -> None:
        if node.kind not in IN_DRAFT:
            raise _read_only(node)
        self.tree.drafts.check_writable()

    def _reply_new(self, parent: Node, attr) -> tuple[Node, Reply]:
        """The node and reply for an entry just made, from the attributes that made it
        (no second trip to a worker thread to read them back)."""
        child = self.tree.draft_node(parent, attr.ino)
        reply = self.reply(child, self.tree.draft_attr(child, attr))
        self.tree.remember(child)
        return child, reply

    async def mkdir(self, parent_ino: int, raw_name: bytes, mode: int) -> Reply:
        parent = self.tree.node(parent_ino)
        name = file_name(raw_name)
        kind = parent.kind
        if kind == ROOT:
            await self._blocking(self.tree.drafts.drafts.add_pending, name)
        elif kind == PROJECT:
            await self._blocking(self.tree.drafts.drafts.add_pending, parent.project, name)
        elif kind == DRAFTS_DIR:
            await self._blocking(self.tree.drafts.create, parent.artifact, name)
        else:
            self._in_draft(parent)
            attr = await self._blocking(self._draft(parent).mkdir, parent.dino, name, mode)
            return self._reply_new(parent, attr)[1]
        node = await self._blocking(self.tree.lookup, parent, name)
        reply = await self.reply_of(node)
        self.tree.remember(node)
        return reply

    async def rmdir(self, parent_ino: int, raw_name: bytes) -> None:
        parent = self.tree.node(parent_ino)
        name = file_name(raw_name)
        if parent.kind == DRAFTS_DIR:
            node = await self._blocking(self.tree.lookup, parent, name)
            if await self._blocking(self._draft(node).listdir, node.dino):
                raise FsError(errno.ENOTEMPTY)
            await self._blocking(self.tree.drafts.discard, parent.artifact, name)
            self.tree.drop(node)
            return
        if parent.kind in (ROOT, PROJECT):
            project = name if parent.kind == ROOT else parent.project
            artifact = None if parent.kind == ROOT else name
            if not await self._blocking(self.tree.drafts.drafts.remove_pending, project, artifact):
                raise _read_only(parent)
            self.tree.catalog.invalidate()
            return
        self._in_draft(parent)
        await self._blocking(self._draft(parent).rmdir, parent.dino, name)

    async def create(self, parent_ino: int, raw_name: bytes, mode: int, flags: int) -> tuple[Opened, Reply]:
        parent = self.tree.node(parent_ino)
        name = file_name(raw_name)
        self._in_draft(parent)
        # One call makes the row, the data file and the descriptor: on this thread unless it
        # would wait for a lock (a hand-off to a worker thread costs more than the call).
        draft = self._draft(parent)
        try:
            attr, fd = draft.create_open(parent.dino, name, mode, wait=False)
        except WouldBlock:
            attr, fd = await self._blocking(draft.create_open, parent.dino, name, mode)
        child, reply = self._reply_new(parent, attr)
        f = DraftFile(child, fd)
        f.dirty = True
        return Opened(self.handles.add(f)), reply

    async def _open_draft_file(self, node: Node, flags: int, writing: bool) -> Opened:
        if node.kind == DRAFT or (await self._blocking(self.tree.attr, node)).mode & 0o170000 == 0o040000:
            raise FsError(errno.EISDIR)
        draft = self._draft(node)
        base = await self._blocking(draft.base_entry, node.dino)
        if base is not None and not writing:
            stored = await self._open_stored(node, base)
            return Opened(self.handles.add(stored), direct_io=getattr(stored, "direct_io", False))
        if base is not None:
            self.tree.drafts.check_writable()
            if flags & os.O_TRUNC:
                await self._blocking(draft.make_local, node.dino, None)
            else:
                await self._copy_up(node, base)
            await self._redirect_readers(node)
        elif writing:
            self.tree.drafts.check_writable()
        mode = os.O_RDWR if writing else os.O_RDONLY
        fd = await self._blocking(draft.open_local, node.dino, mode | (flags & os.O_TRUNC))
        f = DraftFile(node, fd)
        f.dirty = writing
        return Opened(self.handles.add(f))

    async def _redirect_readers(self, node: Node) -> None:
        """A base file just became the draft's own: descriptors opened on it before read the
        base's bytes through a stored handle; from now on they read the draft's file, since every
        descriptor of a file sees the same bytes (as on ext4)."""
        for fh, handle in self.handles.items():
            if isinstance(handle, (OpenFile, RefHandle)) and handle.node.ino == node.ino:
                fd = await self._blocking(self._draft(node).open_local, node.dino, os.O_RDONLY)
                self.handles.replace(fh, DraftFile(node, fd))

    async def _copy_up(self, node: Node, entry) -> None:
        """Before a base file's first change, its verified bytes become the draft's own,
        written run by run: 16 MiB in memory at most, whatever the file's size."""
        draft = self._draft(node)
        tmp = await self._blocking(draft.copy_up_begin, node.dino)
        if tmp is None:
            return
        try:
            fd = await self._blocking(os.open, tmp, os.O_WRONLY)
            try:
                if entry.ref is not None:
                    await self._blocking(_pwrite_all, fd, await self._refs.read_all(node, entry), 0)
                else:  # from the disk cache or the store, bypassing the memory cache
                    cache = self.content.cache
                    await self._blocking(
                        copy_entry, self.content.store, entry, fd, lambda p: cache.get(p.digest, p.size)
                    )
            finally:
                os.close(fd)
            await self._blocking(draft.copy_up_end, node.dino, tmp)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        f = self.handles.get(fh)
        if not isinstance(f, DraftFile):
            raise FsError(errno.EBADF)
        f.dirty = True
        draft = self._draft(f.node)
        try:  # a small file's page-cache write on this thread (see files.INLINE_WRITES)
            n = draft.write(f.node.dino, f.fd, buf, off, wait=False)
        except WouldBlock:
            n = await self._blocking(draft.write, f.node.dino, f.fd, buf, off)
        if off + n >= BLOCK_SIZE and draft.writes.in_order(f.node.dino, off + n):
            self._early_blocks().written(draft, f.node.dino, off, n)  # uploaded while written
        return n

    def _early_blocks(self) -> EarlyBlocks:
        if self._early is None:
            self._early = EarlyBlocks(self.content.store, enabled=stores_blocks)
        return self._early

    async def flush(self, fh: int) -> None:
        """close() waits for this: with sync-on-close a closed draft file is durable across a
        host crash; otherwise nothing is done here."""
        f = self.handles.find(fh)
        if isinstance(f, DraftFile) and f.dirty and self._draft(f.node).durable:
            await self._blocking(self._draft(f.node).close_file, f.node.dino, f.fd)
            f.dirty = False

    async def fsync(self, fh: int, datasync: bool) -> None:
        f = self.handles.find(fh)
        if isinstance(f, DraftFile) and f.dirty:
            # The namespace row too: a file's creation is made durable with its data.
            await self._blocking(self._draft(f.node).close_file, f.node.dino, f.fd)
            f.dirty = False

    async def close_draft_file(self, f: DraftFile) -> None:
        try:
            if f.dirty and self._draft(f.node).durable:  # written after the last flush (mmap)
                await self._blocking(os.fsync, f.fd)
        except OSError as e:
            log.warning("fsync of %s failed: %s", f.node.key, e)
        finally:
            os.close(f.fd)

    async def unlink(self, parent_ino: int, raw_name: bytes) -> None:
        parent = self.tree.node(parent_ino)
        name = file_name(raw_name)
        self._in_draft(parent)
        await self._blocking(self._draft(parent).unlink, parent.dino, name)

    async def rename(
        self, old_parent: int, raw_old: bytes, new_parent: int, raw_new: bytes, exchange: bool, no_replace: bool
    ) -> None:
        old, new = self.tree.node(old_parent), self.tree.node(new_parent)
        name_old, name_new = file_name(raw_old), file_name(raw_new)
        self._in_draft(old)
        self._in_draft(new)
        if old.draft is not new.draft:
            raise FsError(errno.EXDEV)
        if exchange:
            raise FsError(errno.EINVAL)
        await self._blocking(self._draft(old).rename, old.dino, name_old, new.dino, name_new, no_replace)

    async def setattr(
        self, ino: int, size: int | None, mode: int | None, mtime_ns: int | None, atime_ns: int | None = None
    ) -> Reply:
        node = await self.node(ino)
        self._in_draft(node)
        draft = self._draft(node)
        try:
            if size is not None:
                base = await self._blocking(draft.base_entry, node.dino)
                if base is not None and size == 0:
                    await self._blocking(draft.make_local, node.dino, None)
                elif base is not None:
                    await self._copy_up(node, base)
                if base is not None:
                    await self._redirect_readers(node)
                await self._blocking(draft.truncate, node.dino, size)
            if mode is not None or mtime_ns is not None or atime_ns is not None:
                try:  # (cp -a, rsync: a chmod and a utime per file, on this thread when nothing waits)
                    draft.setattr(node.dino, mode, mtime_ns, atime_ns, wait=False)
                except WouldBlock:
                    await self._blocking(draft.setattr, node.dino, mode, mtime_ns, atime_ns)
        except ArtfsError as e:
            held = self.handles.held(node.ino, (DraftFile,)) if e.errno == errno.ENOENT else None
            if held is None:
                raise
            # Unlinked (or renamed over) while open: POSIX keeps it usable through its
            # descriptors (SQLite's temp files are truncated so). Its size changes there;
            # its mode and times belong to no entry of the draft any more.
            if size is not None:
                await self._blocking(os.ftruncate, held.fd, size)
        # Ownership changes (cp -a, rsync -a as root) are accepted and ignored: a version has no owners.
        return await self.reply_of(node)

    async def setxattr(self, ino: int, raw_name: bytes, value: bytes) -> None:
        node = await self.node(ino)
        if os.fsdecode(raw_name) == COMMIT_XATTR and node.kind == DRAFT:
            return await self._commit(node, value)
        if node.kind in IN_DRAFT:
            raise NotSupported("extended attributes of draft files are not kept")
        raise _read_only(node)

    async def _commit(self, node: Node, value: bytes) -> None:
        """`artfs commit` on a mounted draft: options in, outcome kept under a token."""
        try:
            options = json.loads(value)
            token = str(options.pop("token"))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise InvalidInput("malformed commit request") from None
        try:
            if options.get("metadata") is not None:
                options["metadata"] = check_metadata(options["metadata"])
            if options.get("creator") is not None:  # the committing process's run, not the daemon's
                options["creator"] = check_creator(options["creator"])
            allowed = {
                k: options.get(k) for k in ("type_", "aliases", "description", "metadata", "creator") if k in options
            }
            artifact = node.artifact
            assert artifact is not None  # a draft belongs to an artifact
            if self._early is not None:  # blocks being hashed or sent: not done twice
                early, draft = self._early, self._draft(node)
                await trio.to_thread.run_sync(lambda: early.settle(draft))
            result = await trio.to_thread.run_sync(
                lambda: self.tree.drafts.commit(artifact, node.draft_name, **allowed)
            )
        except Exception as e:  # whatever refused it, the committing terminal hears why
            reason = str(e) if isinstance(e, ArtfsError) else f"{type(e).__name__}: {e}"
            self._results[token] = json.dumps({"error": reason}).encode()
            raise
        self._results[token] = json.dumps({"version": str(result.version), "created": result.created}).encode()
        self.tree.drop(node)
        self._invalidate_after_commit(node)

    def _invalidate_after_commit(self, node: Node) -> None:
        drafts_dir = self.tree.known(("d", node.artifact))
        if drafts_dir is not None:
            self.kernel.invalidate_entry(drafts_dir.ino, node.draft_name)
        artifact = self.tree.known(("a", node.artifact))
        if artifact is not None:
            self.kernel.invalidate_entry(artifact.ino, "latest")
            self.kernel.invalidate_attr(artifact.ino)

    async def removexattr(self, ino: int, raw_name: bytes) -> None:
        node = await self.node(ino)
        if node.kind in IN_DRAFT:
            raise NotSupported("extended attributes of draft files are not kept")
        raise _read_only(node)

    def link(self, ino: int, new_parent_ino: int, raw_name: bytes) -> None:
        raise FsError(errno.EPERM, "a version has no hard links")

    def symlink(self, parent_ino: int) -> None:
        parent = self.tree.node(parent_ino)
        if parent.kind in IN_DRAFT:
            raise NotSupported("versions hold regular files only (no symlinks)")
        raise _read_only(parent)

    def mknod(self, parent_ino: int) -> None:
        parent = self.tree.node(parent_ino)
        if parent.kind in IN_DRAFT:
            raise NotSupported("versions hold regular files only (no special files)")
        raise _read_only(parent)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n
