"""Shared fixtures: a SeaweedFS S3 server on loopback, fresh stores on both
backends, and a runner for the real `artfs` command.

Reusable pieces (other test files may rely on these names):
  s3_endpoint     session: "http://127.0.0.1:PORT" of a running SeaweedFS S3 gateway;
                  AWS_* variables point boto3 (and subprocesses) at it for the session
  new_bucket      function: new_bucket() -> a fresh, empty bucket name
  store_url       parametrized ["local", "s3"]: a fresh, empty store URL (a tmp path, or
                  s3://BUCKET/PREFIX with a prefix no other test uses)
  local_store_url a fresh local store path, for tests that only need one backend
  cache_dir       a fresh cache folder
  store           artfs.Store(store_url, cache_dir)
  artfs           an ArtfsCLI bound to store_url and cache_dir: artfs("put", ...) -> CLIResult
  run_artfs(args, store=, cache=, cwd=, env=) -> CLIResult   (plain function)
  CLIResult.ok() / .fails(*texts)   success, or one clean error line containing texts
  make_bucket(endpoint), s3_test_bucket (session), fresh_s3_url(bucket)
  counted         (Store, CountingStore): every object-store request recorded
  write_tree(root, {path: data}), read_tree(root) -> {path: bytes}
  wait_all(procs, timeout=120) -> [(stdout, stderr)]   kills any still running

Set ARTFS_TEST_S3_ENDPOINT to use an already running S3-compatible server
instead of starting SeaweedFS.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from servers import SeaweedFS  # noqa: E402

ARTFS_BIN = os.path.join(os.path.dirname(sys.executable), "artfs")


# -- the artfs command line ---------------------------------------------------------


@dataclass
class CLIResult:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return (
            f"artfs {' '.join(self.args)} -> exit {self.returncode}\n"
            f"--- stdout ---\n{self.stdout}--- stderr ---\n{self.stderr}"
        )

    @property
    def out(self) -> str:
        return self.stdout.strip()

    def ok(self) -> "CLIResult":
        """Asserts success (and no traceback); returns self for chaining."""
        assert self.returncode == 0, str(self)
        assert "Traceback" not in self.stderr, str(self)
        return self

    def fails(self, *expected: str) -> str:
        """Asserts a clean failure: non-zero exit, one line on stderr, no traceback,
        and each of `expected` (case-insensitive) in that line. Returns the line."""
        assert self.returncode != 0, str(self)
        assert "Traceback" not in self.stderr and "Traceback" not in self.stdout, str(self)
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, f"expected one error line\n{self}"
        for text in expected:
            assert text.lower() in lines[0].lower(), f"{text!r} not in error line\n{self}"
        return lines[0]


def run_artfs(
    args,
    *,
    store: str | None = None,
    cache: str | None = None,
    cwd: str | None = None,
    env: dict | None = None,
    timeout: float = 120,
) -> CLIResult:
    """Runs the installed `artfs` as a user would, with ARTFS_STORE / ARTFS_CACHE set."""
    args = [str(a) for a in args]
    full_env = dict(os.environ)
    for k in ("ARTFS_STORE", "ARTFS_CACHE"):
        full_env.pop(k, None)
    if store is not None:
        full_env["ARTFS_STORE"] = str(store)
    if cache is not None:
        full_env["ARTFS_CACHE"] = str(cache)
    full_env.update(env or {})
    p = subprocess.run(
        [ARTFS_BIN, *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return CLIResult(args, p.returncode, p.stdout, p.stderr)


class ArtfsCLI:
    """`artfs(...)` bound to one store and cache."""

    def __init__(self, store: str, cache: str, cwd: str | None = None):
        self.store, self.cache, self.cwd = store, cache, cwd

    def __call__(self, *args, **kwargs) -> CLIResult:
        kwargs.setdefault("store", self.store)
        kwargs.setdefault("cache", self.cache)
        kwargs.setdefault("cwd", self.cwd)
        return run_artfs(args, **kwargs)


# -- S3 (SeaweedFS) ------------------------------------------------------------------

_S3_ENV = {
    "AWS_ACCESS_KEY_ID": "artfs-test",
    "AWS_SECRET_ACCESS_KEY": "artfs-test",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",  # never ask for instance credentials
}


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """The S3 endpoint URL of a SeaweedFS started for this session (or ARTFS_TEST_S3_ENDPOINT)."""
    server = None
    endpoint = os.environ.get("ARTFS_TEST_S3_ENDPOINT")
    if not endpoint:
        server = SeaweedFS().start()
        endpoint = server.endpoint
    home = tmp_path_factory.mktemp("aws")
    env = {
        **_S3_ENV,
        "AWS_ENDPOINT_URL": endpoint,
        # The user's own ~/.aws must not leak in (profiles, other endpoints).
        "AWS_CONFIG_FILE": str(home / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "credentials"),
    }
    saved = {k: os.environ.get(k) for k in [*env, "AWS_PROFILE"]}
    os.environ.pop("AWS_PROFILE", None)
    os.environ.update(env)
    try:
        yield endpoint
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if server is not None:
            server.stop()


def s3_client(endpoint: str):
    import boto3
    import botocore.config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=_S3_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=_S3_ENV["AWS_SECRET_ACCESS_KEY"],
        config=botocore.config.Config(s3={"addressing_style": "path"}),
    )


_bucket_numbers = itertools.count()


def make_bucket(endpoint: str) -> str:
    """Creates a fresh, empty bucket and returns its name."""
    name = f"artfs-{os.getpid()}-{next(_bucket_numbers)}-{secrets.token_hex(3)}"
    s3_client(endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture
def new_bucket(s3_endpoint):
    """new_bucket() -> the name of a fresh bucket on the session's S3 server."""
    return lambda: make_bucket(s3_endpoint)


# -- stores on both backends ------------------------------------------------------


@pytest.fixture(scope="session")
def s3_test_bucket(s3_endpoint):
    """One bucket for the session; each S3 store gets a fresh prefix in it. (In SeaweedFS
    every bucket allocates a volume on its first write, ~0.2 s; a prefix costs nothing.)"""
    return make_bucket(s3_endpoint)


def fresh_s3_url(bucket: str) -> str:
    return f"s3://{bucket}/t{next(_bucket_numbers)}-{secrets.token_hex(3)}/reg"


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def store_url(request, tmp_path):
    """A fresh, empty store URL: a local folder, or s3://BUCKET/fresh-prefix on SeaweedFS."""
    if request.param == "local":
        return str(tmp_path / "store")
    return fresh_s3_url(request.getfixturevalue("s3_test_bucket"))


@pytest.fixture
def local_store_url(tmp_path):
    return str(tmp_path / "store")


@pytest.fixture
def cache_dir(tmp_path):
    path = tmp_path / "cache"
    path.mkdir()
    return str(path)


@pytest.fixture
def store(store_url, cache_dir):
    from artfs import Store

    return Store(store_url, cache_dir)


@pytest.fixture
def artfs(store_url, cache_dir, tmp_path):
    """Runs `artfs ARGS…` against this test's store; cwd is the test's tmp_path."""
    return ArtfsCLI(store_url, cache_dir, cwd=str(tmp_path))


# -- instrumentation ----------------------------------------------------------------


class CountingStore:
    """Wraps a real ObjectStore (local or S3) and records every request it forwards:
    `writes` as (key, bytes), `reads` as (key, bytes returned). Instrumentation, not a mock:
    everything still goes to the real store."""

    def __init__(self, inner):
        self.inner = inner
        self.url = inner.url
        self.writes: list[tuple[str, int]] = []
        self.reads: list[tuple[str, int]] = []
        self.other: list[tuple[str, str]] = []  # (operation, key or prefix)
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self.writes, self.reads, self.other = [], [], []

    def _note(self, where, item):
        with self._lock:
            where.append(item)

    def written(self, prefix: str = "") -> list[tuple[str, int]]:
        return [(k, n) for k, n in self.writes if k.startswith(prefix)]

    def read_from(self, prefix: str = "") -> list[tuple[str, int]]:
        return [(k, n) for k, n in self.reads if k.startswith(prefix)]

    def get(self, key, start=0, end=None):
        data = self.inner.get(key, start, end)
        self._note(self.reads, (key, len(data)))
        return data

    def get_parts(self, key, start, lengths):
        n = 0
        try:
            for part in self.inner.get_parts(key, start, lengths):
                n += len(part)
                yield part
        finally:
            self._note(self.reads, (key, n))

    def get_with_etag(self, key):
        data, etag = self.inner.get_with_etag(key)
        self._note(self.reads, (key, len(data)))
        return data, etag

    def put(self, key, data, *, if_none_match=False, if_match=None):
        etag = self.inner.put(key, data, if_none_match=if_none_match, if_match=if_match)
        self._note(self.writes, (key, len(data)))
        return etag

    def put_stream(self, key, stream):
        counted = _CountingReader(stream)
        self.inner.put_stream(key, counted)
        self._note(self.writes, (key, counted.n))

    def head(self, key):
        self._note(self.other, ("head", key))
        return self.inner.head(key)

    def exists(self, key):
        return self.head(key) is not None

    def list(self, prefix):
        self._note(self.other, ("list", prefix))
        return self.inner.list(prefix)

    def list_prefixes(self, prefix):
        self._note(self.other, ("list_prefixes", prefix))
        return self.inner.list_prefixes(prefix)

    def delete(self, key, *, if_match=None):
        self._note(self.other, ("delete", key))
        return self.inner.delete(key, if_match=if_match)


class _CountingReader:
    def __init__(self, f):
        self.f, self.n = f, 0

    def read(self, n=-1):
        buf = self.f.read(n)
        self.n += len(buf)
        return buf


@pytest.fixture
def counted(store_url, cache_dir):
    """(Store, CountingStore): a Store whose every object-store request is recorded."""
    from artfs import Store
    from artfs.store.location import open_store

    counter = CountingStore(open_store(store_url))
    return Store(store_url, cache_dir, objects=counter), counter


# -- files on disk ------------------------------------------------------------------


def wait_all(procs, timeout: float = 120) -> list[tuple[str, str]]:
    """(stdout, stderr) of processes started together; any still running at the end is killed."""
    try:
        return [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def write_tree(root, files: dict) -> str:
    """Writes {relative path: bytes or str} under root; returns root as str."""
    root = str(root)
    for rel, data in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
    return root


@contextlib.contextmanager
def tmpfs(size: str):
    """A fresh tmpfs of `size` (as mount(8) takes it: "20m"), a small disk to fill; unmounted
    and removed on exit, pass or fail. Skips the test unless run as root."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path = tempfile.mkdtemp(prefix="artfs-small-disk-")
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path], check=True)
    try:
        yield path
    finally:
        if subprocess.run(["umount", path], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", path], capture_output=True)
        shutil.rmtree(path, ignore_errors=True)


def read_tree(root) -> dict:
    """{relative path: bytes} of every file under root."""
    out = {}
    for dirpath, _dirs, files in os.walk(str(root)):
        for fn in files:
            full = os.path.join(dirpath, fn)
            with open(full, "rb") as f:
                out[os.path.relpath(full, str(root)).replace(os.sep, "/")] = f.read()
    return out


def new_draft_store(tmp_path, monkeypatch):
    """A DraftStore holding one empty draft p/a/drafts/d (no FUSE), as after a boot
    "boot-1"; returns (store, artifact name)."""
    from artfs.drafts.store import DraftStore
    from artfs.names import ArtifactName

    monkeypatch.setenv("ARTFS_TEST_BOOT_ID", "boot-1")
    store = DraftStore(str(tmp_path / "cache"))
    a = ArtifactName("p", "a")
    store.create(a, "d", None, None, "dataset")
    return store, a
