"""`migrate --dry-run`'s look-ahead: which planned items the target would refuse, before any call.

Only limits the target is *known* to enforce are checked (`api.endpoints.known_limits`: a
``local:`` store's text length, metadata and request bytes). Each planned payload is checked exactly
as it would be sent, provenance marker included, so an item named here is one the real run would
dead-letter; fix it declaratively (e.g. a ``fit_text`` step in ``--spec``) or raise the limit.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from longmem_etl.api.limits import StoreLimits
from longmem_etl.migrate.known_limits import KnownRefusals
from longmem_etl.migrate.plan import PlannedItem


@dataclass
class RefusalScan:
    """Pass planned items through `watch`; afterwards `refused` lists ``{id, collection, reason}``."""

    limits: StoreLimits | None
    refused: list[dict[str, Any]] = field(default_factory=list)

    def watch(self, items: Iterable[PlannedItem]) -> Iterator[PlannedItem]:
        # the uploader's own check (`known_limits.KnownRefusals`): the same items, and a payload
        # shorter than every limit is neither decoded nor sized (a 200k dry run spent most of
        # its time sizing every item twice)
        refuses = KnownRefusals.of(self.limits)
        for item in items:
            if refuses is not None and not refuses.fits(len(item.payload)):
                why = refuses(json.loads(item.payload))
                if why:
                    self.refused.append(
                        {"id": item.source_id, "collection": item.collection, "reason": why}
                    )
            yield item

    def as_dict(self) -> dict[str, Any]:
        return {
            "limits": None if self.limits is None else self.limits.as_dict(),
            "count": len(self.refused),
            "items": self.refused,
        }

    def render(self, *, show: int = 20) -> str:
        """Human lines: the count, then the first ``show`` items with their reasons."""
        if self.limits is None:
            return "target limits: none known (https endpoint); nothing checked before the run"
        if not self.refused:
            return "target limits: every planned item fits"
        lines = [
            f"{len(self.refused)} item(s) the target would refuse (they would be dead-lettered):"
        ]
        lines += [f"  {r['id']} ({r['collection']}): {r['reason']}" for r in self.refused[:show]]
        if len(self.refused) > show:
            lines.append(f"  ... and {len(self.refused) - show} more (--json lists them all)")
        return "\n".join(lines)
