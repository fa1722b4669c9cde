"""Distributed versions: many writers build one version, `artfs finish` commits the union.

What a user sees: `artfs put … --distributed-id ID` from any number of processes,
`artfs finish p/a --distributed-id ID` printing the one new version, the pending
version read-only in a mount at drafts/ID, and one clear error line for every
misuse (finishing twice, upserting after finish, conflicting writers, unknown ids).
"""

from __future__ import annotations

import errno
import os
import subprocess

import pytest

import artfs as artfs_api
from artfs.errors import Conflict, NotFound
from conftest import ARTFS_BIN, ArtfsCLI, fresh_s3_url, read_tree, wait_all, write_tree
from mounts import errno_of, mounter, wait_for  # noqa: F401  (mounter is a fixture)

MiB = 1 << 20
WRITERS = 5


def shard(i: int) -> dict[str, bytes]:
    """Writer i's files: a shard of its own, a large file for one writer, and a file every writer
    writes with the same bytes (that is no conflict)."""
    files = {f"shard-{i}/rows-{k}.csv": f"writer {i} rows {k}\n".encode() * 50 for k in range(4)}
    files["README.md"] = b"one table, written by five jobs\n"
    if i == 0:
        files["shard-0/big.bin"] = os.urandom(2 * MiB + 17)
    return files


def put_dist(artfs, folder, name="p/table", dist_id="run-1", *extra):
    return artfs("put", folder, "--name", name, "--type", "dataset", "--distributed-id", dist_id, *extra)


def get_tree(artfs, spec, tmp_path) -> dict[str, bytes]:
    root = tmp_path / f"get-{spec.replace('/', '-').replace(':', '-')}"
    artfs("get", spec, "--root", root).ok()
    return read_tree(root)


@pytest.fixture
def s3_url(s3_test_bucket):
    return fresh_s3_url(s3_test_bucket)


@pytest.fixture
def cli(local_store_url, cache_dir, tmp_path):
    """`artfs …` on a local store: for behaviour that does not depend on the backend."""
    return ArtfsCLI(local_store_url, cache_dir, cwd=str(tmp_path))


@pytest.fixture
def local(local_store_url, cache_dir):
    return artfs_api.Store(local_store_url, cache_dir)


# -- many writers ----------------------------------------------------------------------------


@pytest.mark.s3
def test_five_parallel_writers_then_finish_make_one_version(s3_url, cache_dir, tmp_path):
    """W&B's parallel-writers example: 5 processes upsert at once, one finish commits the union."""
    artfs = ArtfsCLI(s3_url, cache_dir, cwd=str(tmp_path))
    expected = {}
    for i in range(WRITERS):
        files = shard(i)
        write_tree(tmp_path / f"w{i}", files)
        expected.update(files)
    env = {**os.environ, "ARTFS_STORE": s3_url}
    procs = [
        subprocess.Popen(
            [ARTFS_BIN, "put", f"w{i}", "--name", "p/table", "--type", "dataset", "--distributed-id", "run-1"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**env, "ARTFS_CACHE": str(tmp_path / f"cache{i}")},
        )
        for i in range(WRITERS)
    ]
    results = wait_all(procs)
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0, err
        assert "added to distributed version 'run-1'" in out
    assert artfs("ls", "p/table").ok().out == ""  # nothing is a version before finish

    assert artfs("finish", "p/table", "--distributed-id", "run-1", "--alias", "complete").ok().out == "p/table:v0"
    versions = artfs("ls", "p/table").ok().out.splitlines()
    assert len(versions) == 1 and versions[0].split("\t")[:2] == ["v0", "latest,complete"]
    assert get_tree(artfs, "p/table:complete", tmp_path) == expected


def test_finish_adds_its_own_paths_and_records_description(cli, tmp_path):
    write_tree(tmp_path / "a", {"a.txt": "a"})
    write_tree(tmp_path / "last", {"summary.json": "{}"})
    put_dist(cli, "a").ok()
    out = (
        cli(
            "finish",
            "p/table",
            "last",
            "--distributed-id",
            "run-1",
            "--description",
            "joined",
            "--metadata",
            '{"shards": 1}',
        )
        .ok()
        .out
    )
    assert out == "p/table:v0"
    assert get_tree(cli, "p/table:v0", tmp_path) == {"a.txt": b"a", "summary.json": b"{}"}
    import json

    info = json.loads(cli("info", "p/table:v0").ok().out)
    assert info["description"] == "joined" and info["metadata"] == {"shards": 1}


def test_finish_makes_the_next_version_of_an_existing_artifact(cli, tmp_path):
    write_tree(tmp_path / "v0", {"old.txt": "old"})
    write_tree(tmp_path / "a", {"a.txt": "a"})
    cli("put", "v0", "--name", "p/table", "--type", "dataset").ok()
    put_dist(cli, "a").ok()
    assert cli("finish", "p/table", "--distributed-id", "run-1").ok().out == "p/table:v1"
    assert get_tree(cli, "p/table:latest", tmp_path) == {"a.txt": b"a"}  # the union of the parts only


# -- the pending version in a mount --------------------------------------------------------------


@pytest.mark.mount
def test_pending_version_is_read_only_in_mount_until_finish(cli, local_store_url, tmp_path, mounter):
    write_tree(tmp_path / "a", {"a/1.txt": "one"})
    write_tree(tmp_path / "b", {"b/2.txt": "two"})
    put_dist(cli, "a").ok()
    m = mounter(local_store_url, "--refresh", "0.3")
    pending = m.path("p", "table", "drafts", "run-1")
    assert os.listdir(m.path("p", "table", "drafts")) == ["run-1"]
    assert read_tree(pending) == {"a/1.txt": b"one"}

    put_dist(cli, "b").ok()  # a second writer: shows up within the refresh interval
    wait_for(lambda: os.path.exists(os.path.join(pending, "b", "2.txt")), 10, "the second part in the mount")
    assert read_tree(pending) == {"a/1.txt": b"one", "b/2.txt": b"two"}

    def write_new():
        with open(os.path.join(pending, "new.txt"), "w") as f:
            f.write("x")

    def append():
        with open(os.path.join(pending, "a", "1.txt"), "a") as f:
            f.write("x")

    assert errno_of(write_new) == errno.EROFS
    assert errno_of(append) == errno.EROFS
    assert errno_of(os.mkdir, os.path.join(pending, "c")) == errno.EROFS
    assert errno_of(os.unlink, os.path.join(pending, "a", "1.txt")) == errno.EROFS
    assert errno_of(os.rename, os.path.join(pending, "a", "1.txt"), os.path.join(pending, "x")) == errno.EROFS
    assert read_tree(pending) == {"a/1.txt": b"one", "b/2.txt": b"two"}  # nothing changed

    assert cli("finish", "p/table", "--distributed-id", "run-1").ok().out == "p/table:v0"
    wait_for(lambda: not os.path.exists(pending), 10, "the pending version to leave drafts/")
    wait_for(lambda: os.path.isdir(m.path("p", "table", "v0")), 10, "v0 in the mount")
    assert read_tree(m.path("p", "table", "v0")) == {"a/1.txt": b"one", "b/2.txt": b"two"}


# -- misuse: one clear line, nothing harmed ---------------------------------------------------------


def test_upsert_after_finish_fails_clearly(cli, tmp_path):
    write_tree(tmp_path / "a", {"a.txt": "a"})
    write_tree(tmp_path / "late", {"late.txt": "late"})
    put_dist(cli, "a").ok()
    cli("finish", "p/table", "--distributed-id", "run-1").ok()
    put_dist(cli, "late").fails("already finished as v0", "new --distributed-id")
    assert cli("ls", "p/table").ok().out.count("\n") == 0  # still one version
    assert get_tree(cli, "p/table:v0", tmp_path) == {"a.txt": b"a"}
    # and finishing again does not pick the late files up either
    cli("finish", "p/table", "--distributed-id", "run-1").fails("already finished")


def test_finishing_twice_fails_clearly(cli, tmp_path):
    write_tree(tmp_path / "a", {"a.txt": "a"})
    put_dist(cli, "a").ok()
    cli("finish", "p/table", "--distributed-id", "run-1", "--alias", "best").ok()
    cli("finish", "p/table", "--distributed-id", "run-1", "--alias", "prod").fails("already finished as v0")
    lines = cli("ls", "p/table").ok().out.splitlines()
    assert [line.split("\t")[:2] for line in lines] == [["v0", "latest,best"]]  # no alias, no version added


def test_conflicting_writers_are_reported_by_path_and_refused(cli, tmp_path):
    write_tree(tmp_path / "a", {"same.txt": "same", "labels/x.csv": "from a", "only-a": "a"})
    write_tree(tmp_path / "b", {"same.txt": "same", "labels/x.csv": "from b", "only-b": "b"})
    put_dist(cli, "a").ok()
    put_dist(cli, "b").ok()
    line = cli("finish", "p/table", "--distributed-id", "run-1").fails("labels/x.csv", "--overwrite")
    assert "same.txt" not in line and "only-a" not in line  # only the disagreeing path
    assert cli("ls", "p/table").ok().out == ""  # nothing committed

    # The refusal left everything in place: --overwrite keeps the last writer's content.
    assert cli("finish", "p/table", "--distributed-id", "run-1", "--overwrite").ok().out == "p/table:v0"
    assert get_tree(cli, "p/table:v0", tmp_path) == {
        "same.txt": b"same",
        "labels/x.csv": b"from b",
        "only-a": b"a",
        "only-b": b"b",
    }


def test_unknown_distributed_ids_fail_clearly(cli, tmp_path):
    write_tree(tmp_path / "a", {"a.txt": "a"})
    cli("finish", "p/table", "--distributed-id", "never-used").fails("no upserts", "never-used")
    put_dist(cli, "a").ok()
    cli("finish", "p/table", "--distributed-id", "run-2").fails("no upserts", "run-2")
    cli("finish", "p/other", "--distributed-id", "run-1").fails("no upserts")
    put_dist(cli, "a", "p/table", "../escape").fails("invalid distributed id")
    cli("finish", "p/table", "--distributed-id", "a/b").fails("invalid distributed id")
    # The real one is unharmed.
    assert cli("finish", "p/table", "--distributed-id", "run-1").ok().out == "p/table:v0"


def test_distributed_put_refuses_version_options(cli, tmp_path):
    write_tree(tmp_path / "a", {"a.txt": "a"})
    put_dist(cli, "a", "p/table", "run-1", "--alias", "best").fails("artfs finish")
    cli("finish", "p/table", "--distributed-id", "run-1").fails("no upserts")


# -- Python ----------------------------------------------------------------------------------------


def test_python_upsert_and_finish(local, tmp_path):
    for i in range(3):
        art = artfs_api.Artifact("p/model", type="model")
        with art.new_file(f"part-{i}.txt") as f:
            f.write(f"writer {i}")
        assert artfs_api.upsert_artifact(art, distributed_id="job-7", store=local) is art
    final = artfs_api.Artifact("p/model", type="model", description="all parts")
    done = artfs_api.finish_artifact(final, distributed_id="job-7", aliases=["prod"], store=local)
    assert done.version == "v0"
    got = artfs_api.use_artifact("p/model:prod", store=local)
    assert sorted(got.files) == ["part-0.txt", "part-1.txt", "part-2.txt"]
    root = got.download(str(tmp_path / "dl"))
    assert read_tree(root) == {f"part-{i}.txt": f"writer {i}".encode() for i in range(3)}

    late = artfs_api.Artifact("p/model", type="model")
    with late.new_file("late.txt") as f:
        f.write("late")
    with pytest.raises(Conflict, match="already finished"):
        artfs_api.upsert_artifact(late, distributed_id="job-7", store=local)
    with pytest.raises(Conflict, match="already finished"):
        artfs_api.finish_artifact(artfs_api.Artifact("p/model", type="model"), distributed_id="job-7", store=local)
    with pytest.raises(NotFound, match="no upserts"):
        artfs_api.finish_artifact(artfs_api.Artifact("p/model", type="model"), distributed_id="nope", store=local)


def test_python_finish_reports_conflicts_and_overwrite_accepts(local, tmp_path):
    for text in ("first", "second"):
        art = artfs_api.Artifact("p/model", type="model")
        with art.new_file("weights.txt") as f:
            f.write(text)
        artfs_api.upsert_artifact(art, distributed_id="job-8", store=local)
    with pytest.raises(Conflict, match="weights.txt"):
        artfs_api.finish_artifact(artfs_api.Artifact("p/model", type="model"), distributed_id="job-8", store=local)
    done = artfs_api.finish_artifact(
        artfs_api.Artifact("p/model", type="model"), distributed_id="job-8", store=local, overwrite=True
    )
    assert done.version == "v0"
    with open(done.get_path("weights.txt").download(str(tmp_path / "dl")), "rb") as f:
        assert f.read() == b"second"


# -- a part written while finish runs is either in the version or reported -----------------------


def test_upsert_racing_finish_is_never_silently_lost(store, tmp_path, monkeypatch):
    """An upsert that completes between finish listing the parts and claiming the id must
    either end up in the version or fail; here it is forced into exactly that window."""
    from artfs.versions.distributed import Distributed
    from artfs.names import ArtifactName
    from artfs.versions.sources import walk_sources

    a = ArtifactName("p", "table")
    write_tree(tmp_path / "a", {"a.txt": "a"})
    write_tree(tmp_path / "late", {"late.txt": "late"})
    dist = Distributed(store)
    dist.upsert(a, "dataset", "run-1", walk_sources(str(tmp_path / "a"), None))

    real_keys = Distributed._part_keys
    state = {"raced": False, "late_result": None}

    def keys_then_race(self, a_, dist_id):
        out = real_keys(self, a_, dist_id)
        if not state["raced"]:  # finish has looked at the parts and not yet claimed the id
            state["raced"] = True
            try:
                Distributed(store).upsert(a, "dataset", "run-1", walk_sources(str(tmp_path / "late"), None))
                state["late_result"] = "ok"
            except Conflict as e:
                state["late_result"] = str(e)
        return out

    monkeypatch.setattr(Distributed, "_part_keys", keys_then_race)
    result = dist.finish(a, "run-1")
    monkeypatch.undo()
    files = sorted(e.path for e in store.manifest(result.version))
    if state["late_result"] == "ok":
        assert files == ["a.txt", "late.txt"], "the late upsert succeeded, so its file must be in the version"
    else:
        assert files == ["a.txt"]


def test_two_finishes_at_once_make_one_version(store, tmp_path):
    """Two hosts run `finish` for the same id at the same moment: one version, the other told why."""
    import threading

    from artfs.versions.distributed import Distributed
    from artfs.names import ArtifactName
    from artfs.versions.sources import walk_sources

    a = ArtifactName("p", "table")
    for i in range(3):
        write_tree(tmp_path / f"w{i}", {f"part-{i}.txt": f"part {i}"})
        Distributed(store).upsert(a, "dataset", "run-1", walk_sources(str(tmp_path / f"w{i}"), None))
    barrier = threading.Barrier(2)
    results = []

    def finisher():
        own = artfs_api.Store(store.url, str(tmp_path / f"cache-{threading.get_ident()}"))
        barrier.wait(timeout=30)
        try:
            results.append(str(Distributed(own).finish(a, "run-1").version))
        except Conflict as e:
            results.append(f"refused: {e}")

    threads = [threading.Thread(target=finisher) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(r.split(":")[0] for r in results) == ["p/table", "refused"], results
    refused = next(r for r in results if r.startswith("refused"))
    assert "being finished by someone else" in refused or "already finished" in refused
    assert [r.number for r in store.registry.versions(a)] == [0]
    assert sorted(e.path for e in store.manifest(store.resolve("p/table:v0"))) == [f"part-{i}.txt" for i in range(3)]


def test_finish_refuses_when_a_part_is_unreadable(cli, local_store_url, tmp_path):
    write_tree(tmp_path / "a", {"a.txt": "a"})
    write_tree(tmp_path / "b", {"b.txt": "b"})
    put_dist(cli, "a").ok()
    put_dist(cli, "b").ok()
    parts = tmp_path / "store" / "parts" / "p" / "table" / "run-1"
    damaged = sorted(parts.iterdir())[0]
    damaged.write_text("{not json")
    cli("finish", "p/table", "--distributed-id", "run-1").fails("corrupt part", damaged.name, "nothing was committed")
    assert cli("ls", "p/table").ok().out == ""
