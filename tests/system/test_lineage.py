"""Lineage: who made each version from what, and which runs used it.

A version records its creator (user, host, run, command) and base; `artfs get`,
`use_artifact` and the first read of a version in a mount record a use by the
current run; `artfs lineage p/a:vN [--depth K] [--dot FILE]` walks the graph
(W&B's logged_by / used_by) both ways.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import shutil
import socket
import subprocess

import pytest

import artfs as artfs_api
from conftest import ArtfsCLI, fresh_s3_url, write_tree
from mounts import mounter, wait_for  # noqa: F401  (mounter is a fixture)


@pytest.fixture
def cli(local_store_url, cache_dir, tmp_path):
    """`artfs …` on a local store (lineage is keys and listings: the backend does not matter)."""
    return ArtfsCLI(local_store_url, cache_dir, cwd=str(tmp_path))


def no_scheduler_env() -> dict:
    """The environment minus every variable that names a run."""
    return {k: "" for k in ("ARTFS_RUN_ID", "SLURM_JOB_ID", "PBS_JOBID")}


def info(cli, spec, **kw) -> dict:
    return json.loads(cli("info", spec, **kw).ok().out)


# -- who made a version ---------------------------------------------------------------------------


def test_version_records_user_host_run_command_and_base(cli, tmp_path):
    write_tree(tmp_path / "d", {"a.txt": "1"})
    cli("put", "d", "--name", "p/data", "--type", "dataset", env={**no_scheduler_env(), "ARTFS_RUN_ID": "exp-42"}).ok()
    write_tree(tmp_path / "d", {"a.txt": "2"})
    cli("put", "d", "--name", "p/data", "--type", "dataset", env={**no_scheduler_env(), "ARTFS_RUN_ID": "exp-43"}).ok()
    v0, v1 = info(cli, "p/data:v0"), info(cli, "p/data:v1")
    assert v0["creator"]["run"] == "exp-42" and v1["creator"]["run"] == "exp-43"
    assert v0["creator"]["user"] == getpass.getuser()
    assert v0["creator"]["host"] == socket.gethostname()
    assert "put d --name p/data" in v0["creator"]["command"]
    assert v0["base"] is None and v1["base"] == "v0"


def test_run_id_falls_back_to_scheduler_job_then_host_and_pid(cli, tmp_path):
    write_tree(tmp_path / "d", {"a.txt": "1"})
    cli("put", "d", "--name", "p/data", "--type", "dataset", env={**no_scheduler_env(), "SLURM_JOB_ID": "981234"}).ok()
    assert info(cli, "p/data:v0")["creator"]["run"] == "981234"
    write_tree(tmp_path / "d", {"a.txt": "2"})
    cli(
        "put",
        "d",
        "--name",
        "p/data",
        "--type",
        "dataset",
        env={**no_scheduler_env(), "ARTFS_RUN_ID": "mine", "SLURM_JOB_ID": "981234"},
    ).ok()
    assert info(cli, "p/data:v1")["creator"]["run"] == "mine"  # ARTFS_RUN_ID wins
    write_tree(tmp_path / "d", {"a.txt": "3"})
    cli("put", "d", "--name", "p/data", "--type", "dataset", env=no_scheduler_env()).ok()
    run = info(cli, "p/data:v2")["creator"]["run"]
    assert re.fullmatch(re.escape(socket.gethostname()) + r"-\d+", run), run


# -- uses -----------------------------------------------------------------------------------------


def test_get_records_a_use_by_the_current_run(cli, tmp_path):
    write_tree(tmp_path / "d", {"a.txt": "1"})
    cli("put", "d", "--name", "p/data", "--type", "dataset", env={**no_scheduler_env(), "ARTFS_RUN_ID": "maker"}).ok()
    assert "used" not in cli("lineage", "p/data:v0").ok().out
    cli("get", "p/data:v0", "--root", "out", env={**no_scheduler_env(), "ARTFS_RUN_ID": "reader"}).ok()
    lines = cli("lineage", "p/data:v0").ok().out.splitlines()
    assert lines == ["p/data:v0", "  run maker logged p/data:v0", "  run reader used p/data:v0"]


def test_use_artifact_records_a_use(local_store_url, cache_dir, cli, tmp_path, monkeypatch):
    write_tree(tmp_path / "d", {"a.txt": "1"})
    cli("put", "d", "--name", "p/data", "--type", "dataset", env={**no_scheduler_env(), "ARTFS_RUN_ID": "maker"}).ok()
    store = artfs_api.Store(local_store_url, cache_dir)
    monkeypatch.setenv("ARTFS_RUN_ID", "notebook-1")
    art = artfs_api.use_artifact("p/data:latest", store=store)
    assert art.version == "v0"
    assert "  run notebook-1 used p/data:v0" in cli("lineage", "p/data:v0").ok().out.splitlines()


@pytest.mark.mount
def test_first_read_in_a_mount_records_one_use_per_version(cli, local_store_url, tmp_path, mounter):
    write_tree(tmp_path / "d", {"a.txt": "1", "b.txt": "b"})
    cli("put", "d", "--name", "p/data", "--type", "dataset", env={**no_scheduler_env(), "ARTFS_RUN_ID": "maker"}).ok()
    write_tree(tmp_path / "d", {"a.txt": "2"})
    cli("put", "d", "--name", "p/data", "--type", "dataset", env={**no_scheduler_env(), "ARTFS_RUN_ID": "maker"}).ok()
    m = mounter(local_store_url, env={**no_scheduler_env(), "ARTFS_RUN_ID": "loader"})
    use_key = os.path.join(local_store_url, "lineage", "uses", "p", "data")

    os.listdir(m.path("p", "data", "v0"))  # listing and stat are not a use
    os.stat(m.path("p", "data", "v0", "a.txt"))
    assert not os.path.exists(use_key)

    with open(m.path("p", "data", "v0", "a.txt")) as f:
        assert f.read() == "1"
    first = os.path.join(use_key, "v0", "loader")
    wait_for(lambda: os.path.exists(first), 10, "the mount's use of v0 to be recorded")
    assert "  run loader used p/data:v0" in cli("lineage", "p/data:v0").ok().out.splitlines()
    stamp = os.stat(first).st_mtime_ns

    for name in ("a.txt", "b.txt", "a.txt"):  # more reads of the same version: no more records
        with open(m.path("p", "data", "v0", name)) as f:
            f.read()
    with open(m.path("p", "data", "v1", "a.txt")) as f:  # another version: its own record
        assert f.read() == "2"
    wait_for(lambda: os.path.exists(os.path.join(use_key, "v1", "loader")), 10, "the mount's use of v1")
    assert os.stat(first).st_mtime_ns == stamp, "a second read of v0 recorded its use again"
    assert sorted(os.listdir(use_key)) == ["v0", "v1"]


# -- the graph ------------------------------------------------------------------------------------


@pytest.fixture
def pipeline(request, local_store_url, cache_dir, tmp_path, monkeypatch):
    """prep logs data:v0; train uses it and logs model:v0; evaluate uses that and logs report:v0.
    Built with the Python API (each step under its own ARTFS_RUN_ID); a local store unless
    parametrized indirectly with "s3"."""
    store_url = local_store_url
    if getattr(request, "param", "local") == "s3":
        store_url = fresh_s3_url(request.getfixturevalue("s3_test_bucket"))
    store = artfs_api.Store(store_url, cache_dir)

    def step(run, uses, logs):
        monkeypatch.setenv("ARTFS_RUN_ID", run)
        if uses:
            artfs_api.use_artifact(uses, store=store)
        art = artfs_api.Artifact(logs, type="dataset")
        with art.new_file("out.txt") as f:
            f.write(run)
        artfs_api.log_artifact(art, store=store)

    step("prep", None, "p/data")
    step("train", "p/data:v0", "p/model")
    step("evaluate", "p/model:v0", "p/report")
    monkeypatch.delenv("ARTFS_RUN_ID")
    return ArtfsCLI(store_url, cache_dir, cwd=str(tmp_path))


@pytest.mark.parametrize("pipeline", ["local", pytest.param("s3", marks=pytest.mark.s3)], indirect=True)
def test_lineage_text_walks_up_and_down(pipeline):
    out = pipeline("lineage", "p/model:v0", "--depth", "1").ok().out
    # One step up: the run that logged it and what that run used; one step down: the runs
    # that used it and what they logged.
    assert out.splitlines() == [
        "p/model:v0",
        "  run evaluate logged p/report:v0",
        "  run train logged p/model:v0",
        "  run train used p/data:v0",
        "  run evaluate used p/model:v0",
    ]


def test_lineage_depth_limits_the_walk(pipeline):
    one = pipeline("lineage", "p/data:v0", "--depth", "1").ok().out
    assert "run train logged p/model:v0" in one and "report" not in one and "evaluate" not in one
    two = pipeline("lineage", "p/data:v0", "--depth", "2").ok().out
    assert "run evaluate used p/model:v0" in two and "run evaluate logged p/report:v0" in two
    up = pipeline("lineage", "p/report:v0", "--depth", "2").ok().out.splitlines()
    assert "  run train logged p/model:v0" in up and "  run train used p/data:v0" in up
    assert "  run prep logged p/data:v0" not in up  # who logged that input is a third step up
    pipeline("lineage", "p/data:v0", "--depth", "0").fails("--depth")


def parse_dot(text: str) -> tuple[dict[str, str], list[tuple[str, str, str]]]:
    """A strict reader of the subset of Graphviz dot that `artfs lineage --dot` writes:
    returns ({node: shape}, [(from, to, label)]). Fails on anything else."""
    lines = [line.strip() for line in text.strip().splitlines()]
    assert lines[0] == "digraph lineage {" and lines[-1] == "}", text
    q = r'"((?:[^"\\]|\\.)*)"'
    nodes, edges = {}, []
    for line in lines[1:-1]:
        if line in ("rankdir=LR;",):
            continue
        if m := re.fullmatch(q + r" \[shape=(box|ellipse)(?:, style=(?:bold|dashed))?\];", line):
            nodes[m.group(1)] = m.group(2)
        elif m := re.fullmatch(q + " -> " + q + r" \[label=(logged|used)\];", line):
            edges.append((m.group(1), m.group(2), m.group(3)))
        else:
            raise AssertionError(f"not valid lineage dot: {line!r}")
    for a, b, _ in edges:
        assert a in nodes and b in nodes, f"edge {a} -> {b} names an undeclared node"
    return nodes, edges


def test_lineage_dot_file_is_a_graphviz_graph(pipeline, tmp_path):
    dot_file = tmp_path / "g.dot"
    text = pipeline("lineage", "p/model:v0", "--depth", "1", "--dot", dot_file).ok().out
    assert text.splitlines()[0] == "p/model:v0"  # the text still goes to stdout
    nodes, edges = parse_dot(dot_file.read_text())
    assert nodes == {
        "p/model:v0": "box",
        "p/data:v0": "box",
        "p/report:v0": "box",
        "run train": "ellipse",
        "run evaluate": "ellipse",
    }
    assert sorted(edges) == sorted(
        [
            ("run train", "p/model:v0", "logged"),
            ("run evaluate", "p/report:v0", "logged"),
            ("p/data:v0", "run train", "used"),
            ("p/model:v0", "run evaluate", "used"),
        ]
    )
    assert pipeline("lineage", "p/model:v0", "--depth", "1", "--dot", "-").ok().out == dot_file.read_text().strip()
    if shutil.which("dot"):  # Graphviz itself, when installed
        subprocess.run(["dot", "-Tsvg", str(dot_file), "-o", str(tmp_path / "g.svg")], check=True, timeout=30)


def test_lineage_shows_deleted_versions_and_refuses_unknown_ones(pipeline):
    pipeline("rm", "p/data:v0", "--force").ok()
    out = pipeline("lineage", "p/model:v0", "--depth", "1").ok().out.splitlines()
    assert "  run train used p/data:v0" in out and out[-1] == "  (deleted: p/data:v0)"
    pipeline("lineage", "p/data:v0").fails("p/data:v0", "deleted")
    pipeline("lineage", "p/model:v7").fails("does not exist")
    pipeline("lineage", "p/nothing").fails("does not exist")
