"""The plan written while the upload runs (`migrate.planstream`) and the uploader's pre-split.

- the streamed plan is the same plan as the one written whole (order, payloads, chunks), across
  batch boundaries, with duplicate ids, absent fields and timestamps kept raw;
- a run killed while its plan is still being written (chunks already sent) never sent an item
  whose plan row was not durable, and the re-run ends exact;
- an item the target is known to refuse is dead-lettered without a call: no bisection.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from cli_support import run_cli, start_cli

from longmem_etl.api.endpoints import open_endpoint
from longmem_etl.migrate import MigrationOptions, planstream, run_migration
from longmem_etl.migrate.journal import Journal
from longmem_etl.migrate.plan import plan_items
from longmem_etl.migrate.uploader import presplit
from longmem_etl.snapshots import convert_dump, open_snapshot

BINDING = {"source": {"kind": "dump"}, "target": {"scheme": "local"}, "mode": {"mode": "add"}}


def _odd_dump(path: Path, n: int) -> None:
    mems = []
    for i in range(n):
        m = {
            "id": f"m{i % 97:03d}-{i}",
            "collection": ["b", "a", "ç", "a"][i % 4],
            "text": f"text {i} " + "é" * (i % 5),
            "metadata": [{"k": i}, None, "s", {"big": 2**70}][i % 4],
            "container_tag": None if i % 3 == 0 else f"u{i % 5}",
            "created_at": ["2025-01-02T03:04:05Z", "2025-01-02T03:04:05", None][i % 3],
            "importance": [0.5, 1, 0.10000000000000001][i % 3],
        }
        if i % 7 == 0:
            del m["created_at"]
        if i % 11 == 0:
            del m["collection"]
        mems.append(m)
    path.write_text(json.dumps({"tenant": "odd", "memories": mems}))


def _rows(j: Journal) -> tuple[list, list]:
    items = j._q(
        "SELECT source_id, seq, chunk_no, collection, container_tag, sort_key, fp, nbytes,"
        " payload, content, state FROM items ORDER BY chunk_no, source_id"
    )
    chunks = j._q("SELECT chunk_no, collection, n_items, n_bytes, state FROM chunks ORDER BY 1")
    return [r[:1] + r[2:] for r in items], chunks


def test_streamed_plan_is_the_plan_written_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _odd_dump(tmp_path / "d.json", 300)
    snap = open_snapshot(convert_dump(tmp_path / "d.json", tmp_path / "root").path)
    whole = Journal(tmp_path / "whole.sqlite")
    whole.bind(BINDING)
    mems = [m for b in snap.iter_dump_memories() for m in b]
    whole.write_plan(plan_items(mems, mode="add", source_key="K"), chunk_size=7, max_bytes=400)
    monkeypatch.setattr(planstream, "BATCH", 13)  # many batches, chunks spanning two of them
    streamed = Journal(tmp_path / "streamed.sqlite")
    streamed.bind(BINDING)
    fed: list[int] = []
    report = planstream.stream_plan(
        streamed,
        snap.memories_path,
        mode="add",
        source_key="K",
        chunk_size=7,
        max_bytes=400,
        put=fed.append,
    )
    assert streamed.planned and report.items == 300 and report.batches == 24
    a_items, a_chunks = _rows(whole)
    b_items, b_chunks = _rows(streamed)
    # same order, same payloads, same chunks
    assert a_items == b_items
    assert a_chunks == b_chunks
    # every chunk fed once (as it closes: a full chunk before the still-open ones it overtook)
    assert sorted(fed) == [c[0] for c in b_chunks] and len(set(fed)) == len(fed)


@pytest.mark.parametrize(("mode", "key"), [("add", "K"), ("add", None), ("import", "K")])
def test_the_dry_runs_plan_is_the_reference_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, key: str | None
) -> None:
    """`--dry-run` plans column-wise (`planstream.planned_items`, the real run's way): the same
    items, in the same order, with the same payloads and sizes as `plan.plan_items` over the
    dump-form memories, duplicate ids and odd values included, across batch boundaries."""
    _odd_dump(tmp_path / "d.json", 300)
    snap = open_snapshot(convert_dump(tmp_path / "d.json", tmp_path / "root").path)
    mems = [m for b in snap.iter_dump_memories() for m in b]
    reference = list(plan_items(mems, mode=mode, source_key=key, provenance=key is not None))
    monkeypatch.setattr(planstream, "BATCH", 13)
    planned = list(planstream.planned_items(snap.memories_path, mode=mode, source_key=key))
    fields = ("source_id", "collection", "container_tag", "sort_key", "fp", "payload", "content")
    assert [tuple(getattr(p, f) for f in fields) + (p.nbytes,) for p in planned] == [
        tuple(getattr(p, f) for f in fields) + (p.nbytes,) for p in reference
    ]
    assert len({p.source_id for p in planned}) == 300  # duplicate ids got their suffix


def test_dry_run_counts_what_the_real_run_plans(tmp_path: Path) -> None:
    """The dry run's summary (items, chunks, bytes per collection, refusals) is what the real
    run then writes into its journal."""
    from longmem_etl.migrate.engine import dry_run

    _odd_dump(tmp_path / "d.json", 300)
    opts = MigrationOptions(
        source=str(tmp_path / "d.json"),
        target=f"local:{tmp_path / 't.db'}?max_text_chars=12",
        work_root=str(tmp_path / "work"),
        show_progress=False,
        chunk_size=7,
    )
    plan = dry_run(opts).plan
    res = run_migration(opts)
    j = Journal(Path(res.journal))
    per = dict(
        (c, (n, k, b))
        for c, n, k, b in j._q(
            "SELECT collection, count(*), count(DISTINCT chunk_no), sum(nbytes) FROM items"
            " GROUP BY collection"
        )
    )
    assert {c: (v["items"], v["chunks"], v["bytes"]) for c, v in plan["collections"].items()} == per
    assert plan["refused"]["count"] == res.dead_letters > 0


def test_held_items_are_written_done_and_changed_ones_listed(tmp_path: Path) -> None:
    _odd_dump(tmp_path / "d.json", 40)
    snap = open_snapshot(convert_dump(tmp_path / "d.json", tmp_path / "root").path)
    j = Journal(tmp_path / "j.sqlite")
    j.bind(BINDING)
    first = next(iter(plan_items(next(snap.iter_dump_memories()), mode="add", source_key="K")))
    held = {first.source_id: ("t-1", 2, first.content), "m001-1": ("t-2", 1, "other-content")}
    rep = planstream.stream_plan(
        j,
        snap.memories_path,
        mode="add",
        source_key="K",
        chunk_size=5,
        max_bytes=1 << 20,
        held=held,
    )
    assert (rep.held, rep.with_copies, rep.changed) == (2, 1, 1)
    assert j.counts()["items_done"] == 2
    assert [c["source_id"] for c in j.changed_items()] == ["m001-1"]


def _done_and_planned(journal: Path) -> tuple[int, bool]:
    try:
        con = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=1)
        try:
            done = con.execute("SELECT count(*) FROM items WHERE state = 'done'").fetchone()[0]
            planned = con.execute("SELECT count(*) FROM migration WHERE k = 'planned'").fetchone()
            return done, bool(planned[0])
        finally:
            con.close()
    except sqlite3.Error:
        return 0, False


def test_killed_while_planning_sent_only_durable_rows_and_rerun_is_exact(tmp_path: Path) -> None:
    n = 6000
    mems = [
        {"id": f"m{i:05d}", "collection": "c", "text": f"fact {i}", "metadata": {"i": i}}
        for i in range(n)
    ]
    (tmp_path / "d.json").write_text(json.dumps({"tenant": "t", "memories": mems}))
    db = tmp_path / "t.db"
    journal = tmp_path / "w" / "journal.sqlite"
    args = [
        "migrate",
        "--source",
        "d.json",
        "--target",
        f"local:{db}?latency_ms=5",
        "--journal",
        str(journal),
        "--chunk-size",
        "10",
        "--concurrency",
        "4",
    ]
    env = {"LONGMEM_ETL_PLAN_BATCH": "50", "LONGMEM_ETL_HOME": str(tmp_path / "h")}
    proc = start_cli(*args, cwd=tmp_path, env=env, stderr=subprocess.PIPE)
    caught = False
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        done, planned = _done_and_planned(journal)
        if done >= 20 and not planned:
            proc.send_signal(signal.SIGKILL)
            caught = True
            break
        time.sleep(0.002)
    proc.wait()
    assert caught, "the plan finished before any upload was seen: planning did not overlap"
    with sqlite3.connect(journal) as con:
        rows = {r[0] for r in con.execute("SELECT source_id FROM items")}
        assert con.execute("SELECT count(*) FROM migration WHERE k = 'planned'").fetchone()[0] == 0
    landed = open_endpoint(f"local:{db}", create=False).export_account()["memories"]
    sent = {m["metadata"]["_longmem_etl"]["source_id"] for m in landed}
    assert sent and sent <= rows  # nothing was sent before its plan row was durable
    assert len(rows) < n  # really killed mid-plan
    final = run_cli(*args, "--json", cwd=tmp_path, env=env)
    assert final.returncode == 0, final.stderr
    out = json.loads(final.stdout)
    assert out["verification"]["exact"] is True
    assert out["holdings"]["already_in_target"] == len(landed)
    landed = open_endpoint(f"local:{db}", create=False).export_account()["memories"]
    by_sid = Counter(m["metadata"]["_longmem_etl"]["source_id"] for m in landed)
    assert len(by_sid) == n and max(by_sid.values()) == 1


def test_presplit_takes_out_known_refusals() -> None:
    items = [(f"s{i}", {"text": "x" * (50 if i in (2, 3, 7) else 5)}) for i in range(9)]

    def refuses(item: dict, size: int | None) -> str | None:
        return "too long" if len(item["text"]) > 10 else None

    good, refused = presplit(items, refuses)
    assert [s for s, _ in good] == ["s0", "s1", "s4", "s5", "s6", "s8"]
    assert refused == [("s2", "too long"), ("s3", "too long"), ("s7", "too long")]
    assert presplit(items[2:4], refuses) == ([], [("s2", "too long"), ("s3", "too long")])
    assert presplit(items, None) == (items, [])


def test_known_refused_item_is_dead_lettered_without_a_call(tmp_path: Path) -> None:
    mems = [{"id": f"m{i:03d}", "collection": "c", "text": f"fact {i}"} for i in range(60)]
    mems[17]["text"] = "y" * 100_001  # over the embedded store's text limit
    (tmp_path / "d.json").write_text(json.dumps({"tenant": "t", "memories": mems}))
    res = run_migration(
        MigrationOptions(
            source=str(tmp_path / "d.json"),
            target=f"local:{tmp_path / 't.db'}",
            chunk_size=20,
            concurrency=2,
            journal=str(tmp_path / "w" / "journal.sqlite"),
            show_progress=False,
        )
    )
    assert res.dead_letters == 1 and res.upload["bisections"] == 0
    # 3 chunks, 3 calls: the first goes without m017, which the target is known to refuse
    assert res.upload["calls"] == 3 and res.upload["presplit_items"] == 1
    dead = [json.loads(x) for x in Path(res.outputs["dead_letter"]).read_text().splitlines()]
    assert [d["source_id"] for d in dead] == ["m017"] and dead[0]["status"] == 422
    assert "max_text_chars" in dead[0]["message"] and "not sent" in dead[0]["message"]
    assert dead[0]["item"]["text"] == "y" * 100_001  # the item as planned, to fix and replay
    assert (
        res.verification["totals"]["missing"] == 1 and res.verification["totals"]["present"] == 59
    )


def test_halves_of_a_refused_chunk_run_concurrently(tmp_path: Path) -> None:
    """One chunk, two items the store refuses (blank text: no known limit says so, so it is
    bisected): the halves go back to the shared queue and idle workers send them at once."""
    from longmem_etl.migrate.uploader import Uploader, make_sender

    mems = [{"id": f"m{i:02d}", "collection": "c", "text": f"fact {i}"} for i in range(16)]
    mems[0]["text"] = mems[15]["text"] = "   "
    j = Journal(tmp_path / "j.sqlite")
    j.bind(BINDING)
    j.write_plan(plan_items(mems, mode="add", source_key="K"), chunk_size=16)
    target = open_endpoint(f"local:{tmp_path / 't.db'}?latency_ms=60")
    send = make_sender(target, "add")
    lock, state = threading.Lock(), {"now": 0, "max": 0}

    def counting(collection: str, items: list[dict]) -> list[str | None]:
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        try:
            return send(collection, items)
        finally:
            with lock:
                state["now"] -= 1

    stats = Uploader(j, target, counting, migration_id="K", concurrency=4).run()
    assert state["max"] >= 2  # a lone chunk's halves were in flight together
    assert stats.bisections >= 2 and stats.dead_items == 2
    assert sorted(d["source_id"] for d in j.dead_letters()) == ["m00", "m15"]
    assert j.counts()["items_done"] == 14


def test_holdings_read_during_the_freeze_leaves_nothing_behind_a_refused_run(
    tmp_path: Path,
) -> None:
    """The target's holdings are read in a thread while the source is frozen. A source the
    freeze refuses (exit 2) ends that read too, and a local target that did not exist is not
    created by it; with an existing target, what it holds is still never sent again."""
    from longmem_etl.errors import BadInput

    (tmp_path / "bad.json").write_text('{"tenant": "t", "memories": [')  # truncated
    target = tmp_path / "t.db"
    opts = MigrationOptions(
        source=str(tmp_path / "bad.json"),
        target=f"local:{target}?latency_ms=50",
        journal=str(tmp_path / "w" / "journal.sqlite"),
        show_progress=False,
    )
    with pytest.raises(BadInput):
        run_migration(opts)
    assert not target.exists()
    assert not [t for t in threading.enumerate() if t.name == "holdings-read"]

    mems = [{"id": f"m{i:02d}", "collection": "c", "text": f"fact {i}"} for i in range(30)]
    (tmp_path / "d.json").write_text(json.dumps({"tenant": "t", "memories": mems}))
    first = run_migration(
        MigrationOptions(
            source=str(tmp_path / "d.json"),
            target=f"local:{target}",
            journal=str(tmp_path / "w1" / "journal.sqlite"),
            show_progress=False,
        )
    )
    assert first.exit_code == 0
    again = run_migration(  # another journal: only the target's markers say what landed
        MigrationOptions(
            source=str(tmp_path / "d.json"),
            target=f"local:{target}?latency_ms=50",
            journal=str(tmp_path / "w2" / "journal.sqlite"),
            show_progress=False,
        )
    )
    assert again.exit_code == 0 and again.upload["calls"] == 0
    assert again.holdings["already_in_target"] == 30 and "holdings" in again.timings
    assert len(open_endpoint(f"local:{target}").export_account()["memories"]) == 30


def test_killed_while_reading_holdings_during_the_freeze_then_rerun_is_exact(
    tmp_path: Path,
) -> None:
    """SIGKILL while the target's holdings are still being read (a slow export, in its thread,
    beside the freeze): nothing was sent, and the re-run sends only what the target lacks."""
    n = 400
    mems = [{"id": f"m{i:04d}", "collection": "c", "text": f"fact {i}"} for i in range(n)]
    (tmp_path / "half.json").write_text(json.dumps({"tenant": "t", "memories": mems[: n // 2]}))
    (tmp_path / "d.json").write_text(json.dumps({"tenant": "t", "memories": mems}))
    db = tmp_path / "t.db"
    env = {"LONGMEM_ETL_HOME": str(tmp_path / "h")}
    first = run_cli(  # half of it landed earlier, under another journal
        "migrate", "--source", "half.json", "--target", f"local:{db}",
        "--journal", str(tmp_path / "w0" / "journal.sqlite"),
        cwd=tmp_path, env=env, timeout=120,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    args = ["migrate", "--source", "d.json", "--journal", str(tmp_path / "w" / "journal.sqlite")]
    slow = [*args, "--target", f"local:{db}?latency_ms=3000"]
    proc = start_cli(*slow, cwd=tmp_path, env=env, stderr=subprocess.PIPE)
    journal = tmp_path / "w" / "journal.sqlite"
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if journal.exists() and (tmp_path / "w" / "frozen").exists():
            time.sleep(0.3)  # the freeze is under way or done; the export still sleeps
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    held = open_endpoint(f"local:{db}", create=False).export_account()["memories"]
    assert len(held) == n // 2  # nothing was sent by the killed run
    final = run_cli(*args, "--target", f"local:{db}", "--json", cwd=tmp_path, env=env, timeout=120)
    assert final.returncode == 0, final.stderr
    out = json.loads(final.stdout)
    assert out["verification"]["exact"] is True
    assert out["holdings"]["already_in_target"] == n // 2
    landed = open_endpoint(f"local:{db}", create=False).export_account()["memories"]
    by_sid = Counter(m["metadata"]["_longmem_etl"]["source_id"] for m in landed)
    assert len(by_sid) == n and max(by_sid.values()) == 1
