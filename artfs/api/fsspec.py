"""`artfs://`: published versions for fsspec users (pandas, pyarrow, datasets, PyTorch), no mount.

Paths are the mount's: `artfs://PROJECT/ARTIFACT/vN/path`, `…/ALIAS/path`, and
`PROJECT/ARTIFACT:ALIAS/path` as the CLI writes a version. Listing shows
projects, artifacts, then an artifact's versions and aliases (an alias is a
folder entry with `islink` and `destination` set, as the mount's symlink).
Every byte read is verified against its digest, through the same content
cache a mount on this host uses (`ARTFS_CACHE`, or `cache=`).

Read-only: writing, removing or making folders raises OSError(EROFS); publish
with `artfs put`, a draft on a mount, or `artfs.log_artifact`.

The store is `store=` (a storage option), else ARTFS_STORE, else the default
one, as for the CLI. Aliases and version lists are re-read at most every
`refresh` seconds (the mount's default, 5); version trees never change. A file
path is resolved once per file system object (through an alias, again once
`refresh` runs out); `find` resolves what it lists, and forked DataLoader
workers inherit it. `open()` of a small file whose verified bytes are at hand
returns them as an in-memory file (as fsspec's memory file system does).
"""

from __future__ import annotations

import errno
import functools
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cachetools import LRUCache
from fsspec.spec import AbstractFileSystem

from artfs import config
from artfs.api.fsspec_read import ArtfsFile, Companions, RunCache, SmallFile, VerifiedReader, pack_neighbours
from artfs.api.store import Store
from artfs.digest import DIGEST_SIZE
from artfs.errors import ArtfsError, InvalidInput, NotFound
from artfs.names import LATEST, ArtifactName, check_name, parse_version, version_name
from artfs.store.keys import pack_key
from artfs.store.manifest import Entry, Manifest
from artfs.store.shards import AnyManifest
from artfs.store.registry import VersionRecord
from artfs.versions import lineage

DRAFTS = "drafts"
PATHS = 1 << 17  # resolved file paths kept per file system object
_GLOB = frozenset("*?[")
READ_ONLY = "artfs:// is read-only: publish with `artfs put`, a draft on a mount, or artfs.log_artifact"


def _os_error(e: ArtfsError, path: str) -> OSError:
    """The OSError a Python data tool understands, carrying artfs's own one-line message."""
    if isinstance(e, NotFound):
        return FileNotFoundError(errno.ENOENT, str(e), path)
    return OSError(e.errno, str(e), path)


def _read_only(path: str = "") -> OSError:
    return OSError(errno.EROFS, READ_ONLY, path)


@dataclass(frozen=True)
class Where:
    """A parsed path: depth 0 root, 1 project, 2 artifact, 3 inside a version (`inner` '' = its root)."""

    project: str = ""
    artifact: str = ""
    selector: str = ""  # vN or an alias
    inner: str = ""

    @property
    def depth(self) -> int:
        return 3 if self.selector else 2 if self.artifact else 1 if self.project else 0

    @property
    def name(self) -> ArtifactName:
        return ArtifactName(self.project, self.artifact)


@functools.lru_cache(maxsize=65536)  # a pure function of the path; a loader asks for the same ones
def parse(path: str) -> Where:
    parts = [p for p in path.strip("/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise FileNotFoundError(errno.ENOENT, "'..' is not allowed in an artfs:// path", path)
    if len(parts) >= 2 and ":" in parts[1]:  # p/a:ALIAS/inner
        name, _, selector = parts[1].partition(":")
        parts = [parts[0], name, selector or LATEST, *parts[2:]]
    for i, what in enumerate(("project", "artifact")[: min(len(parts), 2)]):
        try:
            check_name(parts[i], what)
        except InvalidInput as e:
            raise FileNotFoundError(errno.ENOENT, str(e), path) from None
    if len(parts) >= 3 and parts[2] == DRAFTS:
        raise FileNotFoundError(errno.ENOENT, "drafts are not served by artfs://: use a mount", path)
    head = parts[:3] + [""] * (3 - min(len(parts), 3))
    return Where(head[0], head[1], head[2], "/".join(parts[3:]))


_forks = [0]  # forks into a child so far (a counter, not os.getpid(): a system call per read)
os.register_at_fork(after_in_child=lambda: _forks.__setitem__(0, _forks[0] + 1))


class _Timed:
    """Values re-read after `ttl` seconds (aliases and version lists move; nothing else does)."""

    def __init__(self, ttl: float):
        self.ttl = ttl
        self._lock = threading.Lock()
        self._values: dict[tuple, tuple[float, Any]] = {}

    def get(self, key: tuple, load: Callable[[], Any]) -> Any:
        now = time.monotonic()
        with self._lock:
            hit = self._values.get(key)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        value = load()
        with self._lock:
            self._values[key] = (now, value)
            if len(self._values) > 4096:
                self._values.clear()
        return value

    def loaded(self, key: tuple) -> float:
        """When the cached value was read (0: not cached)."""
        hit = self._values.get(key)
        return hit[0] if hit is not None else 0.0

    def copy_for_child(self) -> _Timed:
        """The same values with a new lock (in a forked child the parent's may be held)."""
        out = _Timed(self.ttl)
        out._values = dict(self._values)
        return out

    def forget(self, key: tuple) -> None:
        with self._lock:
            self._values.pop(key, None)


@dataclass(frozen=True, slots=True)
class Resolved:
    """A file path resolved: its version, manifest part and entry index there, until `until` (monotonic
    seconds; infinite for `vN` paths, whose files never change). `small`: (digest, size, pack
    key, offset) of a file stored in a pack, read whole on the fast path."""

    until: float
    rec: VersionRecord
    manifest: Manifest
    index: int
    small: tuple[bytes, int, str, int] | None


class ArtfsFileSystem(AbstractFileSystem):
    protocol = "artfs"
    root_marker = ""
    cachable = True

    def __init__(
        self,
        store: str | None = None,
        cache: str | None = None,
        cache_size: int | str | None = None,
        refresh: float = 5.0,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        size = config.parse_size(cache_size) if isinstance(cache_size, str) else cache_size
        self._opening = (store, cache, size or config.DEFAULT_CACHE_SIZE)
        self._refresh = refresh
        self._manifests: LRUCache = LRUCache(maxsize=16)
        self._used: set[tuple[ArtifactName, int]] = set()
        self._noted: dict[int, VersionRecord] = {}  # records whose use is recorded, by id (a fast check per read)
        self._paths: dict[str, Resolved] = {}  # file path -> where it is (see Resolved)
        self._at: dict[tuple[str, str, str], tuple[float, VersionRecord, AnyManifest]] = {}
        self._timed = _Timed(refresh)
        self._open_store(None)

    def _open_store(self, parent: VerifiedReader | None) -> None:
        store, cache, size = self._opening
        self._store = Store(store, cache, create=False)  # reading only: a wrong location is not made a store
        if parent is None and not self._store.registry.is_store():
            url = self._store.url
            raise FileNotFoundError(errno.ENOENT, f"no artfs store at {url} (check store= or ARTFS_STORE)", url)
        if parent is not None and isinstance(parent.cache, RunCache):  # a forked child: what the parent knew
            self._reader = VerifiedReader(
                self._store.objects, parent.cache.for_child(), parent.memory().copy_for_child()
            )
        else:
            self._reader = VerifiedReader(self._store.objects, RunCache(self._store.cache_dir, size))
        self._lock = threading.Lock()
        if parent is not None:
            self._timed = self._timed.copy_for_child()
        self._forks = _forks[0]

    def _fresh(self) -> None:
        """In a forked child (a DataLoader worker) the parent's S3 connections, cache writer
        threads and locks are not this process's to use: open them anew, once. What the parent
        knew (listings, manifests, resolved paths, bytes it verified) stays known."""
        if self._forks != _forks[0]:
            self._open_store(self._reader)

    @property
    def store(self) -> Store:
        self._fresh()
        return self._store

    @property
    def reader(self) -> VerifiedReader:
        self._fresh()
        return self._reader

    @classmethod
    def _strip_protocol(cls, path: Any) -> str:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]  # type: ignore[return-value]
        path = str(path)
        if path.startswith("artfs:"):
            for prefix in ("artfs://", "artfs::", "artfs:"):
                if path.startswith(prefix):
                    path = path[len(prefix) :]
                    break
        return path.strip("/")

    def unstrip_protocol(self, name: str) -> str:
        return f"artfs://{name}"

    # -- the registry, cached --------------------------------------------------------
    def _call(self, path: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except ArtfsError as e:
            raise _os_error(e, path) from None

    def _projects(self) -> list[str]:
        return self._timed.get(("projects",), self.store.registry.projects)

    def _artifacts(self, project: str) -> list[str]:
        return self._timed.get(("artifacts", project), lambda: self.store.registry.artifacts(project))

    def _versions(self, a: ArtifactName) -> dict[int, VersionRecord]:
        return self._timed.get(("versions", a), lambda: {r.number: r for r in self.store.registry.versions(a)})

    def _aliases(self, a: ArtifactName) -> dict[str, int]:
        def load() -> dict[str, int]:
            versions = self._versions(a)
            out = {k: v for k, v in self.store.registry.aliases(a).items() if v in versions}
            if versions:
                out[LATEST] = max(versions)
            return out

        return self._timed.get(("aliases", a), load)

    def _until(self, w: Where) -> float:
        """Until when a path's resolution holds: forever for vN, else while the listings
        it came from are fresh (an alias may move)."""
        if parse_version(w.selector) is not None:
            return float("inf")
        a = w.name
        return min(self._timed.loaded(("versions", a)), self._timed.loaded(("aliases", a))) + self._refresh

    def _resolve(self, path: str) -> Resolved:
        """A file path (stripped) to its version, manifest and entry: cached (see Resolved)."""
        hit = self._paths.get(path)
        if hit is not None and hit.until > time.monotonic():
            if id(hit.rec) not in self._noted:  # (listed by find, read for the first time)
                self._note_use(hit.rec)
            return hit
        parts = path.split("/", 3)
        inner = parts[3] if len(parts) == 4 else ""
        if inner and ":" not in parts[1] and "//" not in inner and "/." not in "/" + inner:
            w = parse(path[: -len(inner) - 1])  # a plain path: only its version part is parsed (cached)
        else:
            w = parse(path)
            inner = w.inner
        if w.depth < 3 or not inner:
            raise IsADirectoryError(errno.EISDIR, "a folder, not a file", path)
        until, rec, m = self._version_at(w, path)
        if id(rec) not in self._noted:
            self._note_use(rec)
        i = m.index(inner)
        if i is None:
            if m.is_dir(inner):
                raise IsADirectoryError(errno.EISDIR, "a folder, not a file", path)
            raise FileNotFoundError(errno.ENOENT, f"{rec} has no file {inner!r}", path)
        return self._remember(path, until, rec, m, i)

    def _version_at(self, w: Where, path: str) -> tuple[float, VersionRecord, AnyManifest]:
        """The version a path's `p/a/vN` or `p/a/ALIAS` names, and its manifest (cached as Resolved)."""
        key = (w.project, w.artifact, w.selector)
        hit = self._at.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit
        rec = self._record(w, path)
        m = self._manifest(rec, path)
        hit = (self._until(w), rec, m)
        if len(self._at) >= 4096:
            self._at.clear()
        self._at[key] = hit
        return hit

    def _remember(self, path: str, until: float, rec: VersionRecord, whole: AnyManifest, index: int) -> Resolved:
        m, i = whole.locate(index)  # the part holding it (a shard, if sharded)
        p = m.packs[i]
        small = None
        if p >= 0:
            small = (
                m.digests[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE],
                m.sizes[i],
                pack_key(m.pack_ids[p]),
                m.offsets[i],
            )
        r = Resolved(until, rec, m, i, small)
        if len(self._paths) >= PATHS:
            self._paths.clear()
        self._paths[path] = r
        return r

    def _record(self, w: Where, path: str, again: bool = True) -> VersionRecord:
        a = w.name
        n = parse_version(w.selector)
        if n is None:
            n = self._call(path, lambda: self._aliases(a)).get(w.selector)
        versions = self._call(path, lambda: self._versions(a))
        if (n is None or n not in versions) and again:  # published or aliased since the last listing?
            self._timed.forget(("versions", a))
            self._timed.forget(("aliases", a))
            return self._record(w, path, again=False)
        if n is None or n not in versions:
            if not versions and self._call(path, lambda: self.store.registry.artifact_type(a)) is None:
                raise FileNotFoundError(errno.ENOENT, f"artifact {a} does not exist", path)
            raise FileNotFoundError(errno.ENOENT, f"{a} has no version or alias {w.selector!r}", path)
        return versions[n]

    def _manifest(self, rec: VersionRecord, path: str) -> AnyManifest:
        with self._lock:  # (cachetools' caches are not thread-safe; pyarrow reads from many threads)
            m = self._manifests.get(rec.manifest)
        if m is None:
            m = self._call(path, lambda: self.store.registry.manifest(rec))
            with self._lock:
                self._manifests[rec.manifest] = m
        return m

    def _note_use(self, rec: VersionRecord) -> None:
        """Lineage: this run used the version (once per file system object, as the mount does:
        on a first read, not on a listing)."""
        with self._lock:
            if len(self._noted) >= 4096:  # (records are read anew at each refresh)
                self._noted.clear()
            self._noted[id(rec)] = rec  # (kept: a live object's id is not reused)
            if (rec.artifact, rec.number) in self._used:
                return
            self._used.add((rec.artifact, rec.number))
        lineage.record_use(self.store.registry, rec, "fsspec")

    # -- listing ----------------------------------------------------------------------
    def _dir(self, name: str, **extra: Any) -> dict[str, Any]:
        return {"name": name, "size": 0, "type": "directory", **extra}

    def _file(self, name: str, e: Entry) -> dict[str, Any]:
        info: dict[str, Any] = {
            "name": name,
            "size": e.size if e.size >= 0 else None,
            "type": "file",
            "mode": e.mode,
            "digest": e.hexdigest,
        }
        if e.ref is not None:
            info["ref"] = e.ref.get("uri")
        return info

    def _version_info(self, name: str, rec: VersionRecord, **extra: Any) -> dict[str, Any]:
        return self._dir(
            name,
            version=rec.name,
            digest=rec.manifest,
            created=rec.created,
            files=rec.files,
            artifact_type=rec.type,
            **extra,
        )

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        path = self._strip_protocol(path)
        w = parse(path)
        if w.depth == 3:
            out = self._ls_version(path, w)
        elif w.depth == 2:
            out = self._ls_artifact(path, w)
        elif w.depth == 1:
            if w.project not in self._call(path, self._projects):
                raise FileNotFoundError(errno.ENOENT, f"project {w.project} does not exist", path)
            out = [self._dir(f"{w.project}/{a}") for a in self._call(path, lambda: self._artifacts(w.project))]
        else:
            out = [self._dir(p) for p in self._call(path, self._projects)]
        return out if detail else [o["name"] for o in out]

    def _ls_artifact(self, path: str, w: Where) -> list[dict[str, Any]]:
        a = w.name
        versions = self._call(path, lambda: self._versions(a))
        if not versions and self._call(path, lambda: self.store.registry.artifact_type(a)) is None:
            raise FileNotFoundError(errno.ENOENT, f"artifact {a} does not exist", path)
        out = [self._version_info(f"{path}/{version_name(n)}", r) for n, r in sorted(versions.items())]
        for alias, n in sorted(self._call(path, lambda: self._aliases(a)).items()):
            if n in versions:  # (the two listings are refreshed apart: one may be newer)
                info = self._version_info(f"{path}/{alias}", versions[n], islink=True, destination=f"{a}/v{n}")
                out.append(info)
        return out

    def _ls_version(self, path: str, w: Where) -> list[dict[str, Any]]:
        rec = self._record(w, path)
        m = self._manifest(rec, path)
        i = m.index(w.inner) if w.inner else None
        if i is not None:  # fsspec: ls of a file lists the file
            return [self._file(path, m.entry(i))]
        if not m.is_dir(w.inner):
            raise FileNotFoundError(errno.ENOENT, f"{rec} has no file or folder {w.inner!r}", path)
        out = []
        for child, index in m.children(w.inner):
            name = f"{path}/{child}"
            out.append(self._dir(name) if index is None else self._file(name, m.entry(index)))
        return out

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        path = self._strip_protocol(path)
        hit = self._paths.get(path)
        if hit is not None and hit.until > time.monotonic():  # a file resolved before: no lookups
            return self._file(path, hit.manifest.entry(hit.index))
        w = parse(path)
        if w.depth < 3:
            if w.depth:  # the parent's listing says whether it exists
                parent = path.rsplit("/", 1)[0] if w.depth == 2 else ""
                if path not in self.ls(parent, detail=False):
                    raise FileNotFoundError(errno.ENOENT, f"no such project or artifact: {path}", path)
            return self._dir(path)
        rec = self._record(w, path)
        if not w.inner:
            n = parse_version(w.selector)
            extra = {} if n is not None else {"islink": True, "destination": f"{w.name}/{rec.name}"}
            return self._version_info(path, rec, **extra)
        m = self._manifest(rec, path)
        i = m.index(w.inner)
        if i is not None:
            return self._file(path, m.entry(i))
        if m.is_dir(w.inner):
            return self._dir(path)
        raise FileNotFoundError(errno.ENOENT, f"{rec} has no file or folder {w.inner!r}", path)

    def find(
        self, path: str, maxdepth: int | None = None, withdirs: bool = False, detail: bool = False, **kwargs: Any
    ) -> Any:
        """Inside a version, straight from the manifest (one sorted list), not folder by folder."""
        path = self._strip_protocol(path)
        w = parse(path)
        if w.depth < 3:
            return super().find(path, maxdepth=maxdepth, withdirs=withdirs, detail=detail, **kwargs)
        rec = self._record(w, path)
        m = self._manifest(rec, path)
        until = self._until(w)
        out: dict[str, dict[str, Any]] = {}
        i = m.index(w.inner) if w.inner else None
        if i is not None:
            out[path] = self._file(path, m.entry(i))
        else:
            if withdirs and (not w.inner or m.is_dir(w.inner)):
                out[path] = self._dir(path)
            cut = len(w.inner) + 1 if w.inner else 0
            for j in m.under(w.inner):
                rel = m.paths[j][cut:].split("/")
                if maxdepth is not None and len(rel) > maxdepth:
                    if withdirs:
                        self._add_dirs(out, path, rel[:maxdepth])
                    continue
                if withdirs:
                    self._add_dirs(out, path, rel[:-1])
                name = f"{path}/{'/'.join(rel)}"
                out[name] = self._file(name, m.entry(j))
                if len(self._paths) < PATHS // 2:  # a loader lists, then opens what it listed
                    self._remember(name, until, rec, m, j)
        names = sorted(out)
        return {n: out[n] for n in names} if detail else names

    def _add_dirs(self, out: dict[str, dict[str, Any]], path: str, parts: list[str]) -> None:
        for k in range(1, len(parts) + 1):
            name = f"{path}/{'/'.join(parts[:k])}"
            if name not in out:
                out[name] = self._dir(name)

    def ukey(self, path: str) -> str:
        """A file's content digest (blake3): the same bytes give the same key, whatever the alias."""
        return str(self.info(path).get("digest") or self._strip_protocol(path))

    def checksum(self, path: str) -> int:
        return int(self.ukey(path)[:16], 16) if self.isfile(path) else super().checksum(path)

    # -- reading ----------------------------------------------------------------------
    def _entry(self, path: str) -> tuple[Entry, Companions]:
        """The file's manifest entry, and the small files after it in its pack (read-ahead)."""
        r = self._resolve(self._strip_protocol(path))
        return r.manifest.entry(r.index), functools.partial(pack_neighbours, r.manifest, r.index)

    def cat(self, path: Any, recursive: bool = False, on_error: str = "raise", **kwargs: Any) -> Any:
        """One file by name: straight to cat_file (what fsspec's cat ends in for a name with no
        wildcard), without its path expansion."""
        if isinstance(path, str) and not recursive and _GLOB.isdisjoint(path):
            return self.cat_file(path)
        return super().cat(path, recursive=recursive, on_error=on_error, **kwargs)

    def read_range(self, entry: Entry, start: int, end: int, path: str = "", companions: Companions = None) -> bytes:
        try:
            return self.reader.read(entry, start, end, companions)
        except ArtfsError as e:
            raise _os_error(e, path) from None

    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> bytes:
        if start is None and end is None:  # a whole small file, warm: from memory or a cached run
            path = self._strip_protocol(path)
            r = self._resolve(path)
            if r.small is not None:
                data = self.reader.small(*r.small)
                if data is not None:
                    return data
        e, companions = self._entry(path)
        size = e.size if e.size >= 0 else None
        if size is None:  # a reference of unknown size: negative offsets cannot be placed
            if (start or 0) < 0 or (end or 0) < 0:
                raise ValueError(f"{path}: size unknown, give non-negative offsets")
            return self.read_range(e, start or 0, end if end is not None else 1 << 62, path)
        start = 0 if start is None else max(0, size + start) if start < 0 else start
        end = size if end is None else max(0, size + end) if end < 0 else min(end, size)
        return self.read_range(e, start, end, path, companions)

    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: int | None = None,
        autocommit: bool = True,
        cache_options: dict | None = None,
        **kwargs: Any,
    ) -> ArtfsFile | SmallFile:
        if mode != "rb":
            raise _read_only(path)
        r = self._resolve(self._strip_protocol(path))
        if r.small is not None:  # a small file at hand (warm): its bytes, verified, as a file
            data = self.reader.small(*r.small)
            if data is not None:
                return SmallFile(self, self._strip_protocol(path), data)
        e, companions = self._entry(path)
        return ArtfsFile(
            self,
            self._strip_protocol(path),
            e,
            companions,
            block_size=block_size,
            cache_options=cache_options,
            **kwargs,
        )

    # -- writing: refused ---------------------------------------------------------------
    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        raise _read_only(path)

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        raise _read_only(path)

    def rmdir(self, path: str) -> None:
        raise _read_only(path)

    def _rm(self, path: str) -> None:
        raise _read_only(path)

    def rm(self, path: Any, recursive: bool = False, maxdepth: int | None = None) -> None:
        raise _read_only(str(path))

    def rm_file(self, path: str) -> None:
        raise _read_only(path)

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        raise _read_only(path2)

    def mv(self, path1: Any, path2: Any, *args: Any, **kwargs: Any) -> None:
        raise _read_only(str(path2))

    def put_file(self, lpath: str, rpath: str, *args: Any, **kwargs: Any) -> None:
        raise _read_only(rpath)

    def pipe_file(self, path: str, value: bytes, *args: Any, **kwargs: Any) -> None:
        raise _read_only(path)

    def touch(self, path: str, truncate: bool = True, **kwargs: Any) -> None:
        raise _read_only(path)
