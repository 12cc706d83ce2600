"""Ranking policies: which k products to show, their scores, and the ranking's probability.

- ``linucb``: top-k by the upper confidence bound with ``alpha`` (explores uncertain products);
- ``greedy``: the same with alpha = 0 (exploits the mean estimate only);
- ``random``: k products drawn uniformly without replacement, in draw order.

The probability of the shown ranking ("propensity") is logged in every impression so that
policies can be compared off-line by inverse propensity scoring: 1.0 for the deterministic
policies, and ``1 / (m (m-1) ... (m-k+1))`` for random (each ordered k-subset is equally
likely). For random the logged scores are the LinUCB scores of the shown products (what the
model thought of them), so its impressions are comparable with the others.

>>> ranking_propensity("random", m=4, k=2)
0.08333333333333333
>>> ranking_propensity("linucb", m=4, k=2)
1.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from contract.config import POLICIES
from contract.linucb import top_k
from serving.errors import UnknownPolicyError

__all__ = ["POLICIES", "Ranking", "UnknownPolicyError", "check_policy", "rank",
           "ranking_propensity"]


@dataclass(frozen=True)
class Ranking:
    """Indices into the snapshot (best first), their scores and the ranking's probability."""

    indices: np.ndarray  # (k,) int
    scores: np.ndarray  # (k,) float64
    propensity: float | None


def ranking_propensity(policy: str, m: int, k: int) -> float | None:
    """Probability that ``policy`` shows one particular ordered list of k of m products.

    ``None`` when it is below what a float holds (e.g. k = 100 of 100,000): the impression
    then says "undefined" rather than a wrong 0.
    """
    check_policy(policy)
    if policy != "random":
        return 1.0
    k = min(k, m)
    if k <= 0:
        return 1.0
    n = math.perm(m, k)
    return 1.0 / n if n < 1e300 else None


def check_policy(policy: str) -> None:
    if policy not in POLICIES:
        raise UnknownPolicyError(f"policy: {policy!r} is not one of {', '.join(POLICIES)}")


def rank(policy: str, scores_fn, m: int, x: np.ndarray, k: int, alpha: float,  # type: ignore[no-untyped-def]
         rng: np.random.Generator) -> Ranking:
    """Rank m products for context x. ``scores_fn(x, alpha) -> (m,)`` scores all of them."""
    check_policy(policy)
    k = min(k, m)
    if policy == "random":
        idx = rng.choice(m, size=k, replace=False) if k else np.empty(0, dtype=np.int64)
        scores = scores_fn(x, alpha)[idx]
        return Ranking(idx, scores, ranking_propensity(policy, m, k))
    scores = scores_fn(x, 0.0 if policy == "greedy" else alpha)
    idx = top_k(scores, k)
    return Ranking(idx, scores[idx], 1.0)
