"""``diff``: added / removed / changed memories between snapshots with known changes, the same
query run by hand in DuckDB, and the CLI."""

from __future__ import annotations

import copy
import json

import duckdb
import pytest

from longmem_etl.cli.main import main
from longmem_etl.snapshots import snapshot_from_dump
from longmem_etl.snapshots.diff import SQL_PATH, diff_relation, diff_snapshots


def _mem(i: int, **kw):
    m = {
        "id": f"m{i}",
        "collection": "notes",
        "text": f"memory number {i}",
        "importance": 0.5,
        "category": "fact",
        "metadata": {"a": 1, "b": [1, 2]},
        "source": "sdk",
        "container_tag": "user-1",
        "pinned": False,
        "archived": False,
        "created_at": "2025-01-01T00:00:00Z",
        "updated_at": "2025-01-01T00:00:00Z",
        "expires_at": None,
        "superseded_by": None,
    }
    m.update(kw)
    return m


A = {"tenant": "t", "collections": ["notes"], "memories": [_mem(i) for i in range(1, 8)]}
A["memories"][6]["x_unknown"] = {"k": 1}


def _b():
    b = copy.deepcopy(A)
    ms = {m["id"]: m for m in b["memories"]}
    ms["m2"]["text"] = "edited"
    ms["m3"]["metadata"] = {"a": 2, "b": [1, 2]}
    ms["m5"]["pinned"] = True
    ms["m5"]["updated_at"] = "2025-02-01T00:00:00Z"
    ms["m6"]["created_at"] = "2025-01-01T01:00:00+01:00"  # the same instant: not a change
    ms["m7"]["x_unknown"] = {"k": 2}
    b["memories"] = [m for m in b["memories"] if m["id"] != "m4"] + [_mem(9, text="brand new")]
    return b


@pytest.fixture
def snaps(tmp_path):
    a = snapshot_from_dump(A, tmp_path / "r", tenant="a", source={"kind": "test"}).path
    b = snapshot_from_dump(_b(), tmp_path / "r", tenant="b", source={"kind": "test"}).path
    return a, b


def test_known_changes(snaps):
    d = diff_snapshots(*snaps)
    assert (d.added, d.removed, d.changed, d.unchanged) == (1, 1, 4, 2)
    assert (d.memories_a, d.memories_b) == (7, 7)
    by_id = {r["id"]: r for r in d.rows}
    assert by_id["m9"]["change"] == "added" and by_id["m9"]["text_b"] == "brand new"
    assert by_id["m4"]["change"] == "removed"
    assert by_id["m2"]["changed_fields"] == ["text"]
    assert by_id["m3"]["changed_fields"] == ["metadata"]
    assert by_id["m5"]["changed_fields"] == ["pinned", "updated_at"]
    assert by_id["m7"]["changed_fields"] == ["extra"]
    assert "m1" not in by_id and "m6" not in by_id
    assert d.changed_fields == {"extra": 1, "metadata": 1, "pinned": 1, "text": 1, "updated_at": 1}


def test_identical_snapshots(snaps):
    d = diff_snapshots(snaps[0], snaps[0])
    assert d.identical and d.unchanged == 7 and d.rows == []


def test_users_can_run_the_sql_file_themselves(snaps):
    con = duckdb.connect()
    con.execute("SET VARIABLE snap_a = ?", [str(snaps[0])])
    con.execute("SET VARIABLE snap_b = ?", [str(snaps[1])])
    rows = con.execute(SQL_PATH.read_text()).fetchall()
    assert [(r[0], r[1]) for r in rows] == [
        ("added", "m9"),
        ("removed", "m4"),
        ("changed", "m2"),
        ("changed", "m3"),
        ("changed", "m5"),
        ("changed", "m7"),
    ]
    rel = diff_relation(duckdb.connect(), *snaps)
    assert rel.filter("change = 'changed'").aggregate("count(*)").fetchall() == [(4,)]


def test_cli_table_and_json(snaps, capsys):
    assert main(["diff", str(snaps[0]), str(snaps[1])]) == 0
    out = capsys.readouterr().out
    assert "1 added, 1 removed, 4 changed, 2 unchanged" in out
    assert (
        "+ m9 [notes] brand new" in out
        and "- m4" in out
        and "~ m5 [notes] pinned, updated_at" in out
    )
    assert main(["diff", str(snaps[0]), str(snaps[1]), "--json", "--limit", "2"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["changed"] == 4 and len(data["rows"]) == 2


def test_cli_bad_input(tmp_path, snaps, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["diff", str(snaps[0]), str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "not a snapshot" in err and err.count("\n") == 1
    assert main(["diff", str(snaps[0]), str(snaps[1]), "--limit", "-1"]) == 2
