"""`quickstart` tells the whole story end to end on real local stores, and what it claims is true."""

from __future__ import annotations

import json
from pathlib import Path

from cli_support import run_cli

from longmem_etl.api.local import LocalStore
from longmem_etl.snapshots import open_snapshot


def test_quickstart_runs_offline_and_its_claims_hold(tmp_path: Path) -> None:
    home = tmp_path / "demo"
    proc = run_cli("quickstart", "--dir", str(home), "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["migration"]["verification"]["exact"] is True

    # Backups hold what was seeded: 2000 healthy + 1000 dirty sample memories.
    assert open_snapshot(out["snapshots"]["acme"]).manifest["counts"]["memories"] == 2000
    assert open_snapshot(out["snapshots"]["globex"]).manifest["counts"]["memories"] == 1000

    # Cleaning accounts for every row, and the migrated copy holds exactly the cleaned rows,
    # each once, checked independently of the tool's own verification.
    clean = out["clean"]
    assert clean["rows_in"] == 1000 == clean["rows_out"] + clean["rejected"]
    cleaned = open_snapshot(clean["snapshot"]).read_memories()
    with LocalStore(home / "tenants" / "globex-copy.sqlite", create=False) as store:
        copied = store.export_account()["memories"]
    assert len(copied) == clean["rows_out"] == cleaned.num_rows
    assert sorted(m["text"] for m in copied) == sorted(cleaned.column("text").to_pylist())


def test_quickstart_refuses_a_directory_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    proc = run_cli("quickstart", "--dir", str(tmp_path))
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert (tmp_path / "precious.txt").read_text() == "keep me"
