"""`wandb.errors`: W&B code catches these; every artfs.wandb failure is an ArtfsError, which
these names stand for (W&B's CommError covers any failure to reach or use the backend)."""

from artfs.errors import ArtfsError

Error = ArtfsError
CommError = ArtfsError
UsageError = ArtfsError

__all__ = ["CommError", "Error", "UsageError"]
