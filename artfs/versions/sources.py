"""What a publish takes from local disk: files and folders below a path.

`walk_sources` lists them (a SourceList: every file, and every folder walked, empty ones
included); `TreeWalk` yields them in key order without keeping them, for trees of any size
(see streaming.py).
"""

from __future__ import annotations

import os
import stat as stat_mod
from collections.abc import Iterator

from artfs.errors import InvalidInput
from artfs.names import join_path, normalize_path
from artfs.store.manifest import Folder
from artfs.versions.publish import FileSource, SourceList


def walk_sources(local: str, prefix: str | None) -> SourceList:
    """Every regular file below `local` (or `local` itself) as FileSources under `prefix`,
    with every folder walked (`local` itself included, as `prefix` or the root '')."""
    local = os.path.abspath(local)
    if os.path.isfile(local):
        return SourceList([FileSource(normalize_path(prefix or os.path.basename(local)), local)])
    if not os.path.isdir(local):
        raise InvalidInput(f"{local}: no such file or directory")
    out = SourceList()
    # Symbolic links are followed, to folders as to files (a linked folder's files are
    # part of the tree, not silently left out); a link back to an ancestor is a loop.
    for dirpath, dirnames, filenames in os.walk(local, followlinks=True):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, local).replace(os.sep, "/")
        try:
            st = os.stat(dirpath)
        except OSError as e:
            raise InvalidInput(f"cannot read {dirpath}: {e.strerror}") from None
        folder = join_path(prefix, rel_dir) if rel_dir != "." else normalize_path(prefix) if prefix else ""
        out.folders.append(Folder(folder, st.st_mode & 0o7777, st.st_mtime_ns))
        real = os.path.realpath(dirpath)
        for d in dirnames:
            full = os.path.join(dirpath, d)
            if os.path.islink(full):
                target = os.path.realpath(full)
                if real == target or real.startswith(target.rstrip(os.sep) + os.sep):
                    raise InvalidInput(f"{full}: symbolic link loop (points to {target})")
        for fn in filenames:
            full = os.path.join(dirpath, fn)
            if os.path.islink(full) and not os.path.exists(full):
                raise InvalidInput(f"{full}: broken symbolic link")
            rel = os.path.relpath(full, local).replace(os.sep, "/")
            out.append(FileSource(join_path(prefix, rel), full))
    return out


def walk_each(paths: list[str]) -> SourceList:
    """Several local paths, each under its own basename (files and folders of all of them)."""
    out = SourceList()
    for p in paths:
        got = walk_sources(p, os.path.basename(os.path.abspath(p)))
        out.extend(got)
        out.folders.extend(got.folders)
    return out


class TreeWalk:
    """The files and folders below a local folder, in key order, as often as asked (once to
    count, once to publish), each time walked afresh rather than kept."""

    def __init__(self, local: str, prefix: str | None = None):
        self.local = os.path.abspath(local)
        self.prefix = normalize_path(prefix) if prefix else ""
        if not os.path.isdir(self.local):
            raise InvalidInput(f"{self.local}: not a folder")

    def __iter__(self) -> Iterator[FileSource | Folder]:
        yield self._record(self.local, self.prefix)
        yield from self._contents(self.local, self.prefix)

    def has_files(self) -> bool:
        return any(isinstance(item, FileSource) for item in self)

    def totals(self) -> tuple[int, int]:
        """(files, bytes) below the folder."""
        files = size = 0
        for item in self:
            if isinstance(item, FileSource):
                files += 1
                size += os.path.getsize(item.local)
        return files, size

    @staticmethod
    def _record(path: str, key: str) -> Folder:
        try:
            st = os.stat(path)
        except OSError as e:
            raise InvalidInput(f"cannot read {path}: {e.strerror}") from None
        return Folder(key, st.st_mode & 0o7777, st.st_mtime_ns)

    def _contents(self, path: str, key: str) -> Iterator[FileSource | Folder]:
        try:
            names = os.listdir(path)
        except OSError as e:
            raise InvalidInput(f"cannot read {path}: {e.strerror}") from None
        real = os.path.realpath(path)
        # A folder's own key is its name and its contents' start with name + "/"; a sibling
        # "name-x" sorts between the two, as in a manifest.
        order: list[tuple[str, str, str]] = []
        for name in names:
            full = os.path.join(path, name)
            try:
                is_dir = stat_mod.S_ISDIR(os.stat(full).st_mode)  # links followed, as os.walk(followlinks)
            except OSError:
                if os.path.islink(full):
                    raise InvalidInput(f"{full}: broken symbolic link") from None
                raise InvalidInput(f"cannot read {full}") from None
            if is_dir:
                if os.path.islink(full):
                    target = os.path.realpath(full)
                    if real == target or real.startswith(target.rstrip(os.sep) + os.sep):
                        raise InvalidInput(f"{full}: symbolic link loop (points to {target})")
                order += [(name, name, "record"), (name + "/", name, "contents")]
            else:
                order.append((name, name, "file"))
        for _, name, what in sorted(order):
            child = join_path(key, name) if key else normalize_path(name)
            full = os.path.join(path, name)
            if what == "record":
                yield self._record(full, child)
            elif what == "contents":
                yield from self._contents(full, child)
            else:
                yield FileSource(child, full)
