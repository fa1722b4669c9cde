"""What the W&B layer's modules share: W&B-style names, the default project, the store,
and the once-per-process warning for arguments artfs accepts but cannot honour."""

from __future__ import annotations

import os
import threading
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from artfs.errors import InvalidInput
from artfs.names import check_name

if TYPE_CHECKING:
    from artfs.api import native


class WandbArtifact(Protocol):
    """What entries and tables need of the W&B Artifact they belong to (artifact.Artifact is
    one); named here so those modules need not import artifact.py, which imports them."""

    _art: native.Artifact

    def _store(self) -> native.Store: ...

    def _default_root(self) -> str: ...

    def _read(self, path: str) -> bytes: ...


DEFAULT_PROJECT = "uncategorized"  # W&B's own project for runs started without one
DEFAULT_ENTITY = "artfs"  # the store is the entity: any entity in a name is accepted and ignored

_warned: set[str] = set()
_warn_lock = threading.Lock()


class ArtfsWandbWarning(UserWarning):
    """An argument artfs accepts from W&B code but does not act on (nothing is lost by it)."""


def ignored(where: str, *names: str) -> None:
    """Warns once per process that `names` given to `where` are accepted and ignored."""
    key = f"{where}:{','.join(names)}"
    with _warn_lock:
        if key in _warned:
            return
        _warned.add(key)
    warnings.warn(
        f"artfs.wandb: {where} ignores {', '.join(names)} (nothing is lost by it)", ArtfsWandbWarning, stacklevel=3
    )


_active: list[Any] = []  # the process's active run (set by wandb.init), for Artifact.save()


def active_run() -> Any:
    return _active[0] if _active else None


def set_active_run(run: Any) -> None:
    _active[:] = [run] if run is not None else []


def default_project() -> str:
    return os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT


def current_entity() -> str:
    return os.environ.get("WANDB_ENTITY") or DEFAULT_ENTITY


@dataclass(frozen=True)
class WandbName:
    """A W&B artifact path: [[entity/]project/]name[:alias|:vN]."""

    project: str | None
    name: str
    selector: str | None

    @property
    def spec(self) -> str:
        """'project/name[:selector]' for the native API (the project must be known)."""
        base = f"{self.project}/{self.name}"
        return f"{base}:{self.selector}" if self.selector else base


def parse_name(text: str, project: str | None = None) -> WandbName:
    """Parses 'entity/project/name:alias', 'project/name:alias' or 'name:alias' (with `project`)."""
    if not isinstance(text, str) or not text:
        raise InvalidInput(f"invalid artifact name {text!r}")
    base, sep, selector = text.partition(":")
    parts = base.split("/")
    if len(parts) == 3:
        parts = parts[1:]  # the entity: one store is one entity
    if len(parts) == 2:
        project = check_name(parts[0], "project")
    elif len(parts) != 1:
        raise InvalidInput(f"invalid artifact name {text!r}: expected [[entity/]project/]name[:alias]")
    if sep and not selector:
        raise InvalidInput(f"invalid artifact name {text!r}: nothing after ':'")
    return WandbName(project, check_name(parts[-1], "artifact name"), selector or None)


def store():
    """The store ARTFS_STORE names (the native API's default store)."""
    from artfs.api.native import default_store

    return default_store()
