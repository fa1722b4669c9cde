"""The embedded store: objects are files under one directory.

Create-if-absent is `link()` of a fully written temp file (fails if the name
exists); compare-and-swap holds an `flock` on a per-key lock file while it
checks the ETag and renames. Every write is fsynced before it becomes
visible, so a crash leaves either the old object or the new one.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import tempfile
from contextlib import contextmanager
from typing import Iterator

from artfs.errors import NoSpace, NotFound, PreconditionFailed, StoreUnavailable
from artfs.store import pagecache
from artfs.store.backends.base import ObjectInfo, ObjectStore

_INTERNAL = ".artfs-tmp"

_DROP_ABOVE = 4 << 20  # objects at least this large are dropped from the page cache once durable


def _etag(st: os.stat_result) -> str:
    return f"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"


@contextmanager
def _os_errors(key: str):
    try:
        yield
    except FileNotFoundError:
        raise NotFound(f"{key}: not found in store") from None
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise NoSpace(f"store is full writing {key}") from None
        raise StoreUnavailable(f"store error on {key}: {e.strerror}") from None


class LocalStore(ObjectStore):
    def __init__(self, root: str, create: bool = True):
        """`create=False`: open only; a folder that is not there reads as an empty store, and
        nothing is made on disk (commands that only read must not create a store at a typo)."""
        self.root = root
        self.url = root
        self._tmp = os.path.join(root, _INTERNAL)
        if not create:
            return
        try:
            os.makedirs(self._tmp, exist_ok=True)
        except OSError as e:
            raise StoreUnavailable(f"cannot create store at {root}: {e.strerror}") from None

    def _path(self, key: str) -> str:
        # Keys are built by the registry from validated names; this guards anyway.
        if key.startswith("/") or ".." in key.split("/") or "\x00" in key:
            raise ValueError(f"bad store key {key!r}")
        return os.path.join(self.root, key)

    def get(self, key, start=0, end=None):
        with _os_errors(key), open(self._path(key), "rb") as f:
            if start:
                f.seek(start)
            return f.read() if end is None else f.read(max(0, end - start))

    def get_parts(self, key, start, lengths):
        with _os_errors(key), open(self._path(key), "rb") as f:
            f.seek(start)
            for n in lengths:
                yield f.read(n)

    def get_with_etag(self, key):
        with _os_errors(key), open(self._path(key), "rb") as f:
            return f.read(), _etag(os.fstat(f.fileno()))

    def _check_root(self) -> None:
        # A store folder that went away (unmounted disk, moved) is an outage, not a new store.
        if not os.path.isdir(self._tmp):
            raise StoreUnavailable(f"store {self.root} is not there")

    def _write_temp(self, data: bytes) -> str:
        fd, tmp = tempfile.mkstemp(dir=self._tmp)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
                _written_once(f.fileno(), len(data))
        except BaseException:
            os.unlink(tmp)
            raise
        return tmp

    @contextmanager
    def _locked(self, key: str):
        name = hashlib.sha1(key.encode()).hexdigest()
        with open(os.path.join(self._tmp, name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _current_etag(self, path: str) -> str | None:
        try:
            return _etag(os.stat(path))
        except FileNotFoundError:
            return None

    def put(self, key, data, *, if_none_match=False, if_match=None):
        path = self._path(key)
        with _os_errors(key):
            self._check_root()
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = self._write_temp(data)
            try:
                if if_none_match:
                    try:
                        os.link(tmp, path)
                    except FileExistsError:
                        raise PreconditionFailed(f"{key}: already exists") from None
                elif if_match is not None:
                    with self._locked(key):
                        if self._current_etag(path) != if_match:
                            raise PreconditionFailed(f"{key}: changed since it was read")
                        os.rename(tmp, path)
                else:
                    os.rename(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            _fsync_dir(os.path.dirname(path))
            return _etag(os.stat(path))

    def put_stream(self, key, stream):
        dest = self._path(key)
        with _os_errors(key):
            self._check_root()
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self._tmp)
            try:
                with os.fdopen(fd, "wb") as out:
                    while buf := stream.read(8 << 20):
                        out.write(buf)
                    out.flush()
                    os.fsync(out.fileno())
                    _written_once(out.fileno(), out.tell())
                os.rename(tmp, dest)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)

    def head(self, key):
        try:
            st = os.stat(self._path(key))
        except FileNotFoundError:
            return None
        return ObjectInfo(key, st.st_size, _etag(st), st.st_mtime)

    def list(self, prefix) -> Iterator[ObjectInfo]:
        # Walk only the directory the prefix names, then filter by the rest.
        head, _, _ = prefix.rpartition("/")
        base = os.path.join(self.root, head) if head else self.root
        found: list[ObjectInfo] = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if d != _INTERNAL]
            rel_dir = os.path.relpath(dirpath, self.root)
            for fn in filenames:
                key = fn if rel_dir == "." else f"{rel_dir}/{fn}"
                if key.startswith(prefix):
                    try:
                        st = os.stat(os.path.join(dirpath, fn))
                    except FileNotFoundError:
                        continue
                    found.append(ObjectInfo(key, st.st_size, _etag(st), st.st_mtime))
        found.sort(key=lambda o: o.key)
        return iter(found)

    def list_prefixes(self, prefix):
        try:
            names = os.listdir(os.path.join(self.root, prefix))
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(n for n in names if n != _INTERNAL and os.path.isdir(os.path.join(self.root, prefix, n)))

    def delete(self, key, *, if_match=None):
        path = self._path(key)
        with _os_errors(key):
            if if_match is None:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
                return
            with self._locked(key):
                if self._current_etag(path) != if_match:
                    raise PreconditionFailed(f"{key}: changed since it was read")
                os.unlink(path)


def _written_once(fd: int, size: int) -> None:
    """A large object just made durable leaves the page cache: written once, read (if ever)
    later (store/pagecache.py)."""
    if size >= _DROP_ABOVE:
        pagecache.drop(fd, 0, size)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
