"""artfs: versioned datasets and models in an object store, as a filesystem."""

from artfs.api.distributed import finish_artifact, upsert_artifact
from artfs.api.native import Artifact, Store, log_artifact, use_artifact
from artfs.errors import ArtfsError

__all__ = ["Artifact", "ArtfsError", "Store", "finish_artifact", "log_artifact", "upsert_artifact", "use_artifact"]
