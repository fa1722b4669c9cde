"""Many hosts on one bucket (issue 17): H mount daemons, each with its own cache and mount
point, all on one store, each committing through its mount and reading the others' versions.
Used by tests/system/test_many_hosts.py (8 hosts) and scripts/bench/scale_bench.py (8/32/64).

    run_hosts(store, root, hosts=8, commits=2, refresh=1.0, env=None, deadline=300) -> HostsReport

Every loop is bounded in count and in time (`deadline` seconds for the whole run); every
mount is torn down (mounts.cleanup) whatever happens. A counting proxy (`RequestCounter`)
can sit between the daemons and the S3 server to see what the bucket is asked.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from conftest import run_artfs, write_tree
from mounts import cleanup, daemon_pids
from proxies import LoopbackProxy

ARTIFACT = "p/shared"


@dataclass
class HostsReport:
    hosts: int
    commits: list[tuple[int, int, float]] = field(default_factory=list)  # host, version, time the commit returned
    made: dict[int, tuple[int, int]] = field(default_factory=dict)  # version -> (host, its commit number)
    versions: list[int] = field(default_factory=list)  # from `artfs ls` at the end
    # Seconds from a commit becoming visible on its host A (A's own watcher saw it) to host B
    # seeing it, for every B != A; `since_record` counts from the record's creation instead
    # (set before the record is written, so it includes losing races for the number).
    freshness: list[float] = field(default_factory=list)
    since_record: list[float] = field(default_factory=list)
    unseen: int = 0  # (host, version) pairs never seen before the deadline
    reads: int = 0
    errors: list[str] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)  # each daemon's VmRSS at the end
    seconds: float = 0.0
    mount_seconds: float = 0.0
    commit_window: tuple[float, float] = (0.0, 0.0)  # time.monotonic() around the commits
    poll_window: tuple[float, float] = (0.0, 0.0)  # … around the steady polling (poll_seconds)

    @property
    def dense(self) -> bool:
        made = sorted(v for _, v, _ in self.commits)
        return (
            self.versions == list(range(len(self.versions)))
            and len(set(made)) == len(made)
            and set(made) <= set(self.versions)
        )

    def summary(self) -> str:
        f = sorted(self.freshness) or [float("nan")]
        g = sorted(self.since_record) or [float("nan")]
        return (
            f"{self.hosts} hosts: {len(self.commits)} commits, versions v0..v{max(self.versions, default=-1)} "
            f"dense={self.dense}, {self.reads} reads, {len(self.errors)} errors, "
            f"freshness p50 {f[len(f) // 2]:.2f} s max {f[-1]:.2f} s (from the record: max {g[-1]:.2f} s), "
            f"{self.unseen} unseen, "
            f"daemons {sum(self.rss_kib) / 1024:.0f} MiB total"
        )


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _content(host: int, k: int) -> bytes:
    return f"host {host} commit {k}\n".encode() * 20


def run_hosts(
    store: str,
    root: str,
    hosts: int = 8,
    commits: int = 2,
    refresh: float = 1.0,
    env: dict | None = None,
    deadline: float = 300.0,
    read_sample: int = 0,
    mount_jobs: int = 4,
    poll_seconds: float = 0.0,
) -> HostsReport:
    """See the module doc. `read_sample`: versions each host reads (0: all of them).
    `poll_seconds`: at the end, every host looks at the artifact (lists it, reads
    latest's README) every 0.5 s for this long: a job using it, for counting requests."""
    report = HostsReport(hosts)
    start = time.monotonic()
    end = start + deadline
    caches = [os.path.join(root, f"cache{i}") for i in range(hosts)]
    mps = [os.path.join(root, f"mnt{i}") for i in range(hosts)]
    for path in caches + mps:
        os.makedirs(path, exist_ok=True)
    seed = write_tree(os.path.join(root, "seed"), {"README": "shared\n"})
    run_artfs(
        ["put", seed, "--name", ARTIFACT, "--type", "dataset"],
        store=store,
        cache=os.path.join(root, "cli-cache"),
        env=env,
    ).ok()
    try:

        def mount(i: int) -> None:
            r = run_artfs(
                ["mount", mps[i], "--refresh", str(refresh), "--log-file", os.path.join(root, f"mnt{i}.log")],
                store=store,
                cache=caches[i],
                env=env,
                timeout=max(30.0, end - time.monotonic()),
            )
            if r.returncode != 0:
                report.errors.append(f"mount {i}: {r.stderr.strip()[-300:]}")

        with ThreadPoolExecutor(mount_jobs) as pool:
            list(pool.map(mount, range(hosts)))
        report.mount_seconds = time.monotonic() - start
        if report.errors:
            return report

        total = hosts * commits
        seen: list[dict[int, float]] = [{} for _ in range(hosts)]
        done = threading.Event()

        interval = 0.2 if hosts <= 8 else 0.5  # many watchers would load the machine themselves

        def watch(i: int) -> None:  # what host i sees of the artifact, every `interval` s
            folder = os.path.join(mps[i], *ARTIFACT.split("/"))
            while not done.is_set() and time.monotonic() < end:
                try:
                    names = os.listdir(folder)
                except OSError as e:
                    report.errors.append(f"host {i}: ls {folder}: {e}")
                    names = []
                now = time.time()
                for name in names:
                    m = re.fullmatch(r"v(\d+)", name)
                    if m:
                        seen[i].setdefault(int(m.group(1)), now)
                if len(seen[i]) >= total + 1:
                    return
                time.sleep(interval)

        def commit(i: int) -> None:  # host i commits `commits` versions through its mount
            for k in range(commits):
                if time.monotonic() > end:
                    report.errors.append(f"host {i}: out of time before commit {k}")
                    return
                draft = os.path.join(mps[i], *ARTIFACT.split("/"), "drafts", f"h{i}c{k}")
                try:
                    os.mkdir(draft)
                    os.makedirs(os.path.join(draft, f"h{i}"), exist_ok=True)
                    with open(os.path.join(draft, f"h{i}", f"c{k}.txt"), "wb") as fh:
                        fh.write(_content(i, k))
                except OSError as e:
                    report.errors.append(f"host {i}: draft {draft}: {e}")
                    continue
                r = run_artfs(
                    ["commit", draft], store=store, cache=caches[i], env=env, timeout=max(10.0, end - time.monotonic())
                )
                m = re.fullmatch(rf"{ARTIFACT}:v(\d+)", r.stdout.strip())
                if r.returncode != 0 or not m:
                    report.errors.append(f"host {i}: commit {k}: {r.stderr.strip()[-300:]}")
                    continue
                report.commits.append((i, int(m.group(1)), time.monotonic()))
                report.made[int(m.group(1))] = (i, k)

        watchers = [threading.Thread(target=watch, args=(i,), daemon=True) for i in range(hosts)]
        for t in watchers:
            t.start()
        t0 = time.monotonic()
        with ThreadPoolExecutor(hosts) as pool:
            list(pool.map(commit, range(hosts)))
        report.commit_window = (t0, time.monotonic())
        for t in watchers:
            t.join(max(0.0, end - time.monotonic()))
        done.set()

        # Freshness counts from the version record's creation time (set just before it is
        # written), not from `artfs commit` returning: stricter, and the same clock (one machine).
        from artfs.names import ArtifactName
        from artfs.store.location import open_store
        from artfs.store.registry import Registry

        project, name = ARTIFACT.split("/")
        created = {r.number: r.created for r in Registry(open_store(store)).versions(ArtifactName(project, name))}
        by_version = {v: (i, created.get(v, t)) for i, v, t in report.commits}
        for v, (author, t_record) in sorted(by_version.items()):
            t_visible = seen[author].get(v, t_record)
            for j in range(hosts):
                if j == author:
                    continue
                if v in seen[j]:
                    report.freshness.append(max(0.0, seen[j][v] - t_visible))
                    report.since_record.append(max(0.0, seen[j][v] - t_record))
                else:
                    report.unseen += 1

        # Every host reads the committed file of every version (or of a sample of them).
        def read(j: int) -> None:
            versions = sorted(by_version.items())
            if read_sample:
                versions = [versions[(j * 7 + n * 13) % len(versions)] for n in range(min(read_sample, len(versions)))]
            for v, (author, _) in versions:
                if time.monotonic() > end:
                    report.errors.append(f"host {j}: out of time reading")
                    return
                k = report.made[v][1]
                path = os.path.join(mps[j], *ARTIFACT.split("/"), f"v{v}", f"h{author}", f"c{k}.txt")
                try:
                    with open(path, "rb") as fh:
                        data = fh.read()
                except OSError as e:
                    report.errors.append(f"host {j}: read {path}: {e}")
                    continue
                report.reads += 1
                if data != _content(author, k):
                    report.errors.append(f"host {j}: {path}: wrong content")

        if by_version:
            with ThreadPoolExecutor(min(hosts, 16)) as pool:
                list(pool.map(read, range(hosts)))

        if poll_seconds:

            def poll(i: int, stop: float) -> None:
                folder = os.path.join(mps[i], *ARTIFACT.split("/"))
                while time.monotonic() < stop:
                    try:
                        os.listdir(folder)
                        with open(os.path.join(folder, "latest", "README"), "rb") as fh:
                            fh.read()
                    except OSError as e:
                        report.errors.append(f"host {i}: polling: {e}")
                        return
                    time.sleep(0.5)

            t0 = time.monotonic()
            stop = min(end, t0 + poll_seconds)
            with ThreadPoolExecutor(hosts) as pool:
                list(pool.map(lambda i: poll(i, stop), range(hosts)))
            report.poll_window = (t0, time.monotonic())

        for i in range(hosts):
            pids = daemon_pids(mps[i])
            if len(pids) != 1:
                report.errors.append(f"host {i}: {len(pids)} daemons")
            report.rss_kib += [_rss_kib(p) for p in pids]
            try:
                with open(os.path.join(root, f"mnt{i}.log"), errors="replace") as fh:
                    if "Traceback" in fh.read():
                        report.errors.append(f"host {i}: a traceback in its log")
            except OSError:
                pass
        r = run_artfs(["ls", ARTIFACT], store=store, cache=os.path.join(root, "cli-cache"), env=env)
        report.versions = [int(line.split("\t")[0][1:]) for line in r.stdout.splitlines() if line.startswith("v")]
    finally:
        left = cleanup(root)
        if left:
            report.errors.append(f"left after cleanup: {left}")
        report.seconds = time.monotonic() - start
    return report


# -- what the bucket is asked ---------------------------------------------------------------


class RequestCounter(LoopbackProxy):
    """A loopback HTTP proxy in front of an S3 server that counts requests by kind
    (GET, HEAD, PUT, DELETE, LIST, POST) and by key area (artifacts/…/versions, dedupe, …),
    with the time of each. It parses requests (Content-Length bodies; chunked bodies are
    passed through and counted once)."""

    def __init__(self, target: str):
        host, port = target.removeprefix("http://").split(":")
        self.times: list[tuple[float, str, str]] = []  # (monotonic time, kind, area)
        self._lock = threading.Lock()
        super().__init__((host, int(port)), backlog=512)

    def between(self, t0: float, t1: float) -> Counter:
        with self._lock:
            return Counter((k, a) for t, k, a in self.times if t0 <= t < t1)

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target)
        except OSError:
            client.close()
            return
        threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = client.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target = lines[0].split(" ")[:2]
                headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
                self._note(method, target)
                upstream.sendall(head + b"\r\n\r\n")
                n = int(headers.get("content-length", "0") or 0)
                while n > 0:
                    if not buf:
                        buf = client.recv(min(n, 1 << 20))
                        if not buf:
                            return
                    chunk, buf = buf[:n], buf[n:]
                    upstream.sendall(chunk)
                    n -= len(chunk)
        except (OSError, ValueError):
            pass
        finally:
            client.close()
            upstream.close()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def _note(self, method: str, target: str) -> None:
        path, _, query = target.partition("?")
        kind = "LIST" if method == "GET" and ("list-type" in query or path.count("/") <= 1) else method
        parts = path.lstrip("/").split("/")
        if kind == "LIST":
            m = re.search(r"prefix=([^&]*)", query)
            parts = [parts[0], *(m.group(1).replace("%2F", "/").split("/") if m else [])]
        area = _area(parts[1:])
        with self._lock:
            self.times.append((time.monotonic(), kind, area))


def _area(key: list[str]) -> str:
    """artifacts/p/a/versions → 'versions', …/aliases.json → 'aliases', packs/… → 'packs'."""
    key = [k for k in key if k]
    if "artifacts" in key:
        rest = key[key.index("artifacts") + 1 :]
        if len(rest) >= 3:
            return {"versions": "versions", "version-index": "version-index"}.get(
                rest[2], rest[2].removesuffix(".json")
            )
        return "artifacts (listing)"
    for k in key:
        if k in ("packs", "index", "dedupe", "manifests", "objects", "pieces", "locks", "lineage", "holds", "parts"):
            return k
    return key[-1] if key else "bucket"
