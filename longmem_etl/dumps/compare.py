"""Are two dumps the same? The definition of "lossless" the round trip is tested against.

Same JSON values key for key at every level (numbers by value, exactly; key order ignored), with two
documented allowances: a known timestamp field may be rendered differently if it is the same instant
(``+02:00`` vs ``Z``), and ``format_version`` may be added by a written dump when the original had
none. Returns a list of human-readable differences (empty = same), so tests and ``verify`` can show
what differs.
"""

from __future__ import annotations

from typing import Any

from longmem_etl.jsonio import same_json
from longmem_etl.schema import TIMESTAMP_FIELDS


def _same_instant(a: Any, b: Any) -> bool:
    from longmem_etl.timestamps import parse_timestamp

    if not (isinstance(a, str) and isinstance(b, str)):
        return False
    try:
        return parse_timestamp(a)[0] == parse_timestamp(b)[0]
    except ValueError:
        return False


def memory_differences(a: Any, b: Any, where: str = "memory") -> list[str]:
    """Differences between two dump-form memories (timestamps compared as instants)."""
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return [] if same_json(a, b) else [f"{where}: {a!r:.80} != {b!r:.80}"]
    out = []
    for key in a.keys() - b.keys():
        out.append(f"{where}: key {key!r} missing")
    for key in b.keys() - a.keys():
        out.append(f"{where}: key {key!r} added")
    for key in a.keys() & b.keys():
        va, vb = a[key], b[key]
        if same_json(va, vb):
            continue
        if key in TIMESTAMP_FIELDS and _same_instant(va, vb):
            continue
        out.append(f"{where}: {key}: {va!r:.80} != {vb!r:.80}")
    return out


def dump_differences(original: dict[str, Any], copy: dict[str, Any], limit: int = 20) -> list[str]:
    """Differences between two whole dumps (see module docstring); at most ``limit`` listed."""
    out: list[str] = []
    skip = {"memories", "collections"}
    if "format_version" not in original:
        skip.add("format_version")
    ka = {k for k in original if k not in skip}
    kb = {k for k in copy if k not in skip}
    for key in sorted(ka - kb):
        out.append(f"top level: key {key!r} missing")
    for key in sorted(kb - ka):
        out.append(f"top level: key {key!r} added")
    for key in sorted(ka & kb):
        if not same_json(original[key], copy[key]):
            out.append(f"top level: {key}: {original[key]!r:.80} != {copy[key]!r:.80}")
    if ("collections" in original) != ("collections" in copy):
        out.append("top level: 'collections' presence differs")
    elif not same_json(original.get("collections"), copy.get("collections")):
        out.append("collections differ")
    ma, mb = original.get("memories", []), copy.get("memories", [])
    if len(ma) != len(mb):
        out.append(f"memories: {len(ma)} != {len(mb)}")
    for i, (x, y) in enumerate(zip(ma, mb, strict=False)):
        out.extend(memory_differences(x, y, f"memory {i}"))
        if len(out) >= limit:
            break
    return out[:limit]
