"""What `artifact.manifest.entries`, `get_entry()` and `files()` return (W&B's
ArtifactManifestEntry and File), and the download that leaves out missing references."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from artfs.errors import ArtfsError, Conflict
from artfs.names import normalize_path
from artfs.versions.download import PART
from artfs.wandb.common import WandbArtifact, ignored

if TYPE_CHECKING:
    from artfs.api import native


def _ref_text(uri: str | None):
    """`entry.ref` is the URI (W&B 0.31); `entry.ref()` returns it too (the older W&B API)."""
    return None if uri is None else _Ref(uri)


class _Ref(str):
    def __call__(self) -> str:
        return str(self)


class ManifestEntry:
    """One entry of an artifact (W&B's ArtifactManifestEntry)."""

    def __init__(
        self,
        artifact: WandbArtifact,
        path: str,
        size: int | None,
        digest: str | None,
        uri: str | None,
        extra: dict | None = None,
    ):
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

    def __init__(self, artifact: WandbArtifact):
        self._artifact = artifact

    @property
    def entries(self) -> dict[str, ManifestEntry]:
        art = self._artifact
        if art._art.is_draft:
            return {p: ManifestEntry(art, p, None, None, None) for p in art._art.files}
        out = {}
        for e in art._art.manifest:
            out[e.path] = ManifestEntry(
                art,
                e.path,
                e.size if e.size >= 0 else None,
                e.hexdigest if not e.is_reference else None,
                e.ref["uri"] if e.ref else None,
            )
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


def download_skipping_missing(art: native.Artifact, root: str, path_prefix: str | None) -> str:
    """download(allow_missing_references=True): stored files as usual; a reference whose
    source is gone or changed is left out (W&B's behaviour) instead of failing the download."""
    m = art.manifest
    prefix = normalize_path(path_prefix) if path_prefix else ""
    stored = [
        e.path for e in m if not e.is_reference and (not prefix or e.path == prefix or e.path.startswith(prefix + "/"))
    ]
    refs = [e.path for e in m if e.is_reference and (not prefix or e.path == prefix or e.path.startswith(prefix + "/"))]
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
