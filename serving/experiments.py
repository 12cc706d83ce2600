"""Serving's side of an experiment (docs/EXPERIMENTS.md): which variant serves a user, the
variant's ranking with the probabilities it logs, the shadows' would-be lists, and the
impressions, clicks and CTR (with a Wilson 95% interval) per variant for /metrics.

The configuration and the assignment are the contract's (:mod:`contract.experiments`); the
Plackett-Luce sampling and its probabilities are :mod:`contract.slates`. Nothing here touches
the network: a request pays the variant's ranking, the shadows' (one score vector and a top-k
each) and, for ``plackett_luce``, the slot marginals.

>>> from contract.experiments import Experiment
>>> exp = Experiment.from_dict({"name": "e", "salt": "s", "variants": [
...     {"name": "pl", "policy": "plackett_luce", "temperature": 0.1, "share": 1.0}],
...     "shadows": [{"name": "g", "policy": "greedy"}]})
>>> run = ExperimentRunner(exp, default_alpha=1.0)
>>> scores = lambda x, alpha: np.array([0.3, 0.1, 0.2]) + alpha * 0.0
>>> r = run.rank(run.assign(7), scores, 3, np.ones(2), 2, np.random.default_rng(1))
>>> len(r.indices), round(float(r.prefix[-1]), 12) == round(r.propensity, 12)
(2, True)
>>> run.shadows(scores, np.ones(2), 2, ["a", "b", "c"])
{'g': ('a', 'c')}
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from contract.experiments import PLACKETT_LUCE, Experiment, Variant
from contract.linucb import top_k
from contract.slates import PlackettLuce

# scores of every product for context x at an alpha; None: the exploration rule's
# (RTREC_EXPLORATION, docs/EXPLORATION.md), for a variant or shadow that names no alpha
ScoresFn = Callable[[np.ndarray, float | None], np.ndarray]
Z95 = 1.959963984540054


@dataclass(frozen=True)
class Ranked:
    """A variant's list: indices into the scored products (best first), their scores, the
    list's probability and, per slot, the prefix and marginal probabilities (None for a
    deterministic policy: probability 1, and nothing else to say)."""

    indices: np.ndarray
    scores: np.ndarray
    propensity: float | None
    prefix: np.ndarray | None
    slots: np.ndarray | None


def wilson(clicks: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion (sound at 0 and n, unlike the normal one).

    >>> [round(v, 4) for v in wilson(0, 10)]
    [0.0, 0.2775]
    """
    if n <= 0:
        return (0.0, 1.0)
    p = clicks / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


class ExperimentRunner:
    """One experiment's assignment, rankings, shadows and per-variant counters."""

    def __init__(self, experiment: Experiment, default_alpha: float | None) -> None:
        """``default_alpha``: the alpha of a variant or shadow that names none; None when
        the exploration rule decides (the scores function then gets None)."""
        self.experiment = experiment
        self.default_alpha = default_alpha
        self._lock = threading.Lock()
        self.impressions = {v.name: 0 for v in experiment.variants}
        self.clicks = {v.name: 0 for v in experiment.variants}

    def assign(self, user_id: int) -> Variant:
        return self.experiment.assign(user_id)

    def alpha(self, v: Variant) -> float | None:
        return self.default_alpha if v.alpha is None else v.alpha

    def rank(self, v: Variant, scores_fn: ScoresFn, m: int, x: np.ndarray, k: int,
             rng: np.random.Generator, eligible: np.ndarray | None = None) -> Ranked:
        """The variant's list of ``min(k, m)`` (of the ``eligible`` indices when given)."""
        pool = np.arange(m) if eligible is None else np.asarray(eligible, dtype=np.int64)
        n = int(pool.size)
        k = min(k, n)
        if v.policy == "random":
            pos = rng.choice(n, size=k, replace=False)
            idx = pool[pos]
            prefix = np.cumprod(1.0 / (n - np.arange(k)))
            return Ranked(idx, scores_fn(x, self.alpha(v))[idx], _prob(prefix[-1]), prefix,
                          np.full(k, 1.0 / n))
        alpha = 0.0 if v.policy == "greedy" else self.alpha(v)
        scores = scores_fn(x, alpha)[pool]
        if v.policy == PLACKETT_LUCE:
            pl = PlackettLuce(scores, v.temperature or 1.0, v.epsilon or 0.0)
            pos = pl.sample(k, rng)
            prefix = pl.prefix_probabilities(pos)
            return Ranked(pool[pos], scores[pos], _prob(prefix[-1]), prefix,
                          pl.slot_marginals(pos))
        pos = top_k(scores, k)
        return Ranked(pool[pos], scores[pos], 1.0, None, None)

    def shadows(self, scores_fn: ScoresFn, x: np.ndarray, k: int,
                product_ids: Sequence[str], eligible: np.ndarray | None = None
                ) -> dict[str, tuple[str, ...]]:
        """Each shadow's would-be list (product ids), to log with the impression."""
        out: dict[str, tuple[str, ...]] = {}
        for s in self.experiment.shadows:
            scores = scores_fn(x, 0.0 if s.policy == "greedy" else self.alpha(s))
            if eligible is None:
                idx = top_k(scores, k)
            else:
                pool = np.asarray(eligible, dtype=np.int64)
                idx = pool[top_k(scores[pool], k)]
            out[s.name] = tuple(product_ids[i] for i in idx.tolist())
        return out

    # --- counters ------------------------------------------------------------------------
    def count_impression(self, variant: str) -> None:
        with self._lock:
            self.impressions[variant] += 1

    def count_click(self, variant: str) -> None:
        with self._lock:
            if variant in self.clicks:
                self.clicks[variant] += 1

    def report(self) -> dict[str, dict[str, float | int]]:
        """Per variant: impressions, clicks, CTR and its Wilson 95% interval."""
        with self._lock:
            imps, clicks = dict(self.impressions), dict(self.clicks)
        out: dict[str, dict[str, float | int]] = {}
        for name, n in imps.items():
            c = clicks[name]
            lo, hi = wilson(c, n)
            out[name] = {"impressions": n, "clicks": c, "ctr": c / n if n else 0.0,
                         "ctr_low": lo, "ctr_high": hi}
        return out

    def metric_families(self) -> Iterator[object]:
        """Prometheus families for serving's collector (read at scrape time)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        labels = ["experiment", "variant"]
        imps = CounterMetricFamily("rtrec_experiment_impressions", "Impressions per variant.",
                                   labels=labels)
        clicks = CounterMetricFamily("rtrec_experiment_clicks", "Clicks per variant (a "
                                     "repeated click on one shown product counted once).",
                                     labels=labels)
        ctr = GaugeMetricFamily("rtrec_experiment_ctr", "Clicks / impressions per variant, "
                                "with its Wilson 95% interval (bound label: low, high).",
                                labels=[*labels, "bound"])
        for name, r in self.report().items():
            lab = [self.experiment.name, name]
            imps.add_metric(lab, r["impressions"])
            clicks.add_metric(lab, r["clicks"])
            ctr.add_metric([*lab, "estimate"], r["ctr"])
            ctr.add_metric([*lab, "low"], r["ctr_low"])
            ctr.add_metric([*lab, "high"], r["ctr_high"])
        yield imps
        yield clicks
        yield ctr


def _prob(p: float) -> float | None:
    """A list probability the event can carry: (0, 1], else None (below a float)."""
    return float(p) if 0.0 < p <= 1.0 else None
