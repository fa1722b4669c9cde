"""References in the mount: read-only files whose bytes are fetched from their source.

An open reference is a RefHandle. Reads fetch aligned BLOCK-sized ranges lazily, in a
worker thread, through `references.read`, which serves bytes only while the source
still matches the pin. A handle keeps its last KEEP blocks in memory (the kernel's page
cache keeps what was read for version files, opened with keep_cache), and loads each
block once however many reads wait for it. Any failure (pin mismatch, source gone or
unreachable) answers EIO and logs one line per handle naming the entry and its URI.

Given a timeout (the mount's --timeout), a read has one deadline for all it waits on
(its blocks, another read's fetch of them): a source that hangs is an EIO by then, and
the hung fetch is left to its own thread, so reads resume once the source answers.

A reference recorded without checksum has no known size (st_size 0): it is opened
with direct_io so the kernel asks us, and reads stop at the source's end.
"""

from __future__ import annotations

import errno
import logging
import math
from collections import OrderedDict
from typing import NoReturn

import trio

from artfs.errors import ArtfsError, FsError, StoreUnavailable
from artfs.references import access as references
from artfs.store.manifest import Entry

log = logging.getLogger(__name__)

BLOCK = 1 << 20
KEEP = 8
FAILURE_MEMO = 1.0  # seconds a failed fetch of a handle answers its retries at once


class RefHandle:
    __slots__ = ("blocks", "direct_io", "entry", "failed", "inflight", "node", "where")

    def __init__(self, node, entry: Entry):
        self.node, self.entry = node, entry
        if getattr(node, "version", None) is not None:
            self.where = f"{node.artifact}:{node.version.name}"
        elif getattr(node, "draft_name", ""):
            self.where = f"{node.artifact}/drafts/{node.draft_name}"
        else:
            self.where = str(getattr(node, "artifact", ""))
        self.blocks: OrderedDict[int, bytes] = OrderedDict()
        self.inflight: dict[int, trio.Event] = {}
        self.direct_io = entry.size < 0
        self.failed: tuple[float, ArtfsError] | None = None  # (when, why) the last fetch failed


class RefReader:
    def __init__(self, blocking, timeout: float | None = None):
        self._blocking = blocking  # runs a blocking call in a worker thread
        self.timeout = timeout
        # Threads of their own: a fetch abandoned at the deadline keeps its thread until the
        # source's client gives up, and must not starve the filesystem's other blocking work.
        self._limiter = trio.CapacityLimiter(8)

    def open(self, node, entry: Entry) -> RefHandle:
        return RefHandle(node, entry)

    async def read(self, h: RefHandle, off: int, size: int) -> bytes:
        end = off + size
        if h.entry.size >= 0:
            end = min(end, h.entry.size)
        if size <= 0 or off >= end:
            return b""
        first, last = off // BLOCK, (end - 1) // BLOCK
        deadline = None if self.timeout is None else trio.current_time() + self.timeout
        parts = []
        for k in range(first, last + 1):
            data = await self._block(h, k, deadline)
            parts.append(data)
            if len(data) < BLOCK:
                break  # the source ends here
        blob = parts[0] if len(parts) == 1 else b"".join(parts)
        lo = off - first * BLOCK
        return blob[lo : lo + (end - off)]

    async def read_all(self, node, entry: Entry) -> bytes:
        """The whole reference (copy-up before a draft file's first change)."""
        h = RefHandle(node, entry)
        try:
            return await self._blocking(references.read, entry, 0, None)
        except ArtfsError as e:
            self._fail(h, e)

    async def _block(self, h: RefHandle, k: int, deadline: float | None) -> bytes:
        while True:
            data = h.blocks.get(k)
            if data is not None:
                h.blocks.move_to_end(k)
                return data
            event = h.inflight.get(k)
            if event is None:
                break
            with trio.move_on_at(math.inf if deadline is None else deadline) as waited:
                await event.wait()  # another read of this handle is loading it
            if waited.cancelled_caught:
                self._fail(h, StoreUnavailable(f"no answer from the source within {self.timeout:g}s"))
        # The kernel retries a failed READ at once: the retry fails at once too, rather than
        # making the reader wait out the deadline a second time.
        if h.failed is not None and trio.current_time() - h.failed[0] < FAILURE_MEMO:
            self._fail(h, h.failed[1])
        event = h.inflight[k] = trio.Event()
        try:
            if deadline is None:
                data = await self._blocking(references.read, h.entry, k * BLOCK, (k + 1) * BLOCK)
            else:
                with trio.fail_at(deadline):
                    data = await trio.to_thread.run_sync(
                        references.read,
                        h.entry,
                        k * BLOCK,
                        (k + 1) * BLOCK,
                        limiter=self._limiter,
                        abandon_on_cancel=True,
                    )
        except trio.TooSlowError:
            h.failed = (trio.current_time(), StoreUnavailable(f"no answer from the source within {self.timeout:g}s"))
            self._fail(h, h.failed[1])
        except ArtfsError as e:
            h.failed = (trio.current_time(), e)
            self._fail(h, e)
        finally:
            del h.inflight[k]
            event.set()
        h.blocks[k] = data
        while len(h.blocks) > KEEP:
            h.blocks.popitem(last=False)
        return data

    def _fail(self, h: RefHandle, e: ArtfsError) -> NoReturn:
        # The errno boundary logs this once (with the entry and URI), however often the kernel retries.
        raise FsError(errno.EIO, f"EIO reading {h.where}: {e}") from None
