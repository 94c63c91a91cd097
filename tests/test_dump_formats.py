"""One table of dump names (`dumps/formats.py`): every place that recognises a dump agrees with it.

The bug this guards: ``migrate --source x.ndjson.gz`` passed the source check (endpoints) and then
failed the reader, because the two kept their own lists of suffixes.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from longmem_etl.api.endpoints import classify_source
from longmem_etl.cli.main import main
from longmem_etl.dumps import dump_format, is_dump_path
from longmem_etl.dumps.formats import DUMP_FORMATS, dump_stem
from longmem_etl.errors import BadInput

ROOT = Path(__file__).resolve().parents[1]
JSONL = ROOT / "longmem_etl" / "sample_data" / "acme-small.jsonl"


@pytest.mark.parametrize("suffix", sorted(DUMP_FORMATS))
def test_every_suffix_is_a_dump_everywhere(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"Acme{suffix.upper()}"
    path.write_bytes(b"{}")
    assert classify_source(str(path)) == "dump"
    assert is_dump_path(path)
    assert dump_format(path) == DUMP_FORMATS[suffix]
    assert dump_stem(path) == "Acme"


def test_a_name_that_is_not_a_dump_is_refused_the_same_way(tmp_path: Path) -> None:
    path = tmp_path / "acme.json.bz2"
    path.write_bytes(b"{}")
    with pytest.raises(BadInput, match=r"\.ndjson\.gz"):
        dump_format(path)
    with pytest.raises(BadInput, match="not a recognised dump file name"):
        classify_source(str(path))


def test_ndjson_gz_converts_and_plans_a_migration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dump = tmp_path / "acme.ndjson.gz"
    dump.write_bytes(gzip.compress(JSONL.read_bytes()))
    assert main(["convert", str(dump), "--root", str(tmp_path / "snaps"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["memories"] == 50
    target = f"local:{tmp_path / 'target.sqlite'}"
    argv = ["migrate", "--source", str(dump), "--target", target, "--dry-run", "--json"]
    assert main([*argv, "--journal", str(tmp_path / "j.sqlite")]) == 0
    assert json.loads(capsys.readouterr().out)["dry_run"] is True
