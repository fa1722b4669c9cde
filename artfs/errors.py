"""Errors every layer raises; each maps to one errno and one CLI line."""

import errno


class ArtfsError(Exception):
    """A failure the user can act on. `str()` is the one line we print."""

    errno = errno.EIO


class InvalidInput(ArtfsError):
    errno = errno.EINVAL


class NotFound(ArtfsError):
    errno = errno.ENOENT


class Conflict(ArtfsError):
    """The thing exists already, or someone else changed it first."""

    errno = errno.EEXIST


class PreconditionFailed(Conflict):
    """A create-if-absent or compare-and-swap write lost its race."""


class CorruptRecord(ArtfsError):
    """Bytes in the store or cache do not match what points to them."""

    errno = errno.EIO


class StoreUnavailable(ArtfsError):
    """The object store could not be reached within the retry budget."""

    errno = errno.EIO


class ReferenceChanged(ArtfsError):
    """A referenced object no longer matches the pin recorded in the manifest."""

    errno = errno.EIO


class NoSpace(ArtfsError):
    errno = errno.ENOSPC
