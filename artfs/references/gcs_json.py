"""gs:// references through GCS's own JSON API, as W&B users have them.

    pin   {"uri", "generation", "md5" (base64, when GCS has one), "gcs_etag"}
    read  GET …/o/KEY?alt=media&generation=G with a Range header; the answer's
          X-Goog-Generation and X-Goog-Hash md5 must match the pin, and its total size the
          entry's. An object overwritten in a bucket without versioning (its generation is
          gone) or changed fails as ReferenceChanged, never with other bytes.

Credentials: Application Default Credentials (google-auth: GOOGLE_APPLICATION_CREDENTIALS,
`gcloud auth application-default login`, the metadata server). With STORAGE_EMULATOR_HOST
set (the client libraries' convention) requests go to that emulator, unauthenticated.

Which API a gs:// reference uses: the XML interop API (gcs.py) when HMAC keys are configured
for the bucket (or the entry was pinned through it: its pin has an "etag"), else this one.
"""

from __future__ import annotations

import logging
import os
import threading
from urllib.parse import quote, urlsplit

from artfs.errors import InvalidInput, NotFound, StoreUnavailable, Transient
from artfs.names import join_path, normalize_path
from artfs.references.base import (
    GCS_ENDPOINT,
    Fetcher,
    bucket_settings,
    changed,
    request_timeout,
    too_many,
)
from artfs.references.gcs import GCSFetcher
from artfs.store.manifest import UNKNOWN_SIZE, Entry

log = logging.getLogger(__name__)
EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
READ_ONLY_SCOPE = "https://www.googleapis.com/auth/devstorage.read_only"
_CREDENTIALS_HINT = (
    "gs:// references use Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS or "
    "`gcloud auth application-default login`), or HMAC keys (ARTFS_REF_GS_ACCESS_KEY_ID / "
    "ARTFS_REF_GS_SECRET_ACCESS_KEY)"
)


def endpoint() -> str:
    emulator = os.environ.get(EMULATOR_ENV, "").strip().rstrip("/")
    if emulator:
        return emulator if "://" in emulator else f"http://{emulator}"
    return GCS_ENDPOINT


def _hash(header: str | None, kind: str) -> str | None:
    """One hash from an X-Goog-Hash header ('crc32c=…,md5=…')."""
    for part in (header or "").split(","):
        k, _, v = part.strip().partition("=")
        if k == kind:
            return v
    return None


class GCSJsonFetcher(Fetcher):
    def __init__(self, scheme: str):
        super().__init__(scheme)
        self._local = threading.local()

    def _session(self):
        s = getattr(self._local, "session", None)
        key = endpoint()
        if s is None or getattr(self._local, "endpoint", None) != key:
            import requests
            from requests.adapters import HTTPAdapter

            if os.environ.get(EMULATOR_ENV):
                s = requests.Session()
            else:
                s = self._authorized_session()
            s.mount("http://", HTTPAdapter(max_retries=0))  # retries are the RetryPolicy's (store/retry.py)
            s.mount("https://", HTTPAdapter(max_retries=0))
            s.headers["Accept-Encoding"] = "identity"  # the stored bytes, whatever Content-Encoding they have
            self._local.session, self._local.endpoint = s, key
        return s

    @staticmethod
    def _authorized_session():
        try:
            import google.auth
            from google.auth.exceptions import DefaultCredentialsError
            from google.auth.transport.requests import AuthorizedSession
        except ImportError:  # pragma: no cover - google-auth is a dependency
            raise StoreUnavailable(f"google-auth is not installed: {_CREDENTIALS_HINT}") from None
        try:
            credentials, _ = google.auth.default(scopes=[READ_ONLY_SCOPE])
        except DefaultCredentialsError:
            raise StoreUnavailable(f"no Google credentials: {_CREDENTIALS_HINT}") from None
        return AuthorizedSession(credentials)

    def split(self, uri: str) -> tuple[str, str]:
        parts = urlsplit(uri)
        if not parts.netloc:
            raise InvalidInput(f"invalid reference {uri!r}: expected gs://BUCKET/KEY")
        if parts.query or parts.fragment:
            raise InvalidInput(f"invalid reference {uri!r}: no ?query or #fragment in gs:// URIs")
        return parts.netloc, parts.path.lstrip("/")

    def _get(self, uri: str, url: str, **kwargs):
        return self.retry.call(self._get_once, uri, url, **kwargs)

    def _get_once(self, uri: str, url: str, **kwargs):
        import requests

        try:
            r = self._session().get(url, timeout=(min(request_timeout(), 5.0), request_timeout()), **kwargs)
        except requests.RequestException as e:
            raise Transient(f"{uri}: cannot reach GCS at {endpoint()}: {type(e).__name__}") from None
        if r.status_code in (429, 500, 502, 503, 504):
            raise Transient(f"{uri}: GCS answered HTTP {r.status_code}")
        if r.status_code in (401, 403):
            raise StoreUnavailable(f"{uri}: access denied (HTTP {r.status_code}); {_CREDENTIALS_HINT}")
        return r

    def _object_url(self, bucket: str, key: str) -> str:
        return f"{endpoint()}/storage/v1/b/{quote(bucket, safe='')}/o/{quote(key, safe='')}"

    # -- resolve -------------------------------------------------------------------------
    @staticmethod
    def _entry(path: str, bucket: str, obj: dict, checksum: bool) -> Entry:
        ref: dict = {"uri": f"gs://{bucket}/{obj['name']}"}
        if not checksum:
            return Entry(path, UNKNOWN_SIZE, b"", ref=ref)
        ref["generation"] = str(obj["generation"])
        if obj.get("md5Hash"):
            ref["md5"] = obj["md5Hash"]
        if obj.get("etag"):
            ref["gcs_etag"] = obj["etag"]
        return Entry(path, int(obj.get("size", UNKNOWN_SIZE)), b"", ref=ref)

    def resolve(self, uri, name, checksum, max_objects):
        bucket, key = self.split(uri)
        if key and not key.endswith("/"):
            r = self._get(uri, self._object_url(bucket, key))
            if r.status_code == 200:
                obj = r.json()
                path = name or normalize_path(key.rsplit("/", 1)[-1])
                return [self._entry(path, bucket, obj, checksum)]
            if r.status_code != 404:
                raise StoreUnavailable(f"{uri}: GCS answered HTTP {r.status_code}")
        prefix = key.rstrip("/") + "/" if key else ""
        entries: list[Entry] = []
        token = None
        while True:
            params = {"prefix": prefix, "maxResults": "1000", **({"pageToken": token} if token else {})}
            r = self._get(uri, f"{endpoint()}/storage/v1/b/{quote(bucket, safe='')}/o", params=params)
            if r.status_code == 404:
                raise NotFound(f"{uri}: no such bucket")
            if r.status_code != 200:
                raise StoreUnavailable(f"{uri}: listing failed (HTTP {r.status_code})")
            page = r.json()
            for obj in page.get("items", []):
                if obj["name"].endswith("/"):
                    continue  # a folder placeholder, not a file
                entries.append(self._entry(join_path(name, obj["name"][len(prefix) :]), bucket, obj, checksum))
                if len(entries) > max_objects:
                    raise too_many(uri, max_objects)
            token = page.get("nextPageToken")
            if not token:
                break
        if not entries:
            raise NotFound(f"{uri}: no such object, and no objects below it")
        return sorted(entries, key=lambda e: e.path)

    # -- read ----------------------------------------------------------------------------
    def read(self, entry, start, end):
        uri = entry.ref["uri"]
        bucket, key = self.split(uri)
        params = {"alt": "media"}
        generation = entry.ref.get("generation")
        if generation:
            params["generation"] = str(generation)
        headers = {"Range": f"bytes={start}-{'' if end is None else end - 1}"}
        log.debug("gs read %s %s", uri, headers["Range"])  # tests check that reads are ranged
        r = self._get(uri, self._object_url(bucket, key), params=params, headers=headers)
        if r.status_code == 404:
            if generation:
                raise changed(entry, f"generation {generation} is gone (overwritten or deleted)")
            raise NotFound(f"{uri}: no such object")
        if r.status_code == 416:
            return b""
        if r.status_code not in (200, 206):
            raise StoreUnavailable(f"{uri}: GCS answered HTTP {r.status_code}")
        got = r.headers.get("X-Goog-Generation")
        if generation and got and got != str(generation):
            raise changed(entry, f"generation is {got}, pinned {generation}")
        md5 = _hash(r.headers.get("X-Goog-Hash"), "md5")
        if entry.ref.get("md5") and md5 and md5 != entry.ref["md5"]:
            raise changed(entry, "MD5 differs")
        data = r.content
        if r.status_code == 200:  # the whole object: the range is ours to cut
            if entry.size >= 0 and len(data) != entry.size:
                raise changed(entry, f"size is {len(data)}, pinned {entry.size}")
            return data[start:end]
        total = r.headers.get("Content-Range", "").rpartition("/")[2]
        if entry.size >= 0 and total.isdigit() and int(total) != entry.size:
            raise changed(entry, f"size is {total}, pinned {entry.size}")
        return data


def _hmac_configured(bucket: str) -> bool:
    s = bucket_settings("gs", bucket)
    return bool(s.get("profile") or (s.get("access_key_id") and s.get("secret_access_key")))


class GCSAnyFetcher(Fetcher):
    """gs:// through the XML interop API when HMAC keys are configured (or the pin came from
    it), else through the JSON API (see the module doc)."""

    def __init__(self, scheme: str):
        super().__init__(scheme)
        self.xml = GCSFetcher(scheme)
        self.json = GCSJsonFetcher(scheme)

    def _bucket(self, uri: str) -> str:
        return self.json.split(uri)[0]

    def resolve(self, uri, name, checksum, max_objects):
        f = self.xml if _hmac_configured(self._bucket(uri)) else self.json
        return f.resolve(uri, name, checksum, max_objects)

    def read(self, entry, start, end):
        ref = entry.ref
        if "etag" in ref or ("md5" not in ref and "gcs_etag" not in ref and _hmac_configured(self._bucket(ref["uri"]))):
            return self.xml.read(entry, start, end)
        return self.json.read(entry, start, end)
