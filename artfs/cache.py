"""The local content cache: verified pieces on disk, keyed by their blake3 digest.

Content-addressed, so it needs no invalidation and two mounts may share one
folder: every file is written to a temp name and renamed into place, and
every read is verified against the digest the caller expects, so a corrupt
or half-written file is dropped and fetched again, never served. The size
bound is kept by evicting the least recently used files; each process keeps
its own recency order, seeded from the files' mtimes at start.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections import OrderedDict

from .digest import digest_bytes

log = logging.getLogger(__name__)


class ContentCache:
    def __init__(self, root: str, max_bytes: int):
        self.root = os.path.join(root, "content")
        self.max_bytes = max_bytes
        self._tmp = os.path.join(self.root, "tmp")
        os.makedirs(self._tmp, exist_ok=True)
        for i in range(256):  # made once here, not per put (an exception per existing dir adds up)
            os.makedirs(os.path.join(self.root, f"{i:02x}"), exist_ok=True)
        self._lock = threading.Lock()
        self._lru: OrderedDict[str, int] = OrderedDict()  # hex digest -> size
        self._bytes = 0
        self._scan()

    def _scan(self) -> None:
        found = []
        for sub in os.listdir(self.root):
            if len(sub) != 2:
                continue
            d = os.path.join(self.root, sub)
            for name in os.listdir(d):
                try:
                    st = os.stat(os.path.join(d, name))
                except FileNotFoundError:
                    continue
                found.append((st.st_mtime, name, st.st_size))
        for _, name, size in sorted(found):
            self._lru[name] = size
            self._bytes += size
        self._evict()

    def _path(self, hexdigest: str) -> str:
        return os.path.join(self.root, hexdigest[:2], hexdigest)

    @property
    def size(self) -> int:
        return self._bytes

    def get(self, digest: bytes, size: int) -> bytes | None:
        """The cached bytes with this digest, or None (also when the file was corrupt)."""
        h = digest.hex()
        try:
            with open(self._path(h), "rb") as f:
                data = f.read()
        except OSError:
            return None
        if len(data) != size or digest_bytes(data) != digest:
            log.warning("cache file %s is corrupt; dropping it and fetching again", self._path(h))
            self.discard(digest)
            return None
        with self._lock:
            if h in self._lru:
                self._lru.move_to_end(h)
            else:
                self._lru[h] = size
                self._bytes += size
        return data

    def contains(self, digest: bytes) -> bool:
        return os.path.exists(self._path(digest.hex()))

    def put(self, digest: bytes, data: bytes) -> None:
        """Stores verified bytes. A full disk is logged and skipped: the cache is only a cache."""
        h = digest.hex()
        path = self._path(h)
        tmp = os.path.join(self._tmp, f"{h}.{os.getpid()}.{threading.get_ident()}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            try:
                os.rename(tmp, path)
            except FileNotFoundError:  # its folder was removed under us
                os.makedirs(os.path.dirname(path), exist_ok=True)
                os.rename(tmp, path)
        except OSError as e:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                log.warning("cache disk is full; serving %s without caching it", h[:16])
                self._evict(extra=len(data) * 4)
                return
            raise
        with self._lock:
            if h not in self._lru:
                self._lru[h] = len(data)
                self._bytes += len(data)
            self._lru.move_to_end(h)
        self._evict()

    def discard(self, digest: bytes) -> None:
        h = digest.hex()
        try:
            os.unlink(self._path(h))
        except OSError:
            pass
        with self._lock:
            size = self._lru.pop(h, None)
            if size is not None:
                self._bytes -= size

    def _evict(self, extra: int = 0) -> None:
        victims = []
        with self._lock:
            while self._lru and self._bytes + extra > self.max_bytes:
                h, size = self._lru.popitem(last=False)
                self._bytes -= size
                victims.append(h)
        for h in victims:
            try:
                os.unlink(self._path(h))
            except OSError:
                pass

