"""Hashing and uploading a large draft file's blocks while it is still being written.

A file above BLOCK_SIZE is stored as BLOCK_SIZE blocks, each the object
`objects/<blake3 of the block>` (versions/publish.py). Once a file written in
order from offset 0 (cp, a download) has all of a block's bytes, that block is
final: `EarlyBlocks` reads it back from the data file (from the page cache, or
from disk once the writes are two blocks ahead: drafts/files.py) and hashes
it, once, for everything the commit needs (the file's digest, chunk, piece
and block digests: WriteTracker.hash_block), then uploads it in the
background, so the commit finds it stored (`Publisher._block_needed` asks the
store, under the commit guard) and uploads only what was not sent yet, plus
the manifest. A WRITE only counts bytes: hashing and uploading run in these
threads, off the request path.

A block is uploaded under the digest of the very bytes sent, so whatever
happens to the file later, no object holds bytes other than its name says.
If the file is changed other than by appending, its state is dropped and the
commit hashes it again, whole; a block sent from the old bytes is then an
unreferenced object, collected by gc after its grace period like any other (as
is every block of a draft that is discarded). At most `workers` files are
hashed at once, one block at a time each, and at most `workers` blocks are
being sent: a few blocks in memory, whatever the number of files.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Protocol

from artfs.drafts.files import WriteTracker
from artfs.store.backends.base import ObjectStore
from artfs.store.keys import object_key
from artfs.store.manifest import BLOCK_SIZE

log = logging.getLogger(__name__)


class _Draft(Protocol):
    writes: WriteTracker

    def data_path(self, ino: int) -> str: ...


def completed_blocks(off: int, n: int) -> range:
    """The blocks a write of `n` bytes at `off` completed (in a file written in order)."""
    return range(off // BLOCK_SIZE, (off + n) // BLOCK_SIZE)


class EarlyBlocks:
    def __init__(self, store: ObjectStore, workers: int = 2, enabled: Callable[[], bool] = lambda: True):
        self.store = store
        self.enabled = enabled
        self._queue: deque[tuple[_Draft, int]] = deque()  # files with a block to hash
        self._queued: set[tuple[_Draft, int]] = set()  # queued or being hashed
        self._busy: dict[_Draft, int] = {}  # per draft: files queued or being hashed, blocks being sent
        self._stopping: set[_Draft] = set()  # drafts being committed: hash and send no more
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._sending = threading.BoundedSemaphore(workers)
        self._running = 0
        self._workers = workers
        self.uploaded = 0  # blocks sent (for tests and logs)
        self.found = 0  # blocks the store had already

    def written(self, draft: _Draft, ino: int, off: int, n: int) -> None:
        """After an in-order write of `n` bytes at `off`: hashes and sends the blocks it completed."""
        if not completed_blocks(off, n) or not self.enabled():
            return
        key = (draft, ino)
        with self._lock:
            if key in self._queued or draft in self._stopping:
                return  # (a thread on it takes every block ready before it lets go)
            self._queued.add(key)
            self._queue.append(key)
            self._busy[draft] = self._busy.get(draft, 0) + 1
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
                draft, ino = self._queue.popleft()
            try:
                self._hash_file(draft, ino)
            except Exception as e:  # the commit hashes and uploads it instead
                log.debug("early upload of draft file %d: %s", ino, e)
                with self._lock:
                    self._queued.discard((draft, ino))
            finally:
                with self._lock:
                    self._done(draft)

    def _hash_file(self, draft: _Draft, ino: int) -> None:
        """Hashes the file's blocks ready, in order, handing each to a sending thread."""
        while True:
            got = None
            with self._lock:
                stop = draft in self._stopping
            if not stop:
                got = draft.writes.hash_block(ino, draft.data_path(ino))
            if got is None:
                with self._lock:
                    # Decided under the lock `written` takes: a block completed meanwhile is
                    # either seen here or queues the file again once this thread lets go.
                    if draft in self._stopping or not draft.writes.block_ready(ino):
                        self._queued.discard((draft, ino))
                        return
                continue
            self._sending.acquire()
            with self._lock:
                self._busy[draft] = self._busy.get(draft, 0) + 1
            data, digest = got
            threading.Thread(
                target=self._send, args=(draft, data, digest), name="artfs-early-send", daemon=True
            ).start()

    def _send(self, draft: _Draft, data: bytes, digest: bytes) -> None:
        try:
            key = object_key(digest)
            info = self.store.head(key)
            if info is not None and info.size == len(data):
                self.found += 1
                return
            self.store.put(key, data)
            self.uploaded += 1
        except Exception as e:  # the commit uploads it instead
            log.debug("early upload of block %s: %s", digest.hex()[:16], e)
        finally:
            self._sending.release()
            with self._lock:
                self._done(draft)

    def _done(self, draft: _Draft) -> None:
        left = self._busy.get(draft, 0) - 1
        if left > 0:
            self._busy[draft] = left
        else:
            self._busy.pop(draft, None)
        self._idle.notify_all()

    def drain(self) -> None:
        """Waits until every block ready is hashed and sent."""
        with self._idle:
            while self._busy:
                self._idle.wait()

    def settle(self, draft: _Draft) -> None:
        """Before a commit of `draft`: no block of it is hashed or sent any more once this
        returns (the commit hashes the rest and sends what the store lacks, more at once
        than these workers; none is sent twice)."""
        with self._idle:
            self._stopping.add(draft)
            try:
                while self._busy.get(draft):
                    self._idle.wait()
            finally:
                self._stopping.discard(draft)
