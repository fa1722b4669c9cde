"""file:// references: pinned by size and mtime, verified by blake3 like stored objects."""

from __future__ import annotations

import os
import stat as stat_mod
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote, unquote, urlsplit

import blake3

from artfs.digest import CHUNK_SIZE, DIGEST_SIZE, hash_file, needs_chunks
from artfs.errors import InvalidInput, NotFound, StoreUnavailable
from artfs.names import join_path, normalize_path
from artfs.references.base import Fetcher, changed, describe, too_many
from artfs.store.manifest import UNKNOWN_SIZE, Entry


class FileFetcher(Fetcher):
    """Local (or network-mounted) files: pinned by size, mtime and blake3 (per 1 MiB chunk when large)."""

    def local_path(self, uri: str) -> str:
        parts = urlsplit(uri)
        if parts.netloc not in ("", "localhost"):
            raise InvalidInput(
                f"invalid reference {uri!r}: a file URI names an absolute path on this host, file:///PATH"
            )
        path = unquote(parts.path)
        if not path.startswith("/"):
            raise InvalidInput(f"invalid reference {uri!r}: expected file:///ABSOLUTE/PATH")
        return os.path.normpath(path)

    @staticmethod
    def uri_of(path: str) -> str:
        return "file://" + quote(path)

    def resolve(self, uri, name, checksum, max_objects):
        root = self.local_path(uri)
        try:
            st = os.stat(root)
        except FileNotFoundError:
            raise NotFound(f"{uri}: no such file or folder") from None
        except OSError as e:
            raise InvalidInput(f"{uri}: {e.strerror}") from None
        if stat_mod.S_ISREG(st.st_mode):
            files = [(name or normalize_path(os.path.basename(root)), root)]
        elif stat_mod.S_ISDIR(st.st_mode):
            files = self._walk(uri, root, name, max_objects)
        else:
            raise InvalidInput(f"{uri} is not a regular file or folder")
        if not checksum:
            return [Entry(path, UNKNOWN_SIZE, b"", ref={"uri": self.uri_of(local)}) for path, local in files]
        if len(files) == 1:
            return [self._pin(*files[0])]
        with ThreadPoolExecutor(8, thread_name_prefix="artfs-ref-hash") as pool:
            return list(pool.map(lambda f: self._pin(*f), files))

    def _walk(self, uri: str, root: str, name: str | None, max_objects: int) -> list[tuple[str, str]]:
        out = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for fn in sorted(filenames):
                full = os.path.join(dirpath, fn)
                if not os.path.isfile(full):
                    continue  # sockets, fifos, broken links
                out.append((join_path(name, os.path.relpath(full, root).replace(os.sep, "/")), full))
                if len(out) > max_objects:
                    raise too_many(uri, max_objects)
        if not out:
            raise NotFound(f"{uri}: the folder holds no files")
        return out

    def _pin(self, path: str, local: str) -> Entry:
        try:
            before = os.stat(local)
            digest, size, chunks, _ = hash_file(local, chunked=needs_chunks(before.st_size))
            after = os.stat(local)
        except OSError as e:
            raise InvalidInput(f"cannot read {local}: {e.strerror}") from None
        if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns) or size != after.st_size:
            raise InvalidInput(f"{local} changed while it was being hashed; try again")
        if needs_chunks(size) != bool(chunks):
            raise InvalidInput(f"{local} changed while it was being hashed; try again")
        ref = {"uri": self.uri_of(local), "mtime_ns": after.st_mtime_ns}
        if chunks:
            ref["chunks"] = chunks
        mode = 0o755 if after.st_mode & 0o111 else 0o644
        return Entry(path, size, digest, mode, ref=ref)

    def read(self, entry, start, end):
        local = self.local_path(entry.ref["uri"])
        pinned = "mtime_ns" in entry.ref
        try:
            f = open(local, "rb")
        except FileNotFoundError:
            if pinned:
                raise changed(entry, "the file no longer exists") from None
            raise NotFound(f"reference {describe(entry)}: no such file") from None
        except OSError as e:
            raise StoreUnavailable(f"reference {describe(entry)}: {e.strerror}") from None
        with f:
            if not pinned:
                f.seek(start)
                return f.read(-1 if end is None else end - start)
            st = os.fstat(f.fileno())
            if st.st_size != entry.size or st.st_mtime_ns != entry.ref["mtime_ns"]:
                raise changed(
                    entry,
                    f"its size is {st.st_size}, pinned {entry.size}"
                    if st.st_size != entry.size
                    else "it was modified (its mtime differs from the pinned one)",
                )
            chunks = entry.ref.get("chunks")
            if not chunks:  # small: the whole file against the entry's digest
                data = f.read(entry.size + 1)
                if len(data) != entry.size or blake3.blake3(data).digest() != entry.digest:
                    raise changed(entry, "its content no longer matches the pinned blake3")
                return data[start:end]
            first, last = start // CHUNK_SIZE, (end - 1) // CHUNK_SIZE
            f.seek(first * CHUNK_SIZE)
            out = bytearray()
            for k in range(first, last + 1):
                want = min(CHUNK_SIZE, entry.size - k * CHUNK_SIZE)
                data = f.read(want)
                if len(data) != want or blake3.blake3(data).digest() != chunks[k * DIGEST_SIZE : (k + 1) * DIGEST_SIZE]:
                    raise changed(entry, f"chunk {k} no longer matches its pinned blake3")
                out += data
            lo = start - first * CHUNK_SIZE
            return bytes(out[lo : lo + (end - start)])
