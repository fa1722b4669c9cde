#!/usr/bin/env python3
"""The write ceiling of artfs's stack: passthrough.py's pyfuse3 + trio passthrough, writable.

publish_bench.py copies the small files into this mount (`cp -r`) beside the draft: what
artfs spends above it is artfs's own cost (SQLite rows, the durable close, hashing, the
worker-thread hand-offs); what it spends above local disk is FUSE + pyfuse3 + trio's.
Everything is done on the trio thread with one system call per request (no worker
thread, no durability beyond the page cache): the cheapest a pyfuse3 program can be.
Like artfs, FLUSH is answered ENOSYS once (the kernel then stops sending it) and
`security.*` xattrs get ENOTSUP. Like artfs (drafts/files.py), a file written in order
lets its bytes 16 MiB behind the write leave the page cache (on this VM every fresh
page-cache page costs a host fault: without it this "ceiling" was slower than artfs).

    passthrough_rw.py FOLDER MOUNTPOINT     # foreground; unmount with fusermount3 -u
"""

from __future__ import annotations

import errno
import os
import sys

import pyfuse3

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from passthrough import Passthrough, serve  # noqa: E402

DROP_BEHIND = 16 << 20  # artfs's BLOCK_SIZE: its early hashing drops what it has read
DRAFT_TIMEOUT = 1.0  # as artfs answers for draft nodes (fs/filesystem.py DRAFT_TIMEOUT)


def _fuse_errors(fn):
    async def wrapped(*args):
        try:
            return await fn(*args)
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None

    return wrapped


class WritablePassthrough(Passthrough):
    def _entry(self, st: os.stat_result) -> pyfuse3.EntryAttributes:
        e = super()._entry(st)
        e.entry_timeout = e.attr_timeout = DRAFT_TIMEOUT
        return e

    def _remember(self, path: str) -> pyfuse3.EntryAttributes:
        st = os.lstat(path)
        self.paths[st.st_ino] = path
        self.lookups[st.st_ino] = self.lookups.get(st.st_ino, 0) + 1
        return self._entry(st)

    @_fuse_errors
    async def mkdir(self, parent_inode, name, mode, ctx):
        path = os.path.join(self.paths[parent_inode], os.fsdecode(name))
        os.mkdir(path, mode & 0o7777)
        return self._remember(path)

    @_fuse_errors
    async def create(self, parent_inode, name, mode, flags, ctx):
        path = os.path.join(self.paths[parent_inode], os.fsdecode(name))
        fd = os.open(path, (flags & ~(os.O_APPEND | os.O_ACCMODE)) | os.O_RDWR | os.O_CREAT, mode & 0o7777)
        return pyfuse3.FileInfo(fh=fd), self._remember(path)

    @_fuse_errors
    async def open(self, inode, flags, ctx):
        fd = os.open(self.paths[inode], flags & ~(os.O_CREAT | os.O_EXCL | os.O_APPEND))
        return pyfuse3.FileInfo(fh=fd)

    @_fuse_errors
    async def write(self, fh, off, buf):
        n = os.pwrite(fh, buf, off)
        behind = (off + n) // DROP_BEHIND * DROP_BEHIND - DROP_BEHIND
        if behind > 0 and off < behind + DROP_BEHIND <= off + n:  # crossed a 16 MiB boundary
            os.posix_fadvise(fh, 0, behind, os.POSIX_FADV_DONTNEED)
        return n

    async def flush(self, fh):
        raise pyfuse3.FUSEError(errno.ENOSYS)

    @_fuse_errors
    async def setattr(self, inode, attr, fields, fh, ctx):
        path = self.paths[inode]
        if fields.update_size:
            os.truncate(path, attr.st_size)
        if fields.update_mode:
            os.chmod(path, attr.st_mode & 0o7777)
        if fields.update_mtime or fields.update_atime:
            st = os.lstat(path)
            os.utime(
                path,
                ns=(
                    attr.st_atime_ns if fields.update_atime else st.st_atime_ns,
                    attr.st_mtime_ns if fields.update_mtime else st.st_mtime_ns,
                ),
            )
        return self._entry(os.lstat(path))

    @_fuse_errors
    async def unlink(self, parent_inode, name, ctx):
        os.unlink(os.path.join(self.paths[parent_inode], os.fsdecode(name)))

    @_fuse_errors
    async def rmdir(self, parent_inode, name, ctx):
        os.rmdir(os.path.join(self.paths[parent_inode], os.fsdecode(name)))


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not os.path.isdir(argv[0]) or not os.path.isdir(argv[1]):
        print("usage: passthrough_rw.py FOLDER MOUNTPOINT", file=sys.stderr)
        return 2
    return serve(WritablePassthrough(os.path.abspath(argv[0])), os.path.abspath(argv[1]), set())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
