"""Large parts of a ranged GET are read off the socket into buffers of their own (one copy):
against a real S3 server, the bytes are the object's, a body cut mid-part resumes where it
broke (not a short part, which a reader would take for damaged content), and a body read to
its end gives its connection back for the next GET."""

from __future__ import annotations

import os
import socket

import pytest

from artfs.store.backends.s3 import DIRECT_PART
from conftest import make_bucket
from proxies import CuttingProxy, stores_behind_proxies

pytestmark = pytest.mark.s3
MIB = 1 << 20
DATA = os.urandom(6 * MIB + 12345)


class CountingProxy(CuttingProxy):
    """Forwards everything (or cuts as CuttingProxy does) and counts the connections made."""

    def __init__(self, target, after: int = 1 << 40, cuts: int = 0):
        self.connections = 0
        super().__init__(target, after, cuts)

    def _serve(self, client: socket.socket) -> None:
        with self._lock:
            self.connections += 1
        super()._serve(client)


@pytest.fixture
def store_behind(s3_endpoint, monkeypatch):
    with stores_behind_proxies(s3_endpoint, monkeypatch, DATA, CountingProxy) as make:
        yield make


def test_large_parts_hold_the_objects_bytes_up_to_its_end(store_behind):
    store, _ = store_behind()
    assert DIRECT_PART <= MIB
    lengths = [MIB] * 7  # the last part runs past the end of the object: it comes short
    parts = list(store.get_parts("blob", 0, lengths))
    assert [len(p) for p in parts] == [MIB] * 6 + [12345]
    assert b"".join(parts) == DATA
    assert list(store.get_parts("blob", 5 * MIB + 7, [MIB])) == [DATA[5 * MIB + 7 : 6 * MIB + 7]]


def test_a_body_cut_in_the_middle_of_a_large_part_resumes_where_it_broke(store_behind):
    store, proxy = store_behind(after=MIB + MIB // 2, cuts=1)
    parts = list(store.get_parts("blob", 0, [MIB] * 4))
    assert proxy.cut == 1, "the proxy really cut the response"
    assert [len(p) for p in parts] == [MIB] * 4
    assert b"".join(parts) == DATA[: 4 * MIB]


def test_a_body_read_to_its_end_gives_its_connection_back(store_behind):
    store, proxy = store_behind()
    for i in range(5):
        assert b"".join(store.get_parts("blob", i * MIB, [MIB])) == DATA[i * MIB : (i + 1) * MIB]
    assert proxy.connections == 1


def test_random_reads_verify_against_a_piece_index_read_into_a_buffer(s3_endpoint, monkeypatch, tmp_path):
    """A piece index of 256 KiB or more (a file of 512 MiB or more) comes as a view of a buffer;
    the digests taken from it must still work as keys (a small threshold plays the large file)."""
    import trio

    from artfs import Store
    from artfs.content.cache import ContentCache
    from artfs.content.fetch import piece_index, pieces
    from artfs.digest import CHUNK_SIZE
    from artfs.fs.content import ContentSource
    from artfs.store.backends import s3
    from conftest import run_artfs, write_tree

    monkeypatch.setattr(s3, "DIRECT_PART", 64)
    url = f"s3://{make_bucket(s3_endpoint)}/reg"
    data = os.urandom(3 * MIB + 777)
    src = write_tree(tmp_path / "src", {"model.bin": data})
    run_artfs(["put", src, "--name", "demo/w", "--type", "model"], store=url, cache=str(tmp_path / "c")).ok()
    store = Store(url, str(tmp_path / "c"))
    entry = store.use_artifact("demo/w:latest").manifest.get("model.bin")
    content = ContentSource(store.objects, ContentCache(str(tmp_path / "mount-cache"), 1 << 30))
    chunks = pieces(entry)

    async def read(off: int, n: int) -> bytes:
        first, last = off // CHUNK_SIZE, (off + n - 1) // CHUNK_SIZE
        got = await content.read_pieces(piece_index(entry), chunks[first : last + 1], off, off + n)
        assert got is not None, "the piece index was usable"
        return bytes(got)

    for off in (2 * MIB + 70000, MIB - 100, 12345):
        assert trio.run(read, off, 4096) == data[off : off + 4096]
