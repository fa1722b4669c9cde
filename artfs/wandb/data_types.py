"""`wandb.data_types`: the W&B data types artfs keeps (tables)."""

from artfs.wandb.table import PartitionedTable, Table

__all__ = ["PartitionedTable", "Table"]
