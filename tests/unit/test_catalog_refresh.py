"""A mount's listings are reloaded ahead of expiry: looking at an artifact never waits for a
slow bucket once it has been listed, and what it shows is never older than the refresh interval."""

import threading
import time

from artfs.fs.catalog import Catalog
from artfs.names import ArtifactName
from artfs.store.backends.local import LocalStore
from artfs.store.manifest import Entry, Manifest
from artfs.store.registry import Registry

REFRESH = 1.0
LIST_DELAY = 0.3  # each LIST of a busy bucket


class BusyStore(LocalStore):
    def list(self, prefix):
        time.sleep(LIST_DELAY)
        return super().list(prefix)


def _commit(registry: Registry, a: ArtifactName, k: int) -> int:
    m = Manifest.from_entries([Entry(f"f{k}", 1, bytes(32), pack=bytes(32))])
    return registry.commit(a, "dataset", m, m.encode())[0].number


def test_a_listing_looked_at_is_never_older_than_refresh_nor_waits_for_the_bucket(tmp_path):
    a = ArtifactName("p", "a")
    writer = Registry(LocalStore(str(tmp_path)))
    _commit(writer, a, 0)
    catalog = Catalog(Registry(BusyStore(str(tmp_path))), refresh=REFRESH)
    catalog.artifact(a)  # the first look waits for the bucket

    seen: dict[int, float] = {}
    slowest = 0.0
    stop = threading.Event()

    def look() -> None:  # a job looking at the artifact every 20 ms
        nonlocal slowest
        while not stop.is_set():
            t = time.monotonic()
            versions = catalog.artifact(a).versions
            slowest = max(slowest, time.monotonic() - t)
            for n in versions:
                seen.setdefault(n, time.monotonic())
            time.sleep(0.02)

    looker = threading.Thread(target=look)
    looker.start()
    made: dict[int, float] = {}
    try:
        for k in range(1, 6):
            time.sleep(0.37 * k % 1.1)  # commits at different points of the listing's life
            t = time.monotonic()
            made[_commit(writer, a, k)] = t
        deadline = time.monotonic() + 3 * REFRESH
        while len(seen) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        looker.join()
    lags = sorted(seen[n] - t for n, t in made.items() if n in seen)
    assert len(lags) == 5, (made, seen)
    assert lags[-1] <= REFRESH + 0.15, lags
    assert slowest < LIST_DELAY / 2, f"a look waited {slowest:.2f} s for the bucket"
