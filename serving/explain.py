"""Why a product is where it is: per-item explanations (``explain=true``) and one product's
model summary (``GET /products/{id}``), read from the snapshot the request used.

An item's score is the sum of its explanation's terms, to rounding::

    score = expected_reward + exploration_bonus + popularity + boost

``expected_reward`` is theta.x, itself the sum of the per-feature contributions theta_i * x_i
(the largest by magnitude are named, the others summed in ``other_features``);
``exploration_bonus`` is alpha * sqrt(x' A^-1 x), or w * x' A^-1 x under the decaying and
category rules (w per product under category_ucb and category_rate: its category's rate
q_c(x), plus one standard deviation under category_ucb, times l2 / x'x,
docs/EXPLORATION.md); ``popularity`` the fallback term of a product without parameters
(:class:`serving.health.Popularity`); ``boost`` what the
merchandising boosts added (:mod:`serving.controls`).

>>> from serving.snapshot import Snapshot
>>> snap = Snapshot.prior(["p0", "p1"], dim=2, l2=1.0)
>>> e = explain_items(snap, np.array([3.0, 4.0]), np.array([1]), 0.5, np.array([2.5]))[0]
>>> e["expected_reward"], e["exploration_bonus"], e["observations"]
(0.0, 2.5, 0)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from serving.snapshot import GroupWeights, Snapshot

__all__ = ["explain_items", "feature_names", "product_summary"]

TOP_FEATURES = 3


def feature_names(dim: int) -> tuple[str, ...]:
    """The feature spec's column names when x is the feature space's (the spec in use for
    this d: contract.context_spec.names_for), else x0, x1, ..."""
    from contract.context_spec import names_for

    return names_for(dim) or tuple(f"x{i}" for i in range(dim))


def _top(values: np.ndarray, names: Sequence[str], n: int) -> list[dict[str, Any]]:
    order = np.argsort(-np.abs(values), kind="stable")[:n]
    return [{"name": names[i], "value": float(values[i])} for i in order]


def explain_items(snap: Snapshot, x: np.ndarray, indices: np.ndarray, alpha: float,
                  scores: np.ndarray, popularity: np.ndarray | None = None,
                  boosts: np.ndarray | None = None, now_ms: int | None = None,
                  unit_weight: float | np.ndarray | GroupWeights = 0.0
                  ) -> list[dict[str, Any]]:
    """One explanation per shown index. ``scores`` are the shown scores, ``popularity`` the
    (m,) fallback term, ``boosts`` what boosting added to each shown score, ``unit_weight``
    the variance rules' weight of ``u^T A^-1 u`` with u = x / |x| (their bonus, computed on u
    as serving ranks with it, so an x whose x.x underflows still gets a finite bonus;
    docs/EXPLORATION.md), one float or, under a category rule, one per product (an array or
    :class:`~serving.snapshot.GroupWeights`, indexed like ``popularity``); every term is
    computed on its own (tests/serving check that they add up
    to the score)."""
    now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    names = feature_names(snap.dim)
    top = float(np.abs(x).max()) if x.size else 0.0
    u = x / (top * float(np.sqrt((x / top) @ (x / top)))) if top > 0 else x
    out = []
    for j, i in enumerate(indices.tolist()):
        theta = snap.theta(i)
        contrib = theta * x
        mean = float(contrib.sum())
        var = float(x @ snap.A_inv(i) @ x)
        bonus = alpha * float(np.sqrt(max(var, 0.0))) if alpha else 0.0
        w = unit_weight if isinstance(unit_weight, float | int) else float(unit_weight[i])
        if w:
            bonus += w * max(float(u @ snap.A_inv(i) @ u), 0.0)
        pop = float(popularity[i]) if popularity is not None else 0.0
        top = _top(contrib, names, TOP_FEATURES)
        updated = int(snap.updated_at_ms[i])
        version = int(snap.versions[i])
        out.append({
            "product_id": snap.product_ids[i], "score": float(scores[j]),
            "expected_reward": mean, "exploration_bonus": bonus, "popularity": pop,
            "boost": float(boosts[j]) if boosts is not None else 0.0,
            "observations": int(snap.observations[i]),  # type: ignore[index]
            "clicks": version - int(snap.observations[i]),  # type: ignore[index]
            "parameter_version": version,
            "parameter_age_s": (now_ms - updated) / 1000.0 if version else None,
            "top_features": top,
            "other_features": mean - sum(t["value"] for t in top),
        })
    return out


def product_summary(snap: Snapshot, product_id: str, *, shown: int = 0, clicked: int = 0,
                    category: str | None = None, in_stock: bool = True,
                    now_ms: int | None = None) -> dict[str, Any] | None:
    """One product's model (None: not in the catalog): observations n, clicks learned, CTR,
    last update, and its largest weights theta_i by feature name; ``shown``/``clicked`` are
    this replica's own counts."""
    i = snap.index(product_id)
    if i is None:
        return None
    now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    version = int(snap.versions[i])
    n = int(snap.observations[i])  # type: ignore[index]
    clicks = version - n
    updated = int(snap.updated_at_ms[i])
    return {
        "product_id": product_id, "category": category, "in_stock": in_stock,
        "observations": n, "clicks": clicks, "ctr": clicks / n if n else None,
        "parameter_version": version,
        "last_update_ms": updated if version else None,
        "parameter_age_s": (now_ms - updated) / 1000.0 if version else None,
        "top_features": _top(snap.theta(i), feature_names(snap.dim), 5),
        "served": {"shown": shown, "clicks": clicked, "ctr": clicked / shown if shown else None},
    }
