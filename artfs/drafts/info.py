"""What a draft folder holds: `draft.json` (DraftInfo) and the schema of `tree.sqlite`."""

from __future__ import annotations

from dataclasses import dataclass

from artfs.names import ArtifactName

DRAFTS_FOLDER = "drafts"

SCHEMA = """
CREATE TABLE IF NOT EXISTS node (
    ino INTEGER PRIMARY KEY AUTOINCREMENT,
    parent INTEGER NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    mode INTEGER NOT NULL,
    size INTEGER NOT NULL DEFAULT 0,
    mtime_ns INTEGER NOT NULL,
    origin TEXT,
    ctime_ns INTEGER NOT NULL DEFAULT 0,
    atime_ns INTEGER NOT NULL DEFAULT 0,
    UNIQUE (parent, name)
);
CREATE INDEX IF NOT EXISTS node_kind ON node(parent, kind);
CREATE TABLE IF NOT EXISTS journal (ino INTEGER PRIMARY KEY, mtime_ns INTEGER NOT NULL, data BLOB);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS removed (path TEXT PRIMARY KEY, dir INTEGER NOT NULL);
"""
# Paths removed (unlinked, or moved away: a folder with all below it) from a draft of a sharded
# version, so a commit rewrites only the shards that changed (see versions/reshard.py).
ADDED_REMOVED = "CREATE TABLE IF NOT EXISTS removed (path TEXT PRIMARY KEY, dir INTEGER NOT NULL)"
# Columns added since drafts were first made (ctime_ns/atime_ns 0: the mtime), added to an older
# draft's table when it is opened.
ADDED_COLUMNS = {"ctime_ns": "INTEGER NOT NULL DEFAULT 0", "atime_ns": "INTEGER NOT NULL DEFAULT 0"}
# Counting a folder's subfolders (its link count) must not read all its files.
ADDED_INDEX = "CREATE INDEX IF NOT EXISTS node_kind ON node(parent, kind)"


@dataclass
class DraftInfo:
    project: str
    artifact: str
    name: str
    base: int | None  # version number, None for a draft of a new artifact
    base_manifest: str | None
    type: str | None
    created: float
    hold: str | None = None  # the store's hold on the base manifest (lifecycle.add_hold)

    @property
    def artifact_name(self) -> ArtifactName:
        return ArtifactName(self.project, self.artifact)

    def __str__(self) -> str:
        return f"{self.project}/{self.artifact}/drafts/{self.name}"
