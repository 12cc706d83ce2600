"""Catalog churn in the simulator (issue 13 item 7): new products arrive and others retire
while the shop runs; which prior gets the newcomers right sooner.

``python -m endtoend churn`` (run by ``make simulate``) writes ``results/simulate_churn.json``
and ``.png``. At visit ``add_at`` ``n_new`` products join the catalog (spread over the
categories; each a sibling of a product of its category: that product's name and
description, the price moved by up to 20%, so the hidden oracle finds it about as appealing
as its category), and at ``retire_at`` ``n_retired`` products leave it.

Every learner is disjoint LinUCB in this process with the contract's maths and the project's
default exploration (``RTREC_EXPLORATION``'s default, ``category_rate``: docs/EXPLORATION.md), on
the same seeded visits and click
draws (a cascade reader, as the closed loop), and they differ only by where a new product
starts (docs/LEARNING.md, "The category prior"):

- ``identity``: ``A = l2 I, b = 0``;
- ``informed``: at its first learned step, its category's pool shrunk to ``m``
  pseudo-observations (:func:`contract.prior.informed_state`), as the job starts it; the pool
  is kept from the learned deltas as the job keeps it. Serving scores a never-learned product
  at the identity prior under either setting (so does this learner).

Per prior: the regret over the churn period (from ``add_at`` to the end; the first slot's
expected click probability lost against the best product in the catalog at that visit), the
visits until each new product is first shown (p50, and how many never were), and how many
times a retired product was shown after its retirement (0 by construction here).

With ``--live`` the real parts are measured too (:func:`live_catalog_latency`: Kafka, Redis and
serving following the catalog topic): the time from a catalog record to serving ranking a new
product, and to serving no longer returning a retired one, and retired products in the answers
after each retirement was seen.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from contract import exploration, linucb
from contract.config import Settings
from contract.features import CATEGORIES, FeatureSpace, Product, load_catalog, load_users
from contract.prior import CategoryPool, informed_state
from endtoend.simulation import SimulatedShop, Visit, first_click, make_visits
from producer.oracle import load_oracle

log = logging.getLogger(__name__)

K = 5
PRIORS = ("identity", "informed")


def new_products(products: Sequence[Product], n: int, seed: int) -> list[Product]:
    """``n`` newcomers, round-robin over the categories: each a sibling of a random product
    of its category (its texts, its price times U(0.8, 1.2)), ids ``n000``..."""
    rng = np.random.default_rng([seed, 13])
    by_cat = {c: [p for p in products if p.category == c] for c in CATEGORIES}
    cats = [c for c in CATEGORIES if by_cat[c]]
    out = []
    for i in range(n):
        base = by_cat[cats[i % len(cats)]][int(rng.integers(len(by_cat[cats[i % len(cats)]])))]
        out.append(replace(base, product_id=f"n{i:03d}",
                           price=round(base.price * float(rng.uniform(0.8, 1.2)), 2)))
    return out


@dataclass
class ChurnLearner:
    """Disjoint LinUCB over every product that will ever exist; ``active`` says which are in
    the catalog now. Learns as the job does with ``all`` feedback (every shown product
    observed, the clicked one with reward 1)."""

    name: str
    categories: list[int]  # per product, its category's index
    dim: int
    prior: str = "identity"
    m: float = 5.0
    min_obs: int = 100
    l2: float = 1.0
    exploration: str = field(default_factory=lambda: Settings.from_env({}).model.exploration)
    alpha: float = 1.0  # under exploration="fixed" only
    A_inv: np.ndarray = field(init=False)
    b: np.ndarray = field(init=False)
    theta: np.ndarray = field(init=False)
    learned: np.ndarray = field(init=False)
    pools: list[CategoryPool] = field(init=False)

    def __post_init__(self) -> None:
        n = len(self.categories)
        self.A_inv = np.repeat((np.eye(self.dim) / self.l2)[None], n, axis=0)
        self.b = np.zeros((n, self.dim))
        self.theta = np.zeros((n, self.dim))
        self.learned = np.zeros(n, dtype=bool)
        self.pools = [CategoryPool.empty(self.dim) for _ in CATEGORIES]
        self.clicks = 0.0
        self.observations = 0
        # category_rate: each category's sum of its products' (A_i - l2 I) and b_i, as
        # serving sums them from the published parameters (an informed start's
        # pseudo-observations included, as serving sees them)
        n_cat = max(self.categories, default=-1) + 1
        self.rate_S = np.zeros((n_cat, self.dim, self.dim))
        self.rate_t = np.zeros((n_cat, self.dim))
        self._rate_M: np.ndarray | None = None

    def start(self, i: int) -> None:
        """A product's first learned step starts from its category's pool as it is now (the
        job reads the published pool when it learns a product's first batch); serving scores
        a never-learned product at the identity prior, as this learner does until then."""
        st = informed_state(self.pools[self.categories[i]], self.dim, self.l2, self.m,
                            self.min_obs)
        self.A_inv[i], self.b[i] = st.A_inv, st.b
        self.theta[i] = st.A_inv @ st.b
        c = self.categories[i]
        self.rate_S[c] += np.linalg.inv(st.A_inv) - self.l2 * np.eye(self.dim)
        self.rate_t[c] += st.b
        self._rate_M = None

    def recommend(self, x: np.ndarray, active: np.ndarray, k: int = K) -> list[int]:
        var = np.einsum("mij,i,j->m", self.A_inv, x, x, optimize=False)
        if self.exploration in exploration.CATEGORY_RULES:
            if self._rate_M is None:
                self._rate_M = exploration.category_solve(self.rate_S, self.l2)
            scores = exploration.category_rate_scores(
                self._rate_M, self.rate_t, np.asarray(self.categories),
                exploration.click_rate(self.clicks, self.observations), x, self.l2,
                self.theta @ x, var, exploration.CATEGORY_OPTIMISM[self.exploration])
        else:
            scores = exploration.rule_scores(self.exploration, self.alpha, self.clicks,
                                             self.observations, x, self.l2, self.theta @ x,
                                             var)
        scores = np.where(active, scores, -np.inf)
        return [int(i) for i in linucb.top_k(scores, k)]

    def learn(self, shown: Sequence[int], x: np.ndarray, clicked: int | None) -> None:
        for pos, i in enumerate(shown):
            r = 1.0 if pos == clicked else 0.0
            if self.prior == "informed" and not self.learned[i]:
                self.start(i)
            self.A_inv[i] = linucb.sherman_morrison(self.A_inv[i], x)
            self.b[i] += r * x
            self.theta[i] = self.A_inv[i] @ self.b[i]
            self.learned[i] = True
            c = self.categories[i]
            self.rate_S[c] += np.outer(x, x)
            self.rate_t[c] += r * x
            self._rate_M = None
            if self.prior == "informed":
                c = self.categories[i]
                # the pool from the delta (x x^T, r x, 1), as the job's pool operator sums it
                self.pools[c] = self.pools[c].plus(np.outer(x, x), r * x, 1)
            self.clicks += r
            self.observations += 1


@dataclass
class ChurnTrace:
    top1_prob: list[float] = field(default_factory=list)
    best_prob: list[float] = field(default_factory=list)
    first_shown: dict[int, int] = field(default_factory=dict)  # new product -> visit
    retired_shown_after: int = 0


def run_churn(visits: Sequence[Visit], shop: SimulatedShop, learners: Sequence[ChurnLearner],
              new_idx: Sequence[int], retired_idx: Sequence[int], add_at: int, retire_at: int,
              ) -> dict[str, ChurnTrace]:
    n = len(shop.products)
    active = np.ones(n, dtype=bool)
    active[list(new_idx)] = False
    traces = {lr.name: ChurnTrace() for lr in learners}
    for v in visits:
        if v.index == add_at:
            active[list(new_idx)] = True
        if v.index == retire_at:
            active[list(retired_idx)] = False
        x = shop.features.context_vector(v.user, v.at)
        p = shop.probabilities(v)
        best = float(p[active].max())
        for lr in learners:
            shown = lr.recommend(x, active)
            clicked = first_click(v.draws, p[shown])
            lr.learn(shown, x, clicked)
            tr = traces[lr.name]
            tr.top1_prob.append(float(p[shown[0]]))
            tr.best_prob.append(best)
            for i in shown:
                if i in new_idx and i not in tr.first_shown and v.index >= add_at:
                    tr.first_shown[i] = v.index - add_at
            if v.index >= retire_at:
                tr.retired_shown_after += sum(1 for i in shown if i in retired_idx)
    return traces


def summarise(tr: ChurnTrace, add_at: int, n_new: int, visits_after: int) -> dict:
    top1, best = np.asarray(tr.top1_prob), np.asarray(tr.best_prob)
    firsts = sorted(tr.first_shown.values())
    # a newcomer never shown counts as shown after the last visit (censored)
    padded = firsts + [visits_after] * (n_new - len(firsts))
    return {"regret_churn": float((best[add_at:] - top1[add_at:]).sum()),
            "regret_before": float((best[:add_at] - top1[:add_at]).sum()),
            "regret_total": float((best - top1).sum()),
            "first_shown_visits_p50": float(np.median(padded)),
            "first_shown_visits_p90": float(np.percentile(padded, 90)),
            "never_shown": n_new - len(firsts),
            "retired_shown_after": tr.retired_shown_after}


def run(visits_n: int = 4000, seeds: Sequence[int] = tuple(range(1, 13)), n_new: int = 40,
        n_retired: int = 8, add_at: int = 1500, retire_at: int = 2500, m: float = 5.0,
        results_dir: Path = Path("results"), min_obs: int = 100,
        live: dict | None = None) -> dict:
    """Every seed, both priors; writes ``results/simulate_churn.json`` (and a plot)."""
    base = load_catalog()
    features = FeatureSpace.load()
    users = load_users()
    out: dict = {"visits": visits_n, "seeds": list(seeds), "pseudo_obs": m, "min_obs": min_obs,
                 "churn": {"added": n_new, "retired": n_retired, "add_at": add_at,
                           "retire_at": retire_at},
                 "per_seed": {}}
    curves: dict[str, list[np.ndarray]] = {p: [] for p in PRIORS}
    for seed in seeds:
        added = new_products(base, n_new, seed)
        products = base + added
        rng = np.random.default_rng([seed, 17])
        retired_idx = [int(i) for i in rng.choice(len(base), n_retired, replace=False)]
        new_idx = list(range(len(base), len(products)))
        cats = [CATEGORIES.index(p.category) for p in products]
        shop = SimulatedShop(products, features, load_oracle("rules", features))
        visits = make_visits(visits_n, seed, users, K)
        shop.prepare(visits)
        learners = [ChurnLearner(prior, cats, features_dim(features, users), prior, m, min_obs)
                    for prior in PRIORS]
        traces = run_churn(visits, shop, learners, new_idx, retired_idx, add_at, retire_at)
        out["per_seed"][str(seed)] = {
            n: summarise(t, add_at, n_new, visits_n - add_at) for n, t in traces.items()}
        for n, t in traces.items():
            curves[n].append(np.asarray(t.best_prob) - np.asarray(t.top1_prob))
        log.info("seed %d: %s", seed, {n: round(v["regret_churn"], 1)
                                       for n, v in out["per_seed"][str(seed)].items()})
    per = out["per_seed"].values()
    out["priors"] = {p: {k: float(np.mean([s[p][k] for s in per]))
                         for k in ("regret_churn", "regret_before", "regret_total",
                                   "first_shown_visits_p50", "never_shown")}
                     for p in PRIORS}
    out["churn"]["retired_shown_after"] = max(s[p]["retired_shown_after"]
                                              for s in per for p in PRIORS)
    out["informed_below_identity_every_seed"] = all(
        s["informed"]["regret_churn"] < s["identity"]["regret_churn"] for s in per)
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / "simulate_churn.json"
    if live is not None:  # the real parts' figures (live_catalog_latency)
        out["churn"].update({k: v for k, v in live.items() if k != "retired_shown_after_live"})
        out["churn"]["retired_shown_after"] += live["retired_shown_after_live"]
    path.write_text(json.dumps(out, indent=2) + "\n")
    _plot(curves, add_at, retire_at, results_dir / "simulate_churn.png")
    print(table(out))
    return out


def live_catalog_latency(settings: Settings, n: int = 20, seed: int = 7) -> dict:
    """The real parts: Kafka, Redis and serving following the catalog topic (in this process,
    as an app embeds it). ``n`` products are added one at a time and timed from the catalog
    record's acknowledgement to serving ranking it (it alone eligible), then ``n`` retired
    one at a time and timed until serving no longer returns it, and every answer after a
    retirement was seen is checked for retired products (``retired_shown_after``)."""
    import time

    from contract.catalog import ProductRecord, ensure_catalog_topic, write_records
    from contract.kafka import kafka_producer
    from serving.errors import ControlConflictError
    from serving.recommender import Recommender

    ensure_catalog_topic(settings)
    producer = kafka_producer(settings.kafka)
    rng = np.random.default_rng([seed, 19])
    rec = Recommender.from_settings(settings, wait_s=10.0, seed=seed)
    x = np.full(settings.model.dim, 0.5)
    add_ms: list[float] = []
    hide_ms: list[float] = []
    retired: set[str] = set()
    shown_after = 0
    try:
        write_records(producer, settings.kafka.topic_catalog, [("warm-up", None)])

        def top(pid: str) -> bool:
            others = [p for p in rec.catalog.product_ids if p != pid]
            try:
                items = rec.recommend(1, x=x, k=1, exclude=others).items
            except ControlConflictError:  # nothing eligible: pid is hidden
                return False
            return [it.product_id for it in items] == [pid]

        def check_retired() -> None:
            nonlocal shown_after
            got = {it.product_id for it in rec.recommend(1, x=rng.uniform(0, 1, x.size),
                                                         k=10, policy="random").items}
            shown_after += len(got & retired)

        added = [f"live-{seed}-{i}" for i in range(n)]
        for i, pid in enumerate(added):
            t0 = time.perf_counter()
            write_records(producer, settings.kafka.topic_catalog,
                          [(pid, ProductRecord(pid, CATEGORIES[i % len(CATEGORIES)], 9.5))])
            while pid not in rec.catalog.index or not top(pid):
                if time.perf_counter() - t0 > 10:
                    raise TimeoutError(f"{pid} not rankable 10 s after its record")
                time.sleep(0.002)
            add_ms.append((time.perf_counter() - t0) * 1000)
        for pid in added:
            t0 = time.perf_counter()
            write_records(producer, settings.kafka.topic_catalog, [(pid, None)])
            while top(pid):
                if time.perf_counter() - t0 > 10:
                    raise TimeoutError(f"{pid} still shown 10 s after its tombstone")
                time.sleep(0.002)
            hide_ms.append((time.perf_counter() - t0) * 1000)
            retired.add(pid)
            for _ in range(20):
                check_retired()
    finally:
        rec.close()

    def q(values: list[float]) -> dict:
        return {"p50": float(np.percentile(values, 50)), "p99": float(np.percentile(values, 99)),
                "n": len(values)}

    return {"servable_after_add_ms": q(add_ms), "hidden_after_retire_ms": q(hide_ms),
            "retired_shown_after_live": shown_after}


def features_dim(features: FeatureSpace, users: Sequence) -> int:
    """d of the context vectors the features make."""
    from contract.features import utc

    return int(features.context_vector(users[0], utc(2026, 1, 5, 12, 0)).shape[0])


def table(out: dict) -> str:
    rows = ["| seed | prior | regret (churn period) | regret before | first shown, p50 "
            "visits | never shown | retired shown after |", "| --- | --- | --- | --- | --- | "
            "--- | --- |"]
    for seed, res in out["per_seed"].items():
        for p, v in res.items():
            rows.append(f"| {seed} | {p} | {v['regret_churn']:.1f} | {v['regret_before']:.1f} "
                        f"| {v['first_shown_visits_p50']:.0f} | {v['never_shown']} | "
                        f"{v['retired_shown_after']} |")
    for p, v in out["priors"].items():
        rows.append(f"| mean | {p} | {v['regret_churn']:.1f} | {v['regret_before']:.1f} | "
                    f"{v['first_shown_visits_p50']:.0f} | {v['never_shown']:.1f} | |")
    return "\n".join(rows)


def _plot(curves: dict[str, list[np.ndarray]], add_at: int, retire_at: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for name, runs in curves.items():
        mean = np.mean(runs, axis=0)
        ax.plot(np.cumsum(mean), label=f"{name} prior")
    ax.axvline(add_at, color="grey", ls=":", label="products added")
    ax.axvline(retire_at, color="grey", ls="--", label="products retired")
    ax.set_xlabel("visit")
    ax.set_ylabel("cumulative regret (first slot), mean over seeds")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
