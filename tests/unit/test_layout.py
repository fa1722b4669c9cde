"""The layout shows the architecture: no import cycles, small modules, a core without FUSE."""

from __future__ import annotations

import ast
import os

import artfs

ROOT = os.path.dirname(artfs.__file__)
MAX_LINES = 600
FUSE_ADAPTER_LINES = 600


def modules() -> dict[str, str]:
    out = {}
    for folder, _, files in os.walk(ROOT):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
                out[rel.removesuffix(".__init__")] = path
    return out


def imports_of(path: str, known: set[str]) -> set[str]:
    """artfs modules `path` imports, at any depth: function-level imports and imports under
    `if TYPE_CHECKING:` are dependencies of the design too."""
    tree = ast.parse(open(path).read())
    found: set[str] = set()

    def visit(node):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                full = f"{node.module}.{a.name}"
                found.add(full if full in known else node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in found if m in known}


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    # `import artfs.x.y` also runs the packages above it; those are not dependencies of design.
    return {m: {d for d in imports_of(p, known) if d != m and d != "artfs"} for m, p in mods.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            strong(v)
    return out


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_over_600_lines():
    long = {m: n for m, p in modules().items() if (n := sum(1 for _ in open(p))) > MAX_LINES}
    assert long == {}


def test_only_the_fuse_adapter_imports_pyfuse3_and_it_is_thin():
    users = {
        m: p
        for m, p in modules().items()
        if "pyfuse3"
        in {
            getattr(n, "module", None) or (n.names[0].name if isinstance(n, ast.Import) else None)
            for n in ast.walk(ast.parse(open(p).read()))
            if isinstance(n, (ast.Import, ast.ImportFrom))
        }
    }
    assert all(m.startswith("artfs.fs.fuse.") for m in users), sorted(users)
    assert sum(sum(1 for _ in open(p)) for p in users.values()) <= FUSE_ADAPTER_LINES


LAYERS = ["ground", "store", "content", "references", "versions", "drafts", "api", "fs", "fs.fuse", "top"]


def layer_of(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:
        return LAYERS.index("top")  # artfs/__init__.py: the public face
    if len(parts) == 2:
        return 0 if parts[1] in ("names", "config", "errors", "digest") else LAYERS.index("top")
    if parts[1] == "fs" and len(parts) > 2 and parts[2] == "fuse":
        return LAYERS.index("fs.fuse")
    return LAYERS.index(parts[1]) if parts[1] in LAYERS else LAYERS.index("top")


def test_imports_point_down_the_layers():
    upward = sorted(f"{m} -> {d}" for m, deps in import_graph().items() for d in deps if layer_of(d) > layer_of(m))
    assert upward == []
