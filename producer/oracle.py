"""The hidden ground truth: how likely a user is to click a product in a context.

Only the simulator uses it (serving and the job never import producer/). The default
:class:`RulesOracle` is the project's reference rule set (docs/PRODUCER.md); another
oracle plugs in by registry name (``--oracle flat``) or by dotted path
(``--oracle mypkg.mymod:MyOracle`` or ``mypkg.mymod.MyOracle``): any class taking
``(features: FeatureSpace)`` and providing :meth:`Oracle.click_probability` and
:meth:`Oracle.click_probabilities`.

>>> from contract.features import FeatureSpace, load_catalog, load_users, utc
>>> oracle = load_oracle("rules", FeatureSpace.load())
>>> drink = next(p for p in load_catalog() if p.category == "Drinks & Desserts")
>>> user = next(u for u in load_users() if u.source != "Search")
>>> monday_8am = utc(2026, 1, 5, 8)
>>> round(oracle.click_probability(user, drink, monday_8am), 3)   # sigmoid(-2.5 + 2.5)
0.5
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

import numpy as np

from contract.errors import RtrecError
from contract.features import CATEGORIES, FeatureSpace, Product, User

# The default oracle's logit terms (docs/PRODUCER.md, "The hidden oracle").
BASE_LOGIT = -2.5
MORNING_DRINKS = 2.5
WEEKEND_PIZZA_BURGER = 1.8
YOUNG_EXPENSIVE = -3.0
SEARCH_SOURCE = 0.5
YOUNG_AGE_BELOW = 0.25
EXPENSIVE_PRICE_ABOVE = 0.8


_CAT_INDEX = {c: i for i, c in enumerate(CATEGORIES)}


class OracleError(RtrecError, ValueError):
    """An oracle name or path that does not resolve to a usable oracle."""


@runtime_checkable
class Oracle(Protocol):
    """Click probability of a product shown to a user at a time."""

    def click_probability(self, user: User, product: Product, at: datetime) -> float: ...

    def click_probabilities(self, users: Sequence[User], products: Sequence[Product],
                            times: Sequence[datetime]) -> np.ndarray:
        """Aligned sequences (user i saw product i at time i) -> probabilities, shape (n,)."""
        ...


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


class RulesOracle:
    """The reference rules: base -2.5; +2.5 morning x Drinks & Desserts; +1.8 weekend x (Pizzas
    or Burgers & Sandwiches); -3.0 young (age < 0.25) x expensive (price > 0.8); +0.5 Search."""

    name = "rules"
    # the categories of the two time rules (a drifted world moves them: DriftedRulesOracle)
    morning_categories: tuple[str, ...] = ("Drinks & Desserts",)
    weekend_categories: tuple[str, ...] = ("Pizzas", "Burgers & Sandwiches")

    def __init__(self, features: FeatureSpace) -> None:
        self.features = features

    def logits(self, users: Sequence[User], products: Sequence[Product],
               times: Sequence[datetime]) -> np.ndarray:
        if not len(users) == len(products) == len(times):
            raise ValueError(f"users/products/times: lengths {len(users)}, {len(products)}, "
                             f"{len(times)} differ")
        fs = self.features
        n = len(users)
        morning = np.fromiter((6 <= t.hour < 12 for t in times), dtype=bool, count=n)
        weekend = np.fromiter((t.weekday() >= 5 for t in times), dtype=bool, count=n)
        cat = np.fromiter((_CAT_INDEX[p.category] for p in products), dtype=np.int64, count=n)
        age = fs.normalized_ages(users)
        price = fs.normalized_prices(products)
        search = np.fromiter((u.source == "Search" for u in users), dtype=bool, count=n)
        z = np.full(len(users), BASE_LOGIT)
        z += MORNING_DRINKS * (morning & np.isin(cat, [_CAT_INDEX[c]
                                                       for c in self.morning_categories]))
        z += WEEKEND_PIZZA_BURGER * (weekend & np.isin(cat, [_CAT_INDEX[c]
                                                             for c in self.weekend_categories]))
        z += YOUNG_EXPENSIVE * ((age < YOUNG_AGE_BELOW) & (price > EXPENSIVE_PRICE_ABOVE))
        z += SEARCH_SOURCE * search
        return z

    def click_probabilities(self, users: Sequence[User], products: Sequence[Product],
                            times: Sequence[datetime]) -> np.ndarray:
        return _sigmoid(self.logits(users, products, times))

    def click_probability(self, user: User, product: Product, at: datetime) -> float:
        return float(self.click_probabilities([user], [product], [at])[0])


class FlatOracle(RulesOracle):
    """Every product equally likely (the base rate, sigmoid(-2.5) ~ 7.6%): no signal to learn.

    A control world: any policy should do as well as random in it.
    """

    name = "flat"

    def logits(self, users: Sequence[User], products: Sequence[Product],
               times: Sequence[datetime]) -> np.ndarray:
        return np.full(len(users), BASE_LOGIT)


class DriftedRulesOracle(RulesOracle):
    """The reference rules after tastes moved (the drifting worlds of endtoend/feedback_worlds.py):
    mornings now favour Salads & Healthy Options instead of Drinks & Desserts, weekends Mexican
    Specialties and Pasta & Risotto instead of Pizzas and Burgers; the other terms stay."""

    name = "rules_drifted"
    morning_categories = ("Salads & Healthy Options",)
    weekend_categories = ("Mexican Specialties", "Pasta & Risotto")


# The cross world's terms (RulesCrossOracle; docs/FEATURES.md)
CROSS_TIME = 2.5
SENIOR_SALADS = 3.0
SENIOR_AGE_ABOVE = 0.75


class RulesCrossOracle(RulesOracle):
    """A world the shipped features cannot express (endtoend/spec_worlds.py): base -2.5;
    +2.5 Drinks & Desserts on weekday afternoons and weekend evenings, +2.5 Pizzas on weekend
    afternoons and weekday evenings (time of day x weekday: which of the two is better flips
    with both, so no sum of a time-of-day and a day-kind term ranks them right); +3.0 Salads &
    Healthy Options for users older than 0.75 (scaled age, a threshold). Times are UTC, as the
    feature spec's."""

    name = "rules_cross"

    def logits(self, users: Sequence[User], products: Sequence[Product],
               times: Sequence[datetime]) -> np.ndarray:
        if not len(users) == len(products) == len(times):
            raise ValueError(f"users/products/times: lengths {len(users)}, {len(products)}, "
                             f"{len(times)} differ")
        n = len(users)
        afternoon = np.fromiter((12 <= t.hour < 18 for t in times), dtype=bool, count=n)
        evening = np.fromiter((not 6 <= t.hour < 18 for t in times), dtype=bool, count=n)
        weekend = np.fromiter((t.weekday() >= 5 for t in times), dtype=bool, count=n)
        cat = np.fromiter((_CAT_INDEX[p.category] for p in products), dtype=np.int64, count=n)
        drinks = cat == _CAT_INDEX["Drinks & Desserts"]
        pizzas = cat == _CAT_INDEX["Pizzas"]
        salads = cat == _CAT_INDEX["Salads & Healthy Options"]
        senior = self.features.normalized_ages(users) > SENIOR_AGE_ABOVE
        z = np.full(n, BASE_LOGIT)
        z += CROSS_TIME * (drinks & ((afternoon & ~weekend) | (evening & weekend)))
        z += CROSS_TIME * (pizzas & ((afternoon & weekend) | (evening & ~weekend)))
        z += SENIOR_SALADS * (salads & senior)
        return z


ORACLES: dict[str, type] = {"rules": RulesOracle, "default": RulesOracle, "flat": FlatOracle,
                            "rules_drifted": DriftedRulesOracle, "rules_cross": RulesCrossOracle}


def load_oracle(spec: str, features: FeatureSpace) -> Oracle:
    """An oracle by registry name or dotted path; :class:`OracleError` when it does not resolve.

    >>> load_oracle("nope", FeatureSpace.load())  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    producer.oracle.OracleError: unknown oracle 'nope': not one of default, flat, rules...
    """
    cls = ORACLES.get(spec)
    if cls is None:
        if "." not in spec and ":" not in spec:
            raise OracleError(f"unknown oracle {spec!r}: not one of {', '.join(sorted(ORACLES))} "
                              "and not a dotted path (pkg.module:Class)")
        module_name, _, attr = spec.partition(":") if ":" in spec else spec.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError, ValueError) as exc:
            raise OracleError(f"unknown oracle {spec!r}: {type(exc).__name__}: {exc}") from exc
    try:
        oracle = cls(features)
    except TypeError as exc:
        raise OracleError(f"oracle {spec!r} cannot be built from (features): {exc}") from exc
    if not isinstance(oracle, Oracle):
        raise OracleError(f"oracle {spec!r} lacks click_probability/click_probabilities")
    return oracle
