"""CLI: ``convert`` and ``dump`` as real subprocesses — exit codes, one-line stderr, --json."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cli_support import run_cli

from longmem_etl import jsonio
from longmem_etl.dumps.compare import dump_differences

REPO = Path(__file__).resolve().parents[1]


def test_convert_then_dump_json(tmp_path):
    dump = {
        "tenant": "cli",
        "collections": ["a"],
        "memories": [
            {"id": "1", "text": "one", "metadata": {"big": 10**30}},
            {"id": "1", "text": "dup"},
        ],
    }
    src = tmp_path / "d.json"
    src.write_text(json.dumps(dump))
    r = run_cli("convert", str(src), "--root", str(tmp_path / "root"), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert (out["tenant"], out["memories"], out["rejected"]) == ("cli", 1, 1)
    snap = out["path"]
    r = run_cli("dump", snap, "--out", str(tmp_path / "back.json"), "--json")
    assert r.returncode == 0, r.stderr
    back = jsonio.loads((tmp_path / "back.json").read_bytes())
    expected = dict(dump, memories=dump["memories"][:1])
    assert dump_differences(expected, back) == []


def test_strict_exit_2_one_line_nothing_written(tmp_path):
    src = tmp_path / "d.json"
    src.write_text(json.dumps({"memories": [{"id": "1", "text": "a"}, {"id": "1", "text": "b"}]}))
    r = run_cli("convert", str(src), "--root", str(tmp_path / "root"), "--strict")
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "duplicate id" in r.stderr
    assert "Traceback" not in r.stderr
    assert os.listdir(tmp_path / "root") == []


@pytest.mark.parametrize(
    "name,data",
    [("bad.json", b"{not json"), ("v.json", b'{"format_version": 3, "memories": []}')],
)
def test_bad_file_exit_2(tmp_path, name, data):
    src = tmp_path / name
    src.write_bytes(data)
    r = run_cli("convert", str(src), "--root", str(tmp_path / "root"))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(src) in lines[0], r.stderr
    assert not (tmp_path / "root").exists() or os.listdir(tmp_path / "root") == []


def test_dump_of_non_snapshot_exit_2(tmp_path):
    r = run_cli("dump", str(tmp_path), "--out", str(tmp_path / "x.json"))
    assert r.returncode == 2 and "not a snapshot" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.json").exists()


def test_help_has_examples():
    for verb in ("convert", "dump"):
        r = run_cli(verb, "--help")
        assert r.returncode == 0 and "examples:" in r.stdout
