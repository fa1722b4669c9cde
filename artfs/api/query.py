"""Asking the store what it holds, and what can be done to a logged version besides reading it:
ranges of versions, the artifacts (and types) of a project, deleting, verifying and
checking out a download. `Artifact.delete/verify/checkout` call these.

    artfs.api.query.versions("demo/bikes")            # every version, oldest first
    artfs.api.query.artifacts("demo", type="dataset") # [(name, type), …]
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import blake3

from artfs.errors import NotFound
from artfs.names import ArtifactName, check_name, parse_artifact_name, parse_spec
from artfs.versions import lifecycle

if TYPE_CHECKING:
    from artfs.api.native import Artifact, Store


def _store(store: Store | None) -> Store:
    from artfs.api.native import default_store

    return store or default_store()


def versions(name: str | ArtifactName, project: str | None = None, store: Store | None = None) -> list[Artifact]:
    """Every (not deleted) version of artifact 'project/name', oldest first, as logged Artifacts."""
    from artfs.api.native import Artifact

    store = _store(store)
    a = name if isinstance(name, ArtifactName) else parse_artifact_name(name, project)
    records = store.registry.versions(a)
    if not records and store.registry.artifact_type(a) is None:
        raise NotFound(f"artifact {a} does not exist")
    return [Artifact._from_record(store, r) for r in records]


def get(spec: str, project: str | None = None, store: Store | None = None) -> Artifact:
    """The logged version 'project/name[:alias|:vN]' (latest by default), without recording a use."""
    from artfs.api.native import Artifact

    store = _store(store)
    return Artifact._from_record(store, store.resolve(parse_spec(spec, project)))


def artifacts(project: str, type: str | None = None, store: Store | None = None) -> list[tuple[str, str]]:
    """(name, type) of the project's artifacts, by name; only those of `type` when given."""
    store = _store(store)
    reg = store.registry
    out = []
    for name in sorted(reg.artifacts(check_name(project, "project"))):
        t = reg.artifact_type(ArtifactName(project, name))
        if t is not None and (type is None or t == type):
            out.append((name, t))
    return out


def projects(store: Store | None = None) -> list[str]:
    return sorted(_store(store).registry.projects())


def exists(spec: str, project: str | None = None, store: Store | None = None) -> bool:
    """Whether 'project/name[:alias|:vN]' names a version now."""
    try:
        _store(store).resolve(parse_spec(spec, project))
        return True
    except NotFound:
        return False


def delete(artifact: Artifact, force: bool = False) -> None:
    """Deletes the logged version (its number is never reused; its bytes go at the next gc).

    Refused while aliases other than `latest` name it, or when it is the artifact's only
    version, unless `force` (the aliases go too)."""
    rec = artifact._logged("delete")
    assert artifact._store is not None  # a logged version knows its store
    lifecycle.delete_version(artifact._store.registry, rec, force)


def verify(artifact: Artifact, root: str) -> list[str]:
    """What differs between the folder `root` and the version: one line per file missing,
    changed or not in the version (empty: the folder holds exactly the version's files)."""
    m = artifact.manifest
    problems = []
    root = os.path.abspath(root)
    if not os.path.isdir(root):
        raise NotFound(f"cannot verify {root}: no such folder")
    for e in m:
        local = os.path.join(root, e.path)
        if not os.path.isfile(local):
            problems.append(f"missing: {e.path}")
            continue
        if e.size >= 0 and os.path.getsize(local) != e.size:
            problems.append(f"changed: {e.path} (size {os.path.getsize(local)}, expected {e.size})")
            continue
        if e.digest and any(e.digest):  # an unpinned reference has no digest to check against
            h = blake3.blake3()
            with open(local, "rb") as f:
                while buf := f.read(8 << 20):
                    h.update(buf)
            if h.digest() != e.digest:
                problems.append(f"changed: {e.path}")
    for path in _extra_files(root, m):
        problems.append(f"not in {artifact.qualified_name}: {path}")
    return problems


def _extra_files(root: str, m) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for fn in sorted(filenames):
            rel = os.path.relpath(os.path.join(dirpath, fn), root).replace(os.sep, "/")
            if m.index(rel) is None:
                out.append(rel)
    return out


def checkout(artifact: Artifact, root: str) -> str:
    """Makes `root` hold exactly the version: downloads what is missing or changed and
    deletes files that are not in it. Returns the folder."""
    artifact.download(root)
    for rel in _extra_files(os.path.abspath(root), artifact.manifest):
        os.unlink(os.path.join(root, rel))
    manifest = artifact.manifest
    for dirpath, _dirs, _files in os.walk(root, topdown=False):
        rel = os.path.relpath(dirpath, root).replace(os.sep, "/")
        if dirpath != root and not os.listdir(dirpath) and manifest.folder(rel) is None:
            os.rmdir(dirpath)  # an empty folder the version does not have (it keeps its own)
    return os.path.abspath(root)


__all__ = ["artifacts", "checkout", "delete", "exists", "get", "projects", "verify", "versions"]
