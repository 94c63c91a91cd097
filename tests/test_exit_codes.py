"""The exit-code table for user-caused conditions (tampered snapshots, hostile input, a root that is
a file, a truncated Parquet file, a full disk): each is exit 2 with ONE line on stderr naming what
and where — never "internal error", never a traceback. Real processes throughout; a full disk is a
file size limit (RLIMIT_FSIZE, SIGXFSZ ignored) in the child, which makes writes fail like ENOSPC."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_support import cli_env, run_cli

from longmem_etl.snapshots.convert import convert_dump

SAMPLES = Path(__file__).resolve().parent.parent / "longmem_etl" / "sample_data"
LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
lim = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (lim, lim))
from longmem_etl.cli.main import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("codes")
    convert_dump(SAMPLES / "acme-small.json", root, tenant="acme", progress=False)
    return root


def _snap(root: Path) -> Path:
    return next((root / "tenant=acme").glob("snapshot=*"))


def _flip(root: Path) -> None:
    p = _snap(root) / "memories.parquet"
    b = bytearray(p.read_bytes())
    b[len(b) // 2] ^= 0xFF
    p.write_bytes(bytes(b))


def _edit(root: Path, change: Callable[[dict], None]) -> None:
    p = _snap(root) / "manifest.json"
    m = json.loads(p.read_text())
    change(m)
    p.write_text(json.dumps(m))


def _file(tmp: Path) -> Path:
    f = tmp / "not-a-dir"
    f.write_text("x")
    return f


def _deep_header(tmp: Path) -> Path:
    d = tmp / "deep.json"
    d.write_bytes(b'{"x":' + b"[" * 100_000 + b"]" * 100_000 + b',"memories":[]}')
    return d


# name -> (prepare(root, tmp) -> argv, file size limit or None, words the one line must contain)
Row = tuple[Callable[[Path, Path], list[str]], int | None, tuple[str, ...]]
TABLE: dict[str, Row] = {
    "dump of a snapshot with a flipped byte": (
        lambda r, t: (_flip(r), ["dump", str(_snap(r)), "--out", str(t / "o.json")])[1],
        None,
        ("memories.parquet", "checksum"),
    ),
    "sql over an edited manifest (counts)": (
        lambda r, t: (
            _edit(r, lambda m: m["counts"].update(memories=1)),
            ["sql", "SELECT 1", "--root", str(r)],
        )[1],
        None,
        ("manifest.json", "edited"),
    ),
    "sql with /etc/passwd in a manifest's files": (
        lambda r, t: (
            _edit(r, lambda m: m["files"].update({"/etc/passwd": {"bytes": 1, "sha256": "0"}})),
            ["sql", "SELECT 1", "--root", str(r)],
        )[1],
        None,
        ("/etc/passwd",),
    ),
    "sql --root with a truncated parquet": (
        lambda r, t: (
            os.truncate(_snap(r) / "memories.parquet", 64),
            ["sql", "SELECT 1", "--root", str(r)],
        )[1],
        None,
        ("memories.parquet",),
    ),
    "diff with a missing file": (
        lambda r, t: (
            (_snap(r) / "collections.parquet").unlink(),
            ["diff", str(_snap(r)), str(_snap(r))],
        )[1],
        None,
        ("collections.parquet", "missing"),
    ),
    "convert: a header nested 100,000 deep": (
        lambda r, t: ["convert", str(_deep_header(t)), "--root", str(t / "out")],
        None,
        ("deep.json", "nested deeper"),
    ),
    "convert --root that is a file": (
        lambda r, t: ["convert", str(SAMPLES / "acme-small.json"), "--root", str(_file(t))],
        None,
        ("not-a-dir",),
    ),
    "sql --root that is a file": (
        lambda r, t: ["sql", "SELECT 1", "--root", str(_file(t))],
        None,
        ("not-a-dir",),
    ),
    "check --root that is a file": (
        lambda r, t: ["check", "--root", str(_file(t))],
        None,
        ("not-a-dir",),
    ),
    "backup --root that is a file": (
        lambda r, t: [
            "backup",
            "--source",
            f"local:{t / 'store.db'}",
            "--root",
            str(_file(t)),
        ],
        None,
        ("not-a-dir",),
    ),
    "convert with the disk full": (
        lambda r, t: ["convert", str(SAMPLES / "acme.json"), "--root", str(t / "full")],
        20_000,
        ("full", "no space left"),
    ),
    "migrate with the disk full while the journal is written": (
        lambda r, t: [
            "migrate",
            "--source",
            str(SAMPLES / "acme.json"),
            "--target",
            f"local:{t / 'target.db'}",
            "--journal",
            str(t / "j" / "journal.sqlite"),
        ],
        400_000,
        ("journal.sqlite", "no space left"),
    ),
}


@pytest.mark.parametrize("condition", sorted(TABLE))
def test_user_caused_condition_is_exit_2_one_line(
    condition: str, pristine: Path, tmp_path: Path
) -> None:
    prepare, limit, words = TABLE[condition]
    root = tmp_path / "root"
    shutil.copytree(pristine, root)
    argv = prepare(root, tmp_path)
    if limit is None:
        r = run_cli(*argv, cwd=tmp_path)
    else:  # the CLI with a file size limit it sets on itself (RLIMIT_FSIZE: "disk full")
        cmd = [sys.executable, "-c", LIMITED, str(limit), *argv]
        r = subprocess.run(
            cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=cli_env()
        )
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert len(lines) == 1, r.stderr
    assert "internal error" not in lines[0] and "rollback" not in lines[0], lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not (tmp_path / "o.json").exists()
