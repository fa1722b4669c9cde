"""A commit through the mount is the committer's: the version's creator and lineage name the run
of the process that ran `artfs commit`, not the mount's daemon; a refused commit says why on the
committing terminal; a draft that does not exist is said not to exist."""

from __future__ import annotations

import json
import os

import pytest
from conftest import run_artfs
from drafts_common import shared_mounter, unique  # noqa: F401  (shared_mounter is a fixture)

pytestmark = pytest.mark.mount


@pytest.fixture(scope="module")
def env(shared_mounter, tmp_path_factory):  # noqa: F811
    store = str(tmp_path_factory.mktemp("committer") / "store")
    return store, shared_mounter(store, "--refresh", "0.3")


def _cli(env, *args, run_env=None):
    store, m = env
    return run_artfs(list(args), store=store, cache=m.cache, env=run_env)


def _draft_with_a_file(m, artifact: str) -> str:
    draft = m.path(artifact, "drafts", "d")
    os.makedirs(draft)
    with open(os.path.join(draft, "x.txt"), "w") as f:
        f.write("x\n")
    return draft


def test_the_version_and_its_lineage_name_the_committing_run(env):
    _, m = env
    artifact = f"{unique('p')}/a"
    draft = _draft_with_a_file(m, artifact)
    out = _cli(env, "commit", draft, "--type", "dataset", run_env={"ARTFS_RUN_ID": "train-42"}).ok()
    assert out.stdout.strip() == f"{artifact}:v0"
    info = json.loads(_cli(env, "info", f"{artifact}:v0").ok().stdout)
    assert info["creator"]["run"] == "train-42"
    lineage = _cli(env, "lineage", f"{artifact}:v0").ok().stdout
    assert "train-42" in lineage


def test_a_slurm_job_is_the_run_when_no_artfs_run_is_set(env):
    _, m = env
    artifact = f"{unique('p')}/a"
    draft = _draft_with_a_file(m, artifact)
    run_env = {"SLURM_JOB_ID": "777", "ARTFS_RUN_ID": ""}
    _cli(env, "commit", draft, "--type", "dataset", run_env=run_env).ok()
    assert json.loads(_cli(env, "info", f"{artifact}:v0").ok().stdout)["creator"]["run"] == "777"


def test_a_refused_commit_prints_the_reason(env):
    _, m = env
    artifact = f"{unique('p')}/a"
    draft = _draft_with_a_file(m, artifact)
    r = _cli(env, "commit", draft)  # a new artifact needs a type
    assert r.returncode != 0
    assert "give its type" in r.stderr and "Invalid argument" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    r = _cli(env, "commit", draft, "--type", "dataset", "--metadata", "[1]")  # not an object
    assert r.returncode != 0 and "Invalid argument" not in r.stderr and "metadata" in r.stderr, r.stderr


def test_a_draft_that_does_not_exist_gets_no_draft_at_path(env):
    _, m = env
    artifact = f"{unique('p')}/a"
    _draft_with_a_file(m, artifact)
    missing = m.path(artifact, "drafts", "nope")
    r = _cli(env, "commit", missing, "--type", "dataset")
    assert r.returncode != 0 and r.stderr.strip().endswith(f": no draft at {missing}"), r.stderr
    r = _cli(env, "commit", f"{artifact}/drafts/nope", "--type", "dataset")
    assert r.returncode != 0 and r.stderr.strip().endswith(f": no draft at {artifact}/drafts/nope"), r.stderr
    r = _cli(env, "commit", f"{artifact}/drafts/d", "--type", "dataset")  # exists, served by the mount
    assert r.returncode != 0 and m.path(artifact, "drafts", "d") in r.stderr, r.stderr
