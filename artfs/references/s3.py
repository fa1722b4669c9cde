"""s3:// references: pinned by ETag and VersionId, read with If-Match (boto3)."""

from __future__ import annotations

import os
import posixpath
import threading
from typing import Iterator
from urllib.parse import urlsplit

from artfs.errors import ArtfsError, InvalidInput, NotFound, StoreUnavailable, Transient
from artfs.names import join_path, normalize_path
from artfs.references.base import (
    SETTING_KEYS,
    Fetcher,
    bucket_settings,
    changed,
    config_path,
    describe,
    is_pinned,
    pin_of,
    request_timeout,
    too_many,
)
from artfs.store.manifest import UNKNOWN_SIZE, Entry

_MISSING = {"NoSuchKey", "404", "NotFound", "NoSuchVersion"}
_DENIED = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "403",
    "401",
    "Forbidden",
    "InvalidSecurity",
    "ExpiredToken",
    "InvalidToken",
}


class Gone(Exception):
    pass


class Stale(Exception):
    pass


class BadRange(Exception):
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
        key = tuple(s.get(k) for k in SETTING_KEYS)
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
            retries={"mode": "standard", "max_attempts": 1},  # retries are the RetryPolicy's (store/retry.py)
            connect_timeout=min(request_timeout(), 5.0),
            read_timeout=request_timeout(),
            max_pool_connections=32,
            s3={"addressing_style": os.environ.get("ARTFS_S3_ADDRESSING", "path")},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        try:
            session = boto3.session.Session(profile_name=s["profile"]) if s.get("profile") else boto3.session.Session()
            kwargs = {}
            if s.get("access_key_id") or s.get("secret_access_key"):
                kwargs = {
                    "aws_access_key_id": s.get("access_key_id"),
                    "aws_secret_access_key": s.get("secret_access_key"),
                }
            return session.client(
                "s3", endpoint_url=s.get("endpoint"), region_name=s.get("region"), config=config, **kwargs
            )
        except botocore.exceptions.ProfileNotFound:
            raise InvalidInput(
                f"{self.scheme}://{bucket}: profile {s['profile']!r} not found "
                f"(set by ARTFS_REF_{self.scheme.upper()}_PROFILE or {config_path()})"
            ) from None
        except (botocore.exceptions.BotoCoreError, ValueError) as e:
            raise InvalidInput(f"cannot configure {self.scheme}://{bucket}: {e}") from None

    def _call(self, where: str, bucket: str, fn, **kwargs):
        return self.retry.call(self._once, where, bucket, fn, **kwargs)

    def _once(self, where: str, bucket: str, fn, **kwargs):
        import botocore.exceptions

        try:
            return fn(Bucket=bucket, **kwargs)
        except botocore.exceptions.ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in _MISSING:
                raise Gone() from None
            if code in ("PreconditionFailed", "412") or status == 412:
                raise Stale() from None
            if code in ("InvalidRange", "416") or status == 416:
                raise BadRange() from None
            if code == "NoSuchBucket":
                raise NotFound(f"{where}: bucket {bucket!r} does not exist") from None
            if code in _DENIED or status in (401, 403):
                raise StoreUnavailable(
                    f"{where}: access denied ({code or status}); {self._credentials_hint()}"
                ) from None
            if (status or 0) >= 500 or code in ("SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable"):
                raise Transient(f"{where}: {code or status}") from None
            raise StoreUnavailable(f"{where}: {code or e}") from None
        except botocore.exceptions.NoCredentialsError:
            raise StoreUnavailable(f"{where}: no credentials found; {self._credentials_hint()}") from None
        except botocore.exceptions.ProfileNotFound as e:
            raise InvalidInput(f"{where}: {e}") from None
        except (botocore.exceptions.BotoCoreError, OSError) as e:
            raise Transient(f"{where}: cannot reach the server: {e}") from None

    def _credentials_hint(self) -> str:
        return (
            "reference buckets use boto3's credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID, …), "
            "or ARTFS_REF_S3_PROFILE / ARTFS_REF_S3_ENDPOINT, or per bucket " + config_path()
        )

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
            except Gone:
                head = None
            except Stale:
                raise StoreUnavailable(f"{uri}: unexpected 412 answer to HEAD") from None
            if head is not None:
                path = name or normalize_path(posixpath.basename(key))
                return [self._entry(path, bucket, key, head["ContentLength"], self._pin(head) if checksum else {})]
        prefix = key.rstrip("/") + "/" if key else ""
        entries = []
        for obj_key, size, pin in self._list(uri, bucket, prefix, max_objects, checksum):
            rel = obj_key[len(prefix) :]
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
        except (ArtfsError, Gone, Stale, BadRange):
            status = None  # not allowed to ask: ETags still pin every object
        versioned = status == "Enabled"
        with self._lock:
            self._versioned[(self.scheme, bucket)] = versioned
        return versioned

    def _list(
        self, uri: str, bucket: str, prefix: str, max_objects: int, checksum: bool
    ) -> Iterator[tuple[str, int, dict]]:
        client = self.client(bucket)
        found: list[tuple[str, int, dict]] = []
        if checksum and self._is_versioned(uri, bucket):
            for page in self._pages(
                uri,
                bucket,
                client.list_object_versions,
                "KeyMarker",
                "NextKeyMarker",
                Prefix=prefix,
                extra=("VersionIdMarker", "NextVersionIdMarker"),
            ):
                for v in page.get("Versions", []):
                    if v.get("IsLatest") and not v["Key"].endswith("/"):
                        found.append((v["Key"], v["Size"], {"etag": v["ETag"], "version_id": v["VersionId"]}))
                        if len(found) > max_objects:
                            raise too_many(uri, max_objects)
        else:
            for page in self._pages(
                uri, bucket, client.list_objects_v2, "ContinuationToken", "NextContinuationToken", Prefix=prefix
            ):
                for o in page.get("Contents", []):
                    if not o["Key"].endswith("/"):
                        found.append((o["Key"], o["Size"], {"etag": o["ETag"]}))
                        if len(found) > max_objects:
                            raise too_many(uri, max_objects)
        found.sort()
        return iter(found)

    def _pages(self, uri, bucket, fn, marker, next_marker, extra=None, **kwargs):
        while True:
            try:
                page = self._call(uri, bucket, fn, **kwargs)
            except (Gone, Stale, BadRange):
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
        ref = pin_of(entry)
        if ref.get("version_id"):
            kwargs["VersionId"] = ref["version_id"]
        if ref.get("etag"):
            kwargs["IfMatch"] = ref["etag"]
        return kwargs

    def read(self, entry, start, end):
        return self.retry.call(self._read_once, entry, start, end)  # the request and its body, tried together

    def _read_once(self, entry, start, end):
        bucket, key = self.split(entry.ref["uri"])
        kwargs = self._get_kwargs(entry)
        if start or end is not None:
            kwargs["Range"] = f"bytes={start}-" + ("" if end is None else str(end - 1))
        try:
            r = self._once(entry.ref["uri"], bucket, self.client(bucket).get_object, Key=key, **kwargs)
        except Stale:
            raise changed(entry, "its ETag changed (the object was overwritten)") from None
        except Gone:
            if is_pinned(entry):
                raise changed(entry, "the pinned object or version no longer exists") from None
            raise NotFound(f"reference {describe(entry)}: not found") from None
        except BadRange:
            return b""
        self._check_response(entry, r)
        try:
            return r["Body"].read()
        except Exception as e:  # noqa: BLE001 - a dropped connection mid-body
            raise Transient(f"reading {pin_of(entry)['uri']}: {e}") from None

    def _check_response(self, entry: Entry, r: dict) -> None:
        pinned = pin_of(entry).get("etag")
        if pinned and r.get("ETag") and r["ETag"] != pinned:
            raise changed(entry, f"ETag is {r['ETag']}, pinned {pinned}")
        total = total_size(r.get("ContentRange"), r.get("ContentLength"))
        if entry.size >= 0 and total is not None and total != entry.size:
            raise changed(entry, f"size is {total}, pinned {entry.size}")


def total_size(content_range: str | None, content_length) -> int | None:
    if content_range:
        total = content_range.rpartition("/")[2]
        return int(total) if total.isdigit() else None
    return int(content_length) if content_length is not None else None
