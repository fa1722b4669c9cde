"""`wandb.Artifact`: the W&B SDK's artifact, as a thin wrapper of `artfs.Artifact`.

A draft wraps a native draft; logging (by a run, `save()` or `use_artifact`) turns the
native one into a logged version and this object with it. Differences from W&B that
code can see: `digest` and entry digests are artfs's blake3 (the W&B MD5 manifest is
`manifest.to_manifest_json()` / `artfs wandb export`), logging is synchronous (`wait()`
returns at once), and the entity is the store.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import weakref
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from artfs.api import native, query
from artfs.api import runs as native_runs
from artfs.errors import Conflict, InvalidInput, NotFound
from artfs.names import normalize_path
from artfs.wandb import entries as entries_mod
from artfs.wandb import table as tables
from artfs.wandb import tags as tags_mod
from artfs.wandb.common import active_run, current_entity, ignored
from artfs.wandb.entries import File, Manifest, ManifestEntry

if TYPE_CHECKING:
    from artfs.api.native import Store

_MODES = ("mutable", "immutable")


class Artifact:
    """A W&B artifact: a draft to fill and log, or one logged version."""

    def __init__(
        self,
        name: str,
        type: str,
        description: str | None = None,
        metadata: dict | None = None,
        incremental: bool = False,
        use_as: str | None = None,
        storage_region: str | None = None,
        digest_algorithm: str = "MD5",
    ):
        if use_as is not None:
            ignored("Artifact()", "use_as")
        if storage_region is not None:
            ignored("Artifact()", "storage_region")
        if digest_algorithm != "MD5":
            ignored("Artifact()", "digest_algorithm (artfs keeps blake3; exports use MD5)")
        self._art = native.Artifact(name, type, description, metadata)
        self._init_wrapper(incremental)

    def _init_wrapper(self, incremental: bool = False) -> None:
        self._incremental = bool(incremental)
        self._tags: list[str] = []
        self._saved_tags: list[str] = []
        self._ttl: timedelta | None = None
        self._staging: str | None = None
        self._staged = 0
        self._added: dict[str, Any] = {}  # tables added to a draft, for get()

    @classmethod
    def _wrap(cls, art: native.Artifact) -> Artifact:
        self = cls.__new__(cls)
        self._art = art
        self._init_wrapper()
        if not art.is_draft:
            self._tags = list(tags_mod.read_tags(self._store(), art))
            self._saved_tags = list(self._tags)
        return self

    def _store(self) -> Store:
        store = self._art.store
        if store is None:
            raise InvalidInput(f"{self.name} is not logged yet")
        return store

    # -- identity ----------------------------------------------------------------------
    @property
    def name(self) -> str:
        """'bike-dataset:v3' once logged; the name as given for a draft."""
        v = self._art.version
        return f"{self._art.name}:{v}" if v else self._art.name

    source_name = name

    @property
    def version(self) -> str | None:
        return self._art.version

    source_version = version

    @property
    def project(self) -> str | None:
        return self._art.project

    source_project = project

    @property
    def entity(self) -> str:
        return current_entity()

    source_entity = entity

    @property
    def qualified_name(self) -> str:
        return f"{self.entity}/{self.project}/{self.name}"

    source_qualified_name = qualified_name

    @property
    def id(self) -> str | None:
        return None if self._art.is_draft else f"{self.project}/{self.name}"

    @property
    def type(self) -> str:
        return self._art.type

    @property
    def state(self) -> str:
        return self._art.state

    @property
    def incremental(self) -> bool:
        return self._incremental

    @property
    def use_as(self) -> str | None:
        return None

    @property
    def url(self) -> str:
        return f"artfs://{self.project}/{self._art.name}/{self.version}" if self.version else ""

    @property
    def is_link(self) -> bool:
        return False

    def is_draft(self) -> bool:
        return self._art.is_draft

    def __repr__(self) -> str:
        return f"<Artifact {self.qualified_name if self.project else self.name} ({self.type})>"

    # -- what it says about itself ---------------------------------------------------------
    description = property(lambda self: self._art.description, lambda self, v: setattr(self._art, "description", v))
    metadata = property(lambda self: self._art.metadata, lambda self, v: setattr(self._art, "metadata", v))

    @property
    def aliases(self) -> list[str]:
        """The version's aliases: edit the list (or assign one), then save()."""
        return self._art.aliases

    @aliases.setter
    def aliases(self, aliases: list[str]) -> None:
        self._art.aliases = list(aliases)

    @property
    def tags(self) -> list[str]:
        return self._tags

    @tags.setter
    def tags(self, tags: list[str]) -> None:
        self._tags = [str(t) for t in tags]

    @property
    def ttl(self) -> timedelta | None:
        return self._ttl

    @ttl.setter
    def ttl(self, ttl: Any) -> None:
        if ttl is not None:
            ignored("Artifact.ttl", "a time to live (artfs deletes versions only when asked)")
        self._ttl = None

    digest = property(lambda self: self._art.digest, doc="hex blake3 of the version's manifest")
    size = property(lambda self: self._art.size)
    file_count = property(lambda self: self._art.file_count)

    @property
    def created_at(self) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._art.created))

    updated_at = created_at

    @property
    def manifest(self) -> Manifest:
        return Manifest(self)

    @property
    def distributed_id(self) -> str | None:
        return None

    # -- filling a draft ---------------------------------------------------------------
    def _stage(self, local: str) -> str:
        """A private copy of `local` (W&B's policy='mutable': the file as it is when added)."""
        if self._staging is None:
            self._staging = tempfile.mkdtemp(prefix="artfs-wandb-")
            weakref.finalize(self, shutil.rmtree, self._staging, True)
        self._staged += 1
        dest = os.path.join(self._staging, str(self._staged))
        try:
            if os.path.isdir(local):
                shutil.copytree(local, dest)
            else:
                shutil.copy2(local, dest)
        except OSError as e:
            raise InvalidInput(f"cannot copy {local}: {e.strerror or e}") from None
        return dest

    @staticmethod
    def _policy(policy: str | None) -> str:
        policy = policy or "mutable"
        if policy not in _MODES:
            raise InvalidInput(f"policy must be 'mutable' or 'immutable', not {policy!r}")
        return policy

    def add_file(
        self,
        local_path: str,
        name: str | None = None,
        is_tmp: bool | None = False,
        skip_cache: bool | None = False,
        policy: str | None = "mutable",
        overwrite: bool = False,
    ) -> ManifestEntry:
        """Adds a local file as `name` (default: its basename). With policy='mutable' (the
        default) the file is copied now, so later changes to it do not reach the artifact."""
        if is_tmp:
            ignored("add_file()", "is_tmp")
        if skip_cache:
            ignored("add_file()", "skip_cache")
        local = os.fspath(local_path)
        path = normalize_path(name if name is not None else os.path.basename(os.path.abspath(local)))
        if self._policy(policy) == "mutable" and os.path.isfile(local):
            source = self._stage(local)
        else:
            source = local
        self._art.add_file(source, path, overwrite=overwrite)
        return ManifestEntry(self, path, os.path.getsize(source), None, None)

    def add_dir(
        self,
        local_path: str,
        name: str | None = None,
        skip_cache: bool | None = False,
        policy: str | None = "mutable",
        merge: bool = False,
    ) -> None:
        """Adds every file below a folder, under prefix `name`; with merge=True a file added
        before under the same path is replaced, else that is refused."""
        if skip_cache:
            ignored("add_dir()", "skip_cache")
        local = os.fspath(local_path)
        source = self._stage(local) if self._policy(policy) == "mutable" and os.path.isdir(local) else local
        self._art.add_dir(source, name, overwrite=merge)

    def add_reference(
        self, uri: Any, name: str | None = None, checksum: bool = True, max_objects: int | None = None
    ) -> list[ManifestEntry]:
        """Adds s3://, gs://, http(s):// or file:// `uri` (an object, or every object below a prefix)."""
        if isinstance(uri, ManifestEntry):
            uri = uri.ref_target()
        before = set(self._art.files)
        self._art.add_reference(str(uri), name, checksum, max_objects if max_objects is not None else 10_000)
        return [ManifestEntry(self, p, None, None, str(uri)) for p in self._art.files if p not in before]

    def new_file(self, name: str, mode: str = "x", encoding: str | None = None, policy: str = "mutable"):
        """A file to write that becomes entry `name` when closed: `with artifact.new_file(n) as f:`."""
        self._policy(policy)
        return self._art.new_file(name, mode, encoding)

    def add(self, obj: Any, name: str, overwrite: bool = False) -> ManifestEntry:
        """Adds a Table (as NAME.table.json) or a PartitionedTable (NAME.partitioned-table.json)."""
        path = tables.stored_name(obj, normalize_path(name))
        with self._art.new_file(path, "w", encoding="utf-8", overwrite=overwrite) as f:
            json.dump(obj.to_json(), f)
        self._added[path] = obj
        return ManifestEntry(self, path, None, None, None)

    def remove(self, item: Any) -> None:
        """Removes an entry, or every entry under a folder ('dir/')."""
        path = item.path if isinstance(item, ManifestEntry) else os.fspath(item)
        self._art.remove(path)

    # -- reading a logged version ---------------------------------------------------------
    def _default_root(self) -> str:
        """W&B's default download folder: ./artifacts/NAME:vN."""
        return os.path.join(".", "artifacts", self.name)

    def get_entry(self, name: str) -> ManifestEntry:
        path = normalize_path(os.fspath(name))
        entry = self.manifest.entries.get(path)
        if entry is None:
            raise KeyError(f"{self.name} has no entry {path!r}")
        return entry

    get_path = get_entry

    def _read(self, path: str) -> bytes:
        """The bytes of one stored file of the version (verified)."""
        with tempfile.TemporaryDirectory(prefix="artfs-wandb-get-") as tmp:
            local = self._art.get_path(path).download(tmp)
            with open(local, "rb") as f:
                return f.read()

    def get(self, name: str) -> Any:
        """The Table or PartitionedTable added as `name` (None when there is none)."""
        if self._art.is_draft:
            for path in (name + tables.TABLE_SUFFIX, name + tables.PARTITIONED_SUFFIX, name):
                if path in self._added:
                    return self._added[path]
            return None
        paths = self._art.manifest.paths
        for path in (name + tables.TABLE_SUFFIX, name + tables.PARTITIONED_SUFFIX, name):
            if path in paths and (path.endswith(".json")):
                try:
                    doc = json.loads(self._read(path))
                except ValueError:
                    raise InvalidInput(f"{self.name}: {path!r} is not JSON") from None
                return tables.load(doc, self)
        return None

    def files(self, names: list[str] | None = None, per_page: int = 50, start: str | None = None) -> list[File]:
        entries = self.manifest.entries
        wanted = names if names is not None else list(entries)
        return [File(entries[n]) for n in wanted if n in entries]

    def download(
        self,
        root: str | None = None,
        allow_missing_references: bool = False,
        skip_cache: bool | None = None,
        path_prefix: str | None = None,
        multipart: bool | None = None,
    ) -> str:
        """Fetches the version's files (verified; files already right are skipped) into
        `root` (default ./artifacts/NAME:vN) and returns the folder."""
        if skip_cache:
            ignored("download()", "skip_cache")
        if multipart is not None:
            ignored("download()", "multipart")
        root = root or self._default_root()
        if not allow_missing_references:
            return self._art.download(root, path_prefix)
        return entries_mod.download_skipping_missing(self._art, root, path_prefix)

    def checkout(self, root: str | None = None) -> str:
        """Makes `root` hold exactly this version (downloads, deletes files not in it)."""
        return query.checkout(self._art, root or self._default_root())

    def verify(self, root: str | None = None) -> None:
        """Raises ValueError naming what in `root` differs from the version."""
        root = root or self._default_root()
        problems = query.verify(self._art, root)
        if problems:
            raise ValueError(
                f"{root} does not match {self.name}: "
                + "; ".join(problems[:20])
                + (f" (and {len(problems) - 20} more)" if len(problems) > 20 else "")
            )

    def file(self, root: str | None = None) -> str:
        """The one file of a single-file artifact, downloaded."""
        paths = self._art.files
        if len(paths) != 1:
            raise ValueError(f"{self.name} has {len(paths)} files: file() is for single-file artifacts")
        return os.path.join(self.download(root), paths[0])

    def logged_by(self) -> PublicRun | None:
        run_id = native_runs.creator_of(self._art._logged("logged_by"))
        return PublicRun._load(self._store(), run_id) if run_id else None

    def used_by(self) -> list[PublicRun]:
        users = native_runs.users_of(self._store(), self._art._logged("used_by"))
        return [PublicRun._load(self._store(), r) for r in users]

    # -- changing --------------------------------------------------------------------------
    def new_draft(self) -> Artifact:
        """A draft holding this version's files, to change and log as the next version."""
        return Artifact._wrap(self._art.new_draft())

    def save(self, project: str | None = None, settings: Any = None) -> None:
        """Logs a draft (in the active run, if any); for a logged version, persists changes
        of description, metadata, aliases and tags."""
        if settings is not None:
            ignored("Artifact.save()", "settings")
        if self._art.is_draft:
            active = active_run()
            if active is not None:
                active.log_artifact(self)
            else:
                from artfs.wandb.common import default_project

                self._log(project or default_project(), [])
            return
        self._keep_latest()
        self._art.save()
        self._save_tags()

    def _keep_latest(self) -> None:
        """In artfs `latest` always names the newest version (W&B lets code move it by hand):
        an edit adding or removing it is ignored, with a warning."""
        was = "latest" in (self._art._loaded[2] if self._art._loaded else [])
        now = "latest" in self._art.aliases
        if was and not now:
            self._art.aliases.insert(0, "latest")
        elif now and not was:
            self._art.aliases.remove("latest")
        else:
            return
        ignored("Artifact.save()", "adding or removing 'latest' (it always names the newest version)")

    def wait(self, timeout: int | None = None) -> Artifact:
        return self  # logging is synchronous

    def finalize(self) -> None:
        """W&B freezes a draft here; an artfs draft becomes immutable when logged."""

    def delete(self, delete_aliases: bool = False) -> None:
        """Deletes this version; refused while aliases name it, unless delete_aliases=True."""
        if self.aliases and not delete_aliases:
            raise Conflict(
                f"{self.name} has aliases {', '.join(self.aliases)}: "
                "delete(delete_aliases=True) removes them with the version"
            )
        query.delete(self._art, force=True)

    def link(self, target_path: str, aliases: list[str] | None = None) -> Artifact:
        raise InvalidInput("artfs has no W&B registries: link() is not supported (use aliases)")

    def unlink(self) -> None:
        raise InvalidInput("artfs has no W&B registries: unlink() is not supported")

    # -- logging (called by runs) ----------------------------------------------------------
    def _log(self, project: str, aliases: list[str], tags: list[str] | None = None) -> Artifact:
        if tags:
            self._tags = list(dict.fromkeys([*self._tags, *tags]))
        if self._incremental and self._art._base is None:
            try:
                latest = query.get(f"{self._art.project or project}/{self._art.name}", store=_native_store())
            except NotFound:
                latest = None
            if latest is not None:
                self._art.base_on(latest)
        native.log_artifact(
            self._art,
            project if self._art.project is None else None,
            aliases or None,
            store=None if self._art._base is not None else _native_store(),
        )
        self._save_tags()
        return self

    def _save_tags(self) -> None:
        if self._tags != self._saved_tags:
            tags_mod.write_tags(self._store(), self._art, self._tags)
            self._saved_tags = list(self._tags)


def _native_store() -> Store:
    from artfs.wandb.common import store

    return store()


class PublicRun:
    """A run as the store recorded it (W&B's public Run)."""

    def __init__(self, store_: Store, rec: native_runs.RunRecord):
        self._store = store_
        self._rec = rec

    @classmethod
    def _load(cls, store_: Store, run_id: str) -> PublicRun:
        try:
            return cls(store_, native_runs.get_run(store_, run_id))
        except NotFound:
            # a version logged outside any wandb.init() names its process or job id as run
            return cls(store_, native_runs.RunRecord(id=run_id, project=""))

    id = property(lambda self: self._rec.id)
    name = property(lambda self: self._rec.name or self._rec.id)
    project = property(lambda self: self._rec.project)
    job_type = property(lambda self: self._rec.job_type)
    group = property(lambda self: self._rec.group)
    config = property(lambda self: dict(self._rec.config))
    entity = property(lambda self: current_entity())
    path = property(lambda self: [self.entity, self.project, self.id])

    @property
    def state(self) -> str:
        return "finished" if self._rec.finished else "running"

    def logged_artifacts(self) -> list[Artifact]:
        return [
            Artifact._wrap(native.Artifact._from_record(self._store, r))
            for r in native_runs.logged_versions(self._store, self.id)
        ]

    def used_artifacts(self) -> list[Artifact]:
        return [
            Artifact._wrap(native.Artifact._from_record(self._store, r))
            for r in native_runs.used_versions(self._store, self.id)
        ]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicRun) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"<Run {self.entity}/{self.project}/{self.id} ({self.state})>"
