"""Random reads of a large file through the kernel: only the 64 KiB pieces a read needs are
fetched, each verified against the object's piece index; a corrupt piece is an EIO, never
bytes; an unusable piece index means whole chunks verified against the manifest."""

from __future__ import annotations

import errno
import os
import random

import pytest

from artfs import Store
from artfs.digest import PIECE_SIZE
from artfs.store.keys import object_key, pieces_key
from artfs.store.location import open_store
from conftest import run_artfs, write_tree
from mounts import MiB, errno_of, mounter  # noqa: F401  (mounter is a fixture)

pytestmark = pytest.mark.mount

NAME = "demo/weights"
SIZE = 6 * MiB + 12345
# Far apart and going backwards, so no read looks like the continuation of the one before.
OFFSETS = [5 * MiB + 70000, 3 * MiB + 4096 * 7, MiB + 200000, 12345]


@pytest.fixture
def weights(store_url, tmp_path):
    data = random.Random(7).randbytes(SIZE)
    src = write_tree(tmp_path / "src", {"model.bin": data})
    cache = str(tmp_path / "cli-cache")
    run_artfs(["put", src, "--name", NAME, "--type", "model"], store=store_url, cache=cache).ok()
    entry = Store(store_url, cache).use_artifact(f"{NAME}:latest").manifest.get("model.bin")
    return store_url, data, entry


def pread_at(path: str, offsets: list[int], size: int = 4096) -> list[bytes]:
    fd = os.open(path, os.O_RDONLY)
    try:
        return [os.pread(fd, size, off) for off in offsets]
    finally:
        os.close(fd)


def test_random_reads_fetch_only_the_pieces_they_need(weights, mounter):
    store, data, entry = weights
    assert entry.piece_index, "a large file is committed with a piece index"
    m = mounter(store)
    got = pread_at(m.path(NAME, "v0", "model.bin"), OFFSETS)
    assert got == [data[o : o + 4096] for o in OFFSETS]
    fetched = m.fetches()
    index = [f for f in fetched if f[0] == pieces_key(entry.digest)]
    content = [f for f in fetched if f[0] == object_key(entry.digest)]
    assert len(index) == 1, fetched
    assert content and all(end - start <= 2 * PIECE_SIZE for _key, start, end in content), fetched
    assert all(start % PIECE_SIZE == 0 for _key, start, end in content), fetched
    assert sum(end - start for _key, start, end in content) < MiB, "no read fetched a whole chunk"


def test_random_reads_then_a_whole_read_give_the_stored_bytes(weights, mounter):
    store, data, _entry = weights
    m = mounter(store)
    path = m.path(NAME, "v0", "model.bin")
    assert pread_at(path, OFFSETS, 100000) == [data[o : o + 100000] for o in OFFSETS]
    with open(path, "rb") as f:
        assert f.read() == data


def test_a_corrupt_piece_in_the_store_is_an_eio_never_bytes(weights, mounter):
    store, data, entry = weights
    bad = bytearray(data)
    bad[3 * MiB + 5] ^= 0xFF  # inside the piece at 3 MiB
    open_store(store).put(object_key(entry.digest), bytes(bad))
    m = mounter(store)
    path = m.path(NAME, "v0", "model.bin")
    fd = os.open(path, os.O_RDONLY)
    try:
        assert errno_of(os.pread, fd, 4096, 3 * MiB) == errno.EIO
        assert os.pread(fd, 4096, MiB + 8192) == data[MiB + 8192 : MiB + 8192 + 4096], "other pieces still read"
    finally:
        os.close(fd)
    assert "does not match its digest" in m.log()


def test_a_bad_piece_index_means_whole_verified_chunks(weights, mounter):
    store, data, entry = weights
    open_store(store).put(pieces_key(entry.digest), b"\0" * 32 * (SIZE // PIECE_SIZE + 1))
    m = mounter(store)
    got = pread_at(m.path(NAME, "v0", "model.bin"), OFFSETS)
    assert got == [data[o : o + 4096] for o in OFFSETS]
    assert "piece index of" in m.log() and "reading whole chunks" in m.log()
    content = [f for f in m.fetches() if f[0] == object_key(entry.digest)]
    assert any(end - start >= MiB for _key, start, end in content), content


def test_a_missing_piece_index_means_whole_verified_chunks(weights, mounter):
    store, data, entry = weights
    open_store(store).delete(pieces_key(entry.digest))
    m = mounter(store)
    got = pread_at(m.path(NAME, "v0", "model.bin"), OFFSETS)
    assert got == [data[o : o + 4096] for o in OFFSETS]
    assert "reading whole chunks" in m.log()


def test_an_object_stored_without_a_piece_index_gets_one_when_published_again(weights, tmp_path):
    store, data, entry = weights
    objects = open_store(store)
    index = objects.get(pieces_key(entry.digest))
    objects.delete(pieces_key(entry.digest))  # as if stored by a version of artfs without them
    src = write_tree(tmp_path / "again", {"copy.bin": data})
    run_artfs(
        ["put", src, "--name", "demo/other", "--type", "model"], store=store, cache=str(tmp_path / "cli-cache")
    ).ok()
    assert objects.get(pieces_key(entry.digest)) == index


def test_a_large_file_carried_into_the_next_version_keeps_its_piece_index(weights, mounter, tmp_path):
    store, data, entry = weights
    m = mounter(store)
    draft = m.path(NAME, "drafts", "d")
    os.mkdir(draft)
    with open(os.path.join(draft, "notes.txt"), "w") as f:
        f.write("fine-tuned\n")
    cache = str(tmp_path / "cli-cache")
    assert run_artfs(["commit", draft], store=store, cache=cache).ok().out == f"{NAME}:v1"
    carried = Store(store, cache).use_artifact(f"{NAME}:v1").manifest.get("model.bin")
    assert carried.piece_index == entry.piece_index
    got = pread_at(m.path(NAME, "v1", "model.bin"), OFFSETS)
    assert got == [data[o : o + 4096] for o in OFFSETS]


def cached_bytes(cache: str) -> int:
    """Bytes the cache's content folder holds (temp files of writers aside)."""
    total = 0
    for dirpath, _dirs, files in os.walk(os.path.join(cache, "content")):
        if os.path.basename(dirpath) != "tmp":
            total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
    return total


@pytest.mark.parametrize("remount", [False, True], ids=["same mount", "after a remount"])
def test_random_reads_then_a_whole_read_keep_each_byte_once_in_the_cache(weights, mounter, remount):
    store, data, _entry = weights
    m = mounter(store)
    path = m.path(NAME, "v0", "model.bin")
    offsets = random.Random(3).sample(range(0, SIZE - 4096, 4096), 60)
    assert pread_at(path, offsets) == [data[o : o + 4096] for o in offsets]
    if remount:
        m.umount()  # what was fetched is written to the cache on the way out
        assert cached_bytes(m.cache) > 20 * PIECE_SIZE, "the random reads cached their pieces"
        m = mounter(store, cache=m.cache)
        path = m.path(NAME, "v0", "model.bin")
    with open(path, "rb") as f:
        assert f.read() == data
    m.umount()
    held = cached_bytes(m.cache)
    assert held >= SIZE, "the whole file is cached"
    assert held <= 1.05 * SIZE, f"the cache holds {held / SIZE:.2f} x the file's size"
