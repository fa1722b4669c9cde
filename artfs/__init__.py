"""artfs: versioned datasets and models in an object store, as a filesystem."""

from .api import Artifact, log_artifact, use_artifact
from .errors import ArtfsError
from .store import Store

__all__ = ["Artifact", "ArtfsError", "Store", "log_artifact", "use_artifact"]
