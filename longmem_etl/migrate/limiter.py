"""Adaptive concurrency (AIMD) and retry backoff: how the uploader stays polite under 429s.

`AdaptiveLimit` gates how many calls are in flight. A 429 halves the limit (at most once per
cool-down window, so one burst of simultaneous 429s counts once); a streak of successes adds one
back, never above the configured ``--concurrency``. Workers keep running; they just wait for a slot.

A retry waits for a slot ahead of fresh work (``acquire(first=True)``): it has already waited out
its back-off, and left behind the workers queued with new chunks it would wait up to a whole round
of calls more, so its chunk's chain of retries drifts towards the end of the run, where it is the
tail everyone waits for.

`FailureWindow` decides how steeply a 5xx retry backs off. A chunk's own attempt count says how
much of its budget is spent, not how the target is doing: while most recent calls succeed, a 503
is a blip, and the retry waits only the base delay (other chunks keep every slot busy meanwhile,
so waiting longer relieves nobody; at the end of a run it only makes everyone wait). Once most of
the last calls fail, the back-off grows with the attempts as usual.

`FailureWindow.retry_delay` is the wait of a 5xx/408 retry: while failures are sparse it is a
small jitter (``SPARSE_FRACTION`` of the base, 5-10 ms at the uploader's 50 ms) instead of the
base delay. The retry then takes the next free slot ahead of fresh chunks. Mid-run every slot is
busy and the retry waits for one anyway, so the shorter wait changes nothing there; at the end of
a run the last chunks' retries form a chain (a 503'd tail chunk at 10 % failures gets 3-4 in a
row for some seeds), and each link used to add 25-50 ms of idle slots to the whole command. A 429
never takes this path: it still backs off at least its Retry-After and halves the concurrency.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from longmem_etl.api.retry import backoff

SPARSE_FRACTION = 0.2
"""A 5xx retry's base delay, as a fraction of the configured one, while failures are sparse."""


class AdaptiveLimit:
    """A semaphore whose size moves: multiplicative decrease on 429 bursts, additive increase."""

    def __init__(self, maximum: int, *, cooldown: float = 1.0, streak: int | None = None) -> None:
        if maximum < 1:
            raise ValueError("concurrency must be >= 1")
        self.maximum = maximum
        self.limit = maximum
        self.lowest = maximum
        self.cuts = 0
        self.cooldown = cooldown
        self._streak_needed = streak
        self._streak = 0
        self._active = 0
        self._last_cut = -1e9
        lock = threading.Lock()
        self._cond = threading.Condition(lock)  # fresh work waits here
        self._first = threading.Condition(lock)  # retries wait here, served first
        self._retries_waiting = 0

    def acquire(self, stop: threading.Event, poll: float = 0.1, *, first: bool = False) -> bool:
        """Wait for a slot; False if ``stop`` was set first. ``first``: a retry, served before
        any waiting fresh work."""
        with self._cond:
            if first:
                self._retries_waiting += 1
            try:
                while self._active >= self.limit or (not first and self._retries_waiting):
                    if stop.is_set():
                        return False
                    (self._first if first else self._cond).wait(poll)
                if stop.is_set():
                    return False
                self._active += 1
                return True
            finally:
                if first:
                    self._retries_waiting -= 1
                    if not self._retries_waiting and self._active < self.limit:
                        self._cond.notify()  # a slot fresh work was held off from

    def release(self) -> None:
        with self._cond:
            self._active -= 1
            # one slot freed: wake one waiter (a retry if any), not the whole herd
            (self._first if self._retries_waiting else self._cond).notify()

    def on_success(self) -> None:
        with self._cond:
            if self.limit >= self.maximum:
                return
            self._streak += 1
            if self._streak >= (self._streak_needed or 2 * self.limit):
                self.limit += 1
                self._streak = 0
                self._first.notify_all()
                self._cond.notify_all()

    def on_rate_limited(self, retry_after: float | None = None) -> None:
        with self._cond:
            self._streak = 0
            now = time.monotonic()
            if now - self._last_cut < max(self.cooldown, retry_after or 0.0):
                return
            self._last_cut = now
            self.limit = max(1, self.limit // 2)
            self.lowest = min(self.lowest, self.limit)
            self.cuts += 1


class FailureWindow:
    """The outcomes of the last ``size`` calls: is the target failing most of them?"""

    def __init__(self, size: int = 16) -> None:
        self._outcomes: deque[bool] = deque(maxlen=max(1, size))
        self._lock = threading.Lock()

    def record(self, ok: bool) -> None:
        with self._lock:
            self._outcomes.append(ok)

    def failing(self) -> bool:
        """More than half of the recent calls failed (or the only ones so far did)."""
        with self._lock:
            n = len(self._outcomes)
            return n > 0 and 2 * self._outcomes.count(False) > n

    def exponent(self, attempt: int) -> int:
        """The back-off exponent for retry ``attempt`` (0-based) of one call."""
        return attempt if self.failing() else 0

    def retry_delay(self, attempt: int, *, base: float, retry_after: float | None = None) -> float:
        """Seconds before retry ``attempt`` (0-based) of a call that got a 5xx/408 (never a
        429: see the module docstring): a short jittered wait while most recent calls succeed,
        the exponential back-off once most fail; never less than the server's Retry-After."""
        if self.failing():
            return backoff(attempt, base=base, retry_after=retry_after)
        return backoff(0, base=base * SPARSE_FRACTION, retry_after=retry_after)
