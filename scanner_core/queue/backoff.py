"""Exponential backoff for transient failures, and the retry state a message carries.

A queue trigger cannot choose when a failed message comes back: the host makes
it visible again after the fixed ``visibilityTimeout``. So a transient failure
is not retried by failing the invocation; the request is *sent again* with
``visibility_timeout`` = the delay, its attempt number and the time of its
first attempt in the envelope's headers, and the delivered message is then
completed normally (see ``delivery.py``). The platform's dequeue count still
bounds each copy, for invocations that never finish (a worker that dies).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..config import Settings


@dataclass(frozen=True)
class RetryPolicy:
    """Attempt ``n`` failed transiently: attempt ``n + 1`` comes ``delay(n)`` seconds later,
    up to ``max_attempts`` attempts in all."""

    base_seconds: int = 30
    max_seconds: int = 960
    max_attempts: int = 7
    jitter: float = 0.1  # up to 10 % added, so messages failed together do not all return together

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            base_seconds=settings.retry_backoff_base_seconds,
            max_seconds=settings.retry_backoff_max_seconds,
            max_attempts=settings.retry_max_attempts,
        )

    def base_delay(self, attempt: int) -> int:
        """The delay after failed attempt ``attempt`` (1-based), without jitter."""
        return min(self.max_seconds, self.base_seconds * 2 ** min(attempt - 1, 30))

    def delay(self, attempt: int) -> int:
        """``base_delay`` plus up to ``jitter`` of it: never shorter, so the outage
        ``tolerated_outage_seconds`` promises still holds."""
        base = self.base_delay(attempt)
        return base + int(base * self.jitter * random.random())

    def schedule(self) -> list[int]:
        """The delays between consecutive attempts."""
        return [self.base_delay(attempt) for attempt in range(1, self.max_attempts)]

    def tolerated_outage_seconds(self) -> int:
        """An outage shorter than this, starting at any time, ends before the last attempt."""
        return sum(self.schedule())

    def is_last(self, attempt: int) -> bool:
        return attempt >= self.max_attempts


@dataclass(frozen=True)
class RetryState:
    """Where a request is in its retries: read from (and written to) the envelope's headers."""

    attempt: int = 1
    first_attempt_at: int | None = None  # unix seconds; None on a first attempt

    def next(self, now: int) -> RetryState:
        return RetryState(attempt=self.attempt + 1, first_attempt_at=self.first_attempt_at or now)

    def elapsed_seconds(self, now: int) -> int:
        return max(0, now - self.first_attempt_at) if self.first_attempt_at else 0
