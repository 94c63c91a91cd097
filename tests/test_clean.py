"""`clean` end to end on the sample tenants: real snapshots, real CLI subprocesses, the accounting
invariant, faithful rejected rows, manifests, collections, dry runs and bad specs."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from cli_support import run_cli

from longmem_etl import jsonio
from longmem_etl.errors import BadInput
from longmem_etl.snapshots.convert import convert_dump
from longmem_etl.snapshots.layout import list_snapshots
from longmem_etl.snapshots.reader import open_snapshot
from longmem_etl.transforms.run import clean_snapshot

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "longmem_etl" / "sample_data"
SPECS = SAMPLES / "specs"
NOW = datetime(2025, 11, 20, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def snaps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("src")
    return {
        name: convert_dump(SAMPLES / f"{name}.json", root, progress=False).path
        for name in ("acme", "globex-dirty")
    }


def test_clean_verb_hygiene_on_dirty_tenant(snaps: dict[str, Path], tmp_path: Path) -> None:
    out_root = tmp_path / "out"
    proc = run_cli(
        "clean", str(snaps["globex-dirty"]), "--spec", str(SPECS / "migration-hygiene.toml"),
        "--root", str(out_root), "--now", "2025-11-20T00:00:00Z", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["rows_in"] == 1000
    assert summary["rows_in"] == summary["rows_out"] + summary["rejected"]
    by_name = {s["name"]: s for s in summary["steps"]}
    assert by_name["drop_archived"]["rejected"] == 130
    assert by_name["dedup"]["rejected"] > 0
    assert by_name["redact"]["counts"]["text:card"] > 0

    new = open_snapshot(summary["snapshot"])
    src = open_snapshot(snaps["globex-dirty"])
    assert new.manifest["parent"] == str(src.path)
    t = new.manifest["transform"]
    assert t["spec_sha256"] and t["report"]["rows_out"] == summary["rows_out"]
    assert [s["kind"] for s in t["steps"]][:3] == [
        "drop_archived",
        "drop_expired",
        "drop_superseded",
    ]
    assert new.counts["memories"] == summary["rows_out"]
    assert new.counts["rejected"] == summary["rejected"]
    rejected = new.read_rejected().to_pylist()
    assert {r["stage"] for r in rejected} == {s["name"] for s in summary["steps"] if s["rejected"]}
    # every rejected row is the source row in dump form, exactly
    source_rows = [m for batch in src.iter_dump_memories() for m in batch]
    for r in rejected:
        assert jsonio.same_json(jsonio.loads(r["raw"]), source_rows[r["row_index"]])
        assert r["id"] == source_rows[r["row_index"]]["id"]
    # kept + rejected ids are exactly the input ids
    kept = new.read_memories(["id"]).column("id").to_pylist()
    assert sorted(kept + [r["id"] for r in rejected]) == sorted(m["id"] for m in source_rows)
    # the cleaned snapshot is a normal snapshot: it dumps
    dumped = new.to_dump()
    assert len(dumped["memories"]) == summary["rows_out"]
    assert dumped["tenant"] == src.to_dump()["tenant"]
    texts = [m["text"] for m in dumped["memories"]]
    assert "[CARD]" in " ".join(texts)
    assert not any(k in t for t in texts for k in ("sk-live-", "AKIA", "ghp_", "@example."))
    orders = [t for t in texts if t.startswith("Order number")]
    assert orders and all("[CARD]" not in t for t in orders)  # Luhn-invalid: left alone

    human = run_cli(
        "clean", str(snaps["globex-dirty"]), "--spec", str(SPECS / "migration-hygiene.toml"),
        "--root", str(out_root), "--dry-run",
    )  # fmt: skip
    assert human.returncode == 0 and "drop_archived" in human.stdout and "dry run" in human.stdout
    assert len(list_snapshots(out_root)) == 1  # the dry run added nothing


def test_gdpr_spec_on_healthy_tenant(snaps: dict[str, Path], tmp_path: Path) -> None:
    res = clean_snapshot(snaps["acme"], SPECS / "gdpr-minimise.toml", tmp_path, now=NOW)
    assert res.report.rows_in == res.report.rows_out == 2000
    new = open_snapshot(res.path)
    rows = new.read_memories().to_pylist()
    for r in rows:
        assert r["source"] is None and r["extra"] is None
        if r["metadata"] and r["metadata"].startswith("{"):
            assert set(json.loads(r["metadata"])) <= {"tags", "confidence", "thread"}
    assert new.to_dump()["memories"][0]["source"] is None


def test_every_sample_tenant_and_spec_keeps_the_invariant(
    snaps: dict[str, Path], tmp_path: Path
) -> None:
    for snap in snaps.values():
        for spec in sorted(SPECS.glob("*.toml")):
            res = clean_snapshot(snap, spec, tmp_path, dry_run=True, now=NOW)
            assert res.report.rows_in == res.report.rows_out + res.report.rejected
            for s in res.report.steps:
                assert s.rows_in == s.rows_out + s.rejected
    assert list_snapshots(tmp_path) == []  # dry runs write nothing


def test_rename_merges_collections_parquet(snaps: dict[str, Path], tmp_path: Path) -> None:
    src = open_snapshot(snaps["acme"])
    names = [c["name"] for c in src.collections() if isinstance(c, dict)]
    a, b = names[0], names[1]
    spec = tmp_path / "rename.toml"
    spec.write_text(
        f'[[steps]]\nkind = "rename_collections"\nmap = {{ "{a}" = "merged", "{b}" = "merged" }}\n'
    )
    res = clean_snapshot(snaps["acme"], spec, tmp_path / "out", now=NOW)
    new = open_snapshot(res.path)
    got = [c["name"] for c in new.collections()]
    assert got.count("merged") == 1 and a not in got and b not in got
    assert len(got) == len(names) - 1
    assert new.collections()[0]["description"] == src.collections()[0]["description"]
    colls = set(pq.read_table(new.memories_path, columns=["collection"]).column(0).to_pylist())
    assert "merged" in colls and a not in colls


def test_bad_spec_exits_2_before_reading_data(tmp_path: Path) -> None:
    spec = tmp_path / "bad.toml"
    spec.write_text('[[steps]]\nkind = "drop_archived"\n[[steps]]\nkind = "dedup"\nkeep = "x"\n')
    out_root = tmp_path / "out"
    proc = run_cli(
        "clean", str(tmp_path / "no-such-snapshot"), "--spec", str(spec), "--root", str(out_root)
    )
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert "\n" not in err and "Traceback" not in err
    assert (
        "step 2 (dedup): key 'keep': expected one of newest|oldest|most_important|pinned_first"
        in err
    )
    assert not out_root.exists()


def test_sql_error_at_run_time_writes_nothing(snaps: dict[str, Path], tmp_path: Path) -> None:
    spec = tmp_path / "dup.toml"
    spec.write_text(
        '[[steps]]\nkind = "sql"\nquery = "SELECT * FROM input UNION ALL SELECT * FROM input"\n'
    )
    with pytest.raises(BadInput, match=r"step 1 \(sql\): query returns id"):
        clean_snapshot(snaps["acme"], spec, tmp_path / "out", now=NOW)
    assert list_snapshots(tmp_path / "out") == []
    assert not any(p.name.startswith(".tmp") for p in (tmp_path / "out").glob("*"))


@pytest.mark.parametrize(
    ("spec_text", "expected"),
    [
        ('[[steps]]\nkind = "dedupe"\n', "step 1: key 'kind': unknown step kind 'dedupe'"),
        (
            '[[steps]]\nkind = "drop_archived"\n[[steps]]\nkind = "filter"\nwhere = "nope >"\n',
            "step 2 (filter): key 'where': invalid SQL predicate",
        ),
        (
            '[[steps]]\nkind = "redact"\npatterns = { X = "a(" }\n',
            "step 1 (redact): key 'patterns': pattern 'X' does not compile",
        ),
    ],
)
def test_clean_verb_bad_spec_kinds(
    snaps: dict[str, Path], tmp_path: Path, spec_text: str, expected: str
) -> None:
    spec = tmp_path / "SPEC.toml"
    spec.write_text(spec_text)
    proc = run_cli(
        "clean", str(snaps["acme"]), "--spec", str(spec), "--root", str(tmp_path / "out")
    )
    assert proc.returncode == 2 and expected in proc.stderr
    assert not (tmp_path / "out").exists()


def test_clean_verb_bad_now(snaps: dict[str, Path], tmp_path: Path) -> None:
    proc = run_cli(
        "clean", str(snaps["acme"]), "--spec", str(SPECS / "migration-hygiene.toml"),
        "--root", str(tmp_path), "--now", "tomorrow",
    )  # fmt: skip
    assert proc.returncode == 2 and "--now" in proc.stderr
