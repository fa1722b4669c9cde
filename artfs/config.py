"""Where the store and the cache are, from flags, environment or defaults."""

from __future__ import annotations

import os

import platformdirs

DEFAULT_CACHE_SIZE = 50 << 30


def store_url(explicit: str | None = None) -> str:
    return explicit or os.environ.get("ARTFS_STORE") or os.path.join(platformdirs.user_data_dir("artfs"), "store")


def cache_dir(explicit: str | None = None) -> str:
    # Absolute: the mount daemon leaves the folder it was started from (so that folder can be unmounted).
    return os.path.abspath(
        os.path.expanduser(explicit or os.environ.get("ARTFS_CACHE") or platformdirs.user_cache_dir("artfs"))
    )


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


class Timeouts:
    """Every bound on waiting for a store or a reference source, read from the environment
    here and nowhere else, so an unreachable endpoint is an error within a known time."""

    def __init__(self, environ: dict[str, str] | None = None):
        env = os.environ if environ is None else environ
        self.s3_connect = float(env.get("ARTFS_S3_CONNECT_TIMEOUT", env.get("ARTFS_S3_TIMEOUT", "5")))
        self.s3_read = float(env.get("ARTFS_S3_TIMEOUT", "20"))  # one socket read
        self.s3_attempts = max(1, int(env.get("ARTFS_S3_ATTEMPTS", "4")))
        self.ref_read = float(env.get("ARTFS_REF_TIMEOUT", "20"))
        self.ref_connect = min(self.ref_read, 5.0)
        self.ref_attempts = max(1, int(env.get("ARTFS_REF_ATTEMPTS", "4")))
        self.retry_first_wait = float(env.get("ARTFS_RETRY_WAIT", "0.1"))  # seconds, doubled per attempt
        self.retry_max_wait = 2.0
        self.retry_deadline = float(env.get("ARTFS_RETRY_DEADLINE", "60"))  # all attempts of one request


def timeouts() -> Timeouts:
    return Timeouts()
