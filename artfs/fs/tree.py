"""What the store looks like as a file system is defined here and only here.

    /<project>/<artifact>/v<N>/...      read-only version trees
    /<project>/<artifact>/<alias>       symlink -> v<N>
    /<project>/<artifact>/drafts/       drafts (writable; see the drafts layer)

Nodes get inode numbers on first sight and keep them while the kernel knows
them (lookup counts). Version trees are immutable, so their nodes carry the
version and entry index and nothing ever needs invalidating. A file of a
version has an inode number made of its version's slot and its entry index,
so its node can be dropped (a bounded LRU holds FILE_NODES of them, whatever
the kernel holds: a `find` over ten million files) and made again on demand;
made again, it may need its shard, which `node` does not wait for (NotLoaded:
the caller asks `node_blocking` in a worker thread). Methods that may list the
store (`*_blocking`) must run in a worker thread; the rest only touch memory
and are safe on the trio thread. One lock guards the tables.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import stat
import threading
import time
from dataclasses import dataclass, field

from cachetools import LRUCache

from artfs.drafts.draft import Draft
from artfs.drafts.namespace import ROOT as DRAFT_ROOT
from artfs.errors import FsError, NotFound
from artfs.fs.catalog import Catalog
from artfs.fs.draftset import DraftSet
from artfs.names import ArtifactName, parse_version, version_name
from artfs.store.manifest import Entry, Manifest
from artfs.store.shards import AnyManifest
from artfs.store.registry import VersionRecord

ROOT_INO = 1
SHRINK_ABOVE = 1 << 16  # node tables are copied smaller only past this many nodes
FILE_INOS = 1 << 62  # files of versions: FILE_INOS + (version slot << INDEX_BITS) + entry index
INDEX_BITS = 36
# File nodes kept made (~600 B each); the rest are made again from their inode number.
FILE_NODES = int(os.environ.get("ARTFS_FILE_NODES", 1 << 16))


class NotLoaded(Exception):
    """A file's node must be made again and its shard is not in memory: call `node_blocking`
    in a worker thread."""


DRAFTS = "drafts"

# kinds
ROOT, PROJECT, ARTIFACT, VERSION, DIR, FILE, ALIAS, DRAFTS_DIR, DRAFT, DNODE = (
    "root",
    "project",
    "artifact",
    "version",
    "dir",
    "file",
    "alias",
    "drafts",
    "draft",
    "dnode",
)
IMMUTABLE = {VERSION, DIR, FILE}
IN_DRAFT = {DRAFT, DNODE}  # a draft's root folder, and anything below it


@dataclass(eq=False, slots=True)  # one per name the kernel holds: millions after a `find`
class Node:
    ino: int
    kind: str
    key: tuple
    project: str = ""
    artifact: ArtifactName | None = None
    version: VersionRecord | None = None
    path: str = ""  # inside the version
    index: int = -1  # for files: the entry's index in `manifest` (its shard, if sharded)
    offset: int = 0  # for files: the index in the whole manifest of `manifest`'s first entry
    target: str = ""  # alias symlink target
    lookups: int = 0
    manifest: AnyManifest | None = field(default=None, repr=False)  # a file's: the part holding it
    draft: Draft | None = field(default=None, repr=False)
    dino: int = 0  # inode inside the draft
    draft_name: str = ""

    # Checked accessors: each kind of node has the fields its kind needs (a version node its
    # record, a node in a draft its draft…); these say so to the type checker, and fail loudly.
    @property
    def record(self) -> VersionRecord:
        assert self.version is not None, self
        return self.version

    @property
    def the_manifest(self) -> AnyManifest:
        assert self.manifest is not None, self
        return self.manifest

    @property
    def part(self) -> Manifest:
        """A file's part of the manifest (the shard holding it, if sharded)."""
        assert isinstance(self.manifest, Manifest), self
        return self.manifest

    @property
    def the_draft(self) -> Draft:
        assert self.draft is not None, self
        return self.draft

    @property
    def artifact_name(self) -> ArtifactName:
        assert self.artifact is not None, self
        return self.artifact

    @property
    def immutable(self) -> bool:
        return self.kind in IMMUTABLE and self.record.number >= 0  # pending distributed trees still grow


def give_back_memory() -> None:
    """Returns freed heap to the system (glibc keeps it otherwise); no-op elsewhere."""
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


@dataclass
class Attr:
    ino: int
    mode: int
    size: int
    mtime: float
    nlink: int = 1
    mtime_ns: int | None = None  # exact (a float loses the nanoseconds rsync compares); None: from mtime
    ctime_ns: int | None = None  # None: the mtime
    atime_ns: int | None = None  # None: the mtime

    @property
    def st_mtime_ns(self) -> int:
        return self.mtime_ns if self.mtime_ns is not None else int(self.mtime * 1e9)

    @property
    def st_ctime_ns(self) -> int:
        return self.ctime_ns if self.ctime_ns is not None else self.st_mtime_ns

    @property
    def st_atime_ns(self) -> int:
        return self.atime_ns if self.atime_ns is not None else self.st_mtime_ns


def _attr_ns(ino: int, mode: int, size: int, mtime_ns: int, nlink: int = 1) -> Attr:
    return Attr(ino, mode, size, mtime_ns / 1e9, nlink, mtime_ns)


class Tree:
    def __init__(self, catalog: Catalog, load_manifest, drafts: DraftSet, uid: int = 0, gid: int = 0):
        self.catalog = catalog
        self.drafts = drafts
        self.load_manifest = load_manifest  # VersionRecord -> Manifest (blocking)
        self.uid, self.gid = uid, gid
        self.started = time.time()
        self._lock = threading.Lock()
        self._by_ino: dict[int, Node] = {}
        self._by_key: dict[tuple, Node] = {}
        self._next_ino = ROOT_INO + 1
        self._peak = 0  # the most nodes held since the tables were last copied
        self._files: LRUCache = LRUCache(maxsize=FILE_NODES)  # file nodes of versions, by inode
        self._slots: list[tuple] = []  # version node keys by slot (one per version seen: few)
        self._slot_of: dict[tuple, int] = {}  # version node key -> slot
        root = Node(ROOT_INO, ROOT, ("root",))
        self._by_ino[ROOT_INO] = root
        self._by_key[root.key] = root

    # -- inode table ----------------------------------------------------------
    def node(self, ino: int) -> Node:
        if ino >= FILE_INOS:
            return self._file_node(ino, wait=False)
        n = self._by_ino.get(ino)
        if n is None:
            raise NotFound(f"inode {ino} is no longer known")
        return n

    def node_blocking(self, ino: int) -> Node:
        """`node`, fetching the shard a file's node needs (in a worker thread)."""
        return self._file_node(ino, wait=True) if ino >= FILE_INOS else self.node(ino)

    def _file_node(self, ino: int, wait: bool) -> Node:
        with self._lock:
            n = self._files.get(ino)
            if n is not None:
                return n
            slot, index = divmod(ino - FILE_INOS, 1 << INDEX_BITS)
            # The kernel holds a file's folders while it holds the file: its version's node too.
            version = self._by_key.get(self._slots[slot]) if slot < len(self._slots) else None
            if version is None or version.manifest is None:
                raise NotFound(f"inode {ino} is no longer known")
        m = version.manifest
        found = m.locate(index) if wait else m.locate_loaded(index)
        if found is None:
            raise NotLoaded(ino)
        part, local = found
        path = part.paths[local]
        return self._file(version, ino, path, index, part, local)

    def _file(self, version: Node, ino: int, path: str, index: int, part: Manifest, local: int) -> Node:
        rec = version.record
        key = ("e", rec.artifact, rec.number, rec.manifest, index)
        with self._lock:
            n = self._files.get(ino)
            if n is None:
                n = Node(ino, FILE, key, version.project, version.artifact_name, rec, path, local, index - local)
                n.manifest = part
                self._files[ino] = n
            return n

    def _slot(self, version: Node) -> int:
        with self._lock:
            slot = self._slot_of.get(version.key)
            if slot is None:
                slot = self._slot_of[version.key] = len(self._slots)
                self._slots.append(version.key)
            return slot

    def _get(self, key: tuple, make) -> Node:
        with self._lock:
            n = self._by_key.get(key)
            if n is None:
                n = make(self._next_ino)
                self._next_ino += 1
                self._by_key[key] = n
                self._by_ino[n.ino] = n
            return n

    def remember(self, node: Node) -> None:
        """The kernel now holds one more reference (lookup, readdirplus entry)."""
        with self._lock:
            node.lookups += 1
            if node.ino >= FILE_INOS:  # made again from its number whenever needed
                self._files[node.ino] = node
                return
            if self._by_ino.get(node.ino) is not node:
                # forgotten between being found (in a worker thread) and this reply: the
                # kernel is about to hold it again, so it must stay resolvable.
                self._by_ino[node.ino] = node
                self._by_key.setdefault(node.key, node)

    def forget(self, ino: int, count: int) -> None:
        with self._lock:
            if ino >= FILE_INOS:  # files of versions are made again from their number
                made = self._files.get(ino)
                if made is not None:
                    made.lookups = max(made.lookups - count, 0)
                return
            n = self._by_ino.get(ino)
            if n is None or ino == ROOT_INO:
                return
            n.lookups -= count
            if n.lookups <= 0:
                del self._by_ino[ino]
                if self._by_key.get(n.key) is n:
                    del self._by_key[n.key]
                self._shrink()

    def _shrink(self) -> None:
        """Dicts keep their size after deletions: once the kernel has let go of most names it
        held (after a `find`, under memory pressure), copy the tables and give the memory back."""
        size = len(self._by_ino)
        self._peak = max(self._peak, size)
        if self._peak > SHRINK_ABOVE and size < self._peak // 4:
            self._by_ino, self._by_key = dict(self._by_ino), dict(self._by_key)
            self._peak = size
            give_back_memory()

    # -- node factories ---------------------------------------------------------
    def _project(self, p: str) -> Node:
        return self._get(("p", p), lambda ino: Node(ino, PROJECT, ("p", p), project=p))

    def _artifact(self, a: ArtifactName) -> Node:
        return self._get(("a", a), lambda ino: Node(ino, ARTIFACT, ("a", a), project=a.project, artifact=a))

    def _version(self, rec: VersionRecord, manifest: AnyManifest | None = None) -> Node:
        key = ("v", rec.artifact, rec.number, rec.manifest)
        return self._get(
            key,
            lambda ino: Node(
                ino, VERSION, key, project=rec.artifact.project, artifact=rec.artifact, version=rec, manifest=manifest
            ),
        )

    def _alias(self, a: ArtifactName, alias: str, target: str) -> Node:
        key = ("l", a, alias, target)  # a moved alias is a new node: no stale readlink
        return self._get(key, lambda ino: Node(ino, ALIAS, key, project=a.project, artifact=a, target=target))

    def _drafts(self, a: ArtifactName) -> Node:
        key = ("d", a)
        return self._get(key, lambda ino: Node(ino, DRAFTS_DIR, key, project=a.project, artifact=a))

    def _draft_root(self, a: ArtifactName, name: str) -> Node:
        draft = self.drafts.get(a, name)
        key = ("x", draft.path, DRAFT_ROOT)
        return self._get(
            key,
            lambda ino: Node(
                ino, DRAFT, key, project=a.project, artifact=a, draft=draft, dino=DRAFT_ROOT, draft_name=name
            ),
        )

    def draft_node(self, parent: Node, dino: int) -> Node:
        key = ("x", parent.the_draft.path, dino)
        return self._get(
            key,
            lambda ino: Node(
                ino,
                DNODE,
                key,
                project=parent.project,
                artifact=parent.artifact_name,
                draft=parent.draft,
                dino=dino,
                draft_name=parent.draft_name,
            ),
        )

    def known(self, key: tuple) -> Node | None:
        if key[0] == "e":  # a file of a version: made, if its version has a slot
            slot = self._slot_of.get(("v", *key[1:4]))
            with self._lock:
                return None if slot is None else self._files.get(FILE_INOS + (slot << INDEX_BITS) + key[4])
        return self._by_key.get(key)

    def drop(self, node: Node) -> None:
        """Forgets a node whose thing is gone (a committed or discarded draft)."""
        with self._lock:
            if self._by_key.get(node.key) is node:
                del self._by_key[node.key]

    def _inside(self, parent: Node, name: str, index: int | None) -> Node:
        path = f"{parent.path}/{name}" if parent.path else name
        rec = parent.record
        key: tuple
        manifest, local = parent.manifest, -1
        if index is None:
            key = ("f", rec.artifact, rec.number, rec.manifest, path)
            kind = DIR
        else:
            # A file keeps the part of the manifest it is in (one shard of a sharded one):
            # its attributes and reads need no other.
            version = self._by_key.get(("v", rec.artifact, rec.number, rec.manifest))
            if version is None or version.manifest is None:  # forgotten meanwhile: the parent's
                version = self._version(rec, parent.manifest)
            ino = FILE_INOS + (self._slot(version) << INDEX_BITS) + index
            with self._lock:
                known = self._files.get(ino)
            if known is not None:
                return known
            part, local = parent.the_manifest.locate(index)
            return self._file(version, ino, path, index, part, local)
        return self._get(
            key,
            lambda ino: Node(
                ino,
                kind,
                key,
                project=parent.project,
                artifact=parent.artifact_name,
                version=rec,
                path=path,
                index=local,
                offset=-1 if index is None else index - local,
                manifest=manifest,
            ),
        )

    # -- directory contents -------------------------------------------------------
    def needs_thread(self, node: Node) -> bool:
        """Whether listing, looking up in or stat-ing `node` may block (store or disk)."""
        if node.kind == FILE:
            return False
        if node.kind in (DIR, VERSION):  # a sharded manifest may have to read a shard
            return node.manifest is None or node.manifest.sharded
        return True

    def projects(self) -> list[str]:
        return sorted(set(self.catalog.projects()) | set(self.drafts.drafts.pending_projects()))

    def artifacts(self, project: str) -> list[str]:
        return sorted(set(self.catalog.artifacts(project)) | set(self.drafts.drafts.pending_artifacts(project)))

    def ensure_manifest_blocking(self, node: Node) -> AnyManifest:
        if node.manifest is None:
            node.manifest = self.load_manifest(node.record)
        return node.manifest

    def lookup(self, parent: Node, name: str) -> Node:
        """Child `name` of `parent` (blocking unless `needs_thread(parent)` is False)."""
        kind = parent.kind
        if kind == ROOT:
            if name in self.projects():
                return self._project(name)
        elif kind == PROJECT:
            if name in self.artifacts(parent.project):
                return self._artifact(ArtifactName(parent.project, name))
        elif kind == ARTIFACT:
            return self._lookup_in_artifact(parent.artifact_name, name)
        elif kind == DRAFTS_DIR:
            if self.drafts.drafts.exists(parent.artifact_name, name):
                return self._draft_root(parent.artifact_name, name)
            pending = self.drafts.pending(parent.artifact_name).get(name)
            if pending is not None:
                return self._version(*pending)
        elif kind in IN_DRAFT:
            return self.draft_node(parent, parent.the_draft.lookup(parent.dino, name).ino)
        elif kind in (VERSION, DIR):
            m = self.ensure_manifest_blocking(parent) if kind == VERSION else parent.the_manifest
            path = f"{parent.path}/{name}" if parent.path else name
            i = m.index(path)
            if i is not None:
                return self._inside(parent, name, i)
            if m.is_dir(path):
                return self._inside(parent, name, None)
        raise NotFound(name)

    def lookup_attr(self, parent: Node, name: str) -> tuple[Node, Attr | None]:
        """`lookup`, with the child's attributes when they come with it (drafts): one trip
        to a worker thread instead of two."""
        if parent.kind in IN_DRAFT:
            a = parent.the_draft.lookup(parent.dino, name)
            node = self.draft_node(parent, a.ino)
            return node, self._draft_attr(node, a)
        return self.lookup(parent, name), None

    def lookup_cached(self, parent: Node, name: str) -> tuple[Node, Attr] | None:
        """A child of a draft folder and its attributes from memory, on any thread; None if
        memory does not know; FsError(ENOENT) if it knows the name does not exist."""
        if parent.kind not in IN_DRAFT:
            return None
        a = parent.the_draft.cached_lookup(parent.dino, name)
        if a is None:
            return None
        node = self.draft_node(parent, a.ino)
        return node, self._draft_attr(node, a)

    def attr_cached(self, node: Node) -> Attr | None:
        """A draft node's attributes from memory (any thread), or None."""
        if node.kind not in IN_DRAFT:
            return None
        a = node.the_draft.cached_attr(node.dino)
        return None if a is None else self._draft_attr(node, a)

    @staticmethod
    def draft_attr(node: Node, a) -> Attr:
        """A draft node's attributes from the drafts layer's (namespace.Attr): exact times,
        a folder's link count 2 + its subfolders, as on ext4."""
        return Attr(node.ino, a.st_mode, a.size, a.mtime_ns / 1e9, a.st_nlink, a.mtime_ns, a.st_ctime_ns, a.st_atime_ns)

    _draft_attr = draft_attr

    def _lookup_in_artifact(self, a: ArtifactName, name: str) -> Node:
        if name == DRAFTS:
            return self._drafts(a)
        state = self.catalog.artifact(a)
        n = parse_version(name)
        if n is not None and n in state.versions:
            return self._version(state.versions[n])
        if name in state.aliases:
            return self._alias(a, name, version_name(state.aliases[name]))
        raise NotFound(name)

    def children(self, node: Node) -> list[tuple[str, tuple]]:
        """(name, how to make the node) for every child, in a stable order."""
        kind = node.kind
        if kind == ROOT:
            return [(p, ("p", p)) for p in self.projects()]
        if kind == PROJECT:
            return [(a, ("a", a)) for a in self.artifacts(node.project)]
        if kind == DRAFTS_DIR:
            local = self.drafts.names(node.artifact_name)
            pending = [(p, ("q",)) for p in self.drafts.pending(node.artifact_name) if p not in local]
            return [(d, ("r",)) for d in local] + pending
        if kind in IN_DRAFT:
            return [(name, ("x", a.ino)) for name, a in node.the_draft.listdir(node.dino)]
        if kind == ARTIFACT:
            state = self.catalog.artifact(node.artifact_name)
            out: list[tuple[str, tuple]] = [(version_name(n), ("v", n)) for n in sorted(state.versions)]
            out += [(alias, ("l", alias)) for alias in sorted(state.aliases)]
            out.append((DRAFTS, ("d",)))
            return out
        if kind in (VERSION, DIR):
            m = self.ensure_manifest_blocking(node) if kind == VERSION else node.the_manifest
            return [(name, ("i", i)) for name, i in m.children(node.path)]
        return []

    def child_node(self, parent: Node, name: str, how) -> Node:
        tag = how[0]
        if tag == "p":
            return self._project(name)
        if tag == "a":
            return self._artifact(ArtifactName(parent.project, name))
        if tag == "i":
            return self._inside(parent, name, how[1])
        if tag == "d":
            return self._drafts(parent.artifact_name)
        if tag == "r":
            return self._draft_root(parent.artifact_name, name)
        if tag == "q":
            return self._version(*self.drafts.pending(parent.artifact_name)[name])
        if tag == "x":
            return self.draft_node(parent, how[1])
        return self._lookup_in_artifact(parent.artifact_name, name)

    # -- attributes ---------------------------------------------------------------
    def attr(self, node: Node) -> Attr:
        kind = node.kind
        if kind in IN_DRAFT:
            assert node.draft is not None
            return self._draft_attr(node, node.the_draft.getattr(node.dino))
        if kind in (FILE, VERSION, DIR):
            return self._version_attr(node)
        if kind == ALIAS:
            return Attr(node.ino, stat.S_IFLNK | 0o777, len(node.target), self.started)
        if kind == DRAFTS_DIR:
            return Attr(node.ino, stat.S_IFDIR | 0o755, 0, self.started, 2)
        return Attr(node.ino, stat.S_IFDIR | 0o555, 0, self.started, 2)

    @staticmethod
    def _version_attr(node: Node) -> Attr:
        """A node of a version tree: modes as put with the write bits off (a version never
        changes), and the mtimes the manifest keeps (older ones keep none: the version's
        creation). A version's own folder shows its creation: stat-ing it needs no manifest."""
        rec, m = node.version, node.manifest
        assert rec is not None
        if node.kind == FILE:
            assert m is not None
            size, mode, mtime_ns = m.stat(node.index)
            mode = stat.S_IFREG | (mode & 0o7555)
            return _attr_ns(node.ino, mode, size, mtime_ns) if mtime_ns else Attr(node.ino, mode, size, rec.created)
        folder = m.folder(node.path) if node.kind == DIR and m is not None else None
        if folder is not None and folder.mtime_ns:
            return _attr_ns(node.ino, stat.S_IFDIR | (folder.mode & 0o7555), 0, folder.mtime_ns, 2)
        return Attr(node.ino, stat.S_IFDIR | 0o555, 0, rec.created, 2)

    # -- extended attributes ---------------------------------------------------------
    def xattrs(self, node: Node) -> dict[str, bytes]:
        if node.kind == FILE:
            e = node.the_manifest.entry(node.index)
            out = {"user.artfs.digest": e.hexdigest.encode()}
            if e.ref:
                out["user.artfs.ref"] = e.ref["uri"].encode()
            return out
        if node.kind == VERSION:
            rec = node.record
            return {
                "user.artfs.type": rec.type.encode(),
                "user.artfs.description": rec.description.encode(),
                "user.artfs.metadata": json.dumps(rec.metadata, sort_keys=True).encode(),
                "user.artfs.version": f"{rec.artifact}:{rec.name}".encode(),
                "user.artfs.digest": rec.manifest.encode(),
            }
        if node.kind == ARTIFACT:
            state = self.catalog.artifact(node.artifact_name)
            return {"user.artfs.type": (state.type or "").encode()}
        if node.kind == DNODE:
            # A file still holding the bytes of a base entry or of an added reference says
            # which; a file written in the draft has no digest until it is committed.
            base: Entry | None
            try:
                base = node.the_draft.base_entry(node.dino)
            except FsError:  # unlinked while open
                base = None
            if base is None:
                return {}
            e = base
            out = {}
            if any(e.digest):  # zeros: a reference added without a checksum
                out["user.artfs.digest"] = e.hexdigest.encode()
            if e.ref:
                out["user.artfs.ref"] = e.ref["uri"].encode()
            return out
        if node.kind == DRAFT:
            info = node.the_draft.info
            out = {"user.artfs.draft": str(info).encode()}
            if info.base is not None:
                out["user.artfs.base"] = f"{node.artifact_name}:{version_name(info.base)}".encode()
            return out
        return {}
