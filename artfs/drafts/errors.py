"""The error of the filesystem core: an errno, with a message for the log."""

from __future__ import annotations

import os

from artfs.errors import ArtfsError


class FsError(ArtfsError):
    def __init__(self, code: int, message: str = ""):
        super().__init__(message or os.strerror(code))
        self.errno = code
