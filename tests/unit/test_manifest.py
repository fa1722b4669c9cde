"""The columnar manifest: building, lookups, encoding, and refusing bad input."""

import msgpack
import pytest
import zstandard

from artfs.digest import CHUNK_SIZE, DIGEST_SIZE, digest_bytes
from artfs.errors import CorruptRecord, InvalidInput
from artfs.store.manifest import Entry, Manifest

PACK_A = digest_bytes(b"pack a")
PACK_B = digest_bytes(b"pack b")


def packed(path, data=b"x", pack=PACK_A, offset=0, mode=0o644):
    return Entry(path, len(data), digest_bytes(data), mode, pack=pack, offset=offset)


def sample_entries():
    big = 2 * CHUNK_SIZE + 5
    return [
        packed("images/cat.png", b"cat", PACK_A, 0),
        packed("images/dog.png", b"dog", PACK_A, 3),
        packed("images/sub/bird.png", b"bird", PACK_B, 0, mode=0o755),
        packed("labels.csv", b"a,b\n", PACK_B, 4),
        Entry("model/weights.bin", big, digest_bytes(b"w"), 0o644, chunks=bytes(3 * DIGEST_SIZE)),
        Entry("model/small.bin", 10, digest_bytes(b"s")),  # stored alone, no chunks needed
        Entry("refs/remote.txt", -1, bytes(DIGEST_SIZE), ref={"uri": "s3://b/k", "etag": '"abc"'}),
        packed("empty", b"", PACK_A, 7),
    ]


def roundtrip(m: Manifest) -> Manifest:
    return Manifest.decode(m.encode(), "test manifest")


def test_round_trip_keeps_every_field():
    entries = sample_entries()
    m = Manifest.from_entries(entries)
    back = roundtrip(m)
    assert [e.path for e in back] == sorted(e.path for e in entries)
    by_path = {e.path: e for e in entries}
    for e in back:
        orig = by_path[e.path]
        assert (e.size, e.digest, e.mode, e.pack, e.offset, e.chunks, e.ref) == (
            orig.size,
            orig.digest,
            orig.mode,
            orig.pack,
            orig.offset,
            orig.chunks,
            orig.ref,
        ), e.path
    assert back.encode() == m.encode(), "encoding must be deterministic (same content, same digest)"
    assert back.digest == m.digest
    assert back.reference_count == 1
    assert back.total_size == sum(e.size for e in entries if e.size > 0)
    assert back.get("refs/remote.txt").is_reference
    assert back.get("images/cat.png").is_packed
    assert not back.get("model/small.bin").is_packed


def test_order_of_input_does_not_change_the_manifest():
    entries = sample_entries()
    assert Manifest.from_entries(entries).encode() == Manifest.from_entries(entries[::-1]).encode()


def test_modes_are_kept_but_only_the_executable_bit_is_identity():
    m = Manifest.from_entries([packed("a", mode=0o700), packed("b", mode=0o600), packed("c", mode=0o4711)])
    assert [e.mode for e in m] == [0o700, 0o600, 0o4711]
    same = Manifest.from_entries([packed("a", mode=0o755), packed("b", mode=0o644), packed("c", mode=0o755)])
    assert m.content_digest() == same.content_digest()


def test_empty_manifest():
    m = Manifest.from_entries([])
    back = roundtrip(m)
    assert len(back) == 0 and list(back) == []
    assert back.get("x") is None
    assert list(back.children("")) == []
    assert back.under("") == range(0)
    assert back.total_size == 0


def test_paths_are_normalized_at_build():
    m = Manifest.from_entries([packed("./a//b/"), packed("c/./d")])
    assert m.paths == ["a/b", "c/d"]


def test_lookups():
    m = roundtrip(Manifest.from_entries(sample_entries()))
    assert m.get("images/cat.png").size == 3
    assert m.get("images") is None and m.get("nope") is None
    assert m.index("labels.csv") == m.paths.index("labels.csv")
    assert m.is_dir("") and m.is_dir("images") and m.is_dir("images/sub") and m.is_dir("model")
    assert not m.is_dir("images/cat.png") and not m.is_dir("imag") and not m.is_dir("nope")
    assert list(m.children("")) == [
        ("empty", 0),
        ("images", None),
        ("labels.csv", m.index("labels.csv")),
        ("model", None),
        ("refs", None),
    ]
    assert [(n, i is None) for n, i in m.children("images")] == [("cat.png", False), ("dog.png", False), ("sub", True)]
    assert list(m.children("images/sub")) == [("bird.png", m.index("images/sub/bird.png"))]
    assert list(m.children("nope")) == []
    assert [m.paths[i] for i in m.under("images")] == ["images/cat.png", "images/dog.png", "images/sub/bird.png"]
    assert [m.paths[i] for i in m.under("images/dog.png")] == ["images/dog.png"]
    assert list(m.under("imag")) == [] and list(m.under("nope")) == []
    assert len(m.under("")) == len(m)


def test_children_with_names_sorting_around_the_separator():
    # '-' and '.' sort before '/', '0' right after it: a folder must be listed once,
    # its contents never leak into the parent, and siblings are not skipped.
    names = ["a-b", "a.txt", "a/x", "a/y/z", "a0", "a/y0"]
    m = Manifest.from_entries([packed(n) for n in names])
    assert [n for n, _ in m.children("")] == ["a-b", "a.txt", "a", "a0"]
    assert [(n, i is None) for n, i in m.children("a")] == [("x", False), ("y", True), ("y0", False)]
    assert [m.paths[i] for i in m.under("a")] == ["a/x", "a/y/z", "a/y0"]


@pytest.mark.parametrize(
    "paths",
    [
        ["../etc/passwd"],
        ["a/../../b"],
        ["/etc/passwd"],
        ["a\x00b"],
        [""],
        ["."],
        ["a", "a"],
        ["a/b", "./a/b"],  # duplicates, also after normalization
        ["a", "a/b"],
        ["a", "a-b", "a/b"],  # a file and a folder of the same name, adjacent or not
        ["x/y", "x/y/z/w"],
    ],
)
def test_bad_paths_refused_at_build(paths):
    with pytest.raises(InvalidInput):
        Manifest.from_entries([packed(p) for p in paths])


def test_piece_index_digests_survive_encoding_and_older_manifests_have_none():
    big = Entry(
        "w.bin", 2 * CHUNK_SIZE, digest_bytes(b"w"), chunks=bytes(2 * DIGEST_SIZE), piece_index=digest_bytes(b"index")
    )
    old = Entry("old.bin", 2 * CHUNK_SIZE, digest_bytes(b"o"), chunks=bytes(2 * DIGEST_SIZE))
    m = Manifest.decode(Manifest.from_entries([big, old]).encode())
    assert m.get("w.bin").piece_index == digest_bytes(b"index")
    assert m.get("old.bin").piece_index == b""
    doc = _doc(Manifest.from_entries([old]))
    assert "piece_indexes" not in doc, "a manifest without piece indexes is encoded as before them"


def test_bad_piece_index_is_a_corrupt_manifest():
    m = Manifest.from_entries(sample_entries())
    doc = _doc(m)
    doc["piece_indexes"] = {0: digest_bytes(b"x")}  # a packed entry has no piece index
    with pytest.raises(CorruptRecord):
        Manifest.decode(_encode(doc))
    doc["piece_indexes"] = {m.index("model/weights.bin"): b"short"}
    with pytest.raises(CorruptRecord):
        Manifest.decode(_encode(doc))


def test_large_object_needs_its_chunk_digests():
    with pytest.raises(InvalidInput):
        Manifest.from_entries([Entry("big", CHUNK_SIZE + 1, digest_bytes(b"x"), chunks=b"")])


@pytest.mark.parametrize("path", ["odd\nname.txt", "dir\n/x"])
def test_newline_in_a_file_name_is_refused_at_build(path):
    # Whatever is accepted at build must load again; manifests refuse newlines on read.
    with pytest.raises(InvalidInput):
        Manifest.from_entries([packed(path)])


# -- corrupt encodings ----------------------------------------------------------------


def _doc(m: Manifest) -> dict:
    return msgpack.unpackb(zstandard.ZstdDecompressor().decompress(m.encode()), raw=False, strict_map_key=False)


def _encode(doc: dict) -> bytes:
    return zstandard.ZstdCompressor().compress(msgpack.packb(doc, use_bin_type=True))


def _corrupt(name):
    m = Manifest.from_entries(sample_entries())
    good = m.encode()
    doc = _doc(m)
    if name == "truncated":
        return good[: len(good) // 2]
    if name == "empty":
        return b""
    if name == "garbage":
        return b"\x00" * 100
    if name == "byte flipped":
        return good[:-10] + bytes([good[-10] ^ 0xFF]) + good[-9:]
    if name == "not msgpack":
        return zstandard.ZstdCompressor().compress(b"\xc1\xc1\xc1")
    if name == "not a map":
        return _encode([1, 2, 3])
    if name == "wrong format":
        doc["format"] = 99
    elif name == "missing column":
        del doc["sizes"]
    elif name == "short column":
        doc["sizes"] = doc["sizes"][:-8]
    elif name == "odd column bytes":
        doc["offsets"] = doc["offsets"][:-3]
    elif name == "short digests":
        doc["digests"] = doc["digests"][:-1]
    elif name == "dotdot path":
        doc["paths"][0] = "../../etc/passwd"
    elif name == "absolute path":
        doc["paths"][0] = "/etc/passwd"
    elif name == "dot path":
        doc["paths"][-1] = "refs/./x"
    elif name == "empty component":
        doc["paths"][-1] = "refs//x"
    elif name == "trailing slash":
        doc["paths"][-1] = "refs/"
    elif name == "newline path":
        doc["paths"][0] = "a\nb"
    elif name == "nul path":
        doc["paths"][0] = "a\x00b"
    elif name == "unsorted":
        doc["paths"][0], doc["paths"][1] = doc["paths"][1], doc["paths"][0]
    elif name == "duplicate":
        doc["paths"][1] = doc["paths"][0]
    elif name == "path not text":
        doc["paths"][0] = 42
    elif name == "bad pack index":
        packs = bytearray(doc["packs"])
        packs[0:8] = (99).to_bytes(8, "little", signed=True)
        doc["packs"] = bytes(packs)
    else:
        raise AssertionError(name)
    return _encode(doc)


CORRUPTIONS = [
    "truncated",
    "empty",
    "garbage",
    "byte flipped",
    "not msgpack",
    "not a map",
    "wrong format",
    "missing column",
    "short column",
    "odd column bytes",
    "short digests",
    "dotdot path",
    "absolute path",
    "dot path",
    "empty component",
    "trailing slash",
    "newline path",
    "nul path",
    "unsorted",
    "duplicate",
    "path not text",
    "bad pack index",
]


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_corrupt_encodings_raise_corrupt_record(name):
    data = _corrupt(name)
    with pytest.raises(CorruptRecord) as info:
        Manifest.decode(data, "manifests/abc123")
    assert "manifests/abc123" in str(info.value), "the error must name the record"
