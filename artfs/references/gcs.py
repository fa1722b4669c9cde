"""gs:// references through GCS's S3-compatible XML API (HMAC keys), pinned by generation."""

from __future__ import annotations

from urllib.parse import quote

from artfs.errors import StoreUnavailable
from artfs.references.base import (
    GCS_ENDPOINT,
    bucket_settings,
    changed,
    config_path,
    too_many,
)
from artfs.references.s3 import BadRange, Gone, S3Fetcher, Stale


class GCSFetcher(S3Fetcher):
    """gs:// through GCS's S3-compatible XML API with HMAC keys (endpoint configurable)."""

    def settings(self, bucket: str) -> dict:
        s = bucket_settings("gs", bucket)
        s.setdefault("endpoint", GCS_ENDPOINT)
        s.setdefault("region", "auto")
        if not s.get("profile") and not (s.get("access_key_id") and s.get("secret_access_key")):
            raise StoreUnavailable(
                f"gs://{bucket}: no HMAC credentials for GCS: set ARTFS_REF_GS_ACCESS_KEY_ID and "
                f"ARTFS_REF_GS_SECRET_ACCESS_KEY, or ARTFS_REF_GS_PROFILE, or [gs] in {config_path()}"
            )
        return s

    def _make_client(self, bucket, s):
        client = super()._make_client(bucket, s)
        # `Generation=` (ours, not boto3's) becomes GCS's ?generation= query parameter.
        client.meta.events.register("provide-client-params.s3.GetObject", _take_generation)
        client.meta.events.register("before-sign.s3.GetObject", _add_generation)
        return client

    def _credentials_hint(self) -> str:
        return (
            "gs:// references use HMAC keys: ARTFS_REF_GS_ACCESS_KEY_ID / ARTFS_REF_GS_SECRET_ACCESS_KEY, "
            "ARTFS_REF_GS_PROFILE, or " + config_path()
        )

    def _is_versioned(self, uri, bucket):
        return False  # generations come from HEAD headers, not from S3 version listings

    def _list(self, uri, bucket, prefix, max_objects, checksum):
        # The XML API's original listing (GET Bucket with marker): every GCS XML endpoint has it.
        client, found, marker = self.client(bucket), [], None
        while True:
            kwargs = {"Prefix": prefix, **({"Marker": marker} if marker else {})}
            try:
                page = self._call(uri, bucket, client.list_objects, **kwargs)
            except (Gone, Stale, BadRange):
                raise StoreUnavailable(f"{uri}: listing failed") from None
            contents = page.get("Contents", [])
            for o in contents:
                if not o["Key"].endswith("/"):
                    found.append((o["Key"], o["Size"], {"etag": o["ETag"]}))
                    if len(found) > max_objects:
                        raise too_many(uri, max_objects)
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
            raise changed(entry, f"generation is {got}, pinned {pinned}")


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
