"""`artfs ui`: serve the read-only web page of the store on this host."""

from __future__ import annotations

import ipaddress
import socket
import sys

import click

from artfs.cli.format import note
from artfs.errors import InvalidInput


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so a busy port is one clear line (and --port 0 works)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise InvalidInput(f"cannot serve on {host}: {e.strerror}") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise InvalidInput(f"cannot serve on {host}:{port}: {e.strerror}") from None
    sock.listen(128)
    return sock


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def register(cli: click.Group) -> None:
    @cli.command()
    @click.option(
        "--host",
        default="127.0.0.1",
        show_default=True,
        help="Address to listen on (anything but loopback shows the store to the network).",
    )
    @click.option(
        "--port",
        "-p",
        default=8765,
        show_default=True,
        type=click.IntRange(0, 65535),
        help="Port (0: any free one; the address is printed).",
    )
    @click.pass_obj
    def ui(ctx, host, port):
        """A read-only web page of the store: versions, files, diffs and lineage graphs."""
        import uvicorn

        from artfs.web.app import LOOPBACK_NAMES, create_app

        store = ctx.store
        app = create_app(store, LOOPBACK_NAMES if _is_loopback(host) else None)
        sock = _listen(host, port)
        bound = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{bound}/"
        if not _is_loopback(host):
            click.echo(
                f"artfs ui: listening on {host}: anyone who can reach it can read this store's "
                "names, metadata and file lists",
                err=True,
            )
        note(f"artfs ui: {store.url} at {url} (read-only; Ctrl-C stops it)")
        click.echo(url)
        sys.stdout.flush()
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
        try:
            server.run(sockets=[sock])
        finally:
            sock.close()
