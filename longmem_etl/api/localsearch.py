"""Keyword search over the embedded store (FTS5/BM25), standing in for the hosted API's semantic
search: ``LocalStore.search`` and ``LocalStore.forget`` both rank with it.

A hit's ``score`` is the share of the query's distinct words found in the text (0..1), words folded
as the FTS tokenizer folds them (case- and diacritic-insensitive, ``unicode61``), so ``min_score``
means the same thing in both calls.
"""

from __future__ import annotations

import re
import sqlite3
import unicodedata
from typing import Any

from longmem_etl.errors import APIError
from longmem_etl.sqlquote import sql_ident

_WORD = re.compile(r"\w+", re.UNICODE)


def words(text: str) -> list[str]:
    """Words as the FTS tokenizer sees them: case- and diacritic-insensitive (unicode61)."""
    folded = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return _WORD.findall(folded.lower())


def search_seqs(
    conn: sqlite3.Connection,
    query: str,
    *,
    collection: str | None,
    limit: int,
    min_score: float,
    category: str | None = None,
    container_tag: str | None = None,
) -> list[tuple[int, float]]:
    """(seq, score) of the best matches. Ranked by BM25; ``score`` is the share of the query's
    distinct words found in the text (0..1), which is what ``min_score`` compares against."""
    if not isinstance(query, str):
        raise APIError(422, "query must be a string")
    wanted_words = list(dict.fromkeys(words(query)))
    if not wanted_words or limit <= 0:
        return []
    match = " OR ".join(sql_ident(w) for w in wanted_words)  # FTS5 quotes terms like identifiers
    where = ["memories_fts MATCH ?", "coalesce(m.archived, 0) = 0"]
    params: list[Any] = [match]
    for col, val in (
        ("collection", collection),
        ("category", category),
        ("container_tag", container_tag),
    ):
        if val is not None:
            where.append(f"m.{col} = ?")
            params.append(val)
    cur = conn.execute(
        "SELECT m.seq, m.text FROM memories_fts JOIN memories m ON m.seq = memories_fts.rowid "
        f"WHERE {' AND '.join(where)} ORDER BY bm25(memories_fts), m.seq",
        params,
    )
    hits: list[tuple[int, float]] = []
    wanted = set(wanted_words)
    for seq, text in cur:
        found = set(words(text if isinstance(text, str) else "")) & wanted
        score = len(found) / len(wanted)
        if score >= min_score:
            hits.append((seq, round(score, 6)))
            if len(hits) >= limit:
                break
    return hits
