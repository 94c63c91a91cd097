"""The one list of dump file names: suffix -> (kind, compression).

Every place that recognises a dump by its name (the readers, the writer, the endpoint/source
dispatch of ``migrate`` / ``verify``, convert's default tenant name) asks this table, so a name one
of them accepts is never refused by the next (``x.ndjson.gz`` used to pass the source check and then
fail the reader). A leaf module: no imports beyond the standard library.
"""

from __future__ import annotations

import os
from pathlib import Path

DUMP_FORMATS: dict[str, tuple[str, str | None]] = {
    ".json": ("json", None),
    ".json.gz": ("json", "gzip"),
    ".json.zst": ("json", "zstd"),
    ".jsonl": ("jsonl", None),
    ".jsonl.gz": ("jsonl", "gzip"),
    ".jsonl.zst": ("jsonl", "zstd"),
    ".ndjson": ("jsonl", None),
    ".ndjson.gz": ("jsonl", "gzip"),
    ".ndjson.zst": ("jsonl", "zstd"),
}
"""``kind`` is ``json`` (one object) or ``jsonl`` (a header line, then one memory per line)."""

DUMP_SUFFIXES = tuple(sorted(DUMP_FORMATS, key=len, reverse=True))
"""The suffixes, longest first (so ``.json.gz`` is tried before ``.json``)."""

DUMP_SUFFIXES_TEXT = ", ".join(DUMP_FORMATS)
"""For error messages: every accepted suffix, in the table's order."""


def dump_suffix(path: str | os.PathLike) -> str | None:
    """The dump suffix ``path``'s name ends with (case-insensitive), or None."""
    name = Path(path).name.lower()
    return next((s for s in DUMP_SUFFIXES if name.endswith(s)), None)


def dump_stem(path: str | os.PathLike) -> str:
    """The file name without its dump suffix (``acme.jsonl.gz`` -> ``acme``)."""
    name = Path(path).name
    suffix = dump_suffix(name)
    return name[: -len(suffix)] if suffix else name
