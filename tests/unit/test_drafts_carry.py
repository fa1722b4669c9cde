"""Carrying base entries by the column (carry.py) gives exactly the manifest that
carrying them one Entry at a time gives: same bytes, so the same digest."""

from __future__ import annotations

import os

import pytest

from artfs.content.carry import CarriedRange, assemble, expand
from artfs.digest import CHUNK_SIZE, DIGEST_SIZE
from artfs.errors import InvalidInput
from artfs.store.manifest import Entry, Manifest
from artfs.versions.assemble import assemble_kept


def _base() -> Manifest:
    entries = []
    for d in ("a", "a-b", "b", "b/c", "z"):
        for i in range(3):
            entries.append(
                Entry(
                    f"{d}/f{i}",
                    10 + i,
                    os.urandom(DIGEST_SIZE),
                    0o644,
                    pack=b"P" * 32,
                    offset=i * 10,
                    mtime_ns=1_000_000_007 * (i + 1),
                )
            )
    big = 2 * CHUNK_SIZE + 1
    entries.append(Entry("b/big.bin", big, os.urandom(DIGEST_SIZE), 0o755, chunks=os.urandom(3 * DIGEST_SIZE)))
    entries.append(Entry("a/ref.csv", 5, os.urandom(DIGEST_SIZE), ref={"uri": "s3://x/y", "etag": "e"}))
    entries.append(Entry("top.txt", 3, os.urandom(DIGEST_SIZE), pack=b"Q" * 32, offset=7))
    return Manifest.from_entries(entries)


@pytest.mark.parametrize("moves", [False, True])
def test_assemble_equals_entry_by_entry(moves):
    base = _base()
    ranges = [
        CarriedRange(base, *_span(base, "b"), "b", "moved/b" if moves else "b"),
        CarriedRange(base, *_span(base, "a-b"), "a-b", "a-b"),
    ]
    new = [
        Entry("a/new.bin", 4, os.urandom(DIGEST_SIZE), 0o600, pack=b"R" * 32, offset=0),
        Entry("new/huge", CHUNK_SIZE + 1, os.urandom(DIGEST_SIZE), 0o700, chunks=os.urandom(2 * DIGEST_SIZE)),
        base.get("top.txt"),
    ]
    got = assemble_kept(list(new), ranges)
    want = Manifest.from_entries(new + expand(ranges))
    assert got.encode() == want.encode()
    assert Manifest.decode(got.encode()).paths == want.paths


def test_the_whole_root_carried_is_the_base_itself():
    base = _base()
    assert assemble_kept([], [CarriedRange(base, 0, len(base), "", "")]).encode() == base.encode()


def test_duplicates_are_refused():
    base = _base()
    with pytest.raises(InvalidInput):
        assemble([base.get("b/c/f0")], [CarriedRange(base, *_span(base, "b"), "b", "b")])


def _span(m: Manifest, folder: str) -> tuple[int, int]:
    r = m.under(folder)
    return r.start, r.stop
