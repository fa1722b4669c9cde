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
import stat

import pyfuse3
import trio
from cachetools import TTLCache

import json

from ..digest import CHUNK_SIZE
from ..drafts import FsError
from ..errors import ArtfsError, InvalidInput
from ..fetch import Piece, pieces
from ..publish import pack_key
from ..registry import check_metadata
from .content import ContentSource
from .refs import RefHandle, RefReader
from .tree import ALIAS, ARTIFACT, DRAFT, DRAFTS_DIR, FILE, IN_DRAFT, PROJECT, ROOT, VERSION, Node, Tree
from .tree import Attr as TreeAttr

log = logging.getLogger(__name__)

IMMUTABLE_TIMEOUT = 24 * 3600.0
DRAFT_TIMEOUT = 1.0  # drafts change only through this mount, but commits remove them
COMMIT_XATTR = "user.artfs.commit"
RESULT_XATTR = "user.artfs.result."
SMALL_RUN_BYTES = 4 << 20  # read-ahead through a pack when a small file is opened
SMALL_RUN_FILES = 512
MAX_WINDOW = 64  # chunks of read-ahead for a sequentially read large file
RUN_CHUNKS = 8  # chunks fetched by one ranged GET of read-ahead
SEQUENTIAL_SLACK = 8 << 20


_logged_recently: TTLCache = TTLCache(maxsize=4096, ttl=60.0)


def _warn_once(handler: str, error: Exception) -> None:
    """One log line per distinct failure a minute: an outage fails every read, and the
    kernel retries each one, but the log should say it once, with the entry and cause."""
    line = f"{handler}: {error}"
    if line not in _logged_recently:
        _logged_recently[line] = True
        log.warning("%s", line)


def boundary(handler):
    @functools.wraps(handler)
    async def wrapper(self, *args):
        try:
            return await handler(self, *args)
        except pyfuse3.FUSEError:
            raise
        except ArtfsError as e:
            if e.errno not in (errno.ENOENT,):
                _warn_once(handler.__name__, e)
            raise pyfuse3.FUSEError(e.errno) from None
        except OSError as e:
            _warn_once(handler.__name__, e)
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from None
        except Exception:
            log.exception("%s failed; answering EIO", handler.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper


class OpenFile:
    """One open() of a version file: its pieces and its read-ahead state."""

    __slots__ = ("node", "pieces", "data", "next_offset", "window", "size")

    def __init__(self, node: Node):
        self.node = node
        self.pieces = None
        self.data: bytes | None = None  # whole content for small files
        self.next_offset = 0
        self.window = 0


class DraftFile:
    """One open() of a locally written draft file: an OS descriptor on its data file."""

    __slots__ = ("node", "fd", "dirty")

    def __init__(self, node: Node, fd: int):
        self.node, self.fd, self.dirty = node, fd, False


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
        self._results: dict[str, bytes] = {}  # commit token -> JSON outcome
        self._refs = RefReader(self._blocking)  # reference entries: read from their source (fs/refs.py)

    # -- helpers --------------------------------------------------------------------
    async def _blocking(self, fn, *args):
        return await trio.to_thread.run_sync(fn, *args, limiter=self.content.limiter)

    async def _entry_of(self, node: Node) -> pyfuse3.EntryAttributes:
        if node.kind in IN_DRAFT:
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
        for f in self._handles.values():
            if isinstance(f, DraftFile) and f.node.ino == node.ino:
                st = os.fstat(f.fd)
                return TreeAttr(node.ino, stat.S_IFREG | 0o644, st.st_size, st.st_mtime, 0)
            if isinstance(f, OpenFile) and f.node.ino == node.ino:
                return TreeAttr(node.ino, stat.S_IFREG | 0o444, f.size, self.tree.started, 0)
        return None

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
        if self.tree.needs_thread(parent):
            node = await self._blocking(self.tree.lookup, parent, name)
        else:
            node = self.tree.lookup(parent, name)
        entry = await self._entry_of(node)
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
        if entry.pack is not None:
            f.data = self.content.peek(f.pieces[0])
            if f.data is None:
                neighbours = self._pack_neighbours(node) if node.kind == FILE else []
                f.data = await self.content.get(f.pieces[0], neighbours)
        return f

    def _pack_neighbours(self, node: Node) -> list:
        """The files after this one in the same pack: one GET brings them all.
        Read straight from the manifest's columns: this runs on every cold open."""
        m, i = node.manifest, node.index
        pack = m.packs[i]
        key = pack_key(m.pack_ids[pack])
        digests, sizes, offsets, packs = m.digests, m.sizes, m.offsets, m.packs
        out, total = [], 0
        end = min(len(m), i + 1 + SMALL_RUN_FILES)
        for j in range(i + 1, end):
            if packs[j] != pack or total >= SMALL_RUN_BYTES:
                break
            digest = digests[j * 32:(j + 1) * 32]
            if not self.content.cached_digest(digest):
                out.append(Piece(digest, sizes[j], key, offsets[j]))
            total += sizes[j]
        return out

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
        # Read-ahead doubles while reads are sequential and stops after a seek. The kernel's
        # own readahead sends several READs at once and they arrive in any order, so
        # "sequential" means near the furthest point read so far, not exactly at it.
        if abs(off - f.next_offset) <= SEQUENTIAL_SLACK:
            f.window = min(max(f.window * 2, 2), MAX_WINDOW)
            f.next_offset = max(f.next_offset, end)
        else:
            f.window = 0  # random access: fetch only what is asked for
            f.next_offset = end
        if f.window:
            # Whole runs at fixed boundaries: each ranged GET brings RUN_CHUNKS chunks, rather
            # than one new chunk per GET as the window slides forward.
            start = (last + 1) - (last + 1) % RUN_CHUNKS
            stop = min(len(ps), -(-(last + 1 + f.window) // RUN_CHUNKS) * RUN_CHUNKS)
            for k in range(start, stop, RUN_CHUNKS):
                self.content.prefetch(ps[k:k + RUN_CHUNKS])
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
        if not text.startswith("user.artfs."):
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)  # ls asks for security.* and ACLs on every file
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

    # -- drafts: everything that writes ------------------------------------------------------
    def _in_draft(self, node: Node) -> None:
        if node.kind not in IN_DRAFT:
            raise pyfuse3.FUSEError(errno.EROFS)
        self.tree.drafts.check_writable()

    async def _reply_new(self, parent: Node, dino: int) -> tuple[Node, pyfuse3.EntryAttributes]:
        child = self.tree.draft_node(parent, dino)
        entry = await self._entry_of(child)
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
            return (await self._reply_new(parent, attr.ino))[1]
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
        attr = await self._blocking(parent.draft.create, parent.dino, os.fsdecode(name), mode)
        child, entry = await self._reply_new(parent, attr.ino)
        fd = await self._blocking(os.open, parent.draft.data_path(attr.ino), os.O_RDWR)
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
        fd = await self._blocking(os.open, draft.data_path(node.dino), mode | (flags & os.O_TRUNC))
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
        return await self._blocking(os.pwrite, f.fd, buf, off)

    @boundary
    async def flush(self, fh):
        """close() waits for this: a closed draft file is durable, even across a host crash
        (DESIGN.md). Costs one cheap request per close of any file; nothing else is done."""
        f = self._handles.get(fh)
        if isinstance(f, DraftFile) and f.dirty and f.node.draft.durable:
            await self._blocking(os.fsync, f.fd)
            f.dirty = False

    @boundary
    async def fsync(self, fh, datasync):
        f = self._handles.get(fh)
        if isinstance(f, DraftFile) and f.dirty:
            await self._blocking(os.fdatasync if datasync else os.fsync, f.fd)
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
        if fields.update_size:
            base = await self._blocking(draft.base_entry, node.dino)
            if base is not None:
                content = None if attr.st_size == 0 else await self._read_whole(node, base)
                await self._blocking(draft.make_local, node.dino, None if content is None else _writer(content))
            await self._blocking(os.truncate, draft.data_path(node.dino), attr.st_size)
        mode = attr.st_mode if fields.update_mode else None
        mtime = attr.st_mtime_ns if fields.update_mtime else None
        if mode is not None or mtime is not None:
            await self._blocking(draft.setattr, node.dino, mode, mtime)
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
