"""Injected faults for the embedded store: latency, 503s, 429s and ambiguous writes.

A migration engine is only as good as its behaviour when the API misbehaves, and the real API cannot
be made to misbehave on demand. ``local:PATH?fail_rate=0.1&ambiguous_rate=0.05&seed=7`` makes the
embedded store do it, reproducibly:

- ``latency_ms`` / ``jitter_ms``: every call sleeps ``latency_ms + U(0, jitter_ms)`` first;
- ``rate_limit_rps``: a token bucket (burst ``max(1, rps)``); over it, the call raises
  ``RateLimited`` with ``retry_after`` = seconds until a token is free (fractional, unlike HTTP);
- ``fail_rate``: the call raises ``APIError(503)`` before doing anything;
- ``write_fail_rate``: the same for writes only (reads answer): a target whose write path is down;
- ``ambiguous_rate``: a *write* runs and commits, then raises ``AmbiguousError`` (a timeout after
  the server acted) — the case that makes naive retries duplicate data;
- ``seed``: the random source.

Determinism: every call takes exactly three draws (jitter, fail, ambiguous) from one seeded RNG, under
a lock, whatever the outcome. So for a given seed the n-th call gets the same fate every run: one
thread making the same calls sees the same fault sequence. With several threads the *sequence* of
fates is still the same, but which thread's call gets the n-th fate depends on scheduling. The rate
limiter is wall-clock based and so is deterministic only in the sense that the same call rate gives
the same 429s; it draws nothing from the RNG.

Each opened endpoint has its own injector (RNG and token bucket): two processes opening the same URI
each see the whole sequence, and the rate limit applies per process.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, fields

from longmem_etl.errors import APIError, BadInput, RateLimited

FAULT_KEYS = (
    "latency_ms",
    "jitter_ms",
    "fail_rate",
    "write_fail_rate",
    "rate_limit_rps",
    "ambiguous_rate",
    "seed",
)


@dataclass(frozen=True)
class FaultConfig:
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    fail_rate: float = 0.0
    write_fail_rate: float = 0.0
    rate_limit_rps: float = 0.0
    ambiguous_rate: float = 0.0
    seed: int = 0

    @property
    def active(self) -> bool:
        return any(
            (
                self.latency_ms,
                self.jitter_ms,
                self.fail_rate,
                self.write_fail_rate,
                self.rate_limit_rps,
                self.ambiguous_rate,
            )
        )

    @classmethod
    def from_query(cls, params: dict[str, str], *, where: str) -> FaultConfig:
        """Parse URI query parameters; unknown keys or bad values -> BadInput naming them."""
        unknown = sorted(set(params) - set(FAULT_KEYS))
        if unknown:
            raise BadInput(
                f"{where}: unknown query parameter {unknown[0]!r}; accepted: {', '.join(FAULT_KEYS)}"
            )
        values: dict[str, float | int] = {}
        for f in fields(cls):
            if f.name not in params:
                continue
            text = params[f.name]
            try:
                value: float | int = int(text) if f.name == "seed" else float(text)
            except ValueError:
                raise BadInput(f"{where}: {f.name}={text!r} is not a number") from None
            if f.name != "seed" and not value >= 0:
                raise BadInput(f"{where}: {f.name}={text!r} must be >= 0")
            if f.name in ("fail_rate", "write_fail_rate", "ambiguous_rate") and value > 1:
                raise BadInput(f"{where}: {f.name}={text!r} must be between 0 and 1")
            values[f.name] = value
        return cls(**values)  # type: ignore[arg-type]

    def as_query(self) -> dict[str, float | int]:
        """Non-default settings, for manifests and journals (never secret)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name)}


class FaultInjector:
    """Decides each call's fate. Thread-safe; see the module docstring for what is deterministic."""

    def __init__(self, config: FaultConfig) -> None:
        self.config = config
        self._rng = random.Random(config.seed)
        self._lock = threading.Lock()
        self._calls = 0
        rps = config.rate_limit_rps
        self._capacity = max(1.0, rps)
        self._tokens = self._capacity
        self._stamp = time.monotonic()

    def before(self, method: str, *, write: bool) -> bool:
        """Run before a call: sleep, maybe raise 429/503. Returns True if a write must end ambiguous."""
        cfg = self.config
        with self._lock:
            self._calls += 1
            u_jitter, u_fail, u_ambiguous = (
                self._rng.random(),
                self._rng.random(),
                self._rng.random(),
            )
        delay_ms = cfg.latency_ms + u_jitter * cfg.jitter_ms
        if delay_ms > 0:
            time.sleep(delay_ms / 1000.0)
        if cfg.rate_limit_rps > 0:
            self._take_token(method)
        if u_fail < cfg.fail_rate or (write and u_fail < cfg.write_fail_rate):
            raise APIError(503, f"{method}: service unavailable (injected fault)")
        return write and u_ambiguous < cfg.ambiguous_rate

    def _take_token(self, method: str) -> None:
        rps = self.config.rate_limit_rps
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * rps)
            self._stamp = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return
            wait = (1.0 - self._tokens) / rps
        raise RateLimited(
            f"{method}: rate limit of {rps:g} requests/s exceeded (injected fault)",
            retry_after=round(wait + 0.0005, 3),
        )

    @property
    def calls(self) -> int:
        return self._calls
