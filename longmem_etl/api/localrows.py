"""Dump memory dict <-> row of the embedded store's ``memories`` table, losslessly.

Why a codec and not just a JSON blob: the store must be queryable (list order, collection, pinned,
archived, FTS on text) *and* give back exactly what was seeded (every unknown field, absent keys,
dirty values, key order). So every known field has a column holding the value when it has the
expected JSON type; anything the columns cannot say goes into ``fidelity``:

- ``absent``: known fields the memory did not have (so export does not invent ``"expires_at": null``);
- ``raw``: known fields whose value has an unexpected type (e.g. ``"pinned": "yes"``), kept verbatim;
- ``order``: the original key order, only when it is not the canonical one.

Unknown fields live in ``extra`` (a JSON object, NULL when none), values exactly as given.
"""

from __future__ import annotations

import functools
from typing import Any

from longmem_etl import jsonio
from longmem_etl.schema import MEMORY_FIELDS
from longmem_etl.timestamps import parse_timestamp

KNOWN: tuple[str, ...] = tuple(MEMORY_FIELDS)
_KNOWN_SET = frozenset(KNOWN)
_STR_FIELDS = frozenset(
    {
        "id",
        "collection",
        "text",
        "category",
        "source",
        "container_tag",
        "superseded_by",
        "created_at",
        "updated_at",
        "expires_at",
    }
)
_BOOL_FIELDS = frozenset({"pinned", "archived"})
_INT64 = (-(2**63), 2**63 - 1)

# Columns of the memories table written by encode(), in insert order.
COLUMNS: tuple[str, ...] = KNOWN + ("extra", "fidelity", "created_ts", "updated_ts", "expires_ts")


def dumps(value: Any) -> str:
    """Compact JSON text, numbers exact (``jsonio``: big ints, Decimal literals)."""
    return jsonio.dumps_str(value)


def loads(text: str) -> Any:
    return jsonio.loads(text)


def to_epoch(value: Any) -> float | None:
    """Best-effort seconds since the epoch, for ordering and health only (never exported)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        v = float(value)
        return v / 1000.0 if abs(v) > 1e11 else v
    if isinstance(value, str):
        return _text_epoch(value)
    return None


@functools.lru_cache(maxsize=256)
def _text_epoch(value: str) -> float | None:
    """`to_epoch` of a string, remembered: a call's rows share its ``now`` (``updated_at``)."""
    s = value.strip()
    if not s:
        return None
    try:
        return parse_timestamp(s)[0] / 1e6
    except ValueError:
        return None


def _typed(field: str, value: Any) -> tuple[bool, Any]:
    """(fits the column, column value)."""
    if field == "metadata":
        return True, dumps(value)
    if value is None:
        return True, None
    if field in _STR_FIELDS:
        return isinstance(value, str), value if isinstance(value, str) else None
    if field in _BOOL_FIELDS:
        return isinstance(value, bool), int(value) if isinstance(value, bool) else None
    if field == "importance":
        if isinstance(value, bool):
            return False, None
        if isinstance(value, float) or (isinstance(value, int) and _INT64[0] <= value <= _INT64[1]):
            return True, value
        return False, None
    return False, None  # pragma: no cover - every known field is handled above


def too_deep(mem: Any) -> bool:
    """Whether a memory (its metadata or any field) nests deeper than ``jsonio.MAX_DEPTH`` below
    the memory object: such a value could be stored but never read back (every decoder recurses)."""
    return jsonio.value_too_deep(mem, jsonio.MAX_DEPTH + 1)


def encode(mem: dict[str, Any], *, depth_checked: bool = False) -> dict[str, Any]:
    """A memory dict -> column values for the memories table (see COLUMNS). BadInput for a memory
    nested too deep (the API methods refuse those first, with a 422 naming the item, and say so
    with ``depth_checked``)."""
    if not depth_checked and too_deep(mem):
        from longmem_etl.errors import BadInput

        ident = mem.get("id") if isinstance(mem, dict) else None
        raise BadInput(f"memory {str(ident)[:80]!r}: {jsonio.TOO_DEEP}")
    row: dict[str, Any] = {}
    absent: list[str] = []
    raw: dict[str, Any] = {}
    for field in KNOWN:
        if field not in mem:
            absent.append(field)
            row[field] = None
            continue
        ok, col = _typed(field, mem[field])
        row[field] = col
        if not ok:
            raw[field] = mem[field]
    extra = {k: v for k, v in mem.items() if k not in _KNOWN_SET}
    row["extra"] = dumps(extra) if extra else None
    keys = list(mem)
    canonical = [k for k in KNOWN if k in mem] + list(extra)
    fidelity: dict[str, Any] = {}
    if absent:
        fidelity["absent"] = absent
    if raw:
        fidelity["raw"] = raw
    if keys != canonical:
        fidelity["order"] = keys
    row["fidelity"] = dumps(fidelity) if fidelity else None
    row["created_ts"] = to_epoch(mem.get("created_at"))
    row["updated_ts"] = to_epoch(mem.get("updated_at"))
    row["expires_ts"] = to_epoch(mem.get("expires_at"))
    return row


def new_row(mem: dict[str, Any], metadata_text: str, ts: float | None) -> tuple[Any, ...]:
    """The row (COLUMNS order) of a memory the API just created (``localcheck.new_memory_row``).

    What ``tuple(encode(mem)[c] for c in COLUMNS)`` gives for such a memory, without its per-field
    walk: every known field is present, with its column's type, in canonical order, so there is no
    ``extra`` and no ``fidelity``; ``metadata_text`` is ``dumps(mem["metadata"])``, and ``ts`` the
    epoch of ``created_at`` (= ``updated_at``). ``tests/test_local_store.py`` holds it to
    ``encode``."""
    return fresh_row(
        mem["id"],
        mem["collection"],
        mem["text"],
        mem["importance"],
        mem["category"],
        metadata_text,
        mem["source"],
        mem["container_tag"],
        mem["created_at"],
        ts,
    )


def fresh_row(
    memory_id: str,
    collection: str,
    text: str,
    importance: float,
    category: str,
    metadata_text: str,
    source: str,
    container_tag: str | None,
    now: str,
    ts: float | None,
) -> tuple[Any, ...]:
    """`new_row` from the fields themselves (``add_many`` builds no memory dicts): not pinned,
    not archived, created and updated ``now``, never expiring, not superseded."""
    return (
        memory_id,
        collection,
        text,
        importance,
        category,
        metadata_text,
        source,
        container_tag,
        0,  # pinned
        0,  # archived
        now,  # created_at
        now,  # updated_at
        None,  # expires_at
        None,  # superseded_by
        None,  # extra
        None,  # fidelity
        ts,  # created_ts
        ts,  # updated_ts
        None,  # expires_ts: a new memory never expires
    )


def decode(row: Any) -> dict[str, Any]:
    """A memories-table row (sqlite3.Row with the COLUMNS names) -> the memory dict."""
    fidelity = loads(row["fidelity"]) if row["fidelity"] else {}
    absent = set(fidelity.get("absent", ()))
    raw = fidelity.get("raw", {})
    out: dict[str, Any] = {}
    for field in KNOWN:
        if field in absent:
            continue
        if field in raw:
            out[field] = raw[field]
            continue
        value = row[field]
        if field == "metadata":
            value = loads(value) if value is not None else None
        elif field in _BOOL_FIELDS and value is not None:
            value = bool(value)
        out[field] = value
    if row["extra"]:
        out.update(loads(row["extra"]))
    order = fidelity.get("order")
    if order:
        ordered = {k: out[k] for k in order if k in out}
        ordered.update((k, v) for k, v in out.items() if k not in ordered)
        out = ordered
    return out


def set_fields(fidelity_text: str | None, fields: list[str]) -> str | None:
    """Fidelity after the API set ``fields`` to typed values: they are neither absent nor raw."""
    if not fidelity_text:
        return None
    fidelity = loads(fidelity_text)
    if "absent" in fidelity:
        fidelity["absent"] = [f for f in fidelity["absent"] if f not in fields]
        if not fidelity["absent"]:
            del fidelity["absent"]
    if "raw" in fidelity:
        for f in fields:
            fidelity["raw"].pop(f, None)
        if not fidelity["raw"]:
            del fidelity["raw"]
    return dumps(fidelity) if fidelity else None
