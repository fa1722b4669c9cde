"""`Store`: one registry plus the machinery to publish into it and read from it.

The CLI, the Python API and the filesystem all go through this class, so a
version made one way is the same as one made another.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Iterable

from artfs import config
from artfs.versions import lineage
from artfs.references import access as references
from artfs.content.carry import CarriedRange, expand
from artfs.digest import digest_bytes
from artfs.versions.download import DownloadStats, Downloader
from artfs.errors import InvalidInput, NotFound
from artfs.store.manifest import Entry, Manifest
from artfs.store.shards import AnyManifest
from artfs.names import LATEST, ArtifactName, ArtifactSpec, check_alias, normalize_path, parse_spec
from artfs.drafts.draft import Draft
from artfs.drafts.info import DraftInfo
from artfs.drafts.store import DraftStore
from artfs.versions.lifecycle import add_hold, check_carried, commit_guard, live_base, release_hold
from artfs.versions import streaming
from artfs.versions.reshard import ShardPatch
from artfs.versions.sources import TreeWalk
from artfs.versions.publish import FileSource, KnownContent, PackIndex, Publisher, Stats
from artfs.store.registry import SHARD_MEMORY, Registry, VersionRecord
from artfs.store.backends.base import ObjectStore
from artfs.store.location import open_store


@dataclass
class Published:
    version: VersionRecord
    created: bool  # False when the content equalled an existing version
    stats: Stats


class Store:
    def __init__(
        self,
        url: str | None = None,
        cache: str | None = None,
        objects: ObjectStore | None = None,
        create: bool = True,
        shard_memory: int = SHARD_MEMORY,
    ):
        self.url = config.store_url(url)
        self.cache_dir = config.cache_dir(cache)
        self.objects = objects or open_store(self.url, create=create)
        self.registry = Registry(self.objects, shard_memory)

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    # -- reading ----------------------------------------------------------------
    def resolve(self, spec: str | ArtifactSpec) -> VersionRecord:
        return self.registry.resolve(parse_spec(spec) if isinstance(spec, str) else spec)

    def manifest(self, rec: VersionRecord) -> AnyManifest:
        return self.registry.manifest(rec)

    def download(
        self, rec: VersionRecord, root: str, path: str | None = None, progress: Callable[[int], None] | None = None
    ) -> DownloadStats:
        m = self.manifest(rec)
        lineage.record_use(self.registry, rec, "get")
        under = normalize_path(path) if path else None
        indices = m.under(under) if under else range(len(m))
        if under and not indices and m.folder(under) is None:
            raise NotFound(f"{rec} has no file or folder {path!r}")
        try:
            os.makedirs(root, exist_ok=True)
        except OSError as e:
            raise InvalidInput(f"cannot create folder {root}: {e.strerror}") from None
        downloader = Downloader(self.objects, fetch_reference=references.fetch_to_file, progress=progress)
        return downloader.download(m, indices, os.path.abspath(root), under)

    # -- publishing ---------------------------------------------------------------
    def known_content(self, base: AnyManifest | None) -> KnownContent:
        known = KnownContent()
        known.damaged = {o.key.removeprefix("damaged/") for o in self.objects.list("damaged/")}
        if isinstance(base, Manifest):  # a sharded one is not read whole: the dedupe index answers
            known.add_manifest(base)
        index = PackIndex(self.objects, self.cache_dir)
        known.lookup, known.on_stored = index.find, index.record
        return known

    def store_content(
        self,
        files: Iterable[FileSource],
        carried: Iterable[Entry | CarriedRange | ShardPatch],
        base: AnyManifest | None,
        progress: Callable[[int], None] | None = None,
    ) -> tuple[AnyManifest, bytes, Stats]:
        """Uploads what is new in `files` (call under commit_guard) and returns their manifest,
        encoded; the caller stores it (Registry.commit or a distributed part)."""
        publisher = Publisher(self.objects, self.known_content(base), progress=progress)
        if isinstance(files, TreeWalk):  # a folder of any size, streamed (carried: references)
            refs = list(carried)
            if not all(isinstance(c, Entry) for c in refs):
                raise ValueError("a streamed folder carries references only")
            built = streaming.build(publisher, files, [c for c in refs if isinstance(c, Entry)])
        else:
            built = publisher.build(files, carried)
        publisher.known.settle()  # the dedupe index learns where the new small files went
        manifest, encoded = self.registry.seal(built)  # a big one: its shards are stored now
        return manifest, encoded, publisher.stats

    def publish(
        self,
        name: ArtifactName,
        type_: str | None,
        files: Iterable[FileSource],
        carried: Iterable[Entry | CarriedRange | ShardPatch] = (),
        *,
        base: VersionRecord | None = None,
        same_as: VersionRecord | list[VersionRecord] | None = None,
        description: str | None = None,
        metadata: dict | None = None,
        aliases: Iterable[str] = (),
        progress: Callable[[int], None] | None = None,
        creator: dict | None = None,
    ) -> Published:
        """Stores new content and commits a version, unless it equals `same_as`
        (a version, or a list of candidates: the first whose content matches wins).

        `base` is recorded as the version this one was derived from.
        """
        aliases = [check_alias(a) for a in aliases if a != LATEST]  # latest is derived; bad ones fail before upload
        if type_:
            self.registry.ensure_artifact(name, type_)  # refuse a type clash before uploading anything
        with commit_guard(self.objects):  # gc must not delete content this commit reuses
            live = live_base(self.registry, base)  # re-read under the guard: deleted meanwhile?
            if base is not None and live is None:
                carried = expand(carried)
                check_carried(self.objects, base, carried)
            manifest, encoded, stats = self.store_content(
                files, carried, self.manifest(live) if live else None, progress
            )
            if not len(manifest) and not manifest.empty_folders():
                raise InvalidInput(f"nothing to commit to {name}: no files")
            hexdigest = digest_bytes(encoded).hex()
            candidates = same_as if isinstance(same_as, list) else [same_as] if same_as else []
            # Identity is content: a candidate differing only in times or other mode bits matches.
            match = next((c for c in candidates if c.manifest == hexdigest), None)
            if match is None and candidates:
                content = manifest.content_digest()
                match = next((c for c in candidates if self._content_of(c) == content), None)
            if match is not None:
                for alias in aliases:
                    self.registry.set_alias(name, alias, match.number)
                return Published(match, False, stats)
            rec, created = self.registry.commit(
                name,
                type_,
                manifest,
                encoded,
                base=base.number if base else None,
                description=description or "",
                metadata=metadata,
                aliases=aliases,
                creator=creator,
            )
        if created:
            lineage.record_logged(self.registry, rec)
        return Published(rec, created, stats)

    def _content_of(self, rec: VersionRecord) -> bytes | None:
        """A version's content digest; None if it was deleted and collected since it was listed."""
        try:
            return self.manifest(rec).content_digest()
        except NotFound:
            return None

    def set_info(
        self, rec: VersionRecord, description: str | None, metadata: dict | None, merge: bool
    ) -> VersionRecord:
        from artfs.store.registry import check_metadata

        metadata = check_metadata(metadata) if metadata is not None else None

        def change(r: VersionRecord) -> VersionRecord:
            if description is not None:
                r.description = description
            if metadata is not None:
                r.metadata = {**r.metadata, **metadata} if merge else metadata
            return r

        return self.registry.update_version(rec, change)

    def create_draft(
        self, drafts: "DraftStore", a: ArtifactName, name: str, base: VersionRecord | None, type_: str | None
    ) -> "DraftInfo":
        """A new draft on this host; the store holds its base content until it is committed or discarded."""
        hold = None
        if base is not None:
            with commit_guard(self.objects):
                hold = add_hold(self.objects, base.manifest, f"{a}/drafts/{name}")
                self.registry.version(a, base.number)  # still there now that the hold protects it
        try:
            return drafts.create(a, name, base.number if base else None, base.manifest if base else None, type_, hold)
        except BaseException:
            release_hold(self.objects, hold)
            raise

    def discard_draft(self, drafts: "DraftStore", a: ArtifactName, name: str, background: bool = False) -> None:
        info = drafts.info(a, name)
        # The hold goes as soon as the draft is gone, not after its files are deleted: a
        # crash in that (slow) deletion would leave the hold, and its content, forever.
        drafts.discard(
            a, name, then=(lambda: release_hold(self.objects, info.hold)) if info else None, background=background
        )

    def commit_draft(
        self,
        draft: "Draft",
        *,
        type_: str | None = None,
        aliases: Iterable[str] = (),
        description: str | None = None,
        metadata: dict | None = None,
        progress: Callable[[int], None] | None = None,
        creator: dict | None = None,
    ) -> Published:
        """Commits a draft as the next version. Safe to run again after a crash: a version
        made from this draft's base since the draft was created, with the same content,
        is recognised as this commit's own and returned instead of a duplicate.
        `creator`: the committing process's (creator_info), when it is not this one (a mount)."""
        info = draft.info
        a = info.artifact_name
        existing = self.registry.artifact_type(a)
        type_ = type_ or info.type or existing
        if not type_:
            raise InvalidInput(f"{a} is a new artifact: give its type (artfs commit … --type dataset)")
        base = same = None
        if info.base is not None:
            try:
                base = same = self.registry.version(a, info.base)
            except NotFound:
                # Deleted since the draft was made: the draft's hold kept its content, so the draft
                # still commits, as a new version (never "the same as" a deleted one).
                base = self.registry._read_record(a, info.base)  # the tombstone keeps the manifest digest
        earlier = [r for r in self.registry.versions(a) if r.base == info.base and r.created >= info.created]
        files, carried = draft.snapshot()
        result = self.publish(
            a,
            type_,
            files,
            carried,
            base=base,
            same_as=([same] if same else []) + earlier,
            description=description,
            metadata=metadata,
            aliases=aliases,
            progress=progress,
            creator=creator,
        )
        draft.note_committed(str(result.version))
        return result
