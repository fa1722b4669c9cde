"""W&B artifact paths as artfs.wandb reads them (no store needed)."""

from __future__ import annotations

import pytest

from artfs.errors import InvalidInput
from artfs.wandb.common import WandbName, parse_name
from artfs.wandb.table import PartitionedTable, Table, stored_name


@pytest.mark.parametrize(
    "text, project, expected",
    [
        ("bikes", "p", WandbName("p", "bikes", None)),
        ("bikes:v3", "p", WandbName("p", "bikes", "v3")),
        ("other/bikes:best", "p", WandbName("other", "bikes", "best")),
        ("some-entity/other/bikes:latest", "p", WandbName("other", "bikes", "latest")),
    ],
)
def test_wandb_paths(text, project, expected):
    assert parse_name(text, project) == expected
    assert parse_name(text, project).spec == f"{expected.project}/{expected.name}" + (
        f":{expected.selector}" if expected.selector else ""
    )


@pytest.mark.parametrize("bad", ["", "a/b/c/d", "bikes:", "../x", "reference model", "p/na me:v0"])
def test_bad_wandb_paths_are_refused(bad):
    with pytest.raises(InvalidInput):
        parse_name(bad, "p")


def test_table_names_and_cells():
    assert stored_name(Table(columns=["a"]), "parts/t1") == "parts/t1.table.json"
    assert stored_name(PartitionedTable("parts"), "dist") == "dist.partitioned-table.json"
    with pytest.raises(InvalidInput):
        stored_name(object(), "x")
    with pytest.raises(InvalidInput, match="not object"):
        Table(columns=["a"], data=[[object()]])
    with pytest.raises(InvalidInput, match="2 values for 1 columns"):
        Table(columns=["a"]).add_data(1, 2)
    t = Table(columns=["a", "b"])
    t.add_data(1, "x")
    t.add_column("c", [True])
    assert t.get_column("c") == [True] and t.to_json()["nrows"] == 1
