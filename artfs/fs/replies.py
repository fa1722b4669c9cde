"""What the filesystem core answers: attributes with their cache lifetimes, and open handles."""

from __future__ import annotations

from dataclasses import dataclass

from artfs.fs.tree import Attr


@dataclass(slots=True)
class Reply:
    """An inode's attributes and how long the kernel may cache its name and attributes."""

    attr: Attr
    entry_timeout: float
    attr_timeout: float


@dataclass(slots=True)
class Opened:
    fh: int
    keep_cache: bool = False
    direct_io: bool = False
