"""Long CLI work shows a progress bar on a terminal and nothing when piped; `--quiet` silences
bars and notes (not errors). The terminal is a real pseudo-terminal (pty)."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import termios

from conftest import ARTFS_BIN, run_artfs, write_tree


def on_a_terminal(args: list[str], env: dict) -> tuple[int, str, str]:
    """Runs artfs with stderr on a pty (stdout piped): (exit code, stdout, what the terminal showed)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns: room for a bar
    proc = subprocess.Popen([ARTFS_BIN, *args], stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL, env=env)
    os.close(slave)
    shown = b""
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    out = proc.stdout.read().decode()
    code = proc.wait(timeout=60)
    os.close(master)
    return code, out, shown.decode(errors="replace")


def test_progress_on_a_terminal_only_and_quiet_silences_it(local_store_url, cache_dir, tmp_path):
    write_tree(tmp_path / "src", {"big.bin": os.urandom(6 << 20), "small.txt": "hi"})
    env = {**os.environ, "ARTFS_STORE": local_store_url, "ARTFS_CACHE": cache_dir}
    code, out, shown = on_a_terminal(["put", str(tmp_path / "src"), "--name", "p/a", "--type", "dataset"], env)
    assert code == 0 and out.strip() == "p/a:v0"
    assert "hashing and uploading" in shown and "%" in shown  # tqdm's bar, drawn on the terminal

    piped = run_artfs(["get", "p/a:v0", "--root", str(tmp_path / "out1")], store=local_store_url, cache=cache_dir).ok()
    assert piped.stderr.strip() == f"p/a:v0 -> {tmp_path / 'out1'} (2 written, 0 already there)"  # a note, no bar

    code, out, shown = on_a_terminal(["get", "p/a:v0", "--root", str(tmp_path / "out2")], env)
    assert code == 0 and "get p/a:v0" in shown and "(2 written, 0 already there)" in shown

    code, out, shown = on_a_terminal(["--quiet", "get", "p/a:v0", "--root", str(tmp_path / "out3")], env)
    assert code == 0 and out.strip() == str(tmp_path / "out3") and shown == ""

    quiet = run_artfs(
        ["-q", "get", "p/a:v0", "--root", str(tmp_path / "out4")], store=local_store_url, cache=cache_dir
    ).ok()
    assert quiet.stderr == "" and quiet.out == str(tmp_path / "out4")
    run_artfs(["--quiet", "get", "p/nope:v0"], store=local_store_url, cache=cache_dir).fails("p/nope")
