"""The `artfs` command line, run as a user runs it (a subprocess), on both backends."""

import json
import os
import re

import pytest

from conftest import ArtfsCLI, read_tree, run_artfs, write_tree
from artfs.digest import CHUNK_SIZE
from artfs.store.location import open_store

FILES = {
    "images/cat.png": os.urandom(3000),
    "images/dog.png": os.urandom(5000),
    "images/sub/bird.png": b"tweet",
    "labels.csv": "cat,0\ndog,1\n",
}


def as_bytes(files):
    return {k: v.encode() if isinstance(v, str) else v for k, v in files.items()}


@pytest.fixture
def data(tmp_path):
    """The sample dataset as ./data/{images/…, labels.csv} under the test's cwd."""
    return write_tree(tmp_path / "data", FILES)


@pytest.fixture
def local_cli(tmp_path):
    """A CLI on a local store only, for checks that do not depend on the backend."""
    return ArtfsCLI(str(tmp_path / "store"), str(tmp_path / "cache"), cwd=str(tmp_path))


def test_put_prints_the_version_and_skips_unchanged_content(artfs, data, tmp_path):
    assert artfs("put", "data", "--name", "demo/bikes", "--type", "dataset").ok().stdout == "demo/bikes:v0\n"
    assert artfs("put", "data", "--name", "demo/bikes", "--type", "dataset").ok().stdout == "demo/bikes:v0\n"
    assert len(artfs("ls", "demo/bikes").ok().out.splitlines()) == 1, "no new version for the same content"
    with open(os.path.join(data, "labels.csv"), "a") as f:
        f.write("bird,2\n")
    assert artfs("put", "data", "--name", "demo/bikes", "--type", "dataset").ok().stdout == "demo/bikes:v1\n"
    lines = artfs("ls", "demo/bikes").ok().out.splitlines()
    assert [line.split("\t")[:2] for line in lines] == [["v0", "-"], ["v1", "latest"]]
    info = json.loads(artfs("info", "demo/bikes:latest").ok().stdout)
    assert info["version"] == "v1" and info["base"] == "v0"


def test_single_directory_is_the_root_several_arguments_keep_their_names(local_cli, data, tmp_path):
    # How arguments become paths does not depend on the store: local only.
    artfs = local_cli
    artfs("put", "data", "--name", "p/root", "--type", "dataset").ok()
    assert _files(artfs, "p/root:v0") == sorted(FILES)
    artfs("put", "data/images", "data/labels.csv", "--name", "p/several", "--type", "dataset").ok()
    assert _files(artfs, "p/several:v0") == sorted(
        ["images/cat.png", "images/dog.png", "images/sub/bird.png", "labels.csv"]
    )
    artfs("put", "data/labels.csv", "--name", "p/one-file", "--type", "dataset").ok()
    assert _files(artfs, "p/one-file:v0") == ["labels.csv"]
    artfs("put", "data/images/sub", "data/images", "--name", "p/nested", "--type", "dataset").ok()
    assert "sub/bird.png" in _files(artfs, "p/nested:v0")


def _files(artfs, spec):
    return [line.split("\t")[1] for line in artfs("ls", spec).ok().out.splitlines()]


def test_aliases_description_and_metadata_at_put(artfs, data):
    artfs(
        "put",
        "data",
        "--name",
        "demo/bikes",
        "--type",
        "dataset",
        "--alias",
        "best",
        "-a",
        "prod",
        "--description",
        "bikes",
        "--metadata",
        '{"classes": 3}',
    ).ok()
    info = json.loads(artfs("info", "demo/bikes:v0").ok().stdout)
    assert info["aliases"] == ["latest", "best", "prod"]
    assert info["description"] == "bikes" and info["metadata"] == {"classes": 3}


def test_type_clash_is_refused(artfs, data):
    artfs("put", "data", "--name", "demo/bikes", "--type", "dataset").ok()
    before = sorted(o.key for o in open_store(artfs.store).list(""))
    line = artfs("put", "data/images", "--name", "demo/bikes", "--type", "model").fails("already exists", "dataset")
    assert "demo/bikes" in line
    assert sorted(o.key for o in open_store(artfs.store).list("")) == before, "a failed put stores nothing"


def test_get_writes_exact_bytes_and_skips_what_is_there(artfs, data, tmp_path):
    artfs("put", "data", "--name", "demo/bikes", "--type", "dataset", "--alias", "best").ok()
    expected = as_bytes(FILES)
    for spec, out in [
        ("demo/bikes:latest", "o1"),
        ("demo/bikes:v0", "o2"),
        ("demo/bikes:best", "o3"),
        ("demo/bikes", "o4"),
    ]:
        r = artfs("get", spec, "--root", out).ok()
        assert r.out == str(tmp_path / out)
        assert "4 written" in r.stderr, r
        assert read_tree(tmp_path / out) == expected, spec
    again = artfs("get", "demo/bikes", "--root", "o1").ok()
    assert "0 written" in again.stderr and "4 already there" in again.stderr, again
    assert read_tree(tmp_path / "o1") == expected
    one = artfs("get", "demo/bikes:v0", "--root", "one", "--path", "images/cat.png").ok()
    assert "1 written" in one.stderr
    assert read_tree(tmp_path / "one") == {"images/cat.png": expected["images/cat.png"]}
    artfs("get", "demo/bikes:v0", "--root", "folder", "--path", "images/sub").ok()
    assert read_tree(tmp_path / "folder") == {"images/sub/bird.png": b"tweet"}
    artfs("get", "demo/bikes:v0", "--root", "x", "--path", "nope.png").fails("nope.png")


def test_get_default_root(local_cli, data, tmp_path):
    local_cli("put", "data", "--name", "demo/bikes", "--type", "dataset").ok()
    r = local_cli("get", "demo/bikes").ok()
    assert read_tree(r.out) == as_bytes(FILES)
    assert os.path.realpath(r.out) == os.path.realpath(tmp_path / "artifacts" / "bikes" / "v0")


def test_get_large_files_and_modes(artfs, tmp_path):
    files = {
        "model.bin": os.urandom(3 * CHUNK_SIZE + 11),
        "run.sh": "#!/bin/sh\necho hi\n",
        "empty": b"",
        "naïve name with spaces/日本.txt": "unicode",
    }
    src = write_tree(tmp_path / "m", files)
    os.chmod(os.path.join(src, "run.sh"), 0o755)
    artfs("put", "m", "--name", "p/model", "--type", "model").ok()
    artfs("get", "p/model", "--root", "out").ok()
    assert read_tree(tmp_path / "out") == as_bytes(files)
    assert os.stat(tmp_path / "out" / "run.sh").st_mode & 0o111
    assert not os.stat(tmp_path / "out" / "model.bin").st_mode & 0o111


def test_commit_of_a_missing_path_names_what_was_meant(artfs, data):
    """With --name the path was meant as a plain folder; without, as a draft."""
    artfs("put", "data", "--name", "demo/bikes", "--type", "dataset").ok()
    artfs("commit", "./nope", "--name", "demo/bikes").fails("no folder at ./nope")
    artfs("commit", "./nope").fails("no draft at ./nope")


def test_ls_four_forms(artfs, data, tmp_path):
    artfs("ls").fails("no artfs store at")  # nothing published yet: not a store, and none is made
    artfs("put", "data", "--name", "demo/bikes", "--type", "dataset", "--alias", "best").ok()
    write_tree(tmp_path / "data", {"labels.csv": "changed\n"})
    artfs("put", "data", "--name", "demo/bikes", "--type", "dataset").ok()
    artfs("put", "data/labels.csv", "--name", "demo/model", "--type", "model").ok()
    artfs("put", "data/labels.csv", "--name", "other/x", "--type", "dataset").ok()

    assert artfs("ls").ok().out.splitlines() == ["demo", "other"]
    assert artfs("ls", "demo").ok().out.splitlines() == ["bikes\tdataset\t2 versions", "model\tmodel\t1 version"]
    lines = [line.split("\t") for line in artfs("ls", "demo/bikes").ok().out.splitlines()]
    assert [row[0] for row in lines] == ["v0", "v1"]
    assert lines[0][1] == "best" and lines[1][1] == "latest"
    size0 = sum(len(v) for v in as_bytes(FILES).values())
    assert lines[0][2] == f"{size0 / 1024:.1f} KiB"
    assert lines[0][3] == "4 files" and lines[1][3] == "4 files"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", lines[0][4])
    files = artfs("ls", "demo/bikes:v1").ok().out.splitlines()
    assert files == ["3000\timages/cat.png", "5000\timages/dog.png", "5\timages/sub/bird.png", "8\tlabels.csv"]
    assert artfs("ls", "demo/bikes:best").ok().out.splitlines()[-1] == "12\tlabels.csv"


def test_info_json(artfs, data):
    artfs(
        "put",
        "data",
        "--name",
        "demo/bikes",
        "--type",
        "dataset",
        "--alias",
        "best",
        "--description",
        "bikes",
        "--metadata",
        '{"classes": 3, "nested": {"a": [1, 2]}}',
    ).ok()
    write_tree(os.path.join(artfs.cwd, "data"), {"extra.txt": "more"})
    artfs("put", "data", "--name", "demo/bikes", "--type", "dataset").ok()
    v0 = json.loads(artfs("info", "demo/bikes:v0").ok().stdout)
    v1 = json.loads(artfs("info", "demo/bikes:latest").ok().stdout)
    for key in (
        "type",
        "version",
        "aliases",
        "digest",
        "size",
        "files",
        "description",
        "metadata",
        "creator",
        "created",
        "base",
    ):
        assert key in v0, key
    assert v0["name"] == "demo/bikes" and v0["type"] == "dataset" and v0["version"] == "v0"
    assert v0["aliases"] == ["best"] and v1["aliases"] == ["latest"]
    assert re.fullmatch(r"[0-9a-f]{64}", v0["digest"]) and v0["digest"] != v1["digest"]
    assert v0["size"] == sum(len(v) for v in as_bytes(FILES).values()) and v0["files"] == 4
    assert v1["files"] == 5 and v1["size"] == v0["size"] + 4
    assert v0["description"] == "bikes" and v0["metadata"] == {"classes": 3, "nested": {"a": [1, 2]}}
    assert v1["description"] == "" and v1["metadata"] == {}
    assert v0["base"] is None and v1["base"] == "v0"
    assert {"user", "host", "run", "command"} <= set(v0["creator"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", v0["created"])


def test_alias_add_and_rm(artfs, data, tmp_path):
    artfs("put", "data", "--name", "p/a", "--type", "dataset").ok()
    write_tree(tmp_path / "data", {"new.txt": "new"})
    artfs("put", "data", "--name", "p/a", "--type", "dataset").ok()

    def aliases():
        """{version: aliases column of `artfs ls p/a`}"""
        return dict(line.split("\t")[:2] for line in artfs("ls", "p/a").ok().out.splitlines())

    assert artfs("alias", "add", "p/a:v0", "prod", "best").ok().out == "p/a:v0"
    assert aliases() == {"v0": "best,prod", "v1": "latest"}
    assert json.loads(artfs("info", "p/a:v0").ok().stdout)["aliases"] == ["best", "prod"]
    artfs("alias", "add", "p/a:v1", "prod").ok()  # moves
    assert aliases() == {"v0": "best", "v1": "latest,prod"}
    artfs("get", "p/a:prod", "--root", "prod").ok()
    assert "new.txt" in read_tree(tmp_path / "prod")
    artfs("alias", "rm", "p/a:v0", "prod").fails("prod")  # it is on v1 now
    artfs("alias", "rm", "p/a:v1", "prod").ok()
    assert aliases() == {"v0": "best", "v1": "latest"}
    artfs("get", "p/a:prod", "--root", "x").fails("prod")
    artfs("alias", "rm", "p/a:v1", "latest").fails("latest")
    artfs("alias", "add", "p/a:v0", "latest").fails("latest")
    artfs("alias", "add", "p/a:v0", "v3").fails("v3")
    artfs("alias", "add", "p/a:v0", "drafts").fails("drafts")
    artfs("alias", "add", "p/a:v9", "x").fails("v9")
    assert aliases() == {"v0": "best", "v1": "latest"}


def test_set_description_and_metadata(artfs, data):
    artfs("put", "data", "--name", "p/a", "--type", "dataset", "--metadata", '{"a": 1, "b": 2}').ok()

    def info():
        doc = json.loads(artfs("info", "p/a:v0").ok().stdout)
        return doc["description"], doc["metadata"]

    assert artfs("set", "p/a:v0", "--description", "now described").ok().out == "p/a:v0"
    assert info() == ("now described", {"a": 1, "b": 2})
    artfs("set", "p/a:latest", "--metadata", '{"b": 3, "c": 4}', "--merge").ok()
    assert info() == ("now described", {"a": 1, "b": 3, "c": 4})
    artfs("set", "p/a:v0", "--metadata", '{"only": true}', "--description", "both").ok()
    assert info() == ("both", {"only": True})
    artfs("set", "p/a:v0", "--metadata", "{oops").fails("metadata")
    artfs("set", "p/a:v0").fails("nothing to set")
    assert info() == ("both", {"only": True})


# -- bad input: one line, non-zero exit, no traceback, nothing harmed ------------------------

BAD_COMMANDS = [
    (["put", "data", "--name", "../x", "--type", "dataset"], ".."),
    (["put", "data", "--name", "p/..", "--type", "dataset"], ".."),
    (["put", "data", "--name", "p/a/b", "--type", "dataset"], "p/a/b"),
    (["put", "data", "--name", "noproject", "--type", "dataset"], "noproject"),
    (["put", "data", "--name", "p/.hidden", "--type", "dataset"], ".hidden"),
    (["put", "data", "--name", ".p/a", "--type", "dataset"], ".p"),
    (["put", "data", "--name", "p/a", "--type", "../t"], "type"),
    (["put", "data", "--name", "p/new", "--type", "dataset", "--alias", "v3"], "v3"),
    (["put", "data", "--name", "p/new", "--type", "dataset", "--alias", "drafts"], "drafts"),
    (["put", "data", "--name", "p/new", "--type", "dataset", "--alias", "a/b"], "a/b"),
    (["put", "data", "--name", "p/new", "--type", "dataset", "--metadata", "{not json"], "metadata"),
    (["put", "data", "--name", "p/new", "--type", "dataset", "--metadata", '"a string"'], "metadata"),
    (["put", "no/such/dir", "--name", "p/new", "--type", "dataset"], "no/such/dir"),
    (["put", "empty-dir", "--name", "p/new", "--type", "dataset"], "nothing"),
    (["get", "p/unknown"], "p/unknown"),
    (["get", "p/a:v5", "--root", "x"], "v5"),
    (["get", "p/a:nosuchalias", "--root", "x"], "nosuchalias"),
    (["get", "p/a:../../x", "--root", "x"], "../../x"),
    (["get", "p", "--root", "x"], "p"),
    (["ls", "p/unknown"], "p/unknown"),
    (["ls", "p/a:v5"], "v5"),
    (["ls", "../p"], ".."),
    (["info", "p/a:v5"], "v5"),
    (["info", "p/a:drafts"], "drafts"),
    (["set", "p/a:v5", "--description", "x"], "v5"),
    (["set", "p/a:v0", "--metadata", "[1, 2]"], "metadata"),
    (["alias", "add", "p/a:v0", "bad/alias"], "bad/alias"),
    (["alias", "rm", "p/a:v0", "nosuchalias"], "nosuchalias"),
]


def test_bad_input_gets_one_line_and_harms_nothing(local_cli, data, tmp_path):
    (tmp_path / "empty-dir").mkdir()
    local_cli("put", "data", "--name", "p/a", "--type", "dataset", "--alias", "best").ok()
    before = read_tree(local_cli.store)
    failures = []
    for args, expected in BAD_COMMANDS:
        r = local_cli(*args)
        try:
            r.fails(expected)
        except AssertionError as e:
            failures.append(str(e))
    assert not failures, "\n\n".join(failures)
    assert read_tree(local_cli.store) == before
    assert local_cli("ls", "p/a").ok().out.startswith("v0\tlatest,best")


def test_symbolic_links_are_followed_and_loops_refused(local_cli, tmp_path):
    write_tree(tmp_path / "elsewhere", {"inner/deep.txt": "deep", "file.txt": "target"})
    write_tree(tmp_path / "d", {"plain.txt": "plain"})
    os.symlink(tmp_path / "elsewhere" / "inner", tmp_path / "d" / "linked-dir")
    os.symlink(tmp_path / "elsewhere" / "file.txt", tmp_path / "d" / "linked-file.txt")
    local_cli("put", "d", "--name", "p/links", "--type", "dataset").ok()
    local_cli("get", "p/links", "--root", "out").ok()
    assert read_tree(tmp_path / "out") == {
        "plain.txt": b"plain",
        "linked-dir/deep.txt": b"deep",
        "linked-file.txt": b"target",
    }
    os.symlink("..", tmp_path / "d" / "loop")
    local_cli("put", "d", "--name", "p/loop", "--type", "dataset").fails("loop")
    os.unlink(tmp_path / "d" / "loop")
    os.symlink(tmp_path / "nowhere", tmp_path / "d" / "dangling")
    local_cli("put", "d", "--name", "p/loop", "--type", "dataset").fails("dangling")
    assert local_cli("ls", "p").ok().out.splitlines() == ["links\tdataset\t1 version"]


def test_put_with_clashing_names_and_get_into_an_obstructed_folder(local_cli, tmp_path):
    write_tree(tmp_path, {"a/x": "1", "b/x": "2"})
    local_cli("put", "a/x", "b/x", "--name", "p/a", "--type", "dataset").fails("x")
    local_cli("put", "a", "--name", "p/a", "--type", "dataset").ok()
    (tmp_path / "out" / "x").mkdir(parents=True)  # a folder where the file must go
    line = local_cli("get", "p/a", "--root", "out").fails("out/x")
    assert "internal error" not in line
    (tmp_path / "file").write_text("a file where the root folder must go")
    line = local_cli("get", "p/a", "--root", "file").fails("file")
    assert "internal error" not in line


def test_usage_errors_exit_non_zero_without_traceback(local_cli):
    for args in (["put", "x"], ["frobnicate"], ["get"], ["alias", "add", "p/a:v0"]):
        r = local_cli(*args)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r
        assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("artfs: error: "), r
        assert "(see artfs " in r.stderr and "--help)" in r.stderr, r
    r = local_cli("mount", "mnt", "--cache", "c")
    assert (
        r.stderr.strip()
        == "artfs: error: --cache goes before the command: artfs --cache VALUE COMMAND … (see artfs mount --help)"
    )


def test_debug_shows_the_traceback(local_cli):
    r = local_cli("--debug", "get", "p/unknown")
    assert r.returncode != 0 and "Traceback" in r.stderr and "NotFound" in r.stderr


# -- damaged store: a clear error naming the record, never wrong bytes ------------------------

DAMAGES = [
    "version record",
    "alias record",
    "manifest",
    "pack byte",
    "truncated pack",
    "object byte",
    "truncated object",
    "missing pack",
]


def test_damaged_store_is_reported_and_never_served(artfs, tmp_path):
    files = {"big.bin": os.urandom(2 * CHUNK_SIZE + 100), "a.txt": "a" * 500, "b.txt": "b" * 700}
    write_tree(tmp_path / "src", files)
    artfs("put", "src", "--name", "p/a", "--type", "dataset", "--alias", "best").ok()
    raw = open_store(artfs.store)
    digest = json.loads(artfs("info", "p/a:v0").ok().stdout)["digest"]
    pack, obj = next(iter(raw.list("packs/"))).key, next(iter(raw.list("objects/"))).key
    problems = []
    for damage in DAMAGES:
        key = {
            "version record": "artifacts/p/a/versions/v0.json",
            "alias record": "artifacts/p/a/aliases.json",
            "manifest": f"manifests/{digest}",
        }.get(damage, pack if "pack" in damage else obj)
        good = raw.get(key)
        mid = len(good) // 2
        if damage.startswith("truncated"):
            raw.put(key, good[:-1])
        elif damage.startswith("missing"):
            raw.delete(key)
        elif damage.endswith("byte"):
            raw.put(key, good[:mid] + bytes([good[mid] ^ 0x01]) + good[mid + 1 :])
        else:
            raw.put(key, good[:mid])
        out = tmp_path / f"out-{damage.replace(' ', '-')}"
        r = artfs("get", "p/a:best", "--root", out)
        raw.put(key, good)  # repair before asserting, so one failure does not hide the others
        try:
            line = r.fails(key)
            assert re.search(r"corrupt|does not match|short read|not found", line, re.I), line
            written = read_tree(out) if out.exists() else {}
            for rel, got in written.items():
                if not rel.endswith(".artfs-part"):
                    assert got == as_bytes(files)[rel], f"{rel} written with wrong bytes"
        except AssertionError as e:
            problems.append(f"{damage}: {e}")
    assert not problems, "\n\n".join(problems)
    artfs("get", "p/a:best", "--root", "out").ok()  # repaired: everything works again
    assert read_tree(tmp_path / "out") == as_bytes(files)


# -- store selection ---------------------------------------------------------------------------


def test_store_flag_and_file_url(tmp_path, data):
    store = tmp_path / "flagged"
    r = run_artfs(
        [
            "--store",
            f"file://{store}",
            "--cache",
            str(tmp_path / "c"),
            "put",
            "data",
            "--name",
            "p/a",
            "--type",
            "dataset",
        ],
        cwd=str(tmp_path),
    )
    assert r.ok().out == "p/a:v0"
    assert (store / "artifacts" / "p" / "a" / "versions" / "v0.json").exists()
    r = run_artfs(["ls", "p/a"], store=str(store), cache=str(tmp_path / "c"))
    assert r.ok().out.startswith("v0\tlatest")


def test_default_store_is_under_the_data_dir(tmp_path, data):
    env = {
        "XDG_DATA_HOME": str(tmp_path / "xdg-data"),
        "XDG_CACHE_HOME": str(tmp_path / "xdg-cache"),
        "HOME": str(tmp_path / "home"),
    }
    run_artfs(["put", "data", "--name", "p/a", "--type", "dataset"], cwd=str(tmp_path), env=env).ok()
    assert (tmp_path / "xdg-data" / "artfs" / "store" / "artifacts" / "p" / "a").is_dir()


def test_unsupported_store_url(tmp_path):
    run_artfs(["ls"], store="ftp://example.com/x", cwd=str(tmp_path)).fails("ftp://")


@pytest.mark.s3
def test_unreachable_s3_fails_fast_with_one_line(s3_endpoint, tmp_path):
    from servers import free_ports

    dead = f"http://127.0.0.1:{free_ports(1)[0]}"
    env = {"AWS_ENDPOINT_URL": dead, "ARTFS_S3_ATTEMPTS": "1", "ARTFS_S3_TIMEOUT": "2"}
    r = run_artfs(["ls"], store="s3://bucket/prefix", env=env, cwd=str(tmp_path), timeout=60)
    r.fails("s3://bucket")


@pytest.mark.s3
def test_missing_bucket(s3_endpoint, tmp_path):
    run_artfs(["ls", "p/a"], store="s3://no-such-bucket-here/x", cwd=str(tmp_path)).fails("no-such-bucket-here")
