"""Letting data written once leave the page cache.

A file streamed into a draft, the blocks a commit reads back from it, and a
large object the local store has just made durable are touched once. Kept in
the page cache they crowd out what is read, and on a VM whose freed memory
goes back to its host every new page costs a host fault (most of a 1 GiB
`cp` into a draft here: docs/benchmarks.md, session 7). Dropping them lets
the next writes reuse the same pages while they are still hot.
"""

from __future__ import annotations

import os


def drop(fd: int, offset: int, length: int) -> None:
    """Asks the kernel to drop the pages of `fd` in [offset, offset + length): clean ones go
    now, dirty ones start their writeback (a later call drops them). Only advice: it never
    changes the bytes, and a refusal is ignored (the data is safe either way)."""
    try:
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)
    except OSError:
        pass
