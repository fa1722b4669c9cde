"""artfs: versioned datasets and models in an object store, as a filesystem."""

from .api import Artifact, finish_artifact, log_artifact, upsert_artifact, use_artifact
from .errors import ArtfsError
from .store import Store

__all__ = ["Artifact", "ArtfsError", "Store", "finish_artifact", "log_artifact", "upsert_artifact", "use_artifact"]
