"""The object-store contract, run identically against the local store and SeaweedFS S3."""

import io
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from artfs.errors import CorruptRecord, InvalidInput, NotFound, PreconditionFailed
from artfs.store.backends.local import LocalStore
from artfs.store.location import open_store


@pytest.fixture
def objects(store_url):
    return open_store(store_url)


def test_open_store_urls(tmp_path):
    assert isinstance(open_store(str(tmp_path / "a")), LocalStore)
    assert open_store(f"file://{tmp_path}/b").root == str(tmp_path / "b")
    for bad in ("http://example.com/x", "s3://", "gs://bucket"):
        with pytest.raises(InvalidInput):
            open_store(bad)


def test_put_get_head(objects):
    etag = objects.put("a/b/c.bin", b"hello world")
    assert objects.get("a/b/c.bin") == b"hello world"
    info = objects.head("a/b/c.bin")
    assert info.key == "a/b/c.bin" and info.size == 11 and info.etag == etag
    assert objects.exists("a/b/c.bin")
    assert objects.head("a/b/missing") is None and not objects.exists("a/b/missing")
    # A plain put replaces.
    objects.put("a/b/c.bin", b"second")
    assert objects.get("a/b/c.bin") == b"second"


def test_empty_object(objects):
    objects.put("empty", b"")
    assert objects.get("empty") == b""
    assert objects.head("empty").size == 0


def test_get_ranges(objects):
    data = bytes(range(256)) * 4
    objects.put("r", data)
    assert objects.get("r", 0) == data
    assert objects.get("r", 10) == data[10:]
    assert objects.get("r", 10, 20) == data[10:20]
    assert objects.get("r", 0, 1) == data[:1]
    assert objects.get("r", 1023, 1024) == data[1023:]
    assert objects.get("r", 1000, 5000) == data[1000:], "a range past the end is cut at the end"
    assert objects.get("r", 20, 20) == b""
    assert objects.get("r", 2000, 3000) == b"", "a range wholly past the end is empty, not an error"


def test_missing_objects(objects):
    with pytest.raises(NotFound):
        objects.get("nope")
    with pytest.raises(NotFound):
        objects.get("nope", 5, 10)
    with pytest.raises(NotFound):
        objects.get_with_etag("nope")


def test_get_with_etag_matches_head_and_put(objects):
    etag = objects.put("k", b"v1")
    data, etag2 = objects.get_with_etag("k")
    assert data == b"v1" and etag2 == etag == objects.head("k").etag


def test_create_if_absent(objects):
    objects.put("once", b"first", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        objects.put("once", b"second", if_none_match=True)
    assert objects.get("once") == b"first", "the losing write must not change the object"


def test_compare_and_swap(objects):
    etag = objects.put("cas", b"v1")
    new = objects.put("cas", b"v2", if_match=etag)
    assert new != etag
    assert objects.get_with_etag("cas") == (b"v2", new)
    with pytest.raises(PreconditionFailed):
        objects.put("cas", b"stale", if_match=etag)
    assert objects.get("cas") == b"v2"
    with pytest.raises(PreconditionFailed):
        objects.put("cas", b"bogus", if_match='"0123456789abcdef0123456789abcdef"')
    assert objects.get("cas") == b"v2"


def test_compare_and_swap_on_a_missing_object_loses(objects):
    with pytest.raises(PreconditionFailed):
        objects.put("never-written", b"x", if_match='"0123456789abcdef0123456789abcdef"')
    assert not objects.exists("never-written")


def test_racing_create_if_absent_has_one_winner(objects):
    winners, losers = [], []
    barrier = threading.Barrier(8)

    def race(i):
        barrier.wait()
        try:
            objects.put("race", f"writer {i}".encode(), if_none_match=True)
            winners.append(i)
        except PreconditionFailed:
            losers.append(i)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1 and len(losers) == 7
    assert objects.get("race") == f"writer {winners[0]}".encode()


def test_racing_compare_and_swap_loses_no_update(objects):
    objects.put("counter", b"0")

    def bump(n):
        for _ in range(n):
            while True:
                data, etag = objects.get_with_etag("counter")
                try:
                    objects.put("counter", str(int(data) + 1).encode(), if_match=etag)
                    break
                except PreconditionFailed:
                    continue

    threads = [threading.Thread(target=bump, args=(10,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert objects.get("counter") == b"40"


def test_list_in_key_order(objects):
    keys = ["b/2", "a/x/1", "a/1", "a/10", "a/2", "ab", "a-b/1", "c", "a/x/y/z"]
    for k in keys:
        objects.put(k, k.encode())
    assert [o.key for o in objects.list("")] == sorted(keys)
    assert [o.key for o in objects.list("a/")] == ["a/1", "a/10", "a/2", "a/x/1", "a/x/y/z"]
    assert [o.key for o in objects.list("a/1")] == ["a/1", "a/10"]
    assert [o.key for o in objects.list("a")] == sorted(k for k in keys if k.startswith("a"))
    assert [o.key for o in objects.list("nothing/")] == []
    sizes = {o.key: o.size for o in objects.list("a/x/")}
    assert sizes == {"a/x/1": 5, "a/x/y/z": 7}


def test_list_many(objects):
    # More than one S3 listing page (1000 keys).
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: objects.put(f"many/{i:05d}", b""), range(1005)))
    keys = [o.key for o in objects.list("many/")]
    assert keys == [f"many/{i:05d}" for i in range(1005)]


def test_list_prefixes(objects):
    for k in ["p/a/1", "p/a/2", "p/b/x/1", "p/file", "p/c.d/1", "q/z/1"]:
        objects.put(k, b"")
    assert objects.list_prefixes("p/") == ["a", "b", "c.d"]
    assert objects.list_prefixes("p/b/") == ["x"]
    assert objects.list_prefixes("") == ["p", "q"]
    assert objects.list_prefixes("none/") == []


def test_delete(objects):
    etag = objects.put("d", b"x")
    objects.delete("d")
    assert not objects.exists("d")
    objects.delete("d")  # absent is not an error
    etag = objects.put("d", b"y")
    objects.put("d", b"z")
    with pytest.raises(PreconditionFailed):
        objects.delete("d", if_match=etag)
    assert objects.get("d") == b"z"
    objects.delete("d", if_match=objects.head("d").etag)
    assert not objects.exists("d")


def test_put_stream(objects):
    data = os.urandom(9 << 20) + b"tail"  # more than one 8 MiB read
    objects.put_stream("big", io.BytesIO(data))
    assert objects.head("big").size == len(data)
    assert objects.get("big") == data
    assert objects.get("big", 8 << 20, (8 << 20) + 100) == data[8 << 20 : (8 << 20) + 100]


class _FailingAtEnd(io.RawIOBase):
    """Serves bytes, then raises where EOF would be (as the publisher's digest check does)."""

    def __init__(self, data):
        self.buf = io.BytesIO(data)

    def readable(self):
        return True

    def read(self, n=-1):
        chunk = self.buf.read(n)
        if not chunk:
            raise CorruptRecord("source changed while it was being uploaded")
        return chunk


def test_put_stream_aborted_by_the_reader_stores_nothing(objects):
    with pytest.raises(CorruptRecord):
        objects.put_stream("aborted", _FailingAtEnd(b"x" * 100_000))
    assert not objects.exists("aborted")
    assert [o.key for o in objects.list("")] == []


def test_local_store_refuses_escaping_keys(tmp_path):
    s = LocalStore(str(tmp_path / "s"))
    for key in ("../x", "a/../../x", "/etc/passwd", "a\x00b"):
        with pytest.raises(ValueError):
            s.put(key, b"x")
    assert not (tmp_path / "x").exists()


def test_local_store_hides_its_temp_folder(tmp_path):
    s = LocalStore(str(tmp_path / "s"))
    s.put("a/b", b"x")
    s.put("c", b"y", if_match=None)
    assert [o.key for o in s.list("")] == ["a/b", "c"]
    assert s.list_prefixes("") == ["a"]


def test_s3_content_named_by_its_digest_is_sent_unsigned_and_reads_back_exact(objects):
    """Objects and packs (named by the blake3 of their bytes, checked by every read) go with
    UNSIGNED-PAYLOAD and no CRC32 (two passes over every byte saved); anything else, whose
    bytes nothing else checks, keeps its signed body."""
    if not hasattr(objects, "bucket"):
        pytest.skip("S3 only")
    from artfs.digest import digest_bytes
    from artfs.store.keys import object_key, pack_key

    sent: dict[str, dict] = {}

    def record(request, **kwargs):
        text = lambda v: v.decode() if isinstance(v, bytes) else v  # noqa: E731
        sent[request.url.rsplit("/", 1)[-1]] = {text(k): text(v) for k, v in request.headers.items()}

    objects.client.meta.events.register("before-send.s3.PutObject", record)
    objects._uploader().meta.events.register("before-send.s3.PutObject", record)
    data = os.urandom(3 << 20)
    obj, pack = object_key(digest_bytes(data)), pack_key(digest_bytes(data[:1000]))
    objects.put(obj, data)
    objects.put(pack, data[:1000])
    objects.put("refs/latest.json", b'{"v": 1}')
    assert objects.get(obj) == data and objects.get(pack) == data[:1000]
    for key in (obj, pack):
        headers = sent[key.rsplit("/", 1)[-1]]
        assert headers["X-Amz-Content-SHA256"] == "UNSIGNED-PAYLOAD"
        assert not any(h.lower().startswith("x-amz-checksum") for h in headers)
    signed = sent["latest.json"]
    assert len(signed["X-Amz-Content-SHA256"]) == 64  # the body's SHA-256
