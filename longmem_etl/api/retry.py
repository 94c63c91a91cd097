"""Reads retried through transient failures, one way for every caller: backup's export, pages and
health counts, and migrate's target exports and listings.

Reads are idempotent, so every transient failure is retried: 429 and 5xx (``APIError.retryable``),
ambiguous failures and network errors (``OSError``). Waits grow exponentially with jitter and are
never shorter than the server's ``Retry-After``; setting ``stop`` (Ctrl-C) ends a wait at once with
``Interrupted``. Callers choose only how many retries they can afford.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from longmem_etl.errors import AmbiguousError, APIError, LongmemETLError

T = TypeVar("T")

READ_RETRIES = 30
"""Retries before a read's last error is raised (about four minutes of waiting at the cap)."""
BACKOFF_BASE_S = 0.1
BACKOFF_CAP_S = 10.0


class Interrupted(LongmemETLError):
    """The run was asked to stop (Ctrl-C/SIGTERM) while waiting to retry a read."""


def backoff(
    attempt: int,
    *,
    base: float = BACKOFF_BASE_S,
    cap: float = BACKOFF_CAP_S,
    retry_after: float | None = None,
) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): exponential with jitter, never less than
    the server's Retry-After."""
    delay = min(cap, base * (2**attempt)) * random.uniform(0.5, 1.0)
    if retry_after is not None:
        delay = max(delay, float(retry_after))
    return delay


def retry_read(
    call: Callable[[], T],
    *,
    stop: threading.Event | None = None,
    retries: int = READ_RETRIES,
    base: float = BACKOFF_BASE_S,
    give_up_after: float | None = None,
) -> T:
    """``call()``, retried through transient failures up to ``retries`` times and (if set)
    ``give_up_after`` seconds after the first failure (see the module doc)."""
    attempt = 0
    first: float | None = None
    while True:
        try:
            return call()
        except (APIError, AmbiguousError, OSError) as exc:
            retryable = isinstance(exc, AmbiguousError | OSError) or exc.retryable
            now = time.monotonic()
            first = now if first is None else first
            late = give_up_after is not None and now - first >= give_up_after
            if not retryable or attempt >= retries or late:
                raise
            delay = backoff(attempt, base=base, retry_after=getattr(exc, "retry_after", None))
            if give_up_after is not None:
                delay = min(delay, max(0.0, first + give_up_after - now))
            attempt += 1
            if (stop or threading.Event()).wait(delay):
                raise Interrupted("interrupted while waiting to retry a read") from exc
