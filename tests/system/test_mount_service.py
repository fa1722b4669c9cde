"""What ships for boot-time mounts, run the way systemd and mount(8) run it:
systemd/artfs@.service (its ExecStart, with a notify socket of our own standing in for
systemd) and the fstab helper `mount.fuse.artfs` (directly, via `mount -t fuse.artfs`,
and via a real fstab line with `mount -T FILE`).
"""

from __future__ import annotations

import configparser
import errno
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import ARTFS_BIN, run_artfs, write_tree
from mounts import daemon_pids, errno_of, fs_type, is_mounted, mounter, wait_for  # noqa: F401  (mounter is a fixture)

pytestmark = pytest.mark.mount

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UNIT = os.path.join(ROOT, "systemd", "artfs@.service")
ENV_EXAMPLE = os.path.join(ROOT, "systemd", "artfs.env.example")
UNIT_ARTFS = "/opt/artfs/.venv/bin/artfs"  # where the unit expects the venv
HELPER = os.path.join(os.path.dirname(sys.executable), "mount.fuse.artfs")
DATA = {"train/a.csv": b"x,y\n1,2\n", "model.bin": os.urandom(1 << 20)}


@pytest.fixture
def published(store_url, tmp_path):
    src = write_tree(tmp_path / "src", DATA)
    run_artfs(
        ["put", src, "--name", "p/data", "--type", "dataset"], store=store_url, cache=str(tmp_path / "cli-cache")
    ).ok()
    return store_url


def read(path):
    with open(path, "rb") as f:
        return f.read()


def check_mount(mp):
    assert sorted(os.listdir(os.path.join(mp, "p", "data"))) == ["drafts", "latest", "v0"]
    assert read(os.path.join(mp, "p/data/latest/model.bin")) == DATA["model.bin"]


# -- systemd -----------------------------------------------------------------------------------


def unit_file() -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None, comment_prefixes=("#", ";"))
    unit.optionxform = str
    unit.read(UNIT)
    return unit


def env_file(path) -> dict[str, str]:
    """KEY=VALUE lines as systemd's EnvironmentFile= reads them (comments and blanks skipped)."""
    env = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith(("#", ";")):
                key, _, value = line.partition("=")
                env[key.strip()] = value.strip().strip('"')
    return env


def systemd_escape_path(path: str) -> str:
    return subprocess.run(["systemd-escape", "--path", path], capture_output=True, text=True, check=True).stdout.strip()


def expand(command: str, instance: str, env: dict) -> list[str]:
    """An Exec*= line as systemd runs it: %i/%f specifiers, then $VAR words split on whitespace
    (a leading "-", failure is ignored, is dropped: see run_exec)."""
    path = subprocess.run(
        ["systemd-escape", "--unescape", "--path", instance], capture_output=True, text=True, check=True
    ).stdout.strip()
    command = command.strip().removeprefix("-")
    words = []
    for word in shlex.split(command.replace("%f", path).replace("%i", instance)):
        if word.startswith("$") and word[1:].replace("_", "").isalnum():
            words += env.get(word[1:], "").split()
        elif word.startswith("${") and word.endswith("}"):
            words += env.get(word[2:-1], "").split()
        else:
            words.append(word)
    return words


def test_unit_is_a_notify_template_on_the_escaped_mount_path():
    service = unit_file()["Service"]
    assert service["Type"] == "notify"
    assert service["EnvironmentFile"] == "/etc/artfs/%i.env"
    assert service["ExecStart"].split()[:4] == [UNIT_ARTFS, "mount", "%f", "--foreground"]
    assert service["ExecStop"].split()[1:] == ["-u", "%f"] and service["ExecStop"].split()[0].endswith("fusermount3")
    assert os.path.exists(service["ExecStop"].split()[0])
    assert service["Restart"] == "on-failure"
    assert systemd_escape_path("/mnt/artfs") == "mnt-artfs"
    example = env_file(ENV_EXAMPLE)
    assert {"ARTFS_STORE", "ARTFS_CACHE", "ARTFS_MOUNT_OPTIONS", "AWS_ACCESS_KEY_ID"} <= set(example)


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="needs systemd-analyze")
def test_unit_passes_systemd_analyze_verify(tmp_path):
    text = open(UNIT).read().replace(UNIT_ARTFS, ARTFS_BIN)  # the venv of this checkout
    path = tmp_path / "artfs@.service"
    path.write_text(text)
    p = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stderr.strip() == "", p.stderr


@pytest.mark.parametrize("stop", ["SIGTERM", "ExecStop"])
def test_unit_command_notifies_ready_serves_and_stops(published, mounter, tmp_path, stop):
    mp = str(tmp_path / "mnt" / "artfs")
    instance = systemd_escape_path(mp)
    env = {**env_file(ENV_EXAMPLE)}
    for key in [k for k in env if k.startswith("AWS_")]:
        env.pop(key)  # the example's placeholders; this test's own AWS_* come from os.environ
    env.update(
        ARTFS_STORE=published, ARTFS_CACHE=str(tmp_path / "cache"), ARTFS_MOUNT_OPTIONS="--cache-size 1G --refresh 2"
    )
    service = unit_file()["Service"]
    proc, sock, log = start_unit(service, instance, env, tmp_path)
    try:
        assert os.path.isdir(mp), "ExecStartPre makes the mount point"
        message = sock.recv(4096).decode()
        assert "READY=1" in message.split("\n"), message
        assert is_mounted(mp) and fs_type(mp) == "fuse.artfs", "READY=1 comes once the mount is up"
        check_mount(mp)
        if stop == "SIGTERM":
            proc.send_signal(signal.SIGTERM)
        else:
            subprocess.run(expand(service["ExecStop"], instance, env), check=True, timeout=30)
        assert proc.wait(timeout=20) == 0, "a clean stop is not a failure (Restart=on-failure)"
        assert not is_mounted(mp)
        assert "STOPPING=1" in sock.recv(4096).decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()
        log.close()
        print(open(tmp_path / "journal.txt", errors="replace").read()[-4000:])


def start_unit(service, instance: str, env: dict, tmp_path):
    """ExecStartPre= lines, then ExecStart= with NOTIFY_SOCKET on a socket of ours, as systemd
    would start the unit. Returns (process, notify socket, journal file)."""
    for pre in service.get("ExecStartPre", "").splitlines():
        if pre.strip():
            r = subprocess.run(expand(pre, instance, env), capture_output=True, timeout=30)
            assert r.returncode == 0 or pre.strip().startswith("-"), f"ExecStartPre={pre} failed: {r.stderr}"
    argv = expand(service["ExecStart"], instance, env)
    assert argv[0] == UNIT_ARTFS
    argv[0] = ARTFS_BIN
    notify = str(tmp_path / f"notify-{time.monotonic_ns()}.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(notify)
    sock.settimeout(60)
    log = open(tmp_path / "journal.txt", "ab")
    proc = subprocess.Popen(
        argv,
        env={**os.environ, **env, "NOTIFY_SOCKET": notify},
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return proc, sock, log


def test_unit_restarted_after_a_crash_recovers_the_stale_mount(local_store_url, mounter, tmp_path):
    """Restart=on-failure after kill -9: ExecStartPre and ExecStart must cope with the stale mount."""
    src = write_tree(tmp_path / "src", DATA)
    run_artfs(
        ["put", src, "--name", "p/data", "--type", "dataset"], store=local_store_url, cache=str(tmp_path / "cli-cache")
    ).ok()
    mp = str(tmp_path / "mnt" / "artfs")
    instance = systemd_escape_path(mp)
    env = {"ARTFS_STORE": local_store_url, "ARTFS_CACHE": str(tmp_path / "cache")}
    service = unit_file()["Service"]
    procs, socks = [], []
    try:
        for attempt in range(2):
            proc, sock, log = start_unit(service, instance, env, tmp_path)
            log.close()
            procs.append(proc)
            socks.append(sock)
            assert "READY=1" in sock.recv(4096).decode(), f"attempt {attempt}"
            check_mount(mp)
            if attempt == 0:
                proc.kill()  # the crash systemd restarts the unit after
                proc.wait(timeout=10)
                wait_for(lambda: errno_of(os.stat, mp) == errno.ENOTCONN, 10, "the mount to go stale")
        procs[-1].send_signal(signal.SIGTERM)
        assert procs[-1].wait(timeout=20) == 0
        assert not is_mounted(mp)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for sock in socks:
            sock.close()
        print(open(tmp_path / "journal.txt", errors="replace").read()[-4000:])


def test_unit_command_exits_non_zero_when_the_mount_fails(tmp_path):
    """So that Restart=on-failure retries (a store not reachable yet at boot)."""
    mp = tmp_path / "mnt"
    mp.mkdir()
    argv = expand(unit_file()["Service"]["ExecStart"], systemd_escape_path(str(mp)), {})
    argv[0] = ARTFS_BIN
    env = {
        **os.environ,
        "ARTFS_STORE": "s3://no-such-bucket/x",
        "ARTFS_CACHE": str(tmp_path / "c"),
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "ARTFS_S3_ATTEMPTS": "1",
    }
    p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert p.returncode != 0 and "Traceback" not in p.stderr, p.stderr
    assert not is_mounted(str(mp))


# -- fstab: mount.fuse.artfs ---------------------------------------------------------------------


def helper(*args, env=None, timeout=60):
    return subprocess.run(
        [HELPER, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )


def mount_options(mp) -> set[str]:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == mp:
                return set(fields[5].split(",")) | set(fields[-1].split(","))
    return set()


def test_fstab_helper_mounts_with_the_fstab_options(published, mounter, tmp_path):
    mp, cache = str(tmp_path / "mnt"), str(tmp_path / "fscache")
    os.mkdir(mp)
    p = helper(published, mp, "-o", f"cache={cache},cache_size=50G,refresh=5,allow_other,_netdev")
    assert p.returncode == 0 and p.stderr == "" and p.stdout == "", p
    assert fs_type(mp) == "fuse.artfs"
    assert "allow_other" in mount_options(mp)
    check_mount(mp)
    assert os.path.exists(os.path.join(cache, "mount.log")), "cache= is the cache (and where the log goes)"
    # The disk cache is written behind the read, so the file may land a moment after `read` returned.
    wait_for(
        lambda: any(files for _d, _s, files in os.walk(os.path.join(cache, "content"))),
        10,
        "the read to land in the cache= folder",
    )
    subprocess.run(["fusermount3", "-u", mp], check=True, timeout=10)


def test_fstab_helper_accepts_generic_mount_options_and_flags(local_store_url, mounter, tmp_path):
    src = write_tree(tmp_path / "src", DATA)
    run_artfs(
        ["put", src, "--name", "p/data", "--type", "dataset"], store=local_store_url, cache=str(tmp_path / "cli-cache")
    ).ok()
    mp = str(tmp_path / "mnt")
    os.mkdir(mp)
    opts = (
        "rw,defaults,nofail,noauto,user,users,auto,dev,nodev,suid,nosuid,exec,noexec,_netdev,"
        f"x-systemd.automount,x-systemd.mount-timeout=30,cache={tmp_path / 'c'},pin_aliases,timeout=7,memory=64M"
    )
    p = helper(f"artfs#{local_store_url}", mp, "-n", "-v", "-o", opts, "-t", "fuse.artfs")
    assert p.returncode == 0, p
    check_mount(mp)
    cmd = next(
        open(f"/proc/{pid}/cmdline").read().split("\0")
        for pid in os.listdir("/proc")
        if pid.isdigit() and mp in open(f"/proc/{pid}/cmdline").read().split("\0")
    )
    assert "--pin-aliases" in cmd and cmd[cmd.index("--timeout") + 1] == "7.0"
    assert cmd[cmd.index("--memory") + 1] == str(64 << 20)
    subprocess.run(["fusermount3", "-u", mp], check=True, timeout=10)


@pytest.mark.parametrize(
    "args, expected",
    [
        (["SRC", "MP", "-o", "cache=/tmp/x,frobnicate"], "unknown option 'frobnicate'"),
        (["SRC", "MP", "-o", "refresh"], "refresh needs a value"),
        (["SRC"], "usage"),
        (["SRC", "MP", "extra"], "usage"),
        (["SRC", "MP", "--bogus"], "unknown argument"),
    ],
)
def test_fstab_helper_refuses_bad_arguments_in_one_line(args, expected):
    p = helper(*args)
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in p.stderr, p.stderr


def test_fstab_helper_fake_mount_does_nothing(tmp_path):
    mp = str(tmp_path)
    p = helper("/nonexistent/store", mp, "-f", "-o", "cache=/tmp/x")
    assert p.returncode == 0 and not is_mounted(mp)


def test_fstab_helper_reports_a_failed_mount_in_one_line(tmp_path):
    p = helper(str(tmp_path / "store"), str(tmp_path / "missing-mp"), "-o", f"cache={tmp_path / 'c'}")
    assert p.returncode != 0
    assert p.stderr.strip().splitlines() == [f"artfs: error: mount point {tmp_path / 'missing-mp'} is not a directory"]


SBIN_HELPER = "/sbin/mount.fuse.artfs"


@pytest.fixture
def installed_helper():
    """The helper where mount(8) looks for it (/sbin/mount.fuse.artfs); removed afterwards."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("needs root and mount(8)")
    if os.path.lexists(SBIN_HELPER):
        if os.path.realpath(SBIN_HELPER) != os.path.realpath(HELPER):
            pytest.skip(f"{SBIN_HELPER} exists and is not this checkout's helper")
        yield SBIN_HELPER  # already installed (by an admin or another run): leave it
        return
    os.symlink(HELPER, SBIN_HELPER)
    try:
        yield SBIN_HELPER
    finally:
        if os.path.islink(SBIN_HELPER) and os.readlink(SBIN_HELPER) == HELPER:
            os.unlink(SBIN_HELPER)


def test_mount_t_fuse_artfs_runs_the_helper(installed_helper, published, mounter, tmp_path):
    mp = str(tmp_path / "mnt")
    os.mkdir(mp)
    p = subprocess.run(
        ["mount", "-t", "fuse.artfs", published, mp, "-o", f"cache={tmp_path / 'c'},refresh=2,_netdev"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    assert fs_type(mp) == "fuse.artfs"
    check_mount(mp)
    p = subprocess.run(["umount", mp], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and not is_mounted(mp), p.stderr


def test_an_fstab_line_mounts_with_mount_mountpoint(installed_helper, published, mounter, tmp_path):
    mp = str(tmp_path / "mnt")
    os.mkdir(mp)
    fstab = tmp_path / "fstab"
    fstab.write_text(
        f"# artfs\n{published}  {mp}  fuse.artfs  "
        f"cache={tmp_path / 'c'},cache_size=50G,refresh=5,allow_other,_netdev  0 0\n"
    )
    p = subprocess.run(["mount", "--fstab", str(fstab), mp], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "allow_other" in mount_options(mp)
    check_mount(mp)
    p = subprocess.run(["umount", mp], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and not is_mounted(mp), p.stderr


def test_an_fstab_mount_recovers_its_stale_mount(installed_helper, local_store_url, mounter, tmp_path):
    src = write_tree(tmp_path / "src", DATA)
    run_artfs(
        ["put", src, "--name", "p/data", "--type", "dataset"], store=local_store_url, cache=str(tmp_path / "cli-cache")
    ).ok()
    mp = str(tmp_path / "mnt")
    os.mkdir(mp)
    fstab = tmp_path / "fstab"
    fstab.write_text(f"{local_store_url}  {mp}  fuse.artfs  cache={tmp_path / 'c'},_netdev  0 0\n")
    subprocess.run(["mount", "--fstab", str(fstab), mp], check=True, capture_output=True, timeout=60)
    (pid,) = daemon_pids(mp)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: errno_of(os.stat, mp) == errno.ENOTCONN, 10, "the mount to go stale")
    p = subprocess.run(["mount", "--fstab", str(fstab), mp], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "stale" in p.stderr, p.stderr
    check_mount(mp)
    subprocess.run(["umount", mp], check=True, timeout=30)
