"""What each page of `artfs ui` shows, as plain data (the templates only lay it out).

Blocking: every function reads the store, and runs in a worker thread of the
server. An artifact's version page reads only the records it shows (the
version keys are listed, one page of records read), so an artifact with
thousands of versions costs one listing and a page of GETs.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from artfs.errors import NotFound
from artfs.names import LATEST, ArtifactName, is_valid_name, parse_version
from artfs.store.manifest import Entry
from artfs.store.shards import AnyManifest
from artfs.store.registry import Registry, VersionRecord
from artfs.versions import lineage

PAGE = 50  # versions per page
FILES_PAGE = 200  # entries of a folder per page
DIFF_SHOWN = 500  # paths listed per kind of change (the counts are always whole)


def page_of(total: int, page: int, per: int) -> tuple[int, int, int]:
    """(page clamped to 1..pages, first index, pages)."""
    pages = max(1, -(-total // per))
    page = min(max(1, page), pages)
    return page, (page - 1) * per, pages


def version_numbers(reg: Registry, a: ArtifactName) -> list[int]:
    """Numbers of the version records of `a`, deleted ones included, without reading them."""
    prefix = f"artifacts/{a.project}/{a.name}/versions/"  # docs/store-format.md
    out = []
    for info in reg.store.list(prefix):
        name = info.key[len(prefix) :]
        if name.endswith(".json") and (n := parse_version(name.removesuffix(".json"))) is not None:
            out.append(n)
    return sorted(out)


@dataclass
class ArtifactRow:
    name: str
    type: str | None


@dataclass
class ArtifactsPage:
    rows: list[ArtifactRow]
    page: int
    pages: int
    total: int


def artifacts(reg: Registry, project: str, page: int = 1) -> ArtifactsPage:
    """One page of a project's artifacts, by name; only that page's types are read."""
    names = sorted(reg.artifacts(project))
    if not names and project not in reg.projects():
        raise NotFound(f"project {project} does not exist")
    page, first, pages = page_of(len(names), page, PAGE)
    rows = [ArtifactRow(a, reg.artifact_type(ArtifactName(project, a))) for a in names[first : first + PAGE]]
    return ArtifactsPage(rows, page, pages, len(names))


@dataclass
class VersionsPage:
    artifact: ArtifactName
    type: str | None
    rows: list[tuple[VersionRecord, list[str]]]  # newest first, with their aliases
    page: int
    pages: int
    total: int
    numbers: list[int] = field(default_factory=list)  # every live-or-deleted number (the diff form)


def versions_page(reg: Registry, a: ArtifactName, page: int) -> VersionsPage:
    type_ = reg.artifact_type(a)
    if type_ is None:
        raise NotFound(f"artifact {a} does not exist")
    numbers = version_numbers(reg, a)
    newest_first = numbers[::-1]
    page, first, pages = page_of(len(newest_first), page, PAGE)
    aliases = reg.aliases(a)
    rows = []
    for n in newest_first[first : first + PAGE]:
        try:
            rec = reg.version(a, n)
        except NotFound:  # deleted: not shown
            continue
        rows.append((rec, sorted(k for k, v in aliases.items() if v == n)))
    latest = _latest(reg, a, newest_first)
    for rec, names in rows:
        if rec.number == latest:
            names.insert(0, LATEST)
    return VersionsPage(a, type_, rows, page, pages, len(numbers), newest_first[:1000])


def _latest(reg: Registry, a: ArtifactName, newest_first: list[int]) -> int | None:
    for n in newest_first:
        try:
            reg.version(a, n)
            return n
        except NotFound:
            continue
    return None


def resolve(reg: Registry, a: ArtifactName, selector: str) -> VersionRecord:
    n = parse_version(selector)
    if n is not None:
        return reg.version(a, n)
    if selector == LATEST:  # the newest live number, from the keys: not every record read
        n = _latest(reg, a, version_numbers(reg, a)[::-1])
        if n is None:
            raise NotFound(f"{a} has no versions")
        return reg.version(a, n)
    aliases = reg.aliases(a)
    if selector not in aliases:
        raise NotFound(f"{a} has no version or alias {selector!r}")
    return reg.version(a, aliases[selector])


@dataclass
class FileRow:
    name: str
    path: str
    is_dir: bool
    size: int | None = None
    digest: str = ""
    ref: str = ""


@dataclass
class VersionPage:
    rec: VersionRecord
    aliases: list[str]
    metadata_json: str
    folder: str
    crumbs: list[tuple[str, str]]  # (name, folder path) from the version root down
    rows: list[FileRow]
    page: int
    pages: int
    total_size: int
    references: int


def version_page(reg: Registry, rec: VersionRecord, manifest: AnyManifest, folder: str, page: int) -> VersionPage:
    folder = folder.strip("/")
    if folder and not manifest.is_dir(folder):
        raise NotFound(f"{rec} has no folder {folder!r}")
    aliases = [k for k, v in sorted(reg.aliases(rec.artifact).items()) if v == rec.number]
    if _latest(reg, rec.artifact, version_numbers(reg, rec.artifact)[::-1]) == rec.number:  # keys, not records
        aliases.insert(0, LATEST)
    children = manifest.children(folder)
    total = sum(1 for _ in manifest.children(folder))
    page, first, pages = page_of(total, page, FILES_PAGE)
    rows = []
    for name, index in itertools.islice(children, first, first + FILES_PAGE):
        path = f"{folder}/{name}" if folder else name
        if index is None:
            rows.append(FileRow(name, path, True))
        else:
            e = manifest.entry(index)
            rows.append(
                FileRow(
                    name,
                    path,
                    False,
                    e.size if e.size >= 0 else None,
                    e.hexdigest[:16],
                    e.ref.get("uri", "") if e.ref else "",
                )
            )
    crumbs, at = [], []
    for part in folder.split("/") if folder else []:
        at.append(part)
        crumbs.append((part, "/".join(at)))
    return VersionPage(
        rec,
        aliases,
        json.dumps(rec.metadata, indent=2, sort_keys=True),
        folder,
        crumbs,
        rows,
        page,
        pages,
        manifest.total_size,
        manifest.reference_count,
    )


@dataclass
class Change:
    path: str
    old: Entry | None
    new: Entry | None


@dataclass
class Diff:
    old: VersionRecord
    new: VersionRecord
    added: list[Change]
    removed: list[Change]
    changed: list[Change]
    counts: dict[str, int]  # added, removed, changed, same: whole counts (the lists are capped)
    fields: list[tuple[str, str, str]]  # (what, old, new) for type and description
    metadata: list[tuple[str, str, str]]  # (key, old JSON or '', new JSON or '')


def diff(old: VersionRecord, new: VersionRecord, a: AnyManifest, b: AnyManifest) -> Diff:
    """What changed from `old` to `new`: files by path (a merge of two sorted lists), then metadata."""
    out = Diff(old, new, [], [], [], {"added": 0, "removed": 0, "changed": 0, "same": 0}, [], [])
    i = j = 0
    while i < len(a) or j < len(b):
        pa = a.paths[i] if i < len(a) else None
        pb = b.paths[j] if j < len(b) else None
        if pa is not None and (pb is None or pa < pb):
            _note(out, "removed", out.removed, Change(pa, a.entry(i), None))
            i += 1
        elif pb is not None and (pa is None or pb < pa):
            _note(out, "added", out.added, Change(pb, None, b.entry(j)))
            j += 1
        else:
            ea, eb = a.entry(i), b.entry(j)
            if ea.same_content(eb):
                out.counts["same"] += 1
            else:
                _note(out, "changed", out.changed, Change(ea.path, ea, eb))
            i += 1
            j += 1
    for what, x, y in (("type", old.type, new.type), ("description", old.description, new.description)):
        if x != y:
            out.fields.append((what, x, y))
    for key in sorted(set(old.metadata) | set(new.metadata)):
        x, y = old.metadata.get(key, _ABSENT), new.metadata.get(key, _ABSENT)
        if x != y:
            out.metadata.append((key, _json(x), _json(y)))
    return out


_ABSENT = object()


def _json(value: Any) -> str:
    return "" if value is _ABSENT else json.dumps(value, sort_keys=True)


def _note(d: Diff, kind: str, into: list[Change], change: Change) -> None:
    d.counts[kind] += 1
    if len(into) < DIFF_SHOWN:
        into.append(change)


@dataclass
class RunPage:
    run: str
    logged: list[str]  # "p/a:vN"
    used: list[str]


def run_page(reg: Registry, run: str) -> RunPage:
    run = lineage.safe_run(run)

    def versions(kind: str) -> list[str]:
        prefix = f"lineage/runs/{run}/{kind}/"
        out = []
        for info in reg.store.list(prefix):
            parts = info.key[len(prefix) :].split("/")
            if len(parts) == 3 and all(is_valid_name(p) for p in parts[:2]) and parse_version(parts[2]) is not None:
                out.append(f"{parts[0]}/{parts[1]}:{parts[2]}")
        return out

    logged, used = versions("logged"), versions("used")
    if not logged and not used:
        raise NotFound(f"no run {run} in this store's lineage")
    return RunPage(run, logged, used)


def version_link(name: str) -> str:
    """'p/a:vN' -> the URL of its page."""
    artifact, _, v = name.partition(":")
    return f"/p/{artifact}/{v}"
