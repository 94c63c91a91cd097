"""`verify.compare` (one DuckDB plan) against a plain-Python model of the rules in its docstring,
on many random source/target key tables: markers of this key, of other keys and of no source
memory, copies, unmarked content as a multiset, scoped and unscoped, with and without
``foreign_copies``. Any rewrite of the SQL for speed must keep these counts."""

from __future__ import annotations

import random
from collections import Counter, defaultdict

import pyarrow as pa
import pytest

from longmem_etl.migrate.verify import SOURCE_KEYS, TARGET_KEYS, compare

_COUNTS = ("source", "target", "present", "missing", "duplicated", "extra", "unrelated")


def _model(src: list[tuple], tgt: list[tuple], mig: str | None, foreign: bool) -> list[dict]:
    """The rules, row by row (source rows: sid, coll, tag, fp; target rows: tid, coll, tag, fp,
    marker sid, marker key)."""
    groups: dict[tuple, Counter] = defaultdict(Counter)
    own = [t for t in tgt if t[4] is not None and (mig is None or t[5] == mig)]
    marker_n = Counter(t[4] for t in own)
    sids = {s[0] for s in src}
    unmatched = []
    for sid, coll, tag, fp in src:
        n = marker_n.get(sid, 0)
        if n:
            g = groups[(coll, tag)]
            g.update(source=1, present=1, duplicated=n - 1, target=n)
        else:
            unmatched.append((coll, tag, fp))
    free = [t for t in tgt if t[4] is None or (foreign and mig is not None and t[5] != mig)]
    sn = Counter(fp for _, _, fp in unmatched)
    tn = Counter(t[3] for t in free)
    where = {fp: (c, g) for c, g, fp in unmatched} | {t[3]: (t[1], t[2]) for t in free}
    all_fps = {s[3] for s in src}
    for fp in set(sn) | set(tn):
        a, b = sn.get(fp, 0), tn.get(fp, 0)
        known = b > 0 and fp in all_fps
        g = groups[where[fp]]
        g.update(source=a, present=min(a, b), missing=max(a - b, 0), target=b)
        if a > 0 or known:
            g.update(duplicated=max(b - a, 0))
        elif mig is None:
            g.update(extra=b)
        else:
            g.update(unrelated=b)
    for t in own:
        if t[4] not in sids:
            groups[(t[1], t[2])].update(target=1, **{"extra" if mig is None else "unrelated": 1})
    if mig is not None and not foreign:
        for t in tgt:
            if t[4] is not None and t[5] != mig:
                groups[(t[1], t[2])].update(target=1, unrelated=1)
    out = []
    for (coll, tag), c in groups.items():
        out.append({"collection": coll, "container_tag": tag, **{k: c.get(k, 0) for k in _COUNTS}})
    return sorted(
        out,
        key=lambda g: (g["collection"], g["container_tag"] is not None, g["container_tag"] or ""),
    )


def _tables(seed: int) -> tuple[list[tuple], list[tuple]]:
    r = random.Random(seed)
    places = [(c, t) for c in ("a", "b") for t in (None, "x")]
    # a fingerprint covers collection and tag (as the real one does): one place per content
    contents = [(*r.choice(places), f"fp{i}") for i in range(r.randrange(1, 7))]
    src = [(f"s{i}", *r.choice(contents)) for i in range(r.randrange(0, 25))]
    tgt = []
    for i in range(r.randrange(0, 35)):
        coll, tag, fp = r.choice(contents + [("b", None, "zz")])
        sid = key = None
        if r.random() < 0.6:
            sid = f"s{r.randrange(0, len(src) + 3)}"
            key = r.choice(["K", "K", "K", "O", None])
        tgt.append((f"t{i}", coll, tag, fp, sid, key))
    return src, tgt


@pytest.mark.parametrize("seed", range(60))
def test_compare_counts_what_the_rules_say(seed: int) -> None:
    src, tgt = _tables(seed)
    s = pa.Table.from_pylist(
        [dict(zip(SOURCE_KEYS.names, x, strict=True)) for x in src], schema=SOURCE_KEYS
    )
    t = pa.Table.from_pylist(
        [dict(zip(TARGET_KEYS.names, (*x, None, None), strict=True)) for x in tgt],
        schema=TARGET_KEYS,
    )
    for mig in (None, "K"):
        for foreign in (False, True):
            got = compare(s, t, migration_id=mig, foreign_copies=foreign)
            want = _model(src, tgt, mig, foreign)
            assert got.groups == want, (mig, foreign)
            exact = not any(g["missing"] or g["duplicated"] or g["extra"] for g in want)
            assert got.exact == exact
            firsts: dict[str, str] = {}
            for x in tgt:
                if x[4] is not None and (mig is None or x[5] == mig):
                    firsts[x[4]] = min(firsts.get(x[4], x[0]), x[0])
            pairs = {p["source_id"]: p["target_id"] for p in got.id_pairs.to_pylist()}
            assert pairs == firsts
