"""The writing half of the FUSE adapter: every request that changes a draft.

A mixin of `ops.Operations`, which supplies the shared state it uses: `tree`,
`content`, `_handles` (fh -> open file), `_fh` (handle numbers), `_results`
(commit outcomes), `_blocking` (run in a worker thread), `_entry_of`,
`_open_stored`, `_held` (an open handle of a node) and `_refs`. Everything
outside a draft answers EROFS.
"""

from __future__ import annotations

import errno
import json
import logging
import os

import pyfuse3
import trio

from artfs.drafts.draft import FsError
from artfs.errors import ArtfsError, InvalidInput
from artfs.content.fetch import pieces
from artfs.store.registry import check_metadata
from artfs.fs.fuse.boundary import boundary
from artfs.fs.tree import DRAFT, DRAFTS_DIR, IN_DRAFT, PROJECT, ROOT, Node
from artfs.fs.tree import Attr as TreeAttr

log = logging.getLogger("artfs.fs.ops")

COMMIT_XATTR = "user.artfs.commit"
RESULT_XATTR = "user.artfs.result."


class DraftFile:
    """One open() of a locally written draft file: an OS descriptor on its data file."""

    __slots__ = ("node", "fd", "dirty")

    def __init__(self, node: Node, fd: int):
        self.node, self.fd, self.dirty = node, fd, False


class DraftOperations:
    def _in_draft(self, node: Node) -> None:
        if node.kind not in IN_DRAFT:
            raise pyfuse3.FUSEError(errno.EROFS)
        self.tree.drafts.check_writable()

    def _reply_new(self, parent: Node, attr) -> tuple[Node, pyfuse3.EntryAttributes]:
        """The node and reply for an entry just made, from the attributes that made it
        (no second trip to a worker thread to read them back)."""
        child = self.tree.draft_node(parent, attr.ino)
        entry = self._entry(child, TreeAttr(child.ino, attr.st_mode, attr.size, attr.mtime_ns / 1e9,
                                            2 if attr.is_dir else 1))
        self.tree.remember(child)
        return child, entry

    @boundary
    async def mkdir(self, parent_inode, name, mode, ctx):
        parent = self.tree.node(parent_inode)
        name = os.fsdecode(name)
        kind = parent.kind
        if kind == ROOT:
            await self._blocking(self.tree.drafts.drafts.add_pending, name)
            node = await self._blocking(self.tree.lookup, parent, name)
        elif kind == PROJECT:
            await self._blocking(self.tree.drafts.drafts.add_pending, parent.project, name)
            node = await self._blocking(self.tree.lookup, parent, name)
        elif kind == DRAFTS_DIR:
            await self._blocking(self.tree.drafts.create, parent.artifact, name)
            node = await self._blocking(self.tree.lookup, parent, name)
        else:
            self._in_draft(parent)
            attr = await self._blocking(parent.draft.mkdir, parent.dino, name, mode)
            return self._reply_new(parent, attr)[1]
        entry = await self._entry_of(node)
        self.tree.remember(node)
        return entry

    @boundary
    async def rmdir(self, parent_inode, name, ctx):
        parent = self.tree.node(parent_inode)
        name = os.fsdecode(name)
        if parent.kind == DRAFTS_DIR:
            node = await self._blocking(self.tree.lookup, parent, name)
            if await self._blocking(node.draft.listdir, node.dino):
                raise pyfuse3.FUSEError(errno.ENOTEMPTY)
            await self._blocking(self.tree.drafts.discard, parent.artifact, name)
            self.tree.drop(node)
            return
        if parent.kind in (ROOT, PROJECT):
            project = name if parent.kind == ROOT else parent.project
            artifact = None if parent.kind == ROOT else name
            if not await self._blocking(self.tree.drafts.drafts.remove_pending, project, artifact):
                raise pyfuse3.FUSEError(errno.EROFS)
            self.tree.catalog.invalidate()
            return
        self._in_draft(parent)
        await self._blocking(parent.draft.rmdir, parent.dino, name)

    @boundary
    async def create(self, parent_inode, name, mode, flags, ctx):
        parent = self.tree.node(parent_inode)
        self._in_draft(parent)
        # One worker-thread call makes the row, the data file and the descriptor.
        attr, fd = await self._blocking(parent.draft.create_open, parent.dino, os.fsdecode(name), mode)
        child, entry = self._reply_new(parent, attr)
        fh = next(self._fh)
        self._handles[fh] = f = DraftFile(child, fd)
        f.dirty = True
        return pyfuse3.FileInfo(fh=fh), entry

    async def _open_draft_file(self, node: Node, flags: int, writing: bool) -> pyfuse3.FileInfo:
        if node.kind == DRAFT or (await self._blocking(self.tree.attr, node)).mode & 0o170000 == 0o040000:
            raise pyfuse3.FUSEError(errno.EISDIR)
        draft = node.draft
        base = await self._blocking(draft.base_entry, node.dino)
        fh = next(self._fh)
        if base is not None and not writing:
            self._handles[fh] = f = await self._open_stored(node, base)
            return pyfuse3.FileInfo(fh=fh, direct_io=getattr(f, "direct_io", False))
        if base is not None:
            self.tree.drafts.check_writable()
            content = None if flags & os.O_TRUNC else await self._read_whole(node, base)
            await self._blocking(draft.make_local, node.dino, None if content is None else _writer(content))
        elif writing:
            self.tree.drafts.check_writable()
        mode = os.O_RDWR if writing else os.O_RDONLY
        fd = await self._blocking(draft.open_local, node.dino, mode | (flags & os.O_TRUNC))
        self._handles[fh] = f = DraftFile(node, fd)
        f.dirty = writing
        return pyfuse3.FileInfo(fh=fh)

    async def _read_whole(self, node: Node, entry) -> list[bytes]:
        """Copy-up: a base file's verified bytes, before its first change."""
        if entry.ref is not None:
            return [await self._refs.read_all(node, entry)]
        return [await self.content.get(p) for p in pieces(entry)]

    @boundary
    async def write(self, fh, off, buf):
        f = self._handles[fh]
        if not isinstance(f, DraftFile):
            raise pyfuse3.FUSEError(errno.EBADF)
        f.dirty = True
        return await self._blocking(f.node.draft.write, f.node.dino, f.fd, buf, off)

    @boundary
    async def flush(self, fh):
        """close() waits for this: a closed draft file is durable, even across a host crash
        (DESIGN.md). Costs one cheap request per close of any file; nothing else is done."""
        f = self._handles.get(fh)
        if isinstance(f, DraftFile) and f.dirty and f.node.draft.durable:
            await self._blocking(f.node.draft.close_file, f.node.dino, f.fd)
            f.dirty = False

    @boundary
    async def fsync(self, fh, datasync):
        f = self._handles.get(fh)
        if isinstance(f, DraftFile) and f.dirty:
            # The namespace row too: a file's creation is made durable with its data.
            await self._blocking(f.node.draft.close_file, f.node.dino, f.fd)
            f.dirty = False

    @boundary
    async def unlink(self, parent_inode, name, ctx):
        parent = self.tree.node(parent_inode)
        self._in_draft(parent)
        await self._blocking(parent.draft.unlink, parent.dino, os.fsdecode(name))

    @boundary
    async def rename(self, parent_old, name_old, parent_new, name_new, flags, ctx):
        old, new = self.tree.node(parent_old), self.tree.node(parent_new)
        self._in_draft(old)
        self._in_draft(new)
        if old.draft is not new.draft:
            raise pyfuse3.FUSEError(errno.EXDEV)
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise pyfuse3.FUSEError(errno.EINVAL)
        await self._blocking(old.draft.rename, old.dino, os.fsdecode(name_old), new.dino, os.fsdecode(name_new),
                             bool(flags & pyfuse3.RENAME_NOREPLACE))

    @boundary
    async def setattr(self, inode, attr, fields, fh, ctx):
        node = self.tree.node(inode)
        self._in_draft(node)
        draft = node.draft
        try:
            if fields.update_size:
                base = await self._blocking(draft.base_entry, node.dino)
                if base is not None:
                    content = None if attr.st_size == 0 else await self._read_whole(node, base)
                    await self._blocking(draft.make_local, node.dino, None if content is None else _writer(content))
                await self._blocking(draft.truncate, node.dino, attr.st_size)
            mode = attr.st_mode if fields.update_mode else None
            mtime = attr.st_mtime_ns if fields.update_mtime else None
            if mode is not None or mtime is not None:
                await self._blocking(draft.setattr, node.dino, mode, mtime)
        except FsError as e:
            held = self._held(node, DraftFile) if e.errno == errno.ENOENT else None
            if held is None:
                raise
            # Unlinked (or renamed over) while open: POSIX keeps it usable through its
            # descriptors (SQLite's temp files are truncated so). Its size changes there;
            # its mode and times belong to no entry of the draft any more.
            if fields.update_size:
                await self._blocking(os.ftruncate, held.fd, attr.st_size)
        # Ownership changes (cp -a, rsync -a as root) are accepted and ignored: a version has no owners.
        return await self._entry_of(node)

    @boundary
    async def setxattr(self, inode, name, value, ctx):
        node = self.tree.node(inode)
        if os.fsdecode(name) == COMMIT_XATTR and node.kind == DRAFT:
            return await self._commit(node, value)
        if node.kind in IN_DRAFT:
            raise pyfuse3.FUSEError(errno.ENOTSUP)
        raise pyfuse3.FUSEError(errno.EROFS)

    async def _commit(self, node: Node, value: bytes) -> None:
        """`artfs commit` on a mounted draft: options in, outcome kept under a token."""
        try:
            options = json.loads(value)
            token = str(options.pop("token"))
            if options.get("metadata") is not None:
                options["metadata"] = check_metadata(options["metadata"])
        except (ValueError, KeyError, TypeError, AttributeError):
            raise pyfuse3.FUSEError(errno.EINVAL) from None
        except InvalidInput as e:
            self._results[str(json.loads(value).get("token"))] = json.dumps({"error": str(e)}).encode()
            raise pyfuse3.FUSEError(errno.EINVAL) from None
        allowed = {k: options.get(k) for k in ("type_", "aliases", "description", "metadata") if k in options}
        try:
            result = await trio.to_thread.run_sync(
                lambda: self.tree.drafts.commit(node.artifact, node.draft_name, **allowed))
        except ArtfsError as e:
            self._results[token] = json.dumps({"error": str(e)}).encode()
            raise
        self._results[token] = json.dumps({"version": str(result.version), "created": result.created}).encode()
        self.tree.drop(node)
        self._invalidate_after_commit(node)

    def _invalidate_after_commit(self, node: Node) -> None:
        drafts_dir = self.tree.known(("d", node.artifact))
        if drafts_dir is not None:
            pyfuse3.invalidate_entry_async(drafts_dir.ino, os.fsencode(node.draft_name), ignore_enoent=True)
        artifact = self.tree.known(("a", node.artifact))
        if artifact is not None:
            pyfuse3.invalidate_entry_async(artifact.ino, b"latest", ignore_enoent=True)
            pyfuse3.invalidate_inode(artifact.ino, attr_only=True)

    @boundary
    async def removexattr(self, inode, name, ctx):
        raise pyfuse3.FUSEError(errno.ENOTSUP if self.tree.node(inode).kind in IN_DRAFT else errno.EROFS)

    async def link(self, inode, new_parent_inode, new_name, ctx):
        raise pyfuse3.FUSEError(errno.EPERM)  # a version has no hard links

    async def symlink(self, parent_inode, name, target, ctx):
        raise pyfuse3.FUSEError(errno.ENOTSUP if self.tree.node(parent_inode).kind in IN_DRAFT else errno.EROFS)

    async def mknod(self, parent_inode, name, mode, rdev, ctx):
        raise pyfuse3.FUSEError(errno.ENOTSUP if self.tree.node(parent_inode).kind in IN_DRAFT else errno.EROFS)


def _writer(chunks: list[bytes]):
    def fill(path: str) -> None:
        with open(path, "wb") as f:
            for c in chunks:
                f.write(c)
    return fill
