"""`artfs stats MOUNT`: the mount daemon's Prometheus metrics, for a person.

The address is the daemon's own `--metrics HOST:PORT`, read from its command
line (/proc), so nothing is written anywhere for it; `--address` names one
directly (another host's daemon, or a mount started by other means).
"""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.request
from collections import defaultdict

import click

from artfs.cli.format import human_size
from artfs.errors import InvalidInput

TIMEOUT = 10.0


def _artfs_mounts() -> set[str]:
    out = set()
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                if right.split(" ", 1)[0] == "fuse.artfs":
                    out.add(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), left.split(" ")[4]))
    except OSError:
        pass
    return out


def daemon_address(mountpoint: str) -> str | None:
    """The --metrics address of the daemon serving `mountpoint`, if it was started with one."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0")]
        except OSError:
            continue
        if "mount" in argv and "--foreground" in argv and "--metrics" in argv[:-1]:
            at = argv.index("mount")
            if at + 1 < len(argv) and os.path.abspath(argv[at + 1]) == mountpoint:
                return argv[argv.index("--metrics") + 1]
    return None


def scrape(address: str) -> str:
    from artfs.fs.metrics import parse_address

    host, port = parse_address(address)
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as r:
            return r.read().decode()
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise InvalidInput(f"no metrics at {url}: {reason}") from None


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> [(labels, value)], parsed by prometheus_client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name].append((s.labels, s.value))
    return out


def summary(text: str) -> list[str]:
    s = samples(text)

    def total(name: str) -> float:
        return sum(v for _, v in s.get(name, []))

    def by_op(name: str) -> dict[str, float]:
        return {labels["op"]: v for labels, v in s.get(name, []) if "op" in labels}

    requests, errors = by_op("artfs_fuse_requests_total"), by_op("artfs_fuse_request_errors_total")
    seconds, counts = (
        by_op("artfs_fuse_request_duration_seconds_sum"),
        by_op("artfs_fuse_request_duration_seconds_count"),
    )
    failed = total("artfs_fuse_request_errors_total")
    lines = [f"FUSE requests   {total('artfs_fuse_requests_total'):.0f} ({failed:.0f} failed)"]
    if requests:
        lines.append(f"  {'operation':<14}{'requests':>10}{'failed':>9}{'mean ms':>10}")
        for op in sorted(requests, key=lambda o: -requests[o]):
            mean = 1000 * seconds.get(op, 0) / counts[op] if counts.get(op) else 0.0
            lines.append(f"  {op:<14}{requests[op]:>10.0f}{errors.get(op, 0):>9.0f}{mean:>10.2f}")
    lines.append(f"Bytes served    {human_size(int(total('artfs_bytes_served_total')))}")
    lines.append(
        f"Store           {total('artfs_store_gets_total'):.0f} GETs, "
        f"{human_size(int(total('artfs_bytes_fetched_total')))} fetched, "
        f"{total('artfs_store_errors_total'):.0f} errors, {total('artfs_store_retries_total'):.0f} retries"
    )
    hits, misses = total("artfs_cache_hits_total"), total("artfs_cache_misses_total")
    rate = f" ({100 * hits / (hits + misses):.1f}% hit)" if hits + misses else ""
    cache = f"Cache           {hits:.0f} hits, {misses:.0f} misses{rate}, {total('artfs_cache_evictions_total'):.0f} evictions"
    if "artfs_cache_size_bytes" in s:
        cache += (
            f"; {human_size(int(total('artfs_cache_size_bytes')))} of "
            f"{human_size(int(total('artfs_cache_limit_bytes')))}"
        )
    lines.append(cache)
    if "artfs_drafts_open" in s:
        lines.append(f"Drafts open     {total('artfs_drafts_open'):.0f}")
    return lines


def register(cli: click.Group) -> None:
    @cli.command()
    @click.argument("mountpoint", required=False)
    @click.option("--address", "-a", help="HOST:PORT of a daemon's metrics (default: the one serving MOUNTPOINT).")
    @click.option("--raw", is_flag=True, help="Print the Prometheus text as scraped.")
    def stats(mountpoint, address, raw):
        """What a mount's daemon has done: requests, latency, bytes, cache, store errors, drafts."""
        if address is None:
            if mountpoint is None:
                raise InvalidInput("give a MOUNTPOINT (or --address HOST:PORT)")
            path = os.path.realpath(mountpoint)
            if path not in _artfs_mounts():
                raise InvalidInput(f"{mountpoint} is not an artfs mount")
            address = daemon_address(path)
            if address is None:
                raise InvalidInput(
                    f"{mountpoint} was mounted without --metrics: remount with "
                    "--metrics 127.0.0.1:PORT (or give --address)"
                )
        text = scrape(address)
        if raw:
            click.echo(text, nl=False)
            return
        click.echo(f"{mountpoint or address}  (metrics from {address})")
        for line in summary(text):
            click.echo(line)
