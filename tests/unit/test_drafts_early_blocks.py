"""A large file written in order into a draft has its blocks uploaded while it is written
(drafts/early.py), and the commit then stores only what was not sent yet: the version
reads back the bytes the file has at commit time, whatever happened to it after a block
was sent (rewritten, truncated). Through the filesystem core, without a kernel, over a
local store."""

from __future__ import annotations

import json
import os
import tempfile

import pytest
import trio
from test_core_properties import SCRATCH, open_core

from artfs.digest import digest_bytes
from artfs.fs.tree import ROOT_INO
from artfs.store.keys import object_key
from artfs.store.manifest import BLOCK_SIZE

WRITE = 128 << 10  # as the kernel sends them


def _run(body) -> None:
    from contextlib import ExitStack

    with tempfile.TemporaryDirectory(dir=SCRATCH) as root:
        store_path = os.path.join(root, "store")

        async def main():
            with ExitStack() as resources:
                core = open_core(resources, root, store_path)
                async with trio.open_nursery() as nursery:
                    core.fs.content.attach(nursery)
                    await body(core, store_path)
                    nursery.cancel_scope.cancel()

        trio.run(main)


async def _draft(fs) -> int:
    await fs.mkdir(ROOT_INO, b"p", 0o755)
    p = (await fs.lookup(ROOT_INO, b"p")).attr.ino
    await fs.mkdir(p, b"a", 0o755)
    a = (await fs.lookup(p, b"a")).attr.ino
    drafts = (await fs.lookup(a, b"drafts")).attr.ino
    return (await fs.mkdir(drafts, b"d", 0o755)).attr.ino


async def _write(fs, parent: int, name: bytes, data: bytes, order) -> int:
    opened, reply = await fs.create(parent, name, 0o100644, os.O_WRONLY | os.O_CREAT)
    for off in order(len(data)):
        assert await fs.write(opened.fh, off, data[off : off + WRITE]) == len(data[off : off + WRITE])
    await fs.release(opened.fh)
    return reply.attr.ino


def _in_order(size: int) -> range:
    return range(0, size, WRITE)


def _stored(store_path: str, block: bytes) -> bool:
    return os.path.exists(os.path.join(store_path, object_key(digest_bytes(block))))


def _inode(store_path: str, block: bytes) -> int:
    return os.stat(os.path.join(store_path, object_key(digest_bytes(block)))).st_ino


async def _commit_and_read(core, draft: int, name: bytes) -> bytes:
    fs = core.fs
    await fs.setxattr(draft, b"user.artfs.commit", json.dumps({"token": "t", "type_": "dataset"}).encode())
    version = await core.lookup_path(ROOT_INO, "p/a/v0")
    return await core.read_all((await fs.lookup(version, name)).attr.ino)


@pytest.mark.parametrize("wait", [True, False], ids=["after-the-early-uploads", "right-after-the-copy"])
def test_a_file_written_in_order_has_every_block_stored_once(wait):
    """Blocks are stored as they fill, before any commit; the commit sends only the rest (all
    of them if it comes before the early uploads did anything) and none twice."""
    data = os.urandom(3 * BLOCK_SIZE + 12345)
    blocks = [data[k : k + BLOCK_SIZE] for k in range(0, len(data), BLOCK_SIZE)]

    async def body(core, store_path):
        fs = core.fs
        draft = await _draft(fs)
        await _write(fs, draft, b"big.bin", data, _in_order)
        sent = {}
        if wait:
            await trio.to_thread.run_sync(fs._early.drain)
            assert all(_stored(store_path, b) for b in blocks[:-1])  # before any commit
            assert not _stored(store_path, blocks[-1])  # the tail: only the commit knows it is the end
            sent = {k: _inode(store_path, blocks[k]) for k in range(len(blocks) - 1)}
        assert await _commit_and_read(core, draft, b"big.bin") == data
        assert all(_stored(store_path, b) for b in blocks)
        assert {k: _inode(store_path, blocks[k]) for k in sent} == sent  # not stored again

    _run(body)


def test_a_block_rewritten_after_it_was_sent_commits_its_new_bytes():
    data = bytearray(os.urandom(2 * BLOCK_SIZE + 100))

    async def body(core, store_path):
        fs = core.fs
        draft = await _draft(fs)
        ino = await _write(fs, draft, b"big.bin", bytes(data), _in_order)
        await trio.to_thread.run_sync(fs._early.drain)
        old_block = bytes(data[:BLOCK_SIZE])
        opened = await fs.open(ino, os.O_WRONLY)
        await fs.write(opened.fh, 1000, b"changed after its block was sent")
        await fs.release(opened.fh)
        data[1000 : 1000 + 32] = b"changed after its block was sent"
        assert _stored(store_path, old_block)  # sent with its old bytes…
        assert await _commit_and_read(core, draft, b"big.bin") == bytes(data)  # …the version has the new
        assert _stored(store_path, bytes(data[:BLOCK_SIZE]))

    _run(body)


def test_a_file_not_written_in_order_sends_nothing_early():
    data = os.urandom(BLOCK_SIZE + WRITE)

    async def body(core, store_path):
        fs = core.fs
        draft = await _draft(fs)
        backwards = lambda size: reversed(range(0, size, WRITE))  # noqa: E731
        await _write(fs, draft, b"big.bin", data, backwards)
        if fs._early is not None:
            await trio.to_thread.run_sync(fs._early.drain)
        assert not _stored(store_path, data[:BLOCK_SIZE])
        assert await _commit_and_read(core, draft, b"big.bin") == data

    _run(body)


def test_a_file_written_again_from_the_start_commits_its_new_bytes():
    """Rewritten with O_TRUNC after its blocks were hashed and sent: the version has the
    second content, all of whose blocks are stored."""
    first, second = os.urandom(2 * BLOCK_SIZE + 5), os.urandom(2 * BLOCK_SIZE + 7)

    async def body(core, store_path):
        fs = core.fs
        draft = await _draft(fs)
        ino = await _write(fs, draft, b"big.bin", first, _in_order)
        await trio.to_thread.run_sync(fs._early.drain)
        opened = await fs.open(ino, os.O_WRONLY | os.O_TRUNC)
        for off in _in_order(len(second)):
            await fs.write(opened.fh, off, second[off : off + WRITE])
        await fs.release(opened.fh)
        assert await _commit_and_read(core, draft, b"big.bin") == second
        assert all(_stored(store_path, second[k : k + BLOCK_SIZE]) for k in range(0, len(second), BLOCK_SIZE))

    _run(body)


@pytest.mark.parametrize("size", [(1 << 20) + 1, BLOCK_SIZE, BLOCK_SIZE + 1])
def test_files_up_to_a_block_and_a_bit_commit_exact(size):
    """No whole block to send early (or just one): the commit hashes what the background did not."""
    data = os.urandom(size)

    async def body(core, store_path):
        fs = core.fs
        draft = await _draft(fs)
        await _write(fs, draft, b"f.bin", data, _in_order)
        assert await _commit_and_read(core, draft, b"f.bin") == data

    _run(body)
