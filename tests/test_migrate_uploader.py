"""The uploader against the real embedded store with injected faults (and two tiny in-test targets
for behaviours the store cannot be asked for: a 403 and a non-API exception)."""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path

import pytest

from longmem_etl.api.endpoints import open_endpoint
from longmem_etl.errors import APIError
from longmem_etl.migrate.journal import Journal
from longmem_etl.migrate.keys import marker_of
from longmem_etl.migrate.limiter import AdaptiveLimit, backoff
from longmem_etl.migrate.plan import plan_items
from longmem_etl.migrate.uploader import Uploader, make_sender

MID = "test-migration"


def _mems(n: int) -> list[dict]:
    return [
        {
            "id": f"m{i}",
            "collection": f"c{i % 3}",
            "text": f"memory number {i}",
            "container_tag": f"u{i % 5}",
            "metadata": {"k": i},
            "importance": 0.5,
            "category": "fact",
            "source": "crm",
            "created_at": f"2024-01-01T00:{i % 60:02d}:00Z",
        }
        for i in range(n)
    ]


def _setup(
    tmp_path: Path, mems: list[dict], mode: str, faults: str = "", chunk_size: int = 50
) -> tuple[Journal, object]:
    j = Journal(tmp_path / f"j-{mode}.sqlite")
    j.bind({"source": 1, "spec": None, "target": 2, "mode": mode})
    j.write_plan(plan_items(mems, mode=mode, source_key=MID), chunk_size=chunk_size)
    target = open_endpoint(f"local:{tmp_path / f't-{mode}.db'}{faults}")
    return j, target


def _exported(target) -> list[dict]:
    """The target's contents through a fault-free handle on the same store file."""
    return open_endpoint(f"local:{target.path}").export_account()["memories"]


def _landed(target) -> Counter:
    return Counter(marker_of(m["metadata"])[0] for m in _exported(target))


@pytest.mark.parametrize("mode", ["add", "import"])
def test_faults_still_land_everything_exactly_once(tmp_path: Path, mode: str) -> None:
    mems = _mems(1200)
    j, target = _setup(
        tmp_path, mems, mode, "?latency_ms=2&fail_rate=0.15&ambiguous_rate=0.1&seed=3"
    )
    up = Uploader(
        j, target, make_sender(target, mode), migration_id=MID, concurrency=6, backoff_base=0.01
    )
    stats = up.run()
    landed = _landed(target)
    assert set(landed) == {m["id"] for m in mems}
    assert max(landed.values()) == 1
    assert stats.transient_errors > 0 and stats.ambiguous > 0 and stats.reconciled_items > 0
    c = j.counts()
    assert c["items_done"] == 1200 and c["chunks"]["done"] == c["chunks_total"]
    if mode == "add":  # add_many returns ids: every done item has its target id
        ids = {m["id"] for m in _exported(target)}
        assert j.claimed_target_ids() == ids


def test_bisection_dead_letters_exactly_the_bad_item(tmp_path: Path) -> None:
    mems = _mems(300)
    mems[137]["text"] = "   "  # the store refuses blank text with 422
    j, target = _setup(tmp_path, mems, "add")
    up = Uploader(j, target, make_sender(target, "add"), migration_id=MID, concurrency=3)
    stats = up.run()
    assert stats.bisections >= 1
    dead = j.dead_letters()
    assert [d["source_id"] for d in dead] == ["m137"]
    assert dead[0]["status"] == 422 and "non-empty" in dead[0]["message"]
    assert json.loads(json.dumps(dead[0]["item"]))["text"] == "   "
    assert set(_landed(target)) == {m["id"] for m in mems} - {"m137"}


def test_import_skips_are_dead_lettered_not_retried_forever(tmp_path: Path) -> None:
    mems = _mems(120)
    mems[5]["text"] = ""
    j, target = _setup(tmp_path, mems, "import")
    Uploader(j, target, make_sender(target, "import"), migration_id=MID, concurrency=2).run()
    assert [d["source_id"] for d in j.dead_letters()] == ["m5"]
    assert len(_landed(target)) == 119


def test_rate_limits_lower_concurrency_and_everything_lands(tmp_path: Path) -> None:
    mems = _mems(300)
    j, target = _setup(tmp_path, mems, "add", "?latency_ms=5&rate_limit_rps=30", chunk_size=5)
    up = Uploader(
        j, target, make_sender(target, "add"), migration_id=MID, concurrency=8, backoff_base=0.01
    )
    stats = up.run()
    assert stats.rate_limited > 0
    assert up.limit.lowest < 8 and up.limit.cuts >= 1
    assert j.counts()["items_done"] == 300 and j.counts()["items_dead"] == 0  # 429s never kill
    assert max(_landed(target).values()) == 1


def test_adaptive_limit_halves_once_per_burst_and_recovers() -> None:
    lim = AdaptiveLimit(8, cooldown=60)
    for _ in range(5):  # one burst of simultaneous 429s
        lim.on_rate_limited()
    assert lim.limit == 4 and lim.cuts == 1
    for _ in range(200):
        lim.on_success()
    assert lim.limit == 8  # back up, never above the maximum
    assert backoff(0, retry_after=2.5) >= 2.5 and backoff(10, base=0.1, cap=1) <= 1


def test_in_flight_chunk_found_at_resume_is_reconciled_not_resent(tmp_path: Path) -> None:
    mems = _mems(200)
    j, target = _setup(tmp_path, mems, "add")
    # A previous run sent chunk 0 and was killed before journaling the answer.
    rows = j.pending_items(0)
    j.mark_in_flight(0)
    target.add_many([json.loads(p) for _, p, _ in rows], collection=j.chunk_collection(0))
    stats = Uploader(j, target, make_sender(target, "add"), migration_id=MID).run()
    assert stats.reconciled_items == len(rows) and stats.reconcile_rounds == 1
    landed = _landed(target)
    assert len(landed) == 200 and max(landed.values()) == 1


def test_fingerprint_mode_reconciles_without_markers(tmp_path: Path) -> None:
    mems = _mems(200)
    j = Journal(tmp_path / "j.sqlite")
    j.bind({"source": 1, "spec": None, "target": 2, "mode": "add"})
    j.write_plan(plan_items(mems, mode="add", source_key=MID, provenance=False), chunk_size=50)
    target = open_endpoint(f"local:{tmp_path / 't.db'}?ambiguous_rate=0.3&seed=5")
    stats = Uploader(
        j, target, make_sender(target, "add"), migration_id=MID, provenance=False
    ).run()
    exported = _exported(target)
    assert stats.ambiguous > 0
    assert sorted(m["text"] for m in exported) == sorted(m["text"] for m in mems)
    assert all(marker_of(m["metadata"]) == (None, None) for m in exported)


class _Refusing:
    """A target whose key is read-only: every write is a 403."""

    def add_many(self, items, **kw):
        raise APIError(403, "read-only key")


class _Broken:
    """A target whose client raises something that is not an API error."""

    calls = 0

    def add_many(self, items, **kw):
        self.calls += 1
        raise ValueError("unexpected response shape")


def test_403_stops_the_run_without_dead_letters(tmp_path: Path) -> None:
    j, _ = _setup(tmp_path, _mems(100), "add")
    t = _Refusing()
    stop = threading.Event()
    stats = Uploader(j, t, make_sender(t, "add"), migration_id=MID, stop=stop).run()
    assert stats.fatal and "403" in stats.fatal and stop.is_set()
    assert j.counts()["items_dead"] == 0 and j.counts()["items_pending"] == 100


def test_a_full_journal_in_a_worker_is_the_users_to_fix_and_named_as_such(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The journal fills while a worker notes a 503 (a write in the worker's own thread, not
    the committer's): the failure carried to the engine is the journal's own line, the user's
    to fix (exit 2, `Failure.user`), not a bug; nothing is lost: every item is still pending or
    done. A 403 is the user's too; the first failure is the one reported."""
    from longmem_etl.migrate.journal import JournalFull

    j, _ = _setup(tmp_path, _mems(100), "add")
    t = open_endpoint(f"local:{tmp_path / 't.db'}?fail_rate=1&seed=1")

    def full(*a, **kw):
        raise JournalFull(f"{j.path}: no space left on device while writing the journal")

    monkeypatch.setattr(j, "note_error", full)
    up = Uploader(j, t, make_sender(t, "add"), migration_id=MID, backoff_base=0.001)
    stats = up.run()
    assert up.failure is not None and up.failure.user
    assert up.failure.message.startswith(str(j.path)) and "no space left" in up.failure.message
    assert stats.fatal and "JournalFull" in stats.fatal
    c = j.counts()
    assert c["items_dead"] == 0 and c["items_done"] + c["items_pending"] == 100

    j2, _ = _setup(tmp_path / "b", _mems(10), "add")
    refusing = Uploader(j2, _Refusing(), make_sender(_Refusing(), "add"), migration_id=MID)
    refusing.run()
    assert refusing.failure is not None and refusing.failure.user
    assert (
        refusing.failure.message.startswith("target refused") and "403" in refusing.failure.message
    )


def test_a_full_journal_in_a_worker_ends_the_migration_with_exit_2_and_the_resume_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from longmem_etl.errors import BadInput
    from longmem_etl.migrate import MigrationOptions, run_migration
    from longmem_etl.migrate.journal import JournalFull

    dump = tmp_path / "dump.json"
    dump.write_text(json.dumps({"memories": _mems(30)}))

    def full(self, *a, **kw):
        raise JournalFull(f"{self.path}: no space left on device while writing the journal")

    monkeypatch.setattr(Journal, "note_error", full)
    opts = MigrationOptions(
        source=str(dump),
        target=f"local:{tmp_path / 't.db'}?fail_rate=1&seed=1",
        work_root=str(tmp_path / "work"),
        show_progress=False,
    )
    with pytest.raises(BadInput) as err:  # exit 2, not 1: the user's disk, not a bug
        run_migration(opts)
    assert "no space left on device" in str(err.value) and "resume with:" in str(err.value)
    assert "JournalFull" not in str(err.value)


def test_other_errors_count_attempts_then_dead(tmp_path: Path) -> None:
    j, _ = _setup(tmp_path, _mems(60), "add")
    t = _Broken()
    Uploader(
        j, t, make_sender(t, "add"), migration_id=MID, max_attempts=3, backoff_base=0.001
    ).run()
    c = j.counts()
    assert c["chunks"]["dead"] == 3 and c["items_dead"] == 60 and t.calls == 9


class _NoExport:
    """The real store, except that the whole-account export is too big for the server (413)."""

    def __init__(self, store) -> None:
        self.store = store
        self.pages = 0

    def export_account(self):
        raise APIError(413, "export too large; page with list_memories")

    def list_memories(self, **kw):
        self.pages += 1
        return self.store.list_memories(**kw)

    def collections(self):
        return self.store.collections()

    def add_many(self, items, **kw):
        return self.store.add_many(items, **kw)


def test_reconciliation_pages_when_the_account_cannot_be_exported(tmp_path: Path) -> None:
    from longmem_etl.migrate.reconcile import TargetIndex

    mems = _mems(450)
    j, store = _setup(tmp_path, mems, "add")
    target = _NoExport(store)
    up = Uploader(j, target, make_sender(target, "add"), migration_id=MID, concurrency=2)
    up.run()
    full = TargetIndex.from_target(store, MID, fingerprints=False)
    paged = TargetIndex.from_target(target, MID, fingerprints=False)
    assert target.pages >= 5 and paged.size == full.size == 450
    assert paged.by_source == full.by_source
    # a resumed run reconciles every unfinished chunk through the pages, and sends nothing twice
    j.mark_in_flight(0)
    with j._tx() as db:
        db.execute("UPDATE items SET state = 'planned' WHERE chunk_no = 0")
    stats = Uploader(j, target, make_sender(target, "add"), migration_id=MID).run(resumed=True)
    assert stats.calls == 0 and stats.reconciled_items == 50
    assert max(_landed(store).values()) == 1


def test_a_bisected_part_that_gives_up_dead_letters_only_its_own_items(tmp_path: Path) -> None:
    """The retry budget is per call. A chunk is bisected (one item refused); one of its parts then
    never gets through (503s): exactly that part's items are dead-lettered, the refused item with
    its 422, and every other part lands, whichever worker took which part first. (This failed
    once under load: a part that gave up stopped its siblings, so what died depended on whether
    they had been sent yet; `test_..._however_the_parts_are_scheduled` replays that.)"""
    _gives_up_case(tmp_path)


def test_a_part_that_gives_up_kills_the_same_items_however_the_parts_are_scheduled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same case with every sibling part held 50 ms after a worker takes it off the queue
    (what a descheduled thread on a loaded machine does): the outcome does not change."""
    from longmem_etl.migrate import uploader

    real_take = uploader.WorkQueue.take

    def slow_take(self):
        unit = real_take(self)
        items = unit.items if unit is not None else None
        if items is not None and not any(p.get("text") == "memory number 140" for _, p in items):
            threading.Event().wait(0.05)
        return unit

    monkeypatch.setattr(uploader.WorkQueue, "take", slow_take)
    _gives_up_case(tmp_path)


def _gives_up_case(tmp_path: Path) -> None:
    mems = _mems(300)
    mems[137]["text"] = "   "  # the store refuses it (422): its chunk is bisected
    j, target = _setup(tmp_path, mems, "add")
    real = make_sender(target, "add")
    down = "memory number 140"

    def send(collection, items):
        if len(items) < 50 and any(i.get("text") == down for i in items):
            raise APIError(503, "unavailable")  # a part holding m140 never gets through
        return real(collection, items)

    # what must happen, from the plan alone: a refused part is halved, a part holding m140 gives up
    chunk = next(c for c in j.chunks_in("planned") if "m140" in _ids(j, c))
    texts = {m["id"]: m["text"] for m in mems}
    want_dead: dict[str, str] = {}

    def model(part: list[str]) -> None:
        if len(part) < 50 and "m140" in part:
            want_dead.update(dict.fromkeys(part, "gave up after 2 attempts"))
        elif any(not texts[s].strip() for s in part):
            if len(part) == 1:
                want_dead[part[0]] = "text must be a non-empty string"
            else:
                model(part[: len(part) // 2])
                model(part[len(part) // 2 :])

    model(_ids(j, chunk))
    assert 1 < len(want_dead) < 50  # the interesting case: a part dies, not the chunk

    up = Uploader(
        j, target, send, migration_id=MID, concurrency=4, max_attempts=2, backoff_base=0.001
    )
    stats = up.run()
    dead = {d["source_id"]: d for d in j.dead_letters()}
    assert set(dead) == set(want_dead)
    for sid, why in want_dead.items():
        assert why in dead[sid]["message"], (sid, dead[sid])
    landed = _landed(target)
    assert set(landed) == {m["id"] for m in mems} - set(dead) and max(landed.values()) == 1
    assert stats.dead_items == len(dead)
    c = j.counts()
    assert c["items_done"] == len(landed) and c["items_dead"] == len(dead)
    assert c["chunks"]["done"] + c["chunks"].get("dead", 0) == c["chunks_total"]


def _ids(j: Journal, chunk_no: int) -> list[str]:
    """The chunk's pending source ids, in the order the uploader sends them."""
    return [r.source_id for r in j.pending_items(chunk_no)]


def test_calls_run_under_the_short_switch_interval_which_is_restored(tmp_path: Path) -> None:
    """Every call of an upload sees the lowered GIL switch interval (calls re-take the GIL many
    times while the freeze runs beside them), and the caller's interval comes back afterwards."""
    import sys

    from longmem_etl.migrate import uploader as uploader_mod

    j, target = _setup(tmp_path, _mems(120), "add", chunk_size=20)
    send = make_sender(target, "add")
    seen: list[float] = []

    def spying_send(collection: str, items: list[dict]) -> list[str | None]:
        seen.append(sys.getswitchinterval())
        return send(collection, items)

    before = sys.getswitchinterval()
    up = Uploader(j, target, spying_send, migration_id=MID, concurrency=3)
    up.run()
    assert sys.getswitchinterval() == before
    assert len(seen) == j.counts()["chunks_total"] > 1
    assert max(seen) <= uploader_mod._SWITCH_INTERVAL < before
