"""Real artfs mounts for tests, always torn down.

    from mounts import mounter            # the fixture (pytest finds it when imported)

    def test_x(mounter, store_url):
        m = mounter(store_url, "--refresh", "0.5")       # `artfs mount` on a fresh mount point
        open(m.path("demo/data/v1/file")).read()

  mounter(store, *flags, cache=None, env=None, debug=True) -> Mount
      Runs `artfs --store STORE --cache CACHE [--debug] mount MP --log-file LOG FLAGS…` on a
      fresh mount point under the test's tmp_path (and a fresh cache unless `cache` is
      given) and returns once it is mounted. `env` adds variables for the daemon.
      mounter.tmp_path is the root under which everything of the test lives.
  Mount: .mp, .path(*parts), .cache, .log_path, .log(), .pids(), .pid, .fetches(), .umount(), .mounted(),
         .result (the CLIResult of `artfs mount`)

On teardown — pass or fail — every FUSE mount under the test's tmp_path is unmounted
(fusermount3 -u, then -u -z) and every artfs mount daemon whose command line names a
path under it (and only those) is stopped (SIGTERM, then SIGKILL), then the teardown
checks nothing is left and that no daemon logged a traceback (a FUSE handler failing
unexpectedly). A test that mounts by other means (systemd's command, the fstab
helper, mount(8)) under tmp_path is covered too. The daemon log is printed on teardown,
so a failing test shows it. If pytest itself is stopped (SIGTERM, SIGHUP, a crash), a
signal handler and an atexit hook still clean up; only SIGKILL can leave mounts behind.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import signal
import subprocess
import threading
import time

import pytest

from conftest import run_artfs
from servers import SeaweedFS

FETCH_LINE = re.compile(r"fetch (\S+) bytes (\d+)-(\d+) \((\d+) pieces\)")


# -- what is mounted and who serves it ----------------------------------------------------


def _unescape_mountinfo(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts_under(root: str) -> list[str]:
    """Mount points at or below `root` (deepest first), from /proc/self/mountinfo."""
    root = os.path.abspath(root)
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = _unescape_mountinfo(line.split()[4])
            if mp == root or mp.startswith(root + "/"):
                found.append(mp)
    return sorted(set(found), key=len, reverse=True)


def is_mounted(mp: str) -> bool:
    return os.path.abspath(mp) in mounts_under(mp)


def fs_type(mp: str) -> str | None:
    mp = os.path.abspath(mp)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if _unescape_mountinfo(fields[4]) == mp:
                return fields[fields.index("-") + 1]
    return None


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def daemon_pids(under: str) -> list[int]:
    """Pids of artfs mount daemons (`… mount MP --foreground …`) whose mount point is `under`
    or below it. Never this process."""
    under = os.path.abspath(under)
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        args = _cmdline(int(name))
        if "mount" not in args or "--foreground" not in args:
            continue
        i = args.index("mount")
        if i + 1 < len(args) and (args[i + 1] == under or args[i + 1].startswith(under + "/")):
            out.append(int(name))
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _fusermount(mp: str, lazy: bool) -> bool:
    cmd = ["fusermount3", "-u", *(["-z"] if lazy else []), mp]
    try:
        subprocess.run(cmd, capture_output=True, timeout=15)
    except subprocess.TimeoutExpired:
        pass
    return not is_mounted(mp)


def cleanup(root: str) -> list[str]:
    """Unmounts everything under `root` and stops the artfs daemons serving it.
    Returns what was still there afterwards (empty when all is clean)."""
    for mp in mounts_under(root):
        if not _fusermount(mp, lazy=False):
            _fusermount(mp, lazy=True)
    pids = daemon_pids(root)
    deadline = time.monotonic() + 5  # unmounted daemons exit by themselves
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for sig, wait in ((signal.SIGTERM, 3), (signal.SIGKILL, 5)):
        left = [p for p in pids if _alive(p)]
        if not left:
            break
        for p in left:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while any(_alive(p) for p in left) and time.monotonic() < deadline:
            time.sleep(0.05)
    for mp in mounts_under(root):  # a daemon killed above leaves its mount stale
        _fusermount(mp, lazy=True)
    return [f"mount {mp}" for mp in mounts_under(root)] + [f"daemon {p}" for p in daemon_pids(root) if _alive(p)]


# -- one mount --------------------------------------------------------------------------------


class Mount:
    def __init__(self, mp: str, store: str, cache: str, log_path: str):
        self.mp, self.store, self.cache, self.log_path = mp, store, cache, log_path
        self.result = None  # the CLIResult of `artfs mount`

    def path(self, *parts: str) -> str:
        return os.path.join(self.mp, *parts)

    def mounted(self) -> bool:
        return is_mounted(self.mp)

    def pids(self) -> list[int]:
        return [p for p in daemon_pids(self.mp) if _alive(p)]

    @property
    def pid(self) -> int:
        pids = self.pids()
        assert len(pids) == 1, f"expected one daemon for {self.mp}, found {pids}"
        return pids[0]

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def fetches(self) -> list[tuple[str, int, int]]:
        """(object key, start, end) of every ranged GET the daemon made (needs debug=True)."""
        return [(m.group(1), int(m.group(2)), int(m.group(3))) for m in FETCH_LINE.finditer(self.log())]

    def umount(self, timeout: float = 10) -> None:
        """`artfs umount`, then waits for the daemon to exit."""
        pids = self.pids()
        run_artfs(["umount", self.mp]).ok()
        wait_for(lambda: not any(_alive(p) for p in pids), timeout, f"daemon of {self.mp} to exit")


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    """Polls `predicate` until it returns something truthy; fails naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def errno_of(fn, *args) -> int | None:
    """The errno `fn(*args)` fails with, or None if it succeeds."""
    try:
        fn(*args)
    except OSError as e:
        return e.errno
    return None


class Mounter:
    def __init__(self, tmp_path):
        self.tmp_path = str(tmp_path)
        self.mounts: list[Mount] = []

    def new_dir(self, stem: str) -> str:
        for n in range(1000):
            path = os.path.join(self.tmp_path, f"{stem}{n or ''}")
            if not os.path.exists(path):
                os.makedirs(path)
                return path
        raise RuntimeError("too many folders")

    def __call__(
        self,
        store: str,
        *flags: str,
        cache: str | None = None,
        env: dict | None = None,
        debug: bool = True,
        mp: str | None = None,
    ) -> Mount:
        mp = mp or self.new_dir("mnt")
        cache = cache or self.new_dir("cache")
        log_path = os.path.join(self.tmp_path, f"{os.path.basename(mp)}.log")
        m = Mount(mp, store, cache, log_path)
        self.mounts.append(m)
        args = ["--debug"] if debug else []
        args += ["mount", mp, "--log-file", log_path, *flags]
        m.result = run_artfs(args, store=store, cache=cache, env=env, timeout=90).ok()
        assert m.mounted(), f"`artfs mount` returned but {mp} is not mounted\n{m.log()}"
        return m

    def teardown(self) -> list[str]:
        """Cleans up; returns what is wrong: anything left behind, and any handler that
        failed unexpectedly (a traceback in a daemon log)."""
        problems = []
        for m in self.mounts:
            text = m.log()
            if text:
                print(f"--- daemon log {m.log_path} ---\n{text[-6000:]}")
            if "Traceback" in text:
                problems.append(f"a traceback in {m.log_path}")
        return cleanup(self.tmp_path) + problems


# Mounters not torn down yet. If pytest dies without running teardowns (killed by SIGTERM
# or SIGHUP, or a crash such as a broken pipe), atexit and the signal handler still clean up.
_active: set = set()


def _cleanup_active() -> None:
    for m in list(_active):
        _active.discard(m)
        cleanup(m.tmp_path)


def _teardown_on_signal(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")  # pytest then runs the fixtures' teardowns


atexit.register(_cleanup_active)


def _install_signal_handlers() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) == signal.SIG_DFL:
            signal.signal(sig, _teardown_on_signal)


@contextlib.contextmanager
def mounting(root):
    """A Mounter for `root` that cleans up on exit (also used by module-scoped fixtures)."""
    _install_signal_handlers()
    m = Mounter(root)
    _active.add(m)
    try:
        yield m
    finally:
        _active.discard(m)
        left = m.teardown()
        assert not left, f"after cleanup: {left}"


@pytest.fixture
def mounter(tmp_path):
    """mounter(store, *flags, cache=None, env=None, debug=True) -> Mount; see module doc."""
    with mounting(tmp_path) as m:
        yield m


# -- sample data ------------------------------------------------------------------------------

MiB = 1 << 20


__all__ = [
    "mounter",
    "mounting",
    "Mount",
    "Mounter",
    "RestartableSeaweedFS",
    "cleanup",
    "mounts_under",
    "is_mounted",
    "fs_type",
    "daemon_pids",
    "wait_for",
    "errno_of",
    "MiB",
]


# -- a SeaweedFS this test can stop and start again ---------------------------------------


class RestartableSeaweedFS(SeaweedFS):
    """A private `weed server` that can be killed (data kept) and restarted on the same
    ports and folder, to play a store outage. stop() still removes everything."""

    def start(self, timeout: float = 60.0) -> "RestartableSeaweedFS":
        super().start(timeout)
        # Same ports and folder; a short raft election, else the lone master waits ~15 s
        # for a leader when it finds its previous state.
        self._cmd = [*self.proc.args, "-master.electionTimeout=1s"]
        return self

    def kill(self) -> None:
        """The server dies; its data folder stays."""
        self._kill()

    def restart(self, timeout: float = 60.0) -> None:
        assert self.proc is None, "kill() it first"
        env = {**os.environ, "WEED_MASTER_VOLUME_GROWTH_COPY_1": "1"}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self._cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.dir,
                env=env,
            )
        try:
            self._wait_ready(timeout)
        except Exception:
            raise RuntimeError(f"SeaweedFS did not come back\n--- weed log ---\n{self.log_tail()}") from None


@pytest.fixture
def weed():
    """A SeaweedFS of the test's own, which the test may stop (SIGSTOP) and restart."""
    server = RestartableSeaweedFS().start()
    try:
        yield server
    finally:
        server.stop()
