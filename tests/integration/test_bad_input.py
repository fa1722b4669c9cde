"""Bad input gets one clear line on stderr and a non-zero exit, and harms nothing."""

from __future__ import annotations

import json
import os

import pytest

from artfs import Artifact
from artfs.errors import InvalidInput
from conftest import read_tree, run_artfs, write_tree


@pytest.fixture
def src(tmp_path):
    return write_tree(tmp_path / "src", {"a.txt": b"alpha\n", "sub/b.txt": b"beta\n"})


def one_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    "command",
    [
        ["ls"],
        ["ls", "p"],
        ["info", "p/a:v0"],
        ["get", "p/a", "--root", "out"],
        ["lineage", "p/a:v0"],
        ["gc", "--dry-run"],
    ],
)
def test_commands_that_only_read_refuse_a_location_with_no_store_and_create_nothing(tmp_path, command):
    mistyped = str(tmp_path / "mistyped" / "store")
    r = run_artfs(command, store=mistyped, cache=str(tmp_path / "cache"), cwd=str(tmp_path))
    assert r.returncode != 0
    assert one_line(r) == f"artfs: error: no artfs store at {mistyped} (check --store or ARTFS_STORE)"
    assert not os.path.exists(tmp_path / "mistyped")


def test_a_command_that_writes_creates_a_new_store_and_says_so_once(tmp_path, src):
    store = str(tmp_path / "new-store")
    r = run_artfs(["put", src, "--name", "p/a", "--type", "dataset"], store=store, cache=str(tmp_path / "c")).ok()
    assert one_line(r) == f"artfs: created a new store at {store}"
    r = run_artfs(["put", src, "--name", "p/b", "--type", "dataset"], store=store, cache=str(tmp_path / "c")).ok()
    assert r.stderr == ""
    assert run_artfs(["ls"], store=store, cache=str(tmp_path / "c")).ok().stdout.split() == ["p"]


def test_ls_of_a_missing_project_exits_1(artfs, src):
    artfs("put", src, "--name", "p/a", "--type", "dataset").ok()
    r = artfs("ls", "nosuchproject")
    assert r.returncode == 1 and "project nosuchproject does not exist" in one_line(r)


@pytest.mark.parametrize(
    "metadata, why",
    [
        ('{"a": NaN}', "NaN is not JSON"),
        ('{"a": Infinity}', "Infinity is not JSON"),
        ('{"a": -Infinity}', "-Infinity is not JSON"),
        ('{"a": ' + "[" * 40 + "]" * 40 + "}", "deeper than 32"),
        ("[1, 2]", "must be a JSON object"),
    ],
)
def test_metadata_is_strict_json_with_a_depth_bound(artfs, src, metadata, why):
    r = artfs("put", src, "--name", "p/a", "--type", "dataset", "--metadata", metadata)
    assert r.returncode == 1 and why in one_line(r)
    assert artfs("ls").returncode == 1, "nothing was stored: still no store at all"


def test_the_python_api_refuses_nan_metadata():
    with pytest.raises(InvalidInput, match="NaN"):
        Artifact("p/a", "dataset", metadata={"loss": float("nan")})


def test_get_handles_file_names_up_to_255_bytes(artfs, tmp_path):
    files = {"n" * n: str(n).encode() for n in (245, 250, 254, 255)}
    artfs("put", write_tree(tmp_path / "long", files), "--name", "p/long", "--type", "dataset").ok()
    artfs("get", "p/long", "--root", str(tmp_path / "out")).ok()
    assert read_tree(tmp_path / "out") == files
    again = artfs("get", "p/long", "--root", str(tmp_path / "out")).ok()
    assert "0 written, 4 already there" in again.stderr + again.stdout


def test_info_of_a_stored_version_is_strict_json(artfs, src):
    artfs("put", src, "--name", "p/a", "--type", "dataset", "--metadata", '{"x": 1.5}').ok()
    json.loads(artfs("info", "p/a:v0").ok().stdout, parse_constant=lambda c: pytest.fail(c))


def test_verify_names_each_damaged_file_and_a_publish_of_the_same_bytes_repairs_it(tmp_path):
    store, cache = str(tmp_path / "store"), str(tmp_path / "cache")
    files = {"small.txt": b"small file\n", "big.bin": os.urandom(3 << 20), "other.txt": b"neighbour\n"}
    src = write_tree(tmp_path / "src", files)
    run_artfs(["put", src, "--name", "p/a", "--type", "dataset"], store=store, cache=cache).ok()
    assert "3 stored files verified" in run_artfs(["verify", "p/a:v0"], store=store, cache=cache).ok().stdout
    big = next(os.path.join(store, "objects", n) for n in os.listdir(os.path.join(store, "objects")))
    with open(big, "r+b") as f:  # one byte rots
        f.seek(2 << 20)
        byte = f.read(1)
        f.seek(2 << 20)
        f.write(bytes([byte[0] ^ 0xFF]))
    r = run_artfs(["verify", "p/a:v0"], store=store, cache=cache)
    assert r.returncode == 1
    assert [line.split(" (")[0] for line in r.stdout.splitlines()] == ["damaged: big.bin"]
    assert one_line(r) == "artfs: error: p/a:v0: 1 of 3 stored files damaged"
    run_artfs(["put", src, "--name", "p/a", "--type", "dataset"], store=store, cache=cache).ok()  # same bytes
    assert "3 stored files verified" in run_artfs(["verify", "p/a:v0"], store=store, cache=cache).ok().stdout
    run_artfs(["get", "p/a:v0", "--root", str(tmp_path / "out")], store=store, cache=str(tmp_path / "c2")).ok()
    assert read_tree(tmp_path / "out") == files


def test_quiet_says_nothing_but_results(tmp_path, src):
    store = str(tmp_path / "quiet-store")
    r = run_artfs(
        ["--quiet", "put", src, "--name", "p/a", "--type", "dataset"], store=store, cache=str(tmp_path / "c")
    ).ok()
    assert r.stdout.strip() == "p/a:v0" and r.stderr == ""


def test_a_damaged_pack_is_repaired_in_place_by_publishing_the_same_bytes(tmp_path):
    """Small files live in packs named by their bytes' digest: putting the right bytes back
    repairs the pack itself, so every version that uses it reads again."""
    store, cache = str(tmp_path / "store"), str(tmp_path / "cache")
    files = {f"f{i}.txt": f"small file {i}\n".encode() * 20 for i in range(5)}
    src = write_tree(tmp_path / "src", files)
    run_artfs(["put", src, "--name", "p/a", "--type", "dataset"], store=store, cache=cache).ok()
    pack = os.path.join(store, "packs", os.listdir(os.path.join(store, "packs"))[0])
    with open(pack, "r+b") as f:
        f.seek(10)
        f.write(b"\xff\xfe")
    r = run_artfs(["verify", "p/a:v0"], store=store, cache=cache)
    assert r.returncode == 1 and r.stdout.count("damaged: ") == 1
    run_artfs(["put", src, "--name", "p/b", "--type", "dataset"], store=store, cache=cache).ok()
    assert "5 stored files verified" in run_artfs(["verify", "p/a:v0"], store=store, cache=cache).ok().stdout
    assert not os.listdir(os.path.join(store, "damaged", "packs"))
