"""The mount's in-memory answers about a draft (drafts.NamespaceCache) never disagree with
its SQLite table: after every change, made by the owning Draft or by another process's
Draft (as `artfs ref add` does), whatever the cache answers for a name or an inode is
what the table says. Without FUSE: the Draft API directly, random operations."""

from __future__ import annotations

import errno
import os
import random

import pytest
from conftest import new_draft_store

from artfs.drafts.namespace import DIR, ROOT
from artfs.errors import FsError


@pytest.fixture
def drafts(tmp_path, monkeypatch):
    store, a = new_draft_store(tmp_path, monkeypatch)
    owner = store.open(a, "d", load_manifest=None, cache_namespace=True)
    other = store.open(a, "d", load_manifest=None)  # another process's view (no cache)
    yield owner, other
    owner.close()
    other.close()


def _truth_lookup(d, parent: int, name: str):
    try:
        return d.lookup(parent, name)
    except FsError as e:
        assert e.errno in (errno.ENOENT, errno.ENOTDIR)
        return None


def _cached_lookup(d, parent: int, name: str):
    try:
        return ("hit", d.cached_lookup(parent, name))
    except FsError as e:
        assert e.errno == errno.ENOENT
        return ("missing", None)


def _check(owner, other, dirs: list[int], names: list[str]) -> int:
    """Every answer the cache gives equals the table's; returns how many it gave."""
    answered = 0
    for parent in dirs:
        for name in names:
            kind, cached = _cached_lookup(owner, parent, name)
            if kind == "hit" and cached is None:
                continue  # not known in memory: the caller asks a worker thread
            truth = _truth_lookup(other, parent, name)
            answered += 1
            if kind == "missing":
                assert truth is None, f"cache says {parent}/{name} is missing, table has {truth}"
            else:
                assert truth == cached, f"{parent}/{name}: cache {cached}, table {truth}"
    for ino in range(1, 200):
        cached = owner.cached_attr(ino)
        if cached is not None:
            answered += 1
            assert other.getattr(ino) == cached, f"inode {ino}: cache {cached}, table {other.getattr(ino)}"
    return answered


def _new_file(d, parent: int, name: str, data: bytes, close: bool = True) -> int:
    attr, fd = d.create_open(parent, name, 0o644)
    try:
        if data:
            d.write(attr.ino, fd, data, 0)
        if close:
            d.close_file(attr.ino, fd)
    finally:
        os.close(fd)
    return attr.ino


@pytest.mark.parametrize("seed", range(4))
def test_the_cache_agrees_with_the_table_after_random_changes(drafts, seed):
    owner, other = drafts
    rnd = random.Random(seed)
    names = [f"n{i}" for i in range(6)]
    dirs = [ROOT]
    answered = 0
    for step in range(250):
        d = owner if rnd.random() < 0.85 else other  # now and then another process changes it
        parent = rnd.choice(dirs)
        name = rnd.choice(names)
        ops = [
            "create",
            "create",
            "mkdir",
            "write",
            "truncate",
            "rename",
            "unlink",
            "rmdir",
            "chmod",
            "utime",
            "list",
            "lookup",
        ]
        if d is other:  # another process changes the namespace only (as `artfs ref add` does),
            ops = ["create", "mkdir", "rename", "unlink", "rmdir", "chmod", "list"]  # never data files
        op = rnd.choice(ops)
        try:
            if op == "create":
                _new_file(d, parent, name, rnd.randbytes(rnd.randrange(0, 300)), close=d is other or rnd.random() < 0.8)
            elif op == "mkdir":
                dirs.append(d.mkdir(parent, name, 0o755).ino)
            elif op in ("write", "truncate", "chmod", "utime", "unlink", "rmdir", "rename"):
                row = d.lookup(parent, name)
                if op == "write" and row.kind != DIR:
                    fd = d.open_local(row.ino, os.O_RDWR)
                    try:
                        d.write(row.ino, fd, rnd.randbytes(50), rnd.randrange(0, 400))
                        if rnd.random() < 0.5:
                            d.close_file(row.ino, fd)
                    finally:
                        os.close(fd)
                elif op == "truncate" and row.kind != DIR:
                    d.truncate(row.ino, rnd.randrange(0, 100))
                elif op == "chmod":
                    d.setattr(row.ino, mode=rnd.choice([0o600, 0o644, 0o755]))
                elif op == "utime":
                    d.setattr(row.ino, mtime_ns=rnd.randrange(1, 2**40) * 1000)
                elif op == "unlink":
                    d.unlink(parent, name)
                elif op == "rmdir":
                    d.rmdir(parent, name)
                elif op == "rename":
                    d.rename(parent, name, rnd.choice(dirs), rnd.choice(names), noreplace=rnd.random() < 0.2)
            elif op == "list":
                d.listdir(parent)
            elif op == "lookup":
                d.lookup(parent, name)
        except FsError:
            pass  # refused (exists, missing, not empty, a folder into itself...): nothing changed
        dirs = [x for x in dirs if _exists(other, x)]
        try:
            answered += _check(owner, other, dirs, names)
        except AssertionError as e:
            raise AssertionError(
                f"after step {step}: {op} {parent}/{name} by {'owner' if d is owner else 'other'}: {e}"
            ) from None
    assert answered > 500, "the cache answered too little to have been tested"


def _exists(d, ino: int) -> bool:
    try:
        d.getattr(ino)
        return True
    except FsError:
        return False


def test_a_change_by_another_process_is_seen_at_once(drafts):
    owner, other = drafts
    sub = owner.mkdir(ROOT, "sub", 0o755).ino
    _new_file(owner, sub, "mine", b"x")
    owner.listdir(sub)
    with pytest.raises(FsError):
        owner.cached_lookup(sub, "theirs")  # known missing, from memory
    _new_file(other, sub, "theirs", b"y")
    assert owner.cached_lookup(sub, "theirs") is None  # not answered from memory any more
    assert owner.lookup(sub, "theirs").size == 1
    assert owner.cached_lookup(sub, "mine") is not None or owner.lookup(sub, "mine").size == 1
