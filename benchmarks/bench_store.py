"""The embedded store's own work per call (not a test; prints ratios in one invocation).

    .venv/bin/python benchmarks/bench_store.py [--calls 60] [--rows 20000 200000] [--repeat 3]

A ``local:`` target sleeps its ``latency_ms`` and then does its work in the caller's process,
under its GIL, so every call of a migration pays it on top of the latency. Measured here without
latency, on held-out-like items (the end-to-end benchmark's dump, planned and decoded as the
uploader sends them):

- ``add_many`` of 100 items: CPU ms per call (``time.thread_time``: validation, sizing, encoding
  and SQLite's own work incl. the FTS5 insert; the fsync's wait is not CPU), median over
  ``--calls`` calls, against (a) the previous implementation, kept below (stdlib JSON sizing of
  the request and of each metadata, ``uuid4`` per id, a memory dict per item), and (b) the floor:
  the same pre-encoded rows inserted into an identical store with no validation at all;
- ``export_page`` of a whole 20k / 200k-row store in one page: rows/s, best of ``--repeat``,
  against the previous page reader (kept below: ``str`` per value, Python dirty-row scan).

Every baseline runs in the same invocation on the same data; the load average is printed beside.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pyarrow as pa  # noqa: E402
from bench_migrate_e2e import make_dump  # noqa: E402

from longmem_etl import jsonio  # noqa: E402
from longmem_etl.api import local as local_mod  # noqa: E402
from longmem_etl.api import localpages, localrows  # noqa: E402
from longmem_etl.api.limits import stdlib_json_bytes  # noqa: E402
from longmem_etl.api.local import LocalStore  # noqa: E402
from longmem_etl.api.localcheck import unprocessable  # noqa: E402
from longmem_etl.api.pages import EXPORT_PAGE, FIELDS  # noqa: E402
from longmem_etl.arrays import strings  # noqa: E402


def held_out_items(n: int, tmp: Path) -> list[dict[str, Any]]:
    """``n`` items as the uploader sends them: the e2e dump, planned with provenance, decoded."""
    from longmem_etl.migrate.plan import build_planned
    from longmem_etl.migrate.uploader import _decode_payload

    dump = tmp / "items.json"
    make_dump(dump, n, refused=0)
    mems = jsonio.loads(dump.read_bytes())["memories"]
    return [
        _decode_payload(build_planned(m, m["id"], mode="add", source_key="bench").payload)
        for m in mems
    ]


# -- the previous add_many, kept as the baseline ----------------------------------------------------

_FIELDS = {"text", "container_tag", "importance", "category", "metadata", "source"}


def previous_add_many(store: LocalStore, items: list, collection: str) -> dict[str, Any]:
    """What ``LocalStore.add_many`` did before its sizing/ids/rows rework (same checks)."""
    lim = store.limits
    if lim.items_problem(len(items)) or stdlib_json_bytes(items) > lim.max_request_bytes:
        raise unprocessable("request")
    now = local_mod._now()
    now_ts = localrows.to_epoch(now)
    ids, rows = [], []
    for i, item in enumerate(items):
        if isinstance(item, str):
            item = {"text": item}
        if sorted(set(item) - _FIELDS) or localrows.too_deep(item):
            raise unprocessable(f"items[{i}]")
        text, metadata = item.get("text"), item.get("metadata")
        if not isinstance(text, str) or not text.strip() or lim.text_problem(text):
            raise unprocessable(f"items[{i}]")
        if metadata is not None and stdlib_json_bytes(metadata) > lim.max_metadata_bytes:
            raise unprocessable(f"items[{i}]")
        importance = item.get("importance", 0.7)
        category, source = item.get("category", "other"), item.get("source", "sdk")
        tag = item.get("container_tag")
        if (
            isinstance(importance, bool)
            or not isinstance(importance, (int, float))
            or not 0 <= importance <= 1
            or not isinstance(category, str)
            or (metadata is not None and not isinstance(metadata, dict))
            or not isinstance(source, str)
            or (tag is not None and not isinstance(tag, str))
        ):
            raise unprocessable(f"items[{i}]")
        metadata_text = localrows.dumps(metadata if metadata is not None else {})
        mem = {
            "id": str(uuid.uuid4()),
            "collection": collection,
            "text": text,
            "importance": importance,
            "category": category,
            "metadata": metadata if metadata is not None else {},
            "source": source,
            "container_tag": tag,
            "pinned": False,
            "archived": False,
            "created_at": now,
            "updated_at": now,
            "expires_at": None,
            "superseded_by": None,
        }
        ids.append(mem["id"])
        rows.append(localrows.new_row(mem, metadata_text, now_ts))
    with store._write() as conn:
        store._ensure_collection(conn, collection)
        store._insert(conn, rows)
    return {"created": len(rows), "ids": ids}


def floor_add_many(store: LocalStore, rows: list[tuple], collection: str) -> None:
    """The same rows, already encoded, into an identical store: SQLite's and FTS5's share."""
    with store._write() as conn:
        store._ensure_collection(conn, collection)
        store._insert(conn, rows)


# -- the previous export_page reader, kept as the baseline ------------------------------------------

_OLD_COLS = ("seq",) + FIELDS + ("metadata", "fidelity")


def previous_read_page(conn: Any, after: int, limit: int) -> pa.Table:
    cur = conn.cursor()
    cur.row_factory = None
    cur.execute(
        f"SELECT {', '.join(_OLD_COLS)} FROM memories WHERE seq > ? ORDER BY seq LIMIT ?",
        (after, limit),
    )
    parts = []
    while rows := cur.fetchmany(5_000):
        cols = list(zip(*rows, strict=True))
        raw: list[str | None] = [None] * len(rows)
        dirty = [i for i, fid in enumerate(cols[-1]) if fid and '"raw"' in fid]
        assert not dirty  # the benchmark's store holds no dirty rows
        arrays = [strings(c) for c in cols[1:-1]] + [strings(raw)]
        parts.append(pa.Table.from_arrays(arrays, schema=EXPORT_PAGE))
    return pa.concat_tables(parts)


# -- measurements ---------------------------------------------------------------------------------


def bench_add_many(items: list, calls: int, tmp: Path) -> dict[str, float]:
    """Median CPU ms per call of each way, interleaved call by call (drift hits all alike)."""
    stores = {k: LocalStore(tmp / f"add-{k}.db") for k in ("now", "previous", "floor")}
    batches = [items[(i * 100) % len(items) :][:100] for i in range(calls)]
    batches = [b for b in batches if len(b) == 100]
    encoded = [
        [
            localrows.new_row(
                {
                    **{"collection": "c", "importance": 0.7, "category": "other"},
                    **{"source": "sdk", "container_tag": None},
                    **it,
                    "id": str(uuid.uuid4()),
                    "pinned": False,
                    "archived": False,
                    "created_at": "2025-01-01T00:00:00Z",
                    "updated_at": "2025-01-01T00:00:00Z",
                    "expires_at": None,
                    "superseded_by": None,
                },
                localrows.dumps(it.get("metadata") or {}),
                1.0,
            )
            for it in b
        ]
        for b in batches
    ]
    cpu: dict[str, list[float]] = {k: [] for k in stores}
    ways = {
        "now": lambda s, i: s.add_many(batches[i], collection="c"),
        "previous": lambda s, i: previous_add_many(s, batches[i], "c"),
        "floor": lambda s, i: floor_add_many(s, encoded[i], "c"),
    }
    for i in range(len(batches)):
        for k, fn in ways.items():
            t = time.thread_time()
            fn(stores[k], i)
            cpu[k].append(time.thread_time() - t)
    counts = {k: s.count() for k, s in stores.items()}
    assert len(set(counts.values())) == 1, counts
    for s in stores.values():
        s.close()
    return {k: statistics.median(v) * 1e3 for k, v in cpu.items()}


def grow_store(path: Path, items: list, rows: int) -> LocalStore:
    """A store of ``rows`` memories: held-out items through add_many, then copied in SQL."""
    store = LocalStore(path)
    for i in range(0, len(items), 100):
        store.add_many(items[i : i + 100], collection="c")
    conn = store._conn()
    conn.execute("DROP TRIGGER memories_ai")  # FTS is not what export_page reads
    cols = ", ".join(c for c in localrows.COLUMNS)
    while (have := store.count()) < rows:
        conn.execute(
            f"INSERT INTO memories({cols}) SELECT {cols} FROM memories ORDER BY seq LIMIT ?",
            (min(have, rows - have),),
        )
    return store


def bench_export(store: LocalStore, rows: int, repeat: int) -> dict[str, float]:
    """Best rows/s of one whole-store page, new vs previous reader, interleaved."""
    best = {"now": float("inf"), "previous": float("inf")}
    for _ in range(repeat):
        with store._read() as conn:
            t = time.perf_counter()
            page = localpages.read_page(conn, None, rows + 1)["memories"]
            best["now"] = min(best["now"], time.perf_counter() - t)
            t = time.perf_counter()
            old = previous_read_page(conn, 0, rows + 1)
            best["previous"] = min(best["previous"], time.perf_counter() - t)
        assert page.num_rows == rows and page.equals(old)  # the same page, byte for byte
        del page, old
    return {k: rows / v for k, v in best.items()}


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=60)
    ap.add_argument("--rows", type=int, nargs="+", default=[20_000, 200_000])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-store-") as d:
        tmp = Path(d)
        items = held_out_items(20_000, tmp)
        print(f"load average before: {load()}")
        cpu = bench_add_many(items, args.calls, tmp)
        print(
            f"\nadd_many of 100 held-out-like items, CPU ms per call (median of {args.calls}):\n"
            f"  now {cpu['now']:.2f}   previous {cpu['previous']:.2f}   floor "
            f"(pre-encoded rows, no checks) {cpu['floor']:.2f}\n"
            f"  now/previous {cpu['now'] / cpu['previous']:.2f}   store work beyond the floor: "
            f"now {cpu['now'] - cpu['floor']:.2f} ms, previous {cpu['previous'] - cpu['floor']:.2f}"
            f" ms ({(cpu['previous'] - cpu['floor']) / max(cpu['now'] - cpu['floor'], 1e-9):.1f}x"
            f" less)   load {load()}"
        )
        print("\nexport_page of the whole store in one page, rows/s (best of --repeat):")
        for rows in args.rows:
            store = grow_store(tmp / f"export-{rows}.db", items[: min(rows, len(items))], rows)
            rate = bench_export(store, rows, args.repeat)
            store.close()
            print(
                f"  {rows:>8,} rows: now {rate['now']:>12,.0f}   previous "
                f"{rate['previous']:>12,.0f}   now/previous {rate['now'] / rate['previous']:.2f}x"
                f"   load {load()}"
            )
        print(f"\nload average after: {load()}")


if __name__ == "__main__":
    main()
