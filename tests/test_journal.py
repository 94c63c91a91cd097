"""The journal: binding, plan storage, state transitions, durability settings."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from longmem_etl.errors import BadInput
from longmem_etl.migrate.journal import Journal
from longmem_etl.migrate.plan import plan_items

BINDING = {
    "source": {"kind": "dump", "sha256": "s"},
    "spec": None,
    "target": {"scheme": "local", "path": "/a.db"},
    "mode": {"mode": "add", "provenance": True},
}


def _journal(tmp_path: Path, n: int = 250) -> Journal:
    j = Journal(tmp_path / "j.sqlite")
    j.bind(BINDING)
    mems = [{"id": f"m{i}", "collection": "c", "text": f"t{i}"} for i in range(n)]
    j.write_plan(plan_items(mems, mode="add", source_key="M"), chunk_size=100)
    return j


def test_wal_and_full_sync(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    assert j._q("PRAGMA journal_mode")[0][0] == "wal"
    assert j._q("PRAGMA synchronous")[0][0] == 2  # FULL
    j.close()


def test_binding_to_another_target_refuses_and_names_it(tmp_path: Path) -> None:
    _journal(tmp_path).close()
    with Journal(tmp_path / "j.sqlite") as j:
        assert j.bind(BINDING) is True  # same identities: a resume
        other = {**BINDING, "target": {"scheme": "local", "path": "/b.db"}}
        with pytest.raises(BadInput, match="bound to another target.*/a.db.*/b.db"):
            j.bind(other)
        with pytest.raises(BadInput, match="another mode"):
            j.bind({**BINDING, "mode": {"mode": "import", "provenance": True}})


def test_plan_is_stored_whole_and_chunked(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    assert j.planned
    c = j.counts()
    assert c["chunks_total"] == 3 and c["items_total"] == 250 and c["chunks"]["planned"] == 3
    assert len(j.pending_items(0)) == 100 and len(j.pending_items(2)) == 50
    j.close()


def test_chunk_is_done_only_when_every_item_is_recorded(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    items = j.pending_items(0)
    j.mark_in_flight(0)
    assert j.record_done(0, [(sid, f"t-{sid}") for sid, _, _ in items[:60]]) is False
    assert j.chunks_in("in_flight") == [0]
    assert j.record_dead_items(0, [(items[60][0], 422, "bad")]) is False
    assert j.record_done(0, [(sid, f"t-{sid}") for sid, _, _ in items[61:]]) is True
    assert j.chunks_in("done") == [0]
    assert j.dead_letters()[0]["status"] == 422
    assert len(j.claimed_target_ids()) == 99
    j.close()


def test_non_transient_failures_go_dead_after_max_attempts(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    assert j.record_failure(1, "boom", max_attempts=3) == "failed"
    assert j.record_failure(1, "boom", max_attempts=3) == "failed"
    assert j.record_failure(1, "boom", max_attempts=3) == "dead"
    c = j.counts()
    assert c["chunks"]["dead"] == 1 and c["items_dead"] == 100
    assert "gave up after 3 attempts" in j.dead_letters()[0]["message"]
    j.close()


def test_committed_state_survives_another_connection(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    j.mark_in_flight(2)
    # a second process's view, while the first connection is still open
    other = sqlite3.connect(tmp_path / "j.sqlite")
    assert other.execute("SELECT state FROM chunks WHERE chunk_no = 2").fetchone()[0] == "in_flight"
    other.close()
    j.close()


def test_someone_elses_sqlite_file_is_never_taken_for_a_journal(tmp_path: Path) -> None:
    from longmem_etl.api.endpoints import open_endpoint
    from longmem_etl.migrate import MigrationOptions, migration_status, run_migration
    from longmem_etl.migrate.journal import is_journal

    store = tmp_path / "store.db"
    open_endpoint(f"local:{store}").add("a note")
    before = store.read_bytes()
    assert not is_journal(store) and not is_journal(tmp_path / "missing.sqlite")
    with pytest.raises(BadInput, match="not a migration journal"):
        sample = (
            Path(__file__).resolve().parent.parent
            / "longmem_etl"
            / "sample_data"
            / "acme-small.json"
        )
        run_migration(
            MigrationOptions(
                source=str(sample), target=f"local:{tmp_path / 'x.db'}", journal=str(store)
            )
        )
    with pytest.raises(BadInput, match="not a longmem-etl migration journal"):
        migration_status(store)
    assert store.read_bytes() == before
    j = _journal(tmp_path)
    j.close()
    assert is_journal(tmp_path / "j.sqlite")
