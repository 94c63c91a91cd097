"""Each step kind compiled to SQL plans (see `plans.py`). One small function per kind; redact and the
raw `sql` step have their own modules."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from longmem_etl.transforms.fittext import compile_fit_text
from longmem_etl.transforms.plans import Plan, Reject, Rewrite
from longmem_etl.transforms.redact import compile_redact
from longmem_etl.transforms.spec import Step, sql_str
from longmem_etl.transforms.sqlparts import COLLAPSE_RE, WS, ZERO_WIDTH, dedup_key_sql, ts_iso
from longmem_etl.transforms.sqlstep import compile_sql


def _ts_literal(dt: datetime) -> str:
    return f"TIMESTAMPTZ {sql_str(dt.isoformat())}"


def drop_archived(step: Step, now: datetime) -> list[Plan]:
    return [Reject("CASE WHEN archived THEN 'archived' END", field="archived")]


def drop_expired(step: Step, now: datetime) -> list[Plan]:
    at = step.options.get("now") or now
    return [
        Reject(
            f"CASE WHEN expires_at <= {_ts_literal(at)} THEN 'expired at ' || {ts_iso('expires_at')} END",
            field="expires_at",
        )
    ]


def drop_superseded(step: Step, now: datetime) -> list[Plan]:
    cond = "nullif(trim(superseded_by), '') IS NOT NULL"
    if step.options["require_target"]:
        cond += " AND superseded_by IN (SELECT id FROM {input})"
        return [
            Reject(
                f"CASE WHEN {cond} THEN 'superseded by ' || superseded_by END",
                field="superseded_by",
            )
        ]
    return [
        Reject(
            f"CASE WHEN {cond} THEN 'superseded by ' || superseded_by END", field="superseded_by"
        )
    ]


_NEWEST = "updated_at DESC NULLS LAST, created_at DESC NULLS LAST"
_ORDER = {
    "newest": _NEWEST,
    "oldest": "created_at ASC NULLS LAST, updated_at ASC NULLS LAST",
    "most_important": f"importance DESC NULLS LAST, {_NEWEST}",
    "pinned_first": f"coalesce(pinned, false) DESC, {_NEWEST}",
}


def dedup(step: Step, now: datetime) -> list[Plan]:
    """Exact duplicates of the normalised text within the ``by`` scope.

    Set-wise and exact: a 64-bit hash of the key finds candidate groups with one hash aggregate (most
    rows are unique and stop there); only candidates are ranked, partitioned by the key itself, so a
    hash collision can never merge different texts. Rows with NULL text are never duplicates. Ties
    after the keep order go to the smaller id, then the earlier row: the survivor never depends on
    scan order.
    """
    by = [f'"{c}"' for c in step.options["by"]]
    key = dedup_key_sql("text")
    scope = "".join(f", {c}" for c in by)
    same_scope = "".join(f" AND k.{c} IS NOT DISTINCT FROM g.{c}" for c in by)
    window = f"PARTITION BY {key}{scope} ORDER BY {_ORDER[step.options['keep']]}, id ASC, _row ASC"
    query = f"""
        WITH k AS (SELECT _row, hash({key}) AS h{scope} FROM {{input}} WHERE text IS NOT NULL),
        g AS (SELECT h{scope} FROM k GROUP BY ALL HAVING count(*) > 1),
        c AS (SELECT k._row FROM k SEMI JOIN g ON k.h = g.h{same_scope}),
        cand AS (SELECT i.* FROM {{input}} i SEMI JOIN c ON i._row = c._row)
        SELECT _row, _reason FROM (
            SELECT _row, CASE WHEN row_number() OVER ({window}) > 1
                         THEN 'duplicate of ' || first_value(id) OVER ({window}) END AS _reason
            FROM cand)
        WHERE _reason IS NOT NULL"""
    return [Reject(field="text", query=query)]


def _map_expr(col: str, mapping: dict[str, str]) -> str:
    if not mapping:
        return col
    cases = " ".join(f"WHEN {sql_str(k)} THEN {sql_str(v)}" for k, v in mapping.items())
    return f"CASE {col} {cases} ELSE {col} END"


def rename_collections(step: Step, now: datetime) -> list[Plan]:
    return [Rewrite({"collection": _map_expr("collection", step.options["map"])})]


def map_container_tags(step: Step, now: datetime) -> list[Plan]:
    o = step.options
    expr = "container_tag"
    if o.get("from_prefix") is not None:
        fp, tp = o["from_prefix"], o.get("to_prefix") or ""
        expr = (
            f"CASE WHEN starts_with(container_tag, {sql_str(fp)}) "
            f"THEN {sql_str(tp)} || substr(container_tag, {len(fp) + 1}) ELSE container_tag END"
        )
    mapping = o.get("map") or {}
    if mapping:
        cases = " ".join(f"WHEN {sql_str(k)} THEN {sql_str(v)}" for k, v in mapping.items())
        expr = f"CASE container_tag {cases} ELSE {expr} END"
    return [Rewrite({"container_tag": expr})]


def set_defaults(step: Step, now: datetime) -> list[Plan]:
    exprs = {}
    for col in ("category", "source"):
        if step.options.get(col) is not None:
            exprs[col] = f"coalesce({col}, {sql_str(step.options[col])})"
    if step.options.get("importance") is not None:
        exprs["importance"] = (
            f"coalesce(importance, CAST({step.options['importance']!r} AS DOUBLE))"
        )
    return [Rewrite(exprs)]


def normalize_text(step: Step, now: datetime) -> list[Plan]:
    """A chain of RE2 replaces, run only on texts a cheap pre-check says need any of them."""
    o = step.options
    expr = "text"
    needs = []
    if o["strip_control"]:
        # whitespace controls (TAB LF VT FF CR NEL) become spaces so words stay apart; others go
        expr = f"regexp_replace({expr}, '[\\t\\n\\x0B\\f\\r\\x{{85}}]', ' ', 'g')"
        expr = (
            f"regexp_replace({expr}, "
            f"'[\\x00-\\x08\\x0E-\\x1F\\x7F-\\x{{84}}\\x{{86}}-\\x{{9F}}]', '', 'g')"
        )
        needs.append("[\\x00-\\x1F\\x7F-\\x{9F}]")
    if o["strip_zero_width"]:
        expr = f"regexp_replace({expr}, '[{ZERO_WIDTH}]', '', 'g')"
        needs.append(f"[{ZERO_WIDTH}]")
    if o["collapse_whitespace"]:
        expr = f"regexp_replace({expr}, '{COLLAPSE_RE}', ' ', 'g')"
        needs.append(COLLAPSE_RE)
    if o["trim"]:
        if o["collapse_whitespace"]:  # only single plain spaces are left
            expr = f"trim({expr}, ' ')"
        else:
            expr = f"regexp_replace({expr}, '^[{WS}]+|[{WS}]+$', '', 'g')"
        needs.append(f"^[{WS}]|[{WS}]$")
    if needs:
        expr = (
            f"CASE WHEN regexp_matches(text, {sql_str('|'.join(needs))}) THEN {expr} ELSE text END"
        )
    plans: list[Plan] = [Rewrite({"text": expr})]
    if o["drop_empty"]:
        plans.append(
            Reject("CASE WHEN text = '' THEN 'empty text after normalize_text' END", "text")
        )
    return plans


def filter_(step: Step, now: datetime) -> list[Plan]:
    pred = step.options["where"]
    return [
        Reject(
            f"CASE WHEN coalesce(({pred}), false) THEN NULL ELSE {sql_str('filter: ' + pred)} END"
        )
    ]


def drop_columns(step: Step, now: datetime) -> list[Plan]:
    return [Rewrite({c: "NULL" for c in step.options["columns"]})]


def keep_metadata_keys(step: Step, now: datetime) -> list[Plan]:
    """Only JSON-object metadata is touched; metadata that already holds only wanted keys keeps its
    exact text (no reformatting)."""
    keys = "[" + ", ".join(sql_str(k) for k in step.options["keys"]) + "]::VARCHAR[]"
    expr = (
        "CASE WHEN metadata IS NULL OR NOT json_valid(metadata) OR json_type(metadata) <> 'OBJECT' "
        "THEN metadata "
        f"WHEN list_bool_and(list_transform(json_keys(metadata), lambda k: list_contains({keys}, k))) "
        "OR len(json_keys(metadata)) = 0 THEN metadata "
        "ELSE to_json(map_from_entries(list_filter(map_entries(CAST(metadata::JSON AS MAP(VARCHAR, JSON))), "
        f"lambda e: list_contains({keys}, e.key))))::VARCHAR END"
    )
    return [Rewrite({"metadata": expr})]


COMPILERS: dict[str, Callable[[Step, datetime], list[Plan]]] = {
    "drop_archived": drop_archived,
    "drop_expired": drop_expired,
    "drop_superseded": drop_superseded,
    "dedup": dedup,
    "rename_collections": rename_collections,
    "map_container_tags": map_container_tags,
    "set_defaults": set_defaults,
    "normalize_text": normalize_text,
    "filter": filter_,
    "sql": compile_sql,
    "redact": compile_redact,
    "drop_columns": drop_columns,
    "keep_metadata_keys": keep_metadata_keys,
    "fit_text": compile_fit_text,
}


def compile_step(step: Step, now: datetime) -> list[Plan]:
    return COMPILERS[step.kind](step, now)


def describe(step: Step) -> dict[str, Any]:
    """The step as recorded in the manifest / report (options JSON-friendly)."""
    opts = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in step.options.items()}
    return {"step": step.index, "name": step.name, "kind": step.kind, "options": opts}
