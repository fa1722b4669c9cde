"""The pyfuse3 adapter: FUSE requests in, tree and content calls out.

Reading lives here; requests that change drafts are in draft_ops.py, and every
handler passes through the errno boundary of boundary.py. Cache
timeouts follow mutability: version trees are immutable and cached by the
kernel for a day (and opened with keep_cache); listings above them live for
the refresh interval.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import stat

import pyfuse3
import trio

from artfs.digest import CHUNK_SIZE
from artfs.drafts.draft import FsError
from artfs.errors import ArtfsError
from artfs.content.fetch import Piece, piece_index, pieces
from artfs.store.keys import pack_key
from artfs.fs.fuse.boundary import boundary
from artfs.fs.content import ContentSource
from artfs.fs.fuse.draft_ops import RESULT_XATTR, DraftFile, DraftOperations
from artfs.fs.refs import RefHandle, RefReader
from artfs.fs.tree import ALIAS, DRAFTS_DIR, FILE, IN_DRAFT, VERSION, Node, Tree
from artfs.fs.tree import Attr as TreeAttr

log = logging.getLogger(__name__)

IMMUTABLE_TIMEOUT = 24 * 3600.0
DRAFT_TIMEOUT = 1.0  # drafts change only through this mount, but commits remove them
SMALL_RUN_BYTES = 4 << 20  # read-ahead through a pack when a small file is opened
SMALL_RUN_FILES = 512
MAX_WINDOW = 64  # chunks of read-ahead for a sequentially read large file
RUN_CHUNKS = 8  # chunks fetched by one ranged GET of read-ahead
SMALL_READ = CHUNK_SIZE // 4  # random READs up to this size fetch pieces, not whole chunks
SEQUENTIAL_SLACK = CHUNK_SIZE  # see read(): wide enough for out-of-order READs, narrow enough for seeks


class OpenFile:
    """One open() of a version file: its pieces and its read-ahead state."""

    __slots__ = ("node", "pieces", "index", "data", "next_offset", "window", "size")

    def __init__(self, node: Node):
        self.node = node
        self.pieces = None
        self.index: Piece | None = None  # the piece index of a large object, for random reads
        self.data: bytes | None = None  # whole content for small files
        self.next_offset = 0
        self.window = 0


class Operations(DraftOperations, pyfuse3.Operations):
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
        self._results: dict[str, bytes] = {}  # commit token -> JSON outcome
        self._refs = RefReader(self._blocking)  # reference entries: read from their source (fs/refs.py)
        self.initialized = trio.Event()  # set once the kernel's INIT is answered

    def init(self):
        self.initialized.set()

    # -- helpers --------------------------------------------------------------------
    async def _blocking(self, fn, *args):
        return await trio.to_thread.run_sync(fn, *args, limiter=self.content.limiter)

    async def _entry_of(self, node: Node) -> pyfuse3.EntryAttributes:
        if node.kind in IN_DRAFT:
            a = self.tree.attr_cached(node)  # most draft attributes are in memory
            if a is not None:
                return self._entry(node, a)
            try:
                a = await self._blocking(self.tree.attr, node)
            except FsError as e:
                a = self._unlinked_attr(node) if e.errno == errno.ENOENT else None
                if a is None:
                    raise
            return self._entry(node, a)
        return self._entry(node)

    def _unlinked_attr(self, node: Node) -> TreeAttr | None:
        """A draft file unlinked (or renamed over) while open stays usable through its
        descriptors, as POSIX says: the kernel still asks for its attributes (fstat, and
        before reads after a write), answered from an open handle."""
        held = self._held(node, (DraftFile, OpenFile))
        if isinstance(held, DraftFile):
            st = os.fstat(held.fd)
            return TreeAttr(node.ino, stat.S_IFREG | 0o644, st.st_size, st.st_mtime, 0)
        if isinstance(held, OpenFile):
            return TreeAttr(node.ino, stat.S_IFREG | 0o444, held.size, self.tree.started, 0)
        return None

    def _held(self, node: Node, kinds):
        """An open handle of `node` of one of `kinds`, or None."""
        return next((f for f in self._handles.values() if isinstance(f, kinds) and f.node.ino == node.ino), None)

    def _entry(self, node: Node, a=None) -> pyfuse3.EntryAttributes:
        a = a or self.tree.attr(node)
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
        timeout = IMMUTABLE_TIMEOUT if node.immutable else DRAFT_TIMEOUT if node.kind in IN_DRAFT else self.refresh
        e.entry_timeout = e.attr_timeout = timeout
        if node.kind == VERSION:
            e.entry_timeout = self.refresh  # the name vN goes when the version is deleted (artfs rm)
        return e

    # -- lookups and attributes -------------------------------------------------------------
    @boundary
    async def lookup(self, parent_inode, name, ctx=None):
        parent = self.tree.node(parent_inode)
        name = os.fsdecode(name)
        if name in (".", ".."):
            raise pyfuse3.FUSEError(errno.ENOENT)
        if not self.tree.needs_thread(parent):
            node, a = self.tree.lookup(parent, name), None
        else:
            # In a draft, names (and missing names: each file `cp` makes is looked up first)
            # are mostly known in memory; else one worker-thread call brings node and attributes.
            hit = self.tree.lookup_cached(parent, name)
            node, a = hit if hit is not None else await self._blocking(self.tree.lookup_attr, parent, name)
        entry = self._entry(node, a) if a is not None else await self._entry_of(node)
        self.tree.remember(node)
        return entry

    async def forget(self, inode_list):
        for ino, count in inode_list:
            try:
                self.tree.forget(ino, count)
            except Exception:  # forget must never raise
                log.exception("forget(%s)", ino)

    @boundary
    async def getattr(self, inode, ctx=None):
        return await self._entry_of(self.tree.node(inode))

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
            # Small, changing folders: resolve every child and its attributes at once.
            children = await self._blocking(self._resolve_children, node)
        else:
            children = self.tree.children(node)  # version trees: children made as listed
        fh = next(self._fh)
        self._handles[fh] = (node, children)
        return fh

    def _resolve_children(self, node: Node) -> list:
        out = []
        for name, how in self.tree.children(node):
            try:
                child = self.tree.child_node(node, name, how)
                out.append((name, child, self.tree.attr(child)))
            except ArtfsError:
                continue  # vanished between listing and looking
        return out

    @boundary
    async def readdir(self, fh, start_id, token):
        node, children = self._handles[fh]
        for i in range(start_id, len(children)):
            item = children[i]
            if len(item) == 3:
                name, child, attr = item
                entry = self._entry(child, attr)
            else:
                name, how = item
                child = self.tree.child_node(node, name, how)
                entry = self._entry(child)
            if not pyfuse3.readdir_reply(token, os.fsencode(name), entry, i + 1):
                return
            self.tree.remember(child)

    async def releasedir(self, fh):
        self._handles.pop(fh, None)

    # -- files ----------------------------------------------------------------------------------
    @boundary
    async def open(self, inode, flags, ctx):
        node = self.tree.node(inode)
        writing = bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND))
        if node.kind in IN_DRAFT:
            return await self._open_draft_file(node, flags, writing)
        if writing:
            raise pyfuse3.FUSEError(errno.EROFS)
        if node.kind != FILE:
            raise pyfuse3.FUSEError(errno.EISDIR)
        entry = node.manifest.entry(node.index)
        f = await self._open_stored(node, entry)
        self._note_read(node)
        fh = next(self._fh)
        self._handles[fh] = f
        return pyfuse3.FileInfo(fh=fh, keep_cache=True, direct_io=getattr(f, "direct_io", False))

    async def _open_stored(self, node: Node, entry) -> OpenFile:
        """A handle reading a stored entry (of a version, or unmodified in a draft)."""
        f = OpenFile(node)
        f.size = entry.size
        if entry.ref is not None:
            return self._refs.open(node, entry)  # fetched from its source, pinned (fs/refs.py)
        f.pieces = pieces(entry)
        f.index = piece_index(entry)
        if entry.pack is not None:
            f.data = self.content.peek(f.pieces[0])
            if f.data is None:
                if node.kind == FILE and node.immutable:
                    neighbours, inodes = self._pack_neighbours(node)
                    f.data = await self.content.get(f.pieces[0], neighbours, self._kernel_store(inodes))
                else:
                    f.data = await self.content.get(f.pieces[0])
        return f

    def _pack_neighbours(self, node: Node) -> tuple[list[Piece], dict[bytes, int]]:
        """The files after this one in the same pack, which one GET brings along, and the inodes
        the kernel holds for this file and those (by digest). Read straight from the manifest's
        columns: this runs on every cold open."""
        m, i = node.manifest, node.index
        pack = m.packs[i]
        key = pack_key(m.pack_ids[pack])
        digests, sizes, offsets, packs = m.digests, m.sizes, m.offsets, m.packs
        out, total = [], 0
        inodes = {digests[i * 32:(i + 1) * 32]: node.ino}
        end = min(len(m), i + 1 + SMALL_RUN_FILES)
        for j in range(i + 1, end):
            if packs[j] != pack or total >= SMALL_RUN_BYTES:
                break
            digest = digests[j * 32:(j + 1) * 32]
            if not self.content.cached_digest(digest):
                out.append(Piece(digest, sizes[j], key, offsets[j]))
                known = self.tree.known(node.key[:4] + (j,))
                if known is not None and known.lookups > 0:
                    inodes.setdefault(digest, known.ino)
            total += sizes[j]
        return out, inodes

    @staticmethod
    def _kernel_store(inodes: dict[bytes, int]):
        """Puts loaded small files straight into the kernel's page cache of their inodes (they
        are immutable and opened with keep_cache), so reading them later costs no READ request.
        Runs in the loading worker thread: the store can wait on a page lock that only a reply
        from the trio thread releases."""
        def store(piece: Piece, data: bytes) -> None:
            ino = inodes.get(piece.digest)
            if ino is not None and data:
                try:
                    pyfuse3.notify_store(ino, 0, data)
                except OSError:  # the kernel forgot the inode meanwhile; nothing lost
                    pass
        return store

    def _note_read(self, node: Node) -> None:
        """The first read of a version in this mount is a use (lineage); off the hot path."""
        key = (node.artifact, node.version.number)
        if key not in self._read_versions:
            self._read_versions.add(key)
            self.content.spawn(self.on_first_read, node.version)

    @boundary
    async def read(self, fh, off, size):
        f = self._handles[fh]
        if isinstance(f, DraftFile):
            return await self._blocking(os.pread, f.fd, size, off)
        if isinstance(f, RefHandle):
            return await self._refs.read(f, off, size)
        if f.data is not None:
            return f.data[off:off + size]
        ps = f.pieces
        total = f.size
        if off >= total or size == 0:
            return b""
        end = min(off + size, total)
        first, last = off // CHUNK_SIZE, (end - 1) // CHUNK_SIZE
        # Read-ahead doubles while reads are sequential and stops after a seek. It starts only
        # at exactly where the last read ended (a random read that merely lands nearby must
        # not start megabytes of read-ahead); once going, the kernel's own readahead sends
        # several READs at once and they may be answered in any order, so it goes on while
        # reads stay within a READ's size of the furthest point read so far.
        if off == f.next_offset or (f.window and abs(off - f.next_offset) <= SEQUENTIAL_SLACK):
            f.window = min(max(f.window * 2, 2), MAX_WINDOW)
            f.next_offset = max(f.next_offset, end)
        else:
            f.window = 0  # random access: fetch only what is asked for
            f.next_offset = end
            # A small random read of chunks not at hand (memory, on their way, disk cache):
            # only the 64 KiB pieces it needs, verified by the piece index.
            if f.index is not None and end - off <= SMALL_READ and not all(
                    self.content.at_hand(p) for p in ps[first:last + 1]):
                data = await self.content.read_pieces(f.index, ps[first:last + 1], off, end)
                if data is not None:
                    return data
                f.index = None  # no usable piece index: whole chunks from now on
        if f.window:
            # Whole runs at fixed boundaries: each ranged GET brings RUN_CHUNKS chunks, rather
            # than one new chunk per GET as the window slides forward.
            # Once reading is clearly sequential, GETs double (the store spends less per byte).
            run = RUN_CHUNKS if f.window < MAX_WINDOW else 2 * RUN_CHUNKS
            start = (last + 1) - (last + 1) % run
            stop = min(len(ps), -(-(last + 1 + f.window) // run) * run)
            for k in range(start, stop, run):
                self.content.prefetch(ps[k:k + run])
        parts = []
        for p in ps[first:last + 1]:
            parts.append(await self.content.get(p))
        blob = parts[0] if len(parts) == 1 else b"".join(parts)
        start = off - first * CHUNK_SIZE
        return blob[start:start + (end - off)]

    async def release(self, fh):
        f = self._handles.pop(fh, None)
        if isinstance(f, DraftFile):
            try:
                if f.dirty and f.node.draft.durable:  # written after the last flush (mmap)
                    await self._blocking(os.fsync, f.fd)
            except OSError as e:
                log.warning("fsync of %s failed: %s", f.node.key, e)
            finally:
                os.close(f.fd)

    # -- extended attributes ------------------------------------------------------------------
    @boundary
    async def getxattr(self, inode, name, ctx):
        text = os.fsdecode(name)
        if not text.startswith("user."):
            # No security labels and no ACLs here. ENOTSUP (not ENODATA) says so for the whole
            # file system: `ls -l` asks for both on every file, and stops asking on a device
            # that answered ENOTSUP once, which saves two requests per file listed.
            raise pyfuse3.FUSEError(errno.EOPNOTSUPP)
        if not text.startswith("user.artfs."):
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        node = self.tree.node(inode)
        if text.startswith(RESULT_XATTR) and node.kind == DRAFTS_DIR:
            result = self._results.pop(text[len(RESULT_XATTR):], None)
            if result is None:
                raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
            return result
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
        # What drafts can still hold: the free space of the disk they live on.
        st = await self._blocking(os.statvfs, self.tree.drafts.drafts.root)
        s = pyfuse3.StatvfsData()
        for field in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree", "f_favail"):
            setattr(s, field, getattr(st, field))
        s.f_namemax = 255
        return s
