"""The `redact` step: typed placeholders for PII and secrets, with a count per pattern.

Detectors run in order: user patterns (most specific, spec order), then secret, email, card, ipv4,
ipv6, phone — so a token's digits are not mistaken for a phone number, and a card number is tested
with Luhn before the phone detector could see it. One combined RE2 pre-check picks the rows that
match any detector (most rows match none and are left as they are); on those, each detector is one
RE2 ``regexp_replace`` over the previous detector's output (vectorised in DuckDB), and counts use
``regexp_extract_all`` only on rows the detector actually changed. Card candidates are replaced only when their digits pass Luhn (pure SQL).

Metadata (opt-in via ``fields``) is JSON text: placeholders contain no quote or backslash, so a match
inside a JSON string keeps the JSON valid. A match over a bare JSON number (e.g. a phone stored as a
number) would not: such values are retried with a quoted placeholder, and if the metadata still is
not valid JSON it is replaced by ``{"redacted": true}`` and counted as ``metadata_replaced``.
"""

from __future__ import annotations

from datetime import datetime

from longmem_etl.transforms.plans import Plan, Rewrite
from longmem_etl.transforms.spec import Step, sql_str

REPLACED = '{"redacted":true}'
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_H = "[0-9A-Fa-f]{1,4}"
BUILTIN: dict[str, tuple[str, str]] = {
    # name: (RE2 pattern, placeholder)
    "secret": (
        r"\b(?:sk-(?:proj-|live-|test-|ant-)?[A-Za-z0-9_-]{16,}|sk_(?:live|test)_[A-Za-z0-9]{16,}"
        r"|(?:AKIA|ASIA)[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,}"
        r"|xox[abposr]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35}"
        r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,})",
        "[SECRET]",
    ),
    "email": (
        r"[A-Za-z0-9._%+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}",
        "[EMAIL]",
    ),
    "card": (r"\b(?:[0-9][ -]?){12,18}[0-9]\b", "[CARD]"),
    "ipv4": (rf"\b{_OCTET}(?:\.{_OCTET}){{3}}\b", "[IP]"),
    # full form, or compressed with "::" (after at least one group). Starts at a word boundary so
    # C++ scopes like "std::vector" / "Foo::bar" are not addresses; a bare leading "::" is not matched.
    "ipv6": (
        rf"\b(?:(?:{_H}:){{7}}{_H}\b|(?:{_H}:){{1,7}}:(?:{_H}(?::{_H}){{0,5}}\b)?)",
        "[IP]",
    ),
    "phone": (
        r"(?:\+[0-9]{1,3}[ .-]?(?:\([0-9]{1,4}\)[ .-]?)?[0-9]{1,4}(?:[ .-]?[0-9]{2,4}){2,4}"
        r"|\([0-9]{3}\)[ .-]?[0-9]{3}[ .-][0-9]{4}|\b[0-9]{3}[ .-][0-9]{3}[ .-][0-9]{4})\b",
        "[PHONE]",
    ),
}


def detectors(step: Step) -> list[tuple[str, str, str]]:
    """(name, regex, placeholder) in the order they run."""
    out = [(n, rx, f"[{n.upper()}]") for n, rx in step.options["patterns"].items()]
    wanted = step.options["builtin"]
    out += [(n, *BUILTIN[n]) for n in BUILTIN if n in wanted]
    return out


def _chain(
    col: str, dets: list[tuple[str, str, str]], tag: str, quoted: bool
) -> tuple[list[dict[str, str]], str, dict[str, str]]:
    """Layers computing ``col`` through each detector; returns (layers, final column, counters)."""
    layers: list[dict[str, str]] = []
    counters: dict[str, str] = {}
    # One combined RE2 scan decides which rows need the chain at all (most rows have no PII).
    hit = f"_rd_{tag}_hit"
    combined = "|".join(f"(?:{rx})" for _, rx, _ in dets)
    layers.append({hit: f"coalesce(regexp_matches({col}, {sql_str(combined)}), false)"})
    prev = col
    for i, (name, rx, ph) in enumerate(dets):
        cur = f"_rd_{tag}_{i}"
        rep = f'"{ph}"' if quoted else ph
        if name == "card":
            cands = f"regexp_extract_all({prev}, {sql_str(rx)})"
            valid = f"list_filter({cands}, lambda m: lm_luhn(m))"
            expr = (
                f"CASE WHEN regexp_matches({prev}, {sql_str(rx)}) "
                f"THEN list_reduce({valid}, lambda acc, m: replace(acc, m, {sql_str(rep)}), {prev}) "
                f"ELSE {prev} END"
            )
            count = f"CASE WHEN {cur} IS DISTINCT FROM {prev} THEN len({valid}) ELSE 0 END"
        else:
            expr = f"regexp_replace({prev}, {sql_str(rx)}, {sql_str(rep.replace(chr(92), chr(92) * 2))}, 'g')"
            count = f"CASE WHEN {cur} IS DISTINCT FROM {prev} THEN len(regexp_extract_all({prev}, {sql_str(rx)})) ELSE 0 END"
        layers.append({cur: f"CASE WHEN {hit} THEN {expr} ELSE {prev} END"})
        counters[f"{tag}:{name}"] = count
        prev = cur
    return layers, prev, counters


def compile_redact(step: Step, now: datetime) -> list[Plan]:
    dets = detectors(step)
    exprs: dict[str, str] = {}
    layers: list[dict[str, str]] = []
    counters: dict[str, str] = {}
    if "text" in step.options["fields"]:
        lt, final, ct = _chain("text", dets, "text", quoted=False)
        layers += lt
        counters.update(ct)
        exprs["text"] = final
    if "metadata" in step.options["fields"]:
        lm, plain, cm = _chain("metadata", dets, "metadata", quoted=False)
        layers += lm
        counters.update(cm)
        # Retry with quoted placeholders only where plain redaction broke the JSON (bare numbers).
        layers.append(
            {"_rd_retry": f"{plain} IS DISTINCT FROM metadata AND NOT json_valid({plain})"}
        )
        layers.append({"_rd_mq": "CASE WHEN _rd_retry THEN metadata END"})
        lq, quoted, _ = _chain("_rd_mq", dets, "mq", quoted=True)
        layers += lq
        exprs["metadata"] = (
            f"CASE WHEN NOT _rd_retry THEN {plain} "
            f"WHEN json_valid({quoted}) THEN {quoted} ELSE {sql_str(REPLACED)} END"
        )
        counters["metadata_replaced"] = (
            f"CASE WHEN _rd_retry AND NOT json_valid({quoted}) THEN 1 ELSE 0 END"
        )
    return [Rewrite(exprs, layers=layers, counters=counters)]
