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
import stat as stat_mod
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator
from urllib.parse import quote, unquote, urlsplit

import blake3

from artfs.digest import CHUNK_SIZE, DIGEST_SIZE, hash_file, needs_chunks
from artfs.errors import ArtfsError, InvalidInput, NotFound, ReferenceChanged, StoreUnavailable
from artfs.store.manifest import UNKNOWN_SIZE, Entry
from artfs.names import join_path, normalize_path

DEFAULT_MAX_OBJECTS = 10_000
SCHEMES = ("s3", "gs", "http", "https", "file")
GCS_ENDPOINT = "https://storage.googleapis.com"
READ_BLOCK = 8 << 20  # fetch_to_file reads this much per request


def is_uri(text: str) -> bool:
    """Whether a command-line argument is a URI (scheme://…) rather than a local path."""
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme.isascii() and scheme.replace("+", "").replace("-", "").replace(".", "").isalnum() \
        and scheme[:1].isalpha()


def _scheme(uri: str) -> str:
    if not isinstance(uri, str) or "://" not in uri:
        raise InvalidInput(f"invalid reference {uri!r}: expected a URI such as s3://BUCKET/KEY")
    scheme = uri.split("://", 1)[0].lower()
    if scheme not in SCHEMES:
        raise InvalidInput(f"unsupported reference scheme in {uri!r}: use s3://, gs://, http(s):// or file://")
    return scheme


def fetcher(uri: str) -> "Fetcher":
    scheme = _scheme(uri)
    with _fetchers_lock:
        f = _fetchers.get(scheme)
        if f is None:
            f = _fetchers[scheme] = _FETCHERS[scheme](scheme)
        return f


def resolve(uri: str, name: str | None = None, checksum: bool = True,
            max_objects: int | None = DEFAULT_MAX_OBJECTS) -> list[Entry]:
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
        raise ReferenceChanged(f"{entry.path}: {entry.ref['uri']} gave {written} bytes, {entry.size} expected")
    os.chmod(part, entry.mode)
    os.replace(part, dest)
    return written


def describe(entry: Entry) -> str:
    return f"{entry.path} ({entry.ref['uri']})" if entry.ref else entry.path


def _changed(entry: Entry, why: str) -> ReferenceChanged:
    return ReferenceChanged(f"reference {entry.path} ({entry.ref['uri']}) no longer matches its pin: {why}")


def _too_many(uri: str, max_objects: int) -> InvalidInput:
    return InvalidInput(f"{uri} holds more than {max_objects} objects: refused; raise the limit with "
                        f"max_objects= (Python) or --max-objects (command line)")


def _is_pinned(entry: Entry) -> bool:
    """Whether anything beyond the URI was recorded (a known size pins too)."""
    return len(entry.ref) > 1 or entry.size >= 0


def _attempts() -> int:
    return max(1, int(os.environ.get("ARTFS_REF_ATTEMPTS", "4")))


def _timeout() -> float:
    return float(os.environ.get("ARTFS_REF_TIMEOUT", "20"))


class Fetcher:
    def __init__(self, scheme: str):
        self.scheme = scheme

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


_KEYS = ("endpoint", "profile", "region", "access_key_id", "secret_access_key")


def bucket_settings(scheme: str, bucket: str) -> dict:
    """Endpoint, profile, region and keys for one bucket: config [scheme.buckets.B], then
    ARTFS_REF_<SCHEME>_*, then config [scheme]; missing ones are left to boto3."""
    doc = _load_config()
    section = doc.get(scheme, {}) if isinstance(doc.get(scheme, {}), dict) else {}
    per_bucket = section.get("buckets", {}).get(bucket, {}) if isinstance(section.get("buckets", {}), dict) else {}
    out = {}
    for key in _KEYS:
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

_MISSING = {"NoSuchKey", "404", "NotFound", "NoSuchVersion"}
_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403", "401", "Forbidden",
           "InvalidSecurity", "ExpiredToken", "InvalidToken"}


class _Gone(Exception):
    pass


class _Stale(Exception):
    pass


class _BadRange(Exception):
    pass


class S3Fetcher(Fetcher):
    """s3:// through boto3 (any S3-compatible server)."""

    def __init__(self, scheme: str):
        super().__init__(scheme)
        self._clients: dict[tuple, object] = {}
        self._versioned: dict[tuple, bool] = {}
        self._lock = threading.Lock()

    # -- clients ------------------------------------------------------------------------
    def settings(self, bucket: str) -> dict:
        return bucket_settings(self.scheme, bucket)

    def client(self, bucket: str):
        s = self.settings(bucket)
        key = tuple(s.get(k) for k in _KEYS)
        with self._lock:
            c = self._clients.get(key)
            if c is None:
                c = self._clients[key] = self._make_client(bucket, s)
            return c

    def _make_client(self, bucket: str, s: dict):
        import boto3
        import botocore.config
        import botocore.exceptions

        config = botocore.config.Config(
            retries={"mode": "standard", "max_attempts": _attempts()},
            connect_timeout=min(_timeout(), 5.0), read_timeout=_timeout(),
            max_pool_connections=32,
            s3={"addressing_style": os.environ.get("ARTFS_S3_ADDRESSING", "path")},
            request_checksum_calculation="when_required", response_checksum_validation="when_required",
        )
        try:
            session = boto3.session.Session(profile_name=s["profile"]) if s.get("profile") else boto3.session.Session()
            kwargs = {}
            if s.get("access_key_id") or s.get("secret_access_key"):
                kwargs = {"aws_access_key_id": s.get("access_key_id"),
                          "aws_secret_access_key": s.get("secret_access_key")}
            return session.client("s3", endpoint_url=s.get("endpoint"), region_name=s.get("region"),
                                  config=config, **kwargs)
        except botocore.exceptions.ProfileNotFound:
            raise InvalidInput(f"{self.scheme}://{bucket}: profile {s['profile']!r} not found "
                               f"(set by ARTFS_REF_{self.scheme.upper()}_PROFILE or {config_path()})") from None
        except (botocore.exceptions.BotoCoreError, ValueError) as e:
            raise InvalidInput(f"cannot configure {self.scheme}://{bucket}: {e}") from None

    def _call(self, where: str, bucket: str, fn, **kwargs):
        import botocore.exceptions

        try:
            return fn(Bucket=bucket, **kwargs)
        except botocore.exceptions.ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in _MISSING:
                raise _Gone() from None
            if code in ("PreconditionFailed", "412") or status == 412:
                raise _Stale() from None
            if code in ("InvalidRange", "416") or status == 416:
                raise _BadRange() from None
            if code == "NoSuchBucket":
                raise NotFound(f"{where}: bucket {bucket!r} does not exist") from None
            if code in _DENIED or status in (401, 403):
                raise StoreUnavailable(f"{where}: access denied ({code or status}); {self._credentials_hint()}") from None
            raise StoreUnavailable(f"{where}: {code or e}") from None
        except botocore.exceptions.NoCredentialsError:
            raise StoreUnavailable(f"{where}: no credentials found; {self._credentials_hint()}") from None
        except botocore.exceptions.ProfileNotFound as e:
            raise InvalidInput(f"{where}: {e}") from None
        except (botocore.exceptions.BotoCoreError, OSError) as e:
            raise StoreUnavailable(f"{where}: cannot reach the server: {e}") from None

    def _credentials_hint(self) -> str:
        return ("reference buckets use boto3's credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID, …), "
                "or ARTFS_REF_S3_PROFILE / ARTFS_REF_S3_ENDPOINT, or per bucket " + config_path())

    # -- naming and pins ------------------------------------------------------------------
    def split(self, uri: str) -> tuple[str, str]:
        parts = urlsplit(uri)
        if not parts.netloc:
            raise InvalidInput(f"invalid reference {uri!r}: expected {self.scheme}://BUCKET[/KEY]")
        if parts.query or parts.fragment:
            raise InvalidInput(f"invalid reference {uri!r}: no ?query or #fragment in {self.scheme}:// URIs")
        return parts.netloc, parts.path.lstrip("/")

    def uri_of(self, bucket: str, key: str) -> str:
        return f"{self.scheme}://{bucket}/{key}"

    def _pin(self, response: dict) -> dict:
        pin = {}
        if response.get("ETag"):
            pin["etag"] = response["ETag"]
        vid = response.get("VersionId")
        if vid:
            pin["version_id"] = vid
        return pin

    def resolve(self, uri, name, checksum, max_objects):
        bucket, key = self.split(uri)
        client = self.client(bucket)
        if key and not key.endswith("/"):
            try:
                head = self._call(uri, bucket, client.head_object, Key=key)
            except _Gone:
                head = None
            except _Stale:
                raise StoreUnavailable(f"{uri}: unexpected 412 answer to HEAD") from None
            if head is not None:
                path = name or normalize_path(posixpath.basename(key))
                return [self._entry(path, bucket, key, head["ContentLength"], self._pin(head) if checksum else {})]
        prefix = key.rstrip("/") + "/" if key else ""
        entries = []
        for obj_key, size, pin in self._list(uri, bucket, prefix, max_objects, checksum):
            rel = obj_key[len(prefix):]
            entries.append(self._entry(join_path(name, rel), bucket, obj_key, size, pin if checksum else {}))
        if not entries:
            raise NotFound(f"{uri}: no such object, and no objects below it")
        return entries

    def _entry(self, path: str, bucket: str, key: str, size: int, pin: dict) -> Entry:
        ref = {"uri": self.uri_of(bucket, key), **pin}
        return Entry(path, size if pin else UNKNOWN_SIZE, b"", ref=ref)  # no pin: size learned when read

    def _is_versioned(self, uri: str, bucket: str) -> bool:
        with self._lock:
            known = self._versioned.get((self.scheme, bucket))
        if known is not None:
            return known
        try:
            status = self._call(uri, bucket, self.client(bucket).get_bucket_versioning).get("Status")
        except (ArtfsError, _Gone, _Stale, _BadRange):
            status = None  # not allowed to ask: ETags still pin every object
        versioned = status == "Enabled"
        with self._lock:
            self._versioned[(self.scheme, bucket)] = versioned
        return versioned

    def _list(self, uri: str, bucket: str, prefix: str, max_objects: int, checksum: bool) -> Iterator[tuple[str, int, dict]]:
        client = self.client(bucket)
        found: list[tuple[str, int, dict]] = []
        if checksum and self._is_versioned(uri, bucket):
            for page in self._pages(uri, bucket, client.list_object_versions, "KeyMarker", "NextKeyMarker",
                                    Prefix=prefix, extra=("VersionIdMarker", "NextVersionIdMarker")):
                for v in page.get("Versions", []):
                    if v.get("IsLatest") and not v["Key"].endswith("/"):
                        found.append((v["Key"], v["Size"], {"etag": v["ETag"], "version_id": v["VersionId"]}))
                        if len(found) > max_objects:
                            raise _too_many(uri, max_objects)
        else:
            for page in self._pages(uri, bucket, client.list_objects_v2, "ContinuationToken",
                                    "NextContinuationToken", Prefix=prefix):
                for o in page.get("Contents", []):
                    if not o["Key"].endswith("/"):
                        found.append((o["Key"], o["Size"], {"etag": o["ETag"]}))
                        if len(found) > max_objects:
                            raise _too_many(uri, max_objects)
        found.sort()
        return iter(found)

    def _pages(self, uri, bucket, fn, marker, next_marker, extra=None, **kwargs):
        while True:
            try:
                page = self._call(uri, bucket, fn, **kwargs)
            except (_Gone, _Stale, _BadRange):
                raise StoreUnavailable(f"{uri}: listing failed") from None
            yield page
            if not page.get("IsTruncated"):
                return
            kwargs[marker] = page.get(next_marker)
            if extra:
                kwargs[extra[0]] = page.get(extra[1])
            if not kwargs[marker]:
                return

    # -- reading ------------------------------------------------------------------------
    def _get_kwargs(self, entry: Entry) -> dict:
        kwargs = {}
        ref = entry.ref
        if ref.get("version_id"):
            kwargs["VersionId"] = ref["version_id"]
        if ref.get("etag"):
            kwargs["IfMatch"] = ref["etag"]
        return kwargs

    def read(self, entry, start, end):
        bucket, key = self.split(entry.ref["uri"])
        kwargs = self._get_kwargs(entry)
        if start or end is not None:
            kwargs["Range"] = f"bytes={start}-" + ("" if end is None else str(end - 1))
        try:
            r = self._call(entry.ref["uri"], bucket, self.client(bucket).get_object, Key=key, **kwargs)
        except _Stale:
            raise _changed(entry, "its ETag changed (the object was overwritten)") from None
        except _Gone:
            if _is_pinned(entry):
                raise _changed(entry, "the pinned object or version no longer exists") from None
            raise NotFound(f"reference {describe(entry)}: not found") from None
        except _BadRange:
            return b""
        self._check_response(entry, r)
        try:
            return r["Body"].read()
        except Exception as e:  # noqa: BLE001 - a dropped connection mid-body
            raise StoreUnavailable(f"reading {entry.ref['uri']}: {e}") from None

    def _check_response(self, entry: Entry, r: dict) -> None:
        pinned = entry.ref.get("etag")
        if pinned and r.get("ETag") and r["ETag"] != pinned:
            raise _changed(entry, f"ETag is {r['ETag']}, pinned {pinned}")
        total = _total_size(r.get("ContentRange"), r.get("ContentLength"))
        if entry.size >= 0 and total is not None and total != entry.size:
            raise _changed(entry, f"size is {total}, pinned {entry.size}")


def _total_size(content_range: str | None, content_length) -> int | None:
    if content_range:
        total = content_range.rpartition("/")[2]
        return int(total) if total.isdigit() else None
    return int(content_length) if content_length is not None else None


class GCSFetcher(S3Fetcher):
    """gs:// through GCS's S3-compatible XML API with HMAC keys (endpoint configurable)."""

    def settings(self, bucket: str) -> dict:
        s = bucket_settings("gs", bucket)
        s.setdefault("endpoint", GCS_ENDPOINT)
        s.setdefault("region", "auto")
        if not s.get("profile") and not (s.get("access_key_id") and s.get("secret_access_key")):
            raise StoreUnavailable(f"gs://{bucket}: no HMAC credentials for GCS: set ARTFS_REF_GS_ACCESS_KEY_ID and "
                                   f"ARTFS_REF_GS_SECRET_ACCESS_KEY, or ARTFS_REF_GS_PROFILE, or [gs] in {config_path()}")
        return s

    def _make_client(self, bucket, s):
        client = super()._make_client(bucket, s)
        # `Generation=` (ours, not boto3's) becomes GCS's ?generation= query parameter.
        client.meta.events.register("provide-client-params.s3.GetObject", _take_generation)
        client.meta.events.register("before-sign.s3.GetObject", _add_generation)
        return client

    def _credentials_hint(self) -> str:
        return ("gs:// references use HMAC keys: ARTFS_REF_GS_ACCESS_KEY_ID / ARTFS_REF_GS_SECRET_ACCESS_KEY, "
                "ARTFS_REF_GS_PROFILE, or " + config_path())

    def _is_versioned(self, uri, bucket):
        return False  # generations come from HEAD headers, not from S3 version listings

    def _list(self, uri, bucket, prefix, max_objects, checksum):
        # The XML API's original listing (GET Bucket with marker): every GCS XML endpoint has it.
        client, found, marker = self.client(bucket), [], None
        while True:
            kwargs = {"Prefix": prefix, **({"Marker": marker} if marker else {})}
            try:
                page = self._call(uri, bucket, client.list_objects, **kwargs)
            except (_Gone, _Stale, _BadRange):
                raise StoreUnavailable(f"{uri}: listing failed") from None
            contents = page.get("Contents", [])
            for o in contents:
                if not o["Key"].endswith("/"):
                    found.append((o["Key"], o["Size"], {"etag": o["ETag"]}))
                    if len(found) > max_objects:
                        raise _too_many(uri, max_objects)
            if not page.get("IsTruncated") or not contents:
                break
            marker = page.get("NextMarker") or contents[-1]["Key"]
        found.sort()
        return iter(found)

    def _pin(self, response):
        pin = {}
        if response.get("ETag"):
            pin["etag"] = response["ETag"]
        generation = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("x-goog-generation")
        if generation:
            pin["generation"] = generation
        return pin

    def _get_kwargs(self, entry):
        kwargs = {}
        if entry.ref.get("etag"):
            kwargs["IfMatch"] = entry.ref["etag"]
        if entry.ref.get("generation"):
            kwargs["Generation"] = entry.ref["generation"]
        return kwargs

    def _check_response(self, entry, r):
        super()._check_response(entry, r)
        pinned = entry.ref.get("generation")
        got = r.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("x-goog-generation")
        if pinned and got and got != pinned:
            raise _changed(entry, f"generation is {got}, pinned {pinned}")


def _take_generation(params, context, **_):
    generation = params.pop("Generation", None)
    if generation is not None:
        context["artfs_generation"] = str(generation)


def _add_generation(request, **_):
    generation = request.context.get("artfs_generation")
    if generation:
        sep = "&" if "?" in request.url else "?"
        request.url = f"{request.url}{sep}generation={quote(generation)}"


# -- HTTP(S) ----------------------------------------------------------------------------------

class HTTPFetcher(Fetcher):
    def __init__(self, scheme: str):
        super().__init__(scheme)
        self._local = threading.local()

    def session(self):
        s = getattr(self._local, "session", None)
        if s is None:
            import requests
            from requests.adapters import HTTPAdapter
            from urllib3.util.retry import Retry

            s = requests.Session()
            retry = Retry(total=_attempts() - 1, connect=_attempts() - 1, read=0, status=_attempts() - 1,
                          backoff_factor=0.2, status_forcelist=(500, 502, 503, 504),
                          allowed_methods=frozenset({"HEAD", "GET"}), raise_on_status=False)
            s.mount("http://", HTTPAdapter(max_retries=retry))
            s.mount("https://", HTTPAdapter(max_retries=retry))
            s.headers["Accept-Encoding"] = "identity"  # sizes and ranges of the bytes themselves
            self._local.session = s
        return s

    def _request(self, method: str, uri: str, **kwargs):
        import requests

        try:
            return self.session().request(method, uri, timeout=(min(_timeout(), 5.0), _timeout()),
                                          allow_redirects=True, **kwargs)
        except requests.exceptions.InvalidURL as e:
            raise InvalidInput(f"invalid reference {uri!r}: {e}") from None
        except requests.RequestException as e:
            raise StoreUnavailable(f"{uri}: cannot reach the server: {type(e).__name__}") from None

    def _denied(self, uri: str, status: int) -> StoreUnavailable:
        return StoreUnavailable(f"{uri}: access denied (HTTP {status}); HTTP credentials come from ~/.netrc")

    def resolve(self, uri, name, checksum, max_objects):
        parts = urlsplit(uri)
        if not parts.netloc:
            raise InvalidInput(f"invalid reference {uri!r}: no host")
        path = name or _basename_of_url(uri)
        if not checksum:
            return [Entry(path, UNKNOWN_SIZE, b"", ref={"uri": uri})]
        r = self._request("HEAD", uri)
        if r.status_code in (405, 501):  # no HEAD here: the headers of a GET will do
            r = self._request("GET", uri, stream=True)
            r.close()
        if r.status_code in (401, 403):
            raise self._denied(uri, r.status_code)
        if r.status_code in (404, 410):
            raise NotFound(f"{uri}: not found (HTTP {r.status_code})")
        if r.status_code != 200:
            raise StoreUnavailable(f"{uri}: HTTP {r.status_code}")
        ref = {"uri": uri}
        if r.headers.get("ETag"):
            ref["etag"] = r.headers["ETag"]
        length = r.headers.get("Content-Length")
        size = int(length) if length and length.isdigit() else UNKNOWN_SIZE
        return [Entry(path, size, b"", ref=ref)]

    def read(self, entry, start, end):
        uri = entry.ref["uri"]
        etag = entry.ref.get("etag")
        headers = {}
        ranged = bool(start) or end is not None
        if ranged:
            headers["Range"] = f"bytes={start}-" + ("" if end is None else str(end - 1))
        if etag and not etag.startswith("W/"):
            headers["If-Match"] = etag  # weak ETags never match If-Match: checked on the answer instead
        r = self._request("GET", uri, headers=headers, stream=True)
        try:
            status = r.status_code
            if status == 412:
                raise _changed(entry, "its ETag changed")
            if status == 416:
                return b""
            if status in (404, 410):
                if _is_pinned(entry):
                    raise _changed(entry, f"it is gone (HTTP {status})")
                raise NotFound(f"reference {describe(entry)}: not found (HTTP {status})")
            if status in (401, 403):
                raise self._denied(uri, status)
            if status not in (200, 206):
                raise StoreUnavailable(f"{uri}: HTTP {status}")
            got = r.headers.get("ETag")
            if etag and got and got != etag:
                raise _changed(entry, f"ETag is {got}, pinned {etag}")
            if etag and not got and not headers.get("If-Match"):
                raise _changed(entry, "the server no longer sends the pinned ETag")
            if status == 206:
                total = _total_size(r.headers.get("Content-Range"), None)
            else:
                length = r.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
            if entry.size >= 0 and total is not None and total != entry.size:
                raise _changed(entry, f"size is {total}, pinned {entry.size}")
            return self._body(r, status, start, end, ranged)
        finally:
            r.close()

    def _body(self, r, status: int, start: int, end: int | None, ranged: bool) -> bytes:
        import requests

        try:
            if status == 206 or not ranged:
                return r.content
            # The server ignored Range: skip to `start` and stop at `end`.
            out, pos = bytearray(), 0
            for block in r.iter_content(1 << 20):
                if end is not None and pos >= end:
                    break
                lo, hi = max(start - pos, 0), len(block) if end is None else min(len(block), end - pos)
                if lo < hi:
                    out += block[lo:hi]
                pos += len(block)
            return bytes(out)
        except requests.RequestException as e:
            raise StoreUnavailable(f"reading {r.url}: {type(e).__name__}") from None


def _basename_of_url(uri: str) -> str:
    base = unquote(posixpath.basename(urlsplit(uri).path))
    if not base:
        raise InvalidInput(f"{uri} has no file name: give the entry a name (name= / --name)")
    return normalize_path(base)


# -- file:// ----------------------------------------------------------------------------------

class FileFetcher(Fetcher):
    """Local (or network-mounted) files: pinned by size, mtime and blake3 (per 1 MiB chunk when large)."""

    def local_path(self, uri: str) -> str:
        parts = urlsplit(uri)
        if parts.netloc not in ("", "localhost"):
            raise InvalidInput(f"invalid reference {uri!r}: a file URI names an absolute path on this host, "
                               f"file:///PATH")
        path = unquote(parts.path)
        if not path.startswith("/"):
            raise InvalidInput(f"invalid reference {uri!r}: expected file:///ABSOLUTE/PATH")
        return os.path.normpath(path)

    @staticmethod
    def uri_of(path: str) -> str:
        return "file://" + quote(path)

    def resolve(self, uri, name, checksum, max_objects):
        root = self.local_path(uri)
        try:
            st = os.stat(root)
        except FileNotFoundError:
            raise NotFound(f"{uri}: no such file or folder") from None
        except OSError as e:
            raise InvalidInput(f"{uri}: {e.strerror}") from None
        if stat_mod.S_ISREG(st.st_mode):
            files = [(name or normalize_path(os.path.basename(root)), root)]
        elif stat_mod.S_ISDIR(st.st_mode):
            files = self._walk(uri, root, name, max_objects)
        else:
            raise InvalidInput(f"{uri} is not a regular file or folder")
        if not checksum:
            return [Entry(path, UNKNOWN_SIZE, b"", ref={"uri": self.uri_of(local)}) for path, local in files]
        if len(files) == 1:
            return [self._pin(*files[0])]
        with ThreadPoolExecutor(8, thread_name_prefix="artfs-ref-hash") as pool:
            return list(pool.map(lambda f: self._pin(*f), files))

    def _walk(self, uri: str, root: str, name: str | None, max_objects: int) -> list[tuple[str, str]]:
        out = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for fn in sorted(filenames):
                full = os.path.join(dirpath, fn)
                if not os.path.isfile(full):
                    continue  # sockets, fifos, broken links
                out.append((join_path(name, os.path.relpath(full, root).replace(os.sep, "/")), full))
                if len(out) > max_objects:
                    raise _too_many(uri, max_objects)
        if not out:
            raise NotFound(f"{uri}: the folder holds no files")
        return out

    def _pin(self, path: str, local: str) -> Entry:
        try:
            before = os.stat(local)
            digest, size, chunks, _ = hash_file(local, chunked=needs_chunks(before.st_size))
            after = os.stat(local)
        except OSError as e:
            raise InvalidInput(f"cannot read {local}: {e.strerror}") from None
        if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns) or size != after.st_size:
            raise InvalidInput(f"{local} changed while it was being hashed; try again")
        if needs_chunks(size) != bool(chunks):
            raise InvalidInput(f"{local} changed while it was being hashed; try again")
        ref = {"uri": self.uri_of(local), "mtime_ns": after.st_mtime_ns}
        if chunks:
            ref["chunks"] = chunks
        mode = 0o755 if after.st_mode & 0o111 else 0o644
        return Entry(path, size, digest, mode, ref=ref)

    def read(self, entry, start, end):
        local = self.local_path(entry.ref["uri"])
        pinned = "mtime_ns" in entry.ref
        try:
            f = open(local, "rb")
        except FileNotFoundError:
            if pinned:
                raise _changed(entry, "the file no longer exists") from None
            raise NotFound(f"reference {describe(entry)}: no such file") from None
        except OSError as e:
            raise StoreUnavailable(f"reference {describe(entry)}: {e.strerror}") from None
        with f:
            if not pinned:
                f.seek(start)
                return f.read(-1 if end is None else end - start)
            st = os.fstat(f.fileno())
            if st.st_size != entry.size or st.st_mtime_ns != entry.ref["mtime_ns"]:
                raise _changed(entry, f"its size is {st.st_size}, pinned {entry.size}" if st.st_size != entry.size
                               else "it was modified (its mtime differs from the pinned one)")
            chunks = entry.ref.get("chunks")
            if not chunks:  # small: the whole file against the entry's digest
                data = f.read(entry.size + 1)
                if len(data) != entry.size or blake3.blake3(data).digest() != entry.digest:
                    raise _changed(entry, "its content no longer matches the pinned blake3")
                return data[start:end]
            first, last = start // CHUNK_SIZE, (end - 1) // CHUNK_SIZE
            f.seek(first * CHUNK_SIZE)
            out = bytearray()
            for k in range(first, last + 1):
                want = min(CHUNK_SIZE, entry.size - k * CHUNK_SIZE)
                data = f.read(want)
                if len(data) != want or blake3.blake3(data).digest() != chunks[k * DIGEST_SIZE:(k + 1) * DIGEST_SIZE]:
                    raise _changed(entry, f"chunk {k} no longer matches its pinned blake3")
                out += data
            lo = start - first * CHUNK_SIZE
            return bytes(out[lo:lo + (end - start)])


_FETCHERS = {"s3": S3Fetcher, "gs": GCSFetcher, "http": HTTPFetcher, "https": HTTPFetcher, "file": FileFetcher}
_fetchers: dict[str, Fetcher] = {}
_fetchers_lock = threading.Lock()
