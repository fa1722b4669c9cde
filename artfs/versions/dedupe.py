"""Where the store already holds a small file: the dedupe index, sharded by digest prefix.

    dedupe/format.json   {"format": 1, "prefix_hex": 2, "created": …}   create-if-absent, never changed
    dedupe/<pp>          every small file stored whose digest starts with the hex <pp>:
                         msgpack {"format": 1, "packs": [pack id…], "digests": 32 bytes each,
                         "where": uint32 pack number each, "offsets": uint64 each}; CAS

A commit looks up only the digests it adds, reading one shard (about 1/256 of the
store's small files) per digest prefix it meets, instead of every `index/<pack>` of
the store. After its packs are stored it adds their files to those shards by
compare-and-swap. `index/<pack>` objects are still written and stay what gc keeps.

A shard is a hint, not the truth: a pack it names may have been collected since, so
before reusing bytes the commit checks (`HEAD index/<pack>`, once per pack) that the
pack's index still exists. Commits run under commit_guard, and gc deletes a pack's
index before the pack and never while a commit holds its marker: an index seen there
means the pack stays until the commit is done.

Stores made before the shards (no `dedupe/format.json`) load every pack index as
before on their first commit and fold them into the shards; then the marker is
written. A damaged shard only costs dedupe, never correctness.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from array import array
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgpack

from artfs.digest import DIGEST_SIZE
from artfs.errors import CorruptRecord, NotFound, PreconditionFailed
from artfs.store.backends.base import ObjectStore
from artfs.store.keys import index_key

log = logging.getLogger(__name__)

FORMAT = 1
# 256 shards: ~170 KB each for 1M stored small files, 1.7 MB for 10M; a big commit touches at
# most 256. (format.json names the length, so a store can be made with longer prefixes.)
PREFIX_HEX = 2
FORMAT_KEY = "dedupe/format.json"
PREFETCH_AFTER = 16  # a commit that has read this many shards one by one reads the rest in parallel
WORKERS = 16
TRIES = 10  # compare-and-swap attempts on one shard

Where = tuple[bytes, int]  # (pack id, offset in the pack)


def shard_of(digest: bytes, prefix_hex: int = PREFIX_HEX) -> str:
    return digest.hex()[:prefix_hex]


def shard_key(prefix: str) -> str:
    return f"dedupe/{prefix}"


def all_prefixes(prefix_hex: int = PREFIX_HEX) -> list[str]:
    return [f"{i:0{prefix_hex}x}" for i in range(16**prefix_hex)]


def decode_shard(data: bytes, key: str) -> dict[bytes, Where]:
    try:
        doc = msgpack.unpackb(data)
        if doc["format"] != FORMAT:
            raise ValueError("unknown format")
        packs = [bytes(p) for p in doc["packs"]]
        digests, where, offsets = bytes(doc["digests"]), array("I"), array("Q")
        where.frombytes(doc["where"])
        offsets.frombytes(doc["offsets"])
        if not (len(digests) == DIGEST_SIZE * len(where) == DIGEST_SIZE * len(offsets)):
            raise ValueError("columns of different lengths")
        return {digests[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE]: (packs[w], offsets[i]) for i, w in enumerate(where)}
    except (ValueError, KeyError, TypeError, IndexError, msgpack.UnpackException) as e:
        log.warning("damaged dedupe shard %s (%s): its files may be stored again", key, e)
        return {}


def encode_shard(entries: dict[bytes, Where]) -> bytes:
    packs: dict[bytes, int] = {}
    digests, where, offsets = bytearray(), array("I"), array("Q")
    for digest in sorted(entries):
        pack, offset = entries[digest]
        digests += digest
        where.append(packs.setdefault(pack, len(packs)))
        offsets.append(offset)
    return msgpack.packb(
        {
            "format": FORMAT,
            "packs": list(packs),
            "digests": bytes(digests),
            "where": where.tobytes(),
            "offsets": offsets.tobytes(),
        }
    )


class PackIndex:
    """Finds stored small files by digest for one commit (`find`), and records the files the
    commit stored (`record`). Call both under commit_guard."""

    def __init__(self, store: ObjectStore, cache_dir: str | None):
        self.store = store
        self.cache_dir = os.path.join(cache_dir, "index") if cache_dir else None
        self._lock = threading.Lock()
        self._sharded: bool | None = None  # None: not asked yet
        self.prefix_hex = PREFIX_HEX
        self._all: dict[bytes, Where] | None = None  # an old store's every pack index, loaded once
        self._shards: dict[str, tuple[dict[bytes, Where], str | None]] = {}  # prefix -> (entries, etag)
        self._packs: dict[bytes, bool] = {}  # pack id -> its index exists (checked this commit)
        self.shard_reads = 0

    # -- finding -----------------------------------------------------------------
    def find(self, digest: bytes) -> Where | None:
        """Where the store holds a small file with this digest, if it does."""
        if self._sharded is None:
            self._check_sharded()
        if self._all is not None:
            return self._all.get(digest)  # an old store: every index was loaded (and is live)
        prefix = shard_of(digest, self.prefix_hex)
        with self._lock:
            loaded = prefix in self._shards
        if not loaded:
            if self.shard_reads >= PREFETCH_AFTER:
                self._load_shards([p for p in all_prefixes(self.prefix_hex) if p not in self._shards])
            else:
                self._load_shards([prefix])
        hit = self._shards[prefix][0].get(digest)
        if hit is None or not self._pack_alive(hit[0]):
            return None
        return hit

    def _check_sharded(self) -> None:
        """Whether the store keeps dedupe shards; in an old store every pack index is loaded
        (as before) and folded into shards, for the next commit."""
        try:
            doc = json.loads(self.store.get(FORMAT_KEY))
            self.prefix_hex = int(doc["prefix_hex"])
            if not 1 <= self.prefix_hex <= 8:
                raise ValueError(f"prefix_hex {self.prefix_hex}")
        except NotFound:
            entries = self._load_every_index()
            if entries:
                self._all = entries
                self.record(entries.items())  # the shards get every stored small file…
            self._mark_sharded()  # …before the marker says they have them
        except (ValueError, KeyError, TypeError) as e:  # dedupe as before the shards: slower, never wrong
            log.warning("%s", CorruptRecord(f"corrupt dedupe index marker {FORMAT_KEY}: {e}; reading every pack index"))
            self._all = self._load_every_index()
        self._sharded = True

    def _mark_sharded(self) -> None:
        doc = json.dumps({"format": FORMAT, "prefix_hex": self.prefix_hex, "created": time.time()}).encode()
        try:
            self.store.put(FORMAT_KEY, doc, if_none_match=True)
        except PreconditionFailed:
            pass  # another commit folded them first

    def _load_shards(self, prefixes: list[str]) -> None:
        def one(prefix: str) -> tuple[str, dict[bytes, Where], str | None]:
            key = shard_key(prefix)
            try:
                data, etag = self.store.get_with_etag(key)
            except NotFound:
                return prefix, {}, None
            return prefix, decode_shard(data, key), etag

        if len(prefixes) == 1:
            results = [one(prefixes[0])]
        else:
            with ThreadPoolExecutor(WORKERS, thread_name_prefix="artfs-dedupe") as pool:
                results = list(pool.map(one, prefixes))
        with self._lock:
            for prefix, entries, etag in results:
                self._shards[prefix] = (entries, etag)
            self.shard_reads += len(results)

    def _pack_alive(self, pack: bytes) -> bool:
        with self._lock:
            alive = self._packs.get(pack)
        if alive is None:
            alive = self.store.exists(index_key(pack))
            with self._lock:
                self._packs[pack] = alive
        return alive

    # -- recording ---------------------------------------------------------------
    def record(self, stored: Iterable[tuple[bytes, Where]]) -> None:
        """Adds (digest, (pack, offset)) of files now stored in packs to their shards. A shard
        that cannot be written after TRIES races only costs dedupe later: logged, not raised."""
        by_shard: dict[str, dict[bytes, Where]] = {}
        for digest, where in stored:
            by_shard.setdefault(shard_of(digest, self.prefix_hex), {})[digest] = where
        if not by_shard:
            return
        with ThreadPoolExecutor(min(WORKERS, len(by_shard)), thread_name_prefix="artfs-dedupe") as pool:
            list(pool.map(lambda item: self._add_to_shard(*item), sorted(by_shard.items())))

    def _add_to_shard(self, prefix: str, new: dict[bytes, Where]) -> None:
        key = shard_key(prefix)
        with self._lock:
            known = self._shards.get(prefix)
            dead = {p for p, alive in self._packs.items() if not alive}
        for _ in range(TRIES):
            if known is None:
                try:
                    data, read_etag = self.store.get_with_etag(key)
                    known = (decode_shard(data, key), read_etag)
                except NotFound:
                    known = ({}, None)
            entries, etag = known[0], known[1]
            merged = {d: w for d, w in entries.items() if w[0] not in dead}  # drop what gc took
            for digest, where in new.items():
                merged.setdefault(digest, where)
            if merged == entries:
                return
            try:
                if etag is None:
                    self.store.put(key, encode_shard(merged), if_none_match=True)
                else:
                    self.store.put(key, encode_shard(merged), if_match=etag)
            except PreconditionFailed:
                known = None  # another commit changed it: read it again
                continue
            with self._lock:
                # Not kept: recording ends a publish, and a big one records every shard in turn.
                self._shards.pop(prefix, None)
            return
        log.warning("could not add to %s after %d tries: those files may be stored again later", key, TRIES)

    # -- stores from before the shards ---------------------------------------------
    def load_into(self, known: Any) -> None:
        """Every pack index of the store into `known.small` (as before the shards)."""
        for digest, where in self._load_every_index().items():
            known.small.setdefault(digest, where)

    def _load_every_index(self) -> dict[bytes, Where]:
        found = []
        for info in self.store.list("index/"):
            name = info.key.rsplit("/", 1)[-1]
            try:
                found.append((info.key, name, bytes.fromhex(name)))
            except ValueError:
                continue
        # Those not cached yet are fetched in parallel (a fresh cache: one GET per pack).
        with ThreadPoolExecutor(max_workers=8, thread_name_prefix="artfs-index") as pool:
            datas = list(pool.map(lambda f: self._read(f[0], f[1]), found))
        out: dict[bytes, Where] = {}
        for (_, _, pack_id), data in zip(found, datas):
            try:
                for digest, offset, _size in msgpack.unpackb(data):
                    out.setdefault(bytes(digest), (pack_id, int(offset)))
            except (ValueError, TypeError, msgpack.UnpackException):
                continue  # a damaged index only costs dedupe, never correctness
        return out

    def _read(self, key: str, name: str) -> bytes:
        local = os.path.join(self.cache_dir, name) if self.cache_dir else None
        if local and os.path.exists(local):
            with open(local, "rb") as f:
                return f.read()
        try:
            data = self.store.get(key)
        except NotFound:
            return msgpack.packb([])
        if local:
            tmp = f"{local}.{os.getpid()}-{threading.get_ident()}.tmp"  # concurrent commits in one daemon
            try:
                os.makedirs(os.path.dirname(local), exist_ok=True)
                with open(tmp, "wb") as f:
                    f.write(data)
                os.replace(tmp, local)
            except OSError:  # a full cache disk: the index is only not cached (a commit must work)
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        return data
