"""`artfs get`: write a version's files to a folder, verified and resumable.

A file already present with the right digest is skipped, so a second get
fetches nothing. Files are written to `NAME.artfs-part` and renamed when
complete; a large file's part is re-verified chunk by chunk and resumed.

The tree comes back as it was put, as `rsync -a` would leave it: each file's
mode bits and mtime (where the manifest has them), every recorded folder,
empty ones included, and the folders' modes and mtimes, set last and deepest
first so that writing their contents does not move them again.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import blake3

from artfs.content.fetch import Piece, fetch_run, group, pieces
from artfs.digest import CHUNK_SIZE, DIGEST_SIZE
from artfs.errors import InvalidInput, NoSpace
from artfs.store.backends.base import ObjectStore
from artfs.store.keys import object_key
from artfs.store.manifest import Entry, Folder
from artfs.store.shards import AnyManifest

PART = ".artfs-part"


def part_path(dest: str) -> str:
    """Where `dest` is written before it is complete: NAME.artfs-part, or, for a name too long
    to take the suffix (255 bytes), a fixed short name derived from it (so a rerun resumes it)."""
    folder, name = os.path.split(dest)
    if len(os.fsencode(name + PART)) <= 255:
        return dest + PART
    return os.path.join(folder, f".{hashlib.sha256(os.fsencode(name)).hexdigest()[:32]}{PART}")


@dataclass
class DownloadStats:
    files_written: int = 0
    files_skipped: int = 0
    bytes_fetched: int = 0


def _matches(path: str, entry: Entry) -> bool:
    try:
        if os.path.getsize(path) != entry.size:
            return False
        h = blake3.blake3()
        with open(path, "rb") as f:
            while buf := f.read(8 << 20):
                h.update(buf)
        return h.digest() == entry.digest
    except OSError:
        return False


def copy_entry(
    store: ObjectStore,
    entry: Entry,
    fd: int,
    cached: Callable[[Piece], bytes | None] | None = None,
    run_bytes: int = 16 << 20,
) -> None:
    """Writes a stored entry's verified bytes into `fd` at their offsets, at most one run of
    `run_bytes` in memory whatever the file's size (a draft's copy-up of a huge base file).
    `cached(piece)`: the piece's bytes from a local cache, or None to fetch it."""
    todo = []
    for p in stored_pieces(entry):
        data = cached(p) if cached is not None and p.size else None
        if data is None:
            todo.append(p)
        else:
            _pwrite_all(fd, data, p.file_offset)
    for run in group(todo, max_bytes=run_bytes):
        for p, data in zip(run, fetch_run(store, run)):
            _pwrite_all(fd, data, p.file_offset)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def stored_pieces(entry: Entry) -> list[Piece]:
    """content.fetch.pieces, for files stored as blocks too (each chunk in its block)."""
    if not entry.blocks:
        return pieces(entry)
    out = []
    for i in range(0, entry.size, CHUNK_SIZE):
        k = i // CHUNK_SIZE
        digest, at = entry.locate(i)
        out.append(
            Piece(
                entry.chunks[k * DIGEST_SIZE : (k + 1) * DIGEST_SIZE],
                min(CHUNK_SIZE, entry.size - i),
                object_key(digest),
                at,
                i,
            )
        )
    return out


def _set_time(path: str, mtime_ns: int) -> None:
    if mtime_ns:  # 0: the manifest does not know it (older versions): left as written
        os.utime(path, ns=(mtime_ns, mtime_ns))


def target_path(root: str, entry_path: str) -> str:
    full = os.path.normpath(os.path.join(root, entry_path))
    if not full.startswith(os.path.normpath(root) + os.sep):
        raise InvalidInput(f"refusing to write {entry_path!r} outside {root}")
    return full


class Downloader:
    def __init__(
        self,
        store: ObjectStore,
        fetch_reference: Callable | None = None,
        workers: int = 8,
        progress: Callable[[int], None] | None = None,
    ):
        self.store = store
        self.fetch_reference = fetch_reference
        self.workers = workers
        self.progress = progress or (lambda n: None)
        self.stats = DownloadStats()
        self._lock = threading.Lock()

    def download(
        self, manifest: AnyManifest, indices: range | list[int], root: str, under: str | None = None
    ) -> DownloadStats:
        """Entries `indices` into `root`, with the recorded folders at or below `under`
        (None: all of them; give it whenever `indices` is not the whole manifest)."""
        todo: list[tuple[Entry, str]] = []
        kept: list[tuple[Entry, str]] = []
        for i in indices:
            e = manifest.entry(i)
            dest = target_path(root, e.path)
            if _matches(dest, e):
                self.stats.files_skipped += 1
                self.progress(e.size)
                kept.append((e, dest))
            else:
                todo.append((e, dest))
        try:
            self._fetch_all(todo)
            for e, dest in kept + todo:
                _set_time(dest, e.mtime_ns)
            for e, dest in kept:
                os.chmod(dest, e.mode)
            self._folders(manifest, root, under)
        except OSError as e:
            if e.errno == 28:
                raise NoSpace(f"no space left writing into {root}") from None
            raise InvalidInput(f"cannot write {e.filename2 or e.filename or root}: {e.strerror}") from None
        return self.stats

    def _folders(self, manifest: AnyManifest, root: str, under: str | None) -> None:
        chosen: list[Folder] = [
            f
            for f in manifest.folder_entries()
            if under is None or under == "" or f.path == under or f.path.startswith(under + "/")
        ]
        if not chosen:
            return
        for f in chosen:
            if f.path:
                os.makedirs(target_path(root, f.path), exist_ok=True)
        for f in sorted(chosen, key=lambda f: f.path.count("/") + bool(f.path), reverse=True):
            dest = target_path(root, f.path) if f.path else root
            os.chmod(dest, f.mode)
            _set_time(dest, f.mtime_ns)

    def _fetch_all(self, todo: list[tuple[Entry, str]]) -> None:
        # Small files: group neighbours in one pack into shared GETs.
        small = [(e, d) for e, d in todo if e.pack is not None]
        large = [(e, d) for e, d in todo if e.pack is None]
        by_piece: dict[Piece, list[tuple[str, int]]] = {}
        for e, dest in small:
            by_piece.setdefault(pieces(e)[0], []).append((dest, e.mode))
        with ThreadPoolExecutor(self.workers, thread_name_prefix="artfs-get") as pool:
            futures = [pool.submit(self._fetch_small_run, run, by_piece) for run in group(by_piece)]
            futures += [pool.submit(self._fetch_large, e, d) for e, d in large]
            for f in futures:
                f.result()
        for p, dests in by_piece.items():
            if p.size == 0:
                for dest, mode in dests:
                    self._write_whole(dest, b"", mode)

    def _fetch_small_run(self, run: list[Piece], by_piece: dict[Piece, list[tuple[str, int]]]) -> None:
        datas = fetch_run(self.store, run)
        for p, data in zip(run, datas):
            for dest, mode in by_piece[p]:
                self._write_whole(dest, data, mode)
            self._account(len(data))

    def _write_whole(self, dest: str, data: bytes, mode: int) -> None:
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        part = part_path(dest)
        with open(part, "wb") as f:
            f.write(data)
        os.chmod(part, mode)
        os.replace(part, dest)
        with self._lock:
            self.stats.files_written += 1

    def _fetch_large(self, entry: Entry, dest: str) -> None:
        if entry.ref is not None:
            if self.fetch_reference is None:
                raise InvalidInput(f"{entry.path} is a reference and cannot be fetched here")
            self.fetch_reference(entry, dest)
            with self._lock:
                self.stats.files_written += 1
            return
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        part = part_path(dest)
        ps = stored_pieces(entry)
        done = self._resume_point(part, ps)
        with open(part, "r+b" if done else "wb") as f:
            f.truncate(done * CHUNK_SIZE if done else 0)
            for run in group(ps[done:], max_bytes=16 << 20):
                for p, data in zip(run, fetch_run(self.store, run)):
                    os.pwrite(f.fileno(), data, p.file_offset)
                    self._account(len(data))
        os.chmod(part, entry.mode)
        os.replace(part, dest)
        with self._lock:
            self.stats.files_written += 1

    def _resume_point(self, part: str, ps: list[Piece]) -> int:
        """How many leading chunks of an interrupted download are already right."""
        if not os.path.exists(part):
            return 0
        good = 0
        with open(part, "rb") as f:
            for p in ps:
                data = f.read(p.size)
                if len(data) != p.size or blake3.blake3(data).digest() != p.digest:
                    break
                good += 1
                self.progress(p.size)
        return good

    def _account(self, n: int) -> None:
        with self._lock:
            self.stats.bytes_fetched += n
        self.progress(n)
