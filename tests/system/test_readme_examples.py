"""The README is true: every code block marked `<!-- example … -->` runs, as written, against a
scratch store holding scripts/demo.sh's sample (`scripts/demo.sh --publish-only`).

/mnt/artfs becomes a fresh mount point under the test's folder (mounted first unless the
block mounts it itself), /tmp/ that folder's tmp/, and the block runs in a folder holding
what it names (new_batch/, model.pt). A shell block runs under `bash -euo pipefail`, a
Python block with this venv's Python; either must exit 0 with no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import write_tree
from mounts import mounter  # noqa: F401  (a fixture)

pytestmark = pytest.mark.mount

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
README = os.path.join(ROOT, "README.md")
MARK = "<!-- example"


def examples() -> list:
    with open(README) as f:
        lines = f.read().split("\n")
    found = []
    for i, line in enumerate(lines):
        if not (line.startswith(MARK) and i + 1 < len(lines) and lines[i + 1].startswith("```")):
            continue
        lang, body, j = lines[i + 1][3:].strip(), [], i + 2
        while not lines[j].startswith("```"):
            body.append(lines[j])
            j += 1
        found.append(pytest.param(lang, "\n".join(body) + "\n", id=f"README.md:{i + 2}"))
    return found


def test_the_readme_marks_its_examples():
    assert len(examples()) >= 3  # the mount, a draft, artfs:// (a lost marker would drop a test)


@pytest.mark.parametrize(("lang", "code"), examples())
def test_readme_example_runs(lang, code, mounter, tmp_path):  # noqa: F811
    store, cache, tmp = tmp_path / "store", tmp_path / "cache", tmp_path / "tmp"
    tmp.mkdir()
    env = {
        **os.environ,
        "ARTFS_STORE": str(store),
        "ARTFS_CACHE": str(cache),
        "TMPDIR": str(tmp),
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
    }
    seed = subprocess.run(
        [os.path.join(ROOT, "scripts", "demo.sh"), "--publish-only"],
        env=env,
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
    if "/mnt/artfs" in code and "artfs mount /mnt/artfs" not in code:
        mnt = mounter(str(store), cache=str(cache)).mp
    else:
        os.mkdir(mnt)
    code = code.replace(" /tmp/", f" {tmp}/").replace("/mnt/artfs", mnt)  # (mnt is under /tmp/ itself)
    argv = ["bash", "-euo", "pipefail", "-c", code] if lang == "sh" else [sys.executable, "-c", code]
    assert lang in ("sh", "python"), lang
    r = subprocess.run(
        argv, cwd=work, env=env, capture_output=True, text=True, timeout=300, check=False, stdin=subprocess.DEVNULL
    )
    assert r.returncode == 0 and "Traceback" not in r.stderr, f"{code}\n--- stdout\n{r.stdout}--- stderr\n{r.stderr}"
