"""scripts/setup.sh as a newcomer meets it, on a machine already set up (as the suite's is):
a second run only checks, --quiet says nothing, a wrong argument is one usage line."""

from __future__ import annotations

import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SETUP = os.path.join(ROOT, "scripts", "setup.sh")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SETUP, *args], capture_output=True, text=True, timeout=600, check=False, stdin=subprocess.DEVNULL
    )


def test_a_second_run_only_checks_and_quiet_says_nothing():
    r = run("--quiet")
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r
    r = run()
    assert r.returncode == 0, r
    lines = r.stdout.strip().splitlines()
    assert lines[-1].startswith("setup: ready: artfs, version ")  # nothing installed, nothing long to show
    assert not any("installing" in line for line in lines), lines
    assert "WARNING" not in r.stdout + r.stderr and "!!" not in r.stdout + r.stderr  # no banners


def test_a_wrong_argument_is_one_usage_line():
    r = run("--bogus")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip() == "usage: scripts/setup.sh [--quiet] [--relink]"
