"""Tags of versions: W&B keeps them beside aliases; artfs keeps them in one small record
per version, `wandb/tags/<project>/<name>/vN.json` (outside what gc sweeps)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from artfs.errors import NotFound

if TYPE_CHECKING:
    from artfs.api import native
    from artfs.api.native import Store


def tags_key(art: native.Artifact) -> str:
    return f"wandb/tags/{art.project}/{art.name}/{art.version}.json"


def read_tags(store: Store, art: native.Artifact) -> list[str]:
    try:
        doc = json.loads(store.objects.get(tags_key(art)))
        return [str(t) for t in doc.get("tags", [])]
    except (NotFound, ValueError, AttributeError):
        return []


def write_tags(store: Store, art: native.Artifact, tags: list[str]) -> None:
    store.objects.put(tags_key(art), json.dumps({"tags": tags}).encode())
