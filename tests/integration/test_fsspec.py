"""`artfs://` through fsspec, as pandas and pyarrow users meet it: no mount, every byte verified,
the host's cache shared. Runs on both store backends (local folder and SeaweedFS S3)."""

from __future__ import annotations

import errno
import glob
import os

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import write_tree


@pytest.fixture
def published(artfs, tmp_path):
    """p/ds:v0 (alias best) with a CSV, a ~10 MiB parquet file and a small text file; returns the
    source folder and the frames written."""
    src = tmp_path / "src"
    rows = pd.DataFrame({"x": range(500), "y": np.arange(500) * 0.25, "s": [f"name {i}" for i in range(500)]})
    big = pd.DataFrame({"v": np.arange(1_200_000, dtype="int64"), "w": np.arange(1_200_000) % 7})
    write_tree(src, {"notes/readme.txt": "hello\n"})
    os.makedirs(src / "data")
    rows.to_csv(src / "data" / "train.csv", index=False)
    pq.write_table(pa.Table.from_pandas(big, preserve_index=False), src / "data" / "big.parquet", compression="none")
    artfs("put", str(src), "--name", "p/ds", "--type", "dataset", "--alias", "best").ok()
    return src, rows, big


def open_fs(artfs, **kw):
    return fsspec.filesystem("artfs", store=artfs.store, cache=artfs.cache, skip_instance_cache=True, **kw)


def test_pandas_reads_csv_by_url_with_no_mount(artfs, published):
    _, rows, _ = published
    opts = {"store": artfs.store, "cache": artfs.cache}
    for url in (
        "artfs://p/ds/latest/data/train.csv",
        "artfs://p/ds/best/data/train.csv",
        "artfs://p/ds:best/data/train.csv",
        "artfs://p/ds/v0/data/train.csv",
    ):
        pd.testing.assert_frame_equal(pd.read_csv(url, storage_options=opts), rows)


def test_pyarrow_reads_parquet(artfs, published):
    _, _, big = published
    fs = open_fs(artfs)
    table = pq.read_table("p/ds/v0/data/big.parquet", filesystem=fs)
    pd.testing.assert_frame_equal(table.to_pandas(), big)
    # one column of a file several MiB long: the footer and that column's pages, by ranged reads
    assert pq.read_table("p/ds/latest/data/big.parquet", filesystem=fs, columns=["w"]).num_rows == len(big)
    assert pd.read_parquet(
        "artfs://p/ds/best/data/big.parquet", storage_options={"store": artfs.store, "cache": artfs.cache}
    ).equals(big)


def test_listing_info_find_glob(artfs, published):
    src, _, _ = published
    fs = open_fs(artfs)
    assert fs.ls("", detail=False) == ["p"]
    assert fs.ls("artfs://p", detail=False) == ["p/ds"]
    assert fs.ls("p/ds", detail=False) == ["p/ds/v0", "p/ds/best", "p/ds/latest"]
    best = fs.info("p/ds/best")
    assert best["type"] == "directory" and best["islink"] and best["destination"] == "p/ds/v0"
    assert sorted(fs.ls("p/ds/v0", detail=False)) == ["p/ds/v0/data", "p/ds/v0/notes"]
    info = fs.info("p/ds:best/data/train.csv")
    assert info["type"] == "file" and info["size"] == os.path.getsize(src / "data" / "train.csv")
    assert fs.info("p/ds/v0/data")["type"] == "directory"
    assert fs.find("p/ds/latest") == [
        "p/ds/latest/data/big.parquet",
        "p/ds/latest/data/train.csv",
        "p/ds/latest/notes/readme.txt",
    ]
    assert fs.find("p/ds/v0", maxdepth=1, withdirs=True) == ["p/ds/v0", "p/ds/v0/data", "p/ds/v0/notes"]
    assert fs.glob("p/ds/latest/**/*.csv") == ["p/ds/latest/data/train.csv"]
    assert fs.glob("artfs://p/ds/v0/*/*.txt") == ["p/ds/v0/notes/readme.txt"]
    assert fs.cat("p/ds/v0/notes/readme.txt") == b"hello\n"
    assert fs.exists("p/ds/v0/data/train.csv") and not fs.exists("p/ds/v0/data/nope.csv")
    for missing in ("p/ds/v7/data/train.csv", "p/ds/nosuchalias/x", "p/nope", "q", "p/ds/v0/nope"):
        with pytest.raises(FileNotFoundError):
            fs.info(missing)


def test_ranged_reads_return_exactly_the_bytes_asked_for(artfs, published):
    src, _, _ = published
    whole = (src / "data" / "big.parquet").read_bytes()
    assert len(whole) > 3 << 20  # several chunks: ranges cross chunk and piece boundaries
    fs = open_fs(artfs)
    path = "p/ds/v0/data/big.parquet"
    for start, end in [
        (0, 10),
        (65_530, 65_600),
        ((1 << 20) - 7, (1 << 20) + 9),
        (len(whole) - 8, len(whole)),
        (123_457, 2_345_678),
        (0, len(whole)),
    ]:
        assert fs.cat_file(path, start, end) == whole[start:end], (start, end)
    assert fs.cat_file(path, -8) == whole[-8:]
    with fs.open(path, "rb", block_size=1 << 20) as f:
        f.seek(3_000_001)
        assert f.read(5000) == whole[3_000_001:3_005_001]
        f.seek(17)
        assert f.read(100) == whole[17:117]
        assert f.size == len(whole)


def test_writes_are_refused_as_read_only(artfs, published, tmp_path):
    fs = open_fs(artfs)
    (tmp_path / "local.txt").write_text("x")
    attempts = [
        lambda: fs.open("p/ds/v0/new.txt", "wb"),
        lambda: fs.pipe_file("p/ds/v0/new.txt", b"x"),
        lambda: fs.put_file(str(tmp_path / "local.txt"), "p/ds/v0/new.txt"),
        lambda: fs.rm("p/ds/v0/notes/readme.txt"),
        lambda: fs.mkdir("p/ds/v0/more"),
        lambda: fs.mv("p/ds/v0/notes/readme.txt", "p/ds/v0/r.txt"),
        lambda: fs.touch("p/ds/v0/t"),
    ]
    for attempt in attempts:
        with pytest.raises(OSError) as e:
            attempt()
        assert e.value.errno == errno.EROFS and "read-only" in str(e.value)
    assert fs.cat("p/ds/v0/notes/readme.txt") == b"hello\n"


def test_a_second_process_reads_from_the_shared_cache(artfs, published):
    fs = open_fs(artfs)
    data = fs.cat("p/ds/v0/data/big.parquet")
    fs.reader.cache.drain()
    again = open_fs(artfs)  # a new object, a new ContentCache: what the first fetched is on disk
    assert again.cat("p/ds/v0/data/big.parquet") == data
    assert again.cat("p/ds/v0/data/train.csv")
    assert again.reader.fetches == 1  # only the small files' pack; the big file came from the cache


def test_corrupt_store_object_is_refused_not_served(artfs, published, store_url):
    if store_url.startswith("s3://"):
        pytest.skip("corrupts the store's files in place: the local backend")
    src, _, _ = published
    [obj] = [
        p
        for p in glob.glob(os.path.join(store_url, "**", "objects", "*"), recursive=True)
        if os.path.getsize(p) > 1 << 20
    ]
    with open(obj, "r+b") as f:
        f.seek(2_000_000)
        byte = f.read(1)
        f.seek(2_000_000)
        f.write(bytes([byte[0] ^ 0xFF]))
    fs = open_fs(artfs)
    whole = (src / "data" / "big.parquet").read_bytes()
    assert fs.cat_file("p/ds/v0/data/big.parquet", 0, 1000) == whole[:1000]  # an intact chunk still reads
    with pytest.raises(OSError) as e:
        fs.cat_file("p/ds/v0/data/big.parquet", 1_999_990, 2_000_010)
    assert e.value.errno == errno.EIO and "does not match its digest" in str(e.value)


def test_corrupt_cache_file_is_fetched_again(artfs, published):
    src, _, _ = published
    fs = open_fs(artfs)
    fs.cat("p/ds/v0/data/big.parquet")
    fs.reader.cache.drain()
    cached = [p for p in glob.glob(os.path.join(artfs.cache, "content", "??", "*")) if os.path.getsize(p) > 1000]
    assert cached
    for p in cached:
        with open(p, "r+b") as f:
            f.write(b"\0garbage\0")
    again = open_fs(artfs)
    assert again.cat("p/ds/v0/data/big.parquet") == (src / "data" / "big.parquet").read_bytes()
    assert again.reader.fetches >= 1


def test_a_moved_alias_is_seen_after_refresh(artfs, published, tmp_path):
    src, _, _ = published
    (src / "notes" / "readme.txt").write_text("second\n")
    artfs("put", str(src), "--name", "p/ds", "--type", "dataset").ok()
    fs = open_fs(artfs, refresh=0)
    assert fs.cat("p/ds/best/notes/readme.txt") == b"hello\n"
    assert fs.cat("p/ds/latest/notes/readme.txt") == b"second\n"
    artfs("alias", "add", "p/ds:v1", "best").ok()
    assert fs.cat("p/ds/best/notes/readme.txt") == b"second\n"
    assert fs.ls("p/ds", detail=False) == ["p/ds/v0", "p/ds/v1", "p/ds/best", "p/ds/latest"]


_FS = None  # the parent's file system, used as is by forked workers (as DataLoader workers do)


def _worker_read(path: str) -> tuple[int, bytes]:
    data = _FS.cat(path)
    return os.getpid(), data


def test_forked_workers_read_through_the_parents_file_system(artfs, published):
    import multiprocessing

    global _FS
    src, _, _ = published
    _FS = open_fs(artfs)
    assert _FS.cat("p/ds/v0/notes/readme.txt") == b"hello\n"  # the parent has connections and threads now
    paths = ["p/ds/v0/data/big.parquet", "p/ds/v0/data/train.csv", "p/ds/latest/notes/readme.txt"] * 2
    with multiprocessing.get_context("fork").Pool(2) as pool:
        got = pool.map(_worker_read, paths, chunksize=1)
    assert {pid for pid, _ in got} - {os.getpid()}
    assert got[0][1] == (src / "data" / "big.parquet").read_bytes()
    assert got[1][1] == (src / "data" / "train.csv").read_bytes() and got[2][1] == b"hello\n"


def test_reading_a_folder_of_small_files_takes_few_store_gets(artfs, tmp_path):
    files = {f"imgs/{i:04d}.png": os.urandom(3000 + i) for i in range(300)}
    write_tree(tmp_path / "many", files)
    artfs("put", str(tmp_path / "many"), "--name", "p/many", "--type", "dataset").ok()
    fs = open_fs(artfs)
    names = fs.find("p/many/v0")
    assert len(names) == 300
    for name in names:  # in listing order, as a data loader walks a folder
        assert fs.cat(name) == files[name.removeprefix("p/many/v0/")]
    assert fs.reader.fetches <= 2  # ~1 MiB of small files: read ahead through their pack, not 300 GETs


def test_hugging_face_datasets_loads_by_url(artfs, published, tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")  # in the test extra; skipped only where not installed
    _, rows, big = published
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # its cache: this test's folder
    monkeypatch.setenv("ARTFS_STORE", artfs.store)
    monkeypatch.setenv("ARTFS_CACHE", artfs.cache)
    csv = datasets.load_dataset(
        "csv", data_files="artfs://p/ds/latest/data/train.csv", split="train", cache_dir=str(tmp_path / "hf" / "ds")
    )
    assert csv.num_rows == len(rows) and csv.column_names == ["x", "y", "s"] and csv[7]["s"] == "name 7"
    parquet = datasets.load_dataset(
        "parquet",
        data_files={"train": "artfs://p/ds:best/data/*.parquet"},
        split="train",
        cache_dir=str(tmp_path / "hf" / "ds"),
    )
    assert parquet.num_rows == len(big) and parquet[123_456]["v"] == 123_456


def test_a_reference_is_read_while_it_matches_its_pin(artfs, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "ref.bin").write_bytes(b"referenced bytes " * 1000)
    artfs("put", f"file://{outside}/ref.bin", "--name", "p/refs", "--type", "dataset").ok()
    fs = open_fs(artfs)
    assert fs.info("p/refs/v0/ref.bin")["ref"] == f"file://{outside}/ref.bin"
    assert fs.cat("p/refs/v0/ref.bin") == b"referenced bytes " * 1000
    assert fs.cat_file("p/refs/v0/ref.bin", 17, 34) == b"referenced bytes "
    (outside / "ref.bin").write_bytes(b"REFERENCED BYTES " * 1000)  # same size, other bytes
    with pytest.raises(OSError) as e:
        fs.cat("p/refs/v0/ref.bin")
    assert e.value.errno == errno.EIO and "ref.bin" in str(e.value)


def test_a_small_read_of_a_large_file_fetches_only_its_pieces(artfs, published):
    src, _, _ = published
    whole = (src / "data" / "big.parquet").read_bytes()
    fs = open_fs(artfs)
    assert fs.cat_file("p/ds/v0/data/big.parquet", 1_500_000, 1_500_100) == whole[1_500_000:1_500_100]
    fs.reader.cache.drain()
    # one 64 KiB piece and the object's piece index reached the cache, not a whole 1 MiB chunk
    assert 64 << 10 <= fs.reader.cache.size < 256 << 10


def test_a_version_published_since_the_last_listing_is_found_at_once(artfs, published):
    src, _, _ = published
    fs = open_fs(artfs)  # refresh 5 s: listings are cached…
    assert fs.ls("p/ds", detail=False) == ["p/ds/v0", "p/ds/best", "p/ds/latest"]
    (src / "notes" / "readme.txt").write_text("v1\n")
    artfs("put", str(src), "--name", "p/ds", "--type", "dataset", "--alias", "fresh").ok()
    assert fs.cat("p/ds/v1/notes/readme.txt") == b"v1\n"  # …but a name not in them is looked up again
    assert fs.cat("p/ds/fresh/notes/readme.txt") == b"v1\n"


def test_a_location_holding_no_store_is_refused_and_left_alone(tmp_path):
    nowhere = tmp_path / "no-store-here"
    with pytest.raises(FileNotFoundError) as e:
        fsspec.filesystem("artfs", store=str(nowhere), cache=str(tmp_path / "c"), skip_instance_cache=True)
    assert f"no artfs store at {nowhere}" in str(e.value)
    assert not nowhere.exists()
    with pytest.raises(FileNotFoundError):
        pd.read_csv("artfs://p/a/latest/x.csv", storage_options={"store": str(nowhere)})


def test_a_moved_alias_is_seen_once_the_refresh_runs_out(artfs, published):
    """A file path's resolution is cached; through an alias only for `refresh` seconds."""
    import time

    src, _, _ = published
    (src / "notes" / "readme.txt").write_text("second\n")
    artfs("put", str(src), "--name", "p/ds", "--type", "dataset").ok()
    fs = open_fs(artfs, refresh=1.0)
    assert fs.cat("p/ds/best/notes/readme.txt") == b"hello\n"
    with fs.open("p/ds/best/notes/readme.txt") as f:
        assert f.read() == b"hello\n"
    assert fs.info("p/ds/best/notes/readme.txt")["size"] == 6
    artfs("alias", "add", "p/ds:v1", "best").ok()
    time.sleep(1.5)
    assert fs.cat("p/ds/best/notes/readme.txt") == b"second\n"
    with fs.open("p/ds/best/notes/readme.txt") as f:
        assert f.read() == b"second\n"
    assert fs.info("p/ds/best/notes/readme.txt")["size"] == 7
    assert fs.cat("p/ds/v0/notes/readme.txt") == b"hello\n"  # a version path never moves


def _small_files(artfs, tmp_path, name: str = "p/many") -> dict[str, bytes]:
    files = {f"imgs/{i:04d}.png": os.urandom(3000 + i) for i in range(300)}
    write_tree(tmp_path / "many", files)
    artfs("put", str(tmp_path / "many"), "--name", name, "--type", "dataset").ok()
    fs = open_fs(artfs)
    for rel in files:  # cold: fetched, and cached on disk as runs of the pack
        fs.cat(f"{name}/v0/{rel}")
    fs.reader.cache.drain()
    return files


def test_a_damaged_cached_run_is_refused_and_read_again_from_the_store(artfs, tmp_path):
    files = _small_files(artfs, tmp_path)
    runs = glob.glob(os.path.join(artfs.cache, "content", "runs", "*", "*"))
    assert runs
    for run in runs:  # one flipped byte in the middle of each cached run
        with open(run, "r+b") as f:
            f.seek(os.path.getsize(run) // 2)
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 0xFF]))
    fs = open_fs(artfs)
    for i, (rel, data) in enumerate(files.items()):
        if i % 2:
            assert fs.cat(f"p/many/v0/{rel}") == data
        else:
            with fs.open(f"p/many/v0/{rel}") as f:
                assert f.read() == data
    assert fs.reader.fetches >= 1  # the damaged files came from the store again
    assert not set(runs) & set(glob.glob(os.path.join(artfs.cache, "content", "runs", "*", "*")))


def test_a_small_file_checked_once_is_served_again_without_hashing(artfs, tmp_path):
    files = _small_files(artfs, tmp_path)
    fs = open_fs(artfs)  # a new object: the disk cache is warm, its memory empty
    rel, data = next(iter(files.items()))
    assert fs.cat(f"p/many/v0/{rel}") == data
    assert fs.reader.hashed == 1 and fs.reader.fetches == 0
    assert fs.cat(f"p/many/v0/{rel}") == data
    with fs.open(f"p/many/v0/{rel}") as f:
        assert f.size == len(data) and f.read(10) == data[:10]
        f.seek(-5, os.SEEK_END)
        assert f.read() == data[-5:]
    assert fs.reader.hashed == 1  # served from the checked window, not hashed again
    for rel, data in files.items():
        assert fs.cat_file(f"p/many/v0/{rel}") == data
    assert fs.reader.hashed == len(files) and fs.reader.fetches == 0


def test_forked_workers_read_what_the_parent_listed(artfs, tmp_path):
    import multiprocessing

    global _FS
    files = _small_files(artfs, tmp_path)
    _FS = open_fs(artfs)
    names = _FS.find("p/many/v0")  # the parent lists (as a Dataset does) and reads nothing
    with multiprocessing.get_context("fork").Pool(2) as pool:
        got = pool.map(_worker_read, names, chunksize=16)
    assert [data for _, data in got] == [files[n.removeprefix("p/many/v0/")] for n in names]
    assert {pid for pid, _ in got} - {os.getpid()}
    assert _FS.reader.hashed == 0  # the workers checked what they read, in their own processes


def test_a_version_is_recorded_as_used_on_its_first_read_not_on_a_listing(artfs, published):
    fs = open_fs(artfs)

    def uses() -> list[str]:
        return [o.key for o in fs.store.registry.store.list("lineage/uses/p/ds/v0/")]

    names = fs.find("p/ds/v0")  # listing resolves (and remembers) every file, but reads none
    assert names and uses() == []
    assert fs.cat(names[-1]) == b"hello\n"
    assert len(uses()) == 1
