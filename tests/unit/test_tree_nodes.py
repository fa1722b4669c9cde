"""The mount's node tables follow what the kernel holds: names it forgets are dropped, and
the tables shrink once most are gone (a `find` over millions of files, then memory pressure)."""

import sys

import pytest

from artfs.errors import NotFound
from artfs.fs import tree as tree_module
from artfs.fs.tree import Tree
from artfs.names import ArtifactName
from artfs.store.manifest import Entry, Manifest
from artfs.store.registry import VersionRecord


def test_forgotten_names_go_and_the_tables_shrink(monkeypatch):
    monkeypatch.setattr(tree_module, "SHRINK_ABOVE", 1000)
    t = Tree(None, None, None)  # type: ignore[arg-type]  # projects need no catalog to be made
    nodes = [t._project(f"p{i}") for i in range(20_000)]
    for n in nodes:
        t.remember(n)
    t.remember(nodes[-1])  # looked up twice: one forget leaves it
    full = sys.getsizeof(t._by_ino) + sys.getsizeof(t._by_key)
    for n in nodes:
        t.forget(n.ino, 1)
    assert t.node(nodes[-1].ino) is nodes[-1] and t.known(("p", "p19999")) is nodes[-1]
    with pytest.raises(NotFound):
        t.node(nodes[0].ino)
    assert t.known(("p", "p0")) is None
    assert sys.getsizeof(t._by_ino) + sys.getsizeof(t._by_key) < full / 10, "the tables were copied smaller"
    again = t._project("p0")
    assert again.ino != nodes[0].ino and t.node(again.ino) is again


def test_file_nodes_are_bounded_and_made_again_from_their_numbers(monkeypatch):
    """However many files the kernel holds, a bounded number of their nodes is kept; any
    other is made again from its inode number, the same file with the same number."""
    monkeypatch.setattr(tree_module, "FILE_NODES", 4)
    t = Tree(None, None, None)  # type: ignore[arg-type]
    m = Manifest.from_entries([Entry(f"d/f{i:03d}", i, bytes(32), pack=bytes(32)) for i in range(100)])
    version = t._version(VersionRecord(ArtifactName("p", "a"), 0, "0" * 64, "dataset", 0.0), m)
    t.remember(version)
    folder = t.lookup(version, "d")
    t.remember(folder)
    files = [t.lookup(folder, f"f{i:03d}") for i in range(100)]
    for f in files:
        t.remember(f)
    assert len(t._files) <= 4 and len(t._by_ino) == 3, "root, version and folder; files are not in the table"
    for i, f in enumerate(files):
        again = t.node(f.ino)
        assert (again.ino, again.path, t.attr(again).size) == (f.ino, f"d/f{i:03d}", i)
    t.forget(files[0].ino, 1)
    assert t.node(files[0].ino).path == "d/f000", "a number stays good for as long as its version is held"
    t.forget(folder.ino, 1)
    t.forget(version.ino, 1)
    with pytest.raises(NotFound):
        t.node(files[50].ino)
