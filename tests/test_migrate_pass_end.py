"""The end of the upload's pass and the verification after it (issue 15).

- the pass ends on the last answer (an event), not on a poll: asserted by the waits' own counter
  (a wait that ends on its safety timeout is counted) with that timeout made far longer than the
  run, never by wall time;
- verification is prepared while the calls are out (`verifyprep`) and may reuse the upload's last
  read of the target when nothing was sent after it (`Uploader.settled_keys`); both must give the
  same answers and outputs as verification from scratch, and must still see a target that lost or
  gained items (tampered with through a second handle on the same ``local:`` store).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from longmem_etl.api.endpoints import open_endpoint
from longmem_etl.errors import AmbiguousError
from longmem_etl.migrate import MigrationOptions, engine, run_migration, targetread
from longmem_etl.migrate import uploader as uploader_mod
from longmem_etl.migrate.journal import Journal
from longmem_etl.migrate.keys import marker_of
from longmem_etl.migrate.plan import plan_items
from longmem_etl.migrate.targetread import read_target_keys
from longmem_etl.migrate.uploader import Uploader, make_sender
from longmem_etl.migrate.verify import compare
from longmem_etl.migrate.verifying import (
    ID_MAP,
    _fill_ids,
    _items_from,
    verify_journal,
    write_outputs,
)
from longmem_etl.migrate.verifyprep import PreparedVerification, fixed_columns, narrow_columns

KEY = "test-source-key"


def _mems(n: int, *, blank: tuple[int, ...] = ()) -> list[dict]:
    return [
        {
            "id": f"m{i:03d}",
            "collection": ["a", "b"][i % 2],
            "container_tag": None if i % 3 else "u1",
            "text": "   " if i in blank else f"memory number {i}",
        }
        for i in range(n)
    ]


def _journal(tmp_path: Path, mems: list[dict], chunk_size: int = 10) -> Journal:
    j = Journal(tmp_path / "j.sqlite")
    j.bind({"source": {"kind": "dump"}, "target": {"scheme": "local"}, "mode": {"mode": "add"}})
    j.write_plan(plan_items(mems, mode="add", source_key=KEY), chunk_size=chunk_size)
    return j


def _held_sender(real, first_read: threading.Event, *, held: str, ambiguous: set[str]):
    """A sender: the call holding ``held`` goes out only once the early round reads; calls
    holding any of ``ambiguous`` write, then answer as timed out."""

    def send(collection, items):
        sids = {marker_of(i["metadata"])[0] for i in items}
        if held in sids:
            assert first_read.wait(30)
        ids = real(collection, items)
        if sids & ambiguous:
            raise AmbiguousError("timed out after the write")
        return ids

    return send


def _held_reads(
    monkeypatch: pytest.MonkeyPatch, first_read: threading.Event
) -> tuple[list[int], list[bool]]:
    """Hold the uploader's first target read (an early round) until another read starts, 30 s
    at most. Returns ``(reads, seen)``: each read's number of looked-up markers (0 for a whole
    read), and whether the held read was released by a second one."""
    real_from_target = uploader_mod.TargetIndex.from_target.__func__
    second_read = threading.Event()
    reads: list[int] = []
    seen: list[bool] = []

    def held_read(cls, target, migration_id, **kw):
        reads.append(len(list(kw.get("source_ids") or [])))
        if not first_read.is_set():
            first_read.set()
            seen.append(second_read.wait(30))
        else:
            second_read.set()
        return real_from_target(cls, target, migration_id, **kw)

    monkeypatch.setattr(uploader_mod.TargetIndex, "from_target", classmethod(held_read))
    return reads, seen


def _landed_once(target, n: int) -> None:
    """Every one of the ``n`` items is in the target, once."""
    marks = [marker_of(m.get("metadata"))[0] for m in target.export_account()["memories"]]
    assert sorted(marks) == sorted(f"m{i:03d}" for i in range(n))


@pytest.fixture
def no_poll(monkeypatch: pytest.MonkeyPatch) -> list[uploader_mod.WorkQueue]:
    """Every work queue made, with its waits' safety timeout far beyond the test's length: a pass
    that only ended on a timeout would hang (the thread join below fails) and count one."""
    made: list[uploader_mod.WorkQueue] = []
    real_init, real_wait = uploader_mod.WorkQueue.__init__, uploader_mod.WorkQueue.wait_change

    def init(self, **kw):
        real_init(self, **kw)
        made.append(self)

    monkeypatch.setattr(uploader_mod.WorkQueue, "__init__", init)
    monkeypatch.setattr(
        uploader_mod.WorkQueue,
        "wait_change",
        lambda self, epoch, timeout=1.0: real_wait(self, epoch, 600.0),
    )
    return made


def _run_in_thread(up: Uploader) -> None:
    t = threading.Thread(target=up.run, daemon=True)
    t.start()
    t.join(60)  # liveness only: a pass waiting on a missed event would sit for 600 s
    assert not t.is_alive(), "the pass did not end on its last answer"


def test_pass_ends_on_the_last_answer_without_waiting_on_a_poll(
    tmp_path: Path, no_poll: list
) -> None:
    j = _journal(tmp_path, _mems(120))
    target = open_endpoint(f"local:{tmp_path / 't.db'}?latency_ms=20")
    up = Uploader(j, target, make_sender(target, "add"), migration_id=KEY, concurrency=4)
    _run_in_thread(up)
    assert j.counts()["items_done"] == 120
    assert no_poll and all(q.timeouts == 0 for q in no_poll)  # every wait ended on an event
    assert up._queue.active == 0 and up._queue.drained()


def test_bisected_halves_go_back_to_the_shared_queue_and_the_pass_still_ends(
    tmp_path: Path, no_poll: list
) -> None:
    j = _journal(tmp_path, _mems(64, blank=(3, 60)), chunk_size=32)
    target = open_endpoint(f"local:{tmp_path / 't.db'}?latency_ms=10")
    up = Uploader(j, target, make_sender(target, "add"), migration_id=KEY, concurrency=4)
    _run_in_thread(up)
    assert up.stats.bisections >= 2
    assert sorted(d["source_id"] for d in j.dead_letters()) == ["m003", "m060"]
    assert j.counts()["items_done"] == 62
    assert all(q.timeouts == 0 for q in no_poll)


def test_stop_ends_the_pass_and_leaves_the_rest_planned(tmp_path: Path) -> None:
    j = _journal(tmp_path, _mems(200))
    target = open_endpoint(f"local:{tmp_path / 't.db'}?latency_ms=30")
    stop = threading.Event()
    real = make_sender(target, "add")

    def send(collection, items):
        out = real(collection, items)
        stop.set()  # Ctrl-C after the first answer
        return out

    up = Uploader(j, target, send, migration_id=KEY, concurrency=2, stop=stop)
    _run_in_thread(up)
    c = j.counts()
    assert 0 < c["items_done"] < 200 and c["items_pending"] > 0
    assert up.settled_keys is None  # a stopped run never hands a read to verification


def _ambiguous_last_call(monkeypatch: pytest.MonkeyPatch, n_calls: int) -> None:
    """The ``n_calls``-th call of the run lands, then answers ambiguously: it is reconciled once
    every other call is back, so that read is settled (no call out, none after)."""
    real = engine.make_sender
    seen = [0]

    def make(target, mode, defs=None):
        send = real(target, mode, defs)

        def wrapped(collection, items):
            out = send(collection, items)
            seen[0] += 1
            if seen[0] == n_calls:
                raise AmbiguousError("timed out after sending")
            return out

        return wrapped

    monkeypatch.setattr(engine, "make_sender", make)


def _count_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    reads = [0]
    real = targetread.target_pages

    def counted(*a, **kw):
        reads[0] += 1
        yield from real(*a, **kw)

    monkeypatch.setattr(targetread, "target_pages", counted)
    return reads


def _migrate(
    tmp_path: Path, n: int, *, stop: threading.Event | None = None, **kw
) -> engine.MigrationResult:
    mems = _mems(n)
    dump = tmp_path / "d.json"
    if not dump.exists():
        dump.write_text(json.dumps({"tenant": "t", "memories": mems}))
    opts = dict(
        source=str(dump),
        target=f"local:{tmp_path / 't.db'}",
        chunk_size=10,
        concurrency=1,
        journal=str(tmp_path / "w" / "journal.sqlite"),
        show_progress=False,
    )
    opts.update(kw)
    return run_migration(MigrationOptions(**opts), stop=stop)


def test_clean_run_verifies_exact_with_its_own_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = _count_reads(monkeypatch)
    res = _migrate(tmp_path, 40)
    assert res.exit_code == 0 and res.verification["exact"]
    assert res.timings["verify_target_read_reused"] == 0  # no reconciliation: nothing to reuse
    assert reads[0] == 1  # verification's (a store not made yet holds nothing: not read)


def test_settled_read_is_reused_and_still_sees_a_target_that_lost_and_gained_items(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last call is ambiguous: its reconciliation read is settled and verification reuses
    it. The target is tampered with (second handle) after the last answer, before that read:
    one landed item deleted, one extra copy of another added. Verification must say so."""
    _ambiguous_last_call(monkeypatch, 4)
    reads = _count_reads(monkeypatch)
    db = f"local:{tmp_path / 't.db'}"
    real_from_target = uploader_mod.TargetIndex.from_target.__func__

    def tamper_then_read(cls, target, migration_id, **kw):
        other = open_endpoint(db)
        mine = {marker_of(m.get("metadata"))[0]: m for m in other.export_account()["memories"]}
        other.delete(mine["m000"]["id"], collection=mine["m000"]["collection"])
        copy = mine["m005"]
        other.add_many(
            [{"text": copy["text"], "metadata": copy["metadata"]}], collection=copy["collection"]
        )
        return real_from_target(cls, target, migration_id, **kw)

    monkeypatch.setattr(uploader_mod.TargetIndex, "from_target", classmethod(tamper_then_read))
    res = _migrate(tmp_path, 40)
    assert res.upload["ambiguous"] == 1 and res.upload["reconcile_rounds"] == 1
    assert res.timings["verify_target_read_reused"] == 1
    assert reads[0] == 1  # the settled reconciliation read; verification made none
    t = res.verification["totals"]
    assert not res.verification["exact"] and res.exit_code == 3
    assert (t["missing"], t["duplicated"], t["extra"]) == (1, 1, 0)


def test_a_call_after_the_read_voids_it(tmp_path: Path) -> None:
    j = _journal(tmp_path, _mems(30))
    target = open_endpoint(f"local:{tmp_path / 't.db'}")
    up = Uploader(j, target, make_sender(target, "add"), migration_id=KEY, concurrency=1)
    up.run()
    first = j.chunks_in("done")[0]
    up._reconcile([first])  # quiet: nothing out
    assert up.settled_keys is not None and up.settled_keys.num_rows == 30
    up._call(first, "a", [("extra", {"text": "one more"})])
    assert up.settled_keys is None


def test_resumed_run_reads_the_target_again_and_sees_tampering(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped after two chunks; a landed item is deleted and a stranger added; the resumed run
    reconciles (a read that nothing is sent after when nothing is left to send) but verification
    on resume reads the target itself, and says it lost one item."""
    stop = threading.Event()
    real = engine.make_sender

    def make(target, mode, defs=None):
        send = real(target, mode, defs)
        calls = [0]

        def wrapped(collection, items):
            out = send(collection, items)
            calls[0] += 1
            if calls[0] == 2:
                stop.set()
            return out

        return wrapped

    monkeypatch.setattr(engine, "make_sender", make)
    first = _migrate(tmp_path, 40, stop=stop)
    assert first.exit_code == 130
    monkeypatch.setattr(engine, "make_sender", real)
    other = open_endpoint(f"local:{tmp_path / 't.db'}")
    mine = {marker_of(m.get("metadata"))[0]: m for m in other.export_account()["memories"]}
    landed = sorted(s for s in mine if s)
    other.delete(mine[landed[0]]["id"], collection=mine[landed[0]]["collection"])
    reads = _count_reads(monkeypatch)
    second = _migrate(tmp_path, 40)  # the same command again
    assert second.resumed and second.timings["verify_target_read_reused"] == 0
    assert reads[0] == 2  # the resume's reconciliation, then verification's own read
    t = second.verification["totals"]
    assert not second.verification["exact"] and t["missing"] == 1


@pytest.mark.parametrize("mode", ["add", "import"])
def test_outputs_equal_the_previous_implementation(tmp_path: Path, mode: str) -> None:
    """Prepared + narrow read (this code) vs the journal read whole and compared the old way, on
    the same journal and target: the same report, id map and written files. ``import`` returns
    no ids, so the ids come from the comparison's marker pairs."""
    mems = _mems(90, blank=(7,))
    j = Journal(tmp_path / "j.sqlite")
    j.bind({"source": {"kind": "dump"}, "target": {"scheme": "local"}, "mode": {"mode": mode}})
    j.write_plan(plan_items(mems, mode=mode, source_key=KEY), chunk_size=20)
    j.put(options={"provenance": True, "mode": mode})
    target = open_endpoint(f"local:{tmp_path / 't.db'}")
    Uploader(j, target, make_sender(target, mode), migration_id=KEY, concurrency=2).run()

    # the previous implementation: every column read from the journal, pairs always made
    from longmem_etl.migrate.verifying import plan_items as journal_items

    items = journal_items(j)
    keys = read_target_keys(target, own_key=KEY, detail=False)
    old = compare(items, keys, migration_id=KEY, foreign_copies=True)
    old_map, old_found = _fill_ids(items, old.id_pairs)

    prep = PreparedVerification(j.path)
    new = verify_journal(j, target, migration_id=KEY, prepared=prep)
    assert new.as_dict() == old.as_dict()
    assert new.id_map.equals(old_map) and new.id_map.schema == ID_MAP
    assert (old_found.num_rows > 0) == (mode == "import")
    a = write_outputs(j, tmp_path / "new", new.as_dict(), id_map=new.id_map)
    b = write_outputs(j, tmp_path / "old", old.as_dict(), id_map=old_map)
    assert pq.read_table(a["id_map"]).equals(pq.read_table(b["id_map"]))
    for name in ("dead_letter", "verification"):
        assert Path(a[name]).read_text() == Path(b[name]).read_text()
    assert json.loads(Path(a["dead_letter"]).read_text())["source_id"] == "m007"


def test_a_preparation_made_before_the_plan_grew_is_not_used(tmp_path: Path) -> None:
    j = _journal(tmp_path, _mems(30))
    fixed = fixed_columns(j.path)
    assert _items_from(fixed, narrow_columns(j.path)) is not None
    assert _items_from(fixed.slice(0, 29), narrow_columns(j.path)) is None  # counts differ


@pytest.mark.parametrize("windows", [True, False])
def test_journal_columns_read_in_windows_equal_the_row_by_row_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, windows: bool
) -> None:
    """`verifyprep`'s aggregate windows (and their row fallback) give exactly the journal's
    columns: non-ASCII values, NULL container tags and target ids, more rows than a window."""
    from longmem_etl.migrate import verifyprep
    from longmem_etl.migrate.verifying import plan_items as journal_items

    monkeypatch.setattr(verifyprep, "_BATCH", 7)
    if not windows:
        monkeypatch.setattr(verifyprep, "concatenated_strings", lambda *a: None)
    mems = _mems(40)
    for m in mems[::5]:
        m["collection"], m["container_tag"] = "çà 日本", "tag ✓"
    j = _journal(tmp_path, mems)
    j.record_done(0, [("m000", "tid-é"), ("m002", None)])
    whole = journal_items(j)
    fixed, narrow = fixed_columns(j.path), narrow_columns(j.path)
    assert _items_from(fixed, narrow).equals(whole)
    assert narrow.column("target_id").null_count == 39


@pytest.mark.parametrize(
    ("ambiguous", "reads_made", "rounds"),
    [
        # the last call is ambiguous too: a settled ROUND (its 10 markers) starts at its answer
        ({"m000", "m039"}, [10, 10], 2),
        # it is not: a settled read alone (the whole target, not counted as a round), made once
        ({"m000"}, [10, 0], 1),
    ],
)
def test_a_settled_read_starts_at_the_last_answer_while_an_early_round_is_still_reading(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    ambiguous: set[str],
    reads_made: list[int],
    rounds: int,
) -> None:
    """The first chunk's call is ambiguous, so an early round starts while the last chunk's call
    is out. The early round's read is held until another read starts (30 s at most): the settled
    read starts at the last answer, not after the early round ends; it is kept for verification,
    and every item lands once."""
    j = _journal(tmp_path, _mems(40))
    target = open_endpoint(f"local:{tmp_path / 't.db'}")
    real = make_sender(target, "add")
    first_read = threading.Event()
    # the last answer only once the early round is reading
    send = _held_sender(real, first_read, held="m039", ambiguous=ambiguous)
    reads, seen = _held_reads(monkeypatch, first_read)
    up = Uploader(j, target, send, migration_id=KEY, concurrency=2)
    stats = up.run()
    assert seen == [True]  # the settled read did not wait for the early one
    assert reads == reads_made
    assert stats.ambiguous == rounds and stats.reconcile_rounds == rounds
    assert stats.reconciled_items == 10 * rounds
    assert up.settled_keys is not None and up.settled_keys.num_rows == 40
    _landed_once(target, 40)
    assert j.counts()["items_done"] == 40


def test_a_chunk_taken_but_not_yet_sent_keeps_the_settled_read_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last chunk is taken from the queue but slow to start (its pending rows read late)
    while an early round reads: with no call out, the target still lacks that chunk, so a
    "settled" read then would be voided by its call and wasted (seen as a third read under load).
    The settled read waits for the chunk's answer and is the one verification reuses."""
    j = _journal(tmp_path, _mems(40))
    target = open_endpoint(f"local:{tmp_path / 't.db'}")
    real = make_sender(target, "add")
    first_read = threading.Event()
    real_pending = j.pending_items

    def slow_start(chunk_no):
        if chunk_no == 3:  # taken; its call starts only well after the early round began
            assert first_read.wait(30)
            threading.Event().wait(0.4)
        return real_pending(chunk_no)

    # chunk 2 is out when the early round starts: that round is not quiet
    send = _held_sender(real, first_read, held="m029", ambiguous={"m000"})

    reads, _seen = _held_reads(monkeypatch, first_read)  # the early round, until the settled
    monkeypatch.setattr(j, "pending_items", slow_start)
    up = Uploader(j, target, send, migration_id=KEY, concurrency=2)
    up.run()
    assert reads == [10, 0]
    assert up.settled_keys is not None and up.settled_keys.num_rows == 40
    _landed_once(target, 40)
