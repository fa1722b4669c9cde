"""References: entries whose bytes stay at their source (s3://, gs://, http(s)://, file://).

One small fetcher per scheme behind one interface:

    resolve(uri, name=None, checksum=True, max_objects=10_000) -> list[Entry]
        What an artifact records for `uri`: one entry for an object/file, or one
        per object below a prefix/folder, each with the pin that identifies the
        bytes seen now. Naming follows W&B's `add_reference` table: a single
        object becomes its basename, or `name` (a full path) when given; a prefix
        expands to its objects named relative to it, under `name/` when given.
        More than `max_objects` objects below a prefix is refused.
    read(entry, start=0, end=None) -> bytes
        Bytes [start, end) of a reference entry, fetched from the source and only
        if the source still matches the pin; otherwise ReferenceChanged naming the
        entry and its URI. Never different bytes.
    fetch_to_file(entry, dest)
        `artfs get` / `download()`: the whole entry into dest, with the same checks.

What is pinned (the `ref` dict of an entry; the size is the manifest's own size
column, -1 when unknown):

    s3://B/K     {"uri", "etag", "version_id" (versioned buckets)}   read by VersionId
                 when pinned (an overwritten object still reads as the pinned version),
                 always with If-Match on the ETag, and the answer's ETag and total size
                 are checked again.
    gs://B/K     {"uri", "etag", "generation" (when the server sends x-goog-generation)}
                 through GCS's S3-compatible XML API with HMAC keys; read with
                 `?generation=` when pinned, and If-Match on the ETag.
    http(s)://   {"uri", "etag"} from HEAD (ETag, Content-Length when sent); read with
                 Range and If-Match (strong ETags), and the answer's ETag and total size
                 are checked again (a server that ignores If-Match still cannot serve
                 changed bytes).
    file:///P    {"uri", "mtime_ns", "chunks" (files > 1 MiB)}, the entry's digest is the
                 file's blake3: a read checks size and mtime, then verifies what it serves,
                 like stored objects do: the whole file's blake3 for files up to 1 MiB,
                 else the blake3 of each 1 MiB chunk it touches (so a 4 KiB read of a
                 huge file hashes one chunk, not the file).
    checksum=False: only {"uri"}; the size is learned when read, nothing is checked.

Credentials and endpoints (separate from the store's):

    s3://  boto3's normal chain (env, profiles, AWS_ENDPOINT_URL, instance roles),
           overridden by ARTFS_REF_S3_ENDPOINT / ARTFS_REF_S3_PROFILE / ARTFS_REF_S3_REGION,
           overridden per bucket by the config file.
    gs://  HMAC keys: ARTFS_REF_GS_ACCESS_KEY_ID + ARTFS_REF_GS_SECRET_ACCESS_KEY, or a boto3
           profile holding them (ARTFS_REF_GS_PROFILE); endpoint ARTFS_REF_GS_ENDPOINT
           (default https://storage.googleapis.com); per bucket in the config file.
    http   requests' defaults (~/.netrc for credentials, proxy variables).
    The config file is ARTFS_REF_CONFIG, default ~/.config/artfs/references.toml:

        [s3]                                  # every s3:// reference
        profile = "research"
        [s3.buckets."shared-data"]            # one bucket (wins over env and [s3])
        endpoint = "https://minio.example.org"
        profile = "minio"                     # or access_key_id / secret_access_key
        region = "us-east-1"
        [gs]
        profile = "gcs-hmac"

ARTFS_REF_TIMEOUT (seconds, default 20) and ARTFS_REF_ATTEMPTS (default 4) bound each
request, so an unreachable source is an error, never a hang.
"""

from __future__ import annotations

import os
import posixpath
import threading
from urllib.parse import unquote, urlsplit

from artfs.errors import ArtfsError, InvalidInput, NotFound, ReferenceChanged
from artfs.names import normalize_path
from artfs.references.base import (
    DEFAULT_MAX_OBJECTS,
    READ_BLOCK,
    SCHEMES,
    Fetcher,
    describe,
)
from artfs.references.file import FileFetcher
from artfs.references.gcs_json import GCSAnyFetcher
from artfs.references.http import HTTPFetcher
from artfs.references.s3 import S3Fetcher
from artfs.store.manifest import Entry


def is_uri(text: str) -> bool:
    """Whether a command-line argument is a URI (scheme://…) rather than a local path."""
    scheme, sep, _ = text.partition("://")
    return (
        bool(sep)
        and scheme.isascii()
        and scheme.replace("+", "").replace("-", "").replace(".", "").isalnum()
        and scheme[:1].isalpha()
    )


def _scheme(uri: str) -> str:
    if not isinstance(uri, str) or "://" not in uri:
        raise InvalidInput(f"invalid reference {uri!r}: expected a URI such as s3://BUCKET/KEY")
    scheme = uri.split("://", 1)[0].lower()
    if scheme not in SCHEMES:
        raise InvalidInput(f"unsupported reference scheme in {uri!r}: use s3://, gs://, http(s):// or file://")
    return scheme


def fetcher(uri: str) -> Fetcher:
    scheme = _scheme(uri)
    with _fetchers_lock:
        f = _fetchers.get(scheme)
        if f is None:
            f = _fetchers[scheme] = _FETCHERS[scheme](scheme)
        return f


def resolve(
    uri: str, name: str | None = None, checksum: bool = True, max_objects: int | None = DEFAULT_MAX_OBJECTS
) -> list[Entry]:
    """The entries `uri` stands for (see the module doc). Contacts the source."""
    if max_objects is None:
        max_objects = DEFAULT_MAX_OBJECTS
    if not isinstance(max_objects, int) or isinstance(max_objects, bool) or max_objects < 1:
        raise InvalidInput(f"max_objects must be a positive whole number, not {max_objects!r}")
    if name is not None:
        name = normalize_path(name)
    entries = fetcher(uri).resolve(uri, name, bool(checksum), max_objects)
    if not entries:
        raise NotFound(f"{uri}: nothing there to reference")
    return entries


def read(entry: Entry, start: int = 0, end: int | None = None) -> bytes:
    """Bytes [start, end) of reference `entry` (end None: to the end), if it still matches its pin."""
    if entry.ref is None:
        raise InvalidInput(f"{entry.path} is not a reference")
    if entry.size >= 0:
        end = entry.size if end is None else min(end, entry.size)
    if start < 0 or (end is not None and end <= start):
        return b""
    try:
        return fetcher(entry.ref["uri"]).read(entry, start, end)
    except ArtfsError as e:
        text = str(e)
        if entry.path in text and entry.ref["uri"] in text:
            raise
        raise type(e)(f"reference {describe(entry)}: {text}") from None  # every error names entry and URI


def default_name(uri: str) -> str:
    """The last part of a URI's path (the bucket or host when it has none): where `artfs put`
    puts a URI given among several arguments, as it puts a local path under its basename."""
    parts = urlsplit(uri)
    return normalize_path(unquote(posixpath.basename(parts.path.rstrip("/"))) or parts.netloc or "root")


def fetch_to_file(entry: Entry, dest: str) -> int:
    """Writes the whole reference into `dest` (via DEST.artfs-part, renamed when complete)."""
    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    part = dest + ".artfs-part"
    written = 0
    with open(part, "wb") as f:
        while True:
            data = read(entry, written, written + READ_BLOCK)
            f.write(data)
            written += len(data)
            if len(data) < READ_BLOCK or (entry.size >= 0 and written >= entry.size):
                break
    if entry.size >= 0 and written != entry.size:
        raise ReferenceChanged(f"{entry.path}: {describe(entry)} gave {written} bytes, {entry.size} expected")
    os.chmod(part, entry.mode)
    os.replace(part, dest)
    return written


_FETCHERS = {"s3": S3Fetcher, "gs": GCSAnyFetcher, "http": HTTPFetcher, "https": HTTPFetcher, "file": FileFetcher}
_fetchers: dict[str, Fetcher] = {}
_fetchers_lock = threading.Lock()
