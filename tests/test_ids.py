"""dumps.ids.IdIndex against a Python set: same answers batch after batch (runs merging and capped),
and exact when fingerprints collide on their high half."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from longmem_etl.dumps import ids as ids_mod
from longmem_etl.dumps.ids import IdIndex


def _reference(batches: list[list[str]]) -> list[list[bool]]:
    seen: set[str] = set()
    out = []
    for batch in batches:
        mask = []
        for ident in batch:
            mask.append(ident in seen)
            seen.add(ident)
        out.append(mask)
    return out


batches_st = st.lists(
    st.lists(st.text(alphabet="abcde", min_size=1, max_size=3), max_size=30), max_size=25
)


@settings(max_examples=150, deadline=None)
@given(batches=batches_st, max_run=st.sampled_from([4, 16, 1 << 22]))
def test_repeats_match_a_set(batches, max_run):
    old = ids_mod.MAX_RUN
    ids_mod.MAX_RUN = max_run  # small caps exercise merging stopping early
    try:
        index = IdIndex()
        got = [index.repeats(batch).tolist() for batch in batches]
    finally:
        ids_mod.MAX_RUN = old
    assert got == _reference(batches)
    assert len(index) == len({i for b in batches for i in b})


def test_many_runs_stay_sorted_and_bounded():
    index = IdIndex()
    rng = np.random.default_rng(7)
    all_ids = [f"id-{k}" for k in rng.permutation(50_000)]
    for i in range(0, len(all_ids), 1_000):
        assert not index.repeats(all_ids[i : i + 1_000]).any()
    assert len(index) == 50_000 and index.nbytes == 50_000 * 16
    assert len(index._runs) <= 16  # merged like a binary counter
    for hi, _ in index._runs:
        assert (np.diff(hi) >= 0).all()
    again = index.repeats(all_ids[::7] + ["new"])
    assert again[:-1].all() and not again[-1]


def test_equal_high_halves_are_told_apart_by_the_low_half(monkeypatch):
    def colliding(ids):  # every id gets the same high half: only the low half differs
        hi = np.zeros(len(ids), dtype=np.int64)
        lo = np.array([hash(i) for i in ids], dtype=np.int64)
        return hi, lo

    monkeypatch.setattr(ids_mod, "fingerprints", colliding)
    index = IdIndex()
    assert index.repeats(["a", "b", "c"]).tolist() == [False, False, False]
    assert index.repeats(["c", "d", "a", "d"]).tolist() == [True, False, True, True]
    assert index.repeats(["e", "b"]).tolist() == [False, True]
