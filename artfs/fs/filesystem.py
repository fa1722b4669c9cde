"""The filesystem core: every request the kernel can make, answered without FUSE.

Names come in as bytes and replies go out as `Reply` (attributes and how long
the kernel may cache them); errors are the typed errors of artfs.errors. The
FUSE adapter (fs/fuse/ops.py) only translates; a test drives this class
directly. Requests that change drafts are in drafting.py; reading stored
files is reader.py's policy. Cache timeouts follow mutability: version trees
are immutable and cached by the kernel for a day (and opened with
keep_cache); listings above them live for the refresh interval.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import MutableMapping
from typing import Any, Callable, Iterator

import trio
from cachetools import TTLCache

from artfs.errors import ArtfsError, CorruptRecord, FsError, NotFound, NotSupported, ReadOnly
from artfs.fs.content import ContentSource
from artfs.fs.drafting import DraftChanges, DraftFile
from artfs.fs.handles import Handles
from artfs.fs.kernel import Kernel
from artfs.fs.reader import OpenFile, StoredReader
from artfs.fs.refs import RefHandle, RefReader
from artfs.fs.replies import Opened, Reply
from artfs.names import kernel_name as file_name
from artfs.fs.tree import ALIAS, DRAFTS_DIR, FILE, IN_DRAFT, VERSION, Attr, Node, NotLoaded, Tree

IMMUTABLE_TIMEOUT = 24 * 3600.0
DRAFT_TIMEOUT = 1.0  # drafts change only through this mount, but commits remove them
RESULT_XATTR = "user.artfs.result."


@contextlib.contextmanager
def _naming_version(node: Node):
    """A damaged manifest shard met under a version is named with the version: the shard
    may be shared by many, and the one log line should say which one was being read."""
    try:
        yield
    except CorruptRecord as e:
        if node.version is None or str(e).startswith(f"{node.version}:"):
            raise
        raise CorruptRecord(f"{node.version}: {e}") from None


class FileSystem(DraftChanges):
    def __init__(
        self,
        tree: Tree,
        content: ContentSource,
        refresh: float,
        on_first_read: Callable[[Any], None] | None = None,
        kernel: Kernel | None = None,
    ):
        self.tree = tree
        self.content = content
        self.refresh = refresh
        self.kernel = kernel or Kernel()
        self.on_first_read = on_first_read or (lambda rec: None)
        self.handles = Handles()
        self.stored = StoredReader(tree, content, self.kernel)
        self._read_versions: set = set()
        # commit token -> JSON outcome, read by the committing `artfs commit` (bounded: one nobody reads goes)
        self._results: MutableMapping[str, bytes] = TTLCache(maxsize=4096, ttl=600)
        self._refs = RefReader(
            self._blocking, content.timeout
        )  # reference entries: read from their source (fs/refs.py)
        self.initialized = trio.Event()  # set once the kernel's INIT is answered

    def init(self) -> None:
        self.initialized.set()

    @property
    def flush_needed(self) -> bool:
        """Whether close() has work to do here: only with --sync-on-close (drafts synced at close)."""
        return self.tree.drafts.drafts.durable

    async def _blocking(self, fn, *args):
        return await trio.to_thread.run_sync(fn, *args, limiter=self.content.limiter)

    # -- attributes -----------------------------------------------------------------------
    def reply(self, node: Node, a: Attr | None = None) -> Reply:
        a = a or self.tree.attr(node)
        timeout = IMMUTABLE_TIMEOUT if node.immutable else DRAFT_TIMEOUT if node.kind in IN_DRAFT else self.refresh
        entry_timeout = self.refresh if node.kind == VERSION else timeout  # vN goes when deleted (artfs rm)
        return Reply(a, entry_timeout, timeout)

    async def reply_of(self, node: Node) -> Reply:
        if node.kind in IN_DRAFT:
            a = self.tree.attr_cached(node)  # most draft attributes are in memory
            if a is not None:
                return self.reply(node, a)
            try:
                a = await self._blocking(self.tree.attr, node)
            except ArtfsError as e:
                a = self._unlinked_attr(node) if e.errno == errno.ENOENT else None
                if a is None:
                    raise
            return self.reply(node, a)
        return self.reply(node)

    def _unlinked_attr(self, node: Node) -> Attr | None:
        """A draft file unlinked (or renamed over) while open stays usable through its
        descriptors, as POSIX says: the kernel still asks for its attributes (fstat, and
        before reads after a write), answered from an open handle."""
        held = self.handles.held(node.ino, (DraftFile, OpenFile))
        if isinstance(held, DraftFile):
            st = os.fstat(held.fd)
            return Attr(node.ino, stat.S_IFREG | 0o644, st.st_size, st.st_mtime, 0)
        if isinstance(held, OpenFile):
            return Attr(node.ino, stat.S_IFREG | 0o444, held.size, self.tree.started, 0)
        return None

    # -- lookups --------------------------------------------------------------------------
    async def lookup(self, parent_ino: int, raw_name: bytes) -> Reply:
        parent = self.tree.node(parent_ino)
        name = file_name(raw_name)
        if name in (".", ".."):
            raise FsError(errno.ENOENT)
        with _naming_version(parent):
            if not self.tree.needs_thread(parent):
                node, a = self.tree.lookup(parent, name), None
            else:
                # In a draft, names (and missing names: each file `cp` makes is looked up first)
                # are mostly known in memory; else one worker-thread call brings node and attributes.
                hit = self.tree.lookup_cached(parent, name)
                node, a = hit if hit is not None else await self._blocking(self.tree.lookup_attr, parent, name)
        reply = self.reply(node, a) if a is not None else await self.reply_of(node)
        self.tree.remember(node)
        return reply

    def forget(self, inodes: list[tuple[int, int]]) -> None:
        for ino, count in inodes:
            self.tree.forget(ino, count)

    async def node(self, ino: int) -> Node:
        """The node of `ino`; a file's made again in a worker thread if its shard must be fetched."""
        try:
            return self.tree.node(ino)
        except NotLoaded:
            return await self._blocking(self.tree.node_blocking, ino)

    async def getattr(self, ino: int) -> Reply:
        return await self.reply_of(await self.node(ino))

    def readlink(self, ino: int) -> bytes:
        try:
            node = self.tree.node(ino)
        except NotLoaded:  # a file
            raise FsError(errno.EINVAL) from None
        if node.kind != ALIAS:
            raise FsError(errno.EINVAL)
        return os.fsencode(node.target)

    # -- folders --------------------------------------------------------------------------
    async def opendir(self, ino: int) -> int:
        node = self.tree.node(ino)
        with _naming_version(node):
            if self.tree.needs_thread(node):
                # Small, changing folders: resolve every child and its attributes at once.
                children = await self._blocking(self._resolve_children, node)
            else:
                children = self.tree.children(node)  # version trees: children made as listed
        own = await self.reply_of(node)  # for '.' and '..'
        return self.handles.add((node, children, own))

    def _resolve_children(self, node: Node) -> list:
        out = []
        for name, how in self.tree.children(node):
            try:
                child = self.tree.child_node(node, name, how)
                out.append((name, child, self.tree.attr(child)))
            except NotFound:
                continue  # vanished between listing and looking (a store failure is the listing's)
        return out

    def listing(self, fh: int, start: int) -> Iterator[tuple[int, bytes, Reply, Node | None]]:
        """(next offset, name, reply, node) from `start` on, '.' and '..' first (as ext4 lists
        them; node None: the kernel takes no reference to them, so they are not `listed`;
        '..' shows the folder's own attributes); the caller calls `listed(node)` for each
        other entry the kernel took."""
        node, children, own = self.handles.get(fh)
        for i, dot in enumerate((b".", b"..")):
            if start <= i:
                yield i + 1, dot, own, None
        for i in range(max(start - 2, 0), len(children)):
            item = children[i]
            if len(item) == 3:
                name, child, attr = item
                reply = self.reply(child, attr)
            else:
                name, how = item
                child = self.tree.child_node(node, name, how)
                reply = self.reply(child)
            yield i + 3, os.fsencode(name), reply, child

    def listed(self, node: Node) -> None:
        self.tree.remember(node)

    def releasedir(self, fh: int) -> None:
        self.handles.pop(fh)

    # -- files ----------------------------------------------------------------------------
    async def open(self, ino: int, flags: int) -> Opened:
        node = await self.node(ino)
        writing = bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND))
        if node.kind in IN_DRAFT:
            return await self._open_draft_file(node, flags, writing)
        if writing:
            raise ReadOnly("versions are read-only; write in a draft")
        if node.kind != FILE:
            raise FsError(errno.EISDIR)
        assert node.manifest is not None
        f = await self._open_stored(node, node.manifest.entry(node.index))
        self._note_read(node)
        return Opened(self.handles.add(f), keep_cache=True, direct_io=getattr(f, "direct_io", False))

    async def _open_stored(self, node: Node, entry) -> OpenFile | RefHandle:
        if entry.ref is not None:
            return self._refs.open(node, entry)  # fetched from its source, pinned (fs/refs.py)
        return await self.stored.open(node, entry)

    def _note_read(self, node: Node) -> None:
        """The first read of a version in this mount is a use (lineage); off the hot path."""
        assert node.version is not None
        key = (node.artifact, node.version.number)
        if key not in self._read_versions:
            self._read_versions.add(key)
            self.content.spawn(self.on_first_read, node.version)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        f = self.handles.get(fh)
        if isinstance(f, DraftFile):
            return await self._blocking(os.pread, f.fd, size, off)
        if isinstance(f, RefHandle):
            return await self._refs.read(f, off, size)
        return await self.stored.read(f, off, size)

    async def release(self, fh: int) -> None:
        f = self.handles.pop(fh)
        if isinstance(f, DraftFile):
            await self.close_draft_file(f)

    # -- extended attributes --------------------------------------------------------------
    async def getxattr(self, ino: int, raw_name: bytes) -> bytes:
        text = os.fsdecode(raw_name)
        if not text.startswith("user."):
            # No security labels and no ACLs here. ENOTSUP (not ENODATA) says so for the whole
            # file system: `ls -l` asks for both on every file, and stops asking on a device
            # that answered ENOTSUP once, which saves two requests per file listed.
            raise NotSupported(f"no {text} on artfs")
        if not text.startswith("user.artfs."):
            raise FsError(errno.ENODATA)
        node = await self.node(ino)
        if text.startswith(RESULT_XATTR) and node.kind == DRAFTS_DIR:
            # Kept, not popped: a reader with too small a buffer (ERANGE) asks again.
            result = self._results.get(text[len(RESULT_XATTR) :])
            if result is None:
                raise FsError(errno.ENODATA)
            return result
        value = (await self.xattrs(node)).get(text)
        if value is None:
            raise FsError(errno.ENODATA)
        return value

    async def xattrs(self, node: Node) -> dict[str, bytes]:
        if self.tree.needs_thread(node):
            return await self._blocking(self.tree.xattrs, node)
        return self.tree.xattrs(node)

    async def listxattr(self, ino: int) -> list[bytes]:
        return [os.fsencode(k) for k in await self.xattrs(await self.node(ino))]

    async def statfs(self) -> os.statvfs_result:
        """What drafts can still hold: the free space of the disk they live on."""
        return await self._blocking(os.statvfs, self.tree.drafts.drafts.root)
