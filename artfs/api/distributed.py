"""Many writers, one version, from Python: `upsert_artifact` by each writer (any host, any
order, in parallel) and one `finish_artifact` (W&B's distributed artifacts, `distributed_id`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from artfs.api.native import Artifact, _aliases_arg, default_store
from artfs.errors import InvalidInput
from artfs.names import ArtifactName
from artfs.versions.distributed import Distributed

if TYPE_CHECKING:
    from artfs.api.native import Store


def _distributed_target(artifact: Artifact, project: str | None, distributed_id: str | None, store):
    if not isinstance(artifact, Artifact):
        raise InvalidInput(f"needs an artfs.Artifact, not {type(artifact).__name__}")
    if not distributed_id:
        raise InvalidInput("distributed_id is required: every writer of one version passes the same id")
    project = artifact._project or project
    if project is None:
        raise InvalidInput(f"which project is {artifact.name!r} in? Name it 'project/{artifact.name}' or pass project=")
    store = store or default_store()
    return ArtifactName(project, artifact.name), Distributed(store), store


def upsert_artifact(
    artifact: Artifact, project: str | None = None, distributed_id: str | None = None, store: "Store | None" = None
) -> Artifact:
    """Adds this writer's files to the version that all writers with `distributed_id` build together."""
    name, dist, _ = _distributed_target(artifact, project, distributed_id, store)
    artifact._check_layout()
    dist.upsert(name, artifact.type, distributed_id, list(artifact._files.values()), artifact._carried())
    return artifact


def finish_artifact(
    artifact: Artifact,
    project: str | None = None,
    distributed_id: str | None = None,
    aliases: Iterable[str] | str | None = None,
    store: "Store | None" = None,
    overwrite: bool = False,
) -> Artifact:
    """Commits the union of every writer's upserts (and this artifact's own files) as one new version."""
    name, dist, store = _distributed_target(artifact, project, distributed_id, store)
    if artifact._files or next(artifact._carried(), None) is not None:  # (a generator is always truthy)
        upsert_artifact(artifact, project, distributed_id, store)
    result = dist.finish(
        name,
        distributed_id,
        type_=artifact.type,
        aliases=_aliases_arg(aliases),
        description=artifact.description,
        metadata=artifact.metadata,
        overwrite=overwrite,
    )
    artifact._become(store, result.version)
    return artifact
