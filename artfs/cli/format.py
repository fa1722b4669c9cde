"""Formatting for people: sizes, times, progress bars. The library returns data; the CLI formats it."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def counted(n: int, noun: str) -> str:
    """'1 file', '4 files'; '1 version', '2 versions'."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


QUIET = False  # `artfs --quiet`: no progress bars, no notes


def note(line: str) -> None:
    """A line for the person at the terminal (not a result, not an error); none with --quiet."""
    if not QUIET:
        print(line, file=sys.stderr)


def progress_shown() -> bool:
    return not QUIET and sys.stderr.isatty()


@contextmanager
def progress_bar(total: int | None, desc: str):
    """A byte progress bar on a terminal; nothing when stderr is not one, or with --quiet."""
    if QUIET or not sys.stderr.isatty():
        yield lambda n: None
        return
    from tqdm import tqdm

    with tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, leave=False) as bar:
        yield bar.update
