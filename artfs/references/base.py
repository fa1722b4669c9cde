"""What every reference fetcher shares: the Fetcher interface, pins, limits, and per-bucket settings."""

from __future__ import annotations

import os

from artfs.errors import InvalidInput, ReferenceChanged
from artfs.config import Timeouts
from artfs.store.retry import RetryPolicy
from artfs.store.manifest import Entry

DEFAULT_MAX_OBJECTS = 10_000
SCHEMES = ("s3", "gs", "http", "https", "file")
GCS_ENDPOINT = "https://storage.googleapis.com"
READ_BLOCK = 8 << 20  # fetch_to_file reads this much per request


def pin_of(entry: Entry) -> dict:
    """The `ref` dict of a reference entry (its URI and what pins it)."""
    assert entry.ref is not None, f"{entry.path} is not a reference"
    return entry.ref


def changed(entry: Entry, why: str) -> ReferenceChanged:
    return ReferenceChanged(f"reference {entry.path} ({pin_of(entry)['uri']}) no longer matches its pin: {why}")


def too_many(uri: str, max_objects: int) -> InvalidInput:
    return InvalidInput(
        f"{uri} holds more than {max_objects} objects: refused; raise the limit with "
        f"max_objects= (Python) or --max-objects (command line)"
    )


def is_pinned(entry: Entry) -> bool:
    """Whether anything beyond the URI was recorded (a known size pins too)."""
    return len(pin_of(entry)) > 1 or entry.size >= 0


def request_timeout() -> float:
    return Timeouts().ref_read


class Fetcher:
    def __init__(self, scheme: str):
        self.scheme = scheme
        self.retry = RetryPolicy.for_references()  # the store's policy, with the references' bounds

    def resolve(self, uri: str, name: str | None, checksum: bool, max_objects: int) -> list[Entry]:
        raise NotImplementedError

    def read(self, entry: Entry, start: int, end: int | None) -> bytes:
        raise NotImplementedError


# -- configuration -------------------------------------------------------------------------


def config_path() -> str:
    explicit = os.environ.get("ARTFS_REF_CONFIG")
    if explicit:
        return explicit
    import platformdirs

    return os.path.join(platformdirs.user_config_dir("artfs"), "references.toml")


_config_cache: dict[tuple, dict] = {}


def _load_config() -> dict:
    """The config file, parsed again only when it changes (every read of a mount asks)."""
    path = config_path()
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise InvalidInput(f"cannot read the references config {path}: {e.strerror}") from None
    key = (path, st.st_mtime_ns, st.st_size, st.st_ino)
    doc = _config_cache.get(key)
    if doc is None:
        doc = _parse_config(path)
        _config_cache.clear()
        _config_cache[key] = doc
    return doc


def _parse_config(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise InvalidInput(f"cannot read the references config {path}: {e.strerror}") from None
    import tomllib

    try:
        doc = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise InvalidInput(f"invalid references config {path}: {e}") from None
    if not isinstance(doc, dict):
        raise InvalidInput(f"invalid references config {path}")
    return doc


SETTING_KEYS = ("endpoint", "profile", "region", "access_key_id", "secret_access_key")


def bucket_settings(scheme: str, bucket: str) -> dict:
    """Endpoint, profile, region and keys for one bucket: config [scheme.buckets.B], then
    ARTFS_REF_<SCHEME>_*, then config [scheme]; missing ones are left to boto3."""
    doc = _load_config()
    section = doc.get(scheme, {}) if isinstance(doc.get(scheme, {}), dict) else {}
    per_bucket = section.get("buckets", {}).get(bucket, {}) if isinstance(section.get("buckets", {}), dict) else {}
    out = {}
    for key in SETTING_KEYS:
        env = os.environ.get(f"ARTFS_REF_{scheme.upper()}_{key.upper()}")
        value = per_bucket.get(key) if isinstance(per_bucket, dict) else None
        if value is None:
            value = env or section.get(key)
        if value is not None:
            if not isinstance(value, str):
                raise InvalidInput(f"references config {config_path()}: {scheme} {key} must be text")
            out[key] = value
    return out


# -- S3 and GCS (XML API) through boto3 ----------------------------------------------------


def describe(entry: Entry) -> str:
    return f"{entry.path} ({entry.ref['uri']})" if entry.ref else entry.path
