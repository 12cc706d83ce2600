"""The plain path's faster steps give the numbers the straightforward ones gave: the top-k
order (no ties: one order; ties: the same seeded draw), and the calibrated alpha."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from contract import exploration
from contract.config import Settings
from contract.linucb import top_k
from serving import Recommender, Snapshot
from serving.controls import top_desc


def _reference_top_desc(scores: np.ndarray, n: int,
                        rng: Callable[[], np.random.Generator]) -> np.ndarray:
    """top_desc as it was before its no-tie fast path (serving/controls.py, 2026-12-01)."""
    idx = top_k(scores, n)
    if idx.size == 0:
        return idx
    s = scores[idx]
    last = s[-1]
    boundary_ties = idx.size < scores.shape[0] and np.count_nonzero(scores == last) > \
        np.count_nonzero(s == last)
    if not boundary_ties and (idx.size < 2 or not (s[1:] == s[:-1]).any()):
        return idx
    g = rng()
    if boundary_ties:
        above = idx[s > last]
        tied = np.flatnonzero(scores == last)
        idx = np.concatenate([above, g.choice(tied, idx.size - above.size, replace=False)])
    order = np.lexsort((g.random(idx.size), -scores[idx]))
    return idx[order]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_top_desc_equals_the_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(300):
        m = int(rng.integers(1, 60))
        scores = rng.normal(size=m)
        kind = rng.integers(4)
        if kind == 1:  # ties everywhere
            scores = np.round(scores, 0)
        elif kind == 2:  # masked products, as the controls' -inf
            scores[rng.uniform(size=m) < 0.5] = -np.inf
        elif kind == 3:  # a NaN
            scores[rng.integers(m)] = np.nan
        n = int(rng.integers(1, 12))
        draw = int(rng.integers(2**32))
        got = top_desc(scores, n, lambda d=draw: np.random.default_rng(d))
        want = _reference_top_desc(scores, n, lambda d=draw: np.random.default_rng(d))
        assert got.tolist() == want.tolist() and got.dtype == want.dtype, (scores, n)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_calibrated_alpha_equals_the_contracts(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ids = [f"p{i:02d}" for i in range(12)]
    G = rng.normal(0, 0.3, (12, 15, 15))
    snap = Snapshot(ids, rng.normal(0, 0.1, (12, 15)),
                    np.linalg.inv(np.eye(15) + G @ G.transpose(0, 2, 1)),
                    np.full(12, 9), np.zeros(12, dtype=np.int64),
                    observations=np.full(12, 7))
    rec = Recommender(Settings.from_env({}), snapshot=snap, seed=0)
    counts = snap.learned_counts(1.0)
    for scale in (1.0, 1e-300, 1e-3, 1e3, 1e200):
        for _ in range(20):
            x = rng.uniform(0, 1, 15) * scale
            x[rng.uniform(size=15) < 0.3] = 0.0
            assert rec._calibrated_alpha(snap, x) == \
                exploration.calibrated_alpha(*counts, x, 1.0)
    assert rec._calibrated_alpha(snap, np.zeros(15)) == 0.0
    with pytest.raises(exploration.ExplorationError, match="not finite"):
        rec._calibrated_alpha(snap, np.full(15, np.inf))
