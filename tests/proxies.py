"""Loopback TCP proxies in front of a real server, for what a network does to it: one that
breaks chosen responses off mid-way (a flaky network, for the retry policy), one that counts
the requests (tests/hosts.py, the bucket's load)."""

from __future__ import annotations

import contextlib
import socket
import threading
from urllib.parse import urlparse


class LoopbackProxy:
    """Listens on a loopback port and hands each connection to `_serve` in a thread of its own."""

    def __init__(self, target: tuple[str, int], backlog: int = 128):
        self.target = target
        self._server = socket.create_server(("127.0.0.1", 0), backlog=backlog)
        self.port = self._server.getsockname()[1]
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._stop = True
        self._server.close()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        raise NotImplementedError


class CuttingProxy(LoopbackProxy):
    """Forwards to `target`; the first `cuts` responses longer than `after` bytes are cut
    after `after` bytes (the connection is closed)."""

    def __init__(self, target: tuple[str, int], after: int, cuts: int = 1):
        self.after, self.cuts_left = after, cuts
        self.cut = 0
        self._lock = threading.Lock()
        super().__init__(target)

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(self.target)
        threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
        self._pipe(upstream, client, True)

    def _pipe(self, src: socket.socket, dst: socket.socket, response: bool) -> None:
        sent = 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if response and sent + len(data) > self.after:
                    with self._lock:
                        cutting = self.cuts_left > 0
                        if cutting:
                            self.cuts_left -= 1
                            self.cut += 1
                    if cutting:
                        dst.sendall(data[: max(0, self.after - sent)])
                        break
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()


@contextlib.contextmanager
def stores_behind_proxies(s3_endpoint: str, monkeypatch, data: bytes, proxy_class: type = CuttingProxy):
    """make(**proxy options) -> (S3Store, proxy): a store on one fresh bucket holding `data` as
    "blob", reached through a fresh `proxy_class` in front of `s3_endpoint` (with short retry
    waits); every proxy is closed on exit."""
    from artfs.store.backends.s3 import S3Store
    from conftest import make_bucket

    bucket = make_bucket(s3_endpoint)
    S3Store(bucket, "p").put("blob", data)
    u = urlparse(s3_endpoint)
    proxies: list = []

    def make(**options):
        proxy = proxy_class((u.hostname, u.port), **options)
        proxies.append(proxy)
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        monkeypatch.setenv("ARTFS_RETRY_WAIT", "0.01")
        return S3Store(bucket, "p"), proxy

    try:
        yield make
    finally:
        for p in proxies:
            p.close()
