"""nginx on a loopback port serving a folder, for http:// references.

nginx serves static files with a strong ETag (mtime-size), Content-Length,
Range (206) and If-Match / If-Range out of the box. `/private/` answers 401
(basic auth with a user nobody knows), for the credentials tests.

The server runs in its own process group (master and workers), started and
stopped by the fixture; teardown kills that group and nothing else.

    from http_server import nginx_server     # the fixture: session scope
    def test_x(nginx_server):
        path = nginx_server.put("a/b.bin", b"...")    # a file under the served root
        url = nginx_server.url("a/b.bin")
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from servers import free_ports

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

_CONF = """\
daemon off;
user root;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    default_type application/octet-stream;
    keepalive_timeout 30;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{ }}
        location /private/ {{
            auth_basic "artfs tests";
            auth_basic_user_file {dir}/htpasswd;
        }}
    }}
}}
"""


class Nginx:
    def __init__(self):
        self.dir: str | None = None
        self.root: str | None = None
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, rel: str) -> str:
        return f"{self.base}/{rel}"

    def put(self, rel: str, data: bytes, mtime: float | None = None) -> str:
        path = os.path.join(self.root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        if mtime is not None:
            os.utime(path, (mtime, mtime))
        return path

    def start(self, timeout: float = 15.0) -> "Nginx":
        self.dir = tempfile.mkdtemp(prefix="artfs-nginx-")
        self.root = os.path.join(self.dir, "www")
        os.makedirs(os.path.join(self.dir, "tmp"))
        os.makedirs(self.root)
        with open(os.path.join(self.dir, "htpasswd"), "w") as f:
            f.write("someone:{PLAIN}not-you\n")
        last = None
        for _attempt in range(3):  # a port taken between choosing and binding: try another
            self.port = free_ports(1)[0]
            conf = os.path.join(self.dir, "nginx.conf")
            with open(conf, "w") as f:
                f.write(_CONF.format(dir=self.dir, port=self.port, root=self.root))
            with open(os.path.join(self.dir, "stderr.log"), "ab") as err:
                self.proc = subprocess.Popen(
                    [NGINX, "-p", self.dir, "-c", conf, "-e", os.path.join(self.dir, "error.log")],
                    stdout=err,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            try:
                self._wait_ready(timeout)
                return self
            except RuntimeError as e:
                last = e
                self._kill()
        log = self.log_tail()
        self.stop()
        raise RuntimeError(f"nginx did not start: {last}\n{log}")

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited with code {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"nginx not listening on {self.port} after {timeout:.0f}s") from None
                time.sleep(0.05)

    def log_tail(self, n: int = 30) -> str:
        out = []
        for name in ("stderr.log", "error.log"):
            try:
                with open(os.path.join(self.dir, name), errors="replace") as f:
                    out += f.read().splitlines()[-n:]
            except (OSError, TypeError):
                pass
        return "\n".join(out)

    def _kill(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)  # the group we created: this nginx's master and workers
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def stop(self) -> None:
        self._kill()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> "Nginx":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@pytest.fixture(scope="session")
def nginx_server():
    """An nginx serving a fresh folder on loopback for the whole session."""
    server = Nginx().start()
    saved = {k: os.environ.get(k) for k in ("NO_PROXY", "no_proxy")}
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"  # loopback never goes via a proxy
    try:
        yield server
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()
