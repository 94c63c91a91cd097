"""``longmem-etl report``: every figure checked against an independent query, offline HTML, no leaks.

Real components throughout: snapshots converted from the sample dumps and a hostile one, a real
clean, a real migration into an embedded store, the CLI in subprocesses, DuckDB over the warehouse
views (the same read-only session ``longmem-etl sql`` uses), and headless Chromium.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from cli_support import run_cli, start_cli

from longmem_etl.transforms import load_spec
from longmem_etl.transforms.run import clean_snapshot
from longmem_etl.warehouse import connect, run_query

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "longmem_etl" / "sample_data"
N_CHARTS = 10

# Values planted in the hostile tenant: none may appear anywhere in the report.
EMAIL = "zelda.quux@private-mail.example.org"
CARD = "4111 1111 1111 1111"  # Luhn-valid
PHONE = "+44 20 7946 0958"
SECRET = "sk-live-abcdefghijklmnop1234567890"
IP = "203.0.113.77"
HOSTILE_COLLECTION = "<script>alert(1)</script> $x^2$"


def cli(
    *args: str, cwd: Path | None = None, check: bool = True, home: Path | None = None
) -> subprocess.CompletedProcess:
    env = {"PYTHONUNBUFFERED": "1"}
    if home is not None:  # the state home where migrate keeps its work dirs
        env["LONGMEM_ETL_HOME"] = str(home)
    proc = run_cli(*args, cwd=cwd, env=env, timeout=240)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args}: exit {proc.returncode}\n{proc.stderr}")
    return proc


def _hostile_dump(path: Path) -> None:
    mems = [
        {"id": "h1", "collection": "inbox", "text": f"Mail me at {EMAIL} or call {PHONE}"},
        {"id": "h2", "collection": "inbox", "text": f"card {CARD}, server {IP}"},
        {"id": "h3", "collection": "inbox", "text": "Same   TEXT here", "metadata": {"k": SECRET}},
        {"id": "h4", "collection": "inbox", "text": "same text here"},
        {"id": "h5", "collection": "inbox", "text": "same text here"},
        {"id": "h6", "collection": HOSTILE_COLLECTION, "text": "x", "container_tag": "$tag$"},
        {"id": "h7", "collection": HOSTILE_COLLECTION, "text": "x", "importance": 7},
        {"id": "h8", "text": "no created_at", "importance": -1, "category": "<b>odd</b>"},
        {"id": "h1", "collection": "inbox", "text": "duplicate id: rejected at convert"},
        {"id": "h9"},
    ]
    for i, m in enumerate(mems[:7]):
        m["created_at"] = f"2025-0{1 + i % 3}-1{i}T10:00:00Z"
    path.write_text(json.dumps({"format_version": 1, "tenant": "hostile", "memories": mems}))


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """Tenants acme (2 snapshots, a verified migration), globex (dirty + cleaned), hostile."""
    tmp = tmp_path_factory.mktemp("report")
    root = tmp / "snaps"
    cli("convert", str(SAMPLES / "acme.json"), "--root", str(root), "--tenant", "acme")
    cli("convert", str(SAMPLES / "acme-small.json"), "--root", str(root), "--tenant", "acme")
    dirty = json.loads((SAMPLES / "globex-dirty.json").read_text(encoding="utf-8"))
    dirty["memories"].append({"id": "no-text"})  # one convert-stage rejection in the parent
    (tmp / "globex.json").write_text(json.dumps(dirty), encoding="utf-8")
    cli("convert", str(tmp / "globex.json"), "--root", str(root), "--tenant", "globex")
    (globex,) = (root / "tenant=globex").glob("snapshot=*")
    cleaned = clean_snapshot(globex, SAMPLES / "specs" / "migration-hygiene.toml", root)
    _hostile_dump(tmp / "hostile.json")
    cli("convert", str(tmp / "hostile.json"), "--root", str(root))
    acme_latest = max((root / "tenant=acme").glob("snapshot=*"))
    mig = cli(
        "migrate",
        "--source",
        str(acme_latest),
        "--target",
        f"local:{tmp / 'target.sqlite'}",
        "--json",
        home=tmp / "state",
    )
    out = tmp / "out" / "report.html"
    proc = cli("report", "--root", str(root), "--out", str(out), "--json", home=tmp / "state")
    report = json.loads(proc.stdout)
    return {
        "tmp": tmp,
        "root": root,
        "report": report,
        "tenants": {t["tenant"]: t for t in report["tenants"]},
        "html": out.read_text(encoding="utf-8"),
        "out": out,
        "migration": json.loads(mig.stdout),
        "cleaned": cleaned,
    }


def sql(world: dict, query: str, params: list | None = None) -> list[tuple]:
    """An independent query in the read-only session ``longmem-etl sql`` uses."""
    con = connect(world["root"], read_only=True)
    try:
        if params:
            return con.execute(query, params).fetchall()
        return run_query(con, query).fetchall()
    finally:
        con.close()


def rows(world: dict, tenant: str, figure: str) -> list[dict]:
    f = world["tenants"][tenant]["figures"][figure]
    return [dict(zip(f["columns"], r, strict=True)) for r in f["rows"]]


def scope(world: dict, tenant: str) -> str:
    snap = world["tenants"][tenant]["snapshot"]
    return f"tenant = '{tenant}' AND snapshot = '{snap}'"


TENANTS = ("acme", "globex", "hostile")


def test_every_tenant_reported_from_its_newest_snapshot(world):
    assert sorted(world["tenants"]) == list(TENANTS)
    latest = dict(sql(world, "SELECT tenant, max(snapshot) FROM snapshots GROUP BY tenant"))
    for t in TENANTS:
        assert world["tenants"][t]["snapshot"] == latest[t]
    assert world["report"]["html"] == str(world["out"].resolve())


@pytest.mark.parametrize("tenant", TENANTS)
def test_overview_matches_sql(world, tenant):
    (ov,) = rows(world, tenant, "overview")
    as_of = world["tenants"][tenant]["as_of"]
    (want,) = sql(
        world,
        f"""SELECT count(*), count(DISTINCT collection), sum(CASE WHEN pinned THEN 1 ELSE 0 END),
                   sum(CASE WHEN archived THEN 1 ELSE 0 END),
                   sum(CASE WHEN expires_at <= TIMESTAMPTZ '{as_of}' THEN 1 ELSE 0 END),
                   sum(CASE WHEN superseded_by IS NULL THEN 0 ELSE 1 END),
                   sum(CASE WHEN coalesce(updated_at, created_at) + INTERVAL 180 DAY
                            < TIMESTAMPTZ '{as_of}' THEN 1 ELSE 0 END),
                   sum(CASE WHEN created_at IS NULL THEN 1 ELSE 0 END), max(length(text))
            FROM memories WHERE {scope(world, tenant)}""",
    )
    got = [ov[k] for k in ("memories", "collections", "pinned", "archived", "expired")]
    got += [ov[k] for k in ("superseded", "stale", "no_created_at", "max_text_length")]
    assert got == [w or 0 if i not in (8,) else w for i, w in enumerate(want)]
    assert ov["memories"] > 0


@pytest.mark.parametrize("tenant", TENANTS)
def test_created_per_week_by_collection_and_category_match_sql(world, tenant):
    figs = rows(world, tenant, "created_weekly")
    for dim in ("collection", "category"):
        got = {(r["week"], r["value"]): r["memories"] for r in figs if r["dimension"] == dim}
        want = sql(
            world,
            f"""SELECT strftime(created_at - to_days(CAST(isodow(created_at) - 1 AS INTEGER)),
                                '%Y-%m-%d') AS week, coalesce({dim}, '(none)'), count(*)
                FROM memories WHERE {scope(world, tenant)} AND created_at IS NOT NULL
                GROUP BY ALL""",
        )
        assert got == {(w, v): n for w, v, n in want}
    total = sum(r["memories"] for r in figs if r["dimension"] == "collection")
    (ov,) = rows(world, tenant, "overview")
    assert total == ov["memories"] - ov["no_created_at"]


@pytest.mark.parametrize("tenant", TENANTS)
def test_container_tags_and_distributions_match_sql(world, tenant):
    tags = rows(world, tenant, "container_tags")
    want = sql(
        world,
        f"""SELECT coalesce(container_tag, '(none)') AS t, count(*) AS n FROM memories
            WHERE {scope(world, tenant)} GROUP BY ALL ORDER BY n DESC, t""",
    )
    top = [(r["container_tag"], r["memories"]) for r in tags if r["container_tag"] != "(other)"]
    assert top == [tuple(w) for w in want[:15]]
    other = [r["memories"] for r in tags if r["container_tag"] == "(other)"]
    assert sum(other) == sum(n for _, n in want[15:])

    dist = rows(world, tenant, "distributions")
    imp = {r["bucket"]: r["memories"] for r in dist if r["measure"] == "importance"}
    for lo in range(10):
        hi = "<=" if lo == 9 else "<"
        (n,) = sql(
            world,
            f"SELECT count(*) FROM memories WHERE {scope(world, tenant)} "
            f"AND importance >= {lo / 10} AND importance {hi} {(lo + 1) / 10}",
        )[0]
        assert imp.get(f"{lo / 10:.1f}", 0) == n
    lengths = {r["bucket"]: r["memories"] for r in dist if r["measure"] == "text_length"}
    for label, lo, hi in [("0-15", 0, 16), ("16-63", 16, 64), ("64-255", 64, 256)]:
        (n,) = sql(
            world,
            f"SELECT count(*) FROM memories WHERE {scope(world, tenant)} "
            f"AND length(text) >= {lo} AND length(text) < {hi}",
        )[0]
        assert lengths.get(label, 0) == n
    (total,) = sql(world, f"SELECT count(*) FROM memories WHERE {scope(world, tenant)}")[0]
    assert sum(imp.values()) == sum(lengths.values()) == total


@pytest.mark.parametrize("tenant", TENANTS)
def test_normalised_duplicates_are_what_the_dedup_step_removes(world, tenant, tmp_path):
    """Independent of the report's SQL: run the real `dedup` step and count what it rejects."""
    spec = tmp_path / "dedup.toml"
    spec.write_text('[[steps]]\nkind = "dedup"\n')
    path = world["tenants"][tenant]["path"]
    result = clean_snapshot(path, load_spec(spec), tmp_path / "out")
    per = _dedup_rejects(result.path, path)
    got = {r["collection"]: r["normalised_duplicates"] for r in rows(world, tenant, "duplicates")}
    assert {k: v for k, v in got.items() if v} == per
    exact = {r["collection"]: r["exact_duplicates"] for r in rows(world, tenant, "duplicates")}
    want = sql(
        world,
        f"""SELECT coalesce(collection, '(none)'), sum(n - 1) FROM (
                SELECT collection, container_tag, text, count(*) AS n FROM memories
                WHERE {scope(world, tenant)} AND text IS NOT NULL GROUP BY ALL)
            GROUP BY ALL HAVING sum(n - 1) > 0""",
    )
    assert {k: v for k, v in exact.items() if v} == {c: int(n) for c, n in want}
    if tenant == "hostile":  # "Same   TEXT here" + 2x "same text here": 1 exact, 2 normalised
        assert exact["inbox"] == 1 and got["inbox"] == 2


def _dedup_rejects(cleaned: Path, source: str) -> dict[str, int]:
    import duckdb

    files = list(Path(cleaned).glob("rejected.parquet"))
    if not files:
        return {}
    con = duckdb.connect()
    try:
        return dict(
            con.execute(
                "SELECT coalesce(m.collection, '(none)'), count(*) FROM read_parquet(?) r "
                "JOIN read_parquet(?) m ON r.id = m.id WHERE r.stage = 'dedup' GROUP BY ALL",
                [str(files[0]), str(Path(source) / "memories.parquet")],
            ).fetchall()
        )
    finally:
        con.close()


@pytest.mark.parametrize("tenant", TENANTS)
def test_personal_data_counts_are_what_redact_replaces(world, tenant, tmp_path):
    """Independent: the real `redact` step (text and metadata) in a dry run counts the same."""
    spec = tmp_path / "redact.toml"
    spec.write_text('[[steps]]\nkind = "redact"\nfields = ["text", "metadata"]\n')
    result = clean_snapshot(
        world["tenants"][tenant]["path"], load_spec(spec), tmp_path / "o", dry_run=True
    )
    counts = {k: v for k, v in result.report.steps[0].counts.items() if ":" in k and v}
    got = {f"{r['field']}:{r['kind']}": r["matches"] for r in rows(world, tenant, "personal_data")}
    assert {k: v for k, v in got.items() if v} == counts
    if tenant == "hostile":
        assert {"text:email", "text:phone", "text:card", "text:ipv4", "metadata:secret"} <= set(
            counts
        )


@pytest.mark.parametrize("tenant", TENANTS)
def test_rejected_by_stage_match_sql_over_the_snapshot_and_its_parents(world, tenant):
    got: dict[tuple, int] = {}
    for r in rows(world, tenant, "rejected"):
        got[(r["snapshot"], r["stage"])] = got.get((r["snapshot"], r["stage"]), 0) + r["rows"]
    want = dict(
        ((s, st), n)
        for s, st, n in sql(
            world,
            f"SELECT snapshot, stage, count(*) FROM rejected WHERE tenant = '{tenant}' GROUP BY ALL",
        )
    )
    assert got == want  # every snapshot of these tenants is the reported one or its parent
    if tenant == "globex":  # convert's and the clean's rejections both show
        stages = {st for _, st in got}
        assert "convert" in stages and {"dedup", "drop_archived"} <= stages
    if tenant == "hostile":
        assert got == {(world["tenants"]["hostile"]["snapshot"], "convert"): 2}


def test_changes_match_the_diff_of_the_two_newest_snapshots(world):
    for tenant in ("acme", "globex"):
        t = world["tenants"][tenant]
        prev = t["previous_snapshot"]
        assert prev is not None and prev < t["snapshot"]
        got = {
            r["collection"]: (r["added"], r["removed"], r["changed"])
            for r in rows(world, tenant, "changes")
        }
        a = f"tenant = '{tenant}' AND snapshot = '{prev}'"
        b = scope(world, tenant)
        added = dict(
            sql(
                world,
                f"SELECT collection, count(*) FROM memories WHERE {b} AND id NOT IN (SELECT id FROM memories WHERE {a}) GROUP BY ALL",
            )
        )
        removed = dict(
            sql(
                world,
                f"SELECT collection, count(*) FROM memories WHERE {a} AND id NOT IN (SELECT id FROM memories WHERE {b}) GROUP BY ALL",
            )
        )
        assert {c: v[0] for c, v in got.items() if v[0]} == added
        assert {c: v[1] for c, v in got.items() if v[1]} == removed
        (changed,) = sql(
            world,
            f"SELECT count(*) FROM (SELECT * EXCLUDE (snapshot) FROM memories WHERE {b} "
            f"AND id IN (SELECT id FROM memories WHERE {a}) EXCEPT "
            f"SELECT * EXCLUDE (snapshot) FROM memories WHERE {a})",
        )[0]
        assert sum(v[2] for v in got.values()) == changed
    assert world["tenants"]["hostile"]["previous_snapshot"] is None
    assert rows(world, "hostile", "changes") == []


def test_migration_verification_summary_is_shown_for_its_tenant(world):
    (m,) = rows(world, "acme", "migrations")
    ver = json.loads((Path(world["migration"]["work_dir"]) / "verification.json").read_text())
    assert m["exact"] is True and ver["exact"] is True
    assert [m[k] for k in ("source", "target", "present", "missing")] == [
        ver["totals"][k] for k in ("source", "target", "present", "missing")
    ]
    assert m["source_snapshot"] == world["tenants"]["acme"]["snapshot"]
    assert rows(world, "globex", "migrations") == [] == rows(world, "hostile", "migrations")


_REF = r"""(?:(?:src|href)\s*=\s*|url\(\s*)(?:"(?!#)|'(?!#)|(?!["'#]))"""


def external_references(html: str) -> list[str]:
    """Anything the page would load from outside itself: a URL, or any src/href/url() that is
    not a fragment of the page (matplotlib's clip paths and glyphs are ``url(#id)``/``href="#id"``),
    and the elements that load things."""
    found = re.findall(r"https?:|ftp:|//[a-z0-9.-]+\.[a-z]{2,}", html, re.I)
    found += re.findall(_REF, html, re.I)
    tags = ("<script", "<link", "<img", "<iframe", "<object", "<embed", "@import")
    return found + [t for t in tags if t in html.lower()]


def test_the_external_reference_check_catches_references():
    assert (
        external_references('<svg><use xlink:href="#g1"/><path clip-path="url(#p1)"/></svg>') == []
    )
    for page in (
        '<img src="x.png">',
        "<p style=\"background:url('a.png')\">",
        "<a href=//cdn.example.com/x.js>",
        '<svg><image href="data.svg"/></svg>',
        "<link rel=stylesheet href='s.css'>",
    ):
        assert external_references(page), page


def test_html_has_every_chart_and_no_external_reference(world):
    html = world["html"]
    assert "http" not in html.lower()  # no URL at all (not even SVG namespaces)
    assert external_references(html) == []
    assert re.search(r"url\(#", html)  # (the charts do use in-page references)
    sections = re.findall(
        r'<section class="tenant" data-tenant="([^"]*)">(.*?)</section>', html, re.S
    )
    assert [s for s, _ in sections] == list(TENANTS)
    for _, body in sections:
        charts = re.findall(r'<figure class="chart" data-chart="(\w+)"><svg\b', body)
        assert len(charts) == N_CHARTS == len(set(charts))


def test_no_personal_value_leaks_and_hostile_labels_are_escaped(world):
    text = world["html"] + json.dumps(world["report"])
    for value in (EMAIL, CARD, PHONE, SECRET, IP, "zelda", "7946"):
        assert value not in text, value
    pii = rows(world, "hostile", "personal_data")
    examples = {
        r["kind"]: r["example_masked"] for r in pii if r["field"] == "text" and r["matches"]
    }
    assert examples["email"] and set(examples["email"]) <= set("•.@-")
    assert "<script>alert" not in world["html"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt; $x^2$" in world["html"]


def test_json_figures_match_html_tables(world):
    """The HTML shows the JSON's numbers: the overview row of each tenant is in its section."""
    for t in TENANTS:
        (ov,) = rows(world, t, "overview")
        section = world["html"].split(f'data-tenant="{t}"', 1)[1].split("</section>", 1)[0]
        assert f'<td class="n">{ov["memories"]:,}</td>' in section


def test_snapshot_flag_reports_an_older_snapshot(world, tmp_path):
    prev = world["tenants"]["acme"]["previous_snapshot"]
    proc = cli(
        "report", "--root", str(world["root"]), "--tenant", "acme", "--snapshot", prev, "--json"
    )
    (t,) = json.loads(proc.stdout)["tenants"]
    assert t["snapshot"] == prev and t["previous_snapshot"] is None
    (n,) = sql(
        world, f"SELECT count(*) FROM memories WHERE tenant = 'acme' AND snapshot = '{prev}'"
    )[0]
    assert t["figures"]["overview"]["rows"][0][0] == n
    assert not list(tmp_path.iterdir())  # --json without --out writes no HTML


@pytest.mark.parametrize(
    "args, message",
    [
        (["--root", "{tmp}/missing"], "no such directory"),
        (["--root", "{tmp}"], "no snapshot under it"),
        (["--root", "{root}", "--tenant", "nobody"], "--tenant nobody"),
        (["--root", "{root}", "--snapshot", "20200101T000000Z"], "exactly one --tenant"),
        (
            ["--root", "{root}", "--tenant", "acme", "--snapshot", "20200101T000000Z"],
            "no such snapshot",
        ),
        (["--root", "{root}", "--stale-days", "-1"], "--stale-days"),
        (["--root", "{root}", "--out", "{tmp}"], "is a directory"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(world, tmp_path, args, message):
    args = [a.format(tmp=tmp_path, root=world["root"]) for a in args]
    proc = cli("report", *args, cwd=tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "report.html").exists()


def test_default_out_is_report_html_and_rewrites_atomically(world, tmp_path):
    (tmp_path / "report.html").write_text("old")
    proc = cli("report", "--root", str(world["root"]), "--tenant", "hostile", cwd=tmp_path)
    assert "report:" in proc.stdout
    assert (tmp_path / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]  # no temp left


def test_damaged_snapshot_file_is_exit_2_naming_the_snapshot(world, tmp_path):
    root = tmp_path / "snaps"
    shutil.copytree(world["root"] / "tenant=hostile", root / "tenant=hostile")
    (snap,) = (root / "tenant=hostile").glob("snapshot=*")
    (snap / "memories.parquet").write_bytes(b"PAR1 not really parquet")
    proc = cli("report", "--root", str(root), cwd=tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr
    assert str(snap.name) in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "report.html").exists()


def test_two_reports_to_one_file_at_once_leave_one_whole_report(world, tmp_path):
    out = tmp_path / "same.html"
    args = ["report", "--root", str(world["root"]), "--tenant", "hostile", "--out", str(out)]
    procs = [start_cli(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    assert [p.wait(timeout=240) for p in procs] == [0, 0]
    html = out.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert html.count('<figure class="chart"') == N_CHARTS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["same.html"]


# ------------------------------------------------------------------------------------------------
# headless Chromium


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI"):
        pytest.fail("CI: headless Chromium is required (apt-get install chromium chromium-driver)")
    pytest.skip("chromium not installed (required, and installed by .ci/run, in CI)")


def _open_in_chromium(page: Path, tmp: Path) -> tuple[str, list[str]]:
    """The DOM after load and the page's console messages (any message counts as an error: the
    report runs no script)."""
    exe = _chromium()
    proc = subprocess.run(
        [
            exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp / 'chrome-profile'}", "--enable-logging=stderr", "--v=0",
            "--host-resolver-rules=MAP * ~NOTFOUND", "--dump-dom", page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return proc.stdout, console


def test_report_renders_in_headless_chromium_with_every_chart_and_no_console_error(world, tmp_path):
    # the console capture really sees errors: a page that logs one is caught
    control = tmp_path / "control.html"
    control.write_text('<html><body><script>console.error("probe-9f3")</script></body></html>')
    _, console = _open_in_chromium(control, tmp_path)
    assert any("probe-9f3" in line for line in console), console

    dom, console = _open_in_chromium(world["out"], tmp_path)
    assert console == []
    sections = re.findall(
        r'<section class="tenant" data-tenant="([^"]*)">(.*?)</section>', dom, re.S
    )
    assert [s for s, _ in sections] == list(TENANTS)
    for _, body in sections:
        charts = re.findall(
            r'<figure class="chart" data-chart="\w+"><svg\b[^>]*>.*?<path', body, re.S
        )
        assert len(charts) == N_CHARTS
