"""The embedded store beyond the shared contract: seeding fidelity, persistence, concurrency,
SQLite-level failures (locked, not a database, foreign database)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from longmem_etl.api.endpoints import open_endpoint
from longmem_etl.api.local import LocalStore
from longmem_etl.errors import APIError, BadInput, Unsupported

DIRTY_DUMP = {
    "format_version": 1,
    "tenant": "acme",
    "exported_at": "2025-01-02T03:04:05Z",
    "unknown_top": {"nested": [1, 2.5, None, True]},
    "collections": ["notes", {"name": "crm", "description": "from the CRM", "n": 3}],
    "memories": [
        {
            "id": "m1",
            "collection": "notes",
            "text": "Alex prefers dark mode",
            "importance": 0.9,
            "category": "preference",
            "metadata": {"src": "chat", "deep": {"k": [1, {"z": None}]}},
            "source": "sdk",
            "container_tag": "user-1",
            "pinned": True,
            "archived": False,
            "created_at": "2024-01-01T00:00:00Z",
            "updated_at": "2024-01-02T00:00:00.123456Z",
            "expires_at": None,
            "superseded_by": None,
            "embedding_model": "x-1",
        },
        # key order not canonical, odd types, missing known fields, huge int, unknown fields
        {"text": "t2", "id": "m2", "pinned": "yes", "importance": 1, "zzz": {"a": 1}},
        {"id": "m3", "collection": "crm", "text": 42, "importance": 2**70, "metadata": None},
        {
            "id": "m4",
            "collection": "crm",
            "text": "Bianca is on the design team",
            "archived": True,
            "created_at": 1700000000,
            "metadata": "not-an-object",
        },
        {"id": "m1", "collection": "notes", "text": "duplicate id, kept as is"},
    ],
}


@pytest.fixture
def store(tmp_path):
    s = LocalStore(tmp_path / "t.db")
    yield s
    s.close()


def test_seed_then_export_gives_the_same_dump_key_for_key(store):
    store.seed_dump(DIRTY_DUMP)
    out = store.export_account()
    assert out == DIRTY_DUMP
    assert json.dumps(out) == json.dumps(DIRTY_DUMP)  # same key order, same JSON text
    assert store.tenant == "acme"


def test_seed_survives_reopen_from_another_process(tmp_path):
    path = tmp_path / "t.db"
    with LocalStore(path) as s:
        s.seed_dump(DIRTY_DUMP)
    code = (
        "import json,sys; from longmem_etl.api.local import LocalStore; "
        f"print(json.dumps(LocalStore({str(path)!r}).export_account()))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == DIRTY_DUMP


def test_seed_refuses_a_store_with_data_unless_replace(store):
    store.add("x")
    with pytest.raises(BadInput, match="already holds data"):
        store.seed_dump(DIRTY_DUMP)
    store.seed_dump(DIRTY_DUMP, replace=True)
    assert store.export_account() == DIRTY_DUMP
    assert store.search("dark mode", collection="notes")[0]["id"] == "m1"


def test_seed_rejects_non_object_memories(store):
    with pytest.raises(BadInput, match=r"memories\[1\]"):
        store.seed_dump({"memories": [{"id": "a", "text": "x"}, "nope"]})
    assert store.export_account()["memories"] == []


def test_writes_on_seeded_rows_keep_unknown_fields(store):
    store.seed_dump(DIRTY_DUMP)
    with pytest.raises(APIError) as ei:  # m2 has no collection: not addressable by the API
        store.update("m2", collection="default", text="t2 new")
    assert ei.value.status == 404
    m = store.pin("m1", collection="notes", pinned=False)
    assert m["embedding_model"] == "x-1" and m["pinned"] is False
    assert m["updated_at"] != DIRTY_DUMP["memories"][0]["updated_at"]
    store.move("m4", collection="crm", to_collection="notes")
    moved = store.get("m4", collection="notes")
    assert moved["metadata"] == "not-an-object" and moved["created_at"] == 1700000000


def test_fresh_store_export_shape(tmp_path):
    s = LocalStore(tmp_path / "acme-prod.db")
    s.add("one", collection="a")
    out = s.export_account()
    assert list(out) == ["tenant", "exported_at", "collections", "memories"]
    assert out["tenant"] == "acme-prod"
    assert out["collections"] == [{"name": "a"}]


def test_unsupported_methods_say_so(store):
    for name in (
        "remember",
        "summary",
        "profile",
        "related",
        "dedup",
        "contradictions",
        "create_connection",
        "admin_memory_health",
    ):
        with pytest.raises(Unsupported, match="embedded local store"):
            getattr(store, name)("x")


def test_eight_threads_add_many_no_lost_or_duplicated_rows(tmp_path):
    s = LocalStore(tmp_path / "t.db")
    ids: list[str] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker(w: int) -> None:
        try:
            for b in range(10):
                r = s.add_many([f"w{w} b{b} i{i}" for i in range(25)], collection="c")
                with lock:
                    ids.extend(r["ids"])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(ids) == len(set(ids)) == 8 * 10 * 25
    texts = [m["text"] for m in s.export_account()["memories"]]
    assert sorted(texts) == sorted(
        f"w{w} b{b} i{i}" for w in range(8) for b in range(10) for i in range(25)
    )
    assert {m["id"] for m in s.export_account()["memories"]} == set(ids)
    s.close()


def test_two_processes_share_one_store(tmp_path):
    path = tmp_path / "t.db"
    LocalStore(path).close()
    code = (
        "import sys; from longmem_etl.api.local import LocalStore; s=LocalStore(sys.argv[1]); "
        "[s.add_many([f'p{sys.argv[2]} {b} {i}' for i in range(50)]) for b in range(6)]"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), str(p)]) for p in range(3)]
    assert all(p.wait() == 0 for p in procs)
    with LocalStore(path) as s:
        assert s.count() == 3 * 6 * 50


def test_not_a_sqlite_file_is_bad_input(tmp_path):
    p = tmp_path / "x.db"
    p.write_text("hello, I am not a database" * 100)
    with pytest.raises(BadInput, match="not a SQLite database"):
        open_endpoint(f"local:{p}")


def test_foreign_sqlite_database_is_bad_input(tmp_path):
    p = tmp_path / "x.db"
    con = sqlite3.connect(p)
    con.execute("create table t(x)")
    con.commit()
    con.close()
    with pytest.raises(BadInput, match="not a longmem-etl local store"):
        open_endpoint(f"local:{p}")


def test_missing_store_with_create_false_and_directory(tmp_path):
    with pytest.raises(BadInput, match="no such local store"):
        open_endpoint(f"local:{tmp_path}/nope.db", create=False)
    assert not (tmp_path / "nope.db").exists()
    with pytest.raises(BadInput, match="is a directory"):
        open_endpoint(f"local:{tmp_path}")


def test_missing_parent_directories_are_created(tmp_path):
    s = open_endpoint(f"local:{tmp_path}/a/b/c.db")
    s.add("x")
    assert (tmp_path / "a" / "b" / "c.db").is_file()


def test_locked_store_is_bad_input(tmp_path):
    path = tmp_path / "t.db"
    LocalStore(path).close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3,sys,time; c=sqlite3.connect(sys.argv[1], isolation_level=None); "
            "c.execute('PRAGMA locking_mode=EXCLUSIVE'); c.execute('BEGIN EXCLUSIVE'); "
            "c.execute('insert into meta values (\"lock\", \"1\")'); print('locked', flush=True); "
            "time.sleep(60)",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(BadInput, match="locked by another process"):
            LocalStore(path)
    finally:
        holder.kill()
        holder.wait()


def test_add_many_refuses_more_than_100_and_writes_nothing(store):
    with pytest.raises(APIError) as ei:
        store.add_many([f"t{i}" for i in range(101)])
    assert ei.value.status == 422 and not ei.value.retryable
    assert "at most 100" in str(ei.value)
    assert store.count() == 0


def test_search_is_case_and_diacritic_insensitive(store):
    store.add("Le Café de Flore", collection="c")
    store.add("cafe society", collection="c")
    hits = store.search("CAFE flore", collection="c")
    assert [(h["text"], h["score"]) for h in hits] == [
        ("Le Café de Flore", 1.0),
        ("cafe society", 0.5),
    ]
    assert (
        store.search("CAFE flore", collection="c", min_score=0.6)[0]["text"] == "Le Café de Flore"
    )
    assert len(store.search("CAFE flore", collection="c", min_score=0.6)) == 1


@pytest.mark.parametrize(
    "name",
    [
        "acme-small.json",
        "acme-small.json.gz",
        "acme-small.json.zst",
        "acme-small.jsonl",
        "acme-small.jsonl.gz",
        "bom.json",
    ],
)
def test_seed_from_every_dump_format(tmp_path, name):
    from longmem_etl import jsonio
    from longmem_etl.api.local_seed import seed_from_file
    from longmem_etl.dumps.compare import dump_differences

    samples = Path(__file__).resolve().parent.parent / "longmem_etl" / "sample_data"
    r = seed_from_file(f"local:{tmp_path}/s.db", str(samples / name))
    assert (r["tenant"], r["memories"]) == ("acme", 50)
    reference = jsonio.loads((samples / "acme-small.json").read_bytes())
    with LocalStore(tmp_path / "s.db") as s:
        assert dump_differences(reference, s.export_account()) == []


@pytest.mark.parametrize(
    "metadata",
    [None, {}, {"n": 1, "tags": ["a"]}, {"big": 2**70, "f": 0.1, "deep": {"a": [1, {"b": None}]}}],
)
@pytest.mark.parametrize("importance", [0, 1, 0.25])
def test_a_new_memorys_row_is_what_the_general_codec_writes(metadata, importance):
    """`add`/`add_many` build rows with `localrows.new_row` (no per-field walk); it must store
    exactly what `localrows.encode` would, column for column, or exports would change."""
    from decimal import Decimal

    from longmem_etl.api import localrows
    from longmem_etl.api.limits import StoreLimits
    from longmem_etl.api.localcheck import new_memory_row

    if isinstance(metadata, dict) and metadata:
        metadata = {**metadata, "dec": Decimal("0.10000000000000001"), "é": "日本 ✓"}
    for tag in (None, "u1"):
        mem, row = new_memory_row(
            StoreLimits(),
            "some text",
            collection="c",
            importance=importance,
            category="fact",
            metadata=metadata,
            source="sdk",
            container_tag=tag,
            where="items[0]",
            now="2025-01-02T03:04:05.123456Z",
        )
        full = localrows.encode(mem)
        assert row == tuple(full[c] for c in localrows.COLUMNS)
        assert localrows.decode(dict(zip(localrows.COLUMNS, row, strict=True))) == mem


def test_eight_writer_processes_never_see_the_store_busy(tmp_path):
    """Eight processes (each its own connections and writer lock: SQLite's busy handling is all
    that orders them) add at once; every call succeeds, nothing is lost or doubled."""
    path = tmp_path / "t.db"
    LocalStore(path).close()
    code = (
        "import sys; from longmem_etl.api.local import LocalStore; s=LocalStore(sys.argv[1]); "
        "[s.add_many([f'p{sys.argv[2]} {b} {i}' for i in range(40)], collection=f'c{b % 3}') "
        "for b in range(5)]"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(path), str(p)], stderr=subprocess.PIPE)
        for p in range(8)
    ]
    errors = [p.communicate()[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, errors
    with LocalStore(path) as s:
        texts = [m["text"] for m in s.export_account()["memories"]]
    assert sorted(texts) == sorted(
        f"p{p} {b} {i}" for p in range(8) for b in range(5) for i in range(40)
    )
