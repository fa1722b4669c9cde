"""Every draft on this host: made, opened, listed, discarded."""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import asdict

from artfs.drafts.draft import Draft
from artfs.drafts.files import Reserve, boot_id, remove_file
from artfs.drafts.info import DRAFTS_FOLDER, SCHEMA, DraftInfo
from artfs.drafts.namespace import DIR, ROOT
from artfs.errors import FsError, InvalidInput, NotFound
from artfs.names import ArtifactName, check_name, is_valid_name
from artfs.store.shards import AnyManifest


class DraftStore:
    """Every draft on this host, under CACHE/drafts/<project>/<artifact>/<draft>/.

    A project or artifact folder with no version yet ("pending", made by mkdir)
    is just its folder here.
    """

    def __init__(self, cache_dir: str, durable: bool = False):
        """`durable`: sync on close (a closed file survives a host crash); without it, as
        on ext4, a closed file survives the daemon dying, and a host crash once fsynced."""
        self.durable = durable
        self.root = os.path.join(cache_dir, DRAFTS_FOLDER)
        os.makedirs(self.root, exist_ok=True)
        self.reserve = Reserve(self.root)
        for n in _listdir(self.root):
            if n.startswith(".discarded-"):  # a removal that a crash cut short
                shutil.rmtree(os.path.join(self.root, n), ignore_errors=True)
            elif n.startswith(".reserve."):  # the reserve's temp file, left by a crash
                remove_file(os.path.join(self.root, n))

    def _dir(self, a: ArtifactName, name: str | None = None) -> str:
        parts = [self.root, a.project, a.name] + ([name] if name else [])
        return os.path.join(*parts)

    def pending_projects(self) -> list[str]:
        return sorted(p for p in _listdir(self.root) if is_valid_name(p))

    def pending_artifacts(self, project: str) -> list[str]:
        return sorted(a for a in _listdir(os.path.join(self.root, project)) if is_valid_name(a))

    def add_pending(self, project: str, artifact: str | None = None) -> None:
        check_name(project, "project")
        if artifact is not None:
            check_name(artifact, "artifact name")
        os.makedirs(os.path.join(self.root, project, *([artifact] if artifact else [])), exist_ok=True)

    def remove_pending(self, project: str, artifact: str | None = None) -> bool:
        path = os.path.join(self.root, project, *([artifact] if artifact else []))
        try:
            os.rmdir(path)
            return True
        except OSError:
            return False

    def names(self, a: ArtifactName) -> list[str]:
        d = self._dir(a)
        return sorted(n for n in _listdir(d) if is_valid_name(n) and os.path.exists(os.path.join(d, n, "draft.json")))

    def exists(self, a: ArtifactName, name: str) -> bool:
        return os.path.exists(os.path.join(self._dir(a, name), "draft.json"))

    def create(
        self,
        a: ArtifactName,
        name: str,
        base: int | None,
        base_manifest: str | None,
        type_: str | None,
        hold: str | None = None,
    ) -> DraftInfo:
        """Atomically makes an empty draft folder (a temp folder renamed into place)."""
        check_name(name, "draft name")
        final = self._dir(a, name)
        if os.path.exists(final):
            raise FsError(errno.EEXIST, f"draft {a}/drafts/{name} exists already")
        os.makedirs(self._dir(a), exist_ok=True)
        tmp = final + f".creating-{os.getpid()}"
        os.makedirs(os.path.join(tmp, "data"), exist_ok=True)
        info = DraftInfo(a.project, a.name, name, base, base_manifest, type_, time.time(), hold)
        with open(os.path.join(tmp, "draft.json"), "w") as f:
            json.dump(asdict(info), f)
            f.flush()
            os.fsync(f.fileno())
        db = sqlite3.connect(os.path.join(tmp, "tree.sqlite"), isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(SCHEMA)
        db.execute(
            "INSERT INTO node(ino, parent, name, kind, mode, mtime_ns, origin) VALUES (?,?,?,?,?,?,?)",
            (ROOT, 0, "", DIR, 0o755, time.time_ns(), "" if base_manifest else None),
        )
        db.execute("INSERT INTO meta(key, value) VALUES ('boot', ?)", (boot_id(),))
        db.close()
        try:
            os.rename(tmp, final)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise FsError(errno.EEXIST, f"draft {a}/drafts/{name} exists already") from None
        return info

    def open(
        self, a: ArtifactName, name: str, load_manifest: Callable[[str], AnyManifest], cache_namespace: bool = False
    ) -> Draft:
        path = self._dir(a, name)
        if not self.exists(a, name):
            raise NotFound(f"no draft {a}/drafts/{name}")
        with open(os.path.join(path, "draft.json")) as f:
            try:
                base_digest = json.load(f).get("base_manifest")
            except ValueError:
                raise InvalidInput(f"draft {path} is damaged (draft.json)") from None
        d = Draft(path, load_manifest(base_digest) if base_digest else None, self.durable, cache_namespace)
        d.reserve = self.reserve
        return d

    def info(self, a: ArtifactName, name: str) -> DraftInfo | None:
        try:
            with open(os.path.join(self._dir(a, name), "draft.json")) as f:
                return DraftInfo(**json.load(f))
        except (OSError, ValueError, TypeError):
            return None

    def committed_as(self, a: ArtifactName, name: str) -> str | None:
        """The version a draft of this name last became (see Draft.note_committed)."""
        try:
            with open(os.path.join(self._dir(a), f".committed-{name}")) as f:
                return f.read().strip() or None
        except OSError:
            return None

    def discard(
        self, a: ArtifactName, name: str, then: Callable[[], None] | None = None, background: bool = False
    ) -> None:
        """Removes a draft: renamed away first, so a crash never leaves half a draft.
        `then` runs as soon as the draft is gone, before its files are deleted (slow; in a
        thread of its own if `background`: a crash leaves the renamed folder, removed at
        the next start)."""
        path = self._dir(a, name)
        trash = os.path.join(self.root, f".discarded-{a.project}-{a.name}-{name}-{time.time_ns()}")
        try:
            os.rename(path, trash)
        except FileNotFoundError:
            return
        try:
            if then is not None:
                then()
        finally:
            if background:
                threading.Thread(target=shutil.rmtree, args=(trash, True), name="artfs-discard", daemon=True).start()
            else:
                shutil.rmtree(trash, ignore_errors=True)


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return []
