"""The pyfuse3 adapter: FUSE requests in, filesystem-core calls out, replies back.

Nothing is decided here: each handler translates its arguments for
`fs.filesystem.FileSystem`, and its answer (or typed error, through
boundary.py) for the kernel.
"""

from __future__ import annotations

import errno
import os

import pyfuse3

from artfs.fs.filesystem import FileSystem
from artfs.fs.fuse.boundary import guarded
from artfs.fs.kernel import Kernel
from artfs.fs.replies import Opened, Reply
from artfs.fs.tree import Tree

STATVFS_FIELDS = ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree", "f_favail")


class FuseKernel(Kernel):
    """The core's requests of the kernel, as FUSE notifications."""

    def store(self, ino: int, data: bytes) -> None:
        try:
            pyfuse3.notify_store(ino, 0, data)
        except OSError:  # the kernel forgot the inode meanwhile; nothing lost
            pass

    def invalidate_entry(self, parent_ino: int, name: str) -> None:
        pyfuse3.invalidate_entry_async(parent_ino, os.fsencode(name), ignore_enoent=True)

    def invalidate_attr(self, ino: int) -> None:
        pyfuse3.invalidate_inode(ino, attr_only=True)


@guarded
class Operations(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False

    def __init__(self, fs: FileSystem):
        super().__init__()
        self.fs = fs
        self.tree: Tree = fs.tree

    def _entry(self, reply: Reply) -> pyfuse3.EntryAttributes:
        a = reply.attr
        e = pyfuse3.EntryAttributes()
        e.st_ino = a.ino
        e.st_mode = a.mode
        e.st_size = a.size
        e.st_nlink = a.nlink
        e.st_uid, e.st_gid = self.tree.uid, self.tree.gid
        e.st_blksize = 1 << 20
        e.st_blocks = (a.size + 511) // 512
        e.st_mtime_ns, e.st_ctime_ns, e.st_atime_ns = a.st_mtime_ns, a.st_ctime_ns, a.st_atime_ns
        e.entry_timeout = reply.entry_timeout
        e.attr_timeout = reply.attr_timeout
        return e

    @staticmethod
    def _file_info(opened: Opened) -> pyfuse3.FileInfo:
        return pyfuse3.FileInfo(fh=opened.fh, keep_cache=opened.keep_cache, direct_io=opened.direct_io)

    def init(self):
        self.fs.init()

    # -- names and attributes --------------------------------------------------------------
    async def lookup(self, parent_inode, name, ctx=None):
        return self._entry(await self.fs.lookup(parent_inode, name))

    async def forget(self, inode_list):
        self.fs.forget(inode_list)

    async def getattr(self, inode, ctx=None):
        return self._entry(await self.fs.getattr(inode))

    async def readlink(self, inode, ctx):
        return self.fs.readlink(inode)

    async def opendir(self, inode, ctx):
        return await self.fs.opendir(inode)

    async def readdir(self, fh, start_id, token):
        for next_id, name, reply, node in self.fs.listing(fh, start_id):
            if not pyfuse3.readdir_reply(token, name, self._entry(reply), next_id):
                return
            if node is not None:  # ('.' and '..': the kernel takes no reference)
                self.fs.listed(node)

    async def releasedir(self, fh):
        self.fs.releasedir(fh)

    # -- files ------------------------------------------------------------------------------
    async def open(self, inode, flags, ctx):
        return self._file_info(await self.fs.open(inode, flags))

    async def read(self, fh, off, size):
        return await self.fs.read(fh, off, size)

    async def release(self, fh):
        await self.fs.release(fh)

    async def create(self, parent_inode, name, mode, flags, ctx):
        opened, reply = await self.fs.create(parent_inode, name, mode, flags)
        return self._file_info(opened), self._entry(reply)

    async def write(self, fh, off, buf):
        return await self.fs.write(fh, off, buf)

    async def flush(self, fh):
        if not self.fs.flush_needed:
            # Nothing to do at close() (drafts are as durable as ext4 without it): ENOSYS once
            # makes the kernel stop sending FLUSH on this mount (fc->no_flush), a request saved
            # on every close() of every file.
            raise pyfuse3.FUSEError(errno.ENOSYS)
        await self.fs.flush(fh)

    async def fsync(self, fh, datasync):
        await self.fs.fsync(fh, datasync)

    # -- changing the namespace ---------------------------------------------------------------
    async def mkdir(self, parent_inode, name, mode, ctx):
        return self._entry(await self.fs.mkdir(parent_inode, name, mode))

    async def rmdir(self, parent_inode, name, ctx):
        await self.fs.rmdir(parent_inode, name)

    async def unlink(self, parent_inode, name, ctx):
        await self.fs.unlink(parent_inode, name)

    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        await self.fs.rename(
            parent_inode_old,
            name_old,
            parent_inode_new,
            name_new,
            exchange=bool(flags & pyfuse3.RENAME_EXCHANGE),
            no_replace=bool(flags & pyfuse3.RENAME_NOREPLACE),
        )

    async def setattr(self, inode, attr, fields, fh, ctx):
        reply = await self.fs.setattr(
            inode,
            size=attr.st_size if fields.update_size else None,
            mode=attr.st_mode if fields.update_mode else None,
            mtime_ns=attr.st_mtime_ns if fields.update_mtime else None,
            atime_ns=attr.st_atime_ns if fields.update_atime else None,
        )
        return self._entry(reply)

    async def link(self, inode, new_parent_inode, new_name, ctx):
        self.fs.link(inode, new_parent_inode, new_name)

    async def symlink(self, parent_inode, name, target, ctx):
        self.fs.symlink(parent_inode)

    async def mknod(self, parent_inode, name, mode, rdev, ctx):
        self.fs.mknod(parent_inode)

    # -- extended attributes and the file system ---------------------------------------------
    async def getxattr(self, inode, name, ctx):
        return await self.fs.getxattr(inode, name)

    async def listxattr(self, inode, ctx):
        return await self.fs.listxattr(inode)

    async def setxattr(self, inode, name, value, ctx):
        await self.fs.setxattr(inode, name, value)

    async def removexattr(self, inode, name, ctx):
        await self.fs.removexattr(inode, name)

    async def statfs(self, ctx):
        st = await self.fs.statfs()
        s = pyfuse3.StatvfsData()
        for field in STATVFS_FIELDS:
            setattr(s, field, getattr(st, field))
        s.f_namemax = 255
        return s

    async def access(self, inode, mode, ctx):
        raise pyfuse3.FUSEError(errno.ENOSYS)  # the kernel checks permissions itself (default_permissions)
