"""`wandb.Api()`: asking the store about artifacts, collections, types and runs.

Reading through the Api records no use (as W&B: only a run's use_artifact does).
"""

from __future__ import annotations

from typing import Any

from artfs.api import query
from artfs.api import runs as native_runs
from artfs.errors import InvalidInput, NotFound
from artfs.names import ArtifactName, check_name
from artfs.wandb.artifact import Artifact
from artfs.wandb.artifact import PublicRun as Run
from artfs.wandb.common import (
    current_entity,
    default_project,
    ignored,
    parse_name,
    store,
)


class ArtifactCollection:
    """All versions of one artifact name (W&B's collection)."""

    def __init__(self, api: Api, project: str, name: str, type: str):
        self._api, self.project, self.name, self.type = api, project, name, type
        self.entity = current_entity()

    def versions(self) -> list[Artifact]:
        return self._api.artifacts(self.type, f"{self.project}/{self.name}")

    artifacts = versions

    @property
    def aliases(self) -> list[str]:
        reg = self._api._store.registry
        return sorted(reg.aliases(ArtifactName(self.project, self.name)))

    def __repr__(self) -> str:
        return f"<ArtifactCollection {self.project}/{self.name} ({self.type})>"


class ArtifactType:
    def __init__(self, api: Api, project: str, name: str):
        self._api, self.project, self.name = api, project, name

    type = property(lambda self: self.name)

    def collections(self) -> list[ArtifactCollection]:
        return self._api.artifact_collections(self.project, self.name)

    def collection(self, name: str) -> ArtifactCollection:
        return self._api.artifact_collection(self.name, f"{self.project}/{name}")

    def __repr__(self) -> str:
        return f"<ArtifactType {self.name} in {self.project}>"


class Api:
    """Queries over the store ARTFS_STORE names; names default to `overrides['project']`,
    else WANDB_PROJECT, else 'uncategorized'."""

    def __init__(self, overrides: dict | None = None, timeout: int | None = None, api_key: str | None = None, **_: Any):
        if api_key is not None:
            ignored("wandb.Api()", "api_key")
        self._store = store()
        self._project = (overrides or {}).get("project") or default_project()

    def _name(self, name: str):
        return parse_name(name, self._project)

    def artifact(self, name: str, type: str | None = None) -> Artifact:
        """The version '[[entity/]project/]name[:alias|:vN]' (latest when no alias)."""
        n = self._name(name)
        art = Artifact._wrap(query.get(n.spec, store=self._store))
        if type is not None and art.type != type:
            raise InvalidInput(f"{art.qualified_name} has type {art.type!r}, not {type!r}")
        return art

    def artifact_exists(self, name: str, type: str | None = None) -> bool:
        try:
            self.artifact(name, type)
            return True
        except (NotFound, InvalidInput):
            return False

    def artifacts(
        self,
        type_name: str,
        name: str,
        per_page: int = 50,
        tags: list[str] | None = None,
        order: str | None = None,
        start: str | None = None,
    ) -> list[Artifact]:
        """Every version of artifact `name` ('[entity/]project/name'), newest first."""
        n = self._name(name)
        if n.selector:
            raise InvalidInput(f"artifacts() takes an artifact name without ':{n.selector}'")
        a = ArtifactName(n.project or self._project, n.name)
        out = [Artifact._wrap(v) for v in reversed(query.versions(a, store=self._store))]
        if out and out[0].type != type_name:
            raise InvalidInput(f"{a} has type {out[0].type!r}, not {type_name!r}")
        if tags:
            out = [v for v in out if set(tags) & set(v.tags)]
        return out

    def artifact_versions(self, type_name: str, name: str, per_page: int = 50) -> list[Artifact]:
        return self.artifacts(type_name, name, per_page)

    def artifact_collections(
        self, project_name: str, type_name: str, per_page: int = 50, order: str | None = None, start: str | None = None
    ) -> list[ArtifactCollection]:
        project = self._project_arg(project_name)
        return [
            ArtifactCollection(self, project, name, t)
            for name, t in query.artifacts(project, type_name, store=self._store)
        ]

    def artifact_collection(self, type_name: str, name: str) -> ArtifactCollection:
        n = self._name(name)
        project = n.project or self._project
        t = self._store.registry.artifact_type(ArtifactName(project, n.name))
        if t is None:
            raise NotFound(f"artifact {project}/{n.name} does not exist")
        if t != type_name:
            raise InvalidInput(f"{project}/{n.name} has type {t!r}, not {type_name!r}")
        return ArtifactCollection(self, project, n.name, t)

    def artifact_collection_exists(self, name: str, type: str) -> bool:
        try:
            self.artifact_collection(type, name)
            return True
        except (NotFound, InvalidInput):
            return False

    def artifact_types(self, project: str | None = None) -> list[ArtifactType]:
        p = self._project_arg(project)
        types = sorted({t for _, t in query.artifacts(p, store=self._store)})
        return [ArtifactType(self, p, t) for t in types]

    def artifact_type(self, type_name: str, project: str | None = None) -> ArtifactType:
        p = self._project_arg(project)
        if type_name not in {t for _, t in query.artifacts(p, store=self._store)}:
            raise NotFound(f"project {p} has no artifacts of type {type_name!r}")
        return ArtifactType(self, p, type_name)

    def _project_arg(self, project: str | None) -> str:
        if not project:
            return self._project
        return check_name(project.split("/")[-1], "project")  # 'entity/project': one store is one entity

    def run(self, path: str = "") -> Run:
        """The run '[entity/]project/run_id' (or 'run_id')."""
        parts = [p for p in path.split("/") if p]
        if parts and parts[-2:-1] == ["runs"]:  # 'entity/project/runs/id', as W&B URLs have it
            parts = parts[:-2] + parts[-1:]
        if not parts:
            raise InvalidInput("run() needs a path: [entity/]project/run_id")
        rec = native_runs.get_run(self._store, parts[-1])
        if len(parts) >= 2 and rec.project != parts[-2]:
            raise NotFound(f"run {parts[-1]!r} is in project {rec.project!r}, not {parts[-2]!r}")
        return Run(self._store, rec)

    def runs(self, path: str | None = None, filters: dict | None = None, **_: Any) -> list[Run]:
        """The runs of project '[entity/]project' (default: the Api's project), oldest first."""
        if filters:
            raise InvalidInput("artfs.wandb: Api.runs() has no filters (it lists every run of a project)")
        project = self._project_arg(path)
        return [Run(self._store, r) for r in native_runs.runs(self._store, project)]
