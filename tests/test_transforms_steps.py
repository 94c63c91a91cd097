"""Each transform step on small in-memory tables in a real DuckDB: behaviour, ties, NULLs, unicode,
fidelity carried or forgotten, and input == output + rejected after every run."""

from __future__ import annotations

import json
import unicodedata
from datetime import datetime, timezone
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from longmem_etl.errors import BadInput
from longmem_etl.schema import MEMORIES_SCHEMA
from longmem_etl.transforms import apply_spec, parse_spec
from longmem_etl.transforms.sqlparts import dedup_key, dedup_key_sql, fidelity_forget, register

NOW = datetime(2025, 6, 1, tzinfo=timezone.utc)


def T(s: str) -> datetime:
    return datetime.fromisoformat(s).replace(tzinfo=timezone.utc)


def mem(id: str, text: str | None = "t", **kw: Any) -> dict[str, Any]:
    row = dict.fromkeys(MEMORIES_SCHEMA.names)
    row.update(id=id, collection="c", text=text)
    row.update(kw)
    return row


def run(spec: str, rows: list[dict[str, Any]], now: datetime = NOW):
    table = pa.Table.from_pylist(rows, schema=MEMORIES_SCHEMA)
    con = duckdb.connect()
    out, rej, report = apply_spec(con, parse_spec(spec), table, now=now)
    out_rows = out.to_arrow_table().to_pylist()
    rej_rows = rej.to_arrow_table().to_pylist()
    assert len(rows) == len(out_rows) + len(rej_rows) == report.rows_in
    assert report.rows_out == len(out_rows) and report.rejected == len(rej_rows)
    return out_rows, rej_rows, report


def ids(rows: list[dict[str, Any]]) -> list[str]:
    return [r["id"] for r in rows]


def test_drop_archived_keeps_null_and_false() -> None:
    out, rej, rep = run(
        "[[steps]]\nkind='drop_archived'",
        [mem("a", archived=True), mem("b", archived=False), mem("c")],
    )
    assert ids(out) == ["b", "c"]
    assert rej[0]["stage"] == "drop_archived" and rej[0]["reason"] == "archived"
    assert rej[0]["row_index"] == 0 and rej[0]["field"] == "archived"
    raw = json.loads(rej[0]["raw"])
    assert raw["id"] == "a" and raw["archived"] is True and raw["collection"] == "c"


def test_drop_expired_relative_to_now_and_step_option() -> None:
    rows = [
        mem("past", expires_at=T("2025-01-01T00:00:00")),
        mem("exact", expires_at=NOW),
        mem("future", expires_at=T("2030-01-01T00:00:00")),
        mem("never"),
    ]
    out, rej, _ = run("[[steps]]\nkind='drop_expired'", rows)
    assert ids(out) == ["future", "never"]
    assert rej[0]["reason"] == "expired at 2025-01-01T00:00:00Z"
    out, _, _ = run("[[steps]]\nkind='drop_expired'\nnow='2031-01-01T00:00:00Z'", rows)
    assert ids(out) == ["never"]


def test_drop_superseded_and_require_target() -> None:
    rows = [
        mem("a", superseded_by="b"),
        mem("b"),
        mem("c", superseded_by="gone"),
        mem("d", superseded_by="  "),
        mem("e", superseded_by=""),
    ]
    out, rej, _ = run("[[steps]]\nkind='drop_superseded'", rows)
    assert ids(out) == ["b", "d", "e"]
    assert [r["reason"] for r in rej] == ["superseded by b", "superseded by gone"]
    out, rej, _ = run("[[steps]]\nkind='drop_superseded'\nrequire_target=true", rows)
    assert ids(out) == ["b", "c", "d", "e"] and ids(rej) == ["a"]


def test_dedup_key_normalises_unicode_case_space() -> None:
    got = dedup_key(
        pa.array(["  Ｈｅｌｌｏ\u00a0\tWORLD\n", "hello world", "ﬁne", "a\u200bb", None])
    )
    assert got.to_pylist() == ["hello world", "hello world", "fine", "ab", None]


def test_dedup_key_case_folds_beyond_lowercase() -> None:
    """Full case folding, not just lowercase: ß/ẞ = ss, final sigma, Cherokee; like Python's
    casefold() after NFKC, for every row (only the rows that need it take the Python path)."""
    texts = ["Straße", "STRASSE", "ẞ", "ΌΣΟΣ", "όσος", "ᏣᎳᎩ", "ꮳꮃꭹ", "plain", "ǰ"]
    got = dedup_key(pa.array(texts)).to_pylist()
    assert got[0] == got[1] == "strasse" and got[2] == "ss"
    assert got[3] == got[4] and got[5] == got[6]
    assert got == [
        unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", t).casefold()) for t in texts
    ]
    out, rej, _ = run(
        "[[steps]]\nkind='dedup'", [mem("a", text="Straße"), mem("b", text="STRASSE")]
    )
    assert len(ids(out)) == 1 and len(ids(rej)) == 1


def test_dedup_scope_keep_and_reason() -> None:
    rows = [
        mem("old", "Hello World", updated_at=T("2025-01-01T00:00:00"), importance=0.9),
        mem("new", "hello   world", updated_at=T("2025-03-01T00:00:00"), importance=0.1),
        mem("full", "ｈｅｌｌｏ world", updated_at=T("2025-02-01T00:00:00"), pinned=True),
        mem("other-tag", "hello world", container_tag="u2"),
        mem("other-coll", "hello world", collection="d"),
        mem("near", "hello worlds"),
        mem("n1", None),
        mem("n2", None),
    ]
    out, rej, rep = run("[[steps]]\nkind='dedup'", rows)
    assert sorted(ids(rej)) == ["full", "old"]
    assert {r["reason"] for r in rej} == {"duplicate of new"}
    assert ids(out) == ["new", "other-tag", "other-coll", "near", "n1", "n2"]  # input order kept
    _, rej, _ = run("[[steps]]\nkind='dedup'\nkeep='most_important'", rows)
    assert {r["reason"] for r in rej} == {"duplicate of old"}
    _, rej, _ = run("[[steps]]\nkind='dedup'\nkeep='pinned_first'", rows)
    assert {r["reason"] for r in rej} == {"duplicate of full"}
    _, rej, _ = run("[[steps]]\nkind='dedup'\nby=[]", rows)
    assert len(rej) == 4  # other-tag and other-coll now count as duplicates too


def test_dedup_ties_are_deterministic_by_id() -> None:
    same = T("2025-01-01T00:00:00")
    rows = [mem(i, "dup", updated_at=same, created_at=same) for i in ("m", "b", "z", "a")]
    for order in (rows, list(reversed(rows))):
        out, rej, _ = run("[[steps]]\nkind='dedup'\nkeep='oldest'", order)
        assert ids(out) == ["a"]
        assert {r["reason"] for r in rej} == {"duplicate of a"}


def test_rename_collections_merges() -> None:
    out, _, _ = run(
        "[[steps]]\nkind='rename_collections'\nmap={old='new', 'also old'='new'}",
        [mem("a", collection="old"), mem("b", collection="also old"), mem("c", collection="keep")],
    )
    assert [r["collection"] for r in out] == ["new", "new", "keep"]


def test_map_container_tags_map_wins_over_prefix() -> None:
    out, _, _ = run(
        "[[steps]]\nkind='map_container_tags'\nfrom_prefix='u-'\nto_prefix='user-'\nmap={'u-1'='vip'}",
        [
            mem("a", container_tag="u-1"),
            mem("b", container_tag="u-2"),
            mem("c"),
            mem("d", container_tag="x-u-3"),
        ],
    )
    assert [r["container_tag"] for r in out] == ["vip", "user-2", None, "x-u-3"]


def test_set_defaults_fills_only_nulls() -> None:
    out, _, _ = run(
        "[[steps]]\nkind='set_defaults'\ncategory='other'\nimportance=0.5\nsource='import'",
        [mem("a"), mem("b", category="fact", importance=0.9, source="sdk")],
    )
    assert [(r["category"], r["importance"], r["source"]) for r in out] == [
        ("other", 0.5, "import"),
        ("fact", 0.9, "sdk"),
    ]


def test_normalize_text_and_drop_empty() -> None:
    rows = [
        mem("a", "  hi\u200b  there\t\x07\nfriend\u00a0 "),
        mem("b", "\u200b \ufeff"),
        mem("c", None),
        mem("d", "emoji 👨‍👩‍👧 stays"),  # ZWJ joins the family emoji: kept
    ]
    out, rej, _ = run("[[steps]]\nkind='normalize_text'\ndrop_empty=true", rows)
    assert out[0]["text"] == "hi there friend"
    assert ids(rej) == ["b"] and rej[0]["reason"] == "empty text after normalize_text"
    assert out[1]["text"] is None
    assert out[2]["text"] == "emoji 👨‍👩‍👧 stays"
    out, _, _ = run("[[steps]]\nkind='normalize_text'\ncollapse_whitespace=false", rows[:1])
    assert out[0]["text"] == "hi  there  friend"


def test_filter_rejects_false_and_null() -> None:
    out, rej, _ = run(
        "[[steps]]\nkind='filter'\nwhere='importance >= 0.5'",
        [mem("a", importance=0.7), mem("b", importance=0.1), mem("c")],
    )
    assert ids(out) == ["a"]
    assert [r["reason"] for r in rej] == ["filter: importance >= 0.5"] * 2


def test_sql_step_rewrites_and_rejects_removed_ids() -> None:
    out, rej, _ = run(
        "[[steps]]\nkind='sql'\nquery=\"SELECT * REPLACE (upper(text) AS text) FROM input WHERE id <> 'b'\"",
        [mem("a", "x"), mem("b", "y"), mem("c", "z")],
    )
    assert [(r["id"], r["text"]) for r in out] == [("a", "X"), ("c", "Z")]
    assert rej[0]["id"] == "b" and rej[0]["reason"] == "sql step removed row"


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("SELECT * FROM input UNION ALL SELECT * FROM input", "more than once"),
        ("SELECT * REPLACE ('new-' || id AS id) FROM input", "not in its input"),
    ],
)
def test_sql_step_refuses_new_or_duplicate_ids(query: str, problem: str) -> None:
    with pytest.raises(BadInput, match=problem):
        run(f'[[steps]]\nkind="sql"\nquery="{query}"', [mem("a")])


def test_redact_builtins_and_counts() -> None:
    text = (
        "mail bob.smith+x@example.co.uk, card 4111-1111-1111-1111 and 4242424242424242, "
        "order 4111111111111112, ip 10.0.0.1 and fe80::1ff:fe23:4567:890a, "
        "key sk-live-abcdefghijklmnop1234 AKIAABCDEFGHIJKLMNOP ghp_" + "a" * 36 + ", "
        "call +44 20 7946 0958 or (415) 555-0123, date 2025-01-02"
    )
    out, _, rep = run("[[steps]]\nkind='redact'", [mem("a", text), mem("b", None)])
    got = out[0]["text"]
    assert got == (
        "mail [EMAIL], card [CARD] and [CARD], order 4111111111111112, ip [IP] and [IP], "
        "key [SECRET] [SECRET] [SECRET], call [PHONE] or [PHONE], date 2025-01-02"
    )
    counts = rep.steps[0].counts
    assert counts["text:email"] == 1 and counts["text:card"] == 2 and counts["text:secret"] == 3
    assert counts["text:ipv4"] == 1 and counts["text:ipv6"] == 1 and counts["text:phone"] == 2
    assert out[1]["text"] is None


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("use std::vector and Foo::bar, at 12:30:45", "use std::vector and Foo::bar, at 12:30:45"),
        ("mac 00:1a:2b:3c:4d:5e", "mac 00:1a:2b:3c:4d:5e"),
        ("v6 2001:db8::8a2e:370:7334 end", "v6 [IP] end"),
        ("full 2001:0db8:85a3:0000:0000:8a2e:0370:7334.", "full [IP]."),
        ("link fe80:: here", "link [IP] here"),
        ("v4 192.168.1.254/24, not 999.1.1.1", "v4 [IP]/24, not 999.1.1.1"),
    ],
)
def test_redact_ip_edges(text: str, want: str) -> None:
    out, _, _ = run("[[steps]]\nkind='redact'\nbuiltin=['ipv4', 'ipv6']", [mem("a", text)])
    assert out[0]["text"] == want


def test_redact_user_patterns_and_metadata_stays_json() -> None:
    rows = [
        mem(
            "a",
            "ticket EMP-12345 by bob@example.com",
            metadata='{"contact": "bob@example.com", "phone": 4155550123, "emp": "EMP-99999"}',
        ),
        mem("b", "nothing", metadata='{"z": 1, "a": [1, 2]}'),
    ]
    out, _, rep = run(
        "[[steps]]\nkind='redact'\nbuiltin=['email']\npatterns={EMP='EMP-[0-9]+'}\nfields=['metadata']",
        rows,
    )
    assert out[0]["text"] == "ticket EMP-12345 by bob@example.com"  # text not asked for
    assert json.loads(out[0]["metadata"]) == {
        "contact": "[EMAIL]",
        "phone": 4155550123,
        "emp": "[EMP]",
    }
    assert out[1]["metadata"] == '{"z": 1, "a": [1, 2]}'  # untouched text, byte for byte
    assert rep.steps[0].counts == {"metadata:EMP": 1, "metadata:email": 1, "metadata_replaced": 0}
    # a detector that hits a bare JSON number: retried with a quoted placeholder, still valid JSON
    out, _, rep = run(
        "[[steps]]\nkind='redact'\nbuiltin=[]\npatterns={NUM='4155550123'}\nfields=['metadata']",
        rows[:1],
    )
    assert json.loads(out[0]["metadata"])["phone"] == "[NUM]"


def test_invariant_check_catches_a_step_that_loses_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """A (deliberately) broken step that drops a row without recording it must be caught."""
    from longmem_etl.transforms import engine, steps
    from longmem_etl.transforms.plans import Custom

    def lossy(con, inp, out, rem, stage, step_no):
        con.execute(f"CREATE TEMP TABLE {out} AS SELECT * FROM {inp} ORDER BY _row LIMIT 1")
        return {}

    monkeypatch.setitem(steps.COMPILERS, "drop_archived", lambda step, now: [Custom(lossy)])
    with pytest.raises(engine.InvariantBroken, match="3 in != 1 out"):
        run("[[steps]]\nkind='drop_archived'", [mem("a"), mem("b"), mem("c")])


def test_drop_columns_and_keep_metadata_keys() -> None:
    rows = [
        mem(
            "a",
            source="sdk",
            container_tag="u",
            metadata='{"keep": 1, "drop": {"x": 2}}',
            extra='{"x": 1}',
        ),
        mem("b", metadata='{"keep": [1]}'),
        mem("c", metadata="[1, 2]"),
        mem("d"),
    ]
    out, _, _ = run(
        "[[steps]]\nkind='keep_metadata_keys'\nkeys=['keep']\n"
        "[[steps]]\nkind='drop_columns'\ncolumns=['source', 'container_tag', 'extra']",
        rows,
    )
    assert [r["metadata"] for r in out] == ['{"keep":1}', '{"keep": [1]}', "[1, 2]", None]
    assert all(
        r["source"] is None and r["container_tag"] is None and r["extra"] is None for r in out
    )


def test_extra_and_fidelity_carried_unless_field_changes() -> None:
    fid = json.dumps(
        {
            "absent": ["category"],
            "raw": {"created_at": "2025-01-01T00:00:00.123456789Z", "text": "x"},
        }
    )
    rows = [
        mem(
            "a",
            "  spaced ",
            extra='{"u": 18446744073709551617}',
            fidelity=fid,
            created_at=T("2025-01-01T00:00:00"),
        )
    ]
    out, _, _ = run("[[steps]]\nkind='drop_archived'", rows)
    assert out[0]["fidelity"] == fid and out[0]["extra"] == '{"u": 18446744073709551617}'
    out, _, _ = run("[[steps]]\nkind='normalize_text'", rows)
    assert json.loads(out[0]["fidelity"]) == {
        "absent": ["category"],
        "raw": {"created_at": "2025-01-01T00:00:00.123456789Z"},
    }
    out, _, _ = run(
        "[[steps]]\nkind='normalize_text'\n[[steps]]\nkind='set_defaults'\ncategory='x'", rows
    )
    assert json.loads(out[0]["fidelity"]) == {
        "raw": {"created_at": "2025-01-01T00:00:00.123456789Z"}
    }
    assert out[0]["extra"] == '{"u": 18446744073709551617}'


def test_fidelity_forget_keeps_numbers_exact() -> None:
    fid = '{"raw": {"importance": 1e400, "text": 1}, "absent": []}'
    assert fidelity_forget(fid, ["text"]) == '{"raw":{"importance":1e400}}'
    assert fidelity_forget(fid, ["text", "importance"]) is None
    assert fidelity_forget(fid, []) == fid


def test_rejected_raw_applies_fidelity() -> None:
    fid = json.dumps({"absent": ["category", "source"], "raw": {"importance": 1}})
    _, rej, _ = run(
        "[[steps]]\nkind='drop_archived'",
        [
            mem(
                "a",
                archived=True,
                importance=1.0,
                fidelity=fid,
                extra='{"zz": null, "n": 1.0}',
                metadata='{"k": 0.30000000000000004}',
            )
        ],
    )
    raw = rej[0]["raw"]
    assert '"importance":1' in raw and '"zz": null' in raw and '"n": 1.0' in raw
    doc = json.loads(raw)
    assert "category" not in doc and "source" not in doc
    assert list(doc)[-2:] == ["zz", "n"]
    assert doc["metadata"] == {"k": 0.30000000000000004}


def test_report_counts_every_step_and_repeated_names() -> None:
    rows = [mem("a", archived=True), mem("b", "x"), mem("c", "X"), mem("d", "y")]
    _, rej, rep = run(
        "[[steps]]\nkind='drop_archived'\n[[steps]]\nkind='dedup'\n[[steps]]\nkind='filter'\nwhere=\"text <> 'y'\"\n"
        "[[steps]]\nkind='filter'\nwhere='true'",
        rows,
    )
    assert [(s.name, s.rows_in, s.rows_out, s.rejected) for s in rep.steps] == [
        ("drop_archived", 4, 3, 1),
        ("dedup", 3, 2, 1),
        ("filter#1", 2, 1, 1),
        ("filter#2", 1, 1, 0),
    ]
    assert [r["stage"] for r in rej] == ["drop_archived", "dedup", "filter#1"]
    table = rep.table()
    assert "filter#1" in table and "total" in table
    assert rep.to_dict()["steps"][1]["rejected"] == 1


def test_input_as_table_name_and_relation() -> None:
    con = duckdb.connect()
    table = pa.Table.from_pylist([mem("a", archived=True), mem("b")], schema=MEMORIES_SCHEMA)
    con.register("src_view", table)
    con.execute("CREATE TABLE src AS SELECT * FROM src_view")
    spec = parse_spec("[[steps]]\nkind='drop_archived'")
    out, rej, rep = apply_spec(con, spec, "src", now=NOW)
    assert out.fetchall()[0][0] == "b" and rej.fetchall()[0][0] == 0
    out, rej, rep = apply_spec(con, spec, con.sql("SELECT * FROM src"), now=NOW)
    assert rep.rows_out == 1 and rep.rejected == 1


def test_dedup_key_shortcut_equals_full_key() -> None:
    """Printable single-spaced ASCII skips the UDF (key = lower(text)); both paths must agree."""
    texts = [
        "Plain Text.",
        " lead",
        "trail ",
        "two  spaces",
        "tab\there",
        "Ünï",
        "ok",
        "bel\x07",
        "MiXeD 1",
    ]
    con = duckdb.connect()
    register(con)
    con.register("t", pa.table({"text": texts}))
    fast = [r[0] for r in con.execute(f"SELECT {dedup_key_sql()} FROM t").fetchall()]
    assert fast == dedup_key(pa.array(texts)).to_pylist()
    assert dedup_key(pa.array(["bel\x07"])).to_pylist() == ["bel"]


def test_parquet_input_with_many_row_groups_keeps_order(tmp_path) -> None:
    """The streamed path (Parquet read in place, parallel row groups): same result as in memory."""
    import pyarrow.parquet as pq

    rows = [
        mem(
            f"m{i:03d}",
            f"  text {i % 37}  ",
            archived=(i % 5 == 0),
            updated_at=T("2025-01-01T00:00:00"),
        )
        for i in range(400)
    ]
    table = pa.Table.from_pylist(rows, schema=MEMORIES_SCHEMA)
    path = tmp_path / "memories.parquet"
    pq.write_table(table, path, row_group_size=7)
    spec = parse_spec(
        "[[steps]]\nkind='drop_archived'\n[[steps]]\nkind='normalize_text'\n"
        "[[steps]]\nkind='dedup'\n[[steps]]\nkind='redact'\n[[steps]]\nkind='filter'\nwhere=\"id <> 'm001'\""
    )
    con = duckdb.connect()
    con.execute("SET threads = 4")
    from_file = apply_spec(con, spec, str(path), now=NOW, defer_tail=True)
    got = [r for b in from_file.output_batches(50) for r in b.to_pylist()]
    out, rej, _ = run(
        "[[steps]]\nkind='drop_archived'\n[[steps]]\nkind='normalize_text'\n"
        "[[steps]]\nkind='dedup'\n[[steps]]\nkind='redact'\n[[steps]]\nkind='filter'\nwhere=\"id <> 'm001'\"",
        rows,
    )
    assert got == out
    assert [r["id"] for r in got] == sorted(r["id"] for r in got)  # input order
    assert from_file.rejected.to_arrow_table().to_pylist() == rej
    # 37 distinct texts survive dedup (smallest id wins the tie); the filter then drops m001
    assert len(got) == 36


def test_redact_metadata_that_cannot_stay_json_is_replaced_and_counted() -> None:
    out, _, rep = run(
        "[[steps]]\nkind='redact'\nbuiltin=[]\npatterns={BRACE='[{]'}\nfields=['metadata']",
        [mem("a", metadata='{"k": 1}'), mem("b", metadata="[1]")],
    )
    assert out[0]["metadata"] == '{"redacted":true}'
    assert out[1]["metadata"] == "[1]"
    assert rep.steps[0].counts["metadata_replaced"] == 1
