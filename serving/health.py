"""Product health and the fallback's popularity term: what this replica saw of each product.

:class:`ProductHealth` keeps, per product, when it was last shown and how often it was shown
and clicked here (three numpy arrays updated by index: no per-product loop on a request), and
how many answers the exploration bonus drove (the first shown product is not the eligible
product of highest expected reward). :meth:`ProductHealth.report` turns them, with the
snapshot, into the report of ``GET /health/products``, ``/metrics`` and ``python -m serving
health``: products never shown in the window (``RTREC_HEALTH_WINDOW_S``), products shown in
it whose parameters are older than ``RTREC_STALE_PARAMS_S`` (the learner is not keeping up
with them), the exploration share and per-product CTR.

:class:`Popularity` is the fallback's term: a product without parameters (the prior) scores
``prior + RTREC_POPULARITY_WEIGHT * log(1 + clicks) / log(1 + max clicks)``, from the last
clicks known for it (:attr:`Snapshot.clicks`, kept when a wipe or rollback takes its
parameters away), so such products are not all tied.

>>> h = ProductHealth(3)
>>> h.shown(np.array([0, 2]), now_s=100.0, explored=False)
>>> h.clicked(2)
>>> h.shown_count.tolist(), h.click_count.tolist()
([1, 0, 1], [0, 0, 1])
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from serving.snapshot import Snapshot

__all__ = ["Popularity", "ProductHealth", "metric_families"]


class ProductHealth:
    """Counters of one replica (reset at restart; Prometheus keeps their history)."""

    def __init__(self, m: int) -> None:
        self.last_shown = np.full(m, -np.inf)  # time.time() seconds
        self.shown_count = np.zeros(m, dtype=np.int64)
        self.click_count = np.zeros(m, dtype=np.int64)
        self.answers = 0  # linucb answers with a positive alpha
        self.explored = 0  # of those, the first product chosen by the bonus
        self.started = time.time()
        self._lock = threading.Lock()

    def shown(self, indices: np.ndarray, now_s: float, explored: bool | None) -> None:
        """One answer showed ``indices`` (distinct); ``explored`` None: not a bonus answer."""
        with self._lock:
            self.last_shown[indices] = now_s
            self.shown_count[indices] += 1
            if explored is not None:
                self.answers += 1
                self.explored += int(explored)

    def clicked(self, index: int) -> None:
        with self._lock:
            self.click_count[index] += 1

    def ensure(self, m: int) -> None:
        """Room for ``m`` products (new catalog products at the end): done before the
        snapshot and the catalog index grow, so an answer never holds an index past these."""
        with self._lock:
            k = m - self.last_shown.size
            if k <= 0:
                return
            self.last_shown = np.concatenate([self.last_shown, np.full(k, -np.inf)])
            self.shown_count = np.concatenate([self.shown_count, np.zeros(k, dtype=np.int64)])
            self.click_count = np.concatenate([self.click_count, np.zeros(k, dtype=np.int64)])

    def report(self, snap: Snapshot, window_s: float, stale_s: float,
               now_s: float | None = None) -> dict[str, Any]:
        """The health report (JSON-able); products in the snapshot's order."""
        now_s = time.time() if now_s is None else now_s
        with self._lock:
            last, shown, clicks = (self.last_shown.copy(), self.shown_count.copy(),
                                   self.click_count.copy())
            answers, explored = self.answers, self.explored
        ids = snap.product_ids
        n = len(ids)  # the counters may already hold products the snapshot has not added yet
        last, shown, clicks = last[:n], shown[:n], clicks[:n]
        recent = last >= now_s - window_s
        has = snap.versions > 0
        age_s = np.where(has, now_s - snap.updated_at_ms / 1000.0, np.inf)
        stale = recent & has & (age_s > stale_s)
        ctr = np.divide(clicks, shown, out=np.zeros(len(ids)), where=shown > 0)
        learned_n = snap.observations
        return {
            "window_s": window_s, "stale_params_s": stale_s,
            "uptime_s": now_s - self.started,
            "products": len(ids),
            "never_shown_in_window": [ids[i] for i in np.flatnonzero(~recent)],
            "stale_params": [ids[i] for i in np.flatnonzero(stale)],
            "without_params": int(np.count_nonzero(~has)),
            "answers": answers, "exploration_driven": explored,
            "exploration_share": explored / answers if answers else None,
            "per_product": [
                {"product_id": ids[i], "shown": int(shown[i]), "clicks": int(clicks[i]),
                 "ctr": float(ctr[i]) if shown[i] else None,
                 "learned_observations": int(learned_n[i]),  # type: ignore[index]
                 "learned_clicks": int(snap.versions[i] - learned_n[i]),  # type: ignore[index]
                 "params_age_s": float(age_s[i]) if has[i] else None}
                for i in range(len(ids))],
        }


class Popularity:
    """The fallback's popularity term per snapshot (recomputed only when the snapshot object
    changes: the refresher swaps it at most every probe)."""

    def __init__(self, m: int, weight: float) -> None:
        self.weight = weight
        self.known = np.zeros(m, dtype=np.int64)  # the most clicks ever seen per product
        # (snapshot generation, its term) as ONE reference: requests of several threads read
        # it; the generation, not the snapshot: holding the snapshot pins its rows
        self._cached: tuple[int | None, np.ndarray | None] = (None, None)

    def term(self, snap: Snapshot) -> np.ndarray | None:
        """(m,) added to the scores, non-zero only for products without parameters; None when
        it would add nothing (the usual case once every product has parameters). Safe from
        several request threads, whose snapshots may differ in length while products are
        added to the live catalog."""
        generation, cached = self._cached
        if snap.generation == generation:
            return cached
        n = len(snap)
        seen = self.known  # one read: another thread may swap it meanwhile
        if seen.size < n:  # products added to the catalog: none clicked yet
            seen = np.concatenate([seen, np.zeros(n - seen.size, np.int64)])
        known = np.maximum(seen[:n], snap.clicks)
        if seen.size > n:  # an older snapshot than another thread's: keep the longer counts
            grown = seen.copy()
            grown[:n] = known
            self.known = grown
        else:
            self.known = known
        term = None
        if snap.prior_count > 0:  # else every product has parameters: nothing to add
            prior = snap.versions == 0
            top = int(known.max()) if known.size else 0
            if self.weight > 0 and top > 0 and bool((known[prior] > 0).any()):
                term = np.log1p(known) * (self.weight / np.log1p(top))
                term[~prior] = 0.0
        self._cached = (snap.generation, term)
        return term


def metric_families(rec: Any) -> Iterator[Any]:
    """The health report as Prometheus families, read at scrape time by
    :class:`serving.metrics.Collector`; ``rec`` is the recommender."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    sv = rec.settings.serving
    snap = rec.snapshot
    rep = rec.product_health.report(snap, sv.health_window_s, sv.stale_params_s)
    yield GaugeMetricFamily("rtrec_serving_products_never_shown",
                            "Products this replica did not show within RTREC_HEALTH_WINDOW_S.",
                            value=len(rep["never_shown_in_window"]))
    yield GaugeMetricFamily("rtrec_serving_products_stale_params",
                            "Products shown within the window whose parameters are older than "
                            "RTREC_STALE_PARAMS_S.", value=len(rep["stale_params"]))
    answers = CounterMetricFamily("rtrec_serving_bonus_answers", "linucb answers (alpha > 0) "
                                  "by whether the exploration bonus chose the first product.",
                                  labels=["explored"])
    answers.add_metric(["yes"], rep["exploration_driven"])
    answers.add_metric(["no"], rep["answers"] - rep["exploration_driven"])
    yield answers
    yield GaugeMetricFamily("rtrec_serving_exploration_share", "Share of linucb answers whose "
                            "first product the exploration bonus chose (0 before any).",
                            value=rep["exploration_share"] or 0.0)
    shown = CounterMetricFamily("rtrec_serving_product_shown", "Times each product was shown.",
                                labels=["product_id"])
    clicks = CounterMetricFamily("rtrec_serving_product_clicks", "Clicks on each product shown "
                                 "by this replica.", labels=["product_id"])
    ctr = GaugeMetricFamily("rtrec_serving_product_ctr", "Clicks per showing of each product "
                            "(0 when never shown).", labels=["product_id"])
    for p in rep["per_product"]:
        shown.add_metric([p["product_id"]], p["shown"])
        clicks.add_metric([p["product_id"]], p["clicks"])
        ctr.add_metric([p["product_id"]], p["ctr"] or 0.0)
    yield shown
    yield clicks
    yield ctr
