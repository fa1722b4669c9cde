"""artfs.wandb beyond the seed documents: W&B arguments accepted or refused, tags, checkout
and verify, missing references, queries, and runs seen from another process (a second
host reading the same store), on both store backends where it matters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest

import artfs.wandb as wandb  # noqa: PLR0402  (as W&B code imports it)
from artfs.errors import ArtfsError


def write(path, data: bytes | str) -> str:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    return str(path)


def listing(root) -> dict[str, bytes]:
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for fn in files:
            full = os.path.join(dirpath, fn)
            with open(full, "rb") as f:
                out[os.path.relpath(full, root)] = f.read()
    return out


@pytest.fixture
def wb(store_url, tmp_path, monkeypatch):
    monkeypatch.setenv("ARTFS_STORE", store_url)
    monkeypatch.setenv("ARTFS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ARTFS_RUN_ID", raising=False)
    monkeypatch.setenv("WANDB_PROJECT", "proj")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    yield store_url
    wandb.finish()


@pytest.fixture
def local_wb(tmp_path, monkeypatch):
    monkeypatch.setenv("ARTFS_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("ARTFS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ARTFS_RUN_ID", raising=False)
    monkeypatch.setenv("WANDB_PROJECT", "proj")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    yield str(tmp_path / "store")
    wandb.finish()


def test_runs_are_records_another_process_reads(wb):
    """What one process logged and used, another (another host: same store) can ask about."""
    write("a.txt", "a")
    with wandb.init(job_type="load", group="g1", name="loader", config={"lr": 0.1}) as loader:
        art = wandb.Artifact("data", type="dataset")
        art.add_file("a.txt")
        loader.log_artifact(art)
    with wandb.init(job_type="train") as trainer:
        trainer.use_artifact("data:latest")
        trainer.config.epochs = 3
    script = (
        "import json, artfs.wandb as wandb\n"
        "api = wandb.Api()\n"
        "a = api.artifact('proj/data:v0')\n"
        "maker = a.logged_by()\n"
        "users = a.used_by()\n"
        f"t = api.run('proj/{trainer.id}')\n"
        "print(json.dumps({'maker': [maker.id, maker.name, maker.job_type, maker.group, maker.config, maker.state],"
        " 'users': [u.id for u in users], 'used': [x.name for x in t.used_artifacts()], 'config': t.config,"
        " 'runs': [r.id for r in api.runs('proj')]}))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["maker"] == [loader.id, "loader", "load", "g1", {"lr": 0.1}, "finished"]
    assert doc["users"] == [trainer.id]
    assert doc["used"] == ["data:v0"]
    assert doc["config"] == {"epochs": 3}
    assert doc["runs"] == [loader.id, trainer.id]


def test_harmless_arguments_warn_once_and_are_ignored(local_wb):
    write("a.txt", "a")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        art = wandb.Artifact("w", type="dataset")
        art.add_file("a.txt", skip_cache=True)
        art.add_file("a.txt", name="b.txt", skip_cache=True)  # the same again: no second warning
        art.ttl = None
        with wandb.init(notes="hello", tags=["run-tag"]) as run:
            run.log_artifact(art)
    messages = [str(w.message) for w in caught if issubclass(w.category, wandb.ArtfsWandbWarning)]
    assert len([m for m in messages if "skip_cache" in m]) == 1
    assert any("notes" in m and "tags" in m for m in messages)
    assert sorted(f.name for f in art.files()) == ["a.txt", "b.txt"]


def test_tags_are_kept(local_wb):
    write("a.txt", "a")
    with wandb.init() as run:
        art = wandb.Artifact("tagged", type="dataset")
        art.add_file("a.txt")
        run.log_artifact(art, tags=["cleaned", "v2-labels"])
    api = wandb.Api()
    got = api.artifact("tagged:latest")
    assert got.tags == ["cleaned", "v2-labels"]
    got.tags.append("reviewed")
    got.save()
    assert api.artifact("proj/tagged:v0").tags == ["cleaned", "v2-labels", "reviewed"]
    assert [a.name for a in api.artifacts("dataset", "tagged", tags=["reviewed"])] == ["tagged:v0"]
    assert api.artifacts("dataset", "tagged", tags=["nope"]) == []


def test_checkout_and_verify(local_wb):
    write("src/a.txt", "a")
    write("src/sub/b.txt", "b")
    with wandb.init() as run:
        art = wandb.Artifact("co", type="dataset")
        art.add_dir("src")
        run.log_artifact(art)
    root = art.download()
    art.verify()
    write(os.path.join(root, "a.txt"), "A")
    write(os.path.join(root, "extra/junk.txt"), "junk")
    with pytest.raises(ValueError, match="a.txt") as e:
        art.verify(root)
    assert "extra/junk.txt" in str(e.value)
    assert art.checkout() == os.path.abspath(root)
    assert listing(root) == {"a.txt": b"a", os.path.join("sub", "b.txt"): b"b"}
    art.verify(root)


def test_download_with_missing_references_and_a_prefix(local_wb, tmp_path):
    ref = write(tmp_path / "outside" / "r.txt", "ref")
    write("keep/a.txt", "a")
    write("b.txt", "b")
    with wandb.init() as run:
        art = wandb.Artifact("refs", type="dataset")
        art.add_dir("keep", name="keep")
        art.add_file("b.txt")
        art.add_reference("file://" + ref, name="keep/r.txt")
        run.log_artifact(art)
    os.unlink(ref)
    with pytest.raises(ArtfsError, match="r.txt"):
        art.download(root="strict")
    root = art.download(root="lenient", allow_missing_references=True)
    assert listing(root) == {os.path.join("keep", "a.txt"): b"a", "b.txt": b"b"}
    assert listing(art.download(root="part", path_prefix="keep", allow_missing_references=True)) == {
        os.path.join("keep", "a.txt"): b"a"
    }


def test_logging_a_path_and_module_level_verbs(local_wb):
    write("model.h5", "m")
    with pytest.raises(ArtfsError, match=r"wandb.init\(\)"):
        wandb.log_artifact("model.h5", type="model")
    run = wandb.init(job_type="x")
    assert wandb.run is run
    logged = wandb.log_artifact("model.h5", name="weights", type="model", aliases=["best"])
    assert logged.name == "weights:v0" and logged.aliases == ["latest", "best"]
    assert wandb.use_artifact("weights:best").name == "weights:v0"
    default = run.log_artifact("model.h5")
    assert default.name == f"run-{run.id}-model.h5:v0" and default.type == "unspecified"
    with pytest.raises(ArtfsError, match="type 'model', not 'dataset'"):
        run.use_artifact("weights:latest", type="dataset")
    run.finish()
    assert wandb.run is None
    with pytest.raises(ArtfsError, match="finished"):
        run.log_artifact("model.h5")


def test_queries(local_wb):
    write("a.txt", "a")
    write("b.txt", "b")
    with wandb.init() as run:
        for name, t, f in [("ds", "dataset", "a.txt"), ("ds", "dataset", "b.txt"), ("m", "model", "a.txt")]:
            art = wandb.Artifact(name, type=t)
            art.add_file(f)
            run.log_artifact(art)
    api = wandb.Api()
    assert [t.name for t in api.artifact_types()] == ["dataset", "model"]
    assert [c.name for c in api.artifact_type("dataset").collections()] == ["ds"]
    coll = api.artifact_collection("dataset", "proj/ds")
    assert [v.name for v in coll.versions()] == ["ds:v1", "ds:v0"]
    assert api.artifact_collection_exists("m", "model") and not api.artifact_collection_exists("m", "dataset")
    assert api.artifact_exists("ds:v1") and not api.artifact_exists("ds:v2") and not api.artifact_exists("zz")
    assert api.artifact("ent/proj/ds:v0").file_count == 1
    with pytest.raises(ArtfsError):
        api.artifact("ds:v0", type="model")
    v1 = api.artifact("ds:latest")
    assert v1.created_at.endswith("Z") and v1.size == 1 and v1.state == "COMMITTED"
    assert v1.manifest.entries["b.txt"].size == 1
    assert v1.get_entry("b.txt").download(root="x") == os.path.abspath(os.path.join("x", "b.txt"))
    with pytest.raises(KeyError):
        v1.get_entry("nope.txt")
    with pytest.raises(wandb.errors.CommError, match="does not exist"):
        api.artifact("missing:latest")


def test_registries_are_refused_not_ignored(local_wb):
    write("a.txt", "a")
    with wandb.init() as run:
        art = wandb.Artifact("l", type="model")
        art.add_file("a.txt")
        run.log_artifact(art)
        with pytest.raises(ArtfsError, match="registries"):
            art.link("wandb-registry-model/prod")


def readme_example() -> str:
    """The first code block of the README's "Coming from W&B" section."""
    readme = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")
    with open(readme, encoding="utf-8") as f:
        text = f.read()
    section = text.split("## Coming from W&B", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_readme_example_runs(local_wb):
    write("bikes/a.png", "a")
    with wandb.init(project="demo") as run:
        art = wandb.Artifact("bike-dataset", type="dataset")
        art.add_dir("bikes")
        run.log_artifact(art)
    code = readme_example()
    assert code.startswith("import artfs.wandb as wandb")
    exec(compile(code, "README.md", "exec"), {})  # noqa: S102  (the README's own code, as a reader runs it)
    got = wandb.Api().artifact("demo/bike-clean:best")
    assert sorted(f.name for f in got.files()) == ["a.png", "stats.table.json"]
    assert got.tags == ["cleaned"] and got.metadata == {"steps": 3}
    assert [a.name for a in got.logged_by().used_artifacts()] == ["bike-dataset:v0"]
    assert got.logged_by().group == "exp-7"


def test_upsert_with_aliases_is_refused_not_dropped(local_wb):
    write("a.txt", "a")
    with wandb.init(group="g") as run:
        art = wandb.Artifact("d", type="dataset")
        art.add_file("a.txt")
        with pytest.raises(ArtfsError, match="finish_artifact"):
            run.upsert_artifact(art, aliases=["best"])
        run.upsert_artifact(art)
        done = run.finish_artifact(wandb.Artifact("d", type="dataset"), aliases=["best"])
    assert done.aliases == ["latest", "best"] and [f.name for f in done.files()] == ["a.txt"]
