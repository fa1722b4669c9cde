"""http(s):// references: pinned by ETag, read with Range and If-Match (requests)."""

from __future__ import annotations

import posixpath
import threading
from urllib.parse import unquote, urlsplit

from artfs.errors import InvalidInput, NotFound, StoreUnavailable, Transient
from artfs.names import normalize_path
from artfs.references.base import (
    Fetcher,
    changed,
    describe,
    is_pinned,
    request_timeout,
)
from artfs.references.s3 import total_size
from artfs.store.manifest import UNKNOWN_SIZE, Entry


class HTTPFetcher(Fetcher):
    def __init__(self, scheme: str):
        super().__init__(scheme)
        self._local = threading.local()

    def session(self):
        s = getattr(self._local, "session", None)
        if s is None:
            import requests
            from requests.adapters import HTTPAdapter

            s = requests.Session()
            s.mount("http://", HTTPAdapter(max_retries=0))  # retries are the RetryPolicy's (store/retry.py)
            s.mount("https://", HTTPAdapter(max_retries=0))
            s.headers["Accept-Encoding"] = "identity"  # sizes and ranges of the bytes themselves
            self._local.session = s
        return s

    def _request(self, method: str, uri: str, **kwargs):
        return self.retry.call(self._request_once, method, uri, **kwargs)

    def _request_once(self, method: str, uri: str, **kwargs):
        import requests

        try:
            r = self.session().request(
                method, uri, timeout=(min(request_timeout(), 5.0), request_timeout()), allow_redirects=True, **kwargs
            )
        except requests.exceptions.InvalidURL as e:
            raise InvalidInput(f"invalid reference {uri!r}: {e}") from None
        except requests.RequestException as e:
            raise Transient(f"{uri}: cannot reach the server: {type(e).__name__}") from None
        if r.status_code in (500, 502, 503, 504):
            r.close()
            raise Transient(f"{uri}: HTTP {r.status_code}")
        return r

    def _denied(self, uri: str, status: int) -> StoreUnavailable:
        return StoreUnavailable(f"{uri}: access denied (HTTP {status}); HTTP credentials come from ~/.netrc")

    def resolve(self, uri, name, checksum, max_objects):
        parts = urlsplit(uri)
        if not parts.netloc:
            raise InvalidInput(f"invalid reference {uri!r}: no host")
        path = name or basename_of_url(uri)
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
        return self.retry.call(self._read_once, entry, uri, headers, start, end, ranged)

    def _read_once(self, entry, uri, headers, start, end, ranged):
        etag = entry.ref.get("etag")
        r = self._request_once("GET", uri, headers=headers, stream=True)
        try:
            status = r.status_code
            if status == 412:
                raise changed(entry, "its ETag changed")
            if status == 416:
                return b""
            if status in (404, 410):
                if is_pinned(entry):
                    raise changed(entry, f"it is gone (HTTP {status})")
                raise NotFound(f"reference {describe(entry)}: not found (HTTP {status})")
            if status in (401, 403):
                raise self._denied(uri, status)
            if status not in (200, 206):
                raise StoreUnavailable(f"{uri}: HTTP {status}")
            got = r.headers.get("ETag")
            if etag and got and got != etag:
                raise changed(entry, f"ETag is {got}, pinned {etag}")
            if etag and not got and not headers.get("If-Match"):
                raise changed(entry, "the server no longer sends the pinned ETag")
            if status == 206:
                total = total_size(r.headers.get("Content-Range"), None)
            else:
                length = r.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
            if entry.size >= 0 and total is not None and total != entry.size:
                raise changed(entry, f"size is {total}, pinned {entry.size}")
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
            raise Transient(f"reading {r.url}: {type(e).__name__}") from None


def basename_of_url(uri: str) -> str:
    base = unquote(posixpath.basename(urlsplit(uri).path))
    if not base:
        raise InvalidInput(f"{uri} has no file name: give the entry a name (name= / --name)")
    return normalize_path(base)


# -- file:// ----------------------------------------------------------------------------------
