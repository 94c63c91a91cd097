"""How a migrated memory is recognised in the target: a provenance marker, or a content fingerprint.

Exactly-once needs a way to ask the target "is this source memory already here?" without trusting
ids (the target mints new ones) and without trusting any one journal. Every item we send carries,
in its metadata,

    metadata["_longmem_etl"] = {"source": <source key>, "source_id": <source memory id>,
                                "content": <payload fingerprint>}

(``PROVENANCE_KEY``). The source key names the *source*, not a run: a fingerprint of the source
account, or the dump's tenant (see `migrate.source.source_key`), so it stays the same when the spec,
the dump file, the journal or the working directory change. ``content`` is `payload_fingerprint` of
the item as sent (without the marker): a later run whose spec makes a different payload can tell
"landed, but differs" from "landed as planned". Markers written by older versions
(``{"source_id", "migration"}``) read as belonging to another source. With ``--no-provenance`` nothing is added and a memory is recognised by its
content fingerprint instead: sha256 over collection, container_tag and whitespace-normalised text.
Fingerprints cannot tell two identical source memories apart, so reconciliation and verification
count them as a multiset.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from typing import Any

PROVENANCE_KEY = "_longmem_etl"
"""The metadata key holding ``{"source_id", "migration"}`` on every item a migration sends."""

ORIGINAL_METADATA_KEY = "_original_metadata"
"""Where a non-object source ``metadata`` value is kept when the marker has to be added."""


def normalise_text(text: Any) -> str:
    """Unicode NFC, whitespace runs collapsed, ends stripped: what a server may legitimately change."""
    if text is None:
        return ""
    text = str(text)
    if not text.isascii():  # NFC leaves ASCII as it is: skip the call for most texts
        text = unicodedata.normalize("NFC", text)
    return " ".join(text.split())


def fingerprint(collection: Any, container_tag: Any, text: Any) -> str:
    """Content identity of a memory within its collection and container tag (hex sha256 of the
    three parts, each followed by ``\\x1f``)."""
    blob = f"{collection or 'default'}\x1f{container_tag or ''}\x1f{normalise_text(text)}\x1f"
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def parse_metadata(value: Any) -> Any:
    """Metadata as a Python value: backends and snapshots may hand it over as JSON text."""
    if isinstance(value, str | bytes):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


_CANONICAL = json.JSONEncoder(
    sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str
)
"""The canonical encoding of `payload_fingerprint` (one encoder, reused)."""


def payload_fingerprint(item: dict[str, Any]) -> str:
    """sha256 (32 hex) of an item's canonical JSON, marker excluded: what "the same payload" means."""
    meta = item.get("metadata")
    if isinstance(meta, dict) and PROVENANCE_KEY in meta:
        meta = {k: v for k, v in meta.items() if k != PROVENANCE_KEY}
        item = {**item, "metadata": meta}
    text = _CANONICAL.encode(item)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def with_marker(
    metadata: Any, source_id: str, source_key: str, content: str | None = None
) -> dict[str, Any]:
    """A copy of ``metadata`` carrying the provenance marker (never mutates the source's dict).

    ``metadata`` is the dump's value as is (a string stays a string, even one that looks like JSON)."""
    meta = metadata
    if meta is None:
        out: dict[str, Any] = {}
    elif isinstance(meta, dict):
        out = dict(meta)
    else:  # a list/string/number: keep it whole next to the marker
        out = {ORIGINAL_METADATA_KEY: meta}
    mark = {"source": source_key, "source_id": source_id}
    if content is not None:
        mark["content"] = content
    out[PROVENANCE_KEY] = mark
    return out


def marker_of(metadata: Any) -> tuple[str | None, str | None]:
    """``(source_id, source_key)`` from a target memory's metadata, or ``(None, None)``.

    An older marker's ``migration`` stands in for the key (it never equals a source key)."""
    sid, key, _content = full_marker_of(metadata)
    return sid, key


def full_marker_of(metadata: Any) -> tuple[str | None, str | None, str | None]:
    """``(source_id, source_key, content)`` from a target memory's metadata (Nones when absent)."""
    meta = parse_metadata(metadata)
    if isinstance(meta, dict):
        mark = meta.get(PROVENANCE_KEY)
        if isinstance(mark, dict):
            sid = mark.get("source_id")
            key = mark.get("source", mark.get("migration"))
            content = mark.get("content")
            return (
                None if sid is None else str(sid),
                None if key is None else str(key),
                None if content is None else str(content),
            )
    return (None, None, None)
