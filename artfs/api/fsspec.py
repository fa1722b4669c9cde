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
`refresh` seconds (the mount's default, 5); version trees never change.
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
from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

from artfs import config
from artfs.api.fsspec_read import Companions, VerifiedReader
from artfs.api.store import Store
from artfs.content.cache import ContentCache
from artfs.content.fetch import Piece
from artfs.digest import CHUNK_SIZE, DIGEST_SIZE
from artfs.errors import ArtfsError, InvalidInput, NotFound
from artfs.names import LATEST, ArtifactName, check_name, parse_version, version_name
from artfs.store.keys import pack_key
from artfs.store.manifest import Entry, Manifest
from artfs.store.registry import VersionRecord
from artfs.versions import lineage

DRAFTS = "drafts"
READ_AHEAD_BYTES = 4 << 20  # small files brought along by a cold read of one of them
READ_AHEAD_FILES = 512
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


def pack_neighbours(m: Manifest, i: int) -> list[Piece]:
    """The small files after entry `i` in the same pack, up to READ_AHEAD_BYTES: one GET brings
    them along with it, as the mount does on a cold open (a folder is read in manifest order)."""
    pack = m.packs[i]
    if pack < 0:
        return []
    key = pack_key(m.pack_ids[pack])
    out, total = [], 0
    for j in range(i + 1, min(len(m), i + 1 + READ_AHEAD_FILES)):
        if m.packs[j] != pack or total >= READ_AHEAD_BYTES:
            break
        out.append(Piece(m.digests[j * DIGEST_SIZE : (j + 1) * DIGEST_SIZE], m.sizes[j], key, m.offsets[j]))
        total += m.sizes[j]
    return out


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

    def forget(self, key: tuple) -> None:
        with self._lock:
            self._values.pop(key, None)


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
        self._open_store()

    def _open_store(self) -> None:
        store, cache, size = self._opening
        self._store = Store(store, cache, create=False)  # reading only: a wrong location is not made a store
        if not self._store.registry.is_store():
            url = self._store.url
            raise FileNotFoundError(errno.ENOENT, f"no artfs store at {url} (check store= or ARTFS_STORE)", url)
        self._reader = VerifiedReader(self._store.objects, ContentCache(self._store.cache_dir, size))
        self._lock = threading.Lock()
        self._timed = _Timed(self._refresh)
        self._pid = os.getpid()

    def _fresh(self) -> None:
        """In a forked child (a DataLoader worker) the parent's S3 connections, cache writer
        threads and locks are not this process's to use: open them anew, once."""
        if self._pid != os.getpid():
            self._open_store()

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

    def _manifest(self, rec: VersionRecord, path: str) -> Manifest:
        with self._lock:  # (cachetools' caches are not thread-safe; pyarrow reads from many threads)
            m = self._manifests.get(rec.manifest)
        if m is None:
            m = self._call(path, lambda: self.store.registry.manifest(rec))
            with self._lock:
                self._manifests[rec.manifest] = m
        return m

    def _note_use(self, rec: VersionRecord) -> None:
        """Lineage: this run used the version (once per file system object, as the mount does)."""
        with self._lock:
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
        path = self._strip_protocol(path)
        w = parse(path)
        if w.depth < 3 or not w.inner:
            raise IsADirectoryError(errno.EISDIR, "a folder, not a file", path)
        rec = self._record(w, path)
        m = self._manifest(rec, path)
        i = m.index(w.inner)
        if i is None:
            if m.is_dir(w.inner):
                raise IsADirectoryError(errno.EISDIR, "a folder, not a file", path)
            raise FileNotFoundError(errno.ENOENT, f"{rec} has no file {w.inner!r}", path)
        self._note_use(rec)
        return m.entry(i), functools.partial(pack_neighbours, m, i)

    def read_range(self, entry: Entry, start: int, end: int, path: str = "", companions: Companions = None) -> bytes:
        try:
            return self.reader.read(entry, start, end, companions)
        except ArtfsError as e:
            raise _os_error(e, path) from None

    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> bytes:
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
    ) -> ArtfsFile:
        if mode != "rb":
            raise _read_only(path)
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


class ArtfsFile(AbstractBufferedFile):
    """A version file open for reading; fsspec's read-ahead cache over verified ranged reads."""

    DEFAULT_BLOCK_SIZE = 4 * CHUNK_SIZE  # whole chunks: the unit a large object is verified in

    def __init__(
        self,
        fs: ArtfsFileSystem,
        path: str,
        entry: Entry,
        companions: Companions = None,
        block_size: int | None = None,
        cache_options: dict | None = None,
        cache_type: str = "readahead",
        **kwargs: Any,
    ):
        self.entry = entry
        self.companions = companions
        size = entry.size if entry.size >= 0 else None
        if size is None:  # a reference of unknown size: learn it by reading it whole
            data = fs.read_range(entry, 0, 1 << 62, path)
            size = len(data)
        super().__init__(
            fs,
            path,
            mode="rb",
            block_size=block_size or self.DEFAULT_BLOCK_SIZE,
            cache_type=cache_type,
            cache_options=cache_options,
            size=size,
            **kwargs,
        )

    def _fetch_range(self, start: int, end: int) -> bytes:
        fs: ArtfsFileSystem = self.fs
        return fs.read_range(self.entry, start, end, self.path, self.companions)
