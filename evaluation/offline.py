"""Estimates of each target policy's top-1 and list CTR from a log (contract/ope.py's
estimators), with the learned LinUCB as the reward model of the doubly robust ones.

Targets:

- every shadow the impressions carry (``shadows``: the list that policy would have shown;
  deterministic, so its probability of a list is 1 or 0);
- ``random``: a uniformly random list of the products (no need to log it: its probabilities
  are known);
- ``popularity``: the k products clicked most so far in the log (ties: catalog order),
  computed while reading, from the events before each impression.

The reward model is LinUCB's ridge estimate ``theta . x`` (clipped to [0, 1]) of a model the
evaluation learns itself by replaying the log in time order with the contract's maths (the
job's rule: the clicked product reward 1, every other shown product 0). At each impression it
has learned only the impressions before it, so it is independent of that impression's outcome,
which is what keeps DR unbiased. (The job's own parameters in Redis have learned the whole log,
this impression included; using them would leak the outcome into the model.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from contract import ope
from evaluation.log import Logged

RANDOM, POPULARITY = ope.RANDOM, ope.POPULARITY


@dataclass
class _Rows:
    """Per-impression arrays of one target, appended while reading the log."""

    w: list[float] = field(default_factory=list)  # top-1 weight
    r: list[float] = field(default_factory=list)  # click on slot 1
    q_logged: list[float] = field(default_factory=list)
    q_target: list[float] = field(default_factory=list)
    W_prefix: list[np.ndarray] = field(default_factory=list)
    W_pos: list[np.ndarray] = field(default_factory=list)
    R: list[np.ndarray] = field(default_factory=list)  # first click one-hot (k,)
    Q_logged: list[np.ndarray] = field(default_factory=list)
    Q_target: list[np.ndarray] = field(default_factory=list)


# the shared replay (contract/ope.py): the job's in-stream step uses it too
ReplayModel = ope.ReplayModel


def evaluate(records: Sequence[Logged], product_ids: Sequence[str], dim: int, *,
             l2: float = 1.0, targets: Sequence[str] | None = None, n_boot: int = ope.N_BOOT,
             seed: int = 0) -> dict[str, Any]:
    """Estimates per target (every shadow seen, random and popularity unless ``targets``
    names which). Records must be in time order (evaluation.log returns them so)."""
    product_ids = list(product_ids)
    index = {p: i for i, p in enumerate(product_ids)}
    m = len(product_ids)
    model = ReplayModel(m, dim, l2)
    clicks_so_far = np.zeros(m)
    names = list(targets) if targets is not None else sorted(
        {s for r in records for s in r.shadows} | {RANDOM, POPULARITY})
    rows = {n: _Rows() for n in names}
    skipped: dict[str, int] = {}
    usable = added = 0
    logged_top1: list[float] = []
    logged_list: list[float] = []
    for rec in records:
        imp = rec.impression
        x = np.asarray(imp.x, dtype=np.float64)
        new = ope.new_products(imp.products, rec.shadows, index)
        if new:  # added to the live catalogue while the log was written: at the prior
            for p in new:
                index[p] = len(product_ids)
                product_ids.append(p)
            model.grow(len(new), l2)
            clicks_so_far = np.concatenate([clicks_so_far, np.zeros(len(new))])
            m = len(product_ids)
            added += len(new)
        items = [index[p] for p in imp.products]
        prefix, marg = _logging_probabilities(rec, m)
        if prefix is not None:
            usable += 1
            k = len(items)
            R = np.zeros(k)
            if rec.clicked is not None:
                R[rec.clicked] = 1.0
            logged_top1.append(R[0])
            logged_list.append(R.sum())
            q = model.predict(x)
            q_shown = q[items]
            Q_logged = ope.cascade_click_probabilities(q_shown[None])[0]
            for name in names:
                tgt = _target_list(name, rec, index, clicks_so_far, k)
                if tgt is None and name != RANDOM:
                    continue
                _append(rows[name], name, tgt, items, prefix, marg, R, q, Q_logged, m)
        else:
            skipped["no logging probabilities"] = skipped.get("no logging probabilities",
                                                              0) + 1
        model.learn(items, x, rec.clicks)
        for slot in rec.clicks:
            clicks_so_far[items[slot]] += 1
    out: dict[str, Any] = {
        "impressions": len(records), "usable": usable, "skipped": skipped,
        "products_added": added,
        "logged": {"top1_ctr": float(np.mean(logged_top1)) if logged_top1 else None,
                   "list_ctr": float(np.mean(logged_list)) if logged_list else None},
        "targets": {}}
    for i, name in enumerate(names):
        out["targets"][name] = _estimates(rows[name], n_boot, seed + i)
    return out


def _logging_probabilities(rec: Logged, m: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The logged prefix and slot probabilities, or those a uniformly random list has."""
    imp = rec.impression
    return ope.logging_probabilities(rec.prefix, rec.marginals, imp.policy,
                                     getattr(imp, "eligible_n", None), len(imp.products), m)


def _target_list(name: str, rec: Logged, index: dict[str, int], clicks: np.ndarray,
                 k: int) -> list[int] | None:
    return ope.target_list(name, rec.shadows, index, clicks, k)


def _append(rows: _Rows, name: str, tgt: list[int] | None, items: list[int],
            prefix: np.ndarray, marg: np.ndarray, R: np.ndarray, q: np.ndarray,
            Q_logged: np.ndarray, m: int) -> None:
    k = len(items)
    w, q_target = ope.top1_terms(tgt, items, prefix[0], q)
    rows.w.append(w)
    rows.q_target.append(q_target)
    if tgt is None:  # uniformly random over the m products
        pi_prefix = np.cumprod(1.0 / (m - np.arange(k)))
        rows.W_prefix.append(pi_prefix / prefix)
        rows.W_pos.append((1.0 / m) / marg)
        # E over the next product (uniform among those not above) of P(click at slot j)
        q_shown = q[items]
        above = np.concatenate(([0.0], np.cumsum(q_shown)[:-1]))
        survive = np.concatenate(([1.0], np.cumprod(1.0 - q_shown)[:-1]))
        rows.Q_target.append(survive * (q.sum() - above) / (m - np.arange(k)))
    else:
        same = np.asarray(tgt) == np.asarray(items)
        rows.W_prefix.append(np.cumprod(same) / prefix)
        rows.W_pos.append(same / marg)
        rows.Q_target.append(ope.cascade_click_probabilities(q[tgt][None])[0])
    rows.r.append(R[0])
    rows.q_logged.append(float(q[items[0]]))
    rows.R.append(R)
    rows.Q_logged.append(Q_logged)


def _estimates(rows: _Rows, n_boot: int, seed: int) -> dict[str, Any]:
    if not rows.w:
        return {"n": 0}
    w, r = np.asarray(rows.w), np.asarray(rows.r)
    Wp, Wpos = np.asarray(rows.W_prefix), np.asarray(rows.W_pos)
    R, Ql, Qt = np.asarray(rows.R), np.asarray(rows.Q_logged), np.asarray(rows.Q_target)
    r_any = R.sum(axis=1)
    kw = {"n_boot": n_boot, "seed": seed}
    return {
        "n": int(w.size),
        "top1": {"ips": ope.ips(w, r, **kw).to_dict(),
                 "snips": ope.snips(w, r, **kw).to_dict(),
                 "dr": ope.dr(w, r, np.asarray(rows.q_logged), np.asarray(rows.q_target),
                              **kw).to_dict()},
        "list": {"ips": ope.ips(Wp[:, -1], r_any, **kw).to_dict(),
                 "snips": ope.snips(Wp[:, -1], r_any, **kw).to_dict(),
                 "dr": ope.cascade_dr(Wp, R, Ql, Qt, **kw).to_dict(),
                 "slate": ope.cascade_ips(Wp, R, **kw).to_dict(),
                 "position": ope.position_ips(Wpos, R, **kw).to_dict()},
    }


def table(result: dict[str, Any]) -> str:
    """The estimates as a text table: one line per target, metric and estimator."""
    lines = [f"impressions {result['impressions']}, with logging probabilities "
             f"{result['usable']}; skipped {result['skipped'] or 'none'}"]
    logged = result["logged"]
    if logged["top1_ctr"] is not None:
        lines.append(f"logging policy (on-policy): top-1 CTR {logged['top1_ctr']:.4f}, "
                     f"list CTR {logged['list_ctr']:.4f}")
    lines.append(f"{'target':<18} {'metric':<6} {'estimator':<9} {'estimate':>9} "
                 f"{'95% CI':>19} {'ESS':>9} {'matched':>8}")
    for name, t in result["targets"].items():
        if not t.get("n"):
            lines.append(f"{name:<18} no impression to evaluate it on")
            continue
        for metric in ("top1", "list"):
            for est, e in t[metric].items():
                lines.append(f"{name:<18} {metric:<6} {est:<9} {e['estimate']:>9.4f} "
                             f"[{e['ci_low']:>7.4f}, {e['ci_high']:>7.4f}] {e['ess']:>9.1f} "
                             f"{e['matched']:>8d}")
    return "\n".join(lines)
