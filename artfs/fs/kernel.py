"""What the filesystem core may ask of the kernel, without knowing FUSE.

The FUSE adapter supplies the real one; tests and other front ends use this
one, which does nothing (there is no kernel cache to fill or invalidate).
"""

from __future__ import annotations


class Kernel:
    def store(self, ino: int, data: bytes) -> None:
        """Put `data` into the page cache of `ino` from offset 0 (a cache warm-up; may be ignored)."""

    def invalidate_entry(self, parent_ino: int, name: str) -> None:
        """The kernel should forget that `name` in `parent_ino` resolves to what it resolved to."""

    def invalidate_attr(self, ino: int) -> None:
        """The kernel should forget the attributes it caches for `ino`."""
