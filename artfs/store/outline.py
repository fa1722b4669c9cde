"""The folders of a sharded manifest, kept in its root so listings read few shards.

Shards are runs of the sorted keys, so the sub-folders of a folder with many of
them (a dataset's 10,000 class folders) spread over nearly every shard, and a
listing that had to read them all would cost a fetch per shard. The outline
holds, in the root, every recorded folder (mode and time, as the shards hold
them too: older readers use those) and, per shard, the folders its files are
directly in unless there are very many (`PARENTS_MAX`). A listing then reads only the
shards that hold files directly in the folder listed; attributes and names of
sub-folders come from the root.

It is optional: a root without one (older writers, more than `ROOT_FOLDERS`
folders and parents, a patch of such a root) is read as before.
"""

from __future__ import annotations

import bisect
import posixpath
from collections.abc import Iterable, Iterator

from artfs.errors import CorruptRecord
from artfs.store.manifest import Folder, Manifest

# Folders a shard's files may be directly in for the outline to name them (more: folders of a
# few files each, where reading the shard costs no more than naming them).
PARENTS_MAX = 1024
# Recorded folders plus parents named: more, and the root has no outline (it stays ~1 MiB or less).
ROOT_FOLDERS = 1 << 16

Parents = tuple[str, ...] | None  # sorted folder paths ('' = the root); None: too many to name


class Outline:
    def __init__(self, recorded: Manifest, parents: list[Parents]):
        self.recorded = recorded  # a manifest of folders only
        self.parents = parents  # one per shard
        self.complete = all(p is not None for p in parents)
        self._tree: Manifest | None = None

    # -- queries ----------------------------------------------------------------------
    def folder(self, path: str) -> Folder | None:
        return self.recorded.folder(path)

    def holds_files_in(self, k: int, path: str) -> bool | None:
        """Whether shard `k` has files directly in `path` (None: not known)."""
        p = self.parents[k]
        return None if p is None else _contains(p, path)

    def names_in(self, k: int, path: str) -> Iterator[str]:
        """Sub-folders of `path` that shard `k`'s files are in (its parents must be known)."""
        prefix = f"{path}/" if path else ""
        for p in self.parents[k] or ():
            if p.startswith(prefix) and p != path:
                yield p[len(prefix) :].split("/", 1)[0]

    def is_dir(self, path: str) -> bool | None:
        """Whether `path` is a folder of the version (None: not known without shards)."""
        if self.recorded.folder(path) is not None:
            return True
        return self._all_folders().folder(path) is not None if self.complete else None

    def subfolders(self, path: str) -> list[str] | None:
        """Names of the folders directly in `path` (None: not known without shards)."""
        return list(self._all_folders().folder_names(path)) if self.complete else None

    def empty_folders(self) -> list[str] | None:
        if not self.complete:
            return None
        full = _with_ancestors(p for ps in self.parents for p in ps or ())
        return [p for p in self.recorded.folders if p and p not in full]

    def recorded_between(self, lo: str, hi: str) -> list[Folder]:
        """Recorded folders with keys from `lo` to `hi` (a shard's span)."""
        r = self.recorded
        a, b = bisect.bisect_left(r.folders, lo), bisect.bisect_right(r.folders, hi)
        return [Folder(r.folders[i], r.folder_modes[i], r.folder_mtimes[i]) for i in range(a, b)]

    def _all_folders(self) -> Manifest:
        if self._tree is None:
            every = _with_ancestors(p for ps in self.parents for p in ps or ()) | set(self.recorded.folders)
            tree = Manifest()
            tree.set_folders(Folder(p) for p in every)
            self._tree = tree
        return self._tree

    # -- storage ----------------------------------------------------------------------
    def doc(self) -> dict:
        return {
            "folders": self.recorded.folders_doc(),
            "parents": [None if p is None else list(p) for p in self.parents],
        }

    @classmethod
    def from_doc(cls, doc: dict, shards: int, name: str) -> Outline:
        try:
            recorded = Manifest()
            recorded.load_folders(doc["folders"])
            parents: list[Parents] = [None if p is None else tuple(p) for p in doc["parents"]]
        except Exception as e:  # noqa: BLE001 -- any malformed outline is a corrupt record
            raise CorruptRecord(f"corrupt {name}: outline: {e}") from None
        recorded.validate_folders(name)
        if len(parents) != shards or any(
            p is not None and (any(not isinstance(x, str) for x in p) or list(p) != sorted(set(p))) for p in parents
        ):
            raise CorruptRecord(f"corrupt {name}: outline: bad parents")
        return cls(recorded, parents)


class OutlineWriter:
    """Collects the outline as a sharded manifest is written, in key order."""

    def __init__(self) -> None:
        self.folders: list[Folder] = []
        self.parents: list[Parents] = []
        self._open: set[str] = set()
        self._overflow = False  # open shard has too many parents
        self._names = 0  # folders and parents held
        self.usable = True

    def _count(self, n: int) -> None:
        self._names += n
        if self._names > ROOT_FOLDERS:
            self.usable, self.folders, self.parents = False, [], []

    def add_folder(self, f: Folder) -> None:
        if self.usable:
            self.folders.append(f)
            self._count(1)

    def add_file(self, path: str) -> None:
        if self.usable and not self._overflow:
            self._open.add(posixpath.dirname(path))
            if len(self._open) > PARENTS_MAX:
                self._overflow, self._open = True, set()

    def end_shard(self) -> None:
        if self.usable:
            self.parents.append(None if self._overflow else tuple(sorted(self._open)))
            self._count(len(self._open))
        self._open, self._overflow = set(), False

    def reuse(self, parents: Parents, folders: Iterable[Folder] | None) -> None:
        """A re-used shard's part (None: the base had no outline, so the result has none)."""
        if folders is None:
            self.usable, self.folders, self.parents = False, [], []
            return
        for f in folders:
            self.add_folder(f)
        if self.usable:
            self.parents.append(parents)
            self._count(len(parents or ()))

    def result(self) -> Outline | None:
        if not self.usable:
            return None
        recorded = Manifest()
        recorded.set_folders(self.folders)
        return Outline(recorded, self.parents)


def _contains(sorted_paths: tuple[str, ...], path: str) -> bool:
    i = bisect.bisect_left(sorted_paths, path)
    return i < len(sorted_paths) and sorted_paths[i] == path


def _with_ancestors(paths: Iterable[str]) -> set[str]:
    out: set[str] = set()
    for p in paths:
        while p not in out:
            out.add(p)
            if not p:
                break
            p = posixpath.dirname(p)
    return out
