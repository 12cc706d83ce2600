"""The spec worlds (endtoend/spec_worlds.py, issue 13 item 6): the rules_cross oracle's rules,
worked out by hand; the claim behind the report - the shipped spec's linear model class cannot
express that world, the crosses spec can - checked exactly by least squares; and the report's
shape on a short run (the figures come from ``make simulate``, not from a test)."""

from __future__ import annotations

import json
import math
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from contract.features import CATEGORIES, DATA_DIR, FeatureSpace, Product, User, load_users, utc
from endtoend import spec_worlds
from producer.oracle import RulesCrossOracle, load_oracle

FS = FeatureSpace.load()
ORACLE = RulesCrossOracle(FS)
OLD = User(1, 70, "F", -33.8, 151.2, "Organic")  # scaled (70-18)/57 = 0.91 > 0.75
MID = User(2, 60, "M", -33.8, 151.2, "Email")  # 0.737: below the threshold
WED, SAT = utc(2026, 1, 7), utc(2026, 1, 10)


def sig(z: float) -> float:
    return 1 / (1 + math.exp(-z))


@pytest.mark.parametrize("at, drinks, pizzas", [
    (WED + timedelta(hours=14), 0.0, -2.5),  # weekday afternoon: drinks
    (SAT + timedelta(hours=14), -2.5, 0.0),  # weekend afternoon: pizzas
    (WED + timedelta(hours=20), -2.5, 0.0),  # weekday evening: pizzas
    (WED + timedelta(hours=3), -2.5, 0.0),  # the night is evening too
    (SAT + timedelta(hours=20), 0.0, -2.5),  # weekend evening: drinks
    (WED + timedelta(hours=8), -2.5, -2.5),  # mornings: neither
])
def test_the_cross_world_by_hand(at, drinks: float, pizzas: float) -> None:
    def p(user: User, category: str) -> float:
        return ORACLE.click_probability(user, Product("p1", "x", "x", 10.0, category), at)

    assert p(MID, "Drinks & Desserts") == pytest.approx(sig(drinks))
    assert p(MID, "Pizzas") == pytest.approx(sig(pizzas))
    assert p(MID, "Salads & Healthy Options") == pytest.approx(sig(-2.5))
    assert p(OLD, "Salads & Healthy Options") == pytest.approx(sig(0.5))
    assert p(OLD, "Pasta & Risotto") == pytest.approx(sig(-2.5))
    assert isinstance(load_oracle("rules_cross", FS), RulesCrossOracle)


def _fit_residual(fs: FeatureSpace, category: str) -> float:
    """Largest |logit - best linear fit in x| over users x every hour of a week."""
    users = load_users()[::4]
    hours = [utc(2026, 1, 5) + timedelta(hours=h, minutes=30) for h in range(7 * 24)]
    us = [u for u in users for _ in hours]
    ts = hours * len(users)
    X = fs.context_matrix(us, ts)
    prod = Product("p1", "x", "x", 10.0, category)
    z = ORACLE.logits(us, [prod] * len(us), ts)
    coef, *_ = np.linalg.lstsq(X, z, rcond=None)
    return float(np.abs(X @ coef - z).max())


@pytest.mark.parametrize("category", ["Drinks & Desserts", "Pizzas",
                                      "Salads & Healthy Options"])
def test_only_the_crosses_spec_can_express_the_world(category: str) -> None:
    """Each product's expected click logit is linear in the crosses spec's x (residual 0),
    not in the shipped spec's: no per-product weights of the shipped x give its logits."""
    crosses = FS.with_spec(DATA_DIR / "context_spec_crosses.json")
    assert _fit_residual(crosses, category) < 1e-9
    assert _fit_residual(FS, category) > 0.5


def test_every_other_category_is_flat() -> None:
    others = [c for c in CATEGORIES if c not in ("Drinks & Desserts", "Pizzas",
                                                 "Salads & Healthy Options")]
    for c in others:
        assert _fit_residual(FS, c) < 1e-9


def test_reach_by_hand() -> None:
    best = np.ones(600)
    late = np.r_[np.zeros(100), np.ones(500)]  # 5 zeros left in a window of 100 after 195
    assert spec_worlds.reach(late, best, 0.95, 100) == (195, 195)
    dip = np.r_[np.ones(300), np.zeros(100), np.ones(200)]  # the dip's last window: 301..400
    assert spec_worlds.reach(dip, best, 0.95, 100) == (100, 495)
    assert spec_worlds.reach(np.zeros(600), best, 0.95, 100) == (None, None)
    assert spec_worlds.reach(np.ones(50), best[:50], 0.95, 100) == (None, None)


def test_the_report_on_a_short_run(tmp_path: Path) -> None:
    out = spec_worlds.run(visits_n=600, seeds=(5, 6), results_dir=tmp_path)
    saved = json.loads((tmp_path / "simulate_spec.json").read_text())
    assert saved == json.loads(json.dumps(out))
    assert (tmp_path / "simulate_spec.png").stat().st_size > 0
    assert "| rules_cross | crosses (23) |" in (tmp_path / "simulate_spec.md").read_text()
    for world in spec_worlds.WORLDS:
        res = saved["worlds"][world]
        for seed in ("5", "6"):
            run = res["per_seed"][seed]
            assert set(run) == {"shipped", "crosses", "random", "oracle"}
            for name in ("shipped", "crosses", "random"):
                assert 0 < run[name]["oracle_ratio"] <= 1
            # the same visits: the oracle's best is one number for every learner
            regret_plus = {n: run[n]["regret"] / (1 - run[n]["oracle_ratio"])
                           for n in ("shipped", "crosses", "random")}
            assert max(regret_plus.values()) == pytest.approx(min(regret_plus.values()))
        assert res["summary"]["random"]["oracle_ratio_mean"] < 0.5
    assert saved["specs"]["crosses"]["dim"] == 23 and saved["specs"]["shipped"]["dim"] == 15
