"""Open files and folders by handle number: what the kernel's `fh` means."""

from __future__ import annotations

import itertools
from typing import Any

from artfs.errors import FsError


class Handles:
    """fh -> the object an open()/opendir() made. Confined to the trio thread."""

    def __init__(self) -> None:
        self._open: dict[int, Any] = {}
        self._numbers = itertools.count(1)

    def add(self, handle: Any) -> int:
        fh = next(self._numbers)
        self._open[fh] = handle
        return fh

    def get(self, fh: int) -> Any:
        try:
            return self._open[fh]
        except KeyError:
            import errno

            raise FsError(errno.EBADF) from None

    def find(self, fh: int) -> Any:
        return self._open.get(fh)

    def pop(self, fh: int) -> Any:
        return self._open.pop(fh, None)

    def held(self, ino: int, kinds: tuple[type, ...]) -> Any:
        """An open handle of inode `ino` of one of `kinds`, or None (an unlinked file lives on through it)."""
        return next((h for h in self._open.values() if isinstance(h, kinds) and h.node.ino == ino), None)  # type: ignore[attr-defined]  # every handle kind has .node

    def items(self) -> list[tuple[int, Any]]:
        return list(self._open.items())

    def replace(self, fh: int, handle: Any) -> None:
        """`fh` now means `handle` (the kernel's number for an open file stays)."""
        self._open[fh] = handle
