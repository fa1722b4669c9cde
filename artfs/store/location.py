"""Object stores: the registry's only storage, behind one small interface."""

from __future__ import annotations

import os
from urllib.parse import urlparse

from artfs.errors import InvalidInput
from artfs.store.backends.base import ObjectInfo, ObjectStore
from artfs.store.backends.local import LocalStore


def open_store(url: str, create: bool = True) -> ObjectStore:
    """A path, `file://PATH` or `s3://bucket[/prefix]`. `create=False` makes nothing on disk."""
    if url.startswith("s3://"):
        from artfs.store.backends.s3 import S3Store

        parsed = urlparse(url)
        if not parsed.netloc:
            raise InvalidInput(f"invalid store URL {url!r}: expected s3://BUCKET[/PREFIX]")
        return S3Store(parsed.netloc, parsed.path.strip("/"))
    if url.startswith("file://"):
        url = urlparse(url).path
    elif "://" in url:
        raise InvalidInput(f"unsupported store URL {url!r}: use a path, file://PATH or s3://BUCKET/PREFIX")
    return LocalStore(os.path.abspath(os.path.expanduser(url)), create=create)


__all__ = ["ObjectInfo", "ObjectStore", "LocalStore", "open_store"]
