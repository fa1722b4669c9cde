"""Distributed versions: many writers, on any hosts, building one version together.

Each writer's upsert stores its files and a *part*:
  parts/<project>/<artifact>/<id>/part-<uuid>.json    {"manifest": <hex>, "host", "time", …}
`finish` claims the id with create-if-absent on
  parts/<project>/<artifact>/<id>/finish.json         {"state": "claiming" | "finishing" | "finished", …}
*then* lists the parts and writes that list into the claim (compare-and-swap,
state "finishing"), merges the parts (a path written with different content by
two parts is a conflict, refused unless overwrite), commits the union as the
artifact's next version, and marks the claim finished. An upsert refuses to
start once the claim exists, and checks again after writing its part: no claim
yet means the finish's listing (made after its claim) will see the part; a claim
with a parts list decides by membership (a part that missed the finish is
withdrawn and reported, never silently lost); a claim still "claiming" is waited
for. A finish that crashed is run again once its claim is older than
FINISH_STALE: it reuses its claim and recognises a version it already made; a
younger unfinished claim belongs to a finish still running elsewhere.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Iterable
from dataclasses import dataclass

from artfs.errors import Conflict, CorruptRecord, InvalidInput, NotFound, PreconditionFailed
from artfs.versions.lifecycle import PARTS, _marker, commit_guard
from artfs.store.manifest import Entry, Manifest
from artfs.names import ArtifactName, check_name
from artfs.versions.publish import FileSource
from artfs.store.registry import manifest_key

FINISH_STALE = 600.0  # an unfinished claim older than this belongs to a finish that died
CLAIM_WAIT = 60.0  # how long an upsert waits for a finish to list its parts


def _prefix(a: ArtifactName, distributed_id: str) -> str:
    return f"{PARTS}{a.project}/{a.name}/{check_name(distributed_id, 'distributed id')}/"


@dataclass
class Merged:
    manifest: Manifest
    conflicts: dict[str, int]  # path -> how many different contents were written
    parts: list[str]


class Distributed:
    def __init__(self, store):
        self.store = store
        self.objects = store.objects

    # -- reading -------------------------------------------------------------------
    def pending_ids(self, a: ArtifactName) -> list[str]:
        ids = self.objects.list_prefixes(f"{PARTS}{a.project}/{a.name}/")
        return [i for i in ids if self._claim(a, i) is None]

    def _claim(self, a: ArtifactName, distributed_id: str) -> tuple[dict, str] | None:
        key = _prefix(a, distributed_id) + "finish.json"
        try:
            data, etag = self.objects.get_with_etag(key)
        except NotFound:
            return None
        try:
            return json.loads(data), etag
        except ValueError:
            raise CorruptRecord(f"corrupt record {key}") from None

    def _part_keys(self, a: ArtifactName, distributed_id: str) -> list[str]:
        return [
            i.key for i in self.objects.list(_prefix(a, distributed_id)) if i.key.rsplit("/", 1)[-1].startswith("part-")
        ]

    def _parts(self, a: ArtifactName, distributed_id: str) -> list[tuple[str, dict]]:
        out = []
        for info in self.objects.list(_prefix(a, distributed_id)):
            if info.key.rsplit("/", 1)[-1].startswith("part-"):
                try:
                    out.append((info.key, json.loads(self.objects.get(info.key))))
                except (NotFound, ValueError):
                    continue
        return sorted(out, key=lambda kv: (kv[1].get("time", 0), kv[0]))

    def merged(self, a: ArtifactName, distributed_id: str, only: list[str] | None = None) -> Merged:
        """The union of the parts (later parts win a conflicting path)."""
        parts = [(k, d) for k, d in self._parts(a, distributed_id) if only is None or k in only]
        by_path: dict[str, Entry] = {}
        conflicts: dict[str, int] = {}
        for _, doc in parts:
            for e in self.store.registry.manifest_by_digest(doc["manifest"]):
                old = by_path.get(e.path)
                if old is not None and not old.same_content(e):
                    conflicts[e.path] = conflicts.get(e.path, 1) + 1
                by_path[e.path] = e
        return Merged(Manifest.from_entries(list(by_path.values())), conflicts, [k for k, _ in parts])

    # -- writing ---------------------------------------------------------------------
    def upsert(
        self,
        a: ArtifactName,
        type_: str | None,
        distributed_id: str,
        files: list[FileSource],
        carried: Iterable[Entry] = (),
        progress=None,
    ) -> str:
        prefix = _prefix(a, distributed_id)
        files, carried = list(files), list(carried)
        if not files and not carried:
            raise InvalidInput("nothing to upsert: no files")
        with commit_guard(self.objects):
            self._refuse_if_claimed(a, distributed_id)
            self.store.registry.ensure_artifact(a, type_)
            manifest, encoded, _ = self.store.store_content(files, list(carried), None, progress)
            from artfs.digest import digest_bytes

            hexdigest = digest_bytes(encoded).hex()
            self.objects.put(manifest_key(hexdigest), encoded)
            key = f"{prefix}part-{uuid.uuid4().hex}.json"
            self.objects.put(key, _marker(manifest=hexdigest, files=len(manifest)))
            claim = self._claim(a, distributed_id)
            deadline = time.monotonic() + CLAIM_WAIT
            while claim is not None and claim[0].get("parts") is None and time.monotonic() < deadline:
                time.sleep(0.2)  # a finish has claimed the id but not yet listed the parts
                claim = self._claim(a, distributed_id)
            if claim is not None and key not in (claim[0].get("parts") or []):
                self.objects.delete(key)
                raise Conflict(
                    f"{a} distributed version {distributed_id!r} was finished while this upsert ran; "
                    "its files are not in it"
                )
        return key

    def _refuse_if_claimed(self, a: ArtifactName, distributed_id: str) -> None:
        claim = self._claim(a, distributed_id)
        if claim is not None:
            doc = claim[0]
            if doc.get("state") != "finished":
                raise Conflict(
                    f"{a} distributed version {distributed_id!r} is being finished; "
                    "its files can no longer change (use a new --distributed-id)"
                )
            raise Conflict(
                f"{a} distributed version {distributed_id!r} is already finished as v{doc['version']}; "
                "use a new --distributed-id"
            )

    def finish(
        self,
        a: ArtifactName,
        distributed_id: str,
        *,
        type_: str | None = None,
        aliases=(),
        description: str | None = None,
        metadata: dict | None = None,
        overwrite: bool = False,
    ):
        prefix = _prefix(a, distributed_id)
        key = prefix + "finish.json"
        claim = self._claim(a, distributed_id)
        if claim is not None and claim[0].get("state") == "finished":
            raise Conflict(f"{a} distributed version {distributed_id!r} is already finished as v{claim[0]['version']}")
        busy = Conflict(f"{a} distributed version {distributed_id!r} is being finished by someone else")
        if claim is None:
            if not self._part_keys(a, distributed_id):
                raise NotFound(f"no upserts for {a} with distributed id {distributed_id!r}")
            doc: dict[str, Any] = {"state": "claiming", "parts": None, "time": time.time()}
            try:
                etag = self.objects.put(key, json.dumps(doc).encode(), if_none_match=True)
            except PreconditionFailed:
                raise busy from None
        else:
            doc, etag = claim  # a finish that crashed, or one still running elsewhere
            info = self.objects.head(key)
            if info is not None and time.time() - info.mtime < FINISH_STALE:
                raise Conflict(
                    f"{busy}; if that finish died, run it again in "
                    f"{int(FINISH_STALE - (time.time() - info.mtime)) + 1} s"
                )
        if doc.get("parts") is None:
            # Listed only now that the claim exists: an upsert that saw no claim wrote its part before it.
            doc = {**doc, "state": "finishing", "parts": self._part_keys(a, distributed_id)}
            try:
                etag = self.objects.put(key, json.dumps(doc).encode(), if_match=etag)
            except PreconditionFailed:
                raise busy from None
        merged = self.merged(a, distributed_id, doc["parts"])
        unreadable = [k for k in doc["parts"] if k not in merged.parts and self.objects.exists(k)]
        if unreadable:  # withdrawn parts are gone; one still there but unreadable would be lost
            self.objects.delete(key)
            raise CorruptRecord(f"corrupt part {unreadable[0]}: nothing was committed")
        if merged.conflicts and not overwrite:
            self.objects.delete(key)  # release the claim so the user can retry with --overwrite
            paths = ", ".join(sorted(merged.conflicts)[:10]) + (" …" if len(merged.conflicts) > 10 else "")
            raise Conflict(
                f"writers disagree on {len(merged.conflicts)} path(s): {paths} "
                "(finish with --overwrite to keep the last writer's)"
            )
        reg = self.store.registry
        latest = reg.latest(a)
        earlier = [r for r in reg.versions(a) if r.created >= doc["time"]]
        result = self.store.publish(
            a,
            type_ or reg.artifact_type(a),
            [],
            list(merged.manifest),
            base=latest,
            same_as=earlier,
            description=description,
            metadata=metadata,
            aliases=aliases,
        )
        done = {**doc, "state": "finished", "version": result.version.number}
        self.objects.put(key, json.dumps(done).encode(), if_match=etag)
        for part in doc["parts"]:
            self.objects.delete(part)  # the version now keeps their content alive
        return result
