"""Retries keep the pipe full: a chunk backing off holds no slot, a retry whose back-off is over
goes ahead of fresh chunks, and the back-off is steep only while the target fails most calls.
Orders and counts, never wall-clock times."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from longmem_etl.api.endpoints import open_endpoint
from longmem_etl.errors import APIError
from longmem_etl.migrate.journal import Journal
from longmem_etl.migrate.limiter import AdaptiveLimit, FailureWindow
from longmem_etl.migrate.plan import plan_items
from longmem_etl.migrate.uploader import Uploader, make_sender

MID = "test-migration"


def _scripted(
    tmp_path: Path, mems: list[dict], fates: list[str], *, retry_after: float
) -> tuple[Journal, Any, Callable[..., Any], list[str]]:
    """A planned journal, a real target, and a sender whose calls meet ``fates`` in order ("429",
    "503", then "ok" for every call after): the fates each call met are appended to ``calls``."""
    j = Journal(tmp_path / "j.sqlite")
    j.bind({"source": 1, "spec": None, "target": 2, "mode": "add"})
    j.write_plan(plan_items(mems, mode="add", source_key=MID), chunk_size=20)
    target = open_endpoint(f"local:{tmp_path / 't.db'}")
    real = make_sender(target, "add")
    calls: list[str] = []

    def send(collection, items):
        fate = fates.pop(0) if fates else "ok"
        calls.append(fate)
        if fate == "429":
            raise APIError(429, "slow down", retry_after=retry_after)
        if fate == "503":
            raise APIError(503, "unavailable")
        return real(collection, items)

    return j, target, send, calls


def _waiting_until(cond: threading.Condition, n: int) -> None:
    """Block until ``n`` threads wait on ``cond`` (checked, not slept on)."""
    for _ in range(2000):
        with cond:
            if len(cond._waiters) >= n:  # type: ignore[attr-defined]
                return
        threading.Event().wait(0.005)
    raise AssertionError("waiters never arrived")


def test_a_retry_gets_the_next_slot_before_fresh_work_queued_earlier() -> None:
    lim = AdaptiveLimit(1)
    stop = threading.Event()
    assert lim.acquire(stop)  # the one slot is busy
    order: list[str] = []
    lock = threading.Lock()

    def take(name: str, first: bool) -> None:
        assert lim.acquire(stop, poll=5.0, first=first)
        with lock:
            order.append(name)
        lim.release()

    fresh = [threading.Thread(target=take, args=(f"fresh{i}", False)) for i in range(3)]
    for t in fresh:
        t.start()
    _waiting_until(lim._cond, 3)
    retry = threading.Thread(target=take, args=("retry", True))
    retry.start()
    _waiting_until(lim._first, 1)
    lim.release()
    for t in [*fresh, retry]:
        t.join(10)
    assert order[0] == "retry" and sorted(order[1:]) == ["fresh0", "fresh1", "fresh2"]


def test_fresh_work_is_served_again_once_the_retries_are_in() -> None:
    """Retries waiting hold fresh work back only while they wait: with two slots, one retry and
    two fresh waiters, the retry and then one fresh waiter get the freed slots (none is stranded
    behind a retry that already has its slot)."""
    lim = AdaptiveLimit(2)
    stop = threading.Event()
    assert lim.acquire(stop) and lim.acquire(stop)
    got = threading.Semaphore(0)
    names: list[str] = []

    def take(name: str, first: bool) -> None:
        assert lim.acquire(stop, poll=5.0, first=first)
        names.append(name)
        got.release()

    threads = [threading.Thread(target=take, args=(f"fresh{i}", False)) for i in range(2)]
    for t in threads:
        t.start()
    _waiting_until(lim._cond, 2)
    threads.append(threading.Thread(target=take, args=("retry", True)))
    threads[-1].start()
    _waiting_until(lim._first, 1)
    lim.release()
    lim.release()
    assert got.acquire(timeout=10) and got.acquire(timeout=10)
    assert names[0] == "retry" and names[1].startswith("fresh")
    lim.release()
    for t in threads:
        t.join(10)
    assert len(names) == 3


def test_the_back_off_is_steep_only_while_most_calls_fail() -> None:
    w = FailureWindow(8)
    w.record(False)
    assert w.exponent(3) == 3  # the only call so far failed
    w = FailureWindow(8)
    for _ in range(7):
        w.record(True)
    w.record(False)
    assert not w.failing() and w.exponent(5) == 0  # a blip among successes
    for _ in range(4):
        w.record(False)
    assert w.failing() and w.exponent(5) == 5  # 5 of the last 8 failed
    for _ in range(8):
        w.record(False)
    assert w.exponent(2) == 2


def test_a_chunk_backing_off_holds_no_slot(tmp_path: Path) -> None:
    """One slot, and one chunk whose first three calls get 503s: while it backs off (at least
    0.25 s) the slot sends other chunks, and every item lands once."""
    mems = [
        {"id": f"m{i}", "collection": "c", "text": f"memory {i}", "metadata": {"k": i}}
        for i in range(200)
    ]
    j = Journal(tmp_path / "j.sqlite")
    j.bind({"source": 1, "spec": None, "target": 2, "mode": "add"})
    j.write_plan(plan_items(mems, mode="add", source_key=MID), chunk_size=20)
    target = open_endpoint(f"local:{tmp_path / 't.db'}?latency_ms=20")
    real = make_sender(target, "add")
    first_chunk = [r.source_id for r in j.pending_items(0)]
    failing = {"m": first_chunk[0], "left": 3}
    calls: list[str] = []

    def send(collection, items):
        ours = any(i["metadata"]["_longmem_etl"]["source_id"] == failing["m"] for i in items)
        calls.append("X" if ours else "o")
        if ours and failing["left"]:
            failing["left"] -= 1
            raise APIError(503, "unavailable")
        return real(collection, items)

    up = Uploader(j, target, send, migration_id=MID, concurrency=1, backoff_base=0.5)
    stats = up.run()
    assert stats.transient_errors == 3 and stats.dead_items == 0
    assert calls.count("X") == 4 and calls.count("o") == 9
    attempts = [n for n, c in enumerate(calls) if c == "X"]
    assert attempts[1] - attempts[0] > 1, calls  # others were sent while it waited
    assert j.counts()["items_done"] == 200


def test_429s_never_spend_the_attempt_budget(tmp_path: Path) -> None:
    """A 429 is never an attempt: a call rate-limited many times and then failing with one 503 is
    retried and lands (it used to give up when its 429 retries plus the 503 reached
    ``max_attempts``: 20 items dead-lettered by the quickstart on a busy machine)."""
    mems = [
        {"id": f"m{i}", "collection": "c", "text": f"memory {i}", "metadata": {"k": i}}
        for i in range(40)
    ]
    fates = ["429"] * 7 + ["503"] + ["429"] * 5 + ["503"]  # the first call's tries, then real
    j, target, send, calls = _scripted(tmp_path, mems, fates, retry_after=0.001)

    up = Uploader(
        j, target, send, migration_id=MID, concurrency=1, max_attempts=3, backoff_base=0.001
    )
    stats = up.run()
    assert calls.count("429") == 12 and calls.count("503") == 2
    assert stats.rate_limited == 12 and stats.transient_errors == 2
    assert stats.dead_items == 0 and j.counts()["items_done"] == 40
    # the budget still holds for real failures: three 503s in a row give up
    j2 = Journal(tmp_path / "j2.sqlite")
    j2.bind({"source": 1, "spec": None, "target": 3, "mode": "add"})
    j2.write_plan(plan_items(mems[:20], mode="add", source_key=MID), chunk_size=20)
    fates[:] = ["429", "503", "429", "503", "503"]
    stats2 = Uploader(
        j2, target, send, migration_id=MID, concurrency=1, max_attempts=3, backoff_base=0.001
    ).run()
    assert stats2.dead_items == 20 and fates == []


def test_a_5xx_retry_waits_briefly_only_while_failures_are_sparse() -> None:
    w = FailureWindow(8)
    for _ in range(7):
        w.record(True)
    w.record(False)
    sparse = [w.retry_delay(3, base=1.0) for _ in range(50)]
    assert all(0.1 <= d <= 0.2 for d in sparse)  # SPARSE_FRACTION of the base, jittered
    assert w.retry_delay(3, base=1.0, retry_after=2.5) == 2.5  # the server's word still holds
    for _ in range(5):
        w.record(False)
    assert w.failing()
    steep = [w.retry_delay(3, base=1.0) for _ in range(50)]
    assert all(4.0 <= d <= 8.0 for d in steep)  # base x 2^3, jittered


class _RecordingStop(threading.Event):
    """A stop event whose timed waits are recorded and return at once (never set)."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        if timeout is None:
            return super().wait()
        self.waits.append(timeout)
        return self.is_set()


def test_a_sparse_503_is_retried_at_once_and_a_429_still_backs_off(tmp_path: Path) -> None:
    """Among successes, a 503's retry waits a fifth of the base at most; a 429's retry still
    waits the full back-off and at least its Retry-After, and halves the concurrency. (Delays are
    read off the uploader's stop event, which does not sleep.)"""
    mems = [
        {"id": f"m{i}", "collection": "c", "text": f"memory {i}", "metadata": {"k": i}}
        for i in range(200)
    ]
    fates = ["ok"] * 6 + ["503"] + ["ok"] * 2 + ["429"]
    j, target, send, calls = _scripted(tmp_path, mems, fates, retry_after=0.7)

    stop = _RecordingStop()
    up = Uploader(j, target, send, migration_id=MID, concurrency=1, backoff_base=1.0, stop=stop)
    stats = up.run()
    assert stats.transient_errors == 1 and stats.rate_limited == 1 and stats.dead_items == 0
    assert calls.count("ok") == 10 and j.counts()["items_done"] == 200
    assert len(stop.waits) == 2, stop.waits  # one wait per retry, nothing else timed on stop
    # sorted, not in call order: the 503's worker journals its error before it waits, and the
    # free slot may carry the next calls up to the 429 meanwhile (the ranges do not overlap)
    after_503, after_429 = sorted(stop.waits)
    assert 0.1 <= after_503 <= 0.2  # was the base delay, 0.5-1.0 s here
    assert 0.7 <= after_429 <= 1.0  # at least Retry-After; the base back-off, jittered
    assert up.limit.cuts == 1  # the 429 cut the concurrency; the 503 did not
