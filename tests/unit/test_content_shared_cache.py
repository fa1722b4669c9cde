"""The mount decides on its request thread, from memory, whether the disk cache holds a piece
(no stat of the cache folder there: it stalled every request while a cold stream kept the disk
busy). When another process sharing the cache folder added or removed the piece since, that
guess is wrong; the reader must still get the right bytes, and from the disk when they are
there (local store and cache, no kernel, no server)."""

import os

import trio

from artfs.content.cache import ContentCache
from artfs.content.fetch import Piece
from artfs.digest import digest_bytes
from artfs.fs.content import ContentSource
from artfs.store.backends.local import LocalStore

MIB = 1 << 20


def _setup(tmp_path):
    store = LocalStore(str(tmp_path / "store"))
    data = os.urandom(2 * MIB)
    store.put("objects/big", data)
    chunks = [Piece(digest_bytes(data[i : i + MIB]), MIB, "objects/big", i, i) for i in range(0, 2 * MIB, MIB)]
    return store, data, chunks


def _read_all(content: ContentSource, chunks: list[Piece]) -> bytes:
    async def main():
        async with trio.open_nursery() as nursery:
            content.attach(nursery)
            content.prefetch(chunks)  # read-ahead decides disk or store from what the cache knows
            out = b"".join([bytes(await content.get(p)) for p in chunks])
            nursery.cancel_scope.cancel()
        return out

    return trio.run(main)


def test_pieces_another_mount_cached_since_are_read_from_the_disk(tmp_path):
    store, data, chunks = _setup(tmp_path)
    ours = ContentCache(str(tmp_path / "cache"), 1 << 30)  # made before the other mount wrote
    other = ContentCache(str(tmp_path / "cache"), 1 << 30)
    for p in chunks:
        other.put(p.digest, data[p.offset : p.end])
    assert not any(ours.known(p.digest) for p in chunks), "our cache has not seen them"
    content = ContentSource(store, ours)
    assert _read_all(content, chunks) == data
    assert content.fetches == 0, "read from the disk cache, not the store"


def test_pieces_another_process_removed_from_the_cache_are_fetched_again(tmp_path):
    store, data, chunks = _setup(tmp_path)
    cache = ContentCache(str(tmp_path / "cache"), 1 << 30)
    for p in chunks:
        cache.put(p.digest, data[p.offset : p.end])
    for p in chunks:  # e.g. `artfs cache clear`, or another mount's eviction
        os.unlink(os.path.join(cache.root, p.digest.hex()[:2], p.digest.hex()))
    assert all(cache.known(p.digest) for p in chunks), "our cache still believes it has them"
    content = ContentSource(store, cache)
    assert _read_all(content, chunks) == data
    assert content.fetches >= 1, "fetched from the store"
