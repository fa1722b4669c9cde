"""Runs as records in the store: which job made and which jobs used which versions.

    runs/<id>.json   {"format": 1, "id", "project", "job_type", "group", "name", "config",
                      "started", "finished", "host", "user", "command"}

A run is what W&B calls one: a process (or a group of them) doing one step of a
pipeline. While a run is active in a process, its id is ARTFS_RUN_ID, the id
lineage already records as the creator of every version logged and as the user of
every version used, so `logged_by`/`used_by` and "what did this run log/use" are
answered from the store, across hosts, for runs started here or anywhere else.
"""

from __future__ import annotations

import json
import os
import secrets
import string
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from artfs.errors import CorruptRecord, InvalidInput, NotFound
from artfs.names import ArtifactName, check_name, parse_version, version_name
from artfs.store.registry import VersionRecord, creator_info
from artfs.versions.lineage import safe_run

if TYPE_CHECKING:
    from artfs.api.native import Store

RUN_FORMAT = 1
RUN_ENV = "ARTFS_RUN_ID"
_ID_CHARS = string.ascii_lowercase + string.digits


def run_key(run_id: str) -> str:
    return f"runs/{safe_run(run_id)}.json"


@dataclass
class RunRecord:
    id: str
    project: str
    job_type: str | None = None
    group: str | None = None
    name: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    started: float = 0.0
    finished: float | None = None
    host: str = ""
    user: str = ""
    command: str = ""

    def to_json(self) -> bytes:
        return json.dumps({"format": RUN_FORMAT, **asdict(self)}, sort_keys=True, default=str).encode()

    @classmethod
    def from_json(cls, data: bytes, key: str) -> RunRecord:
        try:
            doc = json.loads(data)
            if not isinstance(doc, dict) or doc.pop("format", None) != RUN_FORMAT:
                raise ValueError("unknown format")
            return cls(**doc)
        except (ValueError, TypeError) as e:
            raise CorruptRecord(f"corrupt run record {key}: {e}") from None


def new_run_id() -> str:
    """Eight lowercase letters and digits, as W&B's own run ids."""
    return "".join(secrets.choice(_ID_CHARS) for _ in range(8))


def start_run(
    store: Store,
    project: str,
    run_id: str | None = None,
    *,
    job_type: str | None = None,
    group: str | None = None,
    name: str | None = None,
    config: dict | None = None,
) -> RunRecord:
    """Records a run as started and makes it this process's run (ARTFS_RUN_ID) until `finish_run`.

    Starting an id that exists resumes it: its record keeps its first start and gets the new fields.
    """
    check_name(project, "project")
    run_id = check_name(run_id, "run id") if run_id else new_run_id()
    try:
        json.dumps(config or {})
    except (TypeError, ValueError) as e:
        raise InvalidInput(f"run config is not JSON-serializable: {e}") from None
    info = creator_info()
    rec = RunRecord(
        id=run_id,
        project=project,
        job_type=job_type,
        group=group,
        name=name or run_id,
        config=dict(config or {}),
        started=time.time(),
        host=info["host"],
        user=info["user"],
        command=info["command"],
    )
    try:
        old = get_run(store, run_id)
        rec.started = old.started
        rec.config = {**old.config, **rec.config}
    except NotFound:
        pass
    store.objects.put(run_key(run_id), rec.to_json())
    os.environ[RUN_ENV] = run_id
    return rec


def update_run(store: Store, rec: RunRecord) -> None:
    """Writes the run's record again (its config changed)."""
    store.objects.put(run_key(rec.id), rec.to_json())


def finish_run(store: Store, rec: RunRecord) -> RunRecord:
    """Records the run's end; the process has no run any more."""
    rec.finished = time.time()
    store.objects.put(run_key(rec.id), rec.to_json())
    if os.environ.get(RUN_ENV) == rec.id:
        del os.environ[RUN_ENV]
    return rec


def get_run(store: Store, run_id: str) -> RunRecord:
    key = run_key(run_id)
    try:
        return RunRecord.from_json(store.objects.get(key), key)
    except NotFound:
        raise NotFound(f"run {run_id!r} does not exist") from None


def runs(store: Store, project: str | None = None) -> list[RunRecord]:
    """Every run recorded in the store (of one project), oldest first."""
    out = []
    for info in store.objects.list("runs/"):
        if not info.key.endswith(".json"):
            continue
        try:
            rec = RunRecord.from_json(store.objects.get(info.key), info.key)
        except (NotFound, CorruptRecord):
            continue
        if project is None or rec.project == project:
            out.append(rec)
    return sorted(out, key=lambda r: r.started)


def _versions_under(store: Store, prefix: str) -> list[VersionRecord]:
    out = []
    for info in store.objects.list(prefix):
        parts = info.key[len(prefix) :].split("/")
        if len(parts) == 3 and (n := parse_version(parts[2])) is not None:
            try:
                out.append(store.registry.version(ArtifactName(parts[0], parts[1]), n))
            except NotFound:
                continue  # deleted since
    return sorted(out, key=lambda r: r.created)


def logged_versions(store: Store, run_id: str) -> list[VersionRecord]:
    """The versions `run_id` logged (that still exist), oldest first."""
    return _versions_under(store, f"lineage/runs/{safe_run(run_id)}/logged/")


def used_versions(store: Store, run_id: str) -> list[VersionRecord]:
    """The versions `run_id` used (that still exist), oldest first."""
    return _versions_under(store, f"lineage/runs/{safe_run(run_id)}/used/")


def users_of(store: Store, rec: VersionRecord) -> list[str]:
    """Ids of the runs that used version `rec`."""
    prefix = f"lineage/uses/{rec.artifact.project}/{rec.artifact.name}/{version_name(rec.number)}/"
    return sorted(info.key[len(prefix) :] for info in store.objects.list(prefix))


def creator_of(rec: VersionRecord) -> str | None:
    """Id of the run that logged version `rec`."""
    run = rec.creator.get("run")
    return safe_run(run) if run else None
