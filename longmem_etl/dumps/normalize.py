"""Raw memory JSON -> typed Arrow rows (+ ``extra`` and ``fidelity``), or a rejection with a reason.

Fast path: a batch is decoded in one msgspec call into a Struct of the known fields with unknown
fields forbidden; ``metadata`` and ``importance`` stay ``msgspec.Raw`` (the exact bytes), timestamps
are cast to ``timestamp[us, UTC]`` by Arrow in one vectorised call. Only when a batch does not fit
(an unknown field, a wrong type, a non-object) is it redone row by row, and only the rows that fail
the typed decode take the slow, key-by-key path. Columns are built from lists, never row dicts.

What counts as a rejected row (stage ``convert``): not an object; no ``id`` or an ``id`` that is not
a non-empty string; a duplicate ``id`` (the first one wins); ``text`` missing or not a string; a known
field of the wrong JSON type (strings must be strings, ``pinned``/``archived`` booleans,
``importance`` a number and not a boolean; any of them may be null); a timestamp that is not an
ISO-8601 string. ``good + rejected == input`` always.

``fidelity`` (NULL for ordinary rows) records what the typed columns cannot: known fields absent
from the row, and the original JSON of values a column cannot reproduce exactly (an integer or
over-precise ``importance``, a timestamp with sub-microsecond digits or without an offset).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from msgspec import UNSET, Raw, UnsetType

from longmem_etl import jsonio
from longmem_etl.arrays import string_array
from longmem_etl.dumps.ids import IdIndex, fingerprints
from longmem_etl.jsonio import kind_of, raw_kind
from longmem_etl.schema import (
    KNOWN_MEMORY_FIELDS,
    MEMORIES_SCHEMA,
    MEMORY_FIELDS,
    REJECTED_SCHEMA,
    TIMESTAMP,
    TIMESTAMP_FIELDS,
)
from longmem_etl.timestamps import parse_timestamp

STAGE = "convert"
_EMPTY = Raw(b"")


class _Mem(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """The known fields, typed as strictly as the snapshot columns (UNSET = absent from the row)."""

    id: str
    text: str
    collection: str | None | UnsetType = UNSET
    importance: Raw = _EMPTY
    category: str | None | UnsetType = UNSET
    metadata: Raw = _EMPTY
    source: str | None | UnsetType = UNSET
    container_tag: str | None | UnsetType = UNSET
    pinned: bool | None | UnsetType = UNSET
    archived: bool | None | UnsetType = UNSET
    created_at: str | None | UnsetType = UNSET
    updated_at: str | None | UnsetType = UNSET
    expires_at: str | None | UnsetType = UNSET
    superseded_by: str | None | UnsetType = UNSET


class _FastMem(_Mem):
    """``_Mem`` with ``text`` left as raw JSON: the longest value is then never built as a Python
    string (nor re-encoded by Arrow); ``_raw_text`` turns the batch's texts into a column at once."""

    text: Raw  # type: ignore[assignment]


_DEC_FAST = msgspec.json.Decoder(list[_FastMem])
_DEC_ONE = msgspec.json.Decoder(_Mem)
_DEC_LIST = msgspec.json.Decoder(list[_Mem])
_DEC_OBJ = msgspec.json.Decoder(dict[str, Raw])
_DEC_ANY = msgspec.json.Decoder()

_STR_FIELDS = tuple(
    n for n, t in MEMORY_FIELDS.items() if t == pa.string() and n not in ("metadata",)
)
_BOOL_FIELDS = tuple(n for n, t in MEMORY_FIELDS.items() if t == pa.bool_())
_TYPED_STR_FIELDS = tuple(n for n in _STR_FIELDS if n not in ("id", "text"))


class BadRow(Exception):
    """A row-level problem: which field and why (it becomes one rejected row, never an error)."""

    def __init__(self, field: str | None, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


def _key_json(key: str) -> bytes:
    return msgspec.json.encode(key)


# --------------------------------------------------------------------------------------------------
# Slow path: one row, key by key


def _slow_row(raw: Raw | bytes) -> tuple[_Mem, str | None]:
    """Decode a row the typed decoder refused; return the struct and ``extra`` JSON, or raise BadRow."""
    try:
        obj = _DEC_OBJ.decode(raw)
    except msgspec.ValidationError:
        raise BadRow(None, f"row is {raw_kind(raw)}, expected an object") from None
    known: dict[str, Any] = {}
    extra_parts: list[bytes] = []
    for key, value in obj.items():
        if key in KNOWN_MEMORY_FIELDS:
            known[key] = value
        else:
            extra_parts.append(_key_json(key) + b":" + bytes(value))
    fields: dict[str, Any] = {}
    if "id" not in known:
        raise BadRow("id", "missing id")
    ident = _DEC_ANY.decode(known["id"])
    if not isinstance(ident, str) or not ident:
        raise BadRow(
            "id",
            f"id is {kind_of(ident) if ident != '' else 'an empty string'}, expected a non-empty string",
        )
    fields["id"] = ident
    if "text" not in known:
        raise BadRow("text", "missing text")
    text = _DEC_ANY.decode(known["text"])
    if not isinstance(text, str):
        raise BadRow("text", f"text is {kind_of(text)}, expected a string")
    fields["text"] = text
    for name in _TYPED_STR_FIELDS + TIMESTAMP_FIELDS:
        if name in known:
            v = _DEC_ANY.decode(known[name])
            if v is not None and not isinstance(v, str):
                what = "an ISO-8601 timestamp string" if name in TIMESTAMP_FIELDS else "a string"
                raise BadRow(name, f"{name} is {kind_of(v)}, expected {what}")
            fields[name] = v
    for name in _BOOL_FIELDS:
        if name in known:
            v = _DEC_ANY.decode(known[name])
            if v is not None and not isinstance(v, bool):
                raise BadRow(name, f"{name} is {kind_of(v)}, expected a boolean")
            fields[name] = v
    for name in ("importance", "metadata"):
        if name in known:
            fields[name] = known[name]
    extra = None
    if extra_parts:
        extra = (b"{" + b",".join(extra_parts) + b"}").decode("utf-8")
    return _Mem(**fields), extra


# --------------------------------------------------------------------------------------------------
# Timestamps

# ``parse_timestamp`` lives in ``longmem_etl/timestamps.py``: every ISO-8601 parse in the toolkit uses it.


def _timestamps(
    arr: pa.Array,
    clean: list[Any],
    bad: dict[int, BadRow],
    raws: dict[int, dict[str, bytes]],
    name: str,
) -> pa.Array:
    """Typed column for one timestamp field; fills ``bad`` and ``raws`` (fidelity) by row.

    One vectorised Arrow cast for the usual RFC 3339 strings; when any value does not cast, the
    batch's column is parsed value by value (sub-microsecond digits, no offset, garbage).
    """
    try:
        return arr.cast(TIMESTAMP)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    out: list[int | None] = []
    for i, v in enumerate(clean):
        if v is None:
            out.append(None)
            continue
        try:
            us, exact = parse_timestamp(v)
        except (ValueError, OverflowError):
            bad.setdefault(i, BadRow(name, f"{name} is not an ISO-8601 timestamp: {v[:60]!r}"))
            out.append(None)
            continue
        if not exact:
            raws.setdefault(i, {})[name] = jsonio.dumps(v)
        out.append(us)
    return pa.array(out, pa.int64()).cast(TIMESTAMP)


# --------------------------------------------------------------------------------------------------
# importance: exact number or a rejection


def _importance_row(b: bytes, i: int, bad: dict[int, BadRow], raws: dict[int, dict[str, bytes]]):
    """One importance literal the vectorised path could not settle: value, fidelity, or rejection."""
    try:
        f = float(b)
    except ValueError:
        bad.setdefault(i, BadRow("importance", f"importance is {raw_kind(b)}, expected a number"))
        return None
    if not math.isfinite(f):
        raws.setdefault(i, {})["importance"] = b
        return None
    if b"." not in b and b"e" not in b and b"E" not in b:
        exact = False  # an integer literal: keep it an integer on the way back
    else:
        try:
            shortest, literal = repr(f), b.decode()  # "1.0": Python says it the same way
            exact = shortest == literal or Decimal(shortest) == Decimal(literal)
        except InvalidOperation:  # pragma: no cover
            exact = False
    if not exact:
        raws.setdefault(i, {})["importance"] = b
    return f


_INT_LITERAL = r"^-?[0-9]+$"


def _importance(
    values: list[Raw],
    lengths: np.ndarray,
    bad: dict[int, BadRow],
    raws: dict[int, dict[str, bytes]],
) -> pa.Array:
    """float64 column; literals a double does not say exactly (ints, 1e400, extra digits) kept raw.

    Vectorised: Arrow parses the literals and renders the doubles back (shortest round-trip form);
    only rows where the two texts differ, or that are integers, are looked at one by one.
    """
    text = _raw_strings(values, lengths)
    try:
        floats = text.cast(pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        floats = None
    if floats is not None:
        back = floats.cast(pa.string())
        # null exactly where text is null; indices_nonzero skips nulls
        check = pc.or_(pc.not_equal(back, text), pc.match_substring_regex(text, _INT_LITERAL))
        rows = pc.indices_nonzero(check)
        if not len(rows):
            return floats
        # a looked-at row keeps the parsed double (fidelity notes the literal) unless it has none
        # (not finite, not a number): only those become null
        gone = np.zeros(len(values), dtype=bool)
        for i in rows.to_numpy().tolist():
            b = bytes(values[i])
            if b == b"null" or _importance_row(b, i, bad, raws) is None:
                gone[i] = True
        if not gone.any():
            return floats
        return pc.if_else(pa.array(gone), pa.nulls(len(values), pa.float64()), floats)
    else:
        idx = np.flatnonzero(lengths > 0)
        out = [None] * len(values)
    for i in idx.tolist():
        b = bytes(values[i])
        out[i] = None if b == b"null" else _importance_row(b, i, bad, raws)
    return pa.array(out, pa.float64())


# --------------------------------------------------------------------------------------------------
# Raw JSON -> Arrow string column without per-row decode


def _lengths(values: Sequence[Raw | bytes]) -> np.ndarray:
    return np.fromiter(map(len, values), dtype=np.int64, count=len(values))


def _raw_strings(values: Sequence[Raw | bytes], lengths: np.ndarray | None = None) -> pa.Array:
    """Arrow string array of raw JSON slices; empty slices and JSON null become NULL."""
    n = len(values)
    if lengths is None:
        lengths = _lengths(values)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    data = b"".join(values)
    is_null = lengths == 0
    four = np.flatnonzero(lengths == 4)  # a 4-byte JSON value starting with "n" is null
    if len(four):
        is_null[four] = np.frombuffer(data, np.uint8)[offsets[four]] == ord("n")
    return string_array(n, offsets, data, is_null)


def _raw_text(values: list[Raw]) -> pa.Array | None:
    """string column from raw JSON string literals (quotes cut off in one Arrow pass; only values
    with a backslash escape are decoded one by one). None when a value is not a string (null, a
    number, ...) or not valid UTF-8: the typed decode then says which row and why."""
    n = len(values)
    lengths = _lengths(values)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    data = b"".join(values)
    if n and not (np.frombuffer(data, np.uint8)[offsets[:-1]] == ord('"')).all():
        return None
    quoted = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )
    try:
        arr = pc.binary_slice(quoted, 1, -1).cast(pa.large_string()).cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # bad UTF-8, or > 2 GiB
        return None
    if b"\\" in data:
        escaped = pc.match_substring(quoted, "\\")
        rows = pc.indices_nonzero(escaped).to_numpy()
        try:
            decoded = [_DEC_STR.decode(values[i]) for i in rows.tolist()]
        except (msgspec.ValidationError, msgspec.DecodeError):
            return None
        arr = pc.replace_with_mask(arr, escaped, pa.array(decoded, pa.string()))
    return arr


_DEC_STR = msgspec.json.Decoder(str)


# --------------------------------------------------------------------------------------------------
# A batch


# One column of decoded rows. Comprehensions with the attribute written out are specialised by
# CPython 3.11+ and take half the time of ``list(map(operator.attrgetter(name), rows))``, which
# adds up over 14 fields of every row.
_GET: dict[str, Callable[[Sequence[Any]], list[Any]]] = {
    "id": lambda rows: [r.id for r in rows],
    "collection": lambda rows: [r.collection for r in rows],
    "text": lambda rows: [r.text for r in rows],
    "importance": lambda rows: [r.importance for r in rows],
    "category": lambda rows: [r.category for r in rows],
    "metadata": lambda rows: [r.metadata for r in rows],
    "source": lambda rows: [r.source for r in rows],
    "container_tag": lambda rows: [r.container_tag for r in rows],
    "pinned": lambda rows: [r.pinned for r in rows],
    "archived": lambda rows: [r.archived for r in rows],
    "created_at": lambda rows: [r.created_at for r in rows],
    "updated_at": lambda rows: [r.updated_at for r in rows],
    "expires_at": lambda rows: [r.expires_at for r in rows],
    "superseded_by": lambda rows: [r.superseded_by for r in rows],
}
assert set(_GET) == set(MEMORY_FIELDS), "_GET must list every memory field"


def _unset_to_none(col: list[Any], name: str, absent: dict[int, list[str]]) -> list[Any]:
    """Replace UNSET (absent from the row) with None, noting the row's absent field."""
    out = []
    for i, v in enumerate(col):
        if v is UNSET:
            absent.setdefault(i, []).append(name)
            out.append(None)
        else:
            out.append(v)
    return out


class Normalizer:
    """Turns batches of raw memories into Arrow, remembering ids across batches (first id wins)."""

    def __init__(self) -> None:
        self.ids = IdIndex()  # ids of the good rows so far (16 bytes each)
        self.good = 0
        self.rejected = 0

    def seen(self, ids: Sequence[str]) -> np.ndarray:
        """Boolean mask: which of ``ids`` earlier batches already kept."""
        return self.ids.check(*fingerprints(ids))

    def chunk(self, chunk: Any) -> tuple[pa.RecordBatch, pa.Table]:
        """Like ``batch`` for a ``dumps.read.Chunk``: one typed decode of its body when it has one."""
        rows, ids, bad = local_chunk(chunk)
        return self.finish(rows, ids, bad, chunk.start, chunk.raws)

    def batch(self, raws: Sequence[Raw | bytes], start: int = 0) -> tuple[pa.RecordBatch, pa.Table]:
        """``(good rows, rejected rows)`` for ``raws`` whose first row has index ``start``."""
        rows, ids, bad = _build(*_decode_rows(raws))
        return self.finish(rows, ids, bad, start, lambda: raws)

    def finish(
        self,
        rows: pa.RecordBatch,
        ids: list[str],
        bad: dict[int, BadRow],
        start: int,
        get_raws: Callable[[], Sequence[Raw | bytes]],
    ) -> tuple[pa.RecordBatch, pa.Table]:
        """``(good, rejected)`` from ``local_chunk``'s output: the id checks (the only step that
        needs earlier batches), then the rejected rows split off."""
        n = len(ids)
        # ids last, so that a row rejected for any other reason never reserves its id
        if bad or "" in ids:
            for i, ident in enumerate(ids):
                if not ident and i not in bad:
                    bad[i] = BadRow("id", "id is an empty string, expected a non-empty string")
            rows_left = [i for i in range(n) if i not in bad]
            repeat = self.ids.repeats([ids[i] for i in rows_left])
            repeated = [rows_left[j] for j in np.flatnonzero(repeat).tolist()]
        else:
            repeated = np.flatnonzero(self.ids.repeats(ids)).tolist()
        for i in repeated:
            bad[i] = BadRow("id", f"duplicate id {ids[i][:80]!r} (the first one is kept)")

        good = rows
        rejected = _rejected_table(get_raws() if bad else (), ids, bad, start)
        if bad:
            keep = np.ones(n, dtype=bool)
            keep[list(bad)] = False
            good = good.filter(keep)
        self.good += good.num_rows
        self.rejected += rejected.num_rows
        return good, rejected


def local_chunk(chunk: Any) -> tuple[pa.RecordBatch, list[str], dict[int, BadRow]]:
    """Everything ``Normalizer.chunk`` does that needs no other chunk: ``(all rows as Arrow, their
    ids, row problems so far)``; ``Normalizer.finish`` completes it (ids across chunks)."""
    if chunk.body is not None:
        try:
            fast = _DEC_FAST.decode(chunk.body)
        except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
            fast = None
        if fast is not None and chunk.count in (None, len(fast)):
            text = _raw_text(_GET["text"](fast))
            if text is not None:
                return _build(fast, None, {}, text)  # type: ignore[arg-type]
        del fast
        try:
            mems = _DEC_LIST.decode(chunk.body)
        except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
            mems = None
        if mems is not None and chunk.count in (None, len(mems)):
            return _build(mems, None, {})
    chunk.check()
    return _build(*_decode_rows(chunk.raws()))


def _decode_rows(
    raws: Sequence[Raw | bytes],
) -> tuple[list[_Mem | None], list[str | None] | None, dict[int, BadRow]]:
    """One typed decode of the batch; when it does not fit, row by row (slow path for misfits)."""
    n = len(raws)
    bad: dict[int, BadRow] = {}
    extras: list[str | None] | None = None
    mems: list[_Mem | None]
    try:
        mems = _DEC_LIST.decode(b"[" + b",".join(raws) + b"]")  # type: ignore[assignment]
        if len(mems) != n:
            raise ValueError("row count")
    except (msgspec.ValidationError, msgspec.DecodeError, ValueError, RecursionError):
        mems, extras = [], [None] * n
        for i, raw in enumerate(raws):
            try:
                mems.append(_DEC_ONE.decode(raw))
            except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
                try:
                    mem, extras[i] = _slow_row(raw)
                    mems.append(mem)
                except BadRow as exc:
                    bad[i] = exc
                    mems.append(None)
                except msgspec.DecodeError as exc:
                    bad[i] = BadRow(None, f"not valid JSON: {exc}")
                    mems.append(None)
                except RecursionError:  # hundreds of levels: msgspec gives up before we look
                    bad[i] = BadRow(None, f"row {jsonio.TOO_DEEP}")
                    mems.append(None)
    return mems, extras, bad


def _build(
    mems: list[_Mem | None],
    extras: list[str | None] | None,
    bad: dict[int, BadRow],
    text: pa.Array | None = None,
) -> tuple[pa.RecordBatch, list[str], dict[int, BadRow]]:
    """Columns of decoded rows (rejected ones as placeholders); ``text`` is the column already
    built (``_raw_text``) when the rows are ``_FastMem``."""
    n = len(mems)
    if bad:  # placeholders keep positions; their columns are dropped below
        placeholder = _Mem(id="", text="")
        mems = [placeholder if m is None else m for m in mems]
    ids = _GET["id"](mems)
    fid_raw: dict[int, dict[str, bytes]] = {}
    absent: dict[int, list[str]] = {}
    columns: dict[str, Any] = {
        "id": pa.array(ids, pa.string()),
        "text": text if text is not None else pa.array(_GET["text"](mems), pa.string()),
    }
    for name in _TYPED_STR_FIELDS + _BOOL_FIELDS:
        col = _GET[name](mems)
        try:  # fast: no UNSET (Arrow refuses the sentinel, so this also detects absence)
            columns[name] = pa.array(col, MEMORY_FIELDS[name])
            continue
        except (pa.ArrowTypeError, pa.ArrowInvalid):
            pass
        columns[name] = pa.array(_unset_to_none(col, name, absent), MEMORY_FIELDS[name])
    for name in TIMESTAMP_FIELDS:
        col = _GET[name](mems)
        try:
            arr = pa.array(col, pa.string())
        except (pa.ArrowTypeError, pa.ArrowInvalid):
            col = _unset_to_none(col, name, absent)
            arr = pa.array(col, pa.string())
        columns[name] = _timestamps(arr, col, bad, fid_raw, name)
    imp = _GET["importance"](mems)
    meta = _GET["metadata"](mems)
    imp_len = _lengths(imp)
    meta_len = _lengths(meta)
    for name, lengths in (("importance", imp_len), ("metadata", meta_len)):
        if not lengths.all():
            for i in np.flatnonzero(lengths == 0).tolist():
                absent.setdefault(i, []).append(name)
    _refuse_deep(meta, meta_len, extras, bad)
    columns["importance"] = _importance(imp, imp_len, bad, fid_raw)
    columns["metadata"] = _raw_strings(meta, meta_len)
    columns["extra"] = extras if extras is not None else pa.nulls(n, pa.string())

    fidelity: list[str | None] | pa.Array
    if absent or fid_raw:
        order = {name: k for k, name in enumerate(MEMORY_FIELDS)}
        fidelity = [None] * n
        for i in set(absent) | set(fid_raw):
            names = sorted(absent.get(i, ()), key=order.__getitem__)
            raw = {k: Raw(v) for k, v in fid_raw.get(i, {}).items()}
            fidelity[i] = jsonio.dumps_str({"absent": names, "raw": raw})
    else:
        fidelity = pa.nulls(n, pa.string())
    columns["fidelity"] = fidelity

    arrays = []
    for f in MEMORIES_SCHEMA:
        col = columns[f.name]
        arrays.append(col if isinstance(col, pa.Array) else pa.array(col, f.type))
    return pa.RecordBatch.from_arrays(arrays, schema=MEMORIES_SCHEMA), ids, bad


def _too_deep_stand_in(mem: Any) -> bytes:
    """The row that stands for a memory too deep to encode (rejected as such, with its id)."""
    ident = mem.get("id") if isinstance(mem, dict) else None
    deep = Raw(b"[" * (jsonio.MAX_DEPTH + 1) + b"]" * (jsonio.MAX_DEPTH + 1))
    return jsonio.dumps(
        {"id": ident if isinstance(ident, str) else "", "text": "", "metadata": deep}
    )


def _refuse_deep(
    meta: Sequence[Raw | bytes],
    meta_len: np.ndarray,
    extras: list[str | None] | None,
    bad: dict[int, BadRow],
) -> None:
    """Reject rows whose metadata or unknown fields nest deeper than ``jsonio.MAX_DEPTH``: every
    later reader decodes them recursively. Only values long enough to be that deep are scanned."""
    for i in np.flatnonzero(meta_len > 2 * jsonio.MAX_DEPTH).tolist():
        if i not in bad and jsonio.too_deep(meta[i]):
            bad[i] = BadRow("metadata", f"metadata {jsonio.TOO_DEEP}")
    for i, extra in enumerate(extras or ()):
        # an unknown field's value sits one level inside the extra object
        if (
            extra is not None
            and i not in bad
            and jsonio.too_deep(extra.encode(), jsonio.MAX_DEPTH + 1)
        ):
            bad[i] = BadRow(None, f"an unknown field's value {jsonio.TOO_DEEP}")


def _rejected_table(
    raws: Sequence[Raw | bytes], ids: list[str], bad: dict[int, BadRow], start: int
) -> pa.Table:
    if not bad:
        # (not REJECTED_SCHEMA.empty_table(): that imports pandas, ~0.5 s, in a process that
        # otherwise never needs it)
        return pa.Table.from_batches([], REJECTED_SCHEMA)
    rows = sorted(bad)
    return pa.Table.from_pydict(
        {
            "row_index": [start + i for i in rows],
            "stage": [STAGE] * len(rows),
            "reason": [bad[i].reason for i in rows],
            "field": [bad[i].field for i in rows],
            "id": [_rejected_id(raws[i], ids[i]) for i in rows],
            "raw": [bytes(raws[i]).decode("utf-8", "replace") for i in rows],
        },
        schema=REJECTED_SCHEMA,
    )


def _rejected_id(raw: Raw | bytes, ident: str) -> str | None:
    if ident:
        return ident
    try:
        obj = _DEC_OBJ.decode(raw)
        v = _DEC_ANY.decode(obj["id"]) if "id" in obj else None
    except RecursionError:  # a too-deep row: find its id without recursion
        try:
            v = _DEC_ANY.decode(jsonio.object_members(raw)["id"])
        except (KeyError, ValueError, msgspec.DecodeError, RecursionError):
            return None
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    if isinstance(v, str):
        return v or None
    return jsonio.dumps_str(v) if v is not None else None


def normalize_memories(
    memories: Iterable[Any], *, batch_size: int = 50_000
) -> tuple[pa.Table, pa.Table]:
    """In-memory dump memories (dicts, as ``export_account`` returns) -> ``(good, rejected)`` tables."""
    norm = Normalizer()
    goods: list[pa.RecordBatch] = []
    rejects: list[pa.Table] = []
    batch: list[bytes] = []
    start = 0
    for mem in memories:
        try:
            batch.append(jsonio.dumps(mem))
        except RecursionError:  # too deep even to encode: keep its id, mark its depth
            batch.append(_too_deep_stand_in(mem))
        if len(batch) >= batch_size:
            g, r = norm.batch(batch, start)
            goods.append(g)
            rejects.append(r)
            start += len(batch)
            batch = []
    if batch or not goods:
        g, r = norm.batch(batch, start)
        goods.append(g)
        rejects.append(r)
    return (
        pa.Table.from_batches(goods, schema=MEMORIES_SCHEMA),
        pa.concat_tables(rejects).cast(REJECTED_SCHEMA),
    )
