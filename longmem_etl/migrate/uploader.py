"""The uploader: N workers sending planned chunks, surviving 429s, 5xx, ambiguity and bad items.

Per call outcome (the one error model of `longmem_etl.errors`):
- success -> items done with their target ids, chunk ``done`` (one committed transaction);
- 429 -> wait ``max(backoff, Retry-After)``, halve the adaptive concurrency, retry; never an attempt
  (a 429 storm longer than ``max_transient`` retries of one call stops the run, resumable);
- 5xx / 408 -> backoff (steep only while most recent calls fail: `limiter.FailureWindow`) and
  retry ahead of fresh chunks, within the retry budget: ``max_attempts`` tries of one call
  (``migrate --max-attempts``) and, if set, ``give_up_after`` seconds since the call first failed
  (``--give-up-after``, 429 waits included). Past the budget that call's items are dead-lettered
  ("gave up after N attempts: ...") and the run goes on, so a target that fails every call ends
  promptly with exit 3 and a ``dead_letter.jsonl`` to replay, instead of retrying for minutes. The
  budget is per call: the other parts of a bisected chunk keep theirs, so what is dead never
  depends on which worker got to which part first;
- ambiguous (timeout after sending, dropped connection) -> the chunk stays ``in_flight`` and is
  deferred: once the queue drains (provenance mode: while the last calls are still out; else at
  the end of the pass) one export of the target reconciles all such chunks, and only the missing
  items are queued again (see `reconcile`);
- 401/403 -> the whole run stops (wrong key or read-only key: nothing item-specific about it);
- other 4xx -> bisect: halves are re-sent until single items fail; those are dead-lettered with the
  server's status and message, everything else lands;
- anything else -> an attempt; after ``max_attempts`` the chunk's remaining items are dead.

Stopping (Ctrl-C/SIGTERM -> ``stop``): workers take no new chunk, and calls in progress finish
(their results are journaled); chunks interrupted during backoff go back to ``planned``.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgspec

from longmem_etl.errors import AmbiguousError, APIError
from longmem_etl.migrate.journal import Journal, JournalFull
from longmem_etl.migrate.limiter import AdaptiveLimit, FailureWindow, backoff
from longmem_etl.migrate.reconcile import Interrupted, TargetIndex, reconcile_chunks

Sender = Callable[[str, list[dict[str, Any]]], list[str | None]]
"""``send(collection, items) -> target ids (None where the API does not say)``; raises the toolkit's errors."""

Refuses = Callable[[dict[str, Any], "int | None"], "str | None"]
"""``refuses(item, payload_chars)`` -> why the target is known to refuse the item, or None."""

_SWITCH_INTERVAL = 0.0001
"""The GIL switch interval during an upload (seconds; see `Uploader.run`)."""

FATAL_STATUSES = frozenset({401, 403, 507})  # 507: the target cannot store (disk full)
TRANSIENT_STATUSES = frozenset({408})


def make_sender(target: Any, mode: str, collection_defs: dict[str, Any] | None = None) -> Sender:
    """The call one chunk becomes: ``add_many`` (ids returned) or ``import_memories`` (no ids)."""
    collection_defs = collection_defs or {}

    def send_add(collection: str, items: list[dict[str, Any]]) -> list[str | None]:
        res = target.add_many(items, collection=collection)
        ids = list((res or {}).get("ids") or [])
        ids += [None] * (len(items) - len(ids))
        return [None if i is None else str(i) for i in ids[: len(items)]]

    def send_import(collection: str, items: list[dict[str, Any]]) -> list[str | None]:
        defs = collection_defs.get(collection)
        res = target.import_memories(items, collections=[defs] if defs is not None else None)
        skipped = int((res or {}).get("skipped") or 0)
        if skipped:
            raise SkippedItems(skipped)
        return [None] * len(items)

    return send_add if mode == "add" else send_import


@dataclass
class UploadStats:
    calls: int = 0
    rate_limited: int = 0
    transient_errors: int = 0
    ambiguous: int = 0
    bisections: int = 0
    reconciled_items: int = 0
    reconcile_rounds: int = 0
    dead_items: int = 0
    items_sent: int = 0
    presplit_items: int = 0
    """Items the target is known to refuse (its limits), dead-lettered without being sent."""
    fatal: str | None = None
    errors: list[str] = field(default_factory=list)


class _Stopped(Exception):
    pass


class Failure(NamedTuple):
    """What stopped an upload (`Uploader.failure`): the one line for the user, and whether it is
    theirs to fix (a full journal disk, a target refusing the key: exit 2) or not (exit 1)."""

    message: str
    user: bool


@dataclass
class Unit:
    """Work for one call: a whole chunk (``items`` None: read its pending items when taken) or a
    part of one (a pre-split group, or a bisection half)."""

    chunk_no: int
    items: list[tuple[str, dict[str, Any]]] | None = None


@dataclass
class _ChunkRun:
    """A chunk whose calls are out: how many, and what came back so far."""

    collection: str
    outstanding: int = 0
    ambiguous: bool = False
    skipped: bool = False
    stopped: bool = False
    error: Exception | None = None


class WorkQueue:
    """The workers' shared queue: new chunks at the back, halves of refused parts at the front.

    ``closed=False`` means more chunks may still come (the planner is writing them); workers wait
    instead of leaving while it is open.

    Waiting is event-driven, not polled: every change a waiting worker may care about (a unit
    queued, the queue closed, a chunk finished: `wake`) bumps ``epoch``. A worker reads the epoch
    BEFORE looking at the uploader's state and then waits only while it is unchanged
    (`wait_change`), so a change made between its look and its wait is never slept through, and
    the pass ends the moment the last outstanding call is answered."""

    def __init__(self, *, closed: bool = True) -> None:
        self._items: deque[Unit] = deque()
        self._cond = threading.Condition()
        self._closed = closed
        self._epoch = 0
        self._active = 0  # units taken by `take` whose worker has not said `done` yet
        self.timeouts = 0
        """Waits that ended on their safety timeout instead of an event (0 when nothing is missed)."""

    @property
    def epoch(self) -> int:
        with self._cond:
            return self._epoch

    def _changed(self, *, everyone: bool) -> None:
        self._epoch += 1
        if everyone:
            self._cond.notify_all()
        else:
            self._cond.notify()

    def put(self, unit: Unit | int) -> None:
        with self._cond:
            self._items.append(unit if isinstance(unit, Unit) else Unit(unit))
            self._changed(everyone=False)

    def put_front(self, unit: Unit) -> None:
        with self._cond:
            self._items.appendleft(unit)
            self._changed(everyone=False)

    def take(self) -> Unit | None:
        """The next unit, or None at once when nothing is queued. A unit taken counts as
        `active` until its worker calls `done`: halves or a retry may still come from it."""
        with self._cond:
            if not self._items:
                return None
            self._active += 1
            return self._items.popleft()

    def done(self) -> None:
        """The worker of a `take`n unit is through with it (what it queued is queued)."""
        with self._cond:
            self._active -= 1
            if not self._active:
                self._changed(everyone=True)

    @property
    def active(self) -> int:
        with self._cond:
            return self._active

    def wait_change(self, epoch: int, timeout: float = 1.0) -> None:
        """Block until something changed since ``epoch`` (see the class docstring). ``timeout``
        is only a safety net against a missed `wake` (counted in ``timeouts``), not a poll."""
        with self._cond:
            unchanged = self._epoch == epoch and not self._items
            if unchanged and not self._cond.wait_for(lambda: self._epoch != epoch, timeout):
                self.timeouts += 1

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._changed(everyone=True)

    def wake(self) -> None:
        """Wake every waiting worker to look again (a chunk finished: the pass may be over)."""
        with self._cond:
            self._changed(everyone=True)

    def drained(self) -> bool:
        """Nothing queued and nothing more coming."""
        with self._cond:
            return self._closed and not self._items


def presplit(
    items: list[tuple[str, dict[str, Any]]],
    refuses: Refuses | None,
    sizes: list[int] | None = None,
) -> tuple[list[tuple[str, dict[str, Any]]], list[tuple[str, str]]]:
    """``(to send, [(source_id, why), ...])``: a chunk's items without those the target is known
    to refuse (its own limits, `known_limits`), which are dead-lettered with that reason instead
    of being sent. A call the target is certain to refuse would spend one slot of the API's rate
    (and, inside a chunk, a chain of bisections) to learn what is already known."""
    if refuses is None:
        return items, []
    good: list[tuple[str, dict[str, Any]]] = []
    refused: list[tuple[str, str]] = []
    for n, pair in enumerate(items):
        why = refuses(pair[1], sizes[n] if sizes is not None else None)
        if why:
            refused.append((pair[0], why))
        else:
            good.append(pair)
    return good, refused


class GaveUp(Exception):
    """The retry budget of one call ran out on transient errors; its chunk's items go dead."""

    def __init__(self, last: APIError, tries: int, seconds: float) -> None:
        super().__init__(
            f"gave up after {tries} attempts in {seconds:.1f}s (retry budget spent): {last}"
        )
        self.status = last.status


class SkippedItems(Exception):
    """``import_memories`` answered 2xx but skipped some items without saying which.

    The rest landed; reconciliation finds them, and whatever is still missing afterwards is what
    the server refused: it is dead-lettered (re-sending would be skipped again)."""

    def __init__(self, n: int) -> None:
        super().__init__(f"import_memories skipped {n} item(s) of the call (e.g. blank text)")
        self.n = n


class Uploader:
    """Runs the journal's remaining chunks to completion (or until stopped)."""

    def __init__(
        self,
        journal: Journal,
        target: Any,
        send: Sender,
        *,
        migration_id: str,
        provenance: bool = True,
        concurrency: int = 4,
        max_attempts: int = 8,
        max_transient: int = 60,
        give_up_after: float | None = None,
        backoff_base: float = 0.05,
        settle_timeout: float = 30.0,
        stop: threading.Event | None = None,
        on_items: Callable[[int], None] | None = None,
        refuses: Refuses | None = None,
    ) -> None:
        """``refuses(item, payload_chars)``: why the target is known to refuse an item (its
        limits), or None; such items are dead-lettered without being sent (`presplit`)."""
        self.journal = journal
        self.target = target
        self.send = send
        self.migration_id = migration_id
        self.provenance = provenance
        self.concurrency = concurrency
        self.limit = AdaptiveLimit(concurrency)
        self.health = FailureWindow(2 * concurrency)
        self.max_attempts = max_attempts
        self.max_transient = max_transient
        self.give_up_after = give_up_after
        self.backoff_base = backoff_base
        self.settle_timeout = settle_timeout
        self.stop = stop or threading.Event()
        self.on_items = on_items or (lambda n: None)
        self.stats = UploadStats()
        self._lock = threading.Lock()
        self._ambiguous: set[int] = set()
        self._skipped: set[int] = set()
        self._reconciling = 0  # reconciliation rounds in progress (a settled one may overlap)
        self._quiet_at = -1  # ``_sends`` when the last round with no call out started
        self._queue = WorkQueue()
        self._runs: dict[int, _ChunkRun] = {}
        self._feed_error: BaseException | None = None
        self.refuses = refuses
        self._sends = 0  # calls started (every try)
        self._answers = 0  # calls answered (or failed)
        self._settled: Any = None  # the last whole read made with no call out, until a call
        self.failure: Failure | None = None  # what stopped the run (``stats.fatal`` says it)

    # -- top level ---------------------------------------------------------------------------
    def run(
        self,
        *,
        resumed: bool = False,
        max_rounds: int = 50,
        feed: Callable[[WorkQueue], None] | None = None,
    ) -> UploadStats:
        """Reconcile leftovers of a previous run, then send passes until nothing is pending.

        ``resumed``: an earlier run may have been killed at any point, so every unfinished chunk
        (not only those marked in_flight) is reconciled first, with one export of the target.
        ``feed(queue)``: runs in its own thread during the first pass, queueing chunks as the
        planner makes them durable (`planstream`); workers wait for it until it returns."""
        previous = sys.getswitchinterval()
        # Many threads that mostly wait on the network: a short GIL switch interval lets a thread
        # whose call just returned get back to work without queueing 5 ms behind CPU-bound peers.
        # 0.1 ms, not 0.5: a call re-takes the GIL many times after its wait (each SQLite step of
        # the target, each journal write releases it), and while the freeze and the plan run in
        # the main thread (`pipeline`) every re-take waited up to a whole interval behind them;
        # the freeze has slack (it runs ahead of the upload), the calls do not.
        sys.setswitchinterval(min(previous, _SWITCH_INTERVAL))
        try:
            return self._run(resumed=resumed, max_rounds=max_rounds, feed=feed)
        except Interrupted:
            return self.stats  # stop was set: the journal is consistent, the caller reports 130
        finally:
            sys.setswitchinterval(previous)

    def _run(
        self, *, resumed: bool, max_rounds: int, feed: Callable[[WorkQueue], None] | None = None
    ) -> UploadStats:
        suspects = self.journal.chunks_in("in_flight", "failed")
        if resumed:
            suspects = self.journal.chunks_in("planned", "in_flight", "failed")
        if suspects:
            self._reconcile(suspects)
        if feed is not None:
            self._pass([], feed)
            if not self.stop.is_set():
                with self._lock:
                    ambiguous, self._ambiguous = sorted(self._ambiguous), set()
                    skipped, self._skipped = set(self._skipped), set()
                if ambiguous:
                    self._reconcile(ambiguous, skipped=skipped)
        for _ in range(max_rounds):
            if self.stop.is_set():
                break
            pending = self.journal.chunks_in("planned", "failed")
            if not pending:
                break
            self._pass(pending)
            if self.stop.is_set():
                break
            with self._lock:
                ambiguous, self._ambiguous = sorted(self._ambiguous), set()
                skipped, self._skipped = set(self._skipped), set()
            if ambiguous:
                self._reconcile(ambiguous, skipped=skipped)
        return self.stats

    @property
    def settled_keys(self) -> Any:
        """The keys of the last whole read of the target (`targetread.read_target_keys`, as
        verification reads them) if it was settled: started with no call out and no call sent
        since. Such a read shows everything this run's calls did, so verification may use it
        instead of reading the target again. None otherwise (voided by any later call), after a
        stop, and without provenance markers."""
        with self._lock:
            return None if self.stop.is_set() else self._settled

    def _reconcile(self, chunk_nos: list[int], *, skipped: set[int] = frozenset()) -> list[int]:
        """Reconcile ``chunk_nos`` with one export; returns the chunks put back to ``planned``."""
        with self._lock:
            sends = self._sends
            quiet = sends == self._answers and self.provenance
        # None of these chunks has a call out and what landed is committed (the committer was
        # flushed or closed), so their planned items are read once, before the target is.
        pending = self.journal.pending_items_by_chunk(set(chunk_nos))
        wanted = None
        if self.provenance:  # only these markers are looked up: not the whole account's rows
            wanted = [sid for rows in pending.values() for sid, _fp in rows]
        index = TargetIndex.from_target(
            self.target,
            self.migration_id,
            fingerprints=not self.provenance,
            # only read if the target cannot export the account in one call
            collections=(self.journal.chunk_collection(c) for c in chunk_nos),
            stop=self.stop,
            max_retries=self.max_attempts - 1,  # the same retry budget as the writes
            give_up_after=self.give_up_after,
            verifiable=quiet,  # fingerprints of unmarked memories too: it may be settled
            source_ids=wanted,
        )
        with self._lock:
            if quiet and index.keys is not None and self._sends == sends:
                self._settled = index.keys
        missing, found = reconcile_chunks(
            self.journal, index, chunk_nos, provenance=self.provenance, pending=pending
        )
        again: list[int] = []
        with self._lock:  # two rounds may overlap (`_reconcile_early`)
            self.stats.reconcile_rounds += bool(chunk_nos)  # not a settled read alone
            self.stats.reconciled_items += found
        self.on_items(found)
        for chunk_no, n in missing.items():
            if n and chunk_no in skipped:
                rows = self.journal.pending_items(chunk_no)
                self.journal.record_dead_items(
                    chunk_no,
                    [
                        (sid, None, "import_memories skipped it (2xx with skipped > 0)")
                        for sid, _, _ in rows
                    ],
                )
                self.stats.dead_items += len(rows)
                self.on_items(len(rows))
            elif n:
                self.journal.mark_planned(chunk_no)
                again.append(chunk_no)
        return again

    def _pass(self, chunk_nos: list[int], feed: Callable[[WorkQueue], None] | None = None) -> None:
        """Send ``chunk_nos`` (and, with ``feed``, whatever it queues while it runs: the planner
        streaming chunks as their plan rows commit; it must call ``close`` when done)."""
        self._queue = WorkQueue(closed=feed is None)
        for c in chunk_nos:
            self._queue.put(Unit(c))
        self._committer = _Committer(self.journal, self.on_items, self._journal_failed)
        self._committer.start()
        feeder = None
        if feed is not None:
            feeder = threading.Thread(
                target=self._feed, args=(feed,), name="plan-feed", daemon=True
            )
            feeder.start()
        try:
            self._run_workers()
        finally:
            self._committer.close(timeout=self.settle_timeout)
            if feeder is not None:
                self._queue.close()
                feeder.join()
        if self._feed_error is not None:
            raise self._feed_error

    def _feed(self, feed: Callable[[WorkQueue], None]) -> None:
        try:
            feed(self._queue)
        except BaseException as exc:  # noqa: BLE001 - re-raised by _pass in the caller's thread
            self._feed_error = exc
            self.stop.set()
        finally:
            self._queue.close()

    def _journal_failed(self, exc: Exception) -> None:
        self._fail(f"journal write failed: {type(exc).__name__}: {exc}", exc)

    def _fail(self, message: str, exc: BaseException | None, *, user: bool = False) -> None:
        """Stop the run for ``exc``: ``stats.fatal`` says it (in the result's upload stats) and
        `failure` carries it to the engine. The first failure wins: the ones it causes in other
        threads (stopped calls, a closed queue) are not what the user must fix. A full journal
        (`journal.JournalFull`) is the user's to fix wherever it surfaced, as is ``user``."""
        with self._lock:
            if self.failure is None:
                full = exc if isinstance(exc, JournalFull) else None
                self.failure = Failure(
                    str(full) if full is not None else message, user or full is not None
                )
                self.stats.fatal = message
        self.stop.set()

    def _run_workers(self) -> None:
        # Twice as many threads as call slots: while one sleeps out a back-off (holding no slot),
        # another can use the free slot, so retries never leave the pipe half empty. The adaptive
        # limit, not the thread count, bounds the calls in flight.
        workers = [
            threading.Thread(target=self._worker, name=f"upload-{i}", daemon=True)
            for i in range(2 * self.concurrency)
        ]
        self._workers_done = threading.Event()
        self._alive = len(workers)
        for w in workers:
            w.start()
        # The last worker to leave sets `_workers_done`: the pass ends on that event. The short
        # timeout only watches for a stop (Ctrl-C, a fatal answer), which must end calls promptly.
        while not self._workers_done.wait(0.01):
            if self.stop.is_set():
                # Let calls in progress settle (bounded); whatever is still out stays in_flight
                # in the journal and is reconciled by the next run.
                self._queue.close()
                wait_settle(workers, self.settle_timeout)
                return
        wait_settle(workers, self.settle_timeout)  # they are leaving: a join, not a wait

    # -- workers -----------------------------------------------------------------------------
    def _worker(self) -> None:
        try:
            self._work()
        finally:
            with self._lock:
                self._alive -= 1
                last = self._alive == 0
            if last:
                self._workers_done.set()  # the pass is over: `_run_workers` returns at once

    def _work(self) -> None:
        while not self.stop.is_set():
            epoch = self._queue.epoch  # read BEFORE looking, so no change is slept through
            unit = self._queue.take()
            if unit is None:
                # a unit a worker has taken (a chunk's call, its bisection, its finish) is
                # `active` until that worker is through with it: chunk runs live inside one
                with self._lock:
                    busy = self._reconciling > 0
                busy = busy or self._queue.active > 0
                drained = self._queue.drained()
                if busy or not drained:
                    # a chunk still has calls out (its halves may come back), or the planner is
                    # still writing chunks: stay, so the pipe stays full when they arrive. Only
                    # the last calls of the pass overlap a reconciliation (one export each).
                    if drained:
                        try:
                            if self._reconcile_early():
                                continue
                        except Interrupted:
                            return
                        except Exception as exc:  # the export keeps failing: stop, state is kept
                            self._fail(f"reconciliation failed: {type(exc).__name__}: {exc}", exc)
                            return
                    self._queue.wait_change(epoch)
                    continue
                try:
                    if self._reconcile_early():
                        continue
                except Interrupted:
                    return
                except Exception as exc:  # e.g. the export keeps failing: stop, state is kept
                    self._fail(f"reconciliation failed: {type(exc).__name__}: {exc}", exc)
                return
            try:
                self._unit(unit)
            except Interrupted:
                return
            except Exception as exc:  # a bug or a journal failure: stop everything, keep state
                self._fail(f"{type(exc).__name__}: {exc}", exc)
            finally:
                self._queue.done()

    def _reconcile_early(self) -> bool:
        """When the queue has drained, one idle worker reconciles the ambiguous chunks so far
        while the last calls are still out, and queues what is missing — instead of leaving the
        whole reconciliation to after the pass. Provenance mode only: content counting needs no
        call in flight. (A chunk is only listed as ambiguous once none of its calls is out.)

        One round at a time, except a settled one: when the last call is answered (ambiguous)
        while an early round is still reading, the new round starts at once instead of after
        it. Its read begins with no call out, so verification may reuse it; waiting for the
        early round (a whole read, ~0.3-0.8 s at 20k) only delayed the end of the upload.

        The same holds when the last answer was not ambiguous: an early round still reading
        then keeps the pass open, and verification would read the target again after it; a
        settled round with no chunks reads it now instead (`settled_keys`), once per quiet spell.
        If the early round finds items missing, their calls void that read, as any call does."""
        if not self.provenance:
            return False
        with self._lock:
            quiet = self._nothing_out()
            if self._reconciling and not quiet:
                return False
            if not self._ambiguous and not (
                # only the settled read verification would otherwise make after the pass, and
                # once: none was started since the last call (``_quiet_at``)
                self._reconciling and quiet and self._quiet_at != self._sends
            ):
                return False
            self._reconciling += 1
            if self._sends == self._answers:  # this round's read may be settled (`_reconcile`)
                self._quiet_at = self._sends
            ambiguous, self._ambiguous = sorted(self._ambiguous), set()
            skipped, self._skipped = set(self._skipped), set()
        try:
            self._committer.flush()
            for chunk_no in self._reconcile(ambiguous, skipped=skipped):
                self._queue.put(Unit(chunk_no))
        finally:
            with self._lock:
                self._reconciling -= 1
            self._queue.wake()  # workers waiting for this round look again (or leave)
        return True

    def _nothing_out(self) -> bool:
        """With the queue drained (`_reconcile_early`'s callers): no call is out and none can
        start but from a reconciliation's requeue, so a read started now shows everything this
        run sent so far. Every call, chunk run and chunk finish happens inside a unit a worker
        has taken (`WorkQueue.active` until its `done`), so no unit taken is the whole test —
        including a chunk taken but not yet started (`_start_chunk` reads its rows first), for
        which a read begun earlier would be voided by its call (a wasted whole read)."""
        return self._queue.active == 0

    def _start_chunk(self, chunk_no: int) -> list[Unit]:
        """A chunk taken from the queue: its pending items, cut around items the target is known
        to refuse (each travels alone, so it never drags a bisection through its neighbours)."""
        rows = self.journal.pending_items(chunk_no)
        if not rows:
            self.journal.record_done(chunk_no, [])
            return []
        collection = self.journal.chunk_collection(chunk_no)
        items = [(r.source_id, _decode_payload(r.payload)) for r in rows]
        good, refused = presplit(items, self.refuses, [len(r.payload) for r in rows])
        if refused:
            self.journal.record_dead_items(
                chunk_no,
                [(sid, 422, f"{why} (the target's known limit: not sent)") for sid, why in refused],
            )
            with self._lock:
                self.stats.presplit_items += len(refused)
                self.stats.dead_items += len(refused)
            self.on_items(len(refused))
        if not good:
            return []
        self._committer.mark_in_flight(chunk_no)
        with self._lock:
            self._runs[chunk_no] = _ChunkRun(collection, outstanding=1)
        return [Unit(chunk_no, good)]

    def _unit(self, unit: Unit) -> None:
        """Send one unit (a whole chunk, or a part of one); a part the target refuses is halved and
        both halves go back to the FRONT of the shared queue, where any idle worker takes them."""
        if unit.items is None:
            units = self._start_chunk(unit.chunk_no)
            if not units:
                return
            for extra in reversed(units[1:]):
                self._queue.put_front(extra)
            unit = units[0]
        with self._lock:
            run = self._runs[unit.chunk_no]
        try:
            self._send_unit(unit, run)
        except _Stopped:
            run.stopped = True
        finally:
            with self._lock:
                run.outstanding -= 1
                finished = run.outstanding == 0
                if finished:
                    # the unit is still active: idle workers stay, this may queue the chunk again
                    del self._runs[unit.chunk_no]
            if finished:
                try:
                    self._finish_chunk(unit.chunk_no, run)
                finally:
                    if self._queue.drained():
                        # idle workers look again: leave if this was the last call out, or
                        # reconcile what came back ambiguous while the last calls are out
                        self._queue.wake()

    def _send_unit(self, unit: Unit, run: _ChunkRun) -> None:
        items = unit.items or []
        result = self._call(unit.chunk_no, run.collection, items)
        if isinstance(result, list):
            self._committer.submit(
                unit.chunk_no, list(zip((s for s, _ in items), result, strict=True))
            )
            return
        if isinstance(result, GaveUp):
            # The budget is per call: this call's items are dead, the chunk's other parts go on
            # with budgets of their own. (Nothing here landed: a 5xx/408/429 means not done.)
            self.journal.note_error(unit.chunk_no, str(result))
            self.journal.record_dead_items(
                unit.chunk_no, [(sid, result.status, str(result)) for sid, _ in items]
            )
            with self._lock:
                self.stats.dead_items += len(items)
            self.on_items(len(items))
            return
        if isinstance(result, SkippedItems):
            run.skipped = True
            return
        if result == "ambiguous":
            run.ambiguous = True
            return
        if not isinstance(result, APIError):
            run.error = result
            return
        exc: APIError = result
        if len(items) == 1:
            self.journal.record_dead_items(unit.chunk_no, [(items[0][0], exc.status, exc.message)])
            with self._lock:
                self.stats.dead_items += 1
            self.on_items(1)
            return
        mid = len(items) // 2
        with self._lock:
            self.stats.bisections += 1
            run.outstanding += 2
        self._queue.put_front(Unit(unit.chunk_no, items[mid:]))
        self._queue.put_front(Unit(unit.chunk_no, items[:mid]))

    def _finish_chunk(self, chunk_no: int, run: _ChunkRun) -> None:
        """All of a chunk's calls are back: decide what happens to what is still pending."""
        if run.stopped:
            self.journal.mark_planned(chunk_no)
            return
        if run.skipped or run.ambiguous:
            with self._lock:
                self._ambiguous.add(chunk_no)
                if run.skipped:
                    self._skipped.add(chunk_no)
                else:
                    self.stats.ambiguous += 1
            return
        if run.error is not None:
            # what landed must be committed before the pending items are read again
            self._committer.flush()
            left = len(self.journal.pending_items(chunk_no))
            state = self.journal.record_failure(
                chunk_no,
                f"{type(run.error).__name__}: {run.error}",
                max_attempts=self.max_attempts,
            )
            if state == "failed":
                self.stop.wait(backoff(1, base=self.backoff_base))
                self._queue.put_front(Unit(chunk_no))  # a retry goes first, not to the tail
            else:
                with self._lock:
                    self.stats.dead_items += left
                self.on_items(left)

    def _call(self, chunk_no: int, collection: str, items: list[tuple[str, dict]]):
        """One logical send with transient retries. Returns ids, "ambiguous", an APIError to
        bisect on, or another exception (an attempt). Raises _Stopped."""
        transient = 0  # retries of this call, 429s included: the back-off and the storm limit
        attempts = 0  # failed tries that count against --max-attempts: a 429 is never one
        failed_at: float | None = None
        payloads = [p for _, p in items]
        while True:
            # a retry goes ahead of fresh chunks (`AdaptiveLimit`): its back-off is over
            if self.stop.is_set() or not self.limit.acquire(self.stop, first=transient > 0):
                raise _Stopped
            try:
                with self._lock:
                    self.stats.calls += 1
                    self._sends += 1
                    self._settled = None  # a read made before this call no longer shows it all
                try:
                    ids = self.send(collection, payloads)
                finally:
                    with self._lock:
                        self._answers += 1
            except APIError as exc:
                self.limit.release()
                if exc.status in FATAL_STATUSES:
                    self._fail(f"target refused: {exc}", exc, user=True)
                    raise _Stopped from exc
                if not (exc.retryable or exc.status in TRANSIENT_STATUSES):
                    return exc
                self.health.record(False)
                with self._lock:
                    if exc.status == 429:
                        self.stats.rate_limited += 1
                    else:
                        self.stats.transient_errors += 1
                if exc.status == 429:
                    self.limit.on_rate_limited(exc.retry_after)
                self.journal.note_error(chunk_no, str(exc))
                now = time.monotonic()
                failed_at = now if failed_at is None else failed_at
                if exc.status != 429:
                    attempts += 1
                out_of_tries = exc.status != 429 and attempts >= self.max_attempts
                out_of_time = self.give_up_after is not None and (
                    now - failed_at >= self.give_up_after
                )
                if out_of_tries or out_of_time:
                    return GaveUp(exc, transient + 1, now - failed_at)  # every try, 429s too
                if transient >= self.max_transient:
                    self._fail(
                        f"chunk {chunk_no}: target still failing after {transient} retries: {exc}",
                        exc,
                    )
                    raise _Stopped from exc
                delay = self._retry_delay(exc, transient)
                if self.give_up_after is not None:  # never sleep past the budget
                    delay = min(delay, max(0.0, failed_at + self.give_up_after - now))
                transient += 1
                if self.stop.wait(delay):
                    raise _Stopped from exc
                continue
            except SkippedItems as exc:
                self.limit.release()
                self.journal.note_error(chunk_no, str(exc))
                return exc
            except (AmbiguousError, OSError) as exc:
                self.limit.release()
                self.journal.note_error(chunk_no, f"ambiguous: {exc}")
                return "ambiguous"
            except Exception as exc:  # noqa: BLE001 - counted as an attempt, then dead
                self.limit.release()
                return exc
            self.limit.release()
            self.limit.on_success()
            self.health.record(True)
            with self._lock:
                self.stats.items_sent += len(items)
            if len(ids) != len(items):
                return "ambiguous"
            return ids

    def _retry_delay(self, exc: APIError, transient: int) -> float:
        """The wait before retry ``transient`` of a call: a 429 backs off as it always did (at
        least its Retry-After; steep while most calls fail), a 5xx/408 only briefly while
        failures are sparse (`FailureWindow.retry_delay`: at the end of a run every ms of a
        retry chain is the whole command's)."""
        if exc.status == 429:
            return backoff(
                self.health.exponent(transient), base=self.backoff_base, retry_after=exc.retry_after
            )
        return self.health.retry_delay(
            transient, base=self.backoff_base, retry_after=exc.retry_after
        )


def _decode_payload(payload: str) -> dict[str, Any]:
    """A journaled payload as the dict to send (msgspec: ~3x ``json.loads``; the stdlib for the
    rare payload msgspec refuses, e.g. a ``NaN`` the stdlib wrote)."""
    try:
        return _PAYLOAD_DECODE(payload)
    except msgspec.DecodeError:
        return json.loads(payload)


_PAYLOAD_DECODE = msgspec.json.Decoder(dict[str, Any]).decode


class _Committer(threading.Thread):
    """Group commit: workers hand over landed items and go on with their next chunk; this thread
    writes everything that arrived meanwhile in one durable transaction. A chunk is still ``done``
    only once that commit is through — the worker just does not wait for the fsync."""

    def __init__(
        self,
        journal: Journal,
        on_items: Callable[[int], None],
        on_error: Callable[[Exception], None],
    ) -> None:
        super().__init__(name="journal-commit", daemon=True)
        self.journal = journal
        self.on_items = on_items
        self.on_error = on_error
        self.q: queue.Queue[tuple[int, list] | None] = queue.Queue()

    def submit(self, chunk_no: int, pairs: list[tuple[str, str | None]]) -> None:
        self.q.put((chunk_no, pairs))

    def mark_in_flight(self, chunk_no: int) -> None:
        """Advisory, queued like everything else: a resumed run reconciles every unfinished chunk."""
        self.q.put((chunk_no, None))

    def run(self) -> None:
        done = False
        while not done:
            first = self.q.get()
            if first is None:
                break
            batch = [first]
            while True:
                try:
                    nxt = self.q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    done = True
                    break
                batch.append(nxt)
            flushes = [p for c, p in batch if isinstance(p, threading.Event)]
            batch = [(c, p) for c, p in batch if not isinstance(p, threading.Event)]
            try:
                if batch:
                    self.journal.record_done_batch(batch)
            except Exception as exc:  # journal trouble: stop the run, state stays consistent
                self.on_error(exc)
                return
            finally:
                for event in flushes:
                    event.set()
            self.on_items(sum(len(p) for _, p in batch if p is not None))

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until everything submitted so far is committed."""
        marker = threading.Event()
        self.q.put((-1, marker))  # type: ignore[arg-type]
        marker.wait(timeout)

    def close(self, timeout: float | None = None) -> None:
        self.q.put(None)
        self.join(timeout)


def wait_settle(threads: list[threading.Thread], timeout: float) -> bool:
    """Join threads for at most ``timeout`` seconds in total; True if all finished."""
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    return not any(t.is_alive() for t in threads)
