"""Shell examples in the docs, run as tests (docs/semantics.md, README.md).

A runnable example is a ```sh block preceded by an HTML comment that marks it:

    <!-- example -->    or    <!-- example: a note for the reader -->

A block that uses /mnt/artfs without mounting it itself gets a fresh mount there first
(the tests substitute a scratch path for /mnt/artfs). A ```python block marked so runs
whole and must exit 0 without a traceback; there a top-level expression ending in
`# -> REPR` must have that repr().

In the block, `# -> TEXT` gives what the command before it prints (stdout and stderr
together), either at the end of the command's line or on lines of its own after it
(several such lines: several lines of output; a bare `# ->`: no output at all).
Output is compared with runs of white space made one (so `ls` printing one name a line
matches `# -> a  b  c`). Every command must succeed (exit 0), except one whose output is
given and matches: that is how a failure is shown (`touch v0/x  # -> touch: …: Read-only
file system`). Other comments are prose. A line ending in `\\` continues the command.

Each block runs in bash, one command after another in one shell (variables and `cd`
carry over), in the test's scratch folder, with ARTFS_STORE and ARTFS_CACHE set, LC_ALL=C
and the venv's `artfs` first on PATH. The tests substitute a scratch path for
`/mnt/artfs`, so nothing outside the test's folder is touched.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field

MARKER = re.compile(r"^<!--\s*example(?::\s*(?P<how>.*?))?\s*-->\s*$")
FENCE = re.compile(r"^```(?P<lang>sh|bash|shell|python)\b")
EXPECT = "# ->"
MOUNT_PATH = "/mnt/artfs"


@dataclass
class Command:
    line: int  # in the document
    text: str
    expected: list[str] | None = None  # None: not checked beyond its exit status


@dataclass
class Example:
    doc: str
    line: int  # of the opening fence
    how: str  # what the marker says after "example:", if anything
    lang: str = "sh"  # or "python": then `code` runs whole, and must exit 0 without a traceback
    code: str = ""
    commands: list[Command] = field(default_factory=list)  # sh only

    @property
    def id(self) -> str:
        return f"{os.path.basename(self.doc)}:{self.line}"

    @property
    def needs_mount(self) -> bool:
        """Uses /mnt/artfs without mounting it itself."""
        return MOUNT_PATH in self.code and f"artfs mount {MOUNT_PATH}" not in self.code


def _split_expectation(line: str) -> tuple[str, str | None]:
    """`cmd  # -> out` -> ("cmd", "out"); a `# ->` inside quotes is not one (the docs have none)."""
    i = line.find(" " + EXPECT)
    if i < 0:
        return line, None
    return line[:i].rstrip(), line[i + 1 + len(EXPECT) :].strip()


def parse_commands(body: list[tuple[int, str]]) -> list[Command]:
    commands: list[Command] = []
    pending: tuple[int, str] | None = None  # a command continued with a backslash
    for number, raw in body:
        line = raw.rstrip()
        if pending is not None:
            start, text = pending
            text += "\n" + line
            if line.endswith("\\"):
                pending = (start, text)
                continue
            pending = None
            line, number = text, start
        elif line.endswith("\\"):
            pending = (number, line)
            continue
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith(EXPECT):
            if not commands:
                raise ValueError(f"line {number}: an expected output before any command")
            out = stripped[len(EXPECT) :].strip()
            commands[-1].expected = [*(commands[-1].expected or []), out]
            continue
        if stripped.startswith("#"):
            continue  # prose
        text, out = _split_expectation(line)
        commands.append(Command(number, text, None if out is None else [out]))
    if pending is not None:
        raise ValueError(f"line {pending[0]}: the block ends inside a continued command")
    return commands


def examples(doc: str) -> list[Example]:
    """The marked examples of `doc`, in order."""
    with open(doc) as f:
        lines = f.read().splitlines()
    out = []
    i = 0
    while i < len(lines):
        m = MARKER.match(lines[i].strip())
        if not m:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        fence = FENCE.match(lines[j]) if j < len(lines) else None
        if fence is None:
            raise ValueError(f"{doc}:{i + 1}: an example marker not followed by a ```sh or ```python block")
        k = j + 1
        while k < len(lines) and not lines[k].startswith("```"):
            k += 1
        body = [(n + 1, lines[n]) for n in range(j + 1, k)]
        lang = "python" if fence.group("lang") == "python" else "sh"
        ex = Example(
            doc,
            j + 1,
            (m.group("how") or "").strip(),
            lang,
            "\n".join(line for _, line in body) + "\n",
            parse_commands(body) if lang == "sh" else [],
        )
        if not ex.code.strip():
            raise ValueError(f"{doc}:{j + 1}: an empty example")
        out.append(ex)
        i = k + 1
    return out


def python_program(code: str) -> str:
    """A Python example with each top-level expression statement marked `# -> REPR` turned into
    a check that the expression's repr() is REPR (white space runs made one)."""
    lines = code.split("\n")
    tree = ast.parse(code)
    checks = []
    for node in tree.body:
        if not isinstance(node, ast.Expr):
            continue
        end = node.end_lineno
        _, out = _split_expectation(lines[end - 1])
        while out is None and end < len(lines) and lines[end].strip().startswith(EXPECT):
            out = lines[end].strip()[len(EXPECT) :].strip()  # on the line after the expression
            end += 1
        if out is None:
            continue
        checks.append((node.lineno, end, ast.get_source_segment(code, node.value), out))
    for start, end, expr, out in reversed(checks):
        lines[start - 1 : end] = [f"__expect({start}, ({expr}), {out!r})"] + [""] * (end - start)
    prelude = (
        "def __expect(line, value, expected):\n"
        "    got = ' '.join(repr(value).split())\n"
        "    assert got == ' '.join(expected.split()), f'line {line}: got {got}, expected {expected}'\n"
    )
    return prelude + "\n".join(lines)


def normalized(text: str) -> str:
    return " ".join(text.split())


@dataclass
class Outcome:
    command: Command
    returncode: int
    output: str

    def problem(self) -> str | None:
        """Why this command's outcome is not what the example says, or None."""
        c = self.command
        if c.expected is not None:
            if normalized(self.output) != normalized("\n".join(c.expected)):
                return f"printed {self.output!r}, expected {chr(10).join(c.expected)!r}"
            if self.returncode != 0 and not self.output.strip():
                return f"exited {self.returncode} without a word"
            return None
        if self.returncode != 0:
            return f"exited {self.returncode}: {self.output.strip()!r}"
        return None


def run_example(
    ex: Example, cwd: str, env: dict[str, str], paths: dict[str, str] | None = None, timeout: float = 300
) -> list[Outcome]:
    """Runs the example's commands in one bash, each with its output captured apart.
    `paths` maps paths the doc names to scratch ones (e.g. /mnt/artfs to a test's mount
    point): replaced in that order in the commands, and back in their output."""
    paths = paths or {}
    outdir = os.path.join(cwd, ".example-out")
    os.makedirs(outdir, exist_ok=True)
    script = []
    for n, c in enumerate(ex.commands):
        text = c.text
        for doc_path, real in paths.items():
            text = text.replace(doc_path, real)
        out, rc = os.path.join(outdir, f"{n}.out"), os.path.join(outdir, f"{n}.rc")
        script.append(f"{{\n{text}\n}} >'{out}' 2>&1 </dev/null\necho $? >'{rc}'")
    full_env = {
        **os.environ,
        **env,
        "LC_ALL": "C",
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
    }
    for n in range(len(ex.commands)):
        for suffix in (".out", ".rc"):
            try:
                os.remove(os.path.join(outdir, f"{n}{suffix}"))
            except FileNotFoundError:
                pass
    subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=cwd,
        env=full_env,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )
    outcomes = []
    for n, c in enumerate(ex.commands):
        try:
            with open(os.path.join(outdir, f"{n}.rc")) as f:
                rc = int(f.read())
            with open(os.path.join(outdir, f"{n}.out"), errors="replace") as f:
                output = f.read()
        except FileNotFoundError:
            rc, output = -1, "(never ran: the shell stopped before it)"
        for doc_path, real in sorted(paths.items(), key=lambda kv: -len(kv[1])):
            output = output.replace(real.strip().rstrip("/"), doc_path.strip().rstrip("/"))
        outcomes.append(Outcome(c, rc, output))
    return outcomes


def check(ex: Example, outcomes: list[Outcome]) -> None:
    """Fails naming every command of `ex` whose outcome is not what the doc says."""
    problems = [
        f"  line {o.command.line}: {o.command.text.strip()}\n    {p}"
        for o in outcomes
        if (p := o.problem()) is not None
    ]
    assert not problems, f"{ex.id}: the example is not true:\n" + "\n".join(problems)


def asserts_something(ex: Example) -> bool:
    if ex.lang == "python":
        return "__expect(" in python_program(ex.code)
    return any(c.expected is not None for c in ex.commands)
