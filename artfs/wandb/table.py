"""`wandb.Table` and `wandb.data_types.PartitionedTable`, kept in W&B's own JSON layout
(`NAME.table.json`, `NAME.partitioned-table.json`) so the W&B SDK reads what artfs writes.

Only plain values (numbers, text, booleans, None, lists and dicts of them) go in a cell:
W&B media (images, audio…) in tables are not supported.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from artfs.errors import InvalidInput
from artfs.wandb.common import WandbArtifact

TABLE_SUFFIX = ".table.json"
PARTITIONED_SUFFIX = ".partitioned-table.json"


def _wb_type(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "typedDict"
    raise InvalidInput(
        f"artfs.wandb.Table holds numbers, text, booleans, None, lists and dicts, not {type(value).__name__}"
    )


class Table:
    """Rows of plain values under named columns."""

    _log_type = "table"

    def __init__(
        self,
        columns: list[str] | None = None,
        data: list[list[Any]] | None = None,
        rows: list[list[Any]] | None = None,
        dataframe: Any = None,
        **_ignored: Any,
    ):
        if dataframe is not None:  # pandas, without importing it
            columns = [str(c) for c in dataframe.columns]
            data = dataframe.values.tolist()
        data = data if data is not None else rows
        self.data: list[list[Any]] = [list(r) for r in (data or [])]
        if columns is None:
            columns = [f"Column{i + 1}" for i in range(len(self.data[0]))] if self.data else []
        self.columns: list[str] = [str(c) for c in columns]
        for row in self.data:
            self._check_row(row)

    def _check_row(self, row: list[Any]) -> None:
        if len(row) != len(self.columns):
            raise InvalidInput(f"a row has {len(row)} values for {len(self.columns)} columns")
        for v in row:
            _wb_type(v)

    def add_data(self, *values: Any) -> None:
        row = list(values)
        self._check_row(row)
        self.data.append(row)

    def add_column(self, name: str, data: list[Any]) -> None:
        if self.data and len(data) != len(self.data):
            raise InvalidInput(f"column {name!r} has {len(data)} values for {len(self.data)} rows")
        self.columns.append(name)
        if not self.data:
            self.data = [[v] for v in data]
        else:
            for row, v in zip(self.data, data):
                row.append(v)

    def get_column(self, name: str) -> list[Any]:
        try:
            i = self.columns.index(name)
        except ValueError:
            raise InvalidInput(f"the table has no column {name!r}") from None
        return [row[i] for row in self.data]

    def iterrows(self) -> Iterator[tuple[int, list[Any]]]:
        yield from enumerate(self.data)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Table) and (self.columns, self.data) == (other.columns, other.data)

    def __repr__(self) -> str:
        return f"<Table {len(self.data)} rows x {len(self.columns)} columns>"

    def to_json(self) -> dict[str, Any]:
        """The `.table.json` document, as W&B writes it (column types are unions with none)."""
        type_map = {}
        for i, col in enumerate(self.columns):
            seen = sorted({_wb_type(row[i]) for row in self.data} - {"none"})
            allowed = [{"wb_type": "none"}] + [{"wb_type": t} for t in seen]
            type_map[col] = {"params": {"allowed_types": allowed}, "wb_type": "union"}
        return {
            "_type": "table",
            "column_types": {"params": {"type_map": type_map}, "wb_type": "typedDict"},
            "columns": self.columns,
            "data": self.data,
            "log_mode": "IMMUTABLE",
            "ncols": len(self.columns),
            "nrows": len(self.data),
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Table:
        if not isinstance(doc, dict) or doc.get("_type") != "table":
            raise InvalidInput("not a W&B table document")
        return cls(columns=doc.get("columns") or [], data=doc.get("data") or [])


class PartitionedTable:
    """A table whose rows are the tables in the folder `parts_path` of the same artifact."""

    _log_type = "partitioned-table"

    def __init__(self, parts_path: str):
        if not isinstance(parts_path, str) or not parts_path.strip("/"):
            raise InvalidInput(f"invalid parts_path {parts_path!r}")
        self.parts_path = parts_path.strip("/")
        self._artifact: WandbArtifact | None = None

    def to_json(self) -> dict[str, Any]:
        return {"_type": "partitioned-table", "parts_path": self.parts_path}

    @classmethod
    def from_json(cls, doc: dict[str, Any], artifact: WandbArtifact | None = None) -> PartitionedTable:
        if not isinstance(doc, dict) or doc.get("_type") != "partitioned-table" or "parts_path" not in doc:
            raise InvalidInput("not a W&B partitioned-table document")
        t = cls(doc["parts_path"])
        t._artifact = artifact
        return t

    @property
    def parts(self) -> list[Table]:
        """The part tables, in path order (needs a table got from a logged artifact)."""
        if self._artifact is None:
            raise InvalidInput("a PartitionedTable reads its parts from an artifact: get it with artifact.get(name)")
        prefix = self.parts_path + "/"
        paths = [p for p in self._artifact._art.manifest.paths if p.startswith(prefix) and p.endswith(TABLE_SUFFIX)]
        return [Table.from_json(json.loads(self._artifact._read(p))) for p in paths]

    def iterrows(self) -> Iterator[tuple[int, list[Any]]]:
        i = 0
        for part in self.parts:
            for row in part.data:
                yield i, row
                i += 1

    def __repr__(self) -> str:
        return f"<PartitionedTable {self.parts_path!r}>"


def stored_name(obj: Any, name: str) -> str:
    """The path W&B gives `artifact.add(obj, name)`: NAME + '.table.json' (unless already there)."""
    suffix = (
        TABLE_SUFFIX if isinstance(obj, Table) else PARTITIONED_SUFFIX if isinstance(obj, PartitionedTable) else None
    )
    if suffix is None:
        raise InvalidInput(
            f"artfs.wandb artifacts add Tables and PartitionedTables, not {type(obj).__name__} "
            "(use add_file for other files)"
        )
    return name if name.endswith(suffix) else name + suffix


def load(doc: Any, artifact: WandbArtifact) -> Table | PartitionedTable:
    kind = doc.get("_type") if isinstance(doc, dict) else None
    if kind == "table":
        return Table.from_json(doc)
    if kind == "partitioned-table":
        return PartitionedTable.from_json(doc, artifact)
    raise InvalidInput(f"artfs.wandb reads tables and partitioned tables, not {kind!r}")
