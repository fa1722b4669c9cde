"""The registry: artifacts, versions and aliases kept as records in an object store.

Layout (docs/store-format.md has the whole story):
  artifacts/<project>/<name>/artifact.json        type; created once, if absent
  artifacts/<project>/<name>/versions/v<N>.json   version record; created if absent
  artifacts/<project>/<name>/aliases.json         alias -> N; compare-and-swap
  artifacts/<project>/<name>/version-index/b<K>.json  copies of records 256K..256K+255 with
                                                  their ETags: a cache, checked against the listing
  manifests/<blake3>                              immutable manifest
Everything a record points to is written before the record, so a reader
never sees a version whose bytes are missing.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Iterable

from cachetools import LRUCache

from artfs.digest import digest_bytes
from artfs.errors import Conflict, CorruptRecord, InvalidInput, NotFound, PreconditionFailed
from artfs.names import (
    LATEST,
    ArtifactName,
    ArtifactSpec,
    check_alias,
    check_name,
    is_valid_name,
    parse_version,
    version_name,
)
from artfs.store import shards, version_index
from artfs.store.backends.base import ObjectStore
from artfs.store.keys import STORE_MARKER
from artfs.store.manifest import Manifest
from artfs.store.shards import AnyManifest

RECORD_FORMAT = 1
READERS = 16  # records read in parallel when the index does not have them

log = logging.getLogger(__name__)


def manifest_key(hexdigest: str) -> str:
    return f"manifests/{hexdigest}"


def read_manifest(store: ObjectStore, hexdigest: str) -> bytes:
    """An encoded manifest (or shard), checked against its name."""
    key = manifest_key(hexdigest)
    data = store.get(key)
    if digest_bytes(data).hex() != hexdigest:
        raise CorruptRecord(f"corrupt manifest {key}: digest does not match")
    return data


def store_manifest(store: ObjectStore, digest: bytes, encoded: bytes) -> None:
    """Stores an encoded manifest (or shard) under its digest, unless it is there already."""
    key = manifest_key(digest.hex())
    if not store.exists(key):
        store.put(key, encoded)


@dataclass
class VersionRecord:
    artifact: ArtifactName
    number: int
    manifest: str  # hex blake3 of the encoded manifest: the version's digest
    type: str
    created: float
    size: int = 0
    files: int = 0
    description: str = ""
    metadata: dict = field(default_factory=dict)
    creator: dict = field(default_factory=dict)
    base: int | None = None
    deleted: bool = False
    etag: str = ""

    @property
    def name(self) -> str:
        return version_name(self.number)

    def __str__(self) -> str:
        return f"{self.artifact}:{self.name}"

    def to_json(self) -> bytes:
        doc = {k: v for k, v in asdict(self).items() if k not in ("artifact", "number", "etag")}
        doc["format"] = RECORD_FORMAT
        return json.dumps(doc, sort_keys=True, indent=1).encode()

    @classmethod
    def from_json(cls, artifact: ArtifactName, number: int, data: bytes, etag: str, key: str) -> "VersionRecord":
        try:
            doc = json.loads(data)
        except ValueError as e:
            raise CorruptRecord(f"corrupt version record {key}: {e}") from None
        return cls.from_doc(artifact, number, doc, etag, key)

    @classmethod
    def from_doc(cls, artifact: ArtifactName, number: int, doc, etag: str, key: str) -> "VersionRecord":
        try:
            if not isinstance(doc, dict) or doc.pop("format", None) != RECORD_FORMAT:
                raise ValueError("unknown format")
            rec = cls(artifact=artifact, number=number, etag=etag, **doc)
            if not rec.deleted and (len(rec.manifest) != 64 or not isinstance(rec.metadata, dict)):
                raise ValueError("bad fields")
            int(rec.manifest or "0", 16)
        except (ValueError, TypeError) as e:
            raise CorruptRecord(f"corrupt version record {key}: {e}") from None
        return rec


def creator_info() -> dict:
    run = os.environ.get("ARTFS_RUN_ID") or os.environ.get("SLURM_JOB_ID") or os.environ.get("PBS_JOBID")
    host = socket.gethostname()
    return {
        "user": _user(),
        "host": host,
        "run": run or f"{host}-{os.getpid()}",
        "command": " ".join(sys.argv)[:1000],
    }


def check_creator(creator: object) -> dict:
    """A creator sent by another process (`artfs commit` through a mount): creator_info's
    keys, as short text."""
    if not isinstance(creator, dict) or not isinstance(creator.get("run"), str) or not creator["run"]:
        raise InvalidInput("creator: expected an object with a run")
    return {k: str(creator.get(k, ""))[:1000] for k in ("user", "host", "run", "command")}


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return str(os.getuid())


METADATA_DEPTH = 32  # nesting bound: deeper metadata is refused, not stored


def _refuse_constant(name: str):
    raise InvalidInput(f"invalid metadata JSON: {name} is not JSON (use null or a string)")


def check_metadata(metadata) -> dict:
    """Metadata is a strict-JSON object: no NaN or Infinity, at most METADATA_DEPTH levels deep."""
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata, parse_constant=_refuse_constant)
        except json.JSONDecodeError as e:
            raise InvalidInput(f"invalid metadata JSON: {e.msg} at position {e.pos}") from None
        except RecursionError:
            raise InvalidInput(f"metadata nests deeper than {METADATA_DEPTH} levels") from None
    if not isinstance(metadata, dict):
        raise InvalidInput("metadata must be a JSON object, e.g. '{\"classes\": 3}'")
    try:
        json.dumps(metadata, allow_nan=False)
    except ValueError as e:
        raise InvalidInput(f"metadata is not strict JSON: {e} (NaN and Infinity are not JSON)") from None
    except (TypeError, RecursionError) as e:
        raise InvalidInput(f"metadata is not JSON-serializable: {e}") from None
    if _depth(metadata) > METADATA_DEPTH:
        raise InvalidInput(f"metadata nests deeper than {METADATA_DEPTH} levels")
    return metadata


def _depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


SHARD_MEMORY = 256 << 20  # default bound on decoded shards held (the mount's --memory)


def _shard_size(m: Manifest) -> int:
    return 1024 + 200 * len(m)


class Registry:
    def __init__(self, store: ObjectStore, shard_memory: int = SHARD_MEMORY):
        self.store = store
        self._manifests: LRUCache = LRUCache(maxsize=8)
        # Shards of sharded manifests, bounded by their size in memory (~200 B an entry).
        self._shards: LRUCache = LRUCache(maxsize=shard_memory, getsizeof=_shard_size)
        self._shard_loads: dict[bytes, threading.Lock] = {}  # one fetch per shard, however many wait
        self.fetch_shard: Callable[[str], bytes] = self.fetch_manifest
        self._records: dict[str, tuple[str, VersionRecord]] = {}  # key -> (etag, record)
        self._index_refused: set[ArtifactName] = set()  # version index not writable here
        self._types: dict[ArtifactName, str] = {}  # artifact -> type, once seen (never changes)
        self._lock = threading.Lock()

    # -- keys -----------------------------------------------------------------
    @staticmethod
    def _prefix(a: ArtifactName) -> str:
        return f"artifacts/{a.project}/{a.name}/"

    def _version_key(self, a: ArtifactName, n: int) -> str:
        return f"{self._prefix(a)}versions/{version_name(n)}.json"

    # -- projects and artifacts -------------------------------------------------
    def projects(self) -> list[str]:
        return [p for p in self.store.list_prefixes("artifacts/") if is_valid_name(p)]

    def artifacts(self, project: str) -> list[str]:
        check_name(project, "project")
        return [a for a in self.store.list_prefixes(f"artifacts/{project}/") if is_valid_name(a)]

    def artifact_type(self, a: ArtifactName) -> str | None:
        with self._lock:
            known = self._types.get(a)
        if known is not None:
            return known  # artifact.json is created once and never changed: asked once per process
        key = self._prefix(a) + "artifact.json"
        try:
            doc = json.loads(self.store.get(key))
            type_ = str(doc["type"])
            with self._lock:
                self._types[a] = type_
            return type_
        except NotFound:
            return None
        except (ValueError, KeyError, TypeError) as e:
            raise CorruptRecord(f"corrupt artifact record {key}: {e}") from None

    def is_store(self) -> bool:
        """Whether an artfs store lives here: its marker, or (older stores) any artifact."""
        return self.store.exists(STORE_MARKER) or bool(self.store.list_prefixes("artifacts/"))

    def mark_store(self) -> bool:
        """Marks this location as an artfs store; True if it was not one before."""
        if self.store.exists(STORE_MARKER):
            return False
        fresh = not self.store.list_prefixes("artifacts/")
        doc = json.dumps({"format": RECORD_FORMAT, "created": time.time()}).encode()
        try:
            self.store.put(STORE_MARKER, doc, if_none_match=True)
        except PreconditionFailed:
            return False
        return fresh

    def ensure_artifact(self, a: ArtifactName, type_: str | None) -> str:
        """Creates the artifact with `type_`, or checks an existing one has it."""
        existing = self.artifact_type(a)
        if existing is None:
            if not type_:
                raise InvalidInput(f"{a} does not exist yet: give its type (--type dataset, model, …)")
            check_name(type_, "type")
            doc = json.dumps({"format": RECORD_FORMAT, "type": type_, "created": time.time()}).encode()
            self.mark_store()
            try:
                self.store.put(self._prefix(a) + "artifact.json", doc, if_none_match=True)
                return type_
            except PreconditionFailed:
                existing = self.artifact_type(a)
        if type_ and existing != type_:
            raise Conflict(f"{a} already exists with type {existing!r}, not {type_!r}")
        assert existing is not None  # artifact.json exists once a racing creator has written it
        return existing

    # -- versions ---------------------------------------------------------------
    def _all_records(self, a: ArtifactName) -> list[VersionRecord]:
        """Every version record including deleted ones, oldest first: one listing, then what
        is not cached in memory from the version index, then what the index lacks, in
        parallel (docs/store-format.md, "Version index")."""
        listed: dict[int, str] = {}  # number -> ETag, from the listing: the truth
        for info in self.store.list(self._prefix(a) + "versions/"):
            n = parse_version(info.key.rsplit("/", 1)[-1].removesuffix(".json"))
            if n is not None and info.key.endswith(".json"):
                listed[n] = info.etag
        found: dict[int, VersionRecord] = {}
        with self._lock:
            for n, etag in listed.items():
                cached = self._records.get(self._version_key(a, n))
                if cached and cached[0] == etag:
                    found[n] = cached[1]
        missing = [n for n in listed if n not in found]
        if missing:
            blocks = sorted({version_index.block_of(n) for n in missing})
            with ThreadPoolExecutor(min(READERS, len(blocks)), thread_name_prefix="artfs-index") as pool:
                copies = dict(zip(blocks, pool.map(lambda b: self._index_copies(a, b), blocks)))
            for n in missing:
                copy = copies[version_index.block_of(n)].get(n)
                if copy is not None and copy[0] == listed[n]:
                    try:
                        rec = VersionRecord.from_doc(a, n, dict(copy[1]), copy[0], self._version_key(a, n))
                    except CorruptRecord:
                        continue  # read from the record itself, below
                    found[n] = rec
                    with self._lock:
                        self._records[self._version_key(a, n)] = (copy[0], rec)
            unread = [n for n in missing if n not in found]
            if unread:
                with ThreadPoolExecutor(min(READERS, len(unread)), thread_name_prefix="artfs-record") as pool:
                    for n, read in zip(unread, pool.map(lambda n: self._read_if_there(a, n), unread)):
                        if read is not None:
                            found[n] = read
                self._write_back(a, [found[n] for n in unread if n in found])
        return [found[n] for n in sorted(found)]

    def _index_copies(self, a: ArtifactName, block: int) -> version_index.Copies:
        try:
            return version_index.read_block(self.store, version_index.block_key(self._prefix(a), block))[0]
        except Exception as e:  # noqa: BLE001 - a cache: the records themselves are read instead
            log.debug("version index of %s unreadable: %s", a, e)
            return {}

    def _read_if_there(self, a: ArtifactName, n: int) -> VersionRecord | None:
        try:
            return self._read_record(a, n)
        except NotFound:
            return None  # listed, then gone: never happens to records (tombstones), but harmless

    def _write_back(self, a: ArtifactName, records: list[VersionRecord], own: bool = False) -> None:
        """Puts copies of `records` (as read or written, with their ETags) into the version index.
        `own`: this process just wrote them, so they replace what the index holds; otherwise they
        only fill gaps or replace copies whose ETag differs (a copy is never trusted without the
        listing's ETag anyway). Best effort: once per artifact if the store refuses writes."""
        if not records or a in self._index_refused:
            return
        by_block: dict[int, list[VersionRecord]] = {}
        for r in records:
            by_block.setdefault(version_index.block_of(r.number), []).append(r)
        for block, recs in sorted(by_block.items()):

            def merge(copies: version_index.Copies, recs=recs) -> bool:
                changed = False
                for r in recs:
                    doc = json.loads(r.to_json())
                    if own or copies.get(r.number, ("",))[0] != r.etag:
                        changed = changed or copies.get(r.number) != (r.etag, doc)
                        copies[r.number] = (r.etag, doc)
                return changed

            if not version_index.update_block(self.store, version_index.block_key(self._prefix(a), block), merge):
                self._index_refused.add(a)
                return

    def _read_record(self, a: ArtifactName, n: int) -> VersionRecord:
        key = self._version_key(a, n)
        data, etag = self.store.get_with_etag(key)
        rec = VersionRecord.from_json(a, n, data, etag, key)
        with self._lock:
            self._records[key] = (etag, rec)
        return rec

    def versions(self, a: ArtifactName) -> list[VersionRecord]:
        return [r for r in self._all_records(a) if not r.deleted]

    def version(self, a: ArtifactName, n: int) -> VersionRecord:
        try:
            rec = self._read_record(a, n)
        except NotFound:
            raise NotFound(f"{a}:{version_name(n)} does not exist") from None
        if rec.deleted:
            raise NotFound(f"{a}:{version_name(n)} was deleted")
        return rec

    def latest(self, a: ArtifactName) -> VersionRecord | None:
        vs = self.versions(a)
        return vs[-1] if vs else None

    def resolve(self, spec: ArtifactSpec) -> VersionRecord:
        a, sel = spec.artifact, spec.selector or LATEST
        n = parse_version(sel)
        if n is not None:
            return self.version(a, n)
        if sel == LATEST:
            rec = self.latest(a)
            if rec is None:
                raise NotFound(f"{a} has no versions" if self.artifact_type(a) else f"artifact {a} does not exist")
            return rec
        aliases = self.aliases(a)
        if sel not in aliases:
            raise NotFound(f"{a} has no {'version' if sel[1:].isdigit() and sel[0] == 'v' else 'alias'} {sel!r}")
        return self.version(a, aliases[sel])

    def commit(
        self,
        a: ArtifactName,
        type_: str | None,
        manifest: AnyManifest,
        encoded: bytes,
        *,
        base: int | None = None,
        description: str = "",
        metadata: dict | None = None,
        aliases: Iterable[str] = (),
        creator: dict | None = None,
    ) -> tuple[VersionRecord, bool]:
        """Makes the next version of `a` from an already-uploaded manifest's content, and says
        whether it did: when a concurrent publisher made the newest version with the same
        content first, that version is the answer (W&B's rule: identical content makes no
        new version), so identical publishes racing each other make one version.
        `creator`: who made it (check_creator), if not this process (creator_info)."""
        aliases = [check_alias(x) for x in aliases if x != LATEST]
        type_ = self.ensure_artifact(a, type_)
        hexdigest = digest_bytes(encoded).hex()
        key = manifest_key(hexdigest)
        if not self.store.exists(key):
            self.store.put(key, encoded)
        with self._lock:
            self._manifests[hexdigest] = manifest
        records = self._all_records(a)
        newest = next((r for r in reversed(records) if not r.deleted), None)
        if newest is not None and self._same_content(newest, hexdigest, manifest):
            for alias in aliases:  # a concurrent identical publish made it since our caller looked
                self.set_alias(a, alias, newest.number)
            return newest, False
        n = records[-1].number + 1 if records else 0
        rec = VersionRecord(
            artifact=a,
            number=n,
            manifest=hexdigest,
            type=type_,
            created=time.time(),
            size=manifest.total_size,
            files=len(manifest),
            description=description or "",
            metadata=check_metadata(metadata or {}),
            creator=creator or creator_info(),
            base=base,
        )
        while True:
            rec.number = n
            try:
                rec.etag = self.store.put(self._version_key(a, n), rec.to_json(), if_none_match=True)
                break
            except PreconditionFailed:
                winner = self._read_record(a, n)  # another committer took vN
                if not winner.deleted and self._same_content(winner, hexdigest, manifest):
                    for alias in aliases:
                        self.set_alias(a, alias, n)
                    return winner, False
                n += 1  # the next number is ours to try
        with self._lock:
            self._records[self._version_key(a, n)] = (rec.etag, rec)
        self._write_back(a, [rec], own=True)
        for alias in aliases:
            self.set_alias(a, alias, n)
        return rec, True

    def _same_content(self, rec: VersionRecord, hexdigest: str, manifest: AnyManifest) -> bool:
        if rec.manifest == hexdigest:
            return True
        # Equal content has equal file counts and sizes: when the record says otherwise, its
        # manifest is not fetched (H hosts racing for vN would each fetch every winner's).
        if rec.files and (rec.files != len(manifest) or rec.size != manifest.total_size):
            return False
        try:
            return self.manifest(rec).content_digest() == manifest.content_digest()
        except NotFound:  # deleted since it was listed, and collected: not a version to match
            return False

    def update_version(self, rec: VersionRecord, change: Callable[[VersionRecord], VersionRecord]) -> VersionRecord:
        """Compare-and-swap on the version record; `change` is re-applied after a lost race."""
        key = self._version_key(rec.artifact, rec.number)
        while True:
            current = self._read_record(rec.artifact, rec.number)
            if current.deleted:
                raise NotFound(f"{current} was deleted")
            new = change(replace(current))
            try:
                new.etag = self.store.put(key, new.to_json(), if_match=current.etag)
            except PreconditionFailed:
                continue
            with self._lock:
                self._records[key] = (new.etag, new)
            self._write_back(rec.artifact, [new], own=True)
            return new

    # -- manifests ----------------------------------------------------------------
    def manifest(self, rec: VersionRecord) -> AnyManifest:
        return self.manifest_by_digest(rec.manifest)

    def manifest_by_digest(self, hexdigest: str) -> AnyManifest:
        with self._lock:  # the cache is shared by the daemon's worker threads
            m = self._manifests.get(hexdigest)
        if m is None:
            m = shards.decode(self.fetch_manifest(hexdigest), manifest_key(hexdigest), self.shard, self.loaded_shard)
            with self._lock:
                self._manifests[hexdigest] = m
        return m

    def fetch_manifest(self, hexdigest: str) -> bytes:
        return read_manifest(self.store, hexdigest)

    def shard(self, digest: bytes) -> Manifest:
        """A shard of a sharded manifest, from memory or the store (one fetch at a time each)."""
        m = self.loaded_shard(digest)
        if m is not None:
            return m
        with self._lock:
            gate = self._shard_loads.setdefault(digest, threading.Lock())
        try:
            with gate:
                m = self.loaded_shard(digest)
                if m is None:  # through `fetch_shard`: a mount bounds it by --timeout
                    m = Manifest.decode(self.fetch_shard(digest.hex()), f"manifest shard {digest.hex()}")
                    with self._lock:  # (one larger than the whole bound is used, not kept)
                        self._shards.update({digest: m} if _shard_size(m) <= self._shards.maxsize else {})
        finally:  # a failed fetch leaves no gate behind either
            with self._lock:
                self._shard_loads.pop(digest, None)
        return m

    def loaded_shard(self, digest: bytes) -> Manifest | None:
        with self._lock:  # LRUCache.get moves the entry
            return self._shards.get(digest)

    def seal(self, manifest: AnyManifest) -> tuple[AnyManifest, bytes]:
        """A manifest as stored: one of more than shards.SHARDED_ABOVE files is split into shards,
        stored here now; the rest (and the root) is encoded for the caller to store."""
        if len(manifest) <= shards.SHARDED_ABOVE:
            if isinstance(manifest, shards.ShardedManifest):  # shrunk below: one object again
                manifest = Manifest.from_entries(list(manifest), manifest.folder_entries())
            return manifest, manifest.encode()
        if not isinstance(manifest, shards.ShardedManifest):
            manifest = shards.split(manifest, self.put_shard, self.shard)
        return manifest.with_loader(self.shard, self.loaded_shard), manifest.encode()  # shards read (verified) here

    def put_shard(self, digest: bytes, encoded: bytes) -> None:
        store_manifest(self.store, digest, encoded)

    # -- aliases ------------------------------------------------------------------
    def aliases(self, a: ArtifactName) -> dict[str, int]:
        """User aliases; `latest` is derived from the versions and not stored."""
        return self._read_aliases(a)[0]

    def aliases_by_version(self, a: ArtifactName, versions: list[VersionRecord] | None = None) -> dict[int, list[str]]:
        versions = self.versions(a) if versions is None else versions
        out: dict[int, list[str]] = {r.number: [] for r in versions}
        for alias, n in sorted(self.aliases(a).items()):
            if n in out:
                out[n].append(alias)
        if versions:
            out[versions[-1].number].insert(0, LATEST)
        return out

    def _read_aliases(self, a: ArtifactName) -> tuple[dict[str, int], str | None]:
        key = self._prefix(a) + "aliases.json"
        try:
            data, etag = self.store.get_with_etag(key)
        except NotFound:
            return {}, None
        try:
            doc = json.loads(data)
            aliases = {str(k): int(v) for k, v in doc["aliases"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise CorruptRecord(f"corrupt alias record {key}: {e}") from None
        return aliases, etag

    def _change_aliases(self, a: ArtifactName, change: Callable[[dict[str, int]], None]) -> None:
        key = self._prefix(a) + "aliases.json"
        while True:
            aliases, etag = self._read_aliases(a)
            change(aliases)
            doc = json.dumps({"format": RECORD_FORMAT, "aliases": aliases}, sort_keys=True).encode()
            try:
                if etag is None:
                    self.store.put(key, doc, if_none_match=True)
                else:
                    self.store.put(key, doc, if_match=etag)
                return
            except PreconditionFailed:
                continue

    def set_alias(self, a: ArtifactName, alias: str, n: int) -> None:
        if alias == LATEST:
            raise InvalidInput("'latest' always names the newest version; it cannot be moved by hand")
        check_alias(alias)
        self.version(a, n)  # must exist
        self._change_aliases(a, lambda d: d.__setitem__(alias, n))

    def remove_alias(self, a: ArtifactName, alias: str, n: int | None = None) -> None:
        if alias == LATEST:
            raise InvalidInput("'latest' always names the newest version; it cannot be removed")
        check_alias(alias)

        def drop(d: dict[str, int]) -> None:
            if alias not in d or (n is not None and d[alias] != n):
                where = f" on {a}:{version_name(n)}" if n is not None else f" in {a}"
                raise NotFound(f"no alias {alias!r}{where}")
            del d[alias]

        self._change_aliases(a, drop)
