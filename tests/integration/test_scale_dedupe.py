"""A commit's cost does not depend on how much else the store holds (issue 17): dedupe of
small files reads only the dedupe shards of the digests being added (artfs/versions/dedupe.py),
never every pack index; old stores still dedupe; gc never lets a commit reuse a collected pack."""

from __future__ import annotations

import os

from artfs import Store
from artfs.digest import digest_bytes
from artfs.names import ArtifactName
from artfs.store.location import open_store
from artfs.versions import lifecycle
from artfs.versions.dedupe import FORMAT_KEY, shard_key, shard_of
from artfs.versions.publish import FileSource


def sources(tmp_path, files: dict[str, bytes]) -> list[FileSource]:
    root = tmp_path / f"src-{os.urandom(4).hex()}"
    out = []
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        out.append(FileSource(name, str(path)))
    return out


def publish(store: Store, name: str, tmp_path, files: dict[str, bytes]):
    return store.publish(ArtifactName("p", name), "dataset", sources(tmp_path, files))


def shard_reads(counter) -> list[str]:
    return [k for k, _ in counter.read_from("dedupe/") if k != FORMAT_KEY]


def big_store(store: Store, tmp_path, n: int = 600) -> dict[str, bytes]:
    files = {f"d{i // 100}/f{i:04d}.bin": os.urandom(200 + i) for i in range(n)}
    publish(store, "big", tmp_path, files)
    return files


def test_a_one_file_commit_reads_only_the_shard_of_its_digest(counted, tmp_path):
    store, counter = counted
    files = big_store(store, tmp_path)
    shards = {i.key for i in open_store(store.url).list("dedupe/")}
    assert len(shards) > 100  # 600 digests over 256 shards

    counter.reset()
    # New content whose shard exists (a read of a missing shard is a 404 the counter does not see).
    new = next(d for d in (os.urandom(300) for _ in range(10_000)) if shard_key(shard_of(digest_bytes(d))) in shards)
    r = publish(store, "one", tmp_path, {"new.bin": new})
    assert r.created
    assert counter.read_from("index/") == []  # no pack index is read
    assert shard_reads(counter) == [shard_key(shard_of(digest_bytes(new)))]
    assert [k for k, _ in counter.written("dedupe/")] == [shard_key(shard_of(digest_bytes(new)))]

    # A file the store holds already: found in its shard, its pack checked, nothing uploaded.
    counter.reset()
    old = files["d3/f0321.bin"]
    r = publish(store, "two", tmp_path, {"copy.bin": old})
    assert counter.written("packs/") == [] and counter.written("dedupe/") == []
    assert shard_reads(counter) == [shard_key(shard_of(digest_bytes(old)))]
    assert len([k for op, k in counter.other if op == "head" and k.startswith("index/")]) == 1
    out = tmp_path / "out"
    store.download(r.version, str(out))
    assert (out / "copy.bin").read_bytes() == old


def test_an_old_store_dedupes_then_gets_its_shards(store_url, cache_dir, tmp_path):
    from conftest import CountingStore

    store = Store(store_url, cache_dir)
    files = big_store(store, tmp_path, 300)
    raw = open_store(store_url)
    for info in list(raw.list("dedupe/")):  # as an artfs from before the shards left it
        raw.delete(info.key)

    counter = CountingStore(open_store(store_url))
    store = Store(store_url, cache_dir, objects=counter)
    old, new = files["d1/f0100.bin"], os.urandom(500)
    publish(store, "c", tmp_path, {"old.bin": old, "new.bin": new})
    assert len(counter.read_from("index/")) >= 1 or os.listdir(os.path.join(cache_dir, "index"))
    assert len(counter.written("packs/")) == 1 and counter.written("packs/")[0][1] == 500  # `old` deduped
    assert raw.exists(FORMAT_KEY)
    assert len(list(raw.list("dedupe/"))) > 100  # every stored small file folded into shards

    counter.reset()
    publish(store, "d", tmp_path, {"again.bin": old})
    assert counter.written("packs/") == []
    assert counter.read_from("index/") == []
    assert shard_reads(counter) == [shard_key(shard_of(digest_bytes(old)))]


def test_gc_keeps_the_shards_and_a_collected_pack_is_never_reused(counted, tmp_path):
    store, counter = counted
    gone = os.urandom(700)
    v0 = publish(store, "a", tmp_path, {"x.bin": gone}).version
    publish(store, "a", tmp_path, {"y.bin": os.urandom(800)})
    lifecycle.delete_version(store.registry, v0, force=True)
    shards_before = {i.key for i in open_store(store.url).list("dedupe/")}
    report = lifecycle.collect(store.registry, grace=0)
    assert any(k.startswith("packs/") for k, _ in report.deleted)
    assert {i.key for i in open_store(store.url).list("dedupe/")} >= shards_before  # gc keeps them

    # The shard still names the collected pack: the commit sees its index is gone and stores
    # the bytes again, so the new version reads back.
    counter.reset()
    r = publish(store, "b", tmp_path, {"x.bin": gone})
    assert [n for _, n in counter.written("packs/")] == [700]
    out = tmp_path / "out"
    Store(store.url, str(tmp_path / "fresh-cache")).download(r.version, str(out))
    assert (out / "x.bin").read_bytes() == gone


def test_commits_at_once_lose_no_shard_entry(store_url, cache_dir, tmp_path):
    """Eight commits at once, each adding small files to the same few shards: every file
    ends up findable (compare-and-swap on the shards loses no update)."""
    import threading

    from artfs.versions.dedupe import PackIndex

    store = Store(store_url, cache_dir)
    publish(store, "seed", tmp_path, {"seed.bin": b"seed"})
    # Contents whose digests share two shards, so the eight commits race on them.
    wanted = {shard_of(digest_bytes(b"x0")), shard_of(digest_bytes(b"x1"))}
    pool = (os.urandom(40) for _ in range(200_000))
    files = [d for d in pool if shard_of(digest_bytes(d)) in wanted][:24]
    assert len(files) == 24
    errors = []

    def commit(i: int) -> None:
        try:
            publish(Store(store_url, cache_dir), f"a{i}", tmp_path, {f"f{j}": files[3 * i + j] for j in range(3)})
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=commit, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    index = PackIndex(open_store(store_url), None)
    assert all(index.find(digest_bytes(d)) is not None for d in files)
