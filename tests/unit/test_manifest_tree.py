"""The manifest's tree columns (times, full modes, folders): additive, and never the version's identity."""

import msgpack
import pytest
import zstandard

from artfs.errors import CorruptRecord, InvalidInput
from artfs.store.manifest import Entry, Folder, Manifest

D = bytes(range(32))


def _m(times=True, folders=True):
    entries = [
        Entry("a/x", 1, D, 0o4755, pack=D, mtime_ns=11 if times else 0),
        Entry("b", 2, D, 0o600, pack=D, mtime_ns=12 if times else 0),
    ]
    dirs = [Folder("", 0o755, 5), Folder("a", 0o700, 6), Folder("e", 0o1777, 7), Folder("e/f", 0o755, 8)]
    return Manifest.from_entries(entries, dirs if folders else ())


def test_times_modes_and_folders_survive_encoding():
    m = Manifest.decode(_m().encode())
    assert [(e.path, e.mode, e.mtime_ns) for e in m] == [("a/x", 0o4755, 11), ("b", 0o600, 12)]
    assert [(f.path, f.mode, f.mtime_ns) for f in m.folder_entries()] == [
        ("", 0o755, 5),
        ("a", 0o700, 6),
        ("e", 0o1777, 7),
        ("e/f", 0o755, 8),
    ]
    assert m.empty_folders() == ["e", "e/f"]


def test_empty_folders_are_listed_and_are_folders():
    m = _m()
    assert list(m.children("")) == [("a", None), ("b", 1), ("e", None)]
    assert list(m.children("e")) == [("f", None)]
    assert m.is_dir("e/f") and not m.is_dir("e/g")


def test_an_old_manifest_reads_as_before():
    """Encoded without the new keys (as artfs wrote before): no times, only folders files imply."""
    m = _m(times=False, folders=False)
    raw = msgpack.unpackb(zstandard.ZstdDecompressor().decompress(m.encode()), raw=False, strict_map_key=False)
    assert "mtimes" not in raw and "folders" not in raw
    back = Manifest.decode(m.encode())
    assert [e.mtime_ns for e in back] == [0, 0] and back.folder("a") is None and back.is_dir("a")


def test_identity_is_content_not_times_nor_non_executable_mode_bits():
    a = _m()
    b = Manifest.from_entries(
        [Entry("a/x", 1, D, 0o755, pack=D, mtime_ns=99), Entry("b", 2, D, 0o644, pack=D)],
        [Folder("e", 0o755, 1), Folder("e/f", 0o700, 2)],
    )
    assert a.digest != b.digest and a.content_digest() == b.content_digest()
    no_empty = Manifest.from_entries([Entry("a/x", 1, D, 0o755, pack=D), Entry("b", 2, D, 0o644, pack=D)])
    assert no_empty.content_digest() != a.content_digest(), "an empty folder is part of the tree"
    exec_b = Manifest.from_entries([Entry("a/x", 1, D, 0o755, pack=D), Entry("b", 2, D, 0o755, pack=D)])
    assert exec_b.content_digest() != no_empty.content_digest(), "the executable bit is content"


def test_a_folder_that_is_a_file_is_refused_and_bad_folders_are_corrupt():
    with pytest.raises(InvalidInput):
        Manifest.from_entries([Entry("b", 2, D, pack=D)], [Folder("b")])
    m = _m()
    m.folders = ["e", "a"]
    with pytest.raises(CorruptRecord):
        Manifest.decode(m.encode())
    m = _m()
    m.folders = ["a", "../x", "e", "e/f"]
    with pytest.raises(CorruptRecord):
        Manifest.decode(m.encode())
