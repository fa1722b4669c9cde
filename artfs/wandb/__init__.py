"""W&B's artifact API over artfs: `import artfs.wandb as wandb` and W&B code runs unchanged.

    import artfs.wandb as wandb
    with wandb.init(project="demo", job_type="load") as run:
        artifact = wandb.Artifact("bikes", type="dataset")
        artifact.add_dir("images")
        run.log_artifact(artifact, aliases=["best"])
    wandb.Api().artifact("demo/bikes:best").download()

Everything goes to the store ARTFS_STORE names (the entity is that store); runs are
records there, so lineage (logged_by, used_by, run.logged_artifacts()) works across
hosts. Arguments artfs cannot act on are accepted with one warning per process when
nothing is lost by ignoring them, and refused otherwise. The README's "Coming from W&B"
section lists the differences.
"""

from __future__ import annotations

from typing import Any

from artfs.wandb import data_types, errors
from artfs.wandb.artifact import Artifact
from artfs.wandb.common import ArtfsWandbWarning
from artfs.wandb.query import Api
from artfs.wandb.runs import Config, Run, finish, init, log_artifact, use_artifact
from artfs.wandb.table import PartitionedTable, Table

__all__ = [
    "Api",
    "ArtfsWandbWarning",
    "Artifact",
    "Config",
    "PartitionedTable",
    "Run",
    "Settings",
    "Table",
    "config",
    "data_types",
    "errors",
    "finish",
    "init",
    "log_artifact",
    "login",
    "run",
    "use_artifact",
]


class Settings(dict):
    """`wandb.Settings(...)`: accepted; artfs reads none of them."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)


def login(*args: Any, **kwargs: Any) -> bool:
    """Nothing to log in to: the store's own credentials apply (AWS_* for s3:// stores)."""
    return True


def __getattr__(name: str) -> Any:
    # wandb.run and wandb.config follow the active run, as in W&B
    from artfs.wandb import runs as run_module

    if name == "run":
        return run_module.active_run()
    if name == "config":
        active = run_module.active_run()
        return active.config if active is not None else Config()
    raise AttributeError(f"module 'artfs.wandb' has no attribute {name!r}")
