"""The content cache on its own: what goes in comes out, and nothing else ever does.

Sizes straddle the O_DIRECT boundaries (64 KiB minimum, 4 KiB blocks, the 1 MiB
piece) because those take different paths through the cache.
"""

import ctypes
import os

import pytest

from artfs.content.cache import ContentCache
from artfs.digest import digest_bytes

SIZES = [0, 1, 4095, 4096, 65535, 65536, 65537, 100_000, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, 3 << 20]


@pytest.fixture
def cache(tmp_path):
    return ContentCache(str(tmp_path), 1 << 30)


def _put(cache, size):
    data = os.urandom(size)
    digest = digest_bytes(data)
    cache.put(digest, data)
    return digest, data


@pytest.mark.parametrize("size", SIZES)
def test_what_is_put_comes_back(cache, size):
    digest, data = _put(cache, size)
    assert cache.get(digest, size) == data
    assert ContentCache(os.path.dirname(cache.root), 1 << 30).get(digest, size) == data, "a new process reads it"


@pytest.mark.parametrize("size", [65536, 100_000, 1 << 20])
@pytest.mark.parametrize("aligned", [True, False])
def test_bytes_read_into_a_buffer_are_cached_as_they_are(cache, size, aligned):
    """What the S3 backend reads off the socket comes as a view of a buffer of its own, which
    starts at a page boundary (written with O_DIRECT as it is) or not (copied first)."""
    buf = bytearray(size + 8192)
    pad = -ctypes.addressof(ctypes.c_char.from_buffer(buf)) % 4096 + (0 if aligned else 16)
    data = memoryview(buf)[pad : pad + size]
    data[:] = os.urandom(size)
    digest = digest_bytes(data)
    cache.put_later(digest, data)
    cache.drain()
    assert ContentCache(os.path.dirname(cache.root), 1 << 30).get(digest, size) == data


@pytest.mark.parametrize("size", [4096, 65536, 100_000, 1 << 20])
@pytest.mark.parametrize("damage", ["flip", "truncate", "extend"])
def test_a_damaged_file_is_dropped_never_served(cache, size, damage):
    digest, data = _put(cache, size)
    path = cache._path(digest.hex())
    with open(path, "r+b") as f:
        if damage == "flip":
            f.seek(size // 2)
            f.write(bytes([data[size // 2] ^ 1]))
        elif damage == "truncate":
            f.truncate(size - 1)
        else:
            f.seek(0, os.SEEK_END)
            f.write(b"x")
    assert cache.get(digest, size) is None
    assert not os.path.exists(path), "the bad file is removed, so the next read fetches again"


def test_size_bound_evicts_least_recently_used(tmp_path):
    cache = ContentCache(str(tmp_path), 3 << 20)
    first, _ = _put(cache, 1 << 20)
    second, _ = _put(cache, 1 << 20)
    assert cache.get(first, 1 << 20) is not None  # first is now the most recently used
    _put(cache, 1 << 20)
    _put(cache, 1 << 20)
    assert cache.size <= 3 << 20
    assert cache.get(second, 1 << 20) is None
    assert cache.get(first, 1 << 20) is not None


# -- runs of small files (byte ranges of a pack, one cache file each) -----------------------------


def _pack(n=50, size=4096):
    files = [os.urandom(size) for _ in range(n)]
    items = [(digest_bytes(f), i * size, size) for i, f in enumerate(files)]
    return files, items, b"".join(files)


def test_a_run_serves_each_of_its_files_verified(cache):
    files, items, blob = _pack()
    cache.put_run("packs/ab12", 0, blob)
    got = ContentCache(os.path.dirname(cache.root), 1 << 30).get_packed("packs/ab12", items)  # after a remount
    assert got == {d: f for (d, _, _), f in zip(items, files)}
    assert cache.covers("packs/ab12", 4096 * 10, 4096) and not cache.covers("packs/ab12", 4096 * 50, 1)
    assert cache.get_packed("packs/other", items) == {}, "runs are per pack"


def test_a_damaged_run_is_dropped_whole_and_nothing_bad_is_served(cache):
    files, items, blob = _pack()
    cache.put_run("packs/ab12", 0, blob)
    name = os.path.join(cache.root, "runs", "ab", f"ab12.0.{len(blob)}")
    with open(name, "r+b") as f:
        f.seek(4096 * 3 + 7)
        f.write(b"\xff")
    got = cache.get_packed("packs/ab12", items)
    assert all(got[d] == f for (d, _, _), f in zip(items, files) if d in got), "only good bytes"
    assert items[3][0] not in got
    assert not os.path.exists(name) and not cache.covers("packs/ab12", 0, 1)


def test_runs_count_toward_the_size_bound(tmp_path):
    cache = ContentCache(str(tmp_path), 1 << 20)
    for i in range(4):
        cache.put_run(f"packs/{i:02x}aa", 0, os.urandom(400 << 10))
    assert cache.size <= 1 << 20
    assert not cache.covers("packs/00aa", 0, 1) and cache.covers("packs/03aa", 0, 1)


def test_what_is_queued_is_served_at_once_and_written_by_drain(cache):
    pieces = [os.urandom(100_000) for _ in range(20)]
    for p in pieces:
        cache.put_later(digest_bytes(p), p)
    assert all(cache.get(digest_bytes(p), len(p)) == p for p in pieces), "served from the queue meanwhile"
    cache.drain()
    again = ContentCache(os.path.dirname(cache.root), 1 << 30)
    assert all(again.get(digest_bytes(p), len(p)) == p for p in pieces)


def test_temp_files_left_by_a_killed_writer_are_removed_when_old(tmp_path):
    cache = ContentCache(str(tmp_path), 1 << 30)
    old, fresh = os.path.join(cache._tmp, "old.1.2"), os.path.join(cache._tmp, "fresh.1.2")
    for p in (old, fresh):
        with open(p, "wb") as f:
            f.write(b"half a piece")
    os.utime(old, (1, 1))
    ContentCache(str(tmp_path), 1 << 30)
    assert not os.path.exists(old)
    assert os.path.exists(fresh), "another process may be writing it right now"


PART = 64 << 10
KEY = "objects/" + "ab" * 32


def test_a_cached_chunk_drops_the_parts_it_covers(tmp_path):
    cache = ContentCache(str(tmp_path), 1 << 30)
    parts = [os.urandom(PART) for _ in range(4)]
    for i, data in enumerate(parts):
        cache.put_part_later(KEY, i * PART, data)
    cache.drain()
    again = ContentCache(str(tmp_path), 1 << 30)  # a later process finds them
    assert [again.get_part(KEY, i * PART, digest_bytes(d), PART) for i, d in enumerate(parts)] == parts
    assert again.size == 4 * PART
    again.drop_parts(KEY, 0, 2 * PART)  # a chunk holding the first two is cached now
    assert again.size == 2 * PART
    third = ContentCache(str(tmp_path), 1 << 30)
    got = [third.get_part(KEY, i * PART, digest_bytes(d), PART) for i, d in enumerate(parts)]
    assert got == [None, None, parts[2], parts[3]]
    assert third.size == 2 * PART


def test_parts_dropped_while_queued_are_never_written(tmp_path):
    cache = ContentCache(str(tmp_path), 1 << 30)
    data = os.urandom(PART)
    cache.put_part_later(KEY, 0, data)
    cache.drop_parts(KEY, 0, 1 << 20)
    cache.drain()
    assert ContentCache(str(tmp_path), 1 << 30).get_part(KEY, 0, digest_bytes(data), PART) is None


def test_a_damaged_part_is_dropped_never_served(cache):
    data = os.urandom(PART)
    cache.put_part_later(KEY, PART, data)
    cache.drain()
    path = cache._path(f"{KEY[8:]}.{PART}")
    with open(path, "r+b") as f:
        f.seek(100)
        f.write(b"\xff" if data[100] != 0xFF else b"\0")
    assert cache.get_part(KEY, PART, digest_bytes(data), PART) is None
    assert not os.path.exists(path)


def test_known_answers_from_memory_what_contains_answers_from_disk(tmp_path):
    """The read path asks `known` on the trio thread: no disk access, and it follows puts,
    evictions and what an earlier process left (found when the cache is opened)."""
    cache = ContentCache(str(tmp_path), 3 << 20)
    blobs = [os.urandom(1 << 20) for _ in range(4)]
    digests = [digest_bytes(b) for b in blobs]
    for d, b in zip(digests[:3], blobs[:3]):
        cache.put(d, b)
    assert [cache.known(d) for d in digests] == [cache.contains(d) for d in digests] == [True, True, True, False]
    cache.put(digests[3], blobs[3])  # over the bound: the oldest goes
    assert [cache.known(d) for d in digests] == [cache.contains(d) for d in digests] == [False, True, True, True]
    reopened = ContentCache(str(tmp_path), 3 << 20)
    assert [reopened.known(d) for d in digests] == [False, True, True, True]
