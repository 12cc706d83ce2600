"""One test per oracle rule: each moves the click probability the right way, alone."""

from __future__ import annotations

from dataclasses import replace

import pytest

from contract.features import FeatureSpace, Product, User, utc
from producer.context import REFERENCE, UNIFORM_CLOCK, ContextDistribution
from producer.oracle import FlatOracle, OracleError, RulesOracle, load_oracle

FS = FeatureSpace.load()
ORACLE = RulesOracle(FS)
WEEKDAY_EVENING = utc(2026, 1, 7, 20)  # Wednesday
WEEKDAY_MORNING = utc(2026, 1, 7, 8)
SATURDAY_EVENING = utc(2026, 1, 10, 20)
OLD = User(1, 60, "F", -33.8, 151.2, "Organic")
YOUNG = replace(OLD, age=20)
CHEAP = 12.0
EXPENSIVE = FS.price_min + 0.95 * (FS.price_max - FS.price_min)


def product(category: str, price: float = CHEAP) -> Product:
    return Product("p001", "x", "x", price, category)


def p(user: User, prod: Product, at) -> float:
    return ORACLE.click_probability(user, prod, at)


def test_base_rate_is_sigmoid_minus_2_5() -> None:
    assert p(OLD, product("Pasta & Risotto"), WEEKDAY_EVENING) == pytest.approx(0.0759, abs=1e-4)


def test_morning_raises_drinks_and_desserts_only() -> None:
    drinks = product("Drinks & Desserts")
    assert p(OLD, drinks, WEEKDAY_MORNING) == pytest.approx(0.5)
    assert p(OLD, drinks, WEEKDAY_EVENING) == pytest.approx(0.0759, abs=1e-4)
    assert p(OLD, product("Pizzas"), WEEKDAY_MORNING) == pytest.approx(0.0759, abs=1e-4)


@pytest.mark.parametrize("category", ["Pizzas", "Burgers & Sandwiches"])
def test_weekend_raises_pizzas_and_burgers(category: str) -> None:
    assert p(OLD, product(category), SATURDAY_EVENING) > p(OLD, product(category),
                                                          WEEKDAY_EVENING)
    assert p(OLD, product(category), SATURDAY_EVENING) == pytest.approx(0.3318, abs=1e-4)
    assert p(OLD, product("Salads & Healthy Options"), SATURDAY_EVENING) == pytest.approx(
        0.0759, abs=1e-4)


def test_young_users_avoid_expensive_products() -> None:
    assert FS.normalized_age(YOUNG) < 0.25 <= FS.normalized_age(OLD)
    dear = product("Aussie Pub Classics", EXPENSIVE)
    assert FS.normalized_price(dear) > 0.8
    assert p(YOUNG, dear, WEEKDAY_EVENING) < p(OLD, dear, WEEKDAY_EVENING)
    assert p(YOUNG, product("Aussie Pub Classics"), WEEKDAY_EVENING) == pytest.approx(
        p(OLD, product("Aussie Pub Classics"), WEEKDAY_EVENING))


def test_search_traffic_clicks_more() -> None:
    prod = product("Mexican Specialties")
    assert p(replace(OLD, source="Search"), prod, WEEKDAY_EVENING) > p(OLD, prod,
                                                                      WEEKDAY_EVENING)


def test_vectorised_equals_scalar() -> None:
    users = [OLD, YOUNG, replace(OLD, source="Search")]
    prods = [product("Drinks & Desserts"), product("Pizzas", EXPENSIVE), product("Pizzas")]
    times = [WEEKDAY_MORNING, SATURDAY_EVENING, SATURDAY_EVENING]
    vec = ORACLE.click_probabilities(users, prods, times)
    assert list(vec) == pytest.approx([p(u, q, t) for u, q, t in zip(users, prods, times,
                                                                     strict=True)])


def test_oracles_plug_in_by_name_or_dotted_path() -> None:
    assert isinstance(load_oracle("flat", FS), FlatOracle)
    assert isinstance(load_oracle("producer.oracle:RulesOracle", FS), RulesOracle)
    assert isinstance(load_oracle("producer.oracle.FlatOracle", FS), FlatOracle)
    for bad in ("nope", "producer.oracle:Nope", "no_such_module.Thing", "producer.oracle:log"):
        with pytest.raises(OracleError, match="oracle"):
            load_oracle(bad, FS)


def test_context_distribution_is_explicit_and_checked() -> None:
    assert (REFERENCE.p_morning, REFERENCE.p_weekend) == (0.5, 0.5)
    assert UNIFORM_CLOCK.p_morning == 0.25
    with pytest.raises(ValueError, match="p_morning"):
        ContextDistribution(p_morning=1.5)
    with pytest.raises(TypeError, match="p_weekend"):
        ContextDistribution(p_weekend="0.5")  # type: ignore[arg-type]
