"""Digests of a byte stream, its 1 MiB chunks, its 64 KiB pieces (and blocks), however it is fed."""

import os
import random

import blake3
import pytest

from artfs.digest import CHUNK_SIZE, PIECE_SIZE, Hasher, hash_file


def expected(data: bytes):
    chunks = b"".join(blake3.blake3(data[i : i + CHUNK_SIZE]).digest() for i in range(0, len(data), CHUNK_SIZE))
    pieces = b"".join(blake3.blake3(data[i : i + PIECE_SIZE]).digest() for i in range(0, len(data), PIECE_SIZE))
    return blake3.blake3(data).digest(), len(data), chunks, pieces


@pytest.mark.parametrize("size", [0, 1, PIECE_SIZE, PIECE_SIZE + 1, CHUNK_SIZE, 2 * CHUNK_SIZE + 3 * PIECE_SIZE + 7])
def test_any_way_of_feeding_gives_the_same_digests(size):
    data = random.Random(size).randbytes(size)
    for cuts in ([], [1], [PIECE_SIZE - 1, PIECE_SIZE + 5], list(range(0, size, 4096)), [CHUNK_SIZE]):
        h, last = Hasher(), 0
        for cut in [c for c in cuts if c < size] + [size]:
            h.update(data[last:cut])
            last = cut
        assert tuple(h.result()) == expected(data), cuts


@pytest.mark.parametrize("size", [0, 2 * CHUNK_SIZE, 5 * CHUNK_SIZE + 1])
def test_block_digests_however_it_is_fed(size):
    block = 2 * CHUNK_SIZE
    data = random.Random(size).randbytes(size)
    blocks = b"".join(blake3.blake3(data[i : i + block]).digest() for i in range(0, size, block))
    for cuts in ([], [block], [PIECE_SIZE - 1, block + 5], list(range(0, size, 3 << 20))):
        h, last = Hasher(block_size=block), 0
        for cut in [c for c in cuts if c < size] + [size]:
            h.update(data[last:cut])
            last = cut
            if cut and cut % block == 0:
                assert h.last_block() == blocks[(cut // block - 1) * 32 : cut // block * 32]
        assert h.blocks() == blocks and tuple(h.result()) == expected(data), cuts


def test_hash_file_of_a_small_file_has_no_chunks(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"hello")
    assert hash_file(path, chunked=False) == (blake3.blake3(b"hello").digest(), 5, b"", b"")


def test_hash_file_of_a_large_file(tmp_path):
    data = os.urandom(3 * CHUNK_SIZE + 100)
    path = tmp_path / "f"
    path.write_bytes(data)
    assert tuple(hash_file(path, chunked=True)) == expected(data)
