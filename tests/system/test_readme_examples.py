"""The README is true: every code block marked `<!-- example … -->` runs, as written, against a
scratch store holding scripts/demo.sh's sample (`scripts/demo.sh --publish-only`), and a shell
block prints what its `# ->` lines say (tests/doc_examples.py has the conventions).

/mnt/artfs becomes a fresh mount point under the test's folder (mounted first unless the
block mounts it itself), /tmp/ that folder's tmp/, and the block runs in a folder holding
what it names (new_batch/, model.pt). A Python block runs with this venv's Python and must
exit 0 with no traceback, its `# -> REPR` expressions having that repr()."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import write_tree
from doc_examples import asserts_something, check, examples, python_program, run_example
from mounts import mounter  # noqa: F401  (a fixture)

pytestmark = pytest.mark.mount

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
README = os.path.join(ROOT, "README.md")
EXAMPLES = examples(README)


def test_the_readme_marks_its_examples():
    # the mount, a draft, artfs:// (a lost marker would drop a test)
    assert len(EXAMPLES) >= 3
    assert [ex.id for ex in EXAMPLES if not asserts_something(ex)] == []


@pytest.mark.parametrize("example", EXAMPLES, ids=[ex.id for ex in EXAMPLES])
def test_readme_example_is_true(example, mounter, tmp_path):  # noqa: F811
    store, cache, tmp = tmp_path / "store", tmp_path / "cache", tmp_path / "tmp"
    tmp.mkdir()
    env = {
        "ARTFS_STORE": str(store),
        "ARTFS_CACHE": str(cache),
        "TMPDIR": str(tmp),
        "TZ": "UTC",
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
    }
    seed = subprocess.run(
        [os.path.join(ROOT, "scripts", "demo.sh"), "--publish-only"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert seed.returncode == 0, seed.stderr
    work = tmp_path / "work"
    write_tree(
        work,
        {
            "new_batch/images/dup.png": "duplicate",
            "new_batch/images/bike_101.png": "a new bike",
            "new_batch/labels-extra.csv": "bike_101.png,2\n",
            "model.pt": "weights",
        },
    )

    mnt = str(tmp_path / "mnt")
    if example.needs_mount:
        mnt = mounter(str(store), cache=str(cache)).mp
    else:
        os.mkdir(mnt)
    if example.lang == "sh":
        check(example, run_example(example, str(work), env, {" /tmp/": f" {tmp}/", "/mnt/artfs": mnt}))
        return
    r = subprocess.run(
        [sys.executable, "-c", python_program(example.code)],
        cwd=work,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 0 and "Traceback" not in r.stderr, (
        f"{example.code}\n--- stdout\n{r.stdout}--- stderr\n{r.stderr}"
    )
