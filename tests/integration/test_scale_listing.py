"""Version listings scale (issue 17): a fresh process lists an artifact's versions from one
LIST and its version index (docs/store-format.md, "Version index"), never by reading every
record; the index is a cache, so stale, missing or damaged copies never show."""

from __future__ import annotations

import json
import time

from conftest import CountingStore

from artfs import Store
from artfs.names import ArtifactName
from artfs.store.location import open_store
from artfs.store.registry import Registry
from artfs.versions.publish import FileSource

A = ArtifactName("p", "a")


def publish(store: Store, tmp_path, text: str):
    path = tmp_path / f"f-{time.monotonic_ns()}"
    path.write_text(text)
    return store.publish(A, "dataset", [FileSource("f.txt", str(path))]).version


def fresh(store_url) -> tuple[Registry, CountingStore]:
    counter = CountingStore(open_store(store_url))
    return Registry(counter), counter


def record_reads(counter: CountingStore) -> list[str]:
    return [k for k, _ in counter.reads if "/versions/" in k]


def copy_records(store_url, count: int) -> None:
    """v1..v(count-1) as copies of v0's record written straight to the store, with no
    version index: what an older artfs left behind."""
    objects = open_store(store_url)
    body = objects.get("artifacts/p/a/versions/v0.json")
    for n in range(1, count):
        objects.put(f"artifacts/p/a/versions/v{n}.json", body)
    for info in list(objects.list("artifacts/p/a/version-index/")):
        objects.delete(info.key)


def test_fresh_listing_reads_the_index_not_each_record(store_url, cache_dir, tmp_path):
    store = Store(store_url, cache_dir)
    made = [publish(store, tmp_path, f"content {i}") for i in range(5)]
    reg, counter = fresh(store_url)
    versions = reg.versions(A)
    assert [r.number for r in versions] == [0, 1, 2, 3, 4]
    assert [r.manifest for r in versions] == [r.manifest for r in made]
    assert record_reads(counter) == []  # every record came from the index
    assert [k for k, _ in counter.reads] == ["artifacts/p/a/version-index/b0.json"]


def test_a_changed_record_is_read_again_not_taken_from_a_stale_copy(store_url, cache_dir, tmp_path):
    store = Store(store_url, cache_dir)
    publish(store, tmp_path, "one")
    publish(store, tmp_path, "two")
    # Another writer changes v1 and dies before updating the index: the copy is now stale.
    objects = open_store(store_url)
    doc = json.loads(objects.get("artifacts/p/a/versions/v1.json"))
    doc["description"] = "changed elsewhere"
    objects.put("artifacts/p/a/versions/v1.json", json.dumps(doc).encode())
    reg, counter = fresh(store_url)
    assert [r.description for r in reg.versions(A)] == ["", "changed elsewhere"]
    assert record_reads(counter) == ["artifacts/p/a/versions/v1.json"]
    # … and that reader put the new copy back: the next fresh reader reads no record.
    reg, counter = fresh(store_url)
    assert [r.description for r in reg.versions(A)] == ["", "changed elsewhere"]
    assert record_reads(counter) == []


def test_set_and_delete_keep_the_index_current(store_url, cache_dir, tmp_path):
    from artfs.versions.lifecycle import delete_version

    store = Store(store_url, cache_dir)
    v0 = publish(store, tmp_path, "one")
    publish(store, tmp_path, "two")
    store.registry.update_version(v0, lambda r: (setattr(r, "description", "first"), r)[1])
    delete_version(store.registry, store.registry.version(A, 1))
    reg, counter = fresh(store_url)
    assert [(r.number, r.description) for r in reg.versions(A)] == [(0, "first")]
    assert record_reads(counter) == []


def test_a_damaged_index_costs_speed_never_correctness(store_url, cache_dir, tmp_path):
    store = Store(store_url, cache_dir)
    publish(store, tmp_path, "one")
    publish(store, tmp_path, "two")
    objects = open_store(store_url)
    objects.put("artifacts/p/a/version-index/b0.json", b"{not json")
    reg, counter = fresh(store_url)
    assert [r.number for r in reg.versions(A)] == [0, 1]
    assert sorted(record_reads(counter)) == ["artifacts/p/a/versions/v0.json", "artifacts/p/a/versions/v1.json"]
    # A copy that lies about a record's ETag is not used either.
    objects.put(
        "artifacts/p/a/version-index/b0.json",
        json.dumps(
            {
                "format": 1,
                "records": {
                    "0": {
                        "etag": "nope",
                        "record": {"format": 1, "manifest": "0" * 64, "type": "dataset", "created": 0},
                    }
                },
            }
        ).encode(),
    )
    reg, counter = fresh(store_url)
    assert [r.manifest for r in reg.versions(A)] == [r.manifest for r in store.registry.versions(A)]
    assert "0" * 64 not in [r.manifest for r in reg.versions(A)]


def test_an_old_store_lists_and_gets_its_index(store_url, cache_dir, tmp_path):
    """Records with no index (an older artfs) list correctly; the first reader writes the
    index (two blocks for 300 versions) and later fresh readers read no record."""
    store = Store(store_url, cache_dir)
    publish(store, tmp_path, "one")
    copy_records(store_url, 300)
    reg, counter = fresh(store_url)
    assert [r.number for r in reg.versions(A)] == list(range(300))
    assert len(record_reads(counter)) == 300
    assert sorted(k for k, _ in counter.writes) == [
        "artifacts/p/a/version-index/b0.json",
        "artifacts/p/a/version-index/b1.json",
    ]
    reg, counter = fresh(store_url)
    assert [r.number for r in reg.versions(A)] == list(range(300))
    assert record_reads(counter) == []
    assert sorted(k for k, _ in counter.reads) == [
        "artifacts/p/a/version-index/b0.json",
        "artifacts/p/a/version-index/b1.json",
    ]


def test_the_cli_on_many_versions(artfs, store_url, tmp_path):
    """`artfs ls` and `artfs info` on 300 versions: right answers, and fast once indexed."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.txt").write_text("x")
    artfs("put", "-n", "p/a", "-t", "dataset", src).ok()
    copy_records(store_url, 300)
    lines = artfs("ls", "p/a").ok().out.splitlines()
    assert len(lines) == 300 and lines[0].startswith("v0\t") and lines[-1].startswith("v299\tlatest")
    assert json.loads(artfs("info", "p/a").ok().out)["version"] == "v299"
    (src / "g.txt").write_text("y")
    assert artfs("put", "-n", "p/a", "-t", "dataset", src).ok().out == "p/a:v300"
    t = time.monotonic()
    assert json.loads(artfs("info", "p/a").ok().out)["version"] == "v300"
    assert time.monotonic() - t < 5  # generous: this machine is shared; the figures are in docs/benchmarks.md


def test_a_commit_does_not_fetch_a_manifest_whose_record_shows_other_content(store_url, cache_dir, tmp_path):
    """Whether a new version repeats the newest one (or a racer's) is first told from the
    records' file counts and sizes: many hosts racing for vN do not each fetch every winner's
    manifest."""
    store = Store(store_url, cache_dir)
    publish(store, tmp_path, "one")
    counter = CountingStore(open_store(store_url))
    fresh_store = Store(store_url, cache_dir, objects=counter)
    (tmp_path / "g").write_text("two files now")
    (tmp_path / "h").write_text("and more bytes")
    r = fresh_store.publish(
        A, "dataset", [FileSource("f.txt", str(tmp_path / "g")), FileSource("g.txt", str(tmp_path / "h"))]
    )
    assert r.created and r.version.number == 1
    assert counter.read_from("manifests/") == []
    # Same count and size but other bytes: the manifest is fetched, and it is a new version.
    (tmp_path / "i").write_text("TWO FILES NOW")
    r = fresh_store.publish(
        A, "dataset", [FileSource("f.txt", str(tmp_path / "i")), FileSource("g.txt", str(tmp_path / "h"))]
    )
    assert r.created and r.version.number == 2
