"""One retry policy: a real S3 server behind a connection that breaks off mid-body.
Body reads are retried (whole GETs and streamed ranges resume), and the policy's bounds hold."""

from __future__ import annotations

import os
import time

import pytest

from artfs.errors import NotFound, StoreUnavailable, Transient
from artfs.store.retry import RetryPolicy
from proxies import stores_behind_proxies

pytestmark = pytest.mark.s3
DATA = os.urandom(3 << 20)


@pytest.fixture
def behind_proxy(s3_endpoint, monkeypatch):
    with stores_behind_proxies(s3_endpoint, monkeypatch, DATA) as make:
        yield make


def test_a_body_broken_off_midway_is_fetched_again(behind_proxy):
    store, proxy = behind_proxy(after=1 << 20, cuts=2)
    assert store.get("blob") == DATA
    assert proxy.cut == 2, "the proxy really broke two responses"


def test_a_streamed_range_resumes_where_it_broke(behind_proxy):
    store, proxy = behind_proxy(after=1 << 20, cuts=1)
    lengths = [256 << 10] * 12
    parts = list(store.get_parts("blob", 0, lengths))
    assert b"".join(parts) == DATA[: sum(lengths)] and [len(p) for p in parts] == lengths
    assert proxy.cut == 1


def test_a_store_that_keeps_failing_is_unavailable_after_the_attempts(behind_proxy):
    store, proxy = behind_proxy(after=1 << 20, cuts=100)
    with pytest.raises(StoreUnavailable):
        store.get("blob")
    assert proxy.cut == store.retry.attempts


def test_what_cannot_pass_is_not_retried(behind_proxy):
    store, proxy = behind_proxy(after=1 << 30, cuts=0)
    with pytest.raises(NotFound):
        store.get("missing")


def test_the_policy_waits_with_jitter_and_stops_at_the_deadline():
    calls = []

    def flaky():
        calls.append(time.monotonic())
        raise Transient("dropped")

    policy = RetryPolicy(attempts=100, first_wait=0.01, max_wait=0.05, deadline=0.3)
    start = time.monotonic()
    with pytest.raises(Transient):
        policy.call(flaky)
    assert 0.3 <= time.monotonic() - start < 0.5 and len(calls) > 3
    waits = {round(b - a, 3) for a, b in zip(calls, calls[1:])}
    assert len(waits) > 1, "waits are drawn at random"
