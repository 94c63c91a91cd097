"""Secrets masked everywhere: a server that echoes the API key (and credential URLs) in its errors
never gets it into the journal, dead letters, status output, stdout or stderr; URL userinfo and
secret query parameters are masked in error messages. Real processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_support import run_cli
from sdk_double import FAKE

from longmem_etl.errors import APIError, BadInput
from longmem_etl.secrets import MASK, mask, watch_env

KEY = "lm_live_TOPSECRET_9f8e7d6c5b4a"


def test_mask_known_key_userinfo_and_secret_params(monkeypatch) -> None:
    monkeypatch.setenv("MY_TARGET_KEY", KEY)
    watch_env("MY_TARGET_KEY")
    text = (
        f"HTTP 401: bad key {KEY} for https://bob:hunter2@api.example.com/v1?key=AAA&limit=5"
        "&X-Amz-Signature=deadbeef&token=t0k&page=2 api_key=zzz password=pw"
    )
    out = mask(text)
    for secret in (KEY, "hunter2", "bob:", "AAA", "deadbeef", "t0k", "zzz", "=pw"):
        assert secret not in out
    assert "https://***@api.example.com/v1?key=***&limit=5" in out and "page=2" in out
    assert mask(out) == out  # idempotent
    assert mask("monkey=1 sort_key=2 author=me") == "monkey=1 sort_key=2 author=me"
    assert mask(f"{KEY}", keys_only=True) == MASK
    assert mask("https://u:p@h/?key=1", keys_only=True) == "https://u:p@h/?key=1"


def test_errors_are_masked_when_shown(monkeypatch) -> None:
    monkeypatch.setenv("LONGMEM_API_KEY", KEY)
    assert KEY not in str(APIError(500, f"oops {KEY}"))
    assert KEY not in APIError(500, f"oops {KEY}").message
    assert "hunter2" not in str(BadInput("https://a:hunter2@h: credentials in the URL"))


@pytest.mark.parametrize(
    "target, secret",
    [
        ("https://svc:hunter2@api.example.com", "hunter2"),
        ("https://api.example.com/?key=SEKRIT123", "SEKRIT123"),
        ("https://api.example.com/?X-Amz-Signature=SIGSIGSIG", "SIGSIGSIG"),
    ],
)
def test_url_secrets_are_masked_in_cli_errors(tmp_path: Path, target: str, secret: str) -> None:
    dump = tmp_path / "d.json"
    dump.write_text(json.dumps({"tenant": "t", "memories": [{"id": "a", "text": "x"}]}))
    out = run_cli(
        "migrate", "--source", str(dump), "--target", target, "--dry-run",
        cwd=tmp_path, env={"LONGMEM_API_KEY": KEY, "LONGMEM_ETL_HOME": str(tmp_path)},
    )  # fmt: skip
    assert out.returncode == 2
    assert secret not in out.stderr and KEY not in out.stderr and "***" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_key_echoed_by_the_server_lands_nowhere(tmp_path: Path) -> None:
    """A server that echoes the key in every error (503s retried, 422s dead-lettered)."""
    mems = [{"id": f"m{i}", "collection": "c", "text": f"memory {i}"} for i in range(30)]
    mems[7]["text"] = "z" * 80  # refused by the backend's max_text_chars
    dump = tmp_path / "d.json"
    dump.write_text(json.dumps({"tenant": "t", "memories": mems}))
    env = {
        "TARGET_KEY": KEY,
        "FAKE_LONGMEM_ECHO_KEY": "1",
        "LONGMEM_ETL_HOME": str(tmp_path / "home"),
        "FAKE_LONGMEM_BACKEND": f"local:{tmp_path}/server.db?max_text_chars=50&fail_rate=0.3&seed=3",
    }
    args = [
        "migrate", "--source", str(dump), "--target", "https://api.example.com",
        "--target-key-env", "TARGET_KEY", "--chunk-size", "5", "--json",
    ]  # fmt: skip
    out = run_cli(*args, cwd=tmp_path, env=env, pythonpath=[FAKE])
    assert out.returncode == 3, out.stderr
    assert KEY not in out.stdout and KEY not in out.stderr
    [work] = (tmp_path / "home" / "migrations").iterdir()
    dead = [json.loads(line) for line in (work / "dead_letter.jsonl").read_text().splitlines()]
    assert [d["source_id"] for d in dead] == ["m7"]
    # the echo happened (so masking was exercised) and was masked
    assert "Bearer ***" in dead[0]["message"] and "api_key=***" in dead[0]["message"]
    assert "https://***@api.example.com" in dead[0]["message"]
    status = run_cli("status", str(work), cwd=tmp_path, env=env, pythonpath=[FAKE])
    status_json = run_cli("status", str(work), "--json", cwd=tmp_path, env=env, pythonpath=[FAKE])
    assert status.returncode == 0 and status_json.returncode == 0
    assert "dead-lettered" in status.stdout
    for text in (status.stdout, status.stderr, status_json.stdout):
        assert KEY not in text
    # no file the run wrote holds the key: journal (and its WAL), dead letters, reports, snapshot
    for path in work.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
