"""The Python API: the W&B SDK's artifact verbs on top of `Store`.

    art = artfs.Artifact("demo/bikes", type="dataset", metadata={"classes": 3})
    art.add_dir("images", name="images")
    art.add_file("labels.csv")
    art.add_reference("s3://bucket/raw/", name="raw")  # bytes stay there, pinned (see references.py)
    with art.new_file("notes/README.txt") as f:
        f.write("hello")
    artfs.log_artifact(art, aliases=["best"])        # art is now demo/bikes:v0

    art = artfs.use_artifact("demo/bikes:best")
    art.download()                                   # ./artifacts/bikes/v0
    art.get_path("labels.csv").download()
    draft = art.new_draft()                          # carries v0's entries, reads nothing
    draft.add_file("fixed.csv", name="labels.csv")   # replaces a carried file
    draft.remove("images/bad/")                      # a file, or everything under a folder
    artfs.log_artifact(draft)                        # v1: only fixed.csv is hashed and uploaded
    art.description = "bikes"; art.aliases.append("prod"); art.save()

Module-level functions use the store named by ARTFS_STORE (or the default
local one); `artfs.Store(url).log_artifact(...)` / `.use_artifact(...)` use
that store, for code that needs two. An Artifact object is either a *draft*
(editable, not yet logged) or *logged* (one immutable version, whose
description, metadata and aliases `save()` can change). `log_artifact` turns
a draft into the logged version in place and returns it.

File contents are read when the artifact is logged, not when added (a file
that changes in between is logged as it is then, and a file changing while it
is uploaded aborts the log).
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
import threading
import weakref
from typing import TYPE_CHECKING, Iterable, Iterator

from artfs import config
from artfs.errors import Conflict, InvalidInput, NotFound
from artfs.store.manifest import Entry, Folder
from artfs.store.shards import AnyManifest, ShardedManifest
from artfs.versions import reshard
from artfs.versions.reshard import ShardPatch
from artfs.names import (
    LATEST,
    ArtifactName,
    check_alias,
    check_name,
    normalize_path,
    parse_artifact_name,
    parse_spec,
    version_name,
)
from artfs.versions.publish import FileSource, SourceList, Stats
from artfs.versions.sources import walk_sources

from artfs.api import store as store_facade
from artfs.api.entries import ArtifactEntry, _default_root, _NewFile

if TYPE_CHECKING:
    from artfs.store.registry import VersionRecord

__all__ = ["Artifact", "ArtifactEntry", "Store", "log_artifact", "use_artifact"]


# -- store selection -------------------------------------------------------------
_default_stores: dict[tuple[str, str], "Store"] = {}
_default_lock = threading.Lock()


def default_store() -> "Store":
    """The store ARTFS_STORE / ARTFS_CACHE name now (one object per setting, reused)."""
    key = (config.store_url(), config.cache_dir())
    with _default_lock:
        store = _default_stores.get(key)
        if store is None:
            store = _default_stores[key] = Store(*key)
        return store


def _aliases_arg(aliases: Iterable[str] | str | None) -> list[str]:
    if aliases is None:
        return []
    if isinstance(aliases, str):
        aliases = [aliases]
    out = []
    for a in aliases:
        if a != LATEST:
            check_alias(a)
        if a not in out:
            out.append(a)
    return out


class Artifact:
    """A draft to fill and log, or (from `use_artifact` / `log_artifact`) one logged version."""

    def __init__(self, name: str, type: str, description: str | None = None, metadata: dict | None = None):
        from artfs.store.registry import check_metadata

        if not isinstance(name, str):
            raise InvalidInput(f"invalid artifact name {name!r}")
        if ":" in name:
            raise InvalidInput(f"invalid artifact name {name!r}: a name has no ':version' (aliases go to log_artifact)")
        if "/" in name:
            parsed = parse_artifact_name(name)
            self._project: str | None = parsed.project
            self._name = parsed.name
        else:
            self._project, self._name = None, check_name(name, "artifact name")
        self.type = check_name(type, "type")
        if description is not None and not isinstance(description, str):
            raise InvalidInput("description must be text")
        self.description = description or ""
        self.metadata = check_metadata(metadata) if metadata is not None else {}
        self.aliases: list[str] = []
        # draft state
        self._files: dict[str, FileSource] = {}  # added, to be hashed and uploaded at log time
        self._folders: dict[str, Folder] = {}  # folders add_dir walked (empty ones are kept too)
        self._refs: dict[str, Entry] = {}  # references added (resolved and pinned when added)
        self._open_files: set[str] = set()
        self._tmpdir: str | None = None
        self._tmp_counter = 0
        self._cleanup: weakref.finalize | None = None
        self._base: "VersionRecord | None" = None  # for drafts made by new_draft()
        self._base_manifest: AnyManifest | None = None
        self._removed: set[int] = set()  # indices of _base_manifest entries not carried over
        self._removed_folders: set[str] = set()  # base folders removed whole (with their records)
        # logged state
        self._store: "Store | None" = None
        self._record: "VersionRecord | None" = None
        self._manifest: AnyManifest | None = None
        self._loaded: tuple[str, dict, list[str]] | None = None
        self._stats: Stats | None = None

    # -- identity ----------------------------------------------------------------
    @property
    def name(self) -> str:
        """The artifact's name within its project (no project, no version)."""
        return self._name

    @property
    def project(self) -> str | None:
        return self._project

    @property
    def version(self) -> str | None:
        """'vN' once logged; None for a draft."""
        return self._record.name if self._record else None

    @property
    def qualified_name(self) -> str:
        base = f"{self._project}/{self._name}" if self._project else self._name
        return f"{base}:{self.version}" if self._record else base

    @property
    def state(self) -> str:
        return "COMMITTED" if self._record else "PENDING"

    @property
    def is_draft(self) -> bool:
        return self._record is None

    @property
    def store(self) -> "Store | None":
        return self._store

    def __repr__(self) -> str:
        if self._record:
            return f"<Artifact {self.qualified_name} ({self.type})>"
        base = f", draft of {self._base.name}" if self._base else ", draft"
        return f"<Artifact {self.qualified_name} ({self.type}{base})>"

    # -- what a logged version knows -------------------------------------------------
    def _logged_store(self) -> "Store":
        """The store this artifact was logged to or read from (set together with its record or base)."""
        assert self._store is not None, "an artifact gets its store when logged, used or based on a version"
        return self._store

    def _logged(self, what: str) -> "VersionRecord":
        if self._record is None:
            raise InvalidInput(f"{self.qualified_name} is not logged yet: {what} needs a logged version")
        return self._record

    digest = property(lambda self: self._logged("digest").manifest, doc="hex blake3 of the version's manifest")
    size = property(lambda self: self._logged("size").size, doc="total bytes of the version's files")
    file_count = property(lambda self: self._logged("file_count").files)
    created = property(lambda self: self._logged("created").created, doc="creation time (Unix seconds)")
    creator = property(lambda self: dict(self._logged("creator").creator))

    @property
    def base_version(self) -> str | None:
        """For a logged version: the version it was made from. For a draft: its base."""
        if self._record is None:
            return self._base.name if self._base else None
        return version_name(self._record.base) if self._record.base is not None else None

    @property
    def manifest(self) -> AnyManifest:
        """The version's manifest (path, size, digest, … per entry)."""
        rec = self._logged("manifest")
        if self._manifest is None:
            self._manifest = self._logged_store().manifest(rec)
        return self._manifest

    @property
    def files(self) -> list[str]:
        """Sorted entry paths: of the version, or what a draft holds now."""
        if self._record is not None:
            return list(self.manifest.paths)
        paths = set(self._files) | set(self._refs)
        if self._base_manifest is not None:
            paths.update(p for i, p in enumerate(self._base_manifest.paths) if i not in self._removed)
        return sorted(paths)

    # -- editing a draft ---------------------------------------------------------------
    def _editable(self) -> None:
        if self._record is not None:
            raise InvalidInput(
                f"{self.qualified_name} is logged and cannot change; use new_draft() to make the next version"
            )

    def _carried_index(self, path: str) -> int | None:
        if self._base_manifest is None:
            return None
        i = self._base_manifest.index(path)
        return None if i is None or i in self._removed else i

    def _put(self, path: str, local: str, overwrite: bool) -> None:
        """Adds local file `local` as entry `path`; replaces a carried entry of the base."""
        old = self._files.get(path)
        if old is not None and not overwrite and os.path.abspath(old.local) != os.path.abspath(local):
            raise Conflict(
                f"{self.qualified_name} already has {path!r} added; remove() it first or pass overwrite=True"
            )
        if path in self._refs:
            if not overwrite:
                raise Conflict(f"{self.qualified_name} already has {path!r} added as a reference; remove() it first")
            del self._refs[path]
        i = self._carried_index(path)
        if i is not None:
            self._removed.add(i)
        self._files[path] = FileSource(path, local)

    def add_file(self, local_path: str | os.PathLike, name: str | None = None, overwrite: bool = False) -> "Artifact":
        """Adds one local file as `name` (default: its basename; nested 'a/b/c.txt' allowed)."""
        self._editable()
        local = os.path.abspath(os.fspath(local_path))
        if not os.path.exists(local):
            raise NotFound(f"cannot add {os.fspath(local_path)!r}: no such file")
        if os.path.isdir(local):
            raise InvalidInput(f"cannot add {os.fspath(local_path)!r} with add_file: it is a folder (use add_dir)")
        if not os.path.isfile(local):
            raise InvalidInput(f"cannot add {os.fspath(local_path)!r}: not a regular file")
        path = normalize_path(name if name is not None else os.path.basename(local))
        self._put(path, local, overwrite)
        return self

    def add_dir(self, local_path: str | os.PathLike, name: str | None = None, overwrite: bool = False) -> "Artifact":
        """Adds every file below a local folder, recursively, under prefix `name` (default: the root)."""
        self._editable()
        local = os.path.abspath(os.fspath(local_path))
        if not os.path.exists(local):
            raise NotFound(f"cannot add {os.fspath(local_path)!r}: no such folder")
        if not os.path.isdir(local):
            raise InvalidInput(f"cannot add {os.fspath(local_path)!r} with add_dir: not a folder (use add_file)")
        prefix = normalize_path(name) if name else None
        sources = walk_sources(local, prefix)
        for src in sources:  # check everything before changing anything
            old = self._files.get(src.path)
            if (old is not None and not overwrite and old.local != src.local) or (
                src.path in self._refs and not overwrite
            ):
                raise Conflict(
                    f"{self.qualified_name} already has {src.path!r} added; remove() it first or pass overwrite=True"
                )
        for src in sources:
            self._put(src.path, src.local, True)
        for folder in sources.folders:
            self._folders[folder.path] = folder
        return self

    def new_file(self, name: str, mode: str = "w", encoding: str | None = None, overwrite: bool = False) -> _NewFile:
        """A writable file that becomes entry `name` when closed (use it in a `with` block)."""
        self._editable()
        path = normalize_path(name)
        if any(c in mode for c in "ra+"):
            raise InvalidInput(f"new_file mode {mode!r}: use 'w' (text) or 'wb' (binary)")
        if path in self._open_files:
            raise Conflict(f"{path!r} is already open in new_file()")
        if (path in self._files or path in self._refs) and not overwrite:
            raise Conflict(
                f"{self.qualified_name} already has {path!r} added; remove() it first or pass overwrite=True"
            )
        if self._tmpdir is None:
            self._tmpdir = tempfile.mkdtemp(prefix="artfs-new-file-")
            self._cleanup = weakref.finalize(self, shutil.rmtree, self._tmpdir, True)
        self._tmp_counter += 1
        local = os.path.join(self._tmpdir, str(self._tmp_counter))
        f = open(local, mode.replace("x", "w"), encoding=encoding if "b" not in mode else None)
        self._open_files.add(path)

        def on_close() -> None:
            self._open_files.discard(path)
            if self._record is None:
                self._put(path, local, True)

        def on_discard() -> None:
            self._open_files.discard(path)
            try:
                os.unlink(local)
            except OSError:
                pass

        return _NewFile(f, on_close, on_discard)

    def add_reference(
        self, uri: str, name: str | None = None, checksum: bool = True, max_objects: int | None = 10_000
    ) -> "Artifact":
        """Adds the object, file or URL `uri` (s3://, gs://, http(s)://, file://) as a reference:
        its bytes stay at the source, pinned now (ETag, version, size, blake3…), never uploaded.

        A single object becomes its basename, or `name` (a full path); a prefix or folder
        becomes its objects, named relative to it, under `name/` when given. A prefix with
        more than `max_objects` objects is refused. checksum=False records only the URI.
        """
        from artfs.references import access as references

        self._editable()
        entries = references.resolve(uri, name, checksum, max_objects)
        for e in entries:  # check everything before changing anything
            if e.path in self._files or (e.path in self._refs and not self._refs[e.path].same_content(e)):
                raise Conflict(f"{self.qualified_name} already has {e.path!r} added; remove() it first")
        for e in entries:
            i = self._carried_index(e.path)
            if i is not None:
                self._removed.add(i)
            self._refs[e.path] = e
        return self

    def remove(self, item: str) -> "Artifact":
        """Removes one entry, or every entry under a folder ('dir' or 'dir/')."""
        self._editable()
        path = normalize_path(item if isinstance(item, str) else getattr(item, "path", item))
        removed = 0
        for folder in [f for f in self._folders if f == path or f.startswith(path + "/")]:
            del self._folders[folder]
            removed += 1
        for added in (self._files, self._refs):
            if added.pop(path, None) is not None:
                removed += 1
            prefix = path + "/"
            for p in [p for p in added if p.startswith(prefix)]:
                del added[p]
                removed += 1
        if self._base_manifest is not None:
            for i in self._base_manifest.under(path):
                if i not in self._removed:
                    self._removed.add(i)
                    removed += 1
            if self._base_manifest.is_dir(path):
                self._removed_folders.add(path)
        if not removed:
            raise NotFound(f"{self.qualified_name} has no file or folder {path!r}")
        return self

    def _carried(self) -> Iterator[Entry | ShardPatch]:
        """Entries that go into the manifest unread: the base's kept ones, and references.
        A sharded base's are named by range (runs of kept entries), never read."""
        m = self._base_manifest
        if isinstance(m, ShardedManifest):
            yield reshard.kept_but(m, self._removed, self._removed_folders, list(self._refs.values()))
            return
        if m is not None:
            yield from (m.entry(i) for i in range(len(m)) if i not in self._removed)
        yield from self._refs.values()

    def _check_layout(self) -> None:
        """Refuses a file that is also a folder before anything is uploaded."""
        if self._open_files:
            raise InvalidInput(f"new_file {sorted(self._open_files)[0]!r} is still open: close it before logging")
        added = set(self._files) | set(self._refs)
        m = self._base_manifest
        for path in added:
            cut = path.rfind("/")
            while cut > 0:
                parent = path[:cut]
                if parent in added or self._carried_index(parent) is not None:
                    raise InvalidInput(f"{parent!r} is both a file and a folder in {self.qualified_name}")
                cut = path.rfind("/", 0, cut)
            if m is not None and m.is_dir(path) and any(i not in self._removed for i in m.under(path)):
                raise InvalidInput(f"{path!r} is both a file and a folder in {self.qualified_name}")

    # -- logged versions -------------------------------------------------------------
    def _become(self, store: "Store", rec: "VersionRecord", manifest: AnyManifest | None = None) -> None:
        """Turns this object into the logged version `rec`."""
        self._store, self._record = store, rec
        self._project, self._name, self.type = rec.artifact.project, rec.artifact.name, rec.type
        self.description = rec.description
        self.metadata = copy.deepcopy(rec.metadata)
        self.aliases = list(store.registry.aliases_by_version(rec.artifact).get(rec.number, []))
        self._loaded = (self.description, copy.deepcopy(self.metadata), list(self.aliases))
        self._manifest = manifest
        self._files, self._base, self._base_manifest, self._removed = {}, None, None, set()
        self._folders = {}
        self._removed_folders = set()
        self._refs = {}
        if self._cleanup is not None:
            self._cleanup()
            self._cleanup, self._tmpdir = None, None

    @classmethod
    def _from_record(cls, store: "Store", rec: "VersionRecord") -> "Artifact":
        art = cls(str(rec.artifact), rec.type)
        art._become(store, rec)
        return art

    def download(self, root: str | None = None, path_prefix: str | None = None) -> str:
        """Fetches the version's files (verified; files already right are skipped); returns the folder.

        Default root: ./artifacts/<name>/<version>.
        """
        rec = self._logged("download")
        root = root or _default_root(rec.artifact, rec.name)
        self._logged_store().download(rec, root, path_prefix)
        return os.path.abspath(root)

    def get_path(self, name: str) -> ArtifactEntry:
        """The file `name` of this version, to `.download()` or `.ref()`."""
        rec = self._logged("get_path")
        path = normalize_path(name)
        entry = self.manifest.get(path)
        if entry is None:
            if self.manifest.is_dir(path):
                raise InvalidInput(f"{rec}: {path!r} is a folder; use download(path_prefix={path!r})")
            raise NotFound(f"{rec} has no file {path!r}")
        return ArtifactEntry(self, entry)

    get_entry = get_path

    def new_draft(self) -> "Artifact":
        """A draft holding this version's entries (carried over, never read) to edit and log."""
        rec = self._logged("new_draft")
        draft = Artifact(str(rec.artifact), rec.type, rec.description, copy.deepcopy(rec.metadata))
        draft._store = self._store
        draft._base = rec
        draft._base_manifest = self.manifest
        return draft

    def save(self) -> "Artifact":
        """Persists edits of description, metadata (replaced) and aliases; a draft is logged."""
        if self._record is None:
            return log_artifact(self)
        rec = self._record
        assert self._loaded is not None  # set whenever a record is
        old_desc, old_meta, old_aliases = self._loaded
        new_aliases = list(dict.fromkeys(self.aliases))
        added = [a for a in new_aliases if a not in old_aliases]
        dropped = [a for a in old_aliases if a not in new_aliases]
        if LATEST in added or LATEST in dropped:
            raise InvalidInput("'latest' always names the newest version; it cannot be added or removed")
        for a in added:
            check_alias(a)
        description = self.description if self.description != old_desc else None
        if description is not None and not isinstance(description, str):
            raise InvalidInput("description must be text")
        metadata = self.metadata if self.metadata != old_meta else None
        if description is not None or metadata is not None:
            rec = self._logged_store().set_info(rec, description, metadata, merge=False)
        reg = self._logged_store().registry
        for a in added:
            reg.set_alias(rec.artifact, a, rec.number)
        for a in dropped:
            try:
                reg.remove_alias(rec.artifact, a, rec.number)
            except NotFound:
                pass  # someone moved it away already: it is not on this version, as asked
        self._become(self._logged_store(), rec, self._manifest)
        return self

    def base_on(self, version: "Artifact") -> "Artifact":
        """Makes this draft carry `version`'s entries too (W&B's incremental=True); what was
        added replaces a carried entry of the same path. (Deleting, verifying, checkout: api/query.py.)"""
        self._editable()
        rec = version._logged("base_on")
        if self._base is not None:
            raise InvalidInput(f"{self.qualified_name} already has a base ({self._base})")
        self._store, self._base, self._base_manifest = version._store, rec, version.manifest
        for path in list(self._files) + list(self._refs):
            i = self._base_manifest.index(path)
            if i is not None:
                self._removed.add(i)
        return self


# -- the verbs -------------------------------------------------------------------------
def log_artifact(
    artifact: Artifact,
    project: str | None = None,
    aliases: Iterable[str] | str | None = None,
    store: "Store | None" = None,
) -> Artifact:
    """Logs a draft as the artifact's next version and returns it (the same object, now logged).

    Content equal to the latest version (or, for a `new_draft()`, to its base)
    makes no new version: the artifact becomes that version. `aliases` (and any
    in `artifact.aliases`) are put on the logged version; `latest` always is.
    """
    if not isinstance(artifact, Artifact):
        raise InvalidInput(f"log_artifact needs an artfs.Artifact, not {type(artifact).__name__}")
    if artifact._record is not None:
        raise InvalidInput(f"{artifact.qualified_name} is already logged; use new_draft() to make the next version")
    if project is not None:
        check_name(project, "project")
        if artifact._project is not None and artifact._project != project:
            raise InvalidInput(
                f"artifact {artifact.qualified_name} is in project {artifact._project!r}, not {project!r}"
            )
    project = artifact._project or project
    if project is None:
        raise InvalidInput(f"which project is {artifact.name!r} in? Name it 'project/{artifact.name}' or pass project=")
    name = ArtifactName(project, artifact.name)
    alias_list = _aliases_arg(list(artifact.aliases) + _aliases_arg(aliases))
    from artfs.store.registry import check_metadata

    metadata = check_metadata(artifact.metadata if artifact.metadata is not None else {})
    if artifact.description is not None and not isinstance(artifact.description, str):
        raise InvalidInput("description must be text")
    base: VersionRecord | None
    same_as: VersionRecord | None
    if artifact._base is not None:
        origin = artifact._logged_store()
        if store is None:
            store = origin
        elif store.objects.url != origin.objects.url:
            raise InvalidInput(
                f"a draft of {artifact._base} must be logged to the store it came from ({origin.url}), not {store.url}"
            )
        base = same_as = artifact._base
    else:
        store = store or default_store()
        base = same_as = store.registry.latest(name)  # None: the first version
    artifact._check_layout()
    published = store.publish(
        name,
        artifact.type,
        SourceList(artifact._files.values(), artifact._folders.values()),
        artifact._carried(),
        base=base,
        same_as=same_as,
        description=artifact.description,
        metadata=metadata,
        aliases=[a for a in alias_list if a != LATEST],
    )
    artifact._become(store, published.version)
    artifact._stats = published.stats
    return artifact


def use_artifact(artifact: "str | Artifact", project: str | None = None, store: "Store | None" = None) -> Artifact:
    """The logged version named 'project/name[:alias|:vN]' ('name:…' with project=); latest by default.

    Given an Artifact instead, logs it if it is a draft (no new version if its content equals
    latest), records the use, and returns it.
    """
    if isinstance(artifact, Artifact):
        if artifact._record is None:
            log_artifact(artifact, project, store=store)
        from artfs.versions import lineage

        assert artifact._store is not None and artifact._record is not None  # logged just above
        lineage.record_use(artifact._store.registry, artifact._record, "use_artifact")
        return artifact
    if not isinstance(artifact, str):
        raise InvalidInput(f"use_artifact needs 'project/name:alias', not {type(artifact).__name__}")
    store = store or default_store()
    rec = store.resolve(parse_spec(artifact, project))
    from artfs.versions import lineage

    lineage.record_use(store.registry, rec, "use_artifact")
    return Artifact._from_record(store, rec)


class Store(store_facade.Store):
    """The store facade with `log_artifact` / `use_artifact` as methods, for code that uses more than one store."""

    def log_artifact(
        self, artifact: Artifact, project: str | None = None, aliases: Iterable[str] | str | None = None
    ) -> Artifact:
        return log_artifact(artifact, project, aliases, store=self)

    def use_artifact(self, artifact: "str | Artifact", project: str | None = None) -> Artifact:
        return use_artifact(artifact, project, store=self)
