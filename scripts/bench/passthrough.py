#!/usr/bin/env python3
"""The ceiling of artfs's stack: a minimal read-only pyfuse3 + trio passthrough of a folder.

It does what any pyfuse3 file system must do for a read and nothing else (no store, no
cache, no verification): LOOKUP/GETATTR from lstat, READDIR(PLUS) from scandir, OPEN of
a real descriptor, READ by pread on the trio thread when the bytes are in the page
cache (RWF_NOWAIT), else in a worker thread (a disk read must not stall every other
request, which would make this ceiling lower than artfs's own cold reads). Like artfs it tells the kernel the
files do not change (long entry/attribute timeouts, keep_cache), and like a pyfuse3
program that does not define flush it answers FLUSH with ENOSYS once (the kernel then
stops sending it). What artfs spends above this is artfs's own cost; what this spends
above local disk is the FUSE + pyfuse3 + trio stack's.

    passthrough.py SOURCE MOUNTPOINT            # foreground; unmount with fusermount3 -u
"""

from __future__ import annotations

import errno
import os
import sys

import pyfuse3
import trio

TIMEOUT = 24 * 3600.0  # the benchmark's files do not change while mounted
READ_AHEAD_KB = 4096  # as artfs sets it (pyfuse3 does not negotiate readahead): 1 MiB READs


class Passthrough(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False

    def __init__(self, source: str):
        super().__init__()
        self.paths: dict[int, str] = {pyfuse3.ROOT_INODE: source}
        self.lookups: dict[int, int] = {}
        self.dirs: dict[int, tuple[str, list[tuple[str, os.stat_result]]]] = {}
        self.fhs = 0
        self.initialized = trio.Event()

    def init(self):
        self.initialized.set()

    def _entry(self, st: os.stat_result) -> pyfuse3.EntryAttributes:
        e = pyfuse3.EntryAttributes()
        e.st_ino = st.st_ino
        e.st_mode = st.st_mode
        e.st_nlink = st.st_nlink
        e.st_uid, e.st_gid = st.st_uid, st.st_gid
        e.st_size = st.st_size
        e.st_blksize = 1 << 20
        e.st_blocks = st.st_blocks
        e.st_atime_ns, e.st_mtime_ns, e.st_ctime_ns = st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns
        e.entry_timeout = e.attr_timeout = TIMEOUT
        return e

    def _stat(self, path: str, remember: bool) -> pyfuse3.EntryAttributes:
        try:
            st = os.lstat(path)
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno) from None
        if remember:
            self.paths[st.st_ino] = path
            self.lookups[st.st_ino] = self.lookups.get(st.st_ino, 0) + 1
        return self._entry(st)

    async def lookup(self, parent_inode, name, ctx=None):
        return self._stat(os.path.join(self.paths[parent_inode], os.fsdecode(name)), True)

    async def getattr(self, inode, ctx=None):
        return self._stat(self.paths[inode], False)

    async def forget(self, inode_list):
        for ino, n in inode_list:
            left = self.lookups.get(ino, 0) - n
            if left > 0:
                self.lookups[ino] = left
            else:
                self.lookups.pop(ino, None)
                if ino != pyfuse3.ROOT_INODE:
                    self.paths.pop(ino, None)

    async def opendir(self, inode, ctx):
        self.fhs += 1
        path = self.paths[inode]
        with os.scandir(path) as it:
            self.dirs[self.fhs] = (path, sorted((e.name, e.stat(follow_symlinks=False)) for e in it))
        return self.fhs

    async def readdir(self, fh, start_id, token):
        path, entries = self.dirs[fh]
        for i in range(start_id, len(entries)):
            name, st = entries[i]
            if not pyfuse3.readdir_reply(token, os.fsencode(name), self._entry(st), i + 1):
                return
            # an entry given with READDIRPLUS counts as a lookup: the kernel may open it next
            self.paths[st.st_ino] = os.path.join(path, name)
            self.lookups[st.st_ino] = self.lookups.get(st.st_ino, 0) + 1

    async def releasedir(self, fh):
        self.dirs.pop(fh, None)

    async def open(self, inode, flags, ctx):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            raise pyfuse3.FUSEError(errno.EROFS)
        try:
            fd = os.open(self.paths[inode], os.O_RDONLY)
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno) from None
        return pyfuse3.FileInfo(fh=fd, keep_cache=True)

    async def read(self, fh, off, size):
        buf = bytearray(size)
        view = memoryview(buf)
        n = 0
        try:
            while n < size:
                got = os.preadv(fh, [view[n:]], off + n, os.RWF_NOWAIT)
                if got == 0:  # the end of the file
                    return buf[:n]
                n += got
            return buf
        except BlockingIOError:  # not (all) in the page cache: the rest from a thread
            rest = await trio.to_thread.run_sync(os.pread, fh, size - n, off + n)
            return bytes(buf[:n]) + rest if n else rest

    async def release(self, fh):
        os.close(fh)

    async def statfs(self, ctx):
        st = os.statvfs(self.paths[pyfuse3.ROOT_INODE])
        s = pyfuse3.StatvfsData()
        for field in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree", "f_favail"):
            setattr(s, field, getattr(st, field))
        s.f_namemax = 255
        return s

    async def getxattr(self, inode, name, ctx):
        raise pyfuse3.FUSEError(errno.EOPNOTSUPP)  # as artfs: `ls -l` then stops asking


async def raise_read_ahead(ops: Passthrough, mountpoint: str) -> None:
    """The same readahead as artfs: the kernel sets it from the INIT reply, so after that."""
    await ops.initialized.wait()
    await trio.sleep(0.01)
    with open("/proc/self/mountinfo") as f:
        dev = next((line.split()[2] for line in f if line.split()[4] == mountpoint), None)
    if dev is not None:
        with open(f"/sys/class/bdi/{dev}/read_ahead_kb", "w") as f:
            f.write(str(READ_AHEAD_KB))


def serve(ops: Passthrough, mountpoint: str, options: set[str]) -> int:
    """Mounts `ops` at `mountpoint` and answers requests until it is unmounted."""
    pyfuse3.init(
        ops, mountpoint, set(pyfuse3.default_options) | {"fsname=passthrough", "subtype=passthrough"} | options
    )

    async def run():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(raise_read_ahead, ops, mountpoint)
            await pyfuse3.main()
            nursery.cancel_scope.cancel()

    try:
        trio.run(run)
    finally:
        pyfuse3.close(unmount=True)
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not os.path.isdir(argv[0]) or not os.path.isdir(argv[1]):
        print("usage: passthrough.py SOURCE_FOLDER MOUNTPOINT", file=sys.stderr)
        return 2
    return serve(Passthrough(os.path.abspath(argv[0])), os.path.abspath(argv[1]), {"ro"})


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
