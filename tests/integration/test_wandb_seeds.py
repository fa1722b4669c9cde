"""The W&B documents' own examples (shared/seeds: the Japanese, Korean and Chinese W&B
Artifacts pages), run through `import artfs.wandb as wandb` — the one changed line.

Each test lays out the files an example expects in its working folder, runs the
example's code as the document has it, then checks what a user would look at: the
versions, their files and aliases, downloads, lineage, the queries.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
import warnings

import pytest
from conftest import s3_client

import artfs.wandb as wandb  # noqa: PLR0402  (the one line W&B code changes)
from artfs.errors import ArtfsError


def write(path: str, data: bytes | str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def tree(root: str) -> dict[str, bytes]:
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for fn in files:
            full = os.path.join(dirpath, fn)
            out[os.path.relpath(full, root)] = read(full)
    return out


@pytest.fixture
def wb(tmp_path, monkeypatch):
    """A fresh local store for artfs.wandb, and the test's folder as the working folder
    (the examples name their files relative to it)."""
    monkeypatch.setenv("ARTFS_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("ARTFS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ARTFS_RUN_ID", raising=False)
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    for var in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR"):  # the real SDK, where a test uses it
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.setenv("WANDB_MODE", "offline")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    warnings.simplefilter("ignore", wandb.ArtfsWandbWarning)
    yield str(work)
    wandb.finish()


@pytest.fixture
def project_directory(wb):
    """The seeds' example tree: images/{cat,dog}.png, checkpoints/model.h5, model.h5."""
    write("images/cat.png", b"cat")
    write("images/dog.png", b"dog")
    write("checkpoints/model.h5", b"checkpoint")
    write("model.h5", b"model")
    return wb


# -- 000 (ja) "Create an artifact" ---------------------------------------------------------
def test_create_add_and_log(project_directory):
    write("hello_world.txt", "hello")
    # 1. wandb.Artifact()
    artifact = wandb.Artifact(name="hello", type="dataset")
    # 2. add a file
    artifact.add_file(local_path="hello_world.txt", name="optional-name")
    # 3. log it
    run = wandb.init(project="artifacts-example", job_type="job-type")
    run.log_artifact(artifact)

    assert artifact.name == "hello:v0" and artifact.version == "v0"
    assert artifact.qualified_name.endswith("/artifacts-example/hello:v0")
    assert artifact.aliases == ["latest"]
    assert [f.name for f in artifact.files()] == ["optional-name"]
    assert artifact.logged_by().id == run.id
    assert artifact.logged_by().job_type == "job-type"


def test_logging_in_a_loop_keeps_the_order(project_directory):
    run = wandb.init(project="artifacts-example", job_type="job-type")
    for i in range(10):
        a = wandb.Artifact(
            "race",
            type="dataset",
            metadata={
                "index": i,
            },
        )
        # ... add files to artifact a ...
        with a.new_file("i.txt") as f:
            f.write(str(i))
        run.log_artifact(a)
    # W&B logs asynchronously and does not promise v0 has index 0; artfs logs in order.
    versions = wandb.Api().artifacts("dataset", "artifacts-example/race")
    assert [v.version for v in versions] == [f"v{i}" for i in range(9, -1, -1)]
    assert [v.metadata["index"] for v in versions] == list(range(9, -1, -1))


def test_add_file_and_add_dir_tables(project_directory):
    """The seeds' table of API calls and the artifact contents they give."""
    cases = [
        (lambda a: a.add_file("model.h5"), {"model.h5": b"model"}),
        (lambda a: a.add_file("checkpoints/model.h5"), {"model.h5": b"checkpoint"}),
        (lambda a: a.add_file("model.h5", name="models/mymodel.h5"), {"models/mymodel.h5": b"model"}),
        (lambda a: a.add_dir("images"), {"cat.png": b"cat", "dog.png": b"dog"}),
        (lambda a: a.add_dir("images", name="images"), {"images/cat.png": b"cat", "images/dog.png": b"dog"}),
        (lambda a: a.new_file("hello.txt").close(), {"hello.txt": b""}),
    ]
    run = wandb.init(project="tables")
    for i, (call, expected) in enumerate(cases):
        artifact = wandb.Artifact(f"case-{i}", type="dataset")
        call(artifact)
        run.log_artifact(artifact)
        assert [f.name for f in artifact.files()] == sorted(expected)
        root = artifact.download()
        assert root.endswith(os.path.join("artifacts", f"case-{i}:v0"))
        assert tree(root) == expected


def test_add_file_takes_the_file_as_it_is_when_added(project_directory):
    """W&B copies a file at add time (policy='mutable'); 'immutable' reads it when logged."""
    write("path/file.txt", "before")
    write("other.txt", "before")
    artifact = wandb.Artifact("copies", type="dataset")
    artifact.add_file("path/file.txt")  # added as `file.txt`
    artifact.add_file("other.txt", policy="immutable")
    write("path/file.txt", "after")
    write("other.txt", "after")
    with wandb.init(project="p") as run:
        run.log_artifact(artifact)
    assert tree(artifact.download()) == {"file.txt": b"before", "other.txt": b"after"}


# -- 000/004 parallel runs, with Tables (ray replaced by processes) ---------------------------
artifact_type = "dataset"
artifact_name = "parallel-artifact"
table_name = "distributed_table"
parts_path = "parts"
num_parallel = 5


def train(i, group_name):
    """The seed's writer job, verbatim but for the ray decorator (one process per writer)."""
    with wandb.init(group=group_name) as run:
        artifact = wandb.Artifact(name=artifact_name, type=artifact_type)

        # Add data to a wandb table. In this case we use example data
        table = wandb.Table(columns=["a", "b", "c"], data=[[i, i * 2, 2**i]])

        # Add the table to folder in the artifact
        artifact.add(table, "{}/table_{}".format(parts_path, i))  # noqa: UP032  (as the seed has it)

        # Upserting the artifact creates or appends data to the artifact
        run.upsert_artifact(artifact)


def test_parallel_runs_with_a_partitioned_table(wb):
    # Each batch of parallel writers should have its own unique group name.
    group_name = "writer-group-{}".format(round(time.time()))  # noqa: UP032  (as the seed has it)
    ctx = multiprocessing.get_context("fork")
    writers = [ctx.Process(target=train, args=(i, group_name)) for i in range(num_parallel)]
    for p in writers:
        p.start()
    for p in writers:
        p.join(120)
        assert p.exitcode == 0

    with wandb.init(group=group_name) as run:
        artifact = wandb.Artifact(artifact_name, type=artifact_type)

        # Create a "PartitionTable" pointing to the folder of tables
        # and add it to the artifact.
        artifact.add(wandb.data_types.PartitionedTable(parts_path), table_name)

        # Finish artifact finalizes the artifact, disallowing future "upserts"
        # to this version.
        run.finish_artifact(artifact)

    assert artifact.name == "parallel-artifact:v0"
    assert sorted(f.name for f in artifact.files()) == [
        "distributed_table.partitioned-table.json",
        *[f"parts/table_{i}.table.json" for i in range(num_parallel)],
    ]
    got = wandb.Api().artifact("parallel-artifact:latest").get(table_name)
    assert isinstance(got, wandb.data_types.PartitionedTable)
    assert sorted(row for _, row in got.iterrows()) == [[i, i * 2, 2**i] for i in range(num_parallel)]
    part = wandb.Api().artifact("parallel-artifact:v0").get("parts/table_3")
    assert part.columns == ["a", "b", "c"] and part.data == [[3, 6, 8]]
    # a finished version takes no more upserts
    with wandb.init(group=group_name) as run:
        late = wandb.Artifact(artifact_name, type=artifact_type)
        late.add(wandb.Table(columns=["a"], data=[[0]]), "parts/late")
        with pytest.raises(ArtfsError):
            run.upsert_artifact(late)


def test_upsert_without_group_or_distributed_id_is_refused(wb):
    with wandb.init(project="p") as run:
        artifact = wandb.Artifact("x", type="dataset")
        artifact.new_file("a.txt").close()
        with pytest.raises(ArtfsError, match="distributed_id"):
            run.upsert_artifact(artifact)


# -- 002/003 (ja, ko) "Create a new artifact version" --------------------------------------------
def test_single_run_and_distributed_runs(wb):
    for n in (1, 2, 3):
        write(f"image{n}.png", f"image {n}")

    with wandb.init() as run:
        artifact = wandb.Artifact("artifact_name", "artifact_type")

        # `.add`、`.add_file`、`.add_dir`、`.add_reference` を使用して
        # artifact にファイルとアセットを追加
        artifact.add_file("image1.png")
        run.log_artifact(artifact)
    assert artifact.qualified_name.endswith("/uncategorized/artifact_name:v0")

    # Run 1
    with wandb.init() as run:
        artifact = wandb.Artifact("artifact_name", "artifact_type")
        artifact.add_file("image1.png")
        run.upsert_artifact(artifact, distributed_id="my_dist_artifact")

    # Run 2
    with wandb.init() as run:
        artifact = wandb.Artifact("artifact_name", "artifact_type")
        artifact.add_file("image2.png")
        run.upsert_artifact(artifact, distributed_id="my_dist_artifact")

    # Run 3
    with wandb.init() as run:
        artifact = wandb.Artifact("artifact_name", "artifact_type")
        artifact.add_file("image3.png")
        run.finish_artifact(artifact, distributed_id="my_dist_artifact")

    assert artifact.name == "artifact_name:v1"
    assert tree(artifact.download()) == {f"image{n}.png": f"image {n}".encode() for n in (1, 2, 3)}


def test_incremental_new_draft(wb):
    write("a.txt", "a")
    write("dir_to_remove/x.txt", "x")
    write("dir_to_remove/y.txt", "y")
    with wandb.init(job_type="load") as run:
        first = wandb.Artifact("my_artifact", "dataset")
        first.add_file("a.txt")
        first.add_dir("dir_to_remove", name="dir_to_remove")
        run.log_artifact(first)
    write("file_to_add.txt", "new")

    with wandb.init(job_type="modify dataset") as run:
        saved_artifact = run.use_artifact("my_artifact:latest")  # アーティファクトを取得して run に入力する
        draft_artifact = saved_artifact.new_draft()  # ドラフトバージョンを作成する

        # ドラフトバージョン内のファイルの一部を変更する
        draft_artifact.add_file("file_to_add.txt")
        draft_artifact.remove("dir_to_remove/")
        run.log_artifact(draft_artifact)  # 変更をログして新しいバージョンを作成し、run の出力としてマークする

    assert draft_artifact.name == "my_artifact:v1"
    assert tree(draft_artifact.download()) == {"a.txt": b"a", "file_to_add.txt": b"new"}
    modifier = draft_artifact.logged_by()
    assert modifier.job_type == "modify dataset"
    assert [a.name for a in modifier.used_artifacts()] == ["my_artifact:v0"]
    assert [a.name for a in modifier.logged_artifacts()] == ["my_artifact:v1"]
    assert [r.id for r in wandb.Api().artifact("my_artifact:v0").used_by()] == [modifier.id]


def test_incremental_flag_builds_on_latest(wb):
    write("a.txt", "a")
    write("b.txt", "b")
    with wandb.init() as run:
        first = wandb.Artifact("inc", "dataset")
        first.add_file("a.txt")
        run.log_artifact(first)
        more = wandb.Artifact("inc", "dataset", incremental=True)
        more.add_file("b.txt")
        run.log_artifact(more)
    assert more.name == "inc:v1"
    assert sorted(f.name for f in more.files()) == ["a.txt", "b.txt"]


# -- 001 (ko) walkthrough: load, preprocess, model, train, evaluate -------------------------------
def test_korean_walkthrough_pipeline(wb):
    config = {"batch_size": 128, "steps": 3}
    with wandb.init(project="artifacts-example", job_type="load-data") as run:
        raw_data = wandb.Artifact(
            "mnist-raw",
            type="dataset",
            description="Raw MNIST dataset, split into train/val/test",
            metadata={"source": "torchvision.datasets.MNIST", "sizes": [50000, 10000, 10000]},
        )
        for name in ["training", "validation", "test"]:
            with raw_data.new_file(name + ".pt", mode="wb") as file:
                file.write(name.encode() * 100)
        run.log_artifact(raw_data)

    with wandb.init(project="artifacts-example", job_type="preprocess-data") as run:
        processed_data = wandb.Artifact(
            "mnist-preprocess", type="dataset", description="Preprocessed MNIST dataset", metadata=config
        )
        raw_data_artifact = run.use_artifact("mnist-raw:latest")
        raw_dataset = raw_data_artifact.download()
        for split in ["training", "validation", "test"]:
            data = read(os.path.join(raw_dataset, split + ".pt"))
            with processed_data.new_file(split + ".pt", mode="wb") as file:
                file.write(data.upper())
        run.log_artifact(processed_data)

    with wandb.init(project="artifacts-example", job_type="initialize", config=config) as run:
        config = wandb.config
        assert config.batch_size == 128
        write("initialized_model.pth", b"weights")
        model_artifact = wandb.Artifact(
            "convnet", type="model", description="Simple AlexNet style CNN", metadata=dict(config)
        )
        model_artifact.add_file("initialized_model.pth")
        run.log_artifact(model_artifact)

    with wandb.init(project="artifacts-example", job_type="train") as run:
        data = run.use_artifact("mnist-preprocess:latest")
        data_dir = data.download()
        model_artifact = run.use_artifact("convnet:latest")
        model_dir = model_artifact.download()
        assert read(os.path.join(model_dir, "initialized_model.pth")) == b"weights"
        write("trained_model.pth", b"trained " + read(os.path.join(data_dir, "test.pt"))[:4])
        trained = wandb.Artifact("trained-model", type="model", metadata={"from": model_artifact.name})
        trained.add_file("trained_model.pth")
        run.log_artifact(trained)

    # `!tree artifacts`: one folder per version used, named NAME:vN
    assert sorted(os.listdir("artifacts")) == ["convnet:v0", "mnist-preprocess:v0", "mnist-raw:v0"]
    api = wandb.Api(overrides={"project": "artifacts-example"})
    trainer = api.artifact("trained-model:latest").logged_by()
    assert trainer.job_type == "train"
    assert sorted(a.name for a in trainer.used_artifacts()) == ["convnet:v0", "mnist-preprocess:v0"]
    assert api.run(f"artifacts-example/{trainer.id}").config == {}
    initializer = api.artifact("convnet:v0").logged_by()
    assert initializer.config == {"batch_size": 128, "steps": 3}
    assert [t.name for t in api.artifact_types("artifacts-example")] == ["dataset", "model"]
    assert [c.name for c in api.artifact_collections("artifacts-example", "dataset")] == [
        "mnist-preprocess",
        "mnist-raw",
    ]


# -- 004 (zh) walkthrough ---------------------------------------------------------------------
def test_chinese_walkthrough(project_directory):
    write("bicycle-data.h5", b"bikes")
    with wandb.init(project="my-project", job_type="make-model") as other:
        m = wandb.Artifact("bike-model", type="model")
        m.add_file("model.h5")
        other.log_artifact(m)

    # 1. 初始化运行
    run = wandb.init(job_type="train")
    # 2. 创建工件
    artifact = wandb.Artifact("bike-dataset", type="dataset")
    artifact.add_file("bicycle-data.h5")
    run.log_artifact(artifact)
    # 3. 使用工件
    artifact = run.use_artifact("bike-dataset:v0")
    artifact_dir = artifact.download()
    assert tree(artifact_dir) == {"bicycle-data.h5": b"bikes"}
    assert os.path.relpath(artifact_dir) == os.path.join("artifacts", "bike-dataset:v0")
    # artifacts of another project, and of another entity
    artifact = run.use_artifact("my-project/bike-model:v0")
    assert artifact.project == "my-project"
    artifact = run.use_artifact("my-entity/my-project/bike-model:v0")
    assert artifact.name == "bike-model:v0"
    # an artifact not logged yet: use_artifact logs it, once
    artifact = wandb.Artifact("bike-model", type="model")
    artifact.add_file("model.h5")
    run.use_artifact(artifact)
    again = wandb.Artifact("bike-model", type="model")
    again.add_file("model.h5")
    run.use_artifact(again)
    assert artifact.name == again.name == "bike-model:v0"
    assert artifact.project == "uncategorized"
    assert [r.id for r in artifact.used_by()] == [run.id]
    # versions and aliases
    artifact = run.use_artifact("bike-dataset:latest")
    assert artifact.name == "bike-dataset:v0"
    artifact = wandb.Artifact("run-3nq3ctyy-bike-model", type="model")
    artifact.add_file("model.h5")
    run.log_artifact(artifact, aliases=["latest", "best-ap50"])
    assert artifact.aliases == ["latest", "best-ap50"]
    run.finish()


def test_chinese_walkthrough_constructing_and_entries(project_directory):
    path = "model.h5"
    uri = "file://" + os.path.abspath("checkpoints/model.h5")
    name = "notes.txt"
    artifact = wandb.Artifact("bike-dataset", type="dataset")
    # Add a single file
    artifact.add_file(path, name="optional-name")
    # Recursively add a directory
    artifact.add_dir("images", name="optional-prefix")
    # Return a writeable file-like object, stored as <name> in the artifact
    with artifact.new_file(name) as f:
        f.write("notes")
    # Add a URI reference
    artifact.add_reference(uri, name="ref-name")
    with wandb.init() as run:
        run.log_artifact(artifact)

    with wandb.init() as run:
        artifact = run.use_artifact("bike-dataset:latest")
        datadir = artifact.download(root=None)
        assert tree(datadir) == {
            "optional-name": b"model",
            "optional-prefix/cat.png": b"cat",
            "optional-prefix/dog.png": b"dog",
            "notes.txt": b"notes",
            "ref-name": b"checkpoint",
        }
        path = artifact.get_path("ref-name")
        assert path.ref() == uri and path.ref == uri
        assert read(path.download(root="one")) == b"checkpoint"
        entry = artifact.get_path("optional-name")
        assert entry.ref is None
        assert read(entry.download(root="two")) == b"model"
        assert sorted(artifact.manifest.entries) == sorted(tree(datadir))


def test_artifact_without_a_type_is_refused_as_by_wandb(wb):
    """The zh page's `wandb.Artifact('reference model')` is not valid W&B code either."""
    import wandb as real_wandb

    with pytest.raises(TypeError):
        real_wandb.Artifact("reference model")
    with pytest.raises(TypeError):
        wandb.Artifact("reference model")


def test_download_outside_a_run_and_update(project_directory):
    with wandb.init(project="project") as run:
        a = wandb.Artifact("artifact", type="dataset")
        a.add_file("model.h5")
        run.log_artifact(a, aliases=["alias"])

    api = wandb.Api()
    artifact = api.artifact("entity/project/artifact:alias")
    assert tree(artifact.download()) == {"model.h5": b"model"}

    artifact = api.artifact("project/artifact:latest")
    # Update the description
    artifact.description = "My new description"
    # Selectively update metadata keys
    artifact.metadata["oldKey"] = "new value"
    # Replace the metadata entirely
    artifact.metadata = {"newKey": "new value"}
    # Add an alias
    artifact.aliases.append("best")
    # Remove an alias
    artifact.aliases.remove("latest")
    # Completely replace the aliases
    artifact.aliases = ["replaced"]
    # Persist all artifact modifications
    artifact.save()

    again = api.artifact("project/artifact:replaced")
    assert again.description == "My new description"
    assert again.metadata == {"newKey": "new value"}
    # 'latest' always names the newest version in artfs: the edit kept it
    assert again.aliases == ["latest", "replaced"]
    assert not api.artifact_exists("project/artifact:alias")


def test_traversing_the_graph(project_directory):
    with wandb.init(project="uncategorized", job_type="make") as maker:
        d = wandb.Artifact("data", type="dataset")
        d.add_file("model.h5")
        maker.log_artifact(d)
    with wandb.init(job_type="use") as user:
        user.use_artifact("data:v0")

    api = wandb.Api()
    artifact = api.artifact("data:v0")
    # Walk up and down the graph from an artifact:
    producer_run = artifact.logged_by()
    consumer_runs = artifact.used_by()
    assert producer_run.id == maker.id and [r.id for r in consumer_runs] == [user.id]
    # Walk up and down the graph from a run:
    run = producer_run
    logged_artifacts = run.logged_artifacts()
    used_artifacts = consumer_runs[0].used_artifacts()
    assert [a.name for a in logged_artifacts] == ["data:v0"]
    assert [a.name for a in used_artifacts] == ["data:v0"]
    assert api.run(f"some-entity/uncategorized/{user.id}").job_type == "use"


def test_cleaning_up_unused_versions(project_directory):
    with wandb.init(project="uncategorized") as run:
        for i in range(4):
            a = wandb.Artifact("checkpoints", type="model")
            with a.new_file("w.bin") as f:
                f.write(str(i))
            run.log_artifact(a, aliases=["best"] if i == 1 else None)

    api = wandb.Api()
    artifact_type, artifact_name = "model", "checkpoints"  # fill in the desired type + name
    for version in api.artifact_versions(artifact_type, artifact_name):
        # Clean up all versions that don't have an alias such as 'latest'.
        if len(version.aliases) == 0:
            version.delete()

    left = api.artifact_versions(artifact_type, artifact_name)
    assert [(v.version, v.aliases) for v in left] == [("v3", ["latest"]), ("v1", ["best"])]
    with pytest.raises(ArtfsError, match="delete_aliases"):
        left[1].delete()
    left[1].delete(delete_aliases=True)
    assert not api.artifact_exists("checkpoints:v1")
    assert not api.artifact_exists("checkpoints:best")


def test_table_written_by_artfs_is_read_by_wandb(wb):
    """`.table.json` in W&B's own layout: the real SDK reads what artfs.wandb writes."""
    import wandb as real_wandb

    table = wandb.Table(columns=["a", "b", "c"], data=[[1, "x", True], [2, None, False]])
    doc = json.loads(json.dumps(table.to_json()))
    theirs = real_wandb.Table.from_json(doc, None)
    assert theirs.columns == ["a", "b", "c"]
    assert theirs.data == [[1, "x", True], [2, None, False]]
    mine = real_wandb.Table(columns=["a", "b"], data=[[1, 2]])
    assert wandb.Table.from_json(json.loads(json.dumps(mine.to_json(real_wandb.Artifact("t", "x"))))) == wandb.Table(
        columns=["a", "b"], data=[[1, 2]]
    )


def test_add_reference_table(wb, s3_endpoint, new_bucket):
    """The seeds' add_reference table, with 'my-bucket' a bucket on the test's S3 server."""

    bucket = new_bucket()
    client = s3_client(s3_endpoint)
    for key, body in {
        "model.h5": b"model",
        "checkpoints/model.h5": b"checkpoint",
        "images/cat.png": b"cat",
        "images/dog.png": b"dog",
    }.items():
        client.put_object(Bucket=bucket, Key=key, Body=body)
    b = f"s3://{bucket}"
    cases = [
        (lambda a: a.add_reference(f"{b}/model.h5"), {"model.h5": b"model"}),
        (lambda a: a.add_reference(f"{b}/checkpoints/model.h5"), {"model.h5": b"checkpoint"}),
        (lambda a: a.add_reference(f"{b}/model.h5", name="models/mymodel.h5"), {"models/mymodel.h5": b"model"}),
        (lambda a: a.add_reference(f"{b}/images"), {"cat.png": b"cat", "dog.png": b"dog"}),
        (lambda a: a.add_reference(f"{b}/images", name="images"), {"images/cat.png": b"cat", "images/dog.png": b"dog"}),
    ]
    with wandb.init(project="refs") as run:
        for i, (call, expected) in enumerate(cases):
            artifact = wandb.Artifact(f"ref-{i}", type="dataset")
            call(artifact)
            run.log_artifact(artifact)
            entries = artifact.manifest.entries
            assert sorted(entries) == sorted(expected)
            assert all(e.ref.startswith(b + "/") for e in entries.values())
            assert tree(artifact.download()) == expected
    client.put_object(Bucket=bucket, Key="model.h5", Body=b"changed")  # unversioned bucket: the pin catches it
    with pytest.raises(ArtfsError, match="model.h5"):
        wandb.Api().artifact("refs/ref-0:v0").download(root="again")
