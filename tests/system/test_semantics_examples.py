"""docs/semantics.md is true: each of its marked examples runs, in order, against a scratch
store, and what it shows is what it prints (see tests/doc_examples.py for the conventions).
The examples mount the store themselves; whatever they leave mounted is unmounted here."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from doc_examples import asserts_something, check, examples, python_program, run_example
from mounts import mounting

DOC = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "semantics.md")
EXAMPLES = examples(DOC)

pytestmark = pytest.mark.mount


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """(folder, environment) shared by the examples, which build on each other."""
    from artfs.api.store import Store

    root = tmp_path_factory.mktemp("semantics")
    env = {"ARTFS_STORE": str(root / "store"), "ARTFS_CACHE": str(root / "cache"), "TZ": "UTC"}
    Store(env["ARTFS_STORE"], env["ARTFS_CACHE"], create=True).registry.mark_store()  # no "created" note
    work = root / "work"
    work.mkdir()
    with mounting(root):
        yield str(work), env


@pytest.mark.parametrize("example", EXAMPLES, ids=[ex.id for ex in EXAMPLES])
def test_the_example_is_true(scratch, example):
    cwd, env = scratch
    check(example, run_example(example, cwd, env))


def test_every_example_asserts_what_it_shows():
    assert len(EXAMPLES) >= 8
    assert [ex.id for ex in EXAMPLES if not asserts_something(ex)] == []


def test_an_example_that_is_not_true_fails(tmp_path):
    """The checker itself: a wrong output, a failing command and a missing failure are caught."""
    doc = tmp_path / "doc.md"
    doc.write_text(
        "<!-- example -->\n```sh\necho hello   # -> bye\nfalse\ntrue          # -> true: failed\n"
        "printf 'a\\nb\\n'\n# -> a\n# -> b\necho ok \\\n  done     # -> ok done\n```\n"
    )
    [ex] = examples(str(doc))
    outcomes = run_example(ex, str(tmp_path), {})
    assert [o.problem() is None for o in outcomes] == [False, False, False, True, True]
    with pytest.raises(AssertionError, match="line 3: echo hello"):
        check(ex, outcomes)


def test_a_python_example_checks_its_reprs(tmp_path):
    code = "x = [1,\n     2]\nlen(x)   # -> 2\nx\n# -> [1, 2]\nsum(x)  # -> 4\n"
    program = python_program(code)
    assert program.count("__expect(") == 4  # the helper and three checks
    r = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=False)
    assert r.returncode != 0 and "line 6: got 3, expected 4" in r.stderr, r.stderr
    r = subprocess.run(
        [sys.executable, "-c", python_program(code.replace("# -> 4", "# -> 3"))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr
