"""The closed-loop simulation: seeded visits, the hidden oracle's clicks, several policies on
the SAME visits.

A visit is a random user at a random time (:mod:`producer.context`) plus one uniform draw per
list position. Every policy sees the same visit and the same draws: the user reads the list in
order and clicks position i when ``draw[i] < P(click | user, product_i, time)``, stopping at
the first click (a cascade click model). So the policies differ only by what they show, and
the same seed gives the same visits and the same random/oracle outcomes.

Metrics per policy: top-1 CTR (a click on the first item: the telling one), any-of-k
CTR, and cumulative expected regret against the oracle: the sum over visits of
``P(click on the oracle's best item) - P(click on the policy's first item)``, an expectation
computed from the oracle, so it has none of the noise of the sampled clicks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import numpy as np

from contract import exploration, linucb
from contract.exploration import CATEGORY_RULES
from contract.features import FeatureSpace, Product, User
from producer.context import REFERENCE, ContextDistribution
from producer.oracle import Oracle

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Visit:
    index: int
    user: User
    at: datetime
    draws: tuple[float, ...]  # one uniform per list position, shared by every policy


def make_visits(n: int, seed: int, users: Sequence[User], k: int = 5,
                dist: ContextDistribution = REFERENCE) -> list[Visit]:
    """``n`` visits from one generator seeded by ``seed`` (stream 7: distinct from history)."""
    rng = np.random.default_rng([seed, 7])
    user_idx = rng.integers(0, len(users), n)
    times = dist.draw(rng, n)
    draws = rng.random((n, k))
    return [Visit(i, users[int(u)], t, tuple(float(d) for d in draws[i]))
            for i, (u, t) in enumerate(zip(user_idx, times, strict=True))]


@dataclass
class Shown:
    """What a policy showed for one visit (catalog indexes, best first)."""

    items: list[int]
    request_id: str | None = None
    model_version: int = 0
    param_age_ms: float | None = None


class SimPolicy(Protocol):
    name: str

    def recommend(self, visit: Visit, x: np.ndarray, k: int) -> Shown: ...

    def feedback(self, visit: Visit, x: np.ndarray, shown: Shown, clicked: int | None) -> None:
        """``clicked`` is the list position clicked, or None."""


class SimulatedShop:
    """The catalog, the features and the hidden oracle; P(click) of every product per visit."""

    def __init__(self, products: Sequence[Product], features: FeatureSpace, oracle: Oracle) -> None:
        self.products = list(products)
        self.features = features
        self.oracle = oracle
        self._probs: dict[int, np.ndarray] = {}

    def prepare(self, visits: Sequence[Visit], chunk: int = 250) -> None:
        """Compute the probabilities of the visits not yet known, many per oracle call."""
        visits = [v for v in visits if v.index not in self._probs]
        m = len(self.products)
        for lo in range(0, len(visits), chunk):
            part = visits[lo : lo + chunk]
            users = [v.user for v in part for _ in range(m)]
            times = [v.at for v in part for _ in range(m)]
            p = np.asarray(self.oracle.click_probabilities(users, self.products * len(part), times))
            for v, row in zip(part, p.reshape(len(part), m), strict=True):
                self._probs[v.index] = row

    def probabilities(self, visit: Visit) -> np.ndarray:
        """P(click) of every product for this visit, shape (m,)."""
        if visit.index not in self._probs:
            self.prepare([visit])
        return self._probs[visit.index]


def first_click(draws: Sequence[float], probs: Sequence[float]) -> int | None:
    """The position the user clicks reading top-down, or None (stops at the first click)."""
    for i, (u, p) in enumerate(zip(draws, probs, strict=False)):
        if u < p:
            return i
    return None


# --- reference policies ------------------------------------------------------------------------

class RandomPolicy:
    """A uniformly random list (its own generator, so it does not disturb the visits')."""

    name = "random"

    def __init__(self, n_products: int, seed: int) -> None:
        self.m = n_products
        self.rng = np.random.default_rng([seed, 11])

    def recommend(self, visit: Visit, x: np.ndarray, k: int) -> Shown:
        return Shown(items=[int(i) for i in self.rng.choice(self.m, size=k, replace=False)])

    def feedback(self, visit: Visit, x: np.ndarray, shown: Shown, clicked: int | None) -> None:
        pass


class OraclePolicy:
    """The oracle's own best list: the top-k click probabilities (the ceiling)."""

    name = "oracle"

    def __init__(self, shop: SimulatedShop) -> None:
        self.shop = shop

    def recommend(self, visit: Visit, x: np.ndarray, k: int) -> Shown:
        return Shown(items=[int(i) for i in linucb.top_k(self.shop.probabilities(visit), k)])

    def feedback(self, visit: Visit, x: np.ndarray, shown: Shown, clicked: int | None) -> None:
        pass


class InstantLinUCB:
    """LinUCB in this process, updated right after each visit: the best the streaming learner
    could do with no delay. Learns exactly as the job does (reward 1 for the clicked item, 0
    for every other shown item), with the contract's math. Explores as serving does under
    ``exploration`` (RTREC_EXPLORATION, docs/EXPLORATION.md; the closed loop passes the
    setting): ``fixed`` ranks with ``alpha``, ``calibrated`` and ``decaying`` with the click
    rate it learned, ``category_ucb`` and ``category_rate`` with each product's category's
    rate for x (plus the rule's optimism) from the pools of what it learned (``categories``:
    one per product; without them it is ``decaying``, as serving is without catalog
    categories)."""

    name = "linucb_instant"

    def __init__(self, n_products: int, dim: int, alpha: float = 1.0, l2: float = 1.0,
                 exploration: str = "fixed", categories: Sequence[str] | None = None) -> None:
        self.alpha = alpha
        self.l2 = l2
        self.exploration = exploration
        # category_rate: every observation of a category's products pooled, S_c = sum x x^T
        # and t_c = sum r x (what serving sums from the published A_i - l2 I and b_i)
        self.groups: np.ndarray | None = None
        if exploration in CATEGORY_RULES and categories is not None:
            if len(categories) != n_products:
                raise ValueError("categories: one per product")
            names = sorted(set(categories))
            self.groups = np.array([names.index(c) for c in categories], dtype=np.int64)
            self.S = np.zeros((len(names), dim, dim))
            self.t = np.zeros((len(names), dim))
            self._M: np.ndarray | None = None  # (l2 I + S_c)^-1, solved when S changed
        self.clicks = 0.0
        self.observations = 0
        self.A_inv = np.repeat((np.eye(dim) / l2)[None], n_products, axis=0)  # (m, d, d)
        self.b = np.zeros((n_products, dim))
        self.n = np.zeros(n_products, dtype=np.int64)
        self.theta = np.zeros((n_products, dim))

    def learn(self, item: int, x: np.ndarray, reward: float) -> None:
        self.A_inv[item] = linucb.sherman_morrison(self.A_inv[item], x)
        self.b[item] += reward * x
        self.n[item] += 1
        self.theta[item] = self.A_inv[item] @ self.b[item]
        self.clicks += reward
        self.observations += 1
        if self.groups is not None:
            c = int(self.groups[item])
            self.S[c] += np.outer(x, x)
            self.t[c] += reward * x
            self._M = None

    def recommend(self, visit: Visit, x: np.ndarray, k: int) -> Shown:
        if self.groups is not None and self.exploration in CATEGORY_RULES:
            # category_ucb / category_rate: decaying with p -> q_c(x) (+ sd) per product
            if self._M is None:
                self._M = exploration.category_solve(self.S, self.l2)
            var = np.einsum("mij,i,j->m", self.A_inv, x, x, optimize=False)
            scores = exploration.category_rate_scores(
                self._M, self.t, self.groups,
                exploration.click_rate(self.clicks, self.observations), x, self.l2,
                self.theta @ x, var, exploration.CATEGORY_OPTIMISM[self.exploration])
        elif self.exploration in exploration.VARIANCE_RULES:  # no alpha (contract)
            var = np.einsum("mij,i,j->m", self.A_inv, x, x, optimize=False)
            scores = exploration.rule_scores("decaying", self.alpha, self.clicks,
                                             self.observations, x, self.l2, self.theta @ x, var)
        else:
            alpha = exploration.exploration_alpha(self.exploration, self.alpha, self.clicks,
                                                  self.observations, x, self.l2)
            scores = linucb.ucb_scores(self.theta, self.A_inv, x, alpha)
        return Shown(items=[int(i) for i in linucb.top_k(scores, k)],
                     model_version=int(self.n.sum()), param_age_ms=0.0)

    def feedback(self, visit: Visit, x: np.ndarray, shown: Shown, clicked: int | None) -> None:
        for pos, item in enumerate(shown.items):
            self.learn(item, x, 1.0 if pos == clicked else 0.0)


# --- the run -----------------------------------------------------------------------------------

@dataclass
class Outcome:
    """Per policy, one entry per visit."""

    items: list[list[int]] = field(default_factory=list)
    clicked: list[int] = field(default_factory=list)  # position, -1 for none
    top1_prob: list[float] = field(default_factory=list)
    best_prob: list[float] = field(default_factory=list)
    model_version: list[int] = field(default_factory=list)
    param_age_ms: list[float] = field(default_factory=list)  # NaN when unknown

    def summary(self) -> dict[str, float | int]:
        clicked = np.asarray(self.clicked)
        regret = np.asarray(self.best_prob) - np.asarray(self.top1_prob)
        return {"visits": int(clicked.size), "top1_ctr": float(np.mean(clicked == 0)),
                "any5_ctr": float(np.mean(clicked >= 0)), "regret": float(regret.sum())}


def simulate(visits: Sequence[Visit], policies: Sequence[SimPolicy], shop: SimulatedShop,
             k: int = 5, rate: float | None = None,
             progress: Callable[[int], None] | None = None) -> dict[str, Outcome]:
    """Run every policy on every visit, in visit order; ``rate`` paces visits per second."""
    out = {p.name: Outcome() for p in policies}
    shop.prepare(visits)
    start = time.monotonic()
    for visit in visits:
        if rate:
            delay = start + visit.index / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        x = shop.features.context_vector(visit.user, visit.at)
        probs = shop.probabilities(visit)
        best = float(probs.max())
        for policy in policies:
            shown = policy.recommend(visit, x, k)
            shown_probs = probs[shown.items]
            clicked = first_click(visit.draws, shown_probs)
            policy.feedback(visit, x, shown, clicked)
            o = out[policy.name]
            o.items.append(shown.items)
            o.clicked.append(-1 if clicked is None else clicked)
            o.top1_prob.append(float(shown_probs[0]))
            o.best_prob.append(best)
            o.model_version.append(shown.model_version)
            o.param_age_ms.append(np.nan if shown.param_age_ms is None else shown.param_age_ms)
        if progress:
            progress(1)
    return out


# --- the streaming learner, through serving -----------------------------------------------------

class StreamLinUCB:
    """The real system: serving (in-process library) ranks from its Redis snapshot and logs
    the impression to Kafka; a click goes back through serving's feedback; the Flink job
    learns and republishes. The context x is the visit's (simulated time of day and day of
    week); the event's timestamp is the wall clock, when the decision was really made."""

    name = "linucb_stream"

    def __init__(self, recommender, product_ids: Sequence[str]) -> None:  # type: ignore[no-untyped-def]
        self.rec = recommender
        self.product_ids = list(product_ids)
        self.index = {p: i for i, p in enumerate(product_ids)}

    def recommend(self, visit: Visit, x: np.ndarray, k: int) -> Shown:
        r = self.rec.recommend(visit.user.user_id, x=x, k=k, policy="linucb")
        return Shown(items=[self.index[i.product_id] for i in r.items], request_id=r.request_id,
                     model_version=r.model_version, param_age_ms=1000.0 * r.snapshot_age_s)

    def feedback(self, visit: Visit, x: np.ndarray, shown: Shown, clicked: int | None) -> None:
        if clicked is not None:
            self.rec.feedback(shown.request_id, self.product_ids[shown.items[clicked]])


class HttpStreamLinUCB(StreamLinUCB):
    """The same, over serving's HTTP API (``--via http``)."""

    def __init__(self, base_url: str, product_ids: Sequence[str], timeout_s: float = 5.0) -> None:
        import httpx

        super().__init__(None, product_ids)
        self.http = httpx.Client(base_url=base_url, timeout=timeout_s)

    def recommend(self, visit: Visit, x: np.ndarray, k: int) -> Shown:
        resp = self.http.post("/recommend", json={"user_id": visit.user.user_id,
                                                  "x": [float(v) for v in x], "k": k,
                                                  "policy": "linucb"})
        resp.raise_for_status()
        r = resp.json()
        return Shown(items=[self.index[i["product_id"]] for i in r["items"]],
                     request_id=r["request_id"], model_version=r["model_version"],
                     param_age_ms=1000.0 * r["snapshot_age_s"])

    def feedback(self, visit: Visit, x: np.ndarray, shown: Shown, clicked: int | None) -> None:
        if clicked is not None:
            resp = self.http.post("/feedback", json={
                "request_id": shown.request_id,
                "product_id": self.product_ids[shown.items[clicked]]})
            resp.raise_for_status()
