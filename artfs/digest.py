"""blake3 content digests: whole files, byte strings, and fixed-size chunks."""

from __future__ import annotations

import os

import blake3

DIGEST_SIZE = 32
# Large files are verified chunk by chunk so a ranged read can be checked
# without fetching the whole object; 1 MiB keeps one chunk a few ms away.
CHUNK_SIZE = 1 << 20
_READ = 4 << 20


def digest_bytes(data: bytes | memoryview) -> bytes:
    return blake3.blake3(data).digest()


def hash_file(path: str | os.PathLike, chunked: bool) -> tuple[bytes, int, bytes]:
    """Returns (digest, size, chunk digests concatenated; b"" unless chunked)."""
    whole = blake3.blake3()
    chunks = bytearray()
    size = 0
    with open(path, "rb", buffering=0) as f:
        while True:
            buf = f.read(CHUNK_SIZE if chunked else _READ)
            if not buf:
                break
            size += len(buf)
            whole.update(buf)
            if chunked:
                chunks += blake3.blake3(buf).digest()
    return whole.digest(), size, bytes(chunks)


def chunk_digests(data: bytes) -> bytes:
    return b"".join(
        blake3.blake3(data[i : i + CHUNK_SIZE]).digest() for i in range(0, len(data), CHUNK_SIZE)
    )


def needs_chunks(size: int) -> bool:
    return size > CHUNK_SIZE
