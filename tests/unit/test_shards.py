"""Sharded manifests answer every question as the whole manifest does, reading only the
shards a question needs; where shards end depends on the paths alone."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from artfs.digest import digest_bytes
from artfs.errors import CorruptRecord, InvalidInput
from artfs.store import outline, shards
from artfs.store.manifest import Entry, Folder, Manifest
from artfs.store.shards import ShardedManifest, ShardWriter

D = bytes(range(32))


@pytest.fixture(autouse=True)
def small_shards(monkeypatch):
    monkeypatch.setattr(shards, "SHARD_FILES", 3)  # a shard every ~3 files


class Objects(dict):
    """Shards by digest, counting what is read."""

    def __init__(self):
        super().__init__()
        self.reads: list[bytes] = []

    def put(self, digest: bytes, encoded: bytes) -> None:
        assert digest_bytes(encoded) == digest
        self[digest] = encoded

    def load(self, digest: bytes) -> Manifest:
        self.reads.append(digest)
        return Manifest.decode(self[digest])


def sharded(m: Manifest) -> tuple[ShardedManifest, Objects]:
    objects = Objects()
    root = shards.decode(shards.split(m, objects.put, objects.load).encode(), "root", objects.load)
    assert isinstance(root, ShardedManifest)
    objects.reads.clear()
    return root, objects


names = st.sampled_from(["a", "b", "a-b", "a.c", "c", "z", "0", "dd"])
paths = st.lists(names, min_size=1, max_size=4).map("/".join)


@st.composite
def trees(draw):
    files = sorted(set(draw(st.lists(paths, min_size=0, max_size=40))))
    files = [p for p in files if not any(q.startswith(p + "/") for q in files)]  # a file is not a folder
    entries = [
        Entry(p, len(p), D, 0o755 if len(p) % 2 else 0o644, pack=D, offset=i, mtime_ns=i + 1)
        for i, p in enumerate(files)
    ]
    folders = {p.rsplit("/", 1)[0] for p in files if "/" in p}
    extra = [
        p for p in draw(st.lists(paths, max_size=6)) if p not in files and not any(p.startswith(f + "/") for f in files)
    ]
    folders |= set(extra)
    return Manifest.from_entries(entries, [Folder("", 0o755, 1)] + [Folder(f, 0o700, 2) for f in sorted(folders)])


def all_dirs(m: Manifest) -> set[str]:
    out = {""}
    for p in [*m.paths, *m.folders]:
        parts = p.split("/")
        out.update("/".join(parts[:k]) for k in range(1, len(parts) + (0 if p in m.paths else 1)))
    return out


# Roots with a full outline, with shards whose parents are too many to name, and with none.
outlines = st.sampled_from([(1 << 16, 16), (1 << 16, 1), (0, 16)])


@settings(max_examples=200, deadline=None)
@given(m=trees(), probes=st.lists(paths, max_size=8), limits=outlines)
def test_a_sharded_manifest_answers_as_the_whole_one(m, probes, limits):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(outline, "ROOT_FOLDERS", limits[0])
        mp.setattr(outline, "PARENTS_MAX", limits[1])
        s, _ = sharded(m)
    assert (s.outline is None) == (limits[0] == 0)
    assert len(s) == len(m) and list(s.paths) == m.paths
    assert [e.path for e in s] == m.paths
    assert s.total_size == m.total_size
    assert [f.path for f in s.folder_entries()] == m.folders
    assert s.empty_folders() == m.empty_folders()
    for i in range(len(m)):
        assert s.entry(i) == m.entry(i) and s.stat(i) == m.stat(i)
    for d in sorted(all_dirs(m) | set(probes)):
        assert s.is_dir(d) == m.is_dir(d), d
        assert s.index(d) == m.index(d), d
        assert s.folder(d) == m.folder(d), d
        assert list(s.under(d)) == list(m.under(d)), d
        if m.is_dir(d):
            assert list(s.children(d)) == sorted(m.children(d)), d
            assert s.subfolder_count(d) == m.subfolder_count(d), d


@settings(max_examples=60, deadline=None)
@given(m=trees())
def test_identity_does_not_depend_on_times_or_how_shards_were_cut(m):
    s, _ = sharded(m)
    later = Manifest.from_entries(
        [Entry(e.path, e.size, e.digest, e.mode & 0o755, pack=D, mtime_ns=7) for e in m], m.folder_entries()
    )
    t, _ = sharded(later)
    assert s.content_digest() == t.content_digest()
    assert [x.lo for x in s.shards] == [x.lo for x in t.shards], "shards end where the paths say"


def _flat(n: int, folders: int = 1) -> Manifest:
    entries = [Entry(f"d{k % folders:03d}/f{k:05d}", 1, D, pack=D, offset=k) for k in range(n)]
    return Manifest.from_entries(entries, [Folder(f"d{k:03d}", 0o755, 1) for k in range(folders)])


def test_a_lookup_reads_one_shard_and_a_listing_only_its_folders_shards(monkeypatch):
    monkeypatch.setattr(shards, "SHARD_FILES", 64)
    s, objects = sharded(_flat(20_000, folders=20))
    assert len(s.shards) > 100
    assert s.get("d007/f00007").size == 1
    assert len(objects.reads) == 1
    objects.reads.clear()
    assert [n for n, _ in s.children("")] == [f"d{k:03d}" for k in range(20)]
    assert not objects.reads, "the root names the folders: listing one of files in sub-folders reads no shard"
    assert s.total_size == 20_000 and not objects.reads, "whole-version figures come from the root"
    assert s.is_dir("d019") and s.folder("d019") and s.subfolder_count("") == 20 and not objects.reads
    assert len([n for n, _ in s.children("d003")]) == 1000
    assert len(objects.reads) <= len(s.shards) // 20 + 2, "a folder's listing reads the shards of its files"


def test_listing_a_folder_of_many_sub_folders_reads_no_shard(monkeypatch):
    """10,000 class folders (here 2,000 of 10 files) spread over every shard: `ls` of the
    root and `stat` of each class come from the root; a class's files from the shards holding them."""
    monkeypatch.setattr(shards, "SHARD_FILES", 64)
    entries = [Entry(f"train/c{k // 10:04d}/{k:05d}.png", 1, D, pack=D, offset=k) for k in range(20_000)]
    m = Manifest.from_entries(
        entries, [Folder("train", 0o755, 1)] + [Folder(f"train/c{c:04d}", 0o700, 3) for c in range(2000)]
    )
    s, objects = sharded(m)
    assert len(s.shards) > 200 and s.outline is not None
    assert [n for n, _ in s.children("")] == ["train"]
    assert len(list(s.children("train"))) == 2000 and s.subfolder_count("train") == 2000
    assert s.folder("train/c1234") == Folder("train/c1234", 0o700, 3)
    assert not objects.reads
    assert [n for n, _ in s.children("train/c1234")] == [f"{k:05d}.png" for k in range(12340, 12350)]
    assert 1 <= len(objects.reads) <= 3, "only the shards holding its files"


def test_a_root_written_by_an_older_artfs_reads_as_before(monkeypatch):
    """Roots without an outline (older writers) list by reading shards, with the same answers."""
    monkeypatch.setattr(shards, "SHARD_FILES", 64)
    m = _flat(5_000, folders=20)
    s, objects = sharded(m)
    old = ShardedManifest(s.shards, objects.load)  # as decoded from a root without "outline"
    assert shards.decode(old.encode(), "root", objects.load).outline is None
    assert list(old.children("")) == list(s.children("")) and old.folder_entries() == s.folder_entries()
    assert [f.path for f in old.folders_under("d003")] == ["d003"] and old.empty_folders() == s.empty_folders() == []


def test_a_damaged_outline_is_a_corrupt_record():
    s, objects = sharded(_flat(300, folders=3))
    doc = s.outline.doc()
    doc["parents"] = doc["parents"][:-1]
    with pytest.raises(CorruptRecord, match="outline"):
        outline.Outline.from_doc(doc, len(s.shards), "root")


def test_shards_refuse_keys_out_of_order_and_a_file_that_is_a_folder():
    w = ShardWriter(lambda d, e: None)
    w.add(Entry("a", 1, D, pack=D))
    with pytest.raises(InvalidInput, match="both a file and a folder"):
        w.add(Entry("a/b", 1, D, pack=D))
    w = ShardWriter(lambda d, e: None)
    w.add(Entry("b", 1, D, pack=D))
    with pytest.raises(InvalidInput, match="duplicate"):
        w.add(Folder("b"))


def test_a_root_with_overlapping_shards_is_corrupt():
    info = shards.ShardInfo("a", "c", "a", 1, D, D, 1, 0)
    data = shards.encode_root([info, shards.ShardInfo("b", "d", "b", 1, D, D, 1, 0)])
    with pytest.raises(CorruptRecord, match="overlap"):
        shards.decode(data, "root", lambda d: Manifest())


# -- commits: a patched sharded manifest is the one made whole -------------------------------
from artfs.versions import reshard  # noqa: E402


@st.composite
def edits(draw, m: Manifest):
    files = list(m.paths)
    removed_files = draw(st.lists(st.sampled_from(files), unique=True, max_size=5)) if files else []
    dirs = sorted({p.rsplit("/", 1)[0] for p in files if "/" in p})
    removed_dirs = draw(st.lists(st.sampled_from(dirs), unique=True, max_size=2)) if dirs else []
    added = draw(st.lists(paths, max_size=6))
    return removed_files, removed_dirs, added


@settings(max_examples=150, deadline=None)
@given(data=st.data(), m=trees())
def test_a_patched_manifest_is_the_one_made_whole(data, m):
    removed_files, removed_dirs, added = data.draw(edits(m))
    gone = reshard.RemovedPaths([(p, False) for p in removed_files] + [(d, True) for d in removed_dirs])
    kept = {e.path: e for e in m if not gone.covers(e.path)}
    folders = {f.path: f for f in m.folder_entries() if not gone.covers(f.path)}
    new_entries = []
    for p in added:
        # only where a file may go: not a folder, not below a file
        below = [*kept, *folders]
        if p in folders or any(q.startswith(p + "/") for q in below) or any(p.startswith(q + "/") for q in kept):
            continue
        if any(p.startswith(d + "/") for d in folders if d and gone.covers(d)):
            continue
        e = Entry(p, 9, bytes(32), 0o644, pack=bytes(range(32)), offset=1, mtime_ns=5)
        kept[p] = e
        new_entries.append(e)
    expected = Manifest.from_entries(list(kept.values()), list(folders.values()))
    s, objects = sharded(m)
    patch = reshard.ShardPatch(
        s, removed=[(p, False) for p in removed_files] + [(d, True) for d in removed_dirs], files=len(expected)
    )
    got = reshard.apply(patch, new_entries, [], objects.put)
    assert got is not None
    assert [e.path for e in got] == expected.paths and list(got) == list(expected)
    assert [f.path for f in got.folder_entries()] == expected.folders
    whole, _ = sharded(expected)
    assert got.encode() == whole.encode(), "the same shards as the tree made whole"
