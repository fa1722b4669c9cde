"""`wandb.init()` and the run it returns: a record in the store that the versions it logs
and uses point to (see artfs/api/runs.py). A run keeps no metrics: artfs keeps artifacts.
(This module is `runs`, not `run`: `wandb.run` is the active run.)
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Self

from artfs.api import runs as native_runs
from artfs.errors import InvalidInput
from artfs.names import check_name
from artfs.wandb import common
from artfs.wandb.artifact import Artifact, PublicRun
from artfs.wandb.common import (
    current_entity,
    default_project,
    ignored,
    parse_name,
    store,
)

if TYPE_CHECKING:
    from artfs.api.native import Store


class Config(dict):
    """`run.config` / `wandb.config`: a dict that also reads and writes as attributes."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value

    def update(self, d: Any = None, allow_val_change: bool | None = None, **kwargs: Any) -> None:  # type: ignore[override]
        super().update(dict(d or {}), **kwargs)

    def as_dict(self) -> dict:
        return dict(self)


def active_run() -> Run | None:
    return common.active_run()


class Run:
    """One step of a pipeline (W&B's run): logs and uses artifacts; a context manager."""

    def __init__(self, store_: Store, rec: native_runs.RunRecord):
        self._store = store_
        self._rec = rec
        self.config = Config(rec.config)
        self.summary: dict[str, Any] = {}
        self._finished = False

    # -- identity ---------------------------------------------------------------------
    id = property(lambda self: self._rec.id)
    name = property(lambda self: self._rec.name)
    project = property(lambda self: self._rec.project)
    job_type = property(lambda self: self._rec.job_type)
    group = property(lambda self: self._rec.group)
    entity = property(lambda self: current_entity())
    path = property(lambda self: f"{self.entity}/{self.project}/{self.id}")
    url = property(lambda self: None)

    def __repr__(self) -> str:
        return f"<Run {self.path} ({self.job_type or 'no job type'})>"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.finish(exit_code=1 if exc_type else 0)

    def _check_open(self, what: str) -> None:
        if self._finished:
            raise InvalidInput(f"run {self.id} has finished: {what} needs wandb.init() again")

    # -- artifacts --------------------------------------------------------------------
    def _artifact_arg(self, artifact_or_path: Any, name: str | None, type: str | None) -> Artifact:
        if isinstance(artifact_or_path, Artifact):
            return artifact_or_path
        if isinstance(artifact_or_path, (str, os.PathLike)):
            local = os.fspath(artifact_or_path)
            if "://" in local:
                art = Artifact(name or f"run-{self.id}-{os.path.basename(local.rstrip('/'))}", type or "unspecified")
                art.add_reference(local)
                return art
            if not os.path.exists(local):
                raise InvalidInput(f"cannot log {local!r}: no such file or folder")
            art = Artifact(name or f"run-{self.id}-{os.path.basename(os.path.abspath(local))}", type or "unspecified")
            if os.path.isdir(local):
                art.add_dir(local)
            else:
                art.add_file(local)
            return art
        raise InvalidInput(f"log an artfs.wandb.Artifact or a path, not {artifact_or_path.__class__.__name__}")

    def log_artifact(
        self,
        artifact_or_path: Any,
        name: str | None = None,
        type: str | None = None,
        aliases: list[str] | None = None,
        tags: list[str] | None = None,
    ) -> Artifact:
        """Logs the artifact as the next version of its name in this run's project (no new
        version when its content equals the latest) and returns it, now logged."""
        self._check_open("log_artifact")
        art = self._artifact_arg(artifact_or_path, name, type)
        return art._log(self.project, list(aliases or []), tags)

    def use_artifact(
        self,
        artifact_or_name: Any,
        type: str | None = None,
        aliases: list[str] | None = None,
        use_as: str | None = None,
    ) -> Artifact:
        """Marks a version as this run's input and returns it ('[[entity/]project/]name[:alias]',
        latest by default). A draft Artifact is logged first (once: same content, same version)."""
        from artfs.api import native

        self._check_open("use_artifact")
        if use_as is not None:
            ignored("use_artifact()", "use_as")
        if isinstance(artifact_or_name, Artifact):
            art = artifact_or_name
            if art.is_draft():
                art._log(self.project, list(aliases or []))
            native.use_artifact(art._art)  # records the use
        else:
            if not isinstance(artifact_or_name, str):
                raise InvalidInput(
                    f"use_artifact needs a name or an Artifact, not {artifact_or_name.__class__.__name__}"
                )
            n = parse_name(artifact_or_name, self.project)
            art = Artifact._wrap(native.use_artifact(n.spec, store=self._store))
            if aliases:
                art.aliases.extend(a for a in aliases if a not in art.aliases)
                art.save()
        if type is not None and art.type != type:
            raise InvalidInput(f"{art.name} has type {art.type!r}, not {type!r}")
        return art

    def _distributed(
        self, what: str, artifact_or_path: Any, name: str | None, type: str | None, distributed_id: str | None
    ) -> tuple[Artifact, str]:
        self._check_open(what)
        distributed_id = distributed_id or self.group
        if not distributed_id:
            raise InvalidInput(f"{what} needs distributed_id=, or a run started with wandb.init(group=...)")
        return self._artifact_arg(artifact_or_path, name, type), check_name(distributed_id, "distributed id")

    def upsert_artifact(
        self,
        artifact_or_path: Any,
        name: str | None = None,
        type: str | None = None,
        aliases: list[str] | None = None,
        distributed_id: str | None = None,
    ) -> Artifact:
        """Adds this writer's files to the version that every run with the same distributed_id
        (default: the run's group) builds together; `finish_artifact` commits it."""
        from artfs.api import distributed

        art, did = self._distributed("upsert_artifact", artifact_or_path, name, type, distributed_id)
        if aliases:  # each writer's aliases would be lost at finish: refused rather than dropped
            raise InvalidInput("upsert_artifact() takes no aliases in artfs: give them to finish_artifact()")
        distributed.upsert_artifact(
            art._art, self.project if art._art.project is None else None, did, store=self._store
        )
        return art

    def finish_artifact(
        self,
        artifact_or_path: Any,
        name: str | None = None,
        type: str | None = None,
        aliases: list[str] | None = None,
        distributed_id: str | None = None,
    ) -> Artifact:
        """Commits what every writer upserted (and this artifact's own files) as one new version."""
        from artfs.api import distributed

        art, did = self._distributed("finish_artifact", artifact_or_path, name, type, distributed_id)
        distributed.finish_artifact(
            art._art, self.project if art._art.project is None else None, did, aliases=aliases, store=self._store
        )
        art._save_tags()
        return art

    def logged_artifacts(self) -> list[Artifact]:
        return PublicRun(self._store, self._rec).logged_artifacts()

    def used_artifacts(self) -> list[Artifact]:
        return PublicRun(self._store, self._rec).used_artifacts()

    # -- the rest of W&B's run ---------------------------------------------------------------
    def log(self, data: dict, step: int | None = None, commit: bool | None = None, **_: Any) -> None:
        ignored("Run.log()", "metrics (artfs keeps artifacts, not metrics)")

    def finish(self, exit_code: int | None = None, quiet: bool | None = None) -> None:
        if self._finished:
            return
        self._finished = True
        self._rec.config = dict(self.config)
        native_runs.finish_run(self._store, self._rec)
        if common.active_run() is self:
            common.set_active_run(None)


def init(
    project: str | None = None,
    entity: str | None = None,
    job_type: str | None = None,
    group: str | None = None,
    name: str | None = None,
    config: Any = None,
    id: str | None = None,
    reinit: Any = None,
    resume: Any = None,
    **kwargs: Any,
) -> Run:
    """Starts a run (finishing this process's previous one): recorded in the store named by
    ARTFS_STORE, in `project` (default WANDB_PROJECT, else 'uncategorized')."""
    unknown = sorted(k for k, v in kwargs.items() if v is not None)
    if entity is not None:
        unknown.insert(0, "entity")
    if unknown:
        ignored("wandb.init()", *unknown)
    if config is not None and not isinstance(config, dict):
        config = dict(vars(config)) if hasattr(config, "__dict__") else dict(config)
    previous = common.active_run()
    if previous is not None:
        previous.finish()
    s = store()
    rec = native_runs.start_run(
        s,
        project or default_project(),
        id or os.environ.get("WANDB_RUN_ID"),
        job_type=job_type,
        group=group,
        name=name,
        config=config,
    )
    run = Run(s, rec)
    common.set_active_run(run)
    return run


def finish(exit_code: int | None = None, quiet: bool | None = None) -> None:
    run = common.active_run()
    if run is not None:
        run.finish(exit_code)


def _need_run(what: str) -> Run:
    run = common.active_run()
    if run is None:
        raise InvalidInput(f"call wandb.init() before wandb.{what}()")
    return run


def log_artifact(
    artifact_or_path: Any,
    name: str | None = None,
    type: str | None = None,
    aliases: list[str] | None = None,
    tags: list[str] | None = None,
) -> Artifact:
    return _need_run("log_artifact").log_artifact(artifact_or_path, name, type, aliases, tags)


def use_artifact(
    artifact_or_name: Any, type: str | None = None, aliases: list[str] | None = None, use_as: str | None = None
) -> Artifact:
    return _need_run("use_artifact").use_artifact(artifact_or_name, type, aliases, use_as)
