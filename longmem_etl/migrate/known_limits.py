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
from longmem_etl.api.limits import StoreLimits


def refusal_check(target_uri: str) -> KnownRefusals | None:
    """`KnownRefusals` for the target's known limits, or None when none are known."""
    return KnownRefusals.of(known_limits(target_uri))


class KnownRefusals:
    """``refuses(item, payload_chars)``: why the target would refuse ``item`` (its known limits),
    or None. The uploader's pre-split and ``--dry-run``'s scan (`refusals.RefusalScan`) both use
    it, so a dry run names exactly the items the real run would dead-letter unsent.

    Fast path (`fits`): an item whose JSON payload is shorter than every limit (in characters; a
    character is at most 4 UTF-8 bytes; the payload is the compact JSON the limits measure, and
    a request of it alone adds two brackets) cannot break any of them, so most items cost one
    comparison and are never decoded."""

    def __init__(self, limits: StoreLimits, floor: int) -> None:
        self.limits, self.floor = limits, floor

    @classmethod
    def of(cls, limits: StoreLimits | None) -> KnownRefusals | None:
        if limits is None:
            return None
        floors = [limits.max_text_chars] if limits.max_text_chars else []
        if limits.max_metadata_bytes:  # the metadata is part of the payload's text
            floors.append(limits.max_metadata_bytes // 4)
        if limits.max_request_bytes:  # a request of this item alone: ``[`` payload ``]``
            floors.append(max(0, limits.max_request_bytes - 2) // 4)
        return cls(limits, min(floors)) if floors else None

    def fits(self, payload_chars: int) -> bool:
        return payload_chars <= self.floor

    def __call__(self, item: dict[str, Any], payload_chars: int | None = None) -> str | None:
        if payload_chars is not None and self.fits(payload_chars):
            return None
        return self.limits.refusal(item)
