"""The target's known limits as one check (`known_limits.KnownRefusals`), shared by the
uploader's pre-split and ``--dry-run``'s scan: its fast path (a payload shorter than every limit
is never decoded) must never pass an item the full check refuses, and the dry run must name
exactly the items the full check names."""

from __future__ import annotations

import json
import random

import pytest

from longmem_etl.api.limits import StoreLimits
from longmem_etl.migrate.known_limits import KnownRefusals
from longmem_etl.migrate.plan import plan_items
from longmem_etl.migrate.refusals import RefusalScan

WIDE = "😀"  # 4 bytes of UTF-8, one character: the worst case of bytes per character


def _memories(seed: int, n: int) -> list[dict]:
    """Items around small limits: wide characters, many separators, nested metadata."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        text = "".join(rng.choice(["a", WIDE, " ", "é"]) for _ in range(rng.randrange(0, 40)))
        if i % 5 == 0:  # mostly 4-byte characters: bytes per character near the worst case
            text = WIDE * rng.randrange(50, 300)
        meta = rng.choice(
            [
                None,
                {},
                {"k": [rng.randrange(10) for _ in range(rng.randrange(12))]},
                {"w": WIDE * rng.randrange(12), "n": {"x": [1, 2.5, None]}},
            ]
        )
        out.append({"id": f"m{i}", "collection": "c", "text": text, "metadata": meta})
    return out


@pytest.mark.parametrize("provenance", [True, False])
def test_the_fast_path_never_passes_an_item_the_full_check_refuses(provenance: bool) -> None:
    """Random limits around these payloads' sizes (wide characters, many separators): every
    item the fast path passes unread is one the full check passes too; both paths are taken."""
    planned = list(
        plan_items(_memories(7, 600), mode="add", source_key="k" if provenance else None)
    )
    decoded = [json.loads(p.payload) for p in planned]
    chars = sorted(len(p.payload) for p in planned)
    rng = random.Random(3)
    skipped = refused = 0
    for _ in range(60):
        around = rng.choice(chars)
        limits = StoreLimits(
            max_text_chars=rng.choice([0, rng.randrange(5, 45)]),
            max_metadata_bytes=rng.choice([0, rng.randrange(around, 4 * around + 3)]),
            max_request_bytes=rng.choice([0, rng.randrange(around, 4 * around + 3)]),
        )
        refuses = KnownRefusals.of(limits)
        if refuses is None:
            continue
        for item, payload in zip(planned, decoded, strict=True):
            full = limits.refusal(payload)
            refused += bool(full)
            if refuses.fits(len(item.payload)):
                skipped += 1
                assert full is None, (limits, item.payload, full)
            assert refuses(payload, len(item.payload)) == full
    assert skipped and refused  # both paths were taken: the test could fail


def test_the_dry_run_names_exactly_what_the_full_check_names() -> None:
    limits = StoreLimits(max_text_chars=25, max_request_bytes=400, max_metadata_bytes=60)
    planned = list(plan_items(_memories(11, 2000), mode="add", source_key="k"))
    scan = RefusalScan(limits)
    assert list(scan.watch(planned)) == planned  # every item passes through, in order
    expected = [
        (item.source_id, why)
        for item in planned
        if (why := limits.refusal(json.loads(item.payload)))
    ]
    assert expected and [(r["id"], r["reason"]) for r in scan.refused] == expected
