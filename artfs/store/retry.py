"""The one retry policy for every request to a store or a reference source.

Only `Transient` errors are tried again (dropped connections, 5xx, throttling;
never a missing key or a lost compare-and-swap), after a wait drawn at random
up to a bound that doubles each attempt (full jitter, so many hosts retrying
at once do not stampede), within an attempt count and a deadline for the whole
request. Built on tenacity; the bounds come from config.Timeouts.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import tenacity

from artfs.config import Timeouts
from artfs.errors import Transient

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int
    first_wait: float
    max_wait: float
    deadline: float

    @classmethod
    def for_store(cls, t: Timeouts | None = None) -> "RetryPolicy":
        t = t or Timeouts()
        return cls(t.s3_attempts, t.retry_first_wait, t.retry_max_wait, t.retry_deadline)

    @classmethod
    def for_references(cls, t: Timeouts | None = None) -> "RetryPolicy":
        t = t or Timeouts()
        return cls(t.ref_attempts, t.retry_first_wait, t.retry_max_wait, t.retry_deadline)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """fn(*args, **kwargs), tried again on Transient; the last error is raised as it was."""
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(Transient),
            stop=tenacity.stop_after_attempt(self.attempts) | tenacity.stop_after_delay(self.deadline),
            wait=tenacity.wait_random_exponential(multiplier=self.first_wait, max=self.max_wait),
            reraise=True,
        )
        return retrying(fn, *args, **kwargs)

    def tracker(self) -> "Attempts":
        """For a request that resumes where it failed (a streamed body): ask before each retry."""
        return Attempts(self)


class Attempts:
    def __init__(self, policy: RetryPolicy):
        self.policy = policy
        self.failures = 0
        self.started = time.monotonic()

    def again(self, error: Transient) -> None:
        """Waits before the next attempt, or raises `error` when the policy is spent."""
        self.failures += 1
        if self.failures >= self.policy.attempts or time.monotonic() - self.started >= self.policy.deadline:
            raise error
        bound = min(self.policy.max_wait, self.policy.first_wait * 2**self.failures)
        time.sleep(random.uniform(0, bound))
