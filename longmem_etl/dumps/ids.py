"""The ids seen so far in a dump, in 16 bytes each: the duplicate-id check across all its batches.

A Python set of id strings costs ~110 bytes per id (the string and its slot), which made the
streaming paths grow past their memory bound at a few million memories. Here each id is kept as a
128-bit fingerprint (two 64-bit keyed SipHash values: Python's own ``hash`` of the id and of the id
behind a NUL) in sorted NumPy runs that merge like a binary counter; a batch is checked with one
vectorised binary search per run. Two different ids share a fingerprint with probability about
n²/2^129 (1e-21 for a billion ids), and since the hash key is random per process (unless
PYTHONHASHSEED is set) no dump can aim for a collision. Fingerprints are only comparable within
one process: one ``IdIndex`` lives in the process that checks every batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# A run is not merged into one bigger than this (entries): merging copies both runs, so the cap
# bounds the transient memory of a merge (2 x 16 bytes x MAX_RUN) at the cost of a few more
# binary searches per batch on very big dumps.
MAX_RUN = 1 << 22


def fingerprints(ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(hi, lo)`` int64 fingerprints of ``ids`` (valid in this process only)."""
    n = len(ids)
    hi = np.fromiter(map(hash, ids), dtype=np.int64, count=n)
    lo = np.fromiter(map(hash, map("\x00".__add__, ids)), dtype=np.int64, count=n)
    return hi, lo


class IdIndex:
    """Sorted runs of fingerprints. ``repeats(ids)`` is the one call a caller needs."""

    def __init__(self) -> None:
        self._runs: list[tuple[np.ndarray, np.ndarray]] = []  # (hi sorted, lo in the same order)

    def __len__(self) -> int:
        return sum(len(hi) for hi, _ in self._runs)

    @property
    def nbytes(self) -> int:
        return sum(hi.nbytes + lo.nbytes for hi, lo in self._runs)

    def repeats(self, ids: Sequence[str]) -> np.ndarray:
        """Boolean mask over ``ids``: already seen, or equal to an earlier id of the batch (the
        first one wins); every other id is remembered from now on."""
        hi, lo = fingerprints(ids)
        # one stable sort serves all three steps: binary searches with sorted needles are
        # cache-friendly, equal ids end up adjacent (earliest first), and the new run is sorted
        order = np.lexsort((lo, hi))
        hi, lo = hi[order], lo[order]
        repeat = self.check(hi, lo)
        if len(hi) > 1:
            repeat[1:] |= (hi[1:] == hi[:-1]) & (lo[1:] == lo[:-1])
        self._push(hi[~repeat], lo[~repeat])
        out = np.empty_like(repeat)
        out[order] = repeat
        return out

    def check(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        """Boolean mask: which fingerprints are already in the index."""
        seen = np.zeros(len(hi), dtype=bool)
        for run_hi, run_lo in self._runs:
            at = np.minimum(np.searchsorted(run_hi, hi), len(run_hi) - 1)
            hit = run_hi[at] == hi
            if not hit.any():
                continue
            exact = hit & (run_lo[at] == lo)
            seen |= exact
            # equal hi with a different lo: look along the run of equal hi values (~never happens)
            for i in np.flatnonzero(hit & ~exact).tolist():
                j = at[i] + 1
                while j < len(run_hi) and run_hi[j] == hi[i]:
                    if run_lo[j] == lo[i]:
                        seen[i] = True
                        break
                    j += 1
        return seen

    def _push(self, hi: np.ndarray, lo: np.ndarray) -> None:
        """Add a sorted run, then merge runs like a binary counter (up to ``MAX_RUN``)."""
        if not len(hi):
            return
        runs = self._runs
        runs.append((hi, lo))
        while len(runs) > 1 and len(runs[-2][0]) <= 2 * len(runs[-1][0]):
            if len(runs[-2][0]) + len(runs[-1][0]) > MAX_RUN:
                break
            (a_hi, a_lo), (b_hi, b_lo) = runs[-2], runs[-1]
            runs[-2:] = [_merge(a_hi, a_lo, b_hi, b_lo)]


def _merge(
    a_hi: np.ndarray, a_lo: np.ndarray, b_hi: np.ndarray, b_lo: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Two sorted runs as one (a linear merge: each b lands after the a's not greater than it)."""
    at = np.searchsorted(a_hi, b_hi, side="right") + np.arange(len(b_hi))
    hi = np.empty(len(a_hi) + len(b_hi), dtype=a_hi.dtype)
    lo = np.empty_like(hi)
    from_a = np.ones(len(hi), dtype=bool)
    from_a[at] = False
    hi[at], lo[at] = b_hi, b_lo
    hi[from_a], lo[from_a] = a_hi, a_lo
    return hi, lo
