"""Reproducible Longmem dumps: the committed sample files and big benchmark dumps.

Why a generator and not just files: the tests check that the committed dumps are exactly what this
script makes (so they can be reviewed as code, not as megabytes of JSON), and the benchmarks need dumps
of any size with the same realistic shape. Everything comes from ``random.Random(seed)`` and fixed
dates, never from the clock, so the output is the same on every machine. Standard library only, except
``zstandard`` (a project dependency) for the one ``.json.zst`` sample.

Usage::

    python sample_data/generate.py samples [--out DIR]           # the committed files (default: here)
    python sample_data/generate.py big --count 1000000 --out /tmp/big.json [--format json|jsonl]

Importable too: ``acme()``, ``acme_small()``, ``globex_dirty()``, ``bad_rows()``, ``bad_files()``,
``write_samples(dir)``, ``write_big(path, count)``, ``normalize_text()``.

JSON Lines dumps (``.jsonl``): the first line is the header object (every top-level key except
``memories``, including ``format_version``), then one memory object per line.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import random
import sys
import unicodedata
import uuid
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
PACKAGED = HERE.parent / "longmem_etl" / "sample_data"
"""Where the files live: inside the package, so an installed wheel has them (quickstart, Dagster)."""
SEED = 20250601
FORMAT_VERSION = 1
UTC = timezone.utc
MEMORY_KEYS = (
    "id",
    "collection",
    "text",
    "importance",
    "category",
    "metadata",
    "source",
    "container_tag",
    "pinned",
    "archived",
    "created_at",
    "updated_at",
    "expires_at",
    "superseded_by",
)

# Fixed clock: the sample exports happen "now" = these instants, whatever the real date is.
ACME_EXPORTED_AT = datetime(2025, 11, 3, 9, 30, 0, 123456, tzinfo=UTC)
GLOBEX_EXPORTED_AT = datetime(2025, 11, 20, 8, 0, 0, 0, tzinfo=UTC)
HISTORY_START = datetime(2024, 1, 1, tzinfo=UTC)
# Non-expired expiries are far in the future so they stay unexpired whenever the tests run.
FUTURE_EXPIRY_START = datetime(2031, 1, 1, tzinfo=UTC)

# ---------------------------------------------------------------------------------------------
# vocabulary

FIRST = [
    "Alex",
    "Bianca",
    "Chen",
    "Dana",
    "Elif",
    "Farid",
    "Greta",
    "Hiro",
    "Ines",
    "Jonas",
    "Kemi",
    "Liam",
    "Maya",
    "Nikhil",
    "Olga",
    "Pablo",
    "Quinn",
    "Rosa",
    "Sami",
    "Tara",
    "Uma",
    "Viktor",
    "Wen",
    "Ximena",
    "Yusuf",
    "Zoe",
    "Amara",
    "Bruno",
    "Chloe",
    "Diego",
]
LAST = [
    "Okafor",
    "Rossi",
    "Nakamura",
    "Schmidt",
    "Haddad",
    "Novak",
    "Silva",
    "Kowalski",
    "Dubois",
    "Jensen",
    "Moreau",
    "Patel",
    "Fischer",
    "Costa",
    "Lindqvist",
    "Abebe",
]
COMPANIES = (
    "Initech",
    "Hooli",
    "Vandelay Industries",
    "Stark Logistics",
    "Wayne Biotech",
    "Umbrella Foods",
    "Soylent Labs",
    "Cyberdyne Retail",
    "Pied Piper",
    "Massive Dynamic",
)
ROLES = (
    "staff engineer",
    "product manager",
    "designer",
    "data analyst",
    "account executive",
    "support lead",
    "CFO",
    "head of research",
)
CITIES = ("Lisbon", "Osaka", "Toronto", "Nairobi", "Berlin", "Austin", "Melbourne", "Bogotá")
PREFS = (
    "dark mode in every app",
    "short bullet-point answers",
    "meetings before noon",
    "email over Slack for anything important",
    "metric units",
    "oat milk in coffee",
    "window seats on flights",
    "being addressed by first name",
    "weekly summaries on Fridays",
    "Python over JavaScript for scripts",
)
TOPICS = (
    "the Q3 roadmap",
    "pricing for the enterprise tier",
    "the data retention policy",
    "onboarding flow drop-off",
    "the Postgres migration",
    "vendor security review",
    "hiring for the platform team",
    "the churn analysis",
)
ISSUES = (
    "exports time out for accounts over 50k rows",
    "SSO login loops on Safari",
    "invoices show the wrong VAT rate",
    "search returns archived items",
    "webhooks are delivered twice",
    "the mobile app crashes on upload",
)
PROJECTS = ("Icarus", "Bluebird", "Nimbus", "Atlas", "Kestrel", "Orion")
TECH = ("DuckDB", "Postgres", "Kafka", "Rust", "Dagster", "SQLite", "Redis")
REASONS = (
    "it keeps the operational footprint small",
    "the team already knows it well",
    "benchmarks showed a 4x speedup",
    "it removes a paid dependency",
)
LANGS = ("Portuguese", "Japanese", "French", "English", "Spanish", "German")
STYLES = ("brief", "formal", "friendly", "very detailed")
MONTHS = "January February March April May June July August September October November December"
MONTHS_L = MONTHS.split()
ALLERGENS = ("peanuts", "shellfish", "gluten", "penicillin", "cats")
TRANSPORT = ("bike", "train", "car", "ferry", "on foot")

TEMPLATES = (
    "{name} prefers {pref}.",
    "{name} works at {company} as a {role}.",
    "{name}'s birthday is on {month} {day}.",
    "Meeting with {name} from {company} on {date} to discuss {topic}. Action item: {name2} sends notes.",
    "Customer {company} reported that {issue}; ticket #{ticket} escalated to tier 2.",
    "{name} is allergic to {allergen} and should not be offered it at team lunches.",
    "Project {project} deadline moved to {date}; owner is {name}.",
    "{name} lives in {city} and commutes by {transport}.",
    "User asked to always answer in {lang} and keep replies {style}.",
    "Decided to use {tech} for {project} because {reason}.",
    "{name} and {name2} co-own the {project} budget; approvals go through {name}.",
    "{company} renewal is due on {date}; {name} wants a 3-year quote.",
)
LONG_TAILS = (
    " Context: this came up during the weekly sync and was confirmed later by email, so treat it "
    "as reliable unless a newer memory contradicts it.",
    " Follow-up: check again after the next release, because the workaround we agreed on only "
    "covers the web client and the mobile team has not yet scheduled the fix.",
    " Note that this supersedes what was said in the kickoff deck; the slides were never updated "
    "and several people still quote the old figure in customer calls.",
    " The conversation also touched on staffing, travel budget for the offsite in spring and the "
    "open question of who will own the integration tests once the contractor leaves.",
)

COLLECTIONS_ACME = (
    ("default", "Catch-all collection created with the account"),
    ("assistant", "Facts the support assistant learned from conversations"),
    ("crm", "Customer and contact facts synced from the CRM"),
    ("notes", "Personal notes and meeting minutes"),
    ("support-tickets", "Summaries of resolved support tickets"),
    ("research", "Findings and decisions from the research team"),
)
CATEGORIES = ("preference", "fact", "event", "task", "relationship", "profile", "other")
SOURCES = ("sdk", "remember", "import", "api", "connector:slack", "connector:gmail", "mcp")


def normalize_text(text: str) -> str:
    """The duplicate key used for the dirty tenant: NFKC, lower-case, whitespace runs -> one space.

    Exact duplicates in ``globex-dirty.json`` are rows whose texts are equal under this function
    (only ASCII space/tab/newline and NO-BREAK SPACE are used as whitespace there).
    """
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


# ---------------------------------------------------------------------------------------------
# small helpers


def ts(dt: datetime) -> str:
    """ISO-8601 UTC with microseconds and a Z, the way Longmem exports timestamps."""
    return dt.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def new_id(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def pick(rng: random.Random, seq: tuple | list) -> Any:
    return seq[rng.randrange(len(seq))]


def rand_time(rng: random.Random, start: datetime, end: datetime) -> datetime:
    span = int((end - start).total_seconds() * 1_000_000)
    return start + timedelta(microseconds=rng.randrange(span))


def fill_text(rng: random.Random, long: bool = False) -> str:
    """One realistic memory sentence (plus a long tail for benchmark-size rows)."""
    date = rand_time(rng, HISTORY_START, ACME_EXPORTED_AT).strftime("%Y-%m-%d")
    text = pick(rng, TEMPLATES).format(
        name=f"{pick(rng, FIRST)} {pick(rng, LAST)}",
        name2=pick(rng, FIRST),
        pref=pick(rng, PREFS),
        company=pick(rng, COMPANIES),
        role=pick(rng, ROLES),
        month=pick(rng, MONTHS_L),
        day=rng.randint(1, 28),
        date=date,
        topic=pick(rng, TOPICS),
        issue=pick(rng, ISSUES),
        ticket=rng.randint(10000, 99999),
        allergen=pick(rng, ALLERGENS),
        project=pick(rng, PROJECTS),
        city=pick(rng, CITIES),
        transport=pick(rng, TRANSPORT),
        lang=pick(rng, LANGS),
        style=pick(rng, STYLES),
        tech=pick(rng, TECH),
        reason=pick(rng, REASONS),
    )
    if long:
        first = rng.randrange(len(LONG_TAILS))
        text += LONG_TAILS[first]
        if rng.random() < 0.75:
            text += LONG_TAILS[(first + 1 + rng.randrange(len(LONG_TAILS) - 1)) % len(LONG_TAILS)]
    return text


def luhn_complete(prefix: str, length: int, rng: random.Random) -> str:
    """A Luhn-valid card number of ``length`` digits starting with ``prefix``."""
    digits = prefix + "".join(str(rng.randrange(10)) for _ in range(length - len(prefix) - 1))
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 0:  # these are doubled once the check digit is appended
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return digits + str((10 - total % 10) % 10)


def luhn_ok(number: str) -> bool:
    digits = [int(c) for c in number if c.isdigit()]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


# ---------------------------------------------------------------------------------------------
# healthy memories (acme, acme-small, big)


def metadata_for(rng: random.Random, created: datetime, big: bool = False) -> Any:
    """Metadata of the shapes real accounts have: null, {}, flat, nested, lists, scalars."""
    r = rng.random()
    if r < 0.15:
        return None
    if r < 0.22:
        return {}
    if r < 0.50:
        return {
            "src": pick(rng, ("crm", "slack", "gmail", "notion")),
            "confidence": rng.randint(50, 99) / 100,
        }
    if r < 0.72:
        meta: dict[str, Any] = {
            "source_url": f"https://app.example.com/t/{rng.randrange(10**6)}",
            "tags": [
                pick(rng, ("vip", "billing", "q3", "urgent", "followup"))
                for _ in range(rng.randint(0, 3))
            ],
            "thread": {
                "id": f"T{rng.randrange(10**8):08d}",
                "channel": pick(rng, ("#general", "#support", "#sales", "#eng")),
                "participants": rng.randint(1, 9),
            },
        }
        if big:
            meta["history"] = [
                {
                    "at": ts(created + timedelta(hours=h)),
                    "by": pick(rng, FIRST),
                    "action": pick(rng, ("created", "edited", "linked")),
                }
                for h in range(rng.randint(1, 3))
            ]
        return meta
    if r < 0.80:
        return [
            pick(rng, ("onboarding", "pricing", "security", "roadmap"))
            for _ in range(rng.randint(1, 3))
        ]
    if r < 0.85:
        return rng.randint(1, 1000)
    if r < 0.88:
        return rng.randint(1, 10**6) / 1000
    if r < 0.92:
        return pick(rng, ("imported from notion", "manual entry", "migrated 2024-09"))
    if r < 0.94:
        return True
    return {
        "score": rng.randint(0, 100) / 100,
        "verified": rng.random() < 0.5,
        "owner": {
            "name": pick(rng, FIRST),
            "team": pick(rng, ("sales", "eng", "cs")),
            "ids": [rng.randrange(1000) for _ in range(2)],
        },
        "note": None,
    }


def healthy_memory(
    rng: random.Random,
    collections: tuple[str, ...],
    n_tags: int,
    end: datetime,
    *,
    big: bool = False,
    seen: set[str] | None = None,
) -> dict[str, Any]:
    """One memory of a healthy account, all 14 known fields present, in the SDK's order.

    With ``seen``, the text is made unique under ``normalize_text`` (so a sample has only the
    duplicates it plants on purpose).
    """
    text = fill_text(rng, long=big)
    if seen is not None:
        while normalize_text(text) in seen:
            text = fill_text(rng, long=big)
        seen.add(normalize_text(text))
    created = rand_time(rng, HISTORY_START, end - timedelta(days=1))
    updated = created if rng.random() < 0.6 else rand_time(rng, created, end)
    r = rng.random()
    expires = (
        ts(rand_time(rng, FUTURE_EXPIRY_START, FUTURE_EXPIRY_START + timedelta(days=3650)))
        if r < 0.05
        else None
    )
    return {
        "id": new_id(rng),
        "collection": pick(rng, collections),
        "text": text,
        "importance": 0.7 if rng.random() < 0.4 else rng.randint(0, 100) / 100,
        "category": pick(rng, CATEGORIES),
        "metadata": metadata_for(rng, created, big),
        "source": pick(rng, SOURCES),
        "container_tag": None if rng.random() < 0.2 else f"user-{rng.randint(1, n_tags)}",
        "pinned": rng.random() < 0.03,
        "archived": rng.random() < 0.05,
        "created_at": ts(created),
        "updated_at": ts(updated),
        "expires_at": expires,
        "superseded_by": None,
    }


def supersede(rng: random.Random, memories: list[dict[str, Any]], fraction: float) -> None:
    """Point a few memories at a newer one of the same collection (as ``contradictions`` would)."""
    by_coll: dict[str, list[dict[str, Any]]] = {}
    for m in memories:
        by_coll.setdefault(m["collection"], []).append(m)
    for group in by_coll.values():
        group.sort(key=lambda m: m.get("created_at") or "")
        for i in range(len(group) - 1):
            if rng.random() < fraction:
                group[i]["superseded_by"] = group[
                    i + 1 + rng.randrange(min(3, len(group) - i - 1))
                ]["id"]


def collections_list(names: Iterable[tuple[str, str]], rng: random.Random) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "description": desc,
            "created_at": ts(rand_time(rng, datetime(2023, 6, 1, tzinfo=UTC), HISTORY_START)),
        }
        for name, desc in names
    ]


def acme(count: int = 2000, seed: int = SEED) -> dict[str, Any]:
    """The healthy tenant: several collections, container tags, mixed metadata, a few pins/archives."""
    rng = random.Random(seed)
    cols = collections_list(COLLECTIONS_ACME, rng)
    for c in cols:
        c["memory_count"] = 0
    names = tuple(c["name"] for c in cols)
    seen: set[str] = set()
    memories = [healthy_memory(rng, names, 60, ACME_EXPORTED_AT, seen=seen) for _ in range(count)]
    supersede(rng, memories, 0.01)
    memories.sort(key=lambda m: m["created_at"], reverse=True)  # export order: newest first
    for m in memories:
        cols[names.index(m["collection"])]["memory_count"] += 1
    return {
        "format_version": FORMAT_VERSION,
        "tenant": {
            "id": "acme",
            "name": "Acme Corp",
            "plan": "pro",
            "created_at": "2023-05-30T10:00:00.000000Z",
        },
        "exported_at": ts(ACME_EXPORTED_AT),
        "collections": cols,
        "memories": memories,
    }


def acme_small(seed: int = SEED + 1) -> dict[str, Any]:
    """50 healthy memories: the same dump in every container format (json, jsonl, gz, zst, BOM)."""
    return acme(50, seed)


# ---------------------------------------------------------------------------------------------
# the dirty tenant

EMOJI = (
    "👍🏽 sounds good",
    "family trip 👨‍👩‍👧‍👦 booked",
    "🇯🇵 visa approved",
    "deploy 🚀🔥 went fine",
    "❤️ the new logo",
)
ASTRAL = (
    "𝕳𝖊𝖑𝖑𝖔 from the math alphabet",
    "rare kanji 𠜎𠜱𠝹 in a surname",
    "Linear B 𐀀𐀁 on a test label",
    "musical 𝄞 clef in the jingle brief",
)
RTL = (
    "שלום, הפגישה נדחתה ליום שלישי",
    "مرحبا، العميل يفضل البريد الإلكتروني",
    "mixed: invoice ‏#4512‏ for שרה",
    "override \u202egnp.exe\u202c attachment flagged",
)
COMBINING = (
    "cafe\u0301 meeting at noon",
    "Zalgo t\u0337\u0321e\u0334x\u0335t\u0336 in a title",
    "Ångström vs A\u030angstro\u0308m spelling",
    "n\u0303 and ñ look the same",
)
ZERO_WIDTH = (
    "pass\u200bword reset link",
    "join\u200dzero width joiner",
    "BOM\ufeffinside text",
    "soft\u00adhyphen and word\u2060joiner",
)
CONTROL = (
    "NUL byte\u0000in the middle",
    "bell\u0007 and escape\u001b[31m red",
    "tab\there, CR\r\nnew line",
    "DEL\u007f and NEL\u0085 and LS\u2028 PS\u2029 separators",
    "form\u000cfeed and vertical\u000btab",
)
CJK = (
    "田中さんは来週の会議に参加します",
    "客户要求在周五之前提供报价",
    "김민수 님은 채식주의자입니다",
    "東京オフィスの住所が変わりました",
)
UNICODE_KINDS = {
    "emoji": EMOJI,
    "astral": ASTRAL,
    "rtl": RTL,
    "combining": COMBINING,
    "zero_width": ZERO_WIDTH,
    "control": CONTROL,
    "cjk": CJK,
}

DUP_VARIANTS = (
    lambda t: t,
    lambda t: t.upper(),
    lambda t: t.lower(),
    lambda t: "  " + t.replace(" ", "   ") + "\n",
    lambda t: t.replace(" ", "\t", 2),
    lambda t: t.replace(" ", "\u00a0"),  # NO-BREAK SPACE: NFKC -> space
    lambda t: unicodedata.normalize("NFKC", t).translate(
        {c: c + 0xFEE0 for c in range(0x21, 0x7F)}
    ),  # fullwidth
    lambda t: t.replace("fi", "\ufb01"),  # ligature: NFKC -> "fi"
)
DUP_BASES = (
    "Alex prefers dark mode in every app.",
    "Bianca is on the design team and owns the final sign-off.",
    "The office wifi password changes on the first Monday of each month.",
    "Renewal for Initech is due in March; finance wants a 3-year quote.",
    "Café order: flat white with oat milk, no sugar.",
    "Kemi prefers final drafts as PDF, not Google Docs.",
    "Support hours are 9 to 5 CET on weekdays.",
    "Project Nimbus ships after the security review is signed off.",
    "Maya is out of office until the 14th.",
    "Use the staging database for every demo.",
    "Hiro's team files expenses through the finance portal.",
    "Quinn wants a weekly summary every Friday at 4pm.",
)

PII_TEMPLATES = (
    ("email", "Contact {name} at {email} for the contract."),
    ("email", "Forwarded from {email} (cc: {email2})."),
    ("phone", "Call {name} on {phone} after 6pm."),
    ("phone", "Support line is {phone}; escalation {phone2}."),
    ("card", "Customer paid with card {card}, expiry 09/27."),
    ("card", "Refund to {card_dashed} requested by {name}."),
    ("ip", "Login from {ipv4} blocked; allowlist {ipv4b}."),
    ("ip", "IPv6 peer {ipv6} flapped twice."),
    ("api_key", "Temporary key {sk} was pasted in chat, rotate it."),
    ("api_key", "AWS access key {akia} found in a config file."),
    ("api_key", "GitHub token {ghp} leaked in CI logs."),
    ("not_card", "Order number {not_card} shipped (not a card: fails Luhn)."),
)


def pii_values(rng: random.Random) -> dict[str, str]:
    first = pick(rng, FIRST).lower()
    alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    b62 = alnum + "abcdefghijklmnopqrstuvwxyz"
    card = luhn_complete(pick(rng, ("4", "51", "37", "6011")), 16, rng)
    while True:
        not_card = "".join(str(rng.randrange(10)) for _ in range(16))
        if not luhn_ok(not_card):
            break
    return {
        "name": pick(rng, FIRST),
        "email": f"{first}.{pick(rng, LAST).lower()}@{pick(rng, ('example.com', 'globex.io', 'mail.example.org'))}",
        "email2": f"{first}+billing@example.net",
        "phone": f"+1 ({rng.randint(201, 989)}) 555-{rng.randint(0, 9999):04d}",
        "phone2": f"+44 20 7946 {rng.randint(0, 9999):04d}",
        "card": card,
        "card_dashed": "-".join(card[i : i + 4] for i in range(0, 16, 4)),
        "ipv4": f"{rng.randint(11, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
        "ipv4b": f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.0/24",
        "ipv6": f"2001:db8:{rng.randrange(0x10000):x}::{rng.randrange(0x10000):x}",
        "sk": "sk-live-" + "".join(pick(rng, b62) for _ in range(32)),
        "akia": "AKIA" + "".join(pick(rng, alnum) for _ in range(16)),
        "ghp": "ghp_" + "".join(pick(rng, b62) for _ in range(36)),
        "not_card": not_card,
    }


BIG_INTS = (2**64 + 1, -(2**70) - 3, 123456789012345678901234567890, 2**63, 18446744073709551616)
PRECISE_FLOATS = (
    0.1,
    0.30000000000000004,
    1e-320,
    1.7976931348623157e308,
    2.718281828459045,
    -0.0,
    1.0,
    5e-324,
    123456789.12345679,
)


def dirty_metadata(rng: random.Random, i: int) -> Any:
    """Metadata exercising JSON edge cases: big ints, exact floats, unicode keys, deep nesting."""
    k = i % 9
    if k == 0:
        return {"big": pick(rng, BIG_INTS), "neg_big": -(2**65), "float": pick(rng, PRECISE_FLOATS)}
    if k == 1:
        return {
            "ключ": "значение",
            "🔑": ["🗝", None, True],
            "": "empty key",
            "a.b": {"$ref": "#/x"},
            "nul\u0000key": 1,
        }
    if k == 2:
        deep: Any = {"leaf": "bottom"}
        for d in range(24):
            deep = {f"l{d}": deep} if d % 2 else [deep]
        return {"deep": deep}
    if k == 3:
        return [1, 1.0, "1", None, False, {"x": []}, [[[]]], 2**64 + 7]
    if k == 4:
        return {"z_last": 1, "a_first": 2, "m_mid": {"b": 1, "a": 2}}  # key order must survive
    if k == 5:
        return {
            "unknown_nested": {"x-vendor": {"trace_id": new_id(rng), "sampled": False}},
            "floats": list(PRECISE_FLOATS[:5]),
        }
    if k == 6:
        return None
    if k == 7:
        return {}
    return 'just a string with "quotes" and \\backslashes\\'


def dirty_extra_fields(rng: random.Random, i: int) -> dict[str, Any]:
    """Unknown memory fields, as a newer Longmem version might add them."""
    k = i % 7
    if k == 0:
        return {"embedding_model": "text-embedding-3-small", "score": None}
    if k == 1:
        return {"x-legacy-id": rng.randrange(10**6), "tags": ["imported", "legacy"]}
    if k == 2:
        return {"_links": {"self": f"/v1/memories/{i}", "collection": "/v1/collections/x"}}
    if k == 3:
        return {
            "createdAt": "2024-02-02T00:00:00Z",
            "Text": "a camelCase/case twin of a known field",
        }
    if k == 4:
        return {"🏷": "emoji field name", "version": 3, "big_counter": 2**66}
    if k == 5:
        return {"embedding": [round(rng.uniform(-1, 1), 6) for _ in range(4)]}
    return {}


def globex_dirty(seed: int = SEED + 2) -> dict[str, Any]:
    """The dirty tenant: every kind of mess a real account accumulates, yet every row is valid."""
    rng = random.Random(seed)
    end = GLOBEX_EXPORTED_AT
    cols: list[Any] = [
        {
            "name": "default",
            "description": "",
            "created_at": "2023-01-01T00:00:00Z",
            "x_color": "#ff0000",
        },
        {
            "name": "assistant",
            "description": None,
            "created_at": "2023-02-01T00:00:00.000000Z",
            "settings": {"ttl_days": 90, "dedup": True},
        },
        {
            "name": "研究 📚",
            "description": "Research notes, CJK + emoji name",
            "created_at": "2023-03-01T12:00:00.5Z",
        },
        {
            "name": "legacy",
            "description": "Imported from the v1 API",
            "created_at": "2023-04-01T00:00:00+00:00",
            "archived": True,
            "owner": {"team": "ops", "ids": [2**64 + 11]},
        },
        "scratch",  # a collection given as a bare string, as old exports did
    ]
    names = ("default", "assistant", "研究 📚", "legacy", "scratch")
    memories: list[dict[str, Any]] = []
    seen: set[str] = {normalize_text(t) for t in DUP_BASES}

    def base(
        coll: str | None = None, tag: str | None = None, text: str | None = None
    ) -> dict[str, Any]:
        m = healthy_memory(rng, names, 25, end, seen=seen)
        if coll is not None:
            m["collection"] = coll
        if tag is not None:
            m["container_tag"] = tag
        if text is not None:
            m["text"] = text
        memories.append(m)
        return m

    # plain rows, with mess sprinkled over them
    for i in range(560):
        m = base()
        if i % 4 == 0:
            m["metadata"] = dirty_metadata(rng, i // 4)
        if i % 5 == 0:
            m.update(dirty_extra_fields(rng, i // 5))
        if i % 11 == 0:  # absent optional fields (not null: absent)
            for key in (
                "importance",
                "category",
                "metadata",
                "source",
                "container_tag",
                "pinned",
                "archived",
                "updated_at",
                "expires_at",
                "superseded_by",
            )[i % 10 :: 3]:
                m.pop(key, None)
        if i % 13 == 0:  # explicit nulls
            for key in ("importance", "category", "source", "pinned", "archived", "updated_at"):
                m[key] = None
        if i % 17 == 0:  # integer importance, odd-but-valid timestamp spellings
            m["importance"] = i % 2
            m["created_at"] = pick(
                rng,
                (
                    "2024-05-06T07:08:09Z",
                    "2024-05-06T07:08:09+00:00",
                    "2024-05-06T09:08:09.5+02:00",
                    "2024-05-06T07:08:09.123Z",
                    "2024-05-06T07:08:09.123456789Z",
                ),
            )
        if i % 97 == 0:
            m.pop("created_at")
    # unicode of every kind
    for kind, texts in UNICODE_KINDS.items():
        for j, t in enumerate(texts):
            m = base(text=t)
            m["unicode_kind"] = (
                kind  # an unknown field that tells the tests what this row exercises
            )
            if j == 0:
                m["container_tag"] = f"user-{kind}-ü"
    # exact duplicates: same collection + container_tag, different ids, dates and importance
    for g, text in enumerate(DUP_BASES):
        coll = names[g % 3]
        tag = f"user-{g % 5 + 1}"
        for v in range(2 + g % 3):
            variant = DUP_VARIANTS[(g + v) % len(DUP_VARIANTS)] if v else DUP_VARIANTS[0]
            m = base(coll=coll, tag=tag, text=variant(text))
            m["importance"] = round(0.3 + 0.2 * v, 2)
    # a duplicate under another container tag and a near-miss: NOT duplicates of the groups above
    base(coll=names[0], tag="user-99", text=DUP_BASES[0])
    base(coll=names[1], tag="user-2", text=DUP_BASES[1].replace("design", "sales"))
    # PII for the redact transform
    for i in range(72):
        _, template = PII_TEMPLATES[i % len(PII_TEMPLATES)]
        m = base(text=template.format(**pii_values(rng)))
        if i % 6 == 0 and isinstance(m["metadata"], dict):
            m["metadata"]["contact"] = pii_values(rng)["email"]
    # archived, expired
    for m in rng.sample(memories[:560], 90):
        m["archived"] = True
    for m in memories[:560][::9]:
        if "expires_at" in m:
            m["expires_at"] = ts(
                rand_time(rng, datetime(2024, 3, 1, tzinfo=UTC), end - timedelta(days=2))
            )
    # the rest: more plain rows up to ~1000, then supersessions among everything
    while len(memories) < 1000:
        base()
    # some ids that are not uuids (still unique strings)
    for j, m in enumerate(memories[5:10]):
        m["id"] = ("legacy-000123", "000042", "mem_ünïcode", "id with spaces", "ID-UPPER-🆔")[j]
    supersede(rng, [m for m in memories if "superseded_by" in m], 0.06)
    # a chain a -> b -> c
    chain = [m for m in memories[:560] if "superseded_by" in m][-3:]
    chain[0]["superseded_by"], chain[1]["superseded_by"] = chain[1]["id"], chain[2]["id"]
    chain[2]["superseded_by"] = None
    rng.shuffle(memories)
    return {
        "format_version": FORMAT_VERSION,
        "export_id": "exp_" + new_id(rng),
        "tenant": {
            "id": "globex",
            "name": "Globex Corporation",
            "region": "eu-west-1",
            "plan": {"tier": "enterprise", "seats": 250, "limits": {"memories": 10**7}},
            "x_flags": ["beta-search", None],
        },
        "exported_at": ts(end),
        "collections": cols,
        "warnings": [{"code": "W001", "message": "some memories have no created_at"}],
        "memories": memories,
        "next_cursor": None,
        "schema_hints": {"big": 2**64 + 5, "pi": 3.141592653589793},
    }


# ---------------------------------------------------------------------------------------------
# bad rows and bad files

BAD_ROWS_EXPECTED = {"good": 6, "rejected": 17}
"""What ``bad/bad-rows.json`` must convert to (``good + rejected == 23`` rows)."""


def bad_rows() -> dict[str, Any]:
    """A valid file whose rows have row-level problems: each goes to rejected, the file converts."""
    rng = random.Random(SEED + 3)
    good = [healthy_memory(rng, ("default", "notes"), 5, ACME_EXPORTED_AT) for _ in range(6)]
    tmpl = healthy_memory(rng, ("default",), 5, ACME_EXPORTED_AT)

    def bad(**changes: Any) -> dict[str, Any]:
        m = dict(tmpl, id=new_id(rng))
        for k, v in changes.items():
            if v is _ABSENT:
                m.pop(k)
            else:
                m[k] = v
        return m

    rows: list[Any] = [
        good[0],
        bad(id=_ABSENT),  # no id
        bad(id=None),  # id null
        bad(id=42),  # id not a string
        good[1],
        bad(text=12345),  # text not a string
        bad(text=None),  # text null
        bad(text=["a", "list"]),  # text a list
        bad(id=good[0]["id"], text="duplicate id of the first row"),  # duplicate id
        good[2],
        bad(importance="high"),  # wrong type
        bad(pinned="yes"),  # wrong type
        bad(archived=1),  # wrong type (an int is not a bool)
        bad(collection=5),  # wrong type
        bad(created_at="yesterday"),  # bad timestamp
        bad(updated_at="2025-13-45T25:61:00Z"),  # bad timestamp (impossible date)
        bad(expires_at=1717243200),  # bad timestamp (epoch number, not a string)
        good[3],
        "a bare string, not an object",  # row not an object
        None,  # row not an object
        [1, 2, 3],  # row not an object
        good[4],
        good[5],
    ]
    assert len(rows) == BAD_ROWS_EXPECTED["good"] + BAD_ROWS_EXPECTED["rejected"]
    return {
        "format_version": FORMAT_VERSION,
        "tenant": {"id": "badrows", "name": "Bad Rows Inc"},
        "exported_at": ts(ACME_EXPORTED_AT),
        "collections": [{"name": "default"}, {"name": "notes"}],
        "memories": rows,
    }


class _Absent:
    pass


_ABSENT = _Absent()


def bad_files() -> dict[str, bytes]:
    """Whole-file failures: ``convert`` must exit 2 with one line naming the file and the problem."""
    small = dump_bytes(acme(3, SEED + 4))
    no_mem = acme(0, SEED + 4)
    del no_mem["memories"]
    not_list = acme(2, SEED + 4)
    not_list["memories"] = {m["id"]: m for m in not_list["memories"]}
    v99 = acme(2, SEED + 4)
    v99["format_version"] = 99
    noise = random.Random(SEED + 5)
    garbage = bytes(noise.getrandbits(8) for _ in range(200))
    corrupt_gz = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + garbage
    return {
        "not-json.json": b"id,text\n1,this is a CSV file, not JSON\n",
        "truncated.json": small[: len(small) * 2 // 3],
        "top-level-array.json": dump_bytes(acme(3, SEED + 4)["memories"]),
        "no-memories.json": dump_bytes(no_mem),
        "memories-not-list.json": dump_bytes(not_list),
        "corrupt.json.gz": corrupt_gz,
        "unknown-format-version.json": dump_bytes(v99),
        "trailing-garbage.json": small + b'{"memories": []} trailing garbage\n',
        "empty.json": b"",
    }


# ---------------------------------------------------------------------------------------------
# writing


def _enc(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def iter_json_chunks(header: dict[str, Any], memories: Iterable[Any]) -> Iterator[str]:
    """A dump as JSON text, one memory per line, streaming: ``memories`` may be a generator.

    ``header`` holds the other top-level keys in order; ``"memories"`` in it marks where the list
    goes (appended last when absent).
    """
    keys = list(header) if "memories" in header else [*header, "memories"]
    yield "{"
    for n, key in enumerate(keys):
        yield ("" if n == 0 else ", ") + _enc(key) + ": "
        if key != "memories":
            if key == "collections" and isinstance(header[key], list) and header[key]:
                yield "[\n  " + ",\n  ".join(_enc(c) for c in header[key]) + "\n]"
            else:
                yield _enc(header[key])
            continue
        first = True
        for m in memories:
            yield ("[\n" if first else ",\n") + _enc(m)
            first = False
        yield "[]" if first else "\n]"
    yield "}\n"


def dump_bytes(dump: Any) -> bytes:
    """A whole dump (or any JSON value) as the committed files spell it: UTF-8, a memory per line."""
    if not isinstance(dump, dict) or not isinstance(dump.get("memories"), list):
        return (_enc(dump) + "\n").encode()
    return "".join(iter_json_chunks(dump, dump["memories"])).encode()


def iter_jsonl_chunks(header: dict[str, Any], memories: Iterable[Any]) -> Iterator[str]:
    """JSON Lines: the header (all top-level keys but ``memories``) first, then one memory a line."""
    yield _enc({k: v for k, v in header.items() if k != "memories"}) + "\n"
    for m in memories:
        yield _enc(m) + "\n"


def jsonl_bytes(dump: dict[str, Any]) -> bytes:
    return "".join(iter_jsonl_chunks(dump, dump["memories"])).encode()


def gzip_bytes(data: bytes) -> bytes:
    """Gzip with no timestamp or file name in the header, so the bytes are reproducible."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(data)
    return buf.getvalue()


def zstd_bytes(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor(
        level=10, write_content_size=True, write_checksum=True
    ).compress(data)


def sample_files() -> dict[str, bytes]:
    """Every committed file under sample_data/, by relative path."""
    small = acme_small()
    small_json = dump_bytes(small)
    files = {
        "acme.json": dump_bytes(acme()),
        "globex-dirty.json": dump_bytes(globex_dirty()),
        "acme-small.json": small_json,
        "acme-small.jsonl": jsonl_bytes(small),
        "acme-small.json.gz": gzip_bytes(small_json),
        "acme-small.jsonl.gz": gzip_bytes(jsonl_bytes(small)),
        "acme-small.json.zst": zstd_bytes(small_json),
        "bom.json": b"\xef\xbb\xbf" + small_json,
        "bad/bad-rows.json": dump_bytes(bad_rows()),
    }
    files.update({f"bad/{name}": data for name, data in bad_files().items()})
    return files


def write_samples(out: Path = PACKAGED) -> list[Path]:
    """Write every sample file under ``out`` (the committed set when ``out`` is this folder)."""
    written = []
    for rel, data in sample_files().items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written.append(path)
    return written


def iter_big_memories(count: int, seed: int = SEED + 100) -> Iterator[dict[str, Any]]:
    """``count`` benchmark-size memories (~800 bytes each as JSON), generated lazily."""
    rng = random.Random(seed)
    names = tuple(name for name, _ in COLLECTIONS_ACME)
    for _ in range(count):
        yield healthy_memory(rng, names, 5000, ACME_EXPORTED_AT, big=True)


def write_big(path: Path, count: int, fmt: str = "json", seed: int = SEED + 100) -> int:
    """Stream a ``count``-memory dump to ``path`` (``.gz``/``.zst`` suffix compresses). Returns bytes."""
    rng = random.Random(seed)
    header = {
        "format_version": FORMAT_VERSION,
        "tenant": {"id": "bench", "name": "Benchmark Co", "plan": "enterprise"},
        "exported_at": ts(ACME_EXPORTED_AT),
        "collections": collections_list(COLLECTIONS_ACME, rng),
        "memories": None,
    }
    chunks = (iter_jsonl_chunks if fmt == "jsonl" else iter_json_chunks)(
        header, iter_big_memories(count, seed)
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw: IO[bytes]
    with open(path, "wb") as raw:
        if path.suffix == ".gz":
            sink: Any = gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0)
        elif path.suffix == ".zst":
            import zstandard

            sink = zstandard.ZstdCompressor(level=3).stream_writer(raw, closefd=False)
        else:
            sink = raw
        buf: list[str] = []
        size = 0
        for chunk in chunks:
            buf.append(chunk)
            size += len(chunk)
            if size > 1 << 20:
                sink.write("".join(buf).encode())
                buf, size = [], 0
        sink.write("".join(buf).encode())
        if sink is not raw:
            sink.close()
        return raw.tell()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python sample_data/generate.py",
        description="Generate the committed sample dumps, or a big benchmark dump (streamed).",
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("samples", help="write the committed sample files")
    p.add_argument(
        "--out",
        type=Path,
        default=PACKAGED,
        help="folder to write into (default: longmem_etl/sample_data/)",
    )
    p = sub.add_parser("big", help="write a big benchmark dump, streaming")
    p.add_argument("--count", type=int, default=1_000_000)
    p.add_argument("--out", type=Path, required=True, help="file to write (.gz/.zst compress)")
    p.add_argument("--format", choices=("json", "jsonl"), default="json")
    p.add_argument("--seed", type=int, default=SEED + 100)
    args = parser.parse_args(argv)
    if args.cmd == "samples":
        for path in write_samples(args.out):
            print(path)
    else:
        size = write_big(args.out, args.count, args.format, args.seed)
        print(f"{args.out}: {args.count} memories, {size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
