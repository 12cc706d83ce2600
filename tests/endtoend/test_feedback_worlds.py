"""The feedback worlds' click models, the drifting oracle and the in-process learners
(endtoend/feedback_worlds.py, producer/oracle.py; docs/LEARNING.md)."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest

from contract import feedback, linucb
from contract.features import FeatureSpace, load_catalog, load_users, utc
from endtoend import feedback_worlds as fw
from producer.oracle import load_oracle

SEEDS = (1, 2, 3)


@pytest.mark.parametrize("seed", SEEDS)
def test_position_world_clicks_slot_i_with_examination_times_attraction(seed: int) -> None:
    """P(click at slot i) = e_i * attraction (within 4 standard errors), several clicks per
    list possible; purchases only after a click, at P_PURCHASE."""
    rng = np.random.default_rng(seed)
    probs = np.array([0.5, 0.4, 0.6, 0.3, 0.5])
    n = 20_000
    clicks = np.zeros(5)
    buys = n_clicks = multi = 0
    for _ in range(n):
        d = fw.Draws(rng.random(5), rng.random(5), rng.random(5))
        events = fw.outcome("position", probs, d)
        slots = [i for i, v in events if v == fw.REWARDS["click"]]
        bought = [i for i, v in events if v == fw.REWARDS["purchase"]]
        assert set(bought) <= set(slots)
        clicks[slots] += 1
        n_clicks += len(slots)
        buys += len(bought)
        multi += len(slots) > 1
    want = np.array(fw.EXAMINATION) * probs
    se = np.sqrt(want * (1 - want) / n)
    assert np.all(np.abs(clicks / n - want) < 4 * se), (clicks / n, want)
    p = buys / n_clicks
    assert abs(p - fw.P_PURCHASE) < 4 * np.sqrt(p * (1 - p) / n_clicks)
    assert multi > 0


@pytest.mark.parametrize("seed", SEEDS)
def test_cascade_world_stops_at_the_first_click(seed: int) -> None:
    rng = np.random.default_rng(seed)
    probs = np.array([0.3, 0.3, 0.3, 0.3, 0.3])
    first = np.zeros(5)
    n = 20_000
    for _ in range(n):
        d = fw.Draws(rng.random(5), rng.random(5), rng.random(5))
        slots = [i for i, v in fw.outcome("cascade", probs, d) if v == fw.REWARDS["click"]]
        assert len(slots) <= 1
        first[slots] += 1
    want = 0.3 * 0.7 ** np.arange(5)
    assert np.all(np.abs(first / n - want) < 4 * np.sqrt(want * (1 - want) / n))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("mode", feedback.FEEDBACK_MODES)
def test_the_simulated_learner_is_the_batch_formula(seed: int, mode: str) -> None:
    """The in-process learner (weights, discount) ends at batch_state of its items (1e-9)."""
    rng = np.random.default_rng(seed)
    d, m = 4, 6
    g = linucb.discount_factor(5.0)
    lr = fw.Learner("x", m, d, mode, g)
    learned: dict[int, list] = {i: [] for i in range(m)}
    for _ in range(80):
        x = rng.uniform(0, 1, d)
        shown = [int(i) for i in rng.choice(m, 5, replace=False)]
        events = [(s, 1.0) for s in shown if rng.random() < 0.2]
        lr.learn(x, shown, events)
        for p, w, r in feedback.items(mode, [str(i) for i in shown],
                                      [(str(i), v) for i, v in events], fw.CAP, fw.EXAMINATION):
            learned[int(p)].append((x, w, r))
    for i in range(m):
        A_inv, b, _ = feedback.batch_state(d, 1.0, learned[i], g)
        np.testing.assert_allclose(lr.A_inv[i], A_inv, rtol=0, atol=1e-9)
        np.testing.assert_allclose(lr.b[i], b, rtol=0, atol=1e-9)


def test_visits_to_fraction_counts_from_the_shift() -> None:
    t = fw.Trace(top1_prob=[0.5] * 100 + [0.1] * 50 + [0.46] * 400, best_prob=[0.5] * 550)
    # from visit 100: the 10-visit mean passes 0.9 * 0.5 once 10 visits of 0.46 passed
    assert fw.visits_to_fraction(t, 100, window=10) == 60
    assert fw.visits_to_fraction(t, 100, fraction=0.95, window=10) is None


def test_the_drifted_oracle_moves_the_time_rules() -> None:
    """Monday 8 am: drinks lose their morning bonus and salads gain it (2.5 in the logit);
    a weekend moves the pizza bonus to Mexican; drift_probs mixes linearly over the ramp."""
    fs = FeatureSpace.load()
    old, new = load_oracle("rules", fs), load_oracle("rules_drifted", fs)
    user = next(u for u in load_users() if u.source != "Search")
    products = load_catalog()
    drink = next(p for p in products if p.category == "Drinks & Desserts")
    salad = next(p for p in products if p.category == "Salads & Healthy Options")
    pizza = next(p for p in products if p.category == "Pizzas")
    mexican = next(p for p in products if p.category == "Mexican Specialties")
    monday, saturday = utc(2026, 1, 5, 8), utc(2026, 1, 10, 15)

    def logit(o, p, at: datetime) -> float:
        q = o.click_probability(user, p, at)
        return float(np.log(q / (1 - q)))

    assert logit(old, drink, monday) - logit(new, drink, monday) == pytest.approx(2.5)
    assert logit(new, salad, monday) - logit(old, salad, monday) == pytest.approx(2.5)
    assert logit(old, pizza, saturday) - logit(new, pizza, saturday) == pytest.approx(1.8)
    assert logit(new, mexican, saturday) - logit(old, mexican, saturday) == pytest.approx(1.8)


def test_list_values_are_the_worlds_expected_clicks_and_the_best_list_is_an_upper_bound(
        ) -> None:
    """The regret of the feedback worlds is per list: P(any click) in the cascade world,
    sum e_i a_i in the position world (hand computations), and no list beats the oracle's."""
    probs = np.array([0.5, 0.2, 0.4])
    assert fw.list_value("cascade", probs) == pytest.approx(1 - 0.5 * 0.8 * 0.6)
    e = fw.EXAMINATION
    assert fw.list_value("position", probs) == pytest.approx(e[0] * 0.5 + e[1] * 0.2 + e[2] * 0.4)
    assert fw.best_list_value("position", probs, k=2) == pytest.approx(e[0] * 0.5 + e[1] * 0.4)
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        a = rng.random(12)
        for world in ("cascade", "position"):
            best = fw.best_list_value(world, a)
            for _ in range(200):
                shown = rng.choice(12, fw.K, replace=False)
                assert fw.list_value(world, a[shown]) <= best + 1e-12
