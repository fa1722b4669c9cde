"""blake3 content digests: whole files, byte strings, fixed-size chunks and pieces."""

from __future__ import annotations

import os
from typing import NamedTuple

import blake3

DIGEST_SIZE = 32
# Large files are verified chunk by chunk so a ranged read can be checked
# without fetching the whole object; 1 MiB keeps one chunk a few ms away.
CHUNK_SIZE = 1 << 20
# A random read needs less than a chunk: large objects also have a piece index
# (the digests of their PIECE_SIZE pieces, stored beside the object) so one
# small ranged GET can be verified on its own.
PIECE_SIZE = 64 << 10
_READ = 4 << 20


class Hashes(NamedTuple):
    digest: bytes
    size: int
    chunks: bytes = b""  # CHUNK_SIZE chunk digests, concatenated (only for chunked files)
    pieces: bytes = b""  # PIECE_SIZE piece digests, concatenated (only for chunked files)


class Hasher:
    """blake3 of a byte stream, of its chunks and of its pieces (and of its blocks, given a
    block size: a whole number of chunks), fed in order."""

    __slots__ = (
        "size",
        "chunked",
        "block_size",
        "_whole",
        "_chunk",
        "_piece",
        "_block",
        "_chunks",
        "_pieces",
        "_blocks",
    )

    def __init__(self, chunked: bool = True, block_size: int = 0):
        assert block_size % CHUNK_SIZE == 0 and (chunked or not block_size)
        self.size = 0
        self.chunked = chunked
        self.block_size = block_size
        self._whole = blake3.blake3()
        self._chunk = blake3.blake3()
        self._piece = blake3.blake3()
        self._block = blake3.blake3()
        self._chunks = bytearray()
        self._pieces = bytearray()
        self._blocks = bytearray()

    def update(self, data) -> None:
        mv = memoryview(data)
        self._whole.update(mv)
        if not self.chunked:
            self.size += len(mv)
            return
        while len(mv):
            # A chunk is a whole number of pieces, so only piece boundaries need finding.
            take = min(PIECE_SIZE - self.size % PIECE_SIZE, len(mv))
            part, mv = mv[:take], mv[take:]
            self._piece.update(part)
            self._chunk.update(part)
            if self.block_size:
                self._block.update(part)
            self.size += take
            if self.size % PIECE_SIZE == 0:
                self._pieces += self._piece.digest()
                self._piece = blake3.blake3()
                if self.size % CHUNK_SIZE == 0:
                    self._chunks += self._chunk.digest()
                    self._chunk = blake3.blake3()
                    if self.block_size and self.size % self.block_size == 0:
                        self._blocks += self._block.digest()
                        self._block = blake3.blake3()

    def last_block(self) -> bytes:
        """The digest of the last whole block hashed."""
        return bytes(self._blocks[-DIGEST_SIZE:])

    def blocks(self) -> bytes:
        """The digests of the blocks so far (the last one partial unless the size is a whole
        number of blocks), concatenated."""
        if self.block_size and self.size % self.block_size:
            return bytes(self._blocks) + self._block.digest()
        return bytes(self._blocks)

    def result(self) -> Hashes:
        if not self.chunked:
            return Hashes(self._whole.digest(), self.size)
        chunks, pieces = bytes(self._chunks), bytes(self._pieces)
        if self.size % CHUNK_SIZE:
            chunks += self._chunk.digest()
        if self.size % PIECE_SIZE:
            pieces += self._piece.digest()
        return Hashes(self._whole.digest(), self.size, chunks, pieces)


def digest_bytes(data: bytes | memoryview) -> bytes:
    return blake3.blake3(data).digest()


def hash_file(path: str | os.PathLike, chunked: bool) -> Hashes:
    """The file's digest and size; with chunk and piece digests if `chunked`."""
    hasher = Hasher(chunked)
    with open(path, "rb", buffering=0) as f:
        while buf := f.read(_READ):
            hasher.update(buf)
    return hasher.result()


def needs_chunks(size: int) -> bool:
    return size > CHUNK_SIZE
