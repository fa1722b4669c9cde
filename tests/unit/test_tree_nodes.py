"""The mount's node tables follow what the kernel holds: names it forgets are dropped, and
the tables shrink once most are gone (a `find` over millions of files, then memory pressure)."""

import sys

import pytest

from artfs.errors import NotFound
from artfs.fs import tree as tree_module
from artfs.fs.tree import Tree


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
