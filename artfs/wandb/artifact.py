"""`wandb.Artifact`: the W&B SDK's artifact, as a thin wrapper of `artfs.Artifact`.

A draft wraps a native draft; logging (by a run, `save()` or `use_artifact`) turns the
native one into a logged version and this object with it. Differences from W&B that
code can see: `digest` and entry digests are artfs's blake3 (the W&B MD5 manifest is
`manifest.to_manifest_json()` / `artfs wandb export`), logging is synchronous (`wait()`
returns at once), and the entity is the store.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
import weakref
from collections.abc import Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from artfs.api import native, query
from artfs.errors import ArtfsError, Conflict, InvalidInput, NotFound
from artfs.names import normalize_path
from artfs.versions.download import PART
from artfs.wandb import table as tables
from artfs.wandb.common import current_entity, ignored

if TYPE_CHECKING:
    from artfs.api.native import Store
    from artfs.wandb.query import Run as PublicRun

_MODES = ("mutable", "immutable")


def _ref_text(uri: str | None):
    """`entry.ref` is the URI (W&B 0.31); `entry.ref()` returns it too (the older W&B API)."""
    return None if uri is None else _Ref(uri)


class _Ref(str):
    def __call__(self) -> str:
        return str(self)


class ManifestEntry:
    """One entry of an artifact (W&B's ArtifactManifestEntry)."""

    def __init__(self, artifact: Artifact, path: str, size: int | None, digest: str | None, uri: str | None,
                 extra: dict | None = None):
        self._artifact = artifact
        self.path = path
        self.size = size
        self.digest = digest  # blake3 hex for stored files (W&B's is MD5: see manifest.to_manifest_json())
        self.ref = _ref_text(uri)
        self.extra = extra or {}

    @property
    def name(self) -> str:
        return self.path

    def ref_target(self) -> str:
        if self.ref is None:
            raise ValueError(f"{self.path!r} is stored in the artifact, not a reference")
        return str(self.ref)

    def download(self, root: str | None = None, skip_cache: bool | None = None) -> str:
        """Fetches this file (verified) into ROOT/<path> and returns its local path."""
        if skip_cache:
            ignored("ManifestEntry.download()", "skip_cache")
        art = self._artifact
        root = root or art._default_root()
        return art._art.get_path(self.path).download(root)

    def __repr__(self) -> str:
        return f"<ManifestEntry {self.path!r}{' -> ' + self.ref if self.ref else ''}>"


class Manifest:
    """`artifact.manifest`: `entries` (path -> ManifestEntry) and the W&B manifest."""

    def __init__(self, artifact: Artifact):
        self._artifact = artifact

    @property
    def entries(self) -> dict[str, ManifestEntry]:
        art = self._artifact
        if art._art.is_draft:
            return {p: ManifestEntry(art, p, None, None, None) for p in art._art.files}
        out = {}
        for e in art._art.manifest:
            out[e.path] = ManifestEntry(art, e.path, e.size if e.size >= 0 else None,
                                        e.hexdigest if not e.is_reference else None, e.ref["uri"] if e.ref else None)
        return out

    def to_manifest_json(self) -> dict[str, Any]:
        """The version's W&B manifest, with MD5 digests (as `artfs wandb export` writes it)."""
        from artfs.wandb import manifest

        art = self._artifact
        return manifest.export_manifest(art._store(), art._art._logged("manifest.to_manifest_json()"))

    def digest(self) -> str:
        """W&B's manifest digest (MD5 of the entries' MD5 digests)."""
        from artfs.wandb import manifest

        return manifest.wandb_digest(self.to_manifest_json())

    def __len__(self) -> int:
        return len(self._artifact._art.files)


class File:
    """One file of a logged version, from `artifact.files()` (W&B's public File)."""

    def __init__(self, entry: ManifestEntry):
        self._entry = entry
        self.name = entry.path
        self.size = entry.size
        self.digest = entry.digest

    def download(self, root: str = ".", replace: bool = False, exist_ok: bool = False, **_: Any) -> str:
        dest = os.path.join(root, self.name)
        if os.path.exists(dest) and not (replace or exist_ok):
            raise Conflict(f"{dest} exists: pass replace=True or exist_ok=True")
        return self._entry.download(root)

    def __repr__(self) -> str:
        return f"<File {self.name} ({self.size} bytes)>"


class Artifact:
    """A W&B artifact: a draft to fill and log, or one logged version."""

    def __init__(self, name: str, type: str, description: str | None = None, metadata: dict | None = None,
                 incremental: bool = False, use_as: str | None = None, storage_region: str | None = None,
                 digest_algorithm: str = "MD5"):
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
            self._tags = list(_read_tags(self._store(), art))
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
    description = property(lambda self: self._art.description,
                           lambda self, v: setattr(self._art, "description", v))
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

    def add_file(self, local_path: str, name: str | None = None, is_tmp: bool | None = False,
                 skip_cache: bool | None = False, policy: str | None = "mutable",
                 overwrite: bool = False) -> ManifestEntry:
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

    def add_dir(self, local_path: str, name: str | None = None, skip_cache: bool | None = False,
                policy: str | None = "mutable", merge: bool = False) -> None:
        """Adds every file below a folder, under prefix `name`; with merge=True a file added
        before under the same path is replaced, else that is refused."""
        if skip_cache:
            ignored("add_dir()", "skip_cache")
        local = os.fspath(local_path)
        source = self._stage(local) if self._policy(policy) == "mutable" and os.path.isdir(local) else local
        self._art.add_dir(source, name, overwrite=merge)

    def add_reference(self, uri: Any, name: str | None = None, checksum: bool = True,
                      max_objects: int | None = None) -> list[ManifestEntry]:
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

    def download(self, root: str | None = None, allow_missing_references: bool = False,
                 skip_cache: bool | None = None, path_prefix: str | None = None,
                 multipart: bool | None = None) -> str:
        """Fetches the version's files (verified; files already right are skipped) into
        `root` (default ./artifacts/NAME:vN) and returns the folder."""
        if skip_cache:
            ignored("download()", "skip_cache")
        if multipart is not None:
            ignored("download()", "multipart")
        root = root or self._default_root()
        if not allow_missing_references:
            return self._art.download(root, path_prefix)
        return _download_skipping_missing(self._art, root, path_prefix)

    def checkout(self, root: str | None = None) -> str:
        """Makes `root` hold exactly this version (downloads, deletes files not in it)."""
        return self._art.checkout(root or self._default_root())

    def verify(self, root: str | None = None) -> None:
        """Raises ValueError naming what in `root` differs from the version."""
        root = root or self._default_root()
        problems = self._art.verify(root)
        if problems:
            raise ValueError(f"{root} does not match {self.name}: " + "; ".join(problems[:20])
                             + (f" (and {len(problems) - 20} more)" if len(problems) > 20 else ""))

    def file(self, root: str | None = None) -> str:
        """The one file of a single-file artifact, downloaded."""
        paths = self._art.files
        if len(paths) != 1:
            raise ValueError(f"{self.name} has {len(paths)} files: file() is for single-file artifacts")
        return os.path.join(self.download(root), paths[0])

    def logged_by(self) -> PublicRun | None:
        from artfs.api import runs
        from artfs.wandb.query import Run

        run_id = runs.creator_of(self._art._logged("logged_by"))
        return Run._load(self._store(), run_id) if run_id else None

    def used_by(self) -> list[PublicRun]:
        from artfs.api import runs
        from artfs.wandb.query import Run

        return [Run._load(self._store(), r) for r in runs.users_of(self._store(), self._art._logged("used_by"))]

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
            from artfs.wandb import runs as runs_mod

            active = runs_mod.active_run()
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
            raise Conflict(f"{self.name} has aliases {', '.join(self.aliases)}: "
                           "delete(delete_aliases=True) removes them with the version")
        self._art.delete(force=True)

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
        native.log_artifact(self._art, project if self._art.project is None else None, aliases or None,
                            store=None if self._art._base is not None else _native_store())
        self._save_tags()
        return self

    def _save_tags(self) -> None:
        if self._tags != self._saved_tags:
            _write_tags(self._store(), self._art, self._tags)
            self._saved_tags = list(self._tags)


def _native_store() -> Store:
    from artfs.wandb.common import store

    return store()


# -- tags: W&B keeps them beside aliases; artfs keeps them in a small record per version --
def _tags_key(art: native.Artifact) -> str:
    return f"wandb/tags/{art.project}/{art.name}/{art.version}.json"


def _read_tags(store: Store, art: native.Artifact) -> list[str]:
    try:
        doc = json.loads(store.objects.get(_tags_key(art)))
        return [str(t) for t in doc.get("tags", [])]
    except (NotFound, ValueError, AttributeError):
        return []


def _write_tags(store: Store, art: native.Artifact, tags: list[str]) -> None:
    store.objects.put(_tags_key(art), json.dumps({"tags": tags}).encode())


def _download_skipping_missing(art: native.Artifact, root: str, path_prefix: str | None) -> str:
    """download(allow_missing_references=True): stored files as usual; a reference whose
    source is gone or changed is left out (W&B's behaviour) instead of failing the download."""
    import logging

    m = art.manifest
    prefix = normalize_path(path_prefix) if path_prefix else ""
    stored = [e.path for e in m if not e.is_reference and (not prefix or e.path == prefix
                                                          or e.path.startswith(prefix + "/"))]
    refs = [e.path for e in m if e.is_reference and (not prefix or e.path == prefix
                                                    or e.path.startswith(prefix + "/"))]
    for path in _top_paths(stored, refs):
        art.download(root, path)
    for path in refs:
        try:
            art.get_path(path).download(root)
        except ArtfsError as e:
            logging.getLogger(__name__).warning("left out %s: %s", path, e)
            with contextlib.suppress(OSError):  # the partial file a failed fetch leaves to resume from
                os.unlink(os.path.join(root, path) + PART)
    return os.path.abspath(root)


def _top_paths(stored: list[str], refs: list[str]) -> Iterator[str]:
    """The fewest folder/file paths covering `stored` without covering any of `refs`."""
    ref_set = set(refs)
    ref_dirs = {r.rsplit("/", i)[0] for r in refs for i in range(1, r.count("/") + 1)}
    done: set[str] = set()
    for p in stored:
        parts = p.split("/")
        top = p
        for i in range(1, len(parts)):
            d = "/".join(parts[:i])
            if d not in ref_dirs and d not in ref_set:
                top = d
                break
        if top not in done:
            done.add(top)
            yield top
