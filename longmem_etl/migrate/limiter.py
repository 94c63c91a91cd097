"""Adaptive concurrency (AIMD) and retry backoff: how the uploader stays polite under 429s.

`AdaptiveLimit` gates how many calls are in flight. A 429 halves the limit (at most once per
cool-down window, so one burst of simultaneous 429s counts once); a streak of successes adds one
back, never above the configured ``--concurrency``. Workers keep running; they just wait for a slot.
"""

from __future__ import annotations

import threading
import time

from longmem_etl.api.retry import backoff  # noqa: F401  (re-exported: the uploader's waits)


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
        self._cond = threading.Condition()

    def acquire(self, stop: threading.Event, poll: float = 0.1) -> bool:
        """Wait for a slot; False if ``stop`` was set first."""
        with self._cond:
            while self._active >= self.limit:
                if stop.is_set():
                    return False
                self._cond.wait(poll)
            if stop.is_set():
                return False
            self._active += 1
            return True

    def release(self) -> None:
        with self._cond:
            self._active -= 1
            self._cond.notify()  # one slot freed: wake one waiter, not the whole herd

    def on_success(self) -> None:
        with self._cond:
            if self.limit >= self.maximum:
                return
            self._streak += 1
            if self._streak >= (self._streak_needed or 2 * self.limit):
                self.limit += 1
                self._streak = 0
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
