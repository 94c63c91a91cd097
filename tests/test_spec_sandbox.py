"""Hostile and careless specs: spec SQL runs sandboxed and is parsed by DuckDB before any data is read.

Each hostile spec goes through the real CLI (``clean`` with and without ``--dry-run``, and
``migrate --spec``): exit 2, one stderr line naming the step, and not one new file anywhere under the
root, the working directory or the place the spec tried to write.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_support import run_cli as _cli

from longmem_etl.cli.main import main
from longmem_etl.errors import BadInput
from longmem_etl.snapshots.convert import convert_dump
from longmem_etl.transforms.spec import parse_spec

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "longmem_etl" / "sample_data" / "acme-small.json"


def _toml_str(s: str) -> str:
    return "'''" + s + "'''"


def _filter(where: str) -> str:
    return f'[[steps]]\nkind = "drop_archived"\n\n[[steps]]\nkind = "filter"\nwhere = {_toml_str(where)}\n'


def _sql(query: str) -> str:
    return f'[[steps]]\nkind = "sql"\nquery = {_toml_str(query)}\n'


# (test id, spec text with {OUT} for a path it tries to write, step named in the message, words)
HOSTILE = [
    (
        "stacked-copy",
        _filter("true); COPY (SELECT 1 AS x) TO '{OUT}/x.csv'; SELECT (true"),
        "step 2 (filter)",
        "not one SQL expression",
    ),
    (
        "stacked-copy-comment",
        _filter("true) --\n; COPY (SELECT 1 AS x) TO '{OUT}/x.csv'; SELECT (true"),
        "step 2 (filter)",
        "invalid SQL predicate",
    ),
    (
        "read-text-passwd",
        _filter("text NOT IN (SELECT content FROM read_text('/etc/passwd'))"),
        "step 2 (filter)",
        "invalid SQL predicate",
    ),
    (
        "read-csv",
        _filter("id IN (SELECT * FROM read_csv('{OUT}/ids.csv'))"),
        "step 2 (filter)",
        "invalid SQL predicate",
    ),
    (
        "filter-unknown-table",
        _filter("id IN (SELECT id FROM secrets)"),
        "step 2 (filter)",
        "names table 'secrets'",
    ),
    (
        "filter-input-table",
        _filter("id IN (SELECT id FROM input)"),
        "step 2 (filter)",
        "names table 'input'",
    ),
    (
        "filter-two-expressions",
        _filter("true, false"),
        "step 2 (filter)",
        "not one SQL expression",
    ),
    (
        "filter-reserved-placeholder",
        _filter("text = '{input}'"),
        "step 2 (filter)",
        "reserved",
    ),
    (
        "attach-stacked",
        _filter("true); ATTACH '{OUT}/evil.duckdb' AS e; SELECT (true"),
        "step 2 (filter)",
        "not one SQL expression",
    ),
    (
        "sql-copy",
        _sql("COPY (SELECT 1) TO '{OUT}/x.csv'"),
        "step 1 (sql)",
        "expected a SELECT statement",
    ),
    (
        "sql-stacked",
        _sql("SELECT * FROM input; COPY input TO '{OUT}/x.csv'"),
        "step 1 (sql)",
        "exactly one SELECT",
    ),
    (
        "sql-attach",
        _sql("ATTACH '{OUT}/evil.duckdb'"),
        "step 1 (sql)",
        "expected a SELECT statement",
    ),
    (
        "sql-read-text",
        _sql("SELECT i.* REPLACE (t.content AS text) FROM input i, read_text('/etc/passwd') t"),
        "step 1 (sql)",
        "invalid SQL query",
    ),
    (
        "sql-other-table",
        _sql("SELECT * FROM memories"),
        "step 1 (sql)",
        "names table 'memories'",
    ),
    (
        "filter-query-function",
        _filter("id IN (SELECT * FROM query('SELECT 1'))"),
        "step 2 (filter)",
        "calls table function 'query'",
    ),
    (
        "filter-settings-function",
        _filter("text NOT IN (SELECT value FROM duckdb_settings())"),
        "step 2 (filter)",
        "calls table function 'duckdb_settings'",
    ),
    (
        "sql-query-function",
        _sql("SELECT * FROM query('SELECT * FROM input')"),
        "step 1 (sql)",
        "calls table function 'query'",
    ),
    (
        "sql-read-parquet-input-in-cte",
        _sql("WITH x AS (SELECT * FROM read_parquet('{OUT}/m.parquet')) SELECT * FROM input"),
        "step 1 (sql)",
        "invalid SQL query",
    ),
    (
        "sql-comment-escape",
        _sql("SELECT * FROM input) --"),
        "step 1 (sql)",
        "invalid SQL query",
    ),
    (
        "redact-empty-match",
        '[[steps]]\nkind = "redact"\npatterns = { Z = "z*" }\n',
        "step 1 (redact)",
        "can match the empty string",
    ),
    (
        "redact-word-boundary",
        '[[steps]]\nkind = "redact"\nbuiltin = []\npatterns = { B = "\\\\bfoo|\\\\b" }\n',
        "step 1 (redact)",
        "can match the empty string",
    ),
    (
        "filter-fails-at-run-time",
        _filter("CAST(text AS INTEGER) > 0"),
        "step 2 (filter)",
        "Conversion Error",
    ),
    (
        "sql-fails-at-run-time",
        _sql("SELECT * REPLACE (CAST(CAST(text AS INTEGER) AS VARCHAR) AS text) FROM input"),
        "step 1 (sql)",
        "Conversion Error",
    ),
    (
        "toml-deep",
        "x = " + "[" * 5000 + "]" * 5000 + "\n",
        "nested too deep",
        "",
    ),
]


def _files(*dirs: Path) -> set[Path]:
    return {p for d in dirs for p in d.rglob("*")}


@pytest.fixture(scope="module")
def snap(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert_dump(SAMPLE, tmp_path_factory.mktemp("src"), progress=False).path


@pytest.mark.parametrize(
    ("spec_text", "step", "words"), [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE]
)
def test_hostile_spec_refused_nothing_written(
    spec_text: str,
    step: str,
    words: str,
    snap: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "target"  # where the spec tries to write
    out.mkdir()
    (out / "ids.csv").write_text("id\nm1\n")
    root = tmp_path / "root"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    spec = tmp_path / "spec.toml"
    spec.write_text(spec_text.replace("{OUT}", str(out)))
    before = _files(tmp_path, snap.parent)
    clean = ["clean", str(snap), "--spec", str(spec), "--root", str(root)]
    # the dry run in this process (the same refusal at load, through the same error model), the
    # real run as a user's process: 33 specs x one child fewer
    monkeypatch.chdir(cwd)
    capsys.readouterr()
    dry = (main([*clean, "--dry-run"]), capsys.readouterr().err)
    real = _cli(*clean, cwd=cwd)
    for code, stderr in (dry, (real.returncode, real.stderr)):
        assert code == 2, stderr
        lines = stderr.strip().splitlines()
        assert len(lines) == 1, stderr
        assert step in lines[0] and words in lines[0], lines[0]
        assert "internal error" not in lines[0] and "Traceback" not in stderr
        assert _files(tmp_path, snap.parent) == before
    # migrate --spec refuses it the same way before touching the target
    target = tmp_path / "target.sqlite"
    proc = _cli(
        "migrate", "--source", str(snap), "--target", f"local:{target}", "--spec", str(spec),
        cwd=cwd,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert step in proc.stderr
    assert not target.exists()
    # (a spec failing only at run time fails after migrate froze the source: its work dir is
    # removed, the empty .longmem-etl/migrations/ parent may stay; no file does)
    assert {p for p in _files(tmp_path, snap.parent) if p.is_file()} == {
        p for p in before if p.is_file()
    }


def test_sandbox_refuses_at_run_time_too(snap: Path, tmp_path: Path) -> None:
    """Defence in depth: even SQL that got past parsing cannot read a file during the run."""
    import duckdb

    from longmem_etl.transforms.engine import apply_spec
    from longmem_etl.transforms.sandbox import open_sandbox

    spec = parse_spec(_filter("true"))
    # smuggle a file-reading predicate past validation, as a bug in it would
    spec.steps[1].options["where"] = "text NOT IN (SELECT content FROM read_text('/etc/passwd'))"
    con = open_sandbox([snap / "memories.parquet"])
    try:
        with pytest.raises(BadInput, match=r"step 2 \(filter\): Permission Error"):
            apply_spec(con, spec, snap / "memories.parquet")
        with pytest.raises(duckdb.Error, match="locked"):
            con.execute("SET enable_external_access = true")
    finally:
        con.close()


def test_good_sql_still_works(snap: Path, tmp_path: Path) -> None:
    """What specs legitimately do still runs: expressions with subqueries over values, CTEs over
    `input`, a trailing comment, DuckDB's re-rendering of the predicate in reports."""
    spec = tmp_path / "ok.toml"
    spec.write_text(
        _filter("importance >= 0.2 AND EXISTS (SELECT 1 FROM range(3)) -- keep important")
        + "\n"
        + "[[steps]]\nkind = \"sql\"\nquery = '''WITH k AS (SELECT * FROM input) "
        "SELECT * FROM k WHERE id <> 'nope' -- trailing'''\n"
    )
    proc = _cli(
        "clean", str(snap), "--spec", str(spec), "--root", str(tmp_path / "r"), "--json",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    steps = {s["name"]: s for s in report["steps"]}
    assert 0 < steps["filter"]["rejected"] < steps["filter"]["rows_in"]
    assert steps["sql"]["rejected"] == 0
    assert report["rows_in"] == report["rows_out"] + report["rejected"]


@pytest.mark.parametrize("where", ["a) OR (true", "1; SELECT 2", "(SELECT 1) UNION (SELECT 2)"])
def test_filter_is_one_expression(where: str) -> None:
    with pytest.raises(BadInput, match=r"step 2 \(filter\): key 'where'"):
        parse_spec(_filter(where))


def test_dry_run_writes_nothing_anywhere(snap: Path, tmp_path: Path) -> None:
    """A dry run of a real spec (every step kind that rewrites, filters or runs SQL) leaves the
    root, the working directory and the source exactly as they were."""
    spec = tmp_path / "spec.toml"
    spec.write_text(
        (ROOT / "longmem_etl" / "sample_data" / "specs" / "migration-hygiene.toml").read_text()
        + _filter("length(text) > 3")
        + _sql("SELECT * FROM input")
    )
    root = tmp_path / "root"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    before = _files(tmp_path, snap.parent)
    proc = _cli(
        "clean", str(snap), "--spec", str(spec), "--root", str(root), "--dry-run", "--json",
        cwd=cwd,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["snapshot"] is None
    assert _files(tmp_path, snap.parent) == before
