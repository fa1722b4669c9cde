"""The pyfuse3 adapter: FUSE requests in, tree and content calls out.

This is the one errno boundary: an ArtfsError becomes its errno and one log
line naming the entry; any other exception is logged with its traceback and
answered EIO, so no handler exception can take the mount down. Cache
timeouts follow mutability: version trees are immutable and cached by the
kernel for a day (and opened with keep_cache); listings above them live for
the refresh interval.
"""

from __future__ import annotations

import errno
import functools
import itertools
import logging
import os

import pyfuse3
import trio

from ..digest import CHUNK_SIZE
from ..errors import ArtfsError
from ..fetch import pieces
from .content import ContentSource
from .tree import ALIAS, FILE, Node, Tree

log = logging.getLogger(__name__)

IMMUTABLE_TIMEOUT = 24 * 3600.0
SMALL_RUN_BYTES = 4 << 20  # read-ahead through a pack when a small file is opened
SMALL_RUN_FILES = 512
MAX_WINDOW = 64  # chunks of read-ahead for a sequentially read large file


def boundary(handler):
    @functools.wraps(handler)
    async def wrapper(self, *args):
        try:
            return await handler(self, *args)
        except pyfuse3.FUSEError:
            raise
        except ArtfsError as e:
            if e.errno not in (errno.ENOENT,):
                log.warning("%s: %s", handler.__name__, e)
            raise pyfuse3.FUSEError(e.errno) from None
        except OSError as e:
            log.warning("%s: %s", handler.__name__, e)
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from None
        except Exception:
            log.exception("%s failed; answering EIO", handler.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper


class OpenFile:
    """One open() of a version file: its pieces and its read-ahead state."""

    __slots__ = ("node", "pieces", "data", "next_offset", "window")

    def __init__(self, node: Node):
        self.node = node
        self.pieces = None
        self.data: bytes | None = None  # whole content for small files
        self.next_offset = 0
        self.window = 1


class Operations(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False

    def __init__(self, tree: Tree, content: ContentSource, refresh: float, on_first_read=None):
        super().__init__()
        self.tree = tree
        self.content = content
        self.refresh = refresh
        self.on_first_read = on_first_read or (lambda rec: None)
        self._handles: dict[int, object] = {}
        self._fh = itertools.count(1)
        self._read_versions: set = set()

    # -- helpers --------------------------------------------------------------------
    async def _blocking(self, fn, *args):
        return await trio.to_thread.run_sync(fn, *args, limiter=self.content.limiter)

    def _entry(self, node: Node) -> pyfuse3.EntryAttributes:
        a = self.tree.attr(node)
        e = pyfuse3.EntryAttributes()
        e.st_ino = a.ino
        e.st_mode = a.mode
        e.st_size = a.size
        e.st_nlink = a.nlink
        e.st_uid, e.st_gid = self.tree.uid, self.tree.gid
        e.st_blksize = 1 << 20
        e.st_blocks = (a.size + 511) // 512
        ns = int(a.mtime * 1e9)
        e.st_atime_ns = e.st_mtime_ns = e.st_ctime_ns = ns
        timeout = IMMUTABLE_TIMEOUT if node.immutable else self.refresh
        e.entry_timeout = e.attr_timeout = timeout
        return e

    # -- lookups and attributes -------------------------------------------------------------
    @boundary
    async def lookup(self, parent_inode, name, ctx=None):
        parent = self.tree.node(parent_inode)
        name = os.fsdecode(name)
        if name in (".", ".."):
            raise pyfuse3.FUSEError(errno.ENOENT)
        if self.tree.needs_thread(parent):
            node = await self._blocking(self.tree.lookup, parent, name)
        else:
            node = self.tree.lookup(parent, name)
        self.tree.remember(node)
        return self._entry(node)

    async def forget(self, inode_list):
        for ino, count in inode_list:
            try:
                self.tree.forget(ino, count)
            except Exception:  # forget must never raise
                log.exception("forget(%s)", ino)

    @boundary
    async def getattr(self, inode, ctx=None):
        return self._entry(self.tree.node(inode))

    @boundary
    async def readlink(self, inode, ctx):
        node = self.tree.node(inode)
        if node.kind != ALIAS:
            raise pyfuse3.FUSEError(errno.EINVAL)
        return os.fsencode(node.target)

    # -- directories ---------------------------------------------------------------------------
    @boundary
    async def opendir(self, inode, ctx):
        node = self.tree.node(inode)
        if self.tree.needs_thread(node):
            children = await self._blocking(self.tree.children, node)
        else:
            children = self.tree.children(node)
        fh = next(self._fh)
        self._handles[fh] = (node, children)
        return fh

    @boundary
    async def readdir(self, fh, start_id, token):
        node, children = self._handles[fh]
        for i in range(start_id, len(children)):
            name, how = children[i]
            if self.tree.needs_thread(node) and how[0] in ("v", "l"):
                child = await self._blocking(self.tree.child_node, node, name, how)
            else:
                child = self.tree.child_node(node, name, how)
            if not pyfuse3.readdir_reply(token, os.fsencode(name), self._entry(child), i + 1):
                return
            self.tree.remember(child)

    async def releasedir(self, fh):
        self._handles.pop(fh, None)

    # -- files ----------------------------------------------------------------------------------
    @boundary
    async def open(self, inode, flags, ctx):
        node = self.tree.node(inode)
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            raise pyfuse3.FUSEError(errno.EROFS)
        if node.kind != FILE:
            raise pyfuse3.FUSEError(errno.EISDIR)
        f = OpenFile(node)
        entry = node.manifest.entry(node.index)
        if entry.ref is not None:
            raise pyfuse3.FUSEError(errno.EIO)  # references are served by a later layer
        f.pieces = pieces(entry)
        if entry.pack is not None:
            f.data = await self.content.get(f.pieces[0], self._pack_neighbours(node))
        self._note_read(node)
        fh = next(self._fh)
        self._handles[fh] = f
        return pyfuse3.FileInfo(fh=fh, keep_cache=True)

    def _pack_neighbours(self, node: Node) -> list:
        """The files after this one in the same pack: one GET brings them all."""
        m, i = node.manifest, node.index
        pack = m.packs[i]
        out, total = [], 0
        j = i + 1
        while j < len(m) and len(out) < SMALL_RUN_FILES and total < SMALL_RUN_BYTES and m.packs[j] == pack:
            e = m.entry(j)
            p = pieces(e)[0]
            if not self.content.cached(p):
                out.append(p)
            total += e.size
            j += 1
        return out

    def _note_read(self, node: Node) -> None:
        key = (node.artifact, node.version.number)
        if key not in self._read_versions:
            self._read_versions.add(key)
            self.on_first_read(node.version)

    @boundary
    async def read(self, fh, off, size):
        f = self._handles[fh]
        if f.data is not None:
            return f.data[off:off + size]
        ps = f.pieces
        total = f.node.manifest.sizes[f.node.index]
        if off >= total or size == 0:
            return b""
        end = min(off + size, total)
        first, last = off // CHUNK_SIZE, (end - 1) // CHUNK_SIZE
        # Read-ahead doubles while reads are sequential and restarts after a seek.
        f.window = min(f.window * 2, MAX_WINDOW) if off == f.next_offset else 1
        f.next_offset = end
        ahead = ps[last + 1:last + 1 + f.window]
        for k in range(0, len(ahead), 8):
            self.content.prefetch(ahead[k:k + 8])
        parts = []
        for p in ps[first:last + 1]:
            parts.append(await self.content.get(p))
        blob = parts[0] if len(parts) == 1 else b"".join(parts)
        start = off - first * CHUNK_SIZE
        return blob[start:start + (end - off)]

    async def release(self, fh):
        self._handles.pop(fh, None)

    # -- extended attributes ------------------------------------------------------------------
    @boundary
    async def getxattr(self, inode, name, ctx):
        node = self.tree.node(inode)
        attrs = await self._blocking(self.tree.xattrs, node) if self.tree.needs_thread(node) else self.tree.xattrs(node)
        value = attrs.get(os.fsdecode(name))
        if value is None:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        return value

    @boundary
    async def listxattr(self, inode, ctx):
        node = self.tree.node(inode)
        attrs = await self._blocking(self.tree.xattrs, node) if self.tree.needs_thread(node) else self.tree.xattrs(node)
        return [os.fsencode(k) for k in attrs]

    async def statfs(self, ctx):
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_blocks = s.f_bfree = s.f_bavail = 1 << 30
        s.f_files = s.f_ffree = s.f_favail = 1 << 30
        s.f_namemax = 255
        return s

    # -- everything that would write ----------------------------------------------------------
    async def _read_only(self, *args):
        raise pyfuse3.FUSEError(errno.EROFS)

    setattr = mknod = mkdir = unlink = rmdir = symlink = rename = link = _read_only
    write = create = setxattr = removexattr = _read_only
