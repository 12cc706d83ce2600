"""The learning benchmark's worlds and problems: seeded visits with every product's click
probability and one uniform draw per (visit, product), drawn once and shared by every learner.

A learner shows one product per visit (top-1); the visit is a click when
``U[t, j] < P[t, j]`` for the product j it showed. The draw does not depend on which learner
asks, so two learners that show the same product on the same visit get the same outcome, and
the only difference between learners is what they show (bench/bench_learning.py).

Worlds (a world is an oracle from producer/ or written here, plus the shipped catalog/users):

- ``rules``: the project's reference oracle (producer.oracle.RulesOracle);
- ``flat``: every product at the base rate (producer.oracle.FlatOracle), a control in which
  expected regret is 0 for every learner;
- ``bench_rules``: :class:`BenchRulesOracle`, different rules written for this benchmark
  (other categories, other context features, a fixed per-product appeal);
- ``bench_users``: :class:`BenchUsersOracle`, a third set: the user's gender, age and source
  (and one price rule) decide, the time does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from contract.features import CATEGORIES, FeatureSpace, Product, User, load_catalog, load_users
from producer.context import REFERENCE
from producer.history import make_history
from producer.oracle import FlatOracle, Oracle, RulesOracle

_CAT = {c: i for i, c in enumerate(CATEGORIES)}


class BenchRulesOracle(RulesOracle):
    """Rules unlike the reference's, so the exploration rule is not judged on one world.

    logit = -2.3 + appeal(product) + 2.0 evening x Mexican Specialties + 1.6 weekday afternoon x
    Salads & Healthy Options + 1.2 male x Aussie Pub Classics - 1.5 age > 0.6 x Pizzas + 0.8
    Email x Pasta & Risotto, where appeal is N(0, 0.5) per product from a fixed generator (a
    product-level effect the reference world does not have).
    """

    name = "bench_rules"

    def __init__(self, features: FeatureSpace) -> None:
        super().__init__(features)
        self._appeal: dict[str, float] = {}

    def _appeals(self, products: Sequence[Product]) -> np.ndarray:
        missing = sorted({p.product_id for p in products} - self._appeal.keys())
        if missing:
            for pid in missing:  # a product's appeal depends on its id only, not on the order
                seed = int.from_bytes(pid.encode()[:16].ljust(16, b"\0"), "little")
                self._appeal[pid] = float(np.random.default_rng([seed, 22]).normal(0.0, 0.5))
        return np.array([self._appeal[p.product_id] for p in products])

    def logits(self, users: Sequence[User], products: Sequence[Product],
               times: Sequence[datetime]) -> np.ndarray:
        n = len(users)
        if not n == len(products) == len(times):
            raise ValueError("users/products/times: lengths differ")
        hour = np.fromiter((t.hour for t in times), dtype=np.int64, count=n)
        weekday = np.fromiter((t.weekday() < 5 for t in times), dtype=bool, count=n)
        evening = (hour >= 18) | (hour < 6)
        afternoon = (hour >= 12) & (hour < 18)
        cat = np.fromiter((_CAT[p.category] for p in products), dtype=np.int64, count=n)
        male = np.fromiter((u.gender == "M" for u in users), dtype=bool, count=n)
        email = np.fromiter((u.source == "Email" for u in users), dtype=bool, count=n)
        age = self.features.normalized_ages(users)
        z = -2.3 + self._appeals(products)
        z += 2.0 * (evening & (cat == _CAT["Mexican Specialties"]))
        z += 1.6 * (weekday & afternoon & (cat == _CAT["Salads & Healthy Options"]))
        z += 1.2 * (male & (cat == _CAT["Aussie Pub Classics"]))
        z -= 1.5 * ((age > 0.6) & (cat == _CAT["Pizzas"]))
        z += 0.8 * (email & (cat == _CAT["Pasta & Risotto"]))
        return z


class BenchUsersOracle(RulesOracle):
    """A third set of rules: who the user is decides, the time does not (no time-of-day or
    weekday term, no per-product appeal), and one rule is on the price.

    logit = -2.4 + 1.8 female x Salads & Healthy Options + 1.5 age < 0.3 x Burgers &
    Sandwiches + 1.6 Facebook x Drinks & Desserts + 1.2 age > 0.6 x Pasta & Risotto + 1.0
    Display x price < 0.3.
    """

    name = "bench_users"

    def logits(self, users: Sequence[User], products: Sequence[Product],
               times: Sequence[datetime]) -> np.ndarray:
        n = len(users)
        if not n == len(products) == len(times):
            raise ValueError("users/products/times: lengths differ")
        cat = np.fromiter((_CAT[p.category] for p in products), dtype=np.int64, count=n)
        female = np.fromiter((u.gender == "F" for u in users), dtype=bool, count=n)
        facebook = np.fromiter((u.source == "Facebook" for u in users), dtype=bool, count=n)
        display = np.fromiter((u.source == "Display" for u in users), dtype=bool, count=n)
        age = self.features.normalized_ages(users)
        price = self.features.normalized_prices(products)
        z = np.full(n, -2.4)
        z += 1.8 * (female & (cat == _CAT["Salads & Healthy Options"]))
        z += 1.5 * ((age < 0.3) & (cat == _CAT["Burgers & Sandwiches"]))
        z += 1.6 * (facebook & (cat == _CAT["Drinks & Desserts"]))
        z += 1.2 * ((age > 0.6) & (cat == _CAT["Pasta & Risotto"]))
        z += 1.0 * (display & (price < 0.3))
        return z


WORLDS: dict[str, type] = {"rules": RulesOracle, "flat": FlatOracle,
                           "bench_rules": BenchRulesOracle, "bench_users": BenchUsersOracle}


@dataclass(frozen=True)
class Problem:
    """One world on one seed: the visits and the warm-up log every learner gets."""

    world: str
    seed: int
    X: np.ndarray  # (n, d) context of each visit
    P: np.ndarray  # (n, m) P(click) of every product at each visit (the oracle's)
    U: np.ndarray  # (n, m) the uniform that decides a click of product j at visit t
    warm_X: np.ndarray  # (h, d) warm-up log: contexts  # noqa: N815 (X as in linucb)
    warm_items: np.ndarray  # (h,) the product shown (uniformly at random)
    warm_rewards: np.ndarray  # (h,) 1.0 for a click

    @property
    def n_products(self) -> int:
        return int(self.P.shape[1])

    def click(self, t: int, item: int) -> bool:
        """The outcome of showing ``item`` at visit ``t``: the same whoever shows it."""
        return bool(self.U[t, item] < self.P[t, item])


def make_problem(world: str, seed: int, visits: int, warmup: int,
                 products: list[Product] | None = None, users: list[User] | None = None,
                 features: FeatureSpace | None = None) -> Problem:
    """Visits from one generator seeded ``[seed, 22]``; the warm-up log is the producer's
    historical log (a uniformly random product per event, :func:`producer.history.make_history`)
    of the same world and seed."""
    products = load_catalog() if products is None else products
    users = load_users() if users is None else users
    features = FeatureSpace.load() if features is None else features
    oracle: Oracle = WORLDS[world](features)
    rng = np.random.default_rng([seed, 22])
    user_idx = rng.integers(0, len(users), visits)
    times = REFERENCE.draw(rng, visits)
    U = rng.random((visits, len(products)))
    vis_users = [users[int(i)] for i in user_idx]
    X = features.context_matrix(vis_users, times)
    P = np.empty((visits, len(products)))
    chunk = 200
    for lo in range(0, visits, chunk):
        us = vis_users[lo:lo + chunk]
        ts = times[lo:lo + chunk]
        m = len(products)
        p = oracle.click_probabilities([u for u in us for _ in range(m)], products * len(us),
                                       [t for t in ts for _ in range(m)])
        P[lo:lo + len(us)] = np.asarray(p).reshape(len(us), m)
    h = make_history(users, products, features, oracle, seed, n=warmup)
    return Problem(world, seed, X, P, U, h.x, h.product_idx.astype(np.int64),
                   h.clicked.astype(np.float64))
