"""Where the store and the cache are, from flags, environment or defaults."""

from __future__ import annotations

import os

import platformdirs

DEFAULT_CACHE_SIZE = 50 << 30


def store_url(explicit: str | None = None) -> str:
    return explicit or os.environ.get("ARTFS_STORE") or os.path.join(platformdirs.user_data_dir("artfs"), "store")


def cache_dir(explicit: str | None = None) -> str:
    # Absolute: the mount daemon leaves the folder it was started from (so that folder can be unmounted).
    return os.path.abspath(os.path.expanduser(explicit or os.environ.get("ARTFS_CACHE")
                                              or platformdirs.user_cache_dir("artfs")))


def parse_size(text: str) -> int:
    """'50G', '512M', '1T', '1000' -> bytes."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    num, unit = (t[:-1], t[-1]) if t and t[-1] in units else (t, "")
    try:
        value = float(num) * units[unit]
    except ValueError:
        from artfs.errors import InvalidInput

        raise InvalidInput(f"invalid size {text!r}: use e.g. 500M, 20G") from None
    return int(value)
