"""What the native Artifact hands out for single files: `get_path(name)` entries and
`new_file(name)` writers (kept apart from native.py, which is long enough)."""

from __future__ import annotations

import os
from typing import IO, Any, Protocol, Self

from artfs.api.store import Store
from artfs.errors import InvalidInput
from artfs.names import ArtifactName
from artfs.store.manifest import Entry
from artfs.store.registry import VersionRecord


class LoggedArtifact(Protocol):
    """What an entry needs of the artifact it came from (native.Artifact is one)."""

    @property
    def qualified_name(self) -> str: ...

    def _logged(self, what: str) -> VersionRecord: ...

    def _logged_store(self) -> Store: ...


def _default_root(artifact: ArtifactName, version: str) -> str:
    return os.path.join("artifacts", artifact.name, version)


class _NewFile:
    """A writable file (text or binary) whose content joins the artifact when closed.

    Works as `with art.new_file("a.txt") as f:` and as `f = art.new_file(...); ...; f.close()`.
    Leaving a `with` block by an exception discards the file.
    """

    def __init__(self, f: IO[Any], on_close, on_discard):
        self._f, self._on_close, self._on_discard = f, on_close, on_discard

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __iter__(self):
        return iter(self._f)

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()
            self._on_close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._f.close()
            self._on_discard()


class ArtifactEntry:
    """One file of a logged version, from `Artifact.get_path(name)`."""

    def __init__(self, artifact: LoggedArtifact, entry: Entry):
        self._artifact = artifact
        self._entry = entry

    path = property(lambda self: self._entry.path)
    size = property(lambda self: self._entry.size)
    digest = property(lambda self: self._entry.hexdigest)
    mode = property(lambda self: self._entry.mode)
    is_reference = property(lambda self: self._entry.is_reference)

    def download(self, root: str | None = None) -> str:
        """Fetches this file (verified) into ROOT/<path>; returns the local file's path."""
        art = self._artifact
        rec = art._logged("download")
        root = root or _default_root(rec.artifact, rec.name)
        art._logged_store().download(rec, root, self._entry.path)
        return os.path.abspath(os.path.join(root, self._entry.path))

    def ref(self) -> str:
        """The URI of a reference entry (its bytes live outside the store)."""
        if self._entry.ref is None:
            raise InvalidInput(
                f"{self._artifact.qualified_name}: {self.path!r} is stored in the artifact, not a reference"
            )
        return self._entry.ref["uri"]

    def __repr__(self) -> str:
        return f"<ArtifactEntry {self.path!r} {self.size} bytes>"
