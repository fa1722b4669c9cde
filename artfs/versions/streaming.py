"""Publishing a tree of any size in bounded memory.

`artfs put` of a folder walks it in the order of its keys (paths of files and
folders, sorted as a manifest sorts them), stores each file as it comes, and
hands every entry to a shard writer as soon as where its bytes live is known
(a small file's pack is named when the pack is sealed; a large file's digest
when it is hashed). Nothing holds the whole tree: not the list of files, nor
the entries, nor the manifest, nor where the new small files went (that is
spilled to a file for the dedupe index). Trees of up to SHARDED_ABOVE files
still make one manifest object, as before.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future

from artfs.store import shards
from artfs.store.manifest import Entry, Folder, Manifest
from artfs.store.registry import read_manifest
from artfs.store.shards import AnyManifest, ShardWriter
from artfs.versions.publish import FileSource, Publisher
from artfs.versions.sources import TreeWalk

# Entries waiting for their pack or upload; beyond this the walk waits for the oldest.
QUEUE_LIMIT = 200_000


def _keyed(items: Iterable[FileSource | Folder | Entry]) -> Iterator[tuple[str, int, FileSource | Folder | Entry]]:
    for n, item in enumerate(items):
        yield item.path, n, item


def build(publisher: Publisher, walk: TreeWalk, extra: Iterable[Entry] = ()) -> AnyManifest:
    """Stores the files of `walk` (plus `extra` entries: references) through `publisher` and
    returns their manifest, sharded when it is big, without holding the tree in memory.
    A folder's record goes before the folder's contents; a Folder key equal to an extra
    entry's path is refused by the writer."""
    stream = heapq.merge(_keyed(walk), _keyed(sorted(extra, key=lambda e: e.path)), key=lambda t: t[0])
    out = _Output(publisher)
    queue: deque[tuple[Entry | Folder, Future | None]] = deque()
    try:
        for _, _, item in stream:
            if isinstance(item, FileSource):
                entry = publisher.add(item)
                queue.append((entry, publisher.last_large))
            else:
                queue.append((item, None))
            if len(queue) > QUEUE_LIMIT:
                _wait_oldest(publisher, queue)
            _drain(queue, out)
        publisher.wait()
    finally:
        publisher.close()
    _drain(queue, out)
    assert not queue, "every entry is placed once its pack and uploads are done"
    return out.finish()


def _ready(item: Entry | Folder, pending: Future | None) -> bool:
    if isinstance(item, Folder):
        return True
    if pending is not None:
        if not pending.done():
            return False
        pending.result()  # its error, now
        return True
    return item.pack is not None or item.ref is not None  # a small file: once its pack is sealed


def _drain(queue: deque, out: _Output) -> None:
    while queue and _ready(*queue[0]):
        out.add(queue.popleft()[0])


def _wait_oldest(publisher: Publisher, queue: deque) -> None:
    item, pending = queue[0]
    if pending is not None:
        pending.result()
    elif isinstance(item, Entry) and item.pack is None and item.ref is None:
        publisher.seal_pack()  # its pack is still being filled: seal it now


class _Output:
    """Entries in key order: kept until there are more than SHARDED_ABOVE files (one
    manifest object, as before), then streamed into shards."""

    def __init__(self, publisher: Publisher):
        self._publisher = publisher
        self._head: list[Entry | Folder] = []
        self._files = 0
        self._writer: ShardWriter | None = None

    def add(self, item: Entry | Folder) -> None:
        if self._writer is not None:
            self._writer.add(item)
            return
        self._head.append(item)
        self._files += isinstance(item, Entry)
        if self._files > shards.SHARDED_ABOVE:
            self._writer = ShardWriter(self._publisher.put_shard)
            for h in self._head:
                self._writer.add(h)
            self._head = []

    def _load(self, digest: bytes) -> Manifest:
        return Manifest.decode(read_manifest(self._publisher.store, digest.hex()))

    def finish(self) -> AnyManifest:
        if self._writer is not None:
            return self._writer.manifest(self._load)
        entries = [h for h in self._head if isinstance(h, Entry)]
        return Manifest.from_entries(entries, [h for h in self._head if isinstance(h, Folder)])
