"""What the target is known to refuse, as a cheap per-item check for the uploader's pre-split.

A chunk holding one item the target refuses costs a chain of bisection calls (log2(100) round
trips) unless the item is taken out before the first call. Only limits the target is *known* to
enforce are used: a ``local:`` store's (its URI options when the endpoints module knows them, else
the store's built-in text limit); an https endpoint documents none beyond the batch size, so
nothing is pre-split there and bisection still finds refused items.
"""

from __future__ import annotations

from typing import Any

from longmem_etl.migrate.uploader import Refuses


def refusal_check(target_uri: str) -> Refuses | None:
    """``refuses(item, payload_chars)`` for the target's known limits, or None when none are known.

    Fast path: an item whose JSON payload is shorter than every limit (in characters; a character
    is at most 4 UTF-8 bytes) cannot break any of them, so most items cost one comparison."""
    limits = _limits_of(target_uri)
    if limits is None:
        return None
    text_max = getattr(limits, "max_text_chars", 0) or 0
    bytes_max = [
        b
        for b in (
            getattr(limits, "max_metadata_bytes", 0) or 0,
            getattr(limits, "max_request_bytes", 0) or 0,
        )
        if b
    ]
    floors = [text_max] if text_max else []
    floors += [b // 4 for b in bytes_max]
    if not floors:
        return None
    floor = min(floors)
    full = getattr(limits, "refusal", None)

    def refuses(item: dict[str, Any], payload_chars: int | None = None) -> str | None:
        if payload_chars is not None and payload_chars <= floor:
            return None
        if full is not None:
            return full(item)
        text = item.get("text")
        if text_max and isinstance(text, str) and len(text) > text_max:
            return f"text of {len(text)} characters is longer than {text_max}"
        return None

    return refuses


def _limits_of(target_uri: str) -> Any:
    try:  # the endpoints module knows a local: URI's own limit options
        from longmem_etl.api.endpoints import known_limits  # type: ignore[attr-defined]
    except ImportError:
        known_limits = None
    if known_limits is not None:
        return known_limits(target_uri)
    if not target_uri.startswith("local:"):
        return None
    from longmem_etl.api.local import MAX_TEXT_CHARS

    class _Builtin:
        max_text_chars = MAX_TEXT_CHARS

    return _Builtin()
