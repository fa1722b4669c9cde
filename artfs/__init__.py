"""artfs: versioned datasets and models in an object store, as a filesystem."""

from .errors import ArtfsError
from .store import Store

__all__ = ["ArtfsError", "Store"]
