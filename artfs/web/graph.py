"""The lineage graph as a picture: DOT for Graphviz's `dot`, which draws it as SVG.

Each node links to its page (a version's lineage, a run's page), so the
picture can be clicked through. Only names the store's rules allow reach
the DOT text (versions pass the name check, runs are made safe by lineage),
and DOT strings are quoted here; `dot` escapes what it writes into the SVG.
"""

from __future__ import annotations

import shutil
import subprocess
from urllib.parse import quote

from artfs.errors import ArtfsError
from artfs.names import is_valid_name
from artfs.versions.lineage import Graph

DOT_TIMEOUT = 30.0


class NoGraphviz(ArtfsError):
    """`dot` is not installed."""


def _q(text: str) -> str:
    """A DOT string; a newline becomes DOT's own line break, any other backslash stays literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _version_ok(name: str) -> bool:
    artifact, _, v = name.partition(":")
    parts = artifact.split("/")
    return len(parts) == 2 and all(is_valid_name(p) for p in parts) and v.startswith("v") and v[1:].isdigit()


def version_url(name: str) -> str:
    artifact, _, v = name.partition(":")
    project, art = artifact.split("/")
    return f"/p/{quote(project)}/{quote(art)}/{quote(v)}/lineage"


def run_url(run: str) -> str:
    return f"/run/{quote(run)}"


def to_dot(g: Graph, start: str) -> str:
    lines = [
        "digraph lineage {",
        "  rankdir=LR;",
        '  bgcolor="transparent";',
        '  node [fontname="Helvetica", fontsize=11];',
        '  edge [fontname="Helvetica", fontsize=9, color="#777777"];',
    ]
    for v, rec in sorted(g.versions.items()):
        if not _version_ok(v):
            continue
        style = (
            'style="filled,bold", fillcolor="#ffe8b0"'
            if v == start
            else 'style="dashed"'
            if rec is None
            else 'style="filled", fillcolor="#e8f0ff"'
        )
        label = v if rec is None else f"{v}\n{rec.type}"
        tip = f"{v} (deleted)" if rec is None else v
        lines.append(
            f"  {_q(v)} [shape=box, {style}, label={_q(label)}, URL={_q(version_url(v))}, "
            f'tooltip={_q(tip)}, target="_top"];'
        )
    for run in sorted(g.runs):
        lines.append(
            f'  {_q("run " + run)} [shape=ellipse, style=filled, fillcolor="#eaf7ea", '
            f'label={_q("run " + run)}, URL={_q(run_url(run))}, tooltip={_q("run " + run)}, target="_top"];'
        )
    for run, v in sorted(g.logged):
        if _version_ok(v):
            lines.append(f"  {_q('run ' + run)} -> {_q(v)} [label=logged];")
    for v, run in sorted(g.used):
        if _version_ok(v):
            lines.append(f"  {_q(v)} -> {_q('run ' + run)} [label=used];")
    lines.append("}")
    return "\n".join(lines)


def to_svg(dot_text: str) -> str:
    """The graph drawn by Graphviz, as an <svg> element to put in a page."""
    dot = shutil.which("dot")
    if dot is None:
        raise NoGraphviz("Graphviz is not installed (apt-get install graphviz): lineage is shown as a list")
    try:
        r = subprocess.run(
            [dot, "-Tsvg"], check=False, input=dot_text, capture_output=True, text=True, timeout=DOT_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        raise ArtfsError(f"Graphviz took longer than {DOT_TIMEOUT:g}s to draw the graph") from None
    if r.returncode != 0:
        raise ArtfsError(f"Graphviz could not draw the graph: {r.stderr.strip()[:200]}")
    svg = r.stdout
    return svg[svg.find("<svg") :]  # without the XML prolog and DOCTYPE, to sit inside HTML
