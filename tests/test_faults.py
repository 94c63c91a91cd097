"""Fault injection: parsing, determinism for a seed, ambiguous writes really commit, 429s."""

from __future__ import annotations

import pytest

from longmem_etl.api.endpoints import open_endpoint
from longmem_etl.api.faults import FaultConfig
from longmem_etl.errors import AmbiguousError, APIError, BadInput, RateLimited


def _fates(uri: str, n: int) -> tuple[list[str], object]:
    store = open_endpoint(uri)
    fates = []
    for i in range(n):
        try:
            store.add(f"memory {i}", collection="c")
            fates.append("ok")
        except AmbiguousError:
            fates.append("ambiguous")
        except APIError as exc:
            fates.append(str(exc.status))
    return fates, store


def test_same_seed_same_fault_sequence(tmp_path):
    q = "fail_rate=0.3&ambiguous_rate=0.3&seed=42"
    a, _ = _fates(f"local:{tmp_path}/a.db?{q}", 60)
    b, _ = _fates(f"local:{tmp_path}/b.db?{q}", 60)
    c, _ = _fates(f"local:{tmp_path}/c.db?fail_rate=0.3&ambiguous_rate=0.3&seed=43", 60)
    assert a == b
    assert a != c
    assert {"ok", "ambiguous", "503"} <= set(a)


def test_ambiguous_writes_commit_and_503s_do_not(tmp_path):
    fates, store = _fates(f"local:{tmp_path}/a.db?fail_rate=0.25&ambiguous_rate=0.25&seed=7", 80)
    clean = open_endpoint(f"local:{tmp_path}/a.db")
    texts = {m["text"] for m in clean.export_account()["memories"]}
    expected = {f"memory {i}" for i, f in enumerate(fates) if f in ("ok", "ambiguous")}
    assert texts == expected
    assert fates.count("ambiguous") > 0 and fates.count("503") > 0


def test_reads_never_end_ambiguous(tmp_path):
    store = open_endpoint(f"local:{tmp_path}/a.db?ambiguous_rate=1")
    with pytest.raises(AmbiguousError):
        store.add("x")
    assert len(store.list_memories()) == 1  # committed, and a read is not ambiguous
    assert store.health()["total"] == 1


def test_503_is_retryable_and_raised_before_anything_happens(tmp_path):
    store = open_endpoint(f"local:{tmp_path}/a.db?fail_rate=1")
    with pytest.raises(APIError) as ei:
        store.add_many(["a", "b"])
    assert ei.value.status == 503 and ei.value.retryable
    assert open_endpoint(f"local:{tmp_path}/a.db").count() == 0


def test_rate_limit_gives_429_with_retry_after(tmp_path):
    store = open_endpoint(f"local:{tmp_path}/a.db?rate_limit_rps=0.5")
    store.add("first")  # the bucket holds one token
    with pytest.raises(RateLimited) as ei:
        store.add("second")
    assert ei.value.status == 429 and ei.value.retryable
    assert 0 < ei.value.retry_after <= 2.001
    assert store.count() == 1


def test_latency_is_applied(tmp_path, monkeypatch):
    slept: list[float] = []
    import longmem_etl.api.faults as faults

    monkeypatch.setattr(faults.time, "sleep", slept.append)
    store = open_endpoint(f"local:{tmp_path}/a.db?latency_ms=20&jitter_ms=10&seed=1")
    store.add("x")
    store.list_memories()
    assert len(slept) == 2 and all(0.020 <= s <= 0.030 for s in slept)


def test_seed_dump_is_not_faulted(tmp_path):
    store = open_endpoint(f"local:{tmp_path}/a.db?fail_rate=1")
    store.seed_dump({"tenant": "t", "memories": [{"id": "1", "text": "x"}]})
    assert open_endpoint(f"local:{tmp_path}/a.db").export_account()["memories"][0]["id"] == "1"


@pytest.mark.parametrize(
    "query, message",
    [
        ("bogus=1", "unknown query parameter 'bogus'"),
        ("fail_rate=abc", "not a number"),
        ("fail_rate=1.5", "between 0 and 1"),
        ("latency_ms=-1", ">= 0"),
        ("seed=1.5", "not a number"),
    ],
)
def test_bad_fault_options_are_bad_input(tmp_path, query, message):
    with pytest.raises(BadInput, match=message):
        open_endpoint(f"local:{tmp_path}/a.db?{query}")
    assert not (tmp_path / "a.db").exists()


def test_zero_faults_config_is_inactive():
    assert not FaultConfig.from_query({"seed": "3", "fail_rate": "0"}, where="x").active
