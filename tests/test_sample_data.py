"""The committed sample dumps are exactly what the generator makes, and carry the dirt they promise.

Other tests (convert, round trip, transforms, warehouse) lean on these files; if a sample silently
lost its duplicates or its big integers, those tests would keep passing while testing nothing.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import re
import subprocess
import sys
import unicodedata
import zlib
from collections import Counter, defaultdict
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import zstandard

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "longmem_etl" / "sample_data"  # the data ships inside the package
GENERATOR_DIR = ROOT / "sample_data"  # the generator and its README stay at the top
ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "sample_data_generate", GENERATOR_DIR / "generate.py"
    )
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


gen = load_generator()


def decompress(name: str, data: bytes) -> bytes:
    if name.endswith(".gz"):
        return gzip.decompress(data)
    if name.endswith(".zst"):
        return zstandard.ZstdDecompressor().decompress(data)
    return data


def load(name: str) -> dict[str, Any]:
    return json.loads((SAMPLES / name).read_bytes())


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("samples")
    subprocess.run(
        [sys.executable, str(GENERATOR_DIR / "generate.py"), "samples", "--out", str(out)],
        check=True,
        capture_output=True,
    )
    return out


def test_committed_samples_are_reproducible(regenerated: Path) -> None:
    """Byte-identical; compressed files compare by content (codec versions may change framing)."""
    made = sorted(
        p.relative_to(regenerated).as_posix() for p in regenerated.rglob("*") if p.is_file()
    )
    committed = sorted(  # every dump-like file here must come from the generator
        p.relative_to(SAMPLES).as_posix()
        for p in SAMPLES.rglob("*")
        if p.is_file() and p.name.endswith((".json", ".jsonl", ".gz", ".zst"))
    )
    assert made == committed
    for rel in made:
        new, old = (regenerated / rel).read_bytes(), (SAMPLES / rel).read_bytes()
        if rel == "bad/corrupt.json.gz":
            assert new == old
        elif rel.endswith((".gz", ".zst")):
            assert decompress(rel, new) == decompress(rel, old), rel
        else:
            assert new == old, rel


def test_readme_lists_every_file() -> None:
    readme = (GENERATOR_DIR / "README.md").read_text()
    for rel in gen.sample_files():
        assert f"`{Path(rel).name}`" in readme, rel


def test_acme_is_healthy_and_realistic() -> None:
    dump = load("acme.json")
    assert dump["format_version"] == 1 and dump["tenant"]["id"] == "acme"
    assert ISO_UTC.match(dump["exported_at"])
    mems = dump["memories"]
    assert len(mems) == 2000
    assert len({m["id"] for m in mems}) == 2000
    names = [c["name"] for c in dump["collections"]]
    assert len(names) >= 5 and all(
        isinstance(c, dict) and "description" in c for c in dump["collections"]
    )
    assert Counter(m["collection"] for m in mems).keys() == set(names)
    for m in mems:
        assert tuple(m) == gen.MEMORY_KEYS
        assert ISO_UTC.match(m["created_at"]) and ISO_UTC.match(m["updated_at"])
        assert m["updated_at"] >= m["created_at"]
        assert m["expires_at"] is None or m["expires_at"] > "2031"
    shapes = Counter(type(m["metadata"]).__name__ for m in mems)
    assert {"NoneType", "dict", "list", "int", "float", "str", "bool"} <= shapes.keys()
    assert any(m["metadata"] == {} for m in mems)
    assert any(
        isinstance(m["metadata"], dict) and any(isinstance(v, dict) for v in m["metadata"].values())
        for m in mems
    )
    assert len({m["container_tag"] for m in mems}) > 20
    assert 0 < sum(m["pinned"] for m in mems) < 200 and 0 < sum(m["archived"] for m in mems) < 200
    ids = {m["id"] for m in mems}
    assert all(m["superseded_by"] in ids for m in mems if m["superseded_by"])
    keys = Counter(
        (m["collection"], m["container_tag"], gen.normalize_text(m["text"])) for m in mems
    )
    assert max(keys.values()) == 1, "a healthy tenant has no duplicates"


def test_small_variants_all_hold_the_same_dump() -> None:
    ref = load("acme-small.json")
    assert len(ref["memories"]) == 50
    for name in ("acme-small.json.gz", "acme-small.json.zst", "bom.json"):
        raw = decompress(name, (SAMPLES / name).read_bytes())
        if name == "bom.json":
            assert raw.startswith(b"\xef\xbb\xbf")
            raw = raw[3:]
        assert json.loads(raw) == ref, name
    for name in ("acme-small.jsonl", "acme-small.jsonl.gz"):
        lines = decompress(name, (SAMPLES / name).read_bytes()).decode().splitlines()
        header = json.loads(lines[0])
        assert header == {k: v for k, v in ref.items() if k != "memories"}
        assert [json.loads(line) for line in lines[1:]] == ref["memories"]


class TestDirtyTenant:
    dump = load("globex-dirty.json")
    mems = dump["memories"]

    def texts(self) -> list[str]:
        return [m["text"] for m in self.mems]

    def test_every_row_is_valid(self) -> None:
        assert 900 <= len(self.mems) <= 1100
        assert len({m["id"] for m in self.mems}) == len(self.mems)
        for m in self.mems:
            assert isinstance(m, dict) and isinstance(m["id"], str) and isinstance(m["text"], str)
            for key in ("created_at", "updated_at", "expires_at"):
                assert m.get(key) is None or isinstance(m[key], str)
            for key in ("pinned", "archived"):
                assert m.get(key) is None or isinstance(m[key], bool)
            assert m.get("importance") is None or type(m["importance"]) in (int, float)

    def test_exact_duplicates_modulo_case_whitespace_nfkc(self) -> None:
        groups: dict[tuple, list[str]] = defaultdict(list)
        for m in self.mems:
            groups[(m["collection"], m.get("container_tag"), gen.normalize_text(m["text"]))].append(
                m["text"]
            )
        dups = [texts for texts in groups.values() if len(texts) > 1]
        assert len(dups) == len(gen.DUP_BASES)
        variants = [t for texts in dups for t in texts]
        assert any(t != unicodedata.normalize("NFKC", t) for t in variants), "NFKC-only variants"
        assert any(t.isupper() for t in variants) and any("\t" in t or "  " in t for t in variants)
        assert sum(len(texts) - 1 for texts in dups) >= 20

    def test_archived_expired_superseded(self) -> None:
        ids = {m["id"] for m in self.mems}
        assert sum(m.get("archived") is True for m in self.mems) >= 50
        expired = [
            m
            for m in self.mems
            if m.get("expires_at") and m["expires_at"] < self.dump["exported_at"]
        ]
        assert len(expired) >= 30
        assert any((m.get("expires_at") or "") > "2031" for m in self.mems), (
            "and some that are not expired"
        )
        sup = {m["id"]: m["superseded_by"] for m in self.mems if m.get("superseded_by")}
        assert len(sup) >= 30 and set(sup.values()) <= ids
        assert any(target in sup for target in sup.values()), "a supersession chain"

    def test_unicode_of_every_kind(self) -> None:
        text = "".join(self.texts())
        assert re.search("[\U0001f300-\U0001faff]", text), "emoji"
        assert any(ord(c) > 0xFFFF for c in text), "astral plane"
        assert re.search("[\u0590-\u06ff]", text) and "\u202e" in text, "RTL and bidi override"
        assert any(unicodedata.combining(c) for c in text), "combining marks"
        assert {"\u200b", "\u200d", "\ufeff"} <= set(text), "zero-width"
        assert {"\x00", "\x07", "\x1b", "\x7f", "\u2028"} <= set(text), "NUL and control chars"
        assert re.search("[\u4e00-\u9fff]", text) and re.search("[\uac00-\ud7af]", text), "CJK"
        assert Counter(m.get("unicode_kind") for m in self.mems).keys() >= set(gen.UNICODE_KINDS)

    def test_unknown_fields_at_every_level(self) -> None:
        top = set(self.dump) - {
            "format_version",
            "tenant",
            "exported_at",
            "collections",
            "memories",
        }
        assert top >= {"export_id", "warnings", "next_cursor", "schema_hints"}
        assert set(self.dump["tenant"]) - {"id", "name"}
        assert any(
            isinstance(c, dict) and set(c) - {"name", "description", "created_at"}
            for c in self.dump["collections"]
        )
        assert any(isinstance(c, str) for c in self.dump["collections"]), "a bare-string collection"
        assert sum(bool(set(m) - set(gen.MEMORY_KEYS)) for m in self.mems) >= 100
        assert any("createdAt" in m for m in self.mems)

    def test_absent_and_null_optional_fields(self) -> None:
        optional = set(gen.MEMORY_KEYS) - {"id", "collection", "text"}
        absent = {k for m in self.mems for k in optional if k not in m}
        assert absent == optional
        assert any(m.get("pinned", False) is None for m in self.mems)

    def test_exact_numbers_in_metadata(self) -> None:
        raw = (SAMPLES / "globex-dirty.json").read_text()
        ints = [int(x) for x in re.findall(r"-?\d{20,}", raw)]
        assert any(abs(i) > 2**64 for i in ints)
        assert "0.30000000000000004" in raw and "1e-320" in raw and "1.7976931348623157e+308" in raw
        metas = [m.get("metadata") for m in self.mems]
        assert any(
            isinstance(v, dict) and isinstance(v.get("big"), int) and v["big"] >= 2**63
            for v in metas
        )
        assert any(isinstance(m.get("importance"), int) for m in self.mems), "integer importance"

    def test_timestamp_spellings(self) -> None:
        created = {m["created_at"] for m in self.mems if m.get("created_at")}
        assert any(t.endswith("+00:00") for t in created) and any(
            t.endswith("+02:00") for t in created
        )
        assert any(re.search(r"\.\d{9}Z$", t) for t in created), "nanoseconds"

    def test_pii_for_redaction(self) -> None:
        text = "\n".join(self.texts())
        assert re.search(r"[\w.+-]+@[\w-]+\.[\w.]+", text)
        assert re.search(r"\+1 \(\d{3}\) 555-\d{4}", text)
        assert re.search(r"\bsk-live-[A-Za-z0-9]{32}\b", text)
        assert re.search(r"\bAKIA[A-Z0-9]{16}\b", text)
        assert re.search(r"\b\d{1,3}(\.\d{1,3}){3}\b", text) and "2001:db8:" in text
        cards = re.findall(r"\b(?:\d[ -]?){15}\d\b", text)
        assert any(gen.luhn_ok(c) for c in cards), "Luhn-valid card numbers"
        assert any(not gen.luhn_ok(c) for c in cards), "card-like numbers that fail Luhn"


def test_bad_files_are_bad_in_the_way_their_name_says() -> None:
    bad = SAMPLES / "bad"

    def parse(name: str) -> Any:
        return json.loads((bad / name).read_bytes())

    for name in ("not-json.json", "truncated.json", "trailing-garbage.json", "empty.json"):
        with pytest.raises(ValueError):
            parse(name)
    with pytest.raises((OSError, EOFError, zlib.error)):
        gzip.decompress((bad / "corrupt.json.gz").read_bytes())
    assert (bad / "corrupt.json.gz").read_bytes()[:2] == b"\x1f\x8b"
    assert isinstance(parse("top-level-array.json"), list)
    assert "memories" not in parse("no-memories.json")
    assert isinstance(parse("memories-not-list.json")["memories"], dict)
    assert parse("unknown-format-version.json")["format_version"] == 99


def test_bad_rows_file_is_valid_but_its_rows_are_not() -> None:
    dump = json.loads((SAMPLES / "bad" / "bad-rows.json").read_bytes())
    rows = dump["memories"]
    assert len(rows) == sum(gen.BAD_ROWS_EXPECTED.values())
    objs = [r for r in rows if isinstance(r, dict)]
    assert len(rows) - len(objs) == 3, "rows that are not objects"
    assert any("id" not in r for r in objs) and any(r.get("id", "") is None for r in objs)
    assert any(isinstance(r.get("id"), int) for r in objs)
    ids = Counter(r["id"] for r in objs if isinstance(r.get("id"), str))
    assert max(ids.values()) == 2, "a duplicate id"
    assert sum(not isinstance(r["text"], str) for r in objs) == 3
    assert {"yesterday", "2025-13-45T25:61:00Z", 1717243200} <= {
        r[k] for r in objs for k in ("created_at", "updated_at", "expires_at")
    }
    clean = [
        r
        for r in objs
        if tuple(r) == gen.MEMORY_KEYS and r["text"] != "duplicate id of the first row"
    ]
    assert (
        len(
            [
                r
                for r in clean
                if r["collection"] in ("default", "notes")
                and isinstance(r["importance"], float)
                and isinstance(r["pinned"], bool)
                and isinstance(r["archived"], bool)
                and isinstance(r["expires_at"], (str, type(None)))
                and r["created_at"] != "yesterday"
                and r["updated_at"] != "2025-13-45T25:61:00Z"
                and isinstance(r["id"], str)
                and isinstance(r["text"], str)
            ]
        )
        >= gen.BAD_ROWS_EXPECTED["good"]
    )


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_big_dump_streams_realistic_rows(tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"big.{fmt}"
    proc = subprocess.run(
        [
            sys.executable,
            str(GENERATOR_DIR / "generate.py"),
            "big",
            "--count",
            "500",
            "--out",
            str(out),
            "--format",
            fmt,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "500 memories" in proc.stdout
    raw = out.read_bytes()
    if fmt == "json":
        mems = json.loads(raw)["memories"]
    else:
        lines = raw.splitlines()
        assert json.loads(lines[0])["format_version"] == 1
        mems = [json.loads(line) for line in lines[1:]]
    assert len(mems) == 500 and len({m["id"] for m in mems}) == 500
    assert 650 <= len(raw) / 500 <= 950, "about 800 bytes per memory"


def test_big_dump_compressed_output_matches_plain(tmp_path: Path) -> None:
    gen.write_big(tmp_path / "a.json", 50)
    gen.write_big(tmp_path / "a.json.gz", 50)
    gen.write_big(tmp_path / "a.json.zst", 50)
    plain = (tmp_path / "a.json").read_bytes()
    assert gzip.decompress((tmp_path / "a.json.gz").read_bytes()) == plain
    with zstandard.ZstdDecompressor().stream_reader((tmp_path / "a.json.zst").read_bytes()) as r:
        assert r.read() == plain
