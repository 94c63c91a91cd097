"""URI handling: what is an endpoint, a dump file or a snapshot; identities without secrets."""

from __future__ import annotations

import pytest

from longmem_etl.api.endpoints import classify_source, endpoint_identity, parse_local
from longmem_etl.errors import BadInput
from longmem_etl.snapshots import snapshot_from_dump


def test_classify(tmp_path):
    assert classify_source("local:./x.db") == "endpoint"
    assert classify_source("https://rememberos.ai") == "endpoint"
    for name in ("a.json", "a.json.gz", "a.json.zst", "a.jsonl", "a.JSONL.GZ"):
        (tmp_path / name).write_text("{}")
        assert classify_source(str(tmp_path / name)) == "dump"
    snap = snapshot_from_dump({"memories": []}, tmp_path / "r", tenant="t", source={"kind": "t"})
    assert classify_source(str(snap.path)) == "snapshot"


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: str(p / "missing.json"), "no such file or directory"),
        (lambda p: (p / "d").mkdir() or str(p / "d"), "no manifest.json"),
        (lambda p: (p / "x.csv").write_text("") or str(p / "x.csv"), "not a recognised dump"),
        (lambda p: "s3://bucket/key.json", "unknown URI scheme 's3'"),
        (lambda p: "", "empty source"),
    ],
)
def test_classify_refusals(tmp_path, make, message):
    with pytest.raises(BadInput, match=message):
        classify_source(make(tmp_path))


def test_local_identity_ignores_faults_and_is_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = endpoint_identity("local:./t.db")
    b = endpoint_identity("local:./t.db?fail_rate=0.5&seed=2")
    assert a == b == {"scheme": "local", "path": str(tmp_path / "t.db")}
    assert parse_local("local:./t.db?fail_rate=0.5&seed=2").faults.fail_rate == 0.5


def test_https_identity_without_key(monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY", raising=False)
    with pytest.raises(BadInput, match="NO_SUCH_KEY is not set"):
        endpoint_identity("https://h.example", "NO_SUCH_KEY")
    ident = endpoint_identity("https://h.example", "NO_SUCH_KEY", require_key=False)
    assert ident["key_fingerprint"] is None


def test_repeated_query_key_is_bad_input():
    with pytest.raises(BadInput, match="given twice"):
        parse_local("local:x.db?seed=1&seed=2")
