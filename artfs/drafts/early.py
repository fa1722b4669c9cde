"""Uploading a large draft file's blocks while it is still being written.

A file above BLOCK_SIZE is stored as BLOCK_SIZE blocks, each the object
`objects/<blake3 of the block>` (versions/publish.py). Once a file written in
order from offset 0 (cp, a download) has all of a block's bytes, that block's
object is final: `EarlyBlocks` reads it back from the data file (page cache),
hashes it and uploads it in the background, so the commit finds it stored
(`Publisher._block_needed` asks the store, under the commit guard) and
uploads only what was not sent yet, plus the manifest.

Nothing here is trusted by the commit: it re-reads and re-hashes the file and
checks each block's object exists, so a block uploaded from bytes changed
later is only an unreferenced object, collected by gc after its grace period
like any other (as is every block of a draft that is discarded). At most
`workers` blocks are in memory at once; blocks completed while they are busy
wait in a queue of (draft, inode, block number), read when their turn comes.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from typing import Protocol

from artfs.digest import digest_bytes
from artfs.store.backends.base import ObjectStore
from artfs.store.keys import object_key
from artfs.store.manifest import BLOCK_SIZE

log = logging.getLogger(__name__)


class _Draft(Protocol):
    def data_path(self, ino: int) -> str: ...


def completed_blocks(off: int, n: int) -> range:
    """The blocks a write of `n` bytes at `off` completed (in a file written in order)."""
    return range(off // BLOCK_SIZE, (off + n) // BLOCK_SIZE)


class EarlyBlocks:
    def __init__(self, store: ObjectStore, workers: int = 2, enabled: Callable[[], bool] = lambda: True):
        self.store = store
        self.enabled = enabled
        self._queue: deque[tuple[_Draft, int, int]] = deque()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._running = 0
        self._workers = workers
        self.uploaded = 0  # blocks sent (for tests and logs)
        self.found = 0  # blocks the store had already

    def written(self, draft: _Draft, ino: int, off: int, n: int) -> None:
        """After an in-order write of `n` bytes at `off`: queues the blocks it completed."""
        blocks = completed_blocks(off, n)
        if not blocks or not self.enabled():
            return
        with self._lock:
            self._queue.extend((draft, ino, k) for k in blocks)
            start = self._running < self._workers
            if start:
                self._running += 1
        if start:  # (daemon threads: an unmount never waits for an upload the commit would redo)
            threading.Thread(target=self._work, name="artfs-early", daemon=True).start()

    def _work(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    self._running -= 1
                    self._idle.notify_all()
                    return
                draft, ino, k = self._queue.popleft()
            try:
                self._send(draft, ino, k)
            except Exception as e:  # the commit uploads it instead
                log.debug("early upload of block %d of draft file %d: %s", k, ino, e)

    def _send(self, draft: _Draft, ino: int, k: int) -> None:
        try:
            fd = os.open(draft.data_path(ino), os.O_RDONLY)
        except FileNotFoundError:  # unlinked (or the draft committed) meanwhile
            return
        try:
            data = os.pread(fd, BLOCK_SIZE, k * BLOCK_SIZE)
        finally:
            os.close(fd)
        if len(data) != BLOCK_SIZE:  # truncated meanwhile
            return
        key = object_key(digest_bytes(data))
        info = self.store.head(key)
        if info is not None and info.size == len(data):
            self.found += 1
            return
        self.store.put(key, data)
        self.uploaded += 1

    def drain(self) -> None:
        """Waits until every queued block is sent."""
        with self._idle:
            while self._queue or self._running:
                self._idle.wait()

    def settle(self) -> None:
        """Before a commit: drops the blocks not started (the commit sends them, more at once
        than these workers) and waits for those being sent (so none is sent twice)."""
        with self._idle:
            self._queue.clear()
            while self._running:
                self._idle.wait()

    def close(self) -> None:
        with self._lock:
            self._queue.clear()
