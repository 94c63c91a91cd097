"""Fuzz the dump readers and the convert CLI with Hypothesis: 0 internal errors allowed.

Every generated file goes through ``longmem-etl convert`` (in-process: ``cli.main.main``) in each
format (.json whole and ``--stream``, .jsonl, .json.gz, .json.zst). The only acceptable outcomes are
exit 0 (rows converted, bad rows rejected with a reason) or exit 2 (one line naming the file);
exit 1 ("internal error") or an escaping exception is a bug, and Hypothesis shrinks it to a minimal
file that is printed. Inputs: valid dumps with odd values (any JSON, deep nesting, huge numbers,
unicode, duplicate ids), then mutated (bytes flipped, cut short, spliced, repeated brackets).

    python benchmarks/fuzz_readers.py --minutes 5          # run for five minutes
    python benchmarks/fuzz_readers.py --examples 200       # a fixed number of examples

``tests/test_fuzz_readers.py`` runs a short bounded version of the same property.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import sys
import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FORMATS = (
    (".json", []),
    (".json", ["--stream"]),
    (".jsonl", []),
    (".json.gz", []),
    (".json.zst", []),
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)
memory = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.text(max_size=8), values),
        "text": st.one_of(st.text(max_size=30), values),
        "metadata": values,
        "importance": st.one_of(st.floats(allow_nan=False, allow_infinity=False), values),
        "created_at": st.one_of(
            st.sampled_from(["2025-01-01T00:00:00Z", "2025-13-40", ""]), values
        ),
        "pinned": values,
        "extra_field": values,
    },
)


@st.composite
def dump_bytes(draw: st.DrawFn) -> bytes:
    """A dump (mostly valid JSON), then possibly mutated into something hostile."""
    mems = draw(st.lists(st.one_of(memory, values), max_size=8))
    header = draw(
        st.dictionaries(st.sampled_from(["tenant", "format_version", "x"]), values, max_size=2)
    )
    parts = [json.dumps(m).encode() for m in mems]
    deep = draw(st.sampled_from([0, 0, 0, 150, 1200, 20_000]))
    if deep:
        opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
        middle = b"1" if opener != b"[" else b""
        parts.append(
            b'{"id":"deep","text":"t","metadata":' + opener * deep + middle + closer * deep + b"}"
        )
    head = json.dumps(header).encode()[1:-1]
    data = b"{" + head + (b"," if head else b"") + b'"memories":[' + b",".join(parts) + b"]}"
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["flip", "cut", "splice", "bom", "nul", "brackets"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data = data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
        elif op == "cut":
            data = data[:at]
        elif op == "splice":
            data = data[:at] + draw(st.binary(max_size=12)) + data[at:]
        elif op == "bom":
            data = b"\xef\xbb\xbf" + data
        elif op == "nul":
            data = data[:at] + b"\x00" + data[at:]
        else:
            data = data[:at] + b"[" * draw(st.integers(1, 3000)) + data[at:]
    return data


def to_jsonl(data: bytes) -> bytes:
    """The same dump as JSONL when it parses, else the bytes split at commas (hostile lines)."""
    try:
        doc = json.loads(data)
        mems = (
            doc.pop("memories")
            if isinstance(doc, dict) and isinstance(doc.get("memories"), list)
            else None
        )
    except (ValueError, RecursionError):
        mems = None
    if mems is None:
        return data.replace(b",", b"\n")
    lines = [json.dumps(doc).encode()] + [json.dumps(m).encode() for m in mems]
    return b"\n".join(lines) + b"\n"


def encode(data: bytes, suffix: str) -> bytes:
    if suffix == ".jsonl":
        return to_jsonl(data)
    if suffix == ".json.gz":
        return gzip.compress(data)
    if suffix == ".json.zst":
        import zstandard

        return zstandard.ZstdCompressor().compress(data)
    return data


def convert_exit(data: bytes, suffix: str, flags: list[str]) -> tuple[int, str]:
    """Run ``longmem-etl convert`` on ``data`` in-process: (exit code, stderr)."""
    from longmem_etl.cli.main import main

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"fuzz{suffix}"
        path.write_bytes(encode(data, suffix))
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(["convert", str(path), "--root", str(Path(tmp) / "root"), *flags])
        return code, err.getvalue()


def check(data: bytes) -> None:
    """The property: every format gives exit 0 or 2 (one line), never an internal error."""
    for suffix, flags in FORMATS:
        code, err = convert_exit(data, suffix, flags)
        assert code in (0, 2), f"{suffix} {flags}: exit {code}: {err.strip()}"
        assert "internal error" not in err and "Traceback" not in err, err
        if code == 2:
            assert len(err.strip().splitlines()) == 1, err


def run(examples: int, seed: int | None = None) -> None:
    """One Hypothesis run of ``examples`` inputs (raises on a failure, with the shrunk input)."""
    cfg = settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=seed is not None,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )

    @cfg
    @given(dump_bytes())
    def prop(data: bytes) -> None:
        check(data)

    prop()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--minutes", type=float, help="keep fuzzing this long (default 1)")
    group.add_argument("--examples", type=int, help="run exactly this many examples")
    args = parser.parse_args()
    if args.examples:
        run(args.examples)
        print(f"{args.examples} examples x {len(FORMATS)} formats: 0 internal errors")
        return 0
    deadline = time.monotonic() + 60 * (args.minutes or 1.0)
    rounds = 0
    while time.monotonic() < deadline:
        run(100)
        rounds += 1
        print(f"{rounds * 100} examples x {len(FORMATS)} formats: 0 internal errors", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
