"""The embedded store's limits: the same on every write path, set by URI, bypassed only by seed;
`migrate --dry-run` names the items a target would refuse, and a fit_text spec migrates a seeded
150k-character text to another embedded tenant with no dead letters (real processes)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from cli_support import run_cli

from longmem_etl.api.endpoints import open_endpoint, parse_local
from longmem_etl.api.limits import StoreLimits
from longmem_etl.errors import APIError, BadInput

LONG = ("lorem ipsum dolor " * 8400)[:150_000]  # a 150k-character text


def cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """The CLI from ``cwd``, keeping its migrations in ``cwd/home`` (the tests read them there)."""
    return run_cli(*args, cwd=cwd, env={"LONGMEM_ETL_HOME": str(cwd / "home")})


def test_defaults_and_uri_parameters(tmp_path: Path) -> None:
    assert parse_local(f"local:{tmp_path}/a.db").limits == StoreLimits()
    assert StoreLimits().max_text_chars == 100_000 and StoreLimits().max_items == 100
    lim = parse_local(
        f"local:{tmp_path}/a.db?max_text_chars=5&max_items=2&max_request_bytes=0"
        "&max_metadata_bytes=9&fail_rate=0.1"
    )
    assert lim.limits == StoreLimits(5, 2, 0, 9) and lim.faults.fail_rate == 0.1
    for bad, msg in [
        ("max_items=-1", "must be >= 0"),
        ("max_text_chars=1e3", "not a whole number"),
        ("max_textchars=3", "unknown query parameter 'max_textchars'"),
    ]:
        with pytest.raises(BadInput, match=msg):
            parse_local(f"local:{tmp_path}/a.db?{bad}")


@pytest.fixture
def strict(tmp_path: Path):
    uri = (
        f"local:{tmp_path}/s.db?max_text_chars=10&max_items=2"
        "&max_request_bytes=400&max_metadata_bytes=30"
    )
    store = open_endpoint(uri)
    yield store
    store.close()


def _refused(call, match: str) -> None:
    with pytest.raises(APIError, match=match) as err:
        call()
    assert err.value.status == 422


def test_every_write_path_checks_the_same_limits(strict) -> None:
    long, meta = "x" * 11, {"k": "v" * 40}
    _refused(lambda: strict.add(long), "max_text_chars")
    _refused(lambda: strict.add("ok", metadata=meta), "max_metadata_bytes")
    _refused(lambda: strict.add_many([long]), r"items\[0\].*max_text_chars")
    _refused(lambda: strict.add_many(["a", "b", "c"]), "max_items")
    _refused(lambda: strict.add_many([{"text": "ok", "metadata": meta}]), "max_metadata_bytes")
    _refused(lambda: strict.import_memories([{"text": long}]), "max_text_chars")
    _refused(lambda: strict.import_memories([{"text": "a"}] * 3), "max_items")
    _refused(
        lambda: strict.import_memories([{"text": "ok", "metadata": meta}]), "max_metadata_bytes"
    )
    mid = strict.add("fits")["id"]
    _refused(lambda: strict.update(mid, text=long), "max_text_chars")
    _refused(lambda: strict.update(mid, metadata=meta), "max_metadata_bytes")
    assert strict.count() == 1  # nothing refused was written
    assert strict.update(mid, text="0123456789")["text"] == "0123456789"


def test_request_bytes_limit(tmp_path: Path) -> None:
    store = open_endpoint(f"local:{tmp_path}/r.db?max_request_bytes=60")
    _refused(lambda: store.add_many(["a" * 30, "b" * 30]), "max_request_bytes")
    _refused(lambda: store.import_memories([{"text": "a" * 60}]), "max_request_bytes")
    assert store.add_many(["a" * 10])["created"] == 1
    store.close()


def test_zero_switches_a_limit_off_and_seed_is_verbatim(tmp_path: Path) -> None:
    store = open_endpoint(f"local:{tmp_path}/z.db?max_text_chars=0")
    assert store.add("y" * 200_000)["text"] == "y" * 200_000
    store.close()
    seeded = open_endpoint(f"local:{tmp_path}/seed.db?max_text_chars=10")
    seeded.seed_dump({"tenant": "t", "memories": [{"id": "m", "text": LONG}]})
    assert seeded.export_account()["memories"][0]["text"] == LONG  # the one verbatim restore
    seeded.close()


@pytest.fixture
def seeded(tmp_path: Path) -> Path:
    dump = tmp_path / "big.json"
    mems = [
        {"id": "short-1", "collection": "notes", "text": "a short memory", "metadata": {"n": 1}},
        {"id": "long-1", "collection": "notes", "text": LONG, "metadata": {"n": 2}},
    ]
    dump.write_text(json.dumps({"tenant": "big", "memories": mems}))
    out = cli(["local", "seed", "local:./a.db", "--from", str(dump)], tmp_path)
    assert out.returncode == 0, out.stderr
    return tmp_path


def test_dry_run_names_the_item_the_target_would_refuse(seeded: Path) -> None:
    args = ["migrate", "--source", "local:./a.db", "--target", "local:./b.db", "--dry-run"]
    out = cli(args, seeded)
    assert out.returncode == 0, out.stderr
    assert "1 item(s) the target would refuse" in out.stdout
    assert "long-1 (notes): text has 150000 characters" in out.stdout
    assert "short-1" not in out.stdout
    js = json.loads(cli([*args, "--json"], seeded).stdout)
    refused = js["plan"]["refused"]
    assert refused["count"] == 1 and refused["limits"]["max_text_chars"] == 100_000
    assert refused["items"] == [
        {
            "id": "long-1",
            "collection": "notes",
            "reason": "text has 150000 characters, over the target's limit of 100000 "
            "(max_text_chars)",
        }
    ]
    assert not (seeded / "b.db").exists() and not (seeded / "home" / "migrations").exists()
    # a stricter target (URI limit) refuses both
    strict = cli(["migrate", "--source", "local:./a.db", "--target", "local:./b.db?max_text_chars=5",
                  "--dry-run", "--json"], seeded)  # fmt: skip
    assert json.loads(strict.stdout)["plan"]["refused"]["count"] == 2


def test_without_a_fit_step_the_long_text_is_dead_lettered(seeded: Path) -> None:
    out = cli(["migrate", "--source", "local:./a.db", "--target", "local:./b.db"], seeded)
    assert out.returncode == 3, out.stderr
    [dead] = (seeded / "home" / "migrations").glob("*/dead_letter.jsonl")
    rows = [json.loads(line) for line in dead.read_text().splitlines()]
    assert [r["source_id"] for r in rows] == ["long-1"]
    assert rows[0]["status"] == 422 and "max_text_chars" in rows[0]["message"]


def test_fit_text_spec_migrates_the_seeded_tenant_with_no_dead_letters(seeded: Path) -> None:
    spec = seeded / "fit.toml"
    spec.write_text("[[steps]]\nkind = 'fit_text'\nmax_chars = 100000\nmode = 'split'\n")
    base = ["migrate", "--source", "local:./a.db", "--target", "local:./b.db", "--spec", str(spec)]
    dry = cli([*base, "--dry-run"], seeded)
    assert dry.returncode == 0 and "every planned item fits" in dry.stdout
    out = cli([*base, "--json"], seeded)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["dead_letters"] == 0 and res["verification"]["exact"]
    [dead] = (seeded / "home" / "migrations").glob("*/dead_letter.jsonl")
    assert dead.read_text() == ""
    target = open_endpoint("local:" + str(seeded / "b.db"))
    mems = target.export_account()["memories"]
    target.close()
    parts = sorted(
        (m for m in mems if (m["metadata"].get("_fit_text") or {}).get("of") == "long-1"),
        key=lambda m: m["metadata"]["_fit_text"]["part"],
    )
    assert len(parts) == 2 and all(len(p["text"]) <= 100_000 for p in parts)
    assert "".join(p["text"] for p in parts) == LONG
    assert {m["text"] for m in mems} >= {"a short memory"}
