"""Where the upload phase's time goes, call by call (not a test; prints a breakdown).

    .venv/bin/python benchmarks/profile_upload.py [--items 20000] [--faults] [--cprofile]

Runs `run_migration` in this process on the end-to-end benchmark's held-out-like dump against a
``local:`` target with ``latency_ms`` (200 by default), and stamps every store call: when it
started, when the injected latency ended (the sleep), when the store's work ended. From those:

- per call: sleep, store work after the sleep (validation, encoding, the SQLite + FTS5 insert,
  the writer lock), and the whole call as the client saw it, median and p90;
- slots: calls in flight over the upload phase; idle slot-seconds (``concurrency`` slots minus
  the calls out) split into the head (before the first call), gaps while chunks were waiting, and
  the tail (after the last full round);
- rounds: the lower bound ``ceil(calls / concurrency) x latency`` beside the upload time.

``--cprofile`` adds the top functions by own time over the whole run, all threads summed (each
thread enables a profiler of its own from a ``threading.setprofile`` hook: cProfile only sees the
thread that enabled it): what the GIL is spent on.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import math
import pstats
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_migrate_e2e import make_dump  # noqa: E402

from longmem_etl.api import faults as faults_mod  # noqa: E402
from longmem_etl.api import local as local_mod  # noqa: E402
from longmem_etl.migrate import MigrationOptions, run_migration  # noqa: E402

STAMPS: list[tuple[str, float, float, float]] = []  # (method, start, slept, end)
_tls = threading.local()
OUTCOMES: list[tuple[float, float, str, int]] = []
EVENTS: list[tuple[float, str]] = []
WRITES: list[
    tuple[float, float, float, float]
] = []  # asked, in the transaction, body done, committed


def _instrument() -> None:
    before = faults_mod.FaultInjector.before

    def timed_before(self, method, *, write):
        try:
            return before(self, method, write=write)
        finally:
            _tls.slept = time.perf_counter()

    faults_mod.FaultInjector.before = timed_before  # type: ignore[method-assign]
    for name in ("add_many", "import_memories"):
        fn = getattr(local_mod.LocalStore, name)

        def wrapped(self, *a, __fn=fn, __name=name, **kw):
            t0 = time.perf_counter()
            _tls.slept = t0
            outcome = "ok"
            try:
                return __fn(self, *a, **kw)
            except Exception as exc:
                outcome = type(exc).__name__ + str(getattr(exc, "status", ""))
                raise
            finally:
                STAMPS.append((__name, t0, _tls.slept, time.perf_counter()))
                OUTCOMES.append((t0, time.perf_counter(), outcome, len(a[0]) if a else 0))

        setattr(local_mod.LocalStore, name, wrapped)
    page = local_mod.LocalStore.export_page

    def timed_page(self, *a, **kw):
        t0 = time.perf_counter()
        outcome = "ok"
        try:
            return page(self, *a, **kw)
        except Exception as exc:
            outcome = type(exc).__name__ + str(getattr(exc, "status", ""))
            raise
        finally:
            EVENTS.append((t0, f"export_page {outcome} -> {time.perf_counter() - t0:.3f} s"))

    local_mod.LocalStore.export_page = timed_page  # type: ignore[method-assign]
    from longmem_etl.api import localdb

    write = localdb.StoreFile._write

    @contextlib.contextmanager
    def timed_write(self):
        t0 = time.perf_counter()
        with write(self) as conn:
            t1 = time.perf_counter()
            yield conn
            t2 = time.perf_counter()
        WRITES.append((t0, t1, t2, time.perf_counter()))

    localdb.StoreFile._write = timed_write  # type: ignore[method-assign]
    from longmem_etl.migrate import uploader as up_mod

    rec = up_mod.Uploader._reconcile

    def timed_reconcile(self, chunk_nos, **kw):
        EVENTS.append((time.perf_counter(), f"reconcile start {len(chunk_nos)} chunks"))
        try:
            return rec(self, chunk_nos, **kw)
        finally:
            EVENTS.append((time.perf_counter(), "reconcile end"))

    up_mod.Uploader._reconcile = timed_reconcile  # type: ignore[method-assign]
    run = up_mod.Uploader.run

    def timed_run(self, **kw):
        EVENTS.append((time.perf_counter(), "uploader start"))
        try:
            return run(self, **kw)
        finally:
            EVENTS.append((time.perf_counter(), "uploader end"))

    up_mod.Uploader.run = timed_run  # type: ignore[method-assign]
    from longmem_etl.migrate import engine

    prepare = engine._Run.prepare_verification

    def timed_prepare(self):
        """Stamps the preparation's thread from start to end (imports verifyprep, hence DuckDB,
        only when the run does)."""
        prepare(self)
        if self.prepared is not None:
            EVENTS.append((time.perf_counter(), "verify-prep start"))
            thread = self.prepared._thread
            threading.Thread(target=_stamp_end, args=(thread,), daemon=True).start()

    engine._Run.prepare_verification = timed_prepare  # type: ignore[method-assign]
    from longmem_etl.migrate import planstream

    finish = planstream.BatchPlanner.finish

    def timed_finish(self, *a, **kw):
        EVENTS.append((time.perf_counter(), "plan finish start"))
        try:
            return finish(self, *a, **kw)
        finally:
            EVENTS.append((time.perf_counter(), "plan finish end"))

    planstream.BatchPlanner.finish = timed_finish  # type: ignore[method-assign]

    sys.meta_path.insert(0, _WatchImport())  # type: ignore[arg-type]


def _stamp_end(thread: threading.Thread) -> None:
    thread.join()
    EVENTS.append((time.perf_counter(), "verify-prep end"))


class _WatchImport:
    """A meta path finder that finds nothing: it only stamps when DuckDB's import starts."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "duckdb._relation" and "duckdb._relation" not in sys.modules:
            EVENTS.append((time.perf_counter(), "duckdb._relation import starts"))
        if name == "duckdb" and "duckdb" not in sys.modules:
            EVENTS.append(
                (time.perf_counter(), f"duckdb import starts ({threading.current_thread().name})")
            )
        return None


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--latency-ms", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--chunk", type=int, default=100)
    ap.add_argument("--faults", action="store_true", help="fail_rate=0.1&ambiguous_rate=0.02")
    ap.add_argument("--seed", type=int, default=1, help="the faults' seed (with --faults)")
    ap.add_argument("--cprofile", action="store_true")
    ap.add_argument("--timeline", action="store_true", help="calls in flight per 100 ms")
    args = ap.parse_args()
    _instrument()
    query = f"latency_ms={args.latency_ms}"
    if args.faults:
        query += f"&fail_rate=0.1&ambiguous_rate=0.02&seed={args.seed}"
    with tempfile.TemporaryDirectory(prefix="profile-upload-") as d:
        tmp = Path(d)
        dump = tmp / "dump.json"
        make_dump(dump, args.items, refused=max(1, round(args.items * 77 / 200_000)))
        prof = cProfile.Profile() if args.cprofile else None
        thread_profs: list[cProfile.Profile] = []
        if prof is not None:
            # cProfile profiles only the thread that enables it: every thread started below
            # enables one of its own on its first profile event (then drops the hook)
            def per_thread(*_a: object) -> None:
                sys.setprofile(None)
                mine = cProfile.Profile()
                thread_profs.append(mine)
                mine.enable()

            threading.setprofile(per_thread)
            prof.enable()
        t0 = time.perf_counter()
        res = run_migration(
            MigrationOptions(
                source=str(dump),
                target=f"local:{tmp / 'target.db'}?{query}",
                concurrency=args.concurrency,
                chunk_size=args.chunk,
                journal=str(tmp / "work" / "journal.sqlite"),
                show_progress=False,
            )
        )
        wall = time.perf_counter() - t0
        if prof is not None:
            prof.disable()
            threading.setprofile(None)  # type: ignore[arg-type]
    lat = args.latency_ms / 1000
    calls = sorted(STAMPS, key=lambda s: s[1])
    sleep = [s[2] - s[1] for s in calls]
    work = [s[3] - s[2] for s in calls]
    whole = [s[3] - s[1] for s in calls]
    first, last = calls[0][1], max(s[3] for s in calls)
    span = last - first
    busy = sum(whole)
    idle = args.concurrency * span - busy
    # the tail: from when fewer than `concurrency` calls can still be started (the last round)
    rounds = math.ceil(len(calls) / args.concurrency)
    head = min(at for at, what in EVENTS if what == "uploader start")
    tail_end = max(at for at, what in EVENTS if what == "uploader end")
    tail_start = sorted(s[1] for s in calls)[max(0, len(calls) - args.concurrency)]
    tail_idle = args.concurrency * (last - tail_start) - sum(
        min(s[3], last) - max(s[1], tail_start) for s in calls if s[3] > tail_start
    )
    t = res.timings
    print(
        f"{args.items} items, latency {args.latency_ms} ms, concurrency {args.concurrency}, "
        f"faults {'yes' if args.faults else 'no'}; run_migration {wall:.2f} s; "
        f"timings {t}; upload stats calls={res.upload.get('calls')} "
        f"503s={res.upload.get('transient_errors')} ambiguous={res.upload.get('ambiguous')}"
    )
    ms = 1000
    print(
        f"store calls {len(calls)}: whole call median {statistics.median(whole) * ms:.1f} ms "
        f"p90 {_pct(whole, 0.9) * ms:.1f}; sleep median {statistics.median(sleep) * ms:.1f}; "
        f"work after the sleep median {statistics.median(work) * ms:.1f} ms "
        f"p90 {_pct(work, 0.9) * ms:.1f} max {max(work) * ms:.1f}"
    )
    plan_s = res.timings.get("plan_overlapped", 0.0)
    early = [s[3] - s[2] for s in calls if s[1] - first < plan_s]
    late = [s[3] - s[2] for s in calls if s[1] - first >= plan_s]
    if early and late:
        print(
            f"  work after the sleep, calls started while the plan was still being written "
            f"({plan_s:.1f} s): median {statistics.median(early) * ms:.1f} ms "
            f"p90 {_pct(early, 0.9) * ms:.1f}; later: median {statistics.median(late) * ms:.1f} "
            f"p90 {_pct(late, 0.9) * ms:.1f}"
        )
    marks = sorted(EVENTS)
    for name, a_ev, b_ev in (
        ("verify-prep", "verify-prep start", "verify-prep end"),
        ("plan finish", "plan finish start", "plan finish end"),
    ):
        a_ = [at for at, what in marks if what == a_ev]
        b_ = [at for at, what in marks if what == b_ev]
        if a_ and b_:
            inside = [s[3] - s[2] for s in calls if a_[0] - 0.2 <= s[2] <= b_[0] + 0.05]
            print(
                f"  {name} {a_[0] - first:.3f} -> {b_[0] - first:.3f} s: {len(inside)} calls woke "
                f"then, work after the sleep median "
                f"{statistics.median(inside or [0]) * ms:.1f} ms p90 {_pct(inside, 0.9) * ms:.1f}"
            )
    slow = [f"{s[2] - first:.2f}s:{(s[3] - s[2]) * ms:.0f}" for s in calls if s[3] - s[2] > 0.05]
    print(f"  calls whose work after the sleep took > 50 ms (woke at: ms): {' '.join(slow)}")
    for at, what in marks:
        if what.startswith("duckdb"):
            print(f"  {what} at {at - first:.3f} s")
    print(
        f"first call -> last call end {span:.2f} s; lower bound {rounds} rounds x {lat:.3f} s = "
        f"{rounds * lat:.2f} s; slot occupancy {100 * busy / (args.concurrency * span):.1f}%; "
        f"idle slot-s {idle:.2f} (of which the tail {tail_idle:.2f}); "
        f"head (uploader start -> first call) {first - head:.3f} s; "
        f"last call end -> uploader end {tail_end - last:.3f} s"
    )
    if WRITES:
        wait = [b - a for a, b, _, _ in WRITES]
        body = [c - b for _, b, c, _ in WRITES]
        commit = [d - c for _, _, c, d in WRITES]
        print(
            f"store writes {len(WRITES)}: waiting for the writer lock + BEGIN median "
            f"{statistics.median(wait) * ms:.1f} ms p90 {_pct(wait, 0.9) * ms:.1f}; insert median "
            f"{statistics.median(body) * ms:.1f} p90 {_pct(body, 0.9) * ms:.1f}; COMMIT median "
            f"{statistics.median(commit) * ms:.1f} p90 {_pct(commit, 0.9) * ms:.1f}"
        )
        pre = sorted((w[0] - s[2]) for s in calls for w in WRITES if s[2] <= w[0] <= s[3])
        if pre:
            print(
                f"  before the write (validation + encoding, after the sleep) median "
                f"{statistics.median(pre) * ms:.1f} ms p90 {_pct(pre, 0.9) * ms:.1f}"
            )
    if args.timeline:
        step = 0.1
        for k in range(math.ceil(span / step)):
            a, b = first + k * step, first + (k + 1) * step
            out_ = sum(min(s[3], b) - max(s[1], a) for s in calls if s[1] < b and s[3] > a)
            starts = sum(1 for s in calls if a <= s[1] < b)
            print(f"  {k * step:5.1f} s  in flight {out_ / step:4.1f}  started {starts}")
    if args.timeline:
        tail = sorted(
            [(a, f"call {o} {n} items -> {b - first:.3f}") for a, b, o, n in OUTCOMES] + EVENTS
        )
        for at, what in tail:
            if at - first > span - 2.0:
                print(f"  {at - first:7.3f} {what}")
    if prof is not None:
        out = io.StringIO()
        stats = pstats.Stats(prof, stream=out)
        for mine in thread_profs:  # the threads' own (most of them have ended)
            stats.add(mine)
        print(f"cProfile: the main thread and {len(thread_profs)} others, own time summed")
        stats.sort_stats("tottime").print_stats(25)
        print(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
