"""Freeze, plan and upload as one pipeline: the uploader runs in a thread fed with chunk numbers
as the planner commits them, while this thread is still converting the dump.

Why: the freeze (convert the dump into the frozen snapshot) and the plan are local CPU, the
upload is the API's latency; run one after the other, a user waits for their sum. Here the first
calls go out once the first batch of rows is converted and its plan rows are durable.

The guarantees are the streamed plan's (`planstream`): a chunk is queued only after the
transaction holding its plan rows commits, and no row is written before the target's markers are
known (`engine.HoldingsRead`), so an item the target already holds is never sent again. A run
stopped or killed while the freeze is still going leaves the plan unfinished (``planned`` unset):
the next run plans afresh and learns from the markers what already landed.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from longmem_etl.errors import APIError, BadInput


class FreezeStopped(Exception):
    """Raised from the freeze's row hand-over to abandon it (a stop was asked for)."""


class PlanFailed(Exception):
    """Raised from the freeze's row hand-over when planning the rows failed (the holdings read,
    the journal), so the caller tells it apart from a problem with the source."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class UploadInBackground:
    """The uploader, started on the first chunk (``start()`` builds it: the target is opened only
    once there is something to send), run in its own thread; `put` feeds it, `close` says no
    more chunks are coming and waits for the upload to end."""

    def __init__(self, start: Callable[[], Any], stop: threading.Event) -> None:
        self._start, self._stop = start, stop
        self._chunks: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.uploader: Any = None
        self.stats: Any = None
        self._error: BaseException | None = None
        self.first_chunk_at: float | None = None
        self._warm: threading.Thread | None = None

    @property
    def started(self) -> bool:
        return self._thread is not None

    def put(self, chunk_no: int) -> None:
        """Queue a chunk whose plan rows are durable (starts the upload on the first one)."""
        if self._thread is None:
            self._launch()
        self._chunks.put(chunk_no)

    def _launch(self) -> None:
        self.first_chunk_at = time.monotonic()
        self.uploader = self._start()
        self._thread = threading.Thread(target=self._run, name="upload", daemon=True)
        self._thread.start()
        self._warm = _import_duckdb_now(self.uploader)

    def _join_warm(self) -> None:
        """The early import is over (it never outlives the pipeline: see `_import_duckdb_now`)."""
        if self._warm is not None:
            self._warm.join()

    def _run(self) -> None:
        try:
            self.stats = self.uploader.run(resumed=False, feed=self._feed)
        except BaseException as exc:  # noqa: BLE001 - re-raised by close() in the caller's thread
            self._error = exc

    def _feed(self, work: Any) -> None:
        """The uploader's ``feed``: runs in its feeder thread until `close` (or a stop)."""
        while True:
            try:
                chunk_no = self._chunks.get(timeout=0.05)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            if chunk_no is None:
                return
            work.put(chunk_no)

    def close(self) -> Any:
        """No more chunks: wait for the upload to finish; its stats (raises what it raised).
        With nothing ever queued, the uploader still runs once (it reconciles and reports)."""
        if self._thread is None:
            self._launch()
        assert self._thread is not None
        self._chunks.put(None)
        self._thread.join()
        self._join_warm()
        if self._error is not None:
            raise self._error
        return self.stats

    def abandon(self) -> None:
        """The freeze failed: stop the upload (calls out settle) and wait for it."""
        if self._thread is None:
            return
        self._stop.set()
        self._chunks.put(None)
        self._thread.join()
        self._join_warm()


def _import_duckdb_now(uploader: Any) -> threading.Thread | None:
    """Import DuckDB in a thread of its own once the first round of calls waits on the target.

    The freeze needs DuckDB at its first Parquet flush (the writer's row digests), which comes a
    second or more into the upload; its import holds the GIL for tens of milliseconds at a time
    (the extension's init), and every call whose wait ended meanwhile came back that much late.
    Once a full round of calls is out, none of them can end for a whole latency: the same import
    there costs the calls nothing. (Started before that, it delayed the first calls.) Not a
    daemon: a run that ends early waits for it (`close`/`abandon`) instead of leaving a thread
    inside DuckDB's init at interpreter exit."""
    import sys

    if "duckdb" in sys.modules:
        return None

    def run() -> None:
        deadline = time.monotonic() + _FIRST_ROUND_WAIT
        while uploader.stats.calls < uploader.concurrency and time.monotonic() < deadline:
            time.sleep(0.002)
        with contextlib.suppress(ImportError):  # the freeze's own import reports it
            import duckdb  # noqa: F401

    thread = threading.Thread(target=run, name="import-duckdb", daemon=False)
    thread.start()
    return thread


_FIRST_ROUND_WAIT = 0.25
"""How long the early DuckDB import waits for the first round of calls to be out (seconds)."""


def freeze_plan_upload(ctx: Any, holdings_read: Any) -> tuple:
    """Freeze, plan and upload at once (`pipeline`): the dump's rows are planned as the freeze
    converts them, and each batch's chunks go to the uploader (in its own thread) once the batch
    is durable. ``ctx`` is the engine's run (`engine._Run`), ``holdings_read`` its
    `engine.HoldingsRead`. Returns ``(target, uploader, stats, streamed plan, upload start)``."""
    import pyarrow as pa

    from longmem_etl.migrate import source as sources
    from longmem_etl.migrate.planstream import BatchPlanner, StreamedPlan

    opts, journal, result, stop = ctx.opts, ctx.journal, ctx.result, ctx.stop
    journal.put(
        options={
            "chunk_size": opts.chunk_size,
            "max_bytes": opts.max_bytes,
            "mode": opts.mode,
            "provenance": opts.provenance,
        },
        migration_id=ctx.mid,
        source_key=ctx.key,
    )
    # until the freeze ends the plan's count is unknown: the dump's own count meanwhile, so a
    # run in a pipe says "n/total (pct)" from its first heartbeat
    bar = ctx.progress_bar(sources.opened_total(opts.source))
    opened: list[Any] = []

    def start() -> Any:
        opened.append(sources.open_target(opts.target, key_env=opts.target_key_env))
        return ctx.uploader(opened[0], bar)

    pipe = UploadInBackground(start, stop)
    planner = BatchPlanner(
        journal,
        mode=opts.mode,
        source_key=ctx.key,
        chunk_size=opts.chunk_size,
        max_bytes=opts.max_bytes,
        held=holdings_read,
        put=pipe.put,
        report=StreamedPlan(),
    )

    def on_rows(batch: Any) -> None:
        if stop.is_set():
            raise FreezeStopped
        try:
            planner.add(batch)
        except Exception as exc:  # the journal (a full disk), not the source: told apart below
            raise PlanFailed(exc) from exc

    t_freeze = time.monotonic()
    frozen = None
    try:
        try:
            frozen = sources.freeze(
                opts.source,
                ctx.work_dir / "frozen",
                spec=None,
                key_env=opts.source_key_env,
                identity={},  # the content identity is still being hashed: set below
                on_rows=on_rows,
            )
        except FreezeStopped:
            pass
        except PlanFailed as failed:
            holdings_read.cancel()
            pipe.abandon()
            if isinstance(failed.error, APIError):  # the holdings read: nothing written or sent
                raise ctx.holdings_unreadable(failed.error) from None
            raise failed.error from None
        except BaseException as exc:  # the freeze: the source, or an interrupt
            holdings_read.cancel()
            sent = pipe.started
            pipe.abandon()
            if isinstance(exc, BadInput) and not sent:
                ctx.refused()
            elif isinstance(exc, BadInput):  # found broken after the first calls went out
                raise BadInput(
                    f"{exc}; the upload had started: what landed carries its markers, so a "
                    f"re-run with the repaired source does not send it again"
                ) from None
            raise
        result.timings["freeze"] = round(time.monotonic() - t_freeze, 3)
        if frozen is not None:
            pa.default_memory_pool().release_unused()  # convert's Arrow buffers
            try:
                journal.put(
                    frozen_snapshot=str(frozen.path),
                    frozen_identity=ctx.plan_binding["content"],
                    collection_defs=frozen.collection_defs(),
                    plan_binding=ctx.plan_binding,
                )
                planner.finish()  # the last chunks; the plan is marked finished
            except BaseException as exc:  # the upload stops too (the plan stays unfinished)
                pipe.abandon()
                if isinstance(exc, APIError):  # the holdings read: nothing written, nor sent
                    raise ctx.holdings_unreadable(exc) from None
                raise
            if bar is not None:
                bar.total = planner.report.items
            ctx.prepare_verification()  # this thread is free now: the calls are still out
        result.timings["holdings"] = round(holdings_read.seconds, 3)
        stats = pipe.close()
    finally:
        if bar is not None:
            bar.close()
    t_upload = pipe.first_chunk_at or time.monotonic()
    result.timings["freeze_plan"] = round(t_upload - ctx.t_plan, 3)
    if not opened:  # nothing was ever sent (an empty source, or every item held)
        opened.append(sources.open_target(opts.target, key_env=opts.target_key_env))
    return opened[0], pipe.uploader, stats, planner.report, t_upload
