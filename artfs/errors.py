"""Errors every layer raises, and the one table that maps each to an errno.

`str()` of an error is the one line the CLI prints; `errno_of()` is what the
filesystem answers. A layer raises the error that names what went wrong; only
this table decides how the kernel hears it.
"""

from __future__ import annotations

import errno as _errno


class ArtfsError(Exception):
    """A failure the user can act on. `str()` is the one line we print."""

    _code: int | None = None

    @property
    def errno(self) -> int:
        return self._code if self._code is not None else errno_of_type(type(self))

    @errno.setter
    def errno(self, code: int) -> None:
        self._code = code


class InvalidInput(ArtfsError):
    pass


class NotFound(ArtfsError):
    pass


class Conflict(ArtfsError):
    """The thing exists already, or someone else changed it first."""


class PreconditionFailed(Conflict):
    """A create-if-absent or compare-and-swap write lost its race."""


class CorruptRecord(ArtfsError):
    """Bytes in the store or cache do not match what points to them."""


class StoreUnavailable(ArtfsError):
    """The object store could not be reached within the retry budget."""


class Transient(StoreUnavailable):
    """A failure that may pass (a dropped connection, a 5xx, throttling): the retry policy tries again."""


class ReferenceChanged(ArtfsError):
    """A referenced object no longer matches the pin recorded in the manifest."""


class NoSpace(ArtfsError):
    """The disk that holds the cache and drafts is full."""


class ReadOnly(ArtfsError):
    """A write outside a draft: versions never change."""


class NotSupported(ArtfsError):
    """Something a version cannot hold (symlinks, special files, ACLs)."""


class NameTooLong(ArtfsError):
    """A path component over 255 bytes."""


class FsError(ArtfsError):
    """A POSIX answer chosen by the filesystem itself (EISDIR, ENOTEMPTY, EXDEV…), as ext4 gives it."""

    def __init__(self, code: int, message: str = ""):
        import os

        super().__init__(message or os.strerror(code))
        self.errno = code


ERRNOS: dict[type[ArtfsError], int] = {
    InvalidInput: _errno.EINVAL,
    NotFound: _errno.ENOENT,
    Conflict: _errno.EEXIST,
    CorruptRecord: _errno.EIO,
    StoreUnavailable: _errno.EIO,
    ReferenceChanged: _errno.EIO,
    NoSpace: _errno.ENOSPC,
    ReadOnly: _errno.EROFS,
    NotSupported: _errno.ENOTSUP,
    NameTooLong: _errno.ENAMETOOLONG,
    ArtfsError: _errno.EIO,
}

# What a busy filesystem answers all day: logged at DEBUG, not WARNING.
EXPECTED_ERRNOS = frozenset(
    {
        _errno.ENOENT,
        _errno.EROFS,
        _errno.EEXIST,
        _errno.ENOTEMPTY,
        _errno.EISDIR,
        _errno.ENOTDIR,
        _errno.ENOTSUP,
        _errno.ENODATA,
        _errno.EPERM,
        _errno.EXDEV,
        _errno.ENAMETOOLONG,
        _errno.EINVAL,
        _errno.EBADF,
        _errno.EACCES,
    }
)


def errno_of_type(kind: type) -> int:
    for cls in kind.__mro__:
        if cls in ERRNOS:
            return ERRNOS[cls]
    return _errno.EIO


def errno_of(error: BaseException) -> int:
    """The errno the filesystem answers for `error`: the table for ours, the OS's own for OSError."""
    if isinstance(error, ArtfsError):
        return error.errno
    if isinstance(error, OSError) and error.errno:
        return error.errno
    return _errno.EIO
