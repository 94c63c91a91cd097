"""What the target is known to refuse, as a cheap per-item check for the uploader's pre-split.

A chunk holding one item the target refuses costs a chain of bisection calls (log2(100) round
trips) unless the item is taken out before the first call. Only limits the target is *known* to
enforce are used (`longmem_etl.api.endpoints.known_limits`): a ``local:`` store's (its URI's
``max_*`` options, else the defaults); an https endpoint documents none beyond the batch size, so
nothing is pre-split there and bisection still finds refused items.
"""

from __future__ import annotations

from typing import Any

from longmem_etl.api.endpoints import known_limits
from longmem_etl.migrate.uploader import Refuses


def refusal_check(target_uri: str) -> Refuses | None:
    """``refuses(item, payload_chars)`` for the target's known limits, or None when none are known.

    Fast path: an item whose JSON payload is shorter than every limit (in characters; a character
    is at most 4 UTF-8 bytes) cannot break any of them, so most items cost one comparison."""
    limits = known_limits(target_uri)
    if limits is None:
        return None
    text_max = limits.max_text_chars
    bytes_max = [b for b in (limits.max_metadata_bytes, limits.max_request_bytes) if b]
    floors = [text_max] if text_max else []
    floors += [b // 4 for b in bytes_max]
    if not floors:
        return None
    floor = min(floors)

    def refuses(item: dict[str, Any], payload_chars: int | None = None) -> str | None:
        if payload_chars is not None and payload_chars <= floor:
            return None
        return limits.refusal(item)

    return refuses
