"""S3-compatible store through boto3 (AWS, SeaweedFS, MinIO, Ceph RGW, GCS interop).

Configuration is boto3's own (credentials chain, AWS_ENDPOINT_URL, profiles).
Each request is sent once by botocore and retried by the one policy of
store/retry.py (bounds in config.Timeouts), body reads included: a body that
breaks off mid-way is fetched again from where it broke. A dead endpoint
becomes StoreUnavailable within a bounded time instead of a hang.
"""

from __future__ import annotations

import ctypes
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import boto3
import botocore.config
import botocore.exceptions
from boto3.s3.transfer import TransferConfig

from artfs.config import Timeouts
from artfs.errors import InvalidInput, NotFound, PreconditionFailed, StoreUnavailable, Transient
from artfs.store.backends.base import ObjectInfo, ObjectStore
from artfs.store.retry import RetryPolicy

_MISSING = {"NoSuchKey", "404", "NotFound", "NoSuchVersion"}
_LOST_RACE = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
_PASSING = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
    "500",
    "502",
    "503",
    "504",
}  # worth sending again


# Keys whose name is the blake3 of their bytes (store/keys.py), checked by every read.
_SELF_CHECKED = ("objects/", "packs/")
_PART = 16 << 20  # put_file: part size (at least), and parts sent at once
_PARTS_AT_ONCE = 8


# Parts this large are read straight off the socket into a buffer of their own (one copy,
# kernel to buffer) instead of through botocore's and urllib3's read(n), which costs a fresh
# bytes object per read and more CPU per byte (a 1 MiB part: 4.0 against 2.4-3.3 GB/s here).
DIRECT_PART = 256 << 10
_PAGE = 4096


def _wire(body):
    """The http.client response under botocore's StreamingBody and urllib3's HTTPResponse, when
    the body is sent as is (no content encoding, not chunked): what can be read into a buffer."""
    raw = getattr(body, "_raw_stream", None)
    fp = getattr(raw, "_fp", None)
    if fp is None or not hasattr(fp, "readinto") or getattr(fp, "chunked", True):
        return None
    if raw.headers.get("content-encoding", "identity") != "identity":
        return None
    return fp


def _read_into(wire, body, n: int) -> bytes | memoryview:
    """Up to n bytes of the body (fewer only at its end), read into one new page-aligned buffer
    (so the disk cache can write it with O_DIRECT as it is, with no aligned copy). The urllib3
    response's connection goes back to its pool once the body is read to its end, as its own
    read() does (closing the body would otherwise close the connection)."""
    buf = bytearray(n + _PAGE)
    pad = -_address(buf) % _PAGE
    view = memoryview(buf)[pad : pad + n]
    got = 0
    while got < n:
        k = wire.readinto(view[got:])
        if not k:
            break
        got += k
    if got < n and wire.length:  # the connection broke off before the body's Content-Length
        raise ConnectionError(f"the body ended {wire.length} bytes early")
    if wire.isclosed():
        body._raw_stream.release_conn()
    return view if got == n else bytes(view[:got])  # (short: the end of the object)


def _address(buf: bytearray) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(buf))  # (the export ends with the c_char)


class _Abandoned(Exception):
    pass


class _InvalidRange(Exception):
    """A ranged GET starting at or past the end of the object (HTTP 416)."""


def make_client(endpoint_url: str | None = None, profile: str | None = None):
    t = Timeouts()
    config = botocore.config.Config(
        retries={"mode": "standard", "max_attempts": 1},  # retries are RetryPolicy's (body reads too)
        connect_timeout=t.s3_connect,
        read_timeout=t.s3_read,
        max_pool_connections=64,
        s3={"addressing_style": os.environ.get("ARTFS_S3_ADDRESSING", "path")},
    )
    session = boto3.session.Session(profile_name=profile) if profile else boto3.session.Session()
    try:
        return session.client("s3", endpoint_url=endpoint_url, config=config)
    except botocore.exceptions.BotoCoreError as e:
        raise InvalidInput(f"cannot configure S3: {e}") from None


def error_code(e: botocore.exceptions.ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


class S3Store(ObjectStore):
    def __init__(self, bucket: str, prefix: str = ""):
        self.bucket = bucket
        self.prefix = f"{prefix}/" if prefix else ""
        self.url = f"s3://{bucket}/{prefix}".rstrip("/")
        self.client = make_client()
        self.retry = RetryPolicy.for_store()
        self._transfer = TransferConfig(multipart_threshold=64 << 20, multipart_chunksize=64 << 20, max_concurrency=8)

    def _call(self, key: str, fn, **kwargs):
        """One request under the retry policy."""
        return self.retry.call(self._once, key, fn, **kwargs)

    def _once(self, key: str, fn, **kwargs):
        try:
            return fn(Bucket=self.bucket, **kwargs)
        except botocore.exceptions.ClientError as e:
            code = error_code(e)
            if code in _MISSING:
                raise NotFound(f"{key}: not found in {self.url}") from None
            if code == "InvalidRange":
                raise _InvalidRange(key) from None
            if code in _LOST_RACE:
                raise PreconditionFailed(f"{key}: changed or exists already") from None
            if code in ("NoSuchBucket",):
                raise StoreUnavailable(f"bucket {self.bucket!r} does not exist") from None
            if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
                raise StoreUnavailable(f"access denied to {self.url} ({code})") from None
            if code in _PASSING:
                raise Transient(f"{self.url} answered {code} (the store is failing or overloaded)") from None
            raise StoreUnavailable(f"{self.url}: {code or e}") from None
        except botocore.exceptions.NoCredentialsError:
            raise StoreUnavailable(f"no S3 credentials found for {self.url} (see boto3 configuration)") from None
        except (botocore.exceptions.BotoCoreError, OSError) as e:
            raise Transient(f"cannot reach {self.url}: {e}") from None

    def get(self, key, start=0, end=None):
        kwargs = {}
        if start or end is not None:
            if end is not None and end <= start:
                return b""
            kwargs["Range"] = f"bytes={start}-" + ("" if end is None else str(end - 1))
        try:
            return self.retry.call(self._get_once, key, kwargs)  # the request and its body, tried together
        except _InvalidRange:
            return b""  # the range starts past the end: no bytes, as a local file read gives

    def _get_once(self, key, kwargs) -> bytes:
        return self._read_body(key, self._once(key, self.client.get_object, Key=self.prefix + key, **kwargs))

    def get_parts(self, key, start, lengths):
        pending = list(lengths)
        attempts = self.retry.tracker()
        while pending and sum(pending) > 0:
            end = start + sum(pending)
            try:
                r = self._call(key, self.client.get_object, Key=self.prefix + key, Range=f"bytes={start}-{end - 1}")
            except _InvalidRange:
                return
            body = r["Body"]
            try:
                while pending:
                    n = pending[0]
                    try:
                        part = self._read_part(key, body, n)
                    except Transient as e:
                        attempts.again(e)  # or raise: the rest is asked for again from `start`
                        break
                    yield part
                    pending.pop(0)
                    start += n
                    if len(part) < n:
                        return
            finally:
                body.close()

    def _read_part(self, key, body, n: int) -> bytes | memoryview:
        try:
            wire = _wire(body) if n >= DIRECT_PART else None
            if wire is not None:
                return _read_into(wire, body, n)
            part = body.read(n)
            while 0 < len(part) < n:  # a read may stop short of `amt` only at the end of the body
                more = body.read(n - len(part))
                if not more:
                    break
                part += more
            return part
        except (botocore.exceptions.BotoCoreError, OSError) as e:
            raise Transient(f"reading {key} from {self.url}: {e}") from None

    def _read_body(self, key, response) -> bytes:
        try:
            return response["Body"].read()
        except (botocore.exceptions.BotoCoreError, OSError) as e:
            raise Transient(f"reading {key} from {self.url}: {e}") from None

    def get_with_etag(self, key):
        def once():
            r = self._once(key, self.client.get_object, Key=self.prefix + key)
            return self._read_body(key, r), r["ETag"]

        return self.retry.call(once)

    def put(self, key, data, *, if_none_match=False, if_match=None):
        kwargs = {}
        if if_none_match:
            kwargs["IfNoneMatch"] = "*"
        if if_match is not None:
            kwargs["IfMatch"] = if_match
        # Content named by its own digest goes through the client that neither signs nor
        # checksums the body (see _uploader); records, refs and conditional writes do not.
        client = self._uploader() if not kwargs and key.startswith(_SELF_CHECKED) else self.client
        try:
            r = self._call(key, client.put_object, Key=self.prefix + key, Body=data, **kwargs)
        except NotFound:
            if if_match is None:
                raise
            # AWS answers If-Match on a missing key with 404; SeaweedFS with 412. Both lose.
            raise PreconditionFailed(f"{key}: changed since it was read") from None
        return r["ETag"]

    def put_stream(self, key, stream):
        # A stream is read once, so it cannot be sent again whole: s3transfer cuts it into parts
        # held in memory, and a client with botocore's own retries re-sends a failed part.
        streamer = getattr(self, "_streamer", None)
        if streamer is None:
            streamer = self._streamer = boto3.session.Session().client(
                "s3",
                endpoint_url=self.client.meta.endpoint_url,
                region_name=self.client.meta.region_name,
                config=self.client.meta.config.merge(
                    botocore.config.Config(retries={"mode": "standard", "max_attempts": self.retry.attempts})
                ),
            )
        try:
            streamer.upload_fileobj(stream, self.bucket, self.prefix + key, Config=self._transfer)
        except boto3.exceptions.S3UploadFailedError as e:
            raise StoreUnavailable(f"upload of {key} to {self.url} failed: {e}") from None
        except botocore.exceptions.ClientError as e:  # upload_fileobj passes these on unwrapped
            raise StoreUnavailable(f"upload of {key} to {self.url} failed: {error_code(e) or e}") from None
        except (botocore.exceptions.BotoCoreError, OSError) as e:
            raise StoreUnavailable(f"cannot reach {self.url}: {e}") from None

    def _uploader(self):
        """The client for content named by the blake3 of its bytes (put_file, and put of
        _SELF_CHECKED keys): the same, but with no checksum of the body unless the operation
        requires one (botocore's default is a CRC32 pass over every byte) and the body not
        signed (UNSIGNED-PAYLOAD; over plain http botocore otherwise hashes every byte with
        SHA-256). Together they cost ~3 CPU-s per GiB here. Neither is needed for integrity:
        every read checks the bytes against the digest the key names (and `artfs verify`
        finds a damaged object), so a body altered on the way is refused when read, never
        served. The request itself stays signed. ARTFS_S3_SIGN_PAYLOAD=1 signs bodies anyway."""
        c = getattr(self, "_upload_client", None)
        if c is None:
            s3 = dict(self.client.meta.config.s3 or {})
            if os.environ.get("ARTFS_S3_SIGN_PAYLOAD", "") not in ("1", "true", "yes"):
                s3["payload_signing_enabled"] = False
            c = self._upload_client = boto3.session.Session().client(
                "s3",
                endpoint_url=self.client.meta.endpoint_url,
                region_name=self.client.meta.region_name,
                config=self.client.meta.config.merge(
                    botocore.config.Config(request_checksum_calculation="when_required", s3=s3)
                ),
            )
        return c

    def put_file(self, key, path, unchanged):
        """A local file in parallel parts read straight from it (no stream to copy through),
        completed only if `unchanged()` still holds once every part is sent."""
        client = self._uploader()
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size <= _PART:
                data = f.read()
                if not unchanged():
                    return False
                self._call(key, client.put_object, Key=self.prefix + key, Body=data)
                return True
            part = max(_PART, -(-size // 9000))  # S3 allows 10,000 parts
            upload = self._call(key, client.create_multipart_upload, Key=self.prefix + key)["UploadId"]
            try:

                def send(i):
                    data = os.pread(f.fileno(), part, i * part)
                    r = self._call(
                        key, client.upload_part, Key=self.prefix + key, UploadId=upload, PartNumber=i + 1, Body=data
                    )
                    return {"PartNumber": i + 1, "ETag": r["ETag"]}

                with ThreadPoolExecutor(max_workers=_PARTS_AT_ONCE) as pool:
                    parts = list(pool.map(send, range(-(-size // part))))
                if not unchanged():
                    raise _Abandoned()
                self._call(
                    key,
                    client.complete_multipart_upload,
                    Key=self.prefix + key,
                    UploadId=upload,
                    MultipartUpload={"Parts": parts},
                )
                return True
            except BaseException as e:
                try:
                    client.abort_multipart_upload(Bucket=self.bucket, Key=self.prefix + key, UploadId=upload)
                except Exception:  # best effort: the store expires abandoned uploads too
                    pass
                if isinstance(e, _Abandoned):
                    return False
                raise

    def head(self, key):
        try:
            r = self._call(key, self.client.head_object, Key=self.prefix + key)
        except NotFound:
            return None
        return ObjectInfo(key, r["ContentLength"], r["ETag"], r["LastModified"].timestamp())

    def list(self, prefix) -> Iterator[ObjectInfo]:
        # Sorted here: not every S3 server lists in key order (SeaweedFS walks folders,
        # so "a/1" comes before "a-b/1").
        found, token = [], None
        while True:
            kwargs = {"Prefix": self.prefix + prefix}
            if token:
                kwargs["ContinuationToken"] = token
            r = self._call(prefix, self.client.list_objects_v2, **kwargs)
            for o in r.get("Contents", []):
                found.append(
                    ObjectInfo(o["Key"][len(self.prefix) :], o["Size"], o["ETag"], o["LastModified"].timestamp())
                )
            if not r.get("IsTruncated"):
                break
            token = r["NextContinuationToken"]
        found.sort(key=lambda o: o.key)
        return iter(found)

    def list_prefixes(self, prefix):
        names, token = [], None
        while True:
            kwargs = {"Prefix": self.prefix + prefix, "Delimiter": "/"}
            if token:
                kwargs["ContinuationToken"] = token
            r = self._call(prefix, self.client.list_objects_v2, **kwargs)
            full = len(self.prefix + prefix)
            names += [p["Prefix"][full:].rstrip("/") for p in r.get("CommonPrefixes", [])]
            if not r.get("IsTruncated"):
                return sorted(names)
            token = r["NextContinuationToken"]

    def delete(self, key, *, if_match=None):
        kwargs = {"IfMatch": if_match} if if_match is not None else {}
        try:
            self._call(key, self.client.delete_object, Key=self.prefix + key, **kwargs)
        except NotFound:
            if if_match is not None:
                raise PreconditionFailed(f"{key}: changed since it was read") from None
