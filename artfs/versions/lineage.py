"""Lineage: which run logged each version, and which runs used it (W&B's logged_by / used_by).

A version record already names its creator run. Two small indexes make the
graph walkable both ways without scanning every record:
  lineage/runs/<run>/logged/<project>/<artifact>/v<N>   written after a commit
  lineage/runs/<run>/used/<project>/<artifact>/v<N>     written on each first use
  lineage/uses/<project>/<artifact>/v<N>/<run>          the same use, indexed by version
A run is ARTFS_RUN_ID, else the scheduler's job id (SLURM_JOB_ID), else host-pid.
Recording never fails the operation it describes: errors are logged and dropped.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field

from artfs.errors import ArtfsError, NotFound
from artfs.names import ArtifactName, parse_version, version_name
from artfs.store.registry import Registry, VersionRecord, creator_info

log = logging.getLogger(__name__)
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def safe_run(run: str) -> str:
    return _UNSAFE.sub("_", run).strip(".")[:128] or "unknown"


def current_run() -> tuple[str, dict]:
    info = creator_info()
    return safe_run(info["run"]), info


def _vpath(a: ArtifactName, n: int) -> str:
    return f"{a.project}/{a.name}/{version_name(n)}"


def record_logged(reg: Registry, rec: VersionRecord) -> None:
    run = safe_run(rec.creator.get("run", "unknown"))
    _put(reg, f"lineage/runs/{run}/logged/{_vpath(rec.artifact, rec.number)}", {"time": rec.created})


def record_use(reg: Registry, rec: VersionRecord, how: str) -> None:
    if rec.number < 0:
        return
    run, info = current_run()
    doc = {**info, "how": how, "time": time.time()}
    _put(reg, f"lineage/runs/{run}/used/{_vpath(rec.artifact, rec.number)}", doc)
    _put(reg, f"lineage/uses/{_vpath(rec.artifact, rec.number)}/{run}", doc)


def _put(reg: Registry, key: str, doc: dict) -> None:
    try:
        reg.store.put(key, json.dumps(doc).encode())
    except ArtfsError as e:
        log.warning("could not record lineage %s: %s", key, e)


def _versions_under(reg: Registry, prefix: str) -> list[tuple[ArtifactName, int]]:
    out = []
    for info in reg.store.list(prefix):
        parts = info.key[len(prefix) :].split("/")
        if len(parts) == 3 and (n := parse_version(parts[2])) is not None:
            out.append((ArtifactName(parts[0], parts[1]), n))
    return out


@dataclass
class Graph:
    versions: dict[str, VersionRecord | None] = field(default_factory=dict)  # "p/a:vN" -> record (None: deleted)
    runs: set[str] = field(default_factory=set)
    logged: set[tuple[str, str]] = field(default_factory=set)  # (run, version)
    used: set[tuple[str, str]] = field(default_factory=set)  # (version, run)


def walk(reg: Registry, start: VersionRecord, depth: int) -> Graph:
    g = Graph()

    def version(a: ArtifactName, n: int) -> str:
        name = f"{a}:{version_name(n)}"
        if name not in g.versions:
            try:
                g.versions[name] = reg.version(a, n)
            except NotFound:
                g.versions[name] = None
        return name

    up = [(start.artifact, start.number)]
    down = list(up)
    version(start.artifact, start.number)
    for _ in range(depth):
        next_up = []
        for a, n in up:
            rec = g.versions[version(a, n)]
            if rec is None or not rec.creator.get("run"):
                continue
            run = safe_run(rec.creator["run"])
            g.runs.add(run)
            g.logged.add((run, version(a, n)))
            for ua, un in _versions_under(reg, f"lineage/runs/{run}/used/"):
                g.used.add((version(ua, un), run))
                next_up.append((ua, un))
        next_down = []
        for a, n in down:
            prefix = f"lineage/uses/{_vpath(a, n)}/"
            for info in reg.store.list(prefix):
                run = info.key[len(prefix) :]
                g.runs.add(run)
                g.used.add((version(a, n), run))
                for la, ln in _versions_under(reg, f"lineage/runs/{run}/logged/"):
                    g.logged.add((run, version(la, ln)))
                    next_down.append((la, ln))
        up, down = next_up, next_down
    return g


def as_text(g: Graph, start: str) -> str:
    lines = [start]
    for run, v in sorted(g.logged):
        lines.append(f"  run {run} logged {v}")
    for v, run in sorted(g.used):
        lines.append(f"  run {run} used {v}")
    deleted = sorted(v for v, r in g.versions.items() if r is None)
    if deleted:
        lines.append("  (deleted: " + ", ".join(deleted) + ")")
    return "\n".join(lines)


def as_dot(g: Graph, start: str) -> str:
    def q(s: str) -> str:
        return json.dumps(s)

    lines = ["digraph lineage {", "  rankdir=LR;"]
    for v, rec in sorted(g.versions.items(), key=lambda kv: kv[0]):
        style = ", style=bold" if v == start else ", style=dashed" if rec is None else ""
        lines.append(f"  {q(v)} [shape=box{style}];")
    for run in sorted(g.runs):
        lines.append(f"  {q('run ' + run)} [shape=ellipse];")
    for run, v in sorted(g.logged):
        lines.append(f"  {q('run ' + run)} -> {q(v)} [label=logged];")
    for v, run in sorted(g.used):
        lines.append(f"  {q(v)} -> {q('run ' + run)} [label=used];")
    lines.append("}")
    return "\n".join(lines)
