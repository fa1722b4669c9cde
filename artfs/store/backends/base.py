"""The interface every object store implements.

Keys are '/'-separated strings made by the registry (never by users). Writes
are whole-object; the two conditional forms are what the registry's
consistency rests on: `if_none_match=True` creates only if absent, and
`if_match=ETAG` replaces only what the caller last read. Both raise
PreconditionFailed when they lose.
"""

from __future__ import annotations

import abc
import builtins
from dataclasses import dataclass
from typing import Iterator


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    mtime: float = 0.0


class ObjectStore(abc.ABC):
    url: str

    @abc.abstractmethod
    def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        """Bytes [start, end) of an object; NotFound if absent."""

    def get_parts(self, key: str, start: int, lengths: list[int]) -> Iterator[bytes]:
        """One ranged read from `start`, handed out as consecutive parts of these lengths as they
        arrive, so the first can be checked and served while the rest is still on the wire.
        Past the end of the object parts come short or not at all: callers verify. A part may
        be any bytes-like object (S3 hands large parts out as views of a buffer of their own)."""
        blob = self.get(key, start, start + sum(lengths))
        pos = 0
        for n in lengths:
            yield blob[pos : pos + n]
            pos += n

    @abc.abstractmethod
    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        """The whole object and its ETag, for a later compare-and-swap."""

    @abc.abstractmethod
    def put(self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None) -> str:
        """Writes the object and returns its new ETag."""

    def put_stream(self, key: str, stream) -> None:
        """Uploads from a readable file object (stores may stream or use multipart).
        An exception raised by `stream.read` aborts the upload: nothing is stored."""
        self.put(key, stream.read())

    def put_file(self, key: str, path: str, unchanged) -> bool:
        """Uploads a local file; `unchanged()` is asked once every byte is sent and before
        the object is stored: False abandons the upload (nothing stored) and returns False."""
        with open(path, "rb") as f:
            try:
                self.put_stream(key, _CheckedAtEnd(f, unchanged))
            except _Changed:
                return False
        return True

    @abc.abstractmethod
    def head(self, key: str) -> ObjectInfo | None:
        """Size and ETag, or None if absent."""

    @abc.abstractmethod
    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose key starts with `prefix`, in key order."""

    @abc.abstractmethod
    def list_prefixes(self, prefix: str) -> builtins.list[str]:  # (`list` is a method here)
        """Names of the immediate 'folders' under `prefix` (which ends in '/')."""

    @abc.abstractmethod
    def delete(self, key: str, *, if_match: str | None = None) -> None:
        """Removes the object; absent is not an error."""

    def exists(self, key: str) -> bool:
        return self.head(key) is not None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


class _Changed(Exception):
    pass


class _CheckedAtEnd:
    def __init__(self, f, unchanged):
        self.f, self.unchanged = f, unchanged

    def read(self, n: int = -1) -> bytes:
        buf = self.f.read(n)
        if not buf and not self.unchanged():
            raise _Changed()
        return buf
