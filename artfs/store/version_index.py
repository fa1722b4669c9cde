"""The version index: copies of an artifact's version records, 256 to an object.

  artifacts/<project>/<name>/version-index/b<K>.json
      {"format": 1, "records": {"<N>": {"etag": <ETag of versions/v<N>.json>, "record": {…}}}}
      for N in [256·K, 256·K + 255]

A fresh process listing 1,000 versions then reads one LIST page and four index
objects instead of 1,000 records one after another. The index is only a cache:
the listing of `versions/` stays the truth, and a copy is used only when its
ETag is the one the listing gives for that record (anything else, a missing,
stale or damaged block, is read from the record itself). Writers update a block
by compare-and-swap after writing a record; readers that had to read records
themselves write them back (best effort: a store with read-only credentials
just stays slower).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from artfs.errors import CorruptRecord, NotFound, PreconditionFailed
from artfs.store.backends.base import ObjectStore

log = logging.getLogger(__name__)

FORMAT = 1
BLOCK = 256  # version records per index object
TRIES = 8  # compare-and-swap attempts on a block before leaving it to the next writer

Copies = dict[int, tuple[str, dict]]  # version number -> (record's ETag, record document)


def block_of(number: int) -> int:
    return number // BLOCK


def block_key(prefix: str, block: int) -> str:
    """`prefix`: the artifact's, `artifacts/<project>/<name>/`."""
    return f"{prefix}version-index/b{block}.json"


def read_block(store: ObjectStore, key: str) -> tuple[Copies, str | None]:
    """The block's copies and its ETag (None: absent). A damaged block reads as empty."""
    try:
        data, etag = store.get_with_etag(key)
    except NotFound:
        return {}, None
    try:
        doc = json.loads(data)
        if doc.get("format") != FORMAT:
            raise ValueError("unknown format")
        copies = {int(n): (str(c["etag"]), dict(c["record"])) for n, c in doc["records"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        log.warning("%s", CorruptRecord(f"corrupt version index {key}: {e} (records are read one by one)"))
        return {}, etag
    return copies, etag


def update_block(store: ObjectStore, key: str, merge: Callable[[Copies], bool]) -> bool:
    """Compare-and-swap on a block: `merge` changes the copies in place and says whether it
    changed anything. False if the store refuses the write (read-only credentials, an outage);
    losing TRIES races in a row is not a refusal (the next writer puts the copies in)."""
    for _ in range(TRIES):
        try:
            copies, etag = read_block(store, key)
        except Exception as e:  # noqa: BLE001 - an outage: readers fall back to the records
            log.debug("could not read %s: %s", key, e)
            return False
        if not merge(copies):
            return True
        doc = {"format": FORMAT, "records": {str(n): {"etag": e, "record": r} for n, (e, r) in sorted(copies.items())}}
        data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        try:
            if etag is None:
                store.put(key, data, if_none_match=True)
            else:
                store.put(key, data, if_match=etag)
            return True
        except PreconditionFailed:
            continue
        except Exception as e:  # noqa: BLE001 - read-only credentials, an outage: readers fall back
            log.debug("could not update %s: %s", key, e)
            return False
    log.debug("%s: lost %d races in a row; left to the next writer", key, TRIES)
    return True
