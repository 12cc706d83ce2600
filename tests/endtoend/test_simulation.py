"""The closed-loop simulation without the stack: determinism and the click model."""

from __future__ import annotations

import numpy as np
import pytest

from contract.features import FeatureSpace, load_catalog, load_users
from endtoend.simulation import (
    InstantLinUCB,
    OraclePolicy,
    RandomPolicy,
    SimulatedShop,
    first_click,
    make_visits,
    simulate,
)
from producer.oracle import load_oracle


@pytest.fixture(scope="module")
def shop() -> SimulatedShop:
    fs = FeatureSpace.load()
    return SimulatedShop(load_catalog(), fs, load_oracle("rules", fs))


def _run(shop: SimulatedShop, seed: int, n: int = 300):
    visits = make_visits(n, seed, load_users())
    policies = [RandomPolicy(len(shop.products), seed), OraclePolicy(shop)]
    return visits, simulate(visits, policies, shop)


def test_same_seed_same_visits_and_outcomes(shop: SimulatedShop) -> None:
    v1, o1 = _run(shop, 5)
    v2, o2 = _run(shop, 5)
    assert v1 == v2
    for name in ("random", "oracle"):
        assert o1[name].items == o2[name].items
        assert o1[name].clicked == o2[name].clicked


def test_other_seed_other_visits(shop: SimulatedShop) -> None:
    v1, _ = _run(shop, 5, 50)
    v3, _ = _run(shop, 6, 50)
    assert [v.user.user_id for v in v1] != [v.user.user_id for v in v3]


def test_first_click_stops_reading() -> None:
    assert first_click([0.9, 0.1, 0.0], [0.5, 0.5, 0.5]) == 1
    assert first_click([0.9, 0.9], [0.5, 0.5]) is None
    assert first_click([0.0, 0.0], [0.0, 1.0]) == 1  # P = 0 is never clicked


def test_oracle_beats_random_and_has_no_regret(shop: SimulatedShop) -> None:
    _, out = _run(shop, 9, 1500)
    oracle, rand = out["oracle"].summary(), out["random"].summary()
    assert oracle["regret"] == pytest.approx(0.0, abs=1e-12)
    assert rand["regret"] > 0
    assert oracle["top1_ctr"] > rand["top1_ctr"] + 0.1


def test_instant_linucb_learns(shop: SimulatedShop) -> None:
    visits = make_visits(2000, 3, load_users())
    out = simulate(visits, [InstantLinUCB(len(shop.products), 15),
                            RandomPolicy(len(shop.products), 3)], shop)
    learned = np.asarray(out["linucb_instant"].clicked[1000:]) == 0
    rand = np.asarray(out["random"].clicked[1000:]) == 0
    assert learned.mean() > rand.mean() + 0.05


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_instant_linucb_follows_the_decaying_rule(seed: int) -> None:
    """RTREC_EXPLORATION=decaying in the closed loop's instant reference: its list is the top-k
    of contract.exploration.rule_scores on its own counts (as serving's)."""
    from contract import exploration, linucb

    rng = np.random.default_rng(seed)
    m, d = 30, 6
    inst = InstantLinUCB(m, d, exploration="decaying")
    for _ in range(80):
        inst.learn(int(rng.integers(0, m)), rng.uniform(0, 1, d), float(rng.random() < 0.2))
    x = rng.uniform(0, 1, d)
    var = np.einsum("mij,i,j->m", inst.A_inv, x, x)
    want = exploration.rule_scores("decaying", 1.0, inst.clicks, inst.observations, x, 1.0,
                                   inst.theta @ x, var)
    shown = inst.recommend(None, x, 5).items  # type: ignore[arg-type]
    assert shown == [int(i) for i in linucb.top_k(want, 5)]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_instant_linucb_follows_the_category_rate_rule(seed: int) -> None:
    """RTREC_EXPLORATION=category_rate in the instant reference: its list is the top-k of
    x.theta + q_c(x) l2 x'A^-1x / x.x with the pools summed as serving sums them (from each
    product's A_i - l2 I and b_i); without categories it is the decaying rule."""
    from contract import exploration, linucb

    rng = np.random.default_rng([seed, 22])
    m, d = 30, 6
    cats = [("a", "b", "c")[j % 3] for j in range(m)]
    inst = InstantLinUCB(m, d, exploration="category_rate", categories=cats)
    plain = InstantLinUCB(m, d, exploration="category_rate")
    for _ in range(120):
        j = int(rng.integers(0, m))
        x, r = rng.uniform(0, 1, d), float(rng.random() < 0.1 + 0.2 * (j % 3))
        inst.learn(j, x, r)
        plain.learn(j, x, r)
    S_i, b_i = exploration.pool_terms(inst.theta, inst.A_inv, 1.0)
    code = np.array([("a", "b", "c").index(c) for c in cats])
    S, t = np.zeros((3, d, d)), np.zeros((3, d))
    np.add.at(S, code, S_i)
    np.add.at(t, code, b_i)
    p = exploration.click_rate(inst.clicks, inst.observations)
    for _ in range(5):
        x = rng.uniform(0, 1, d)
        q = exploration.category_rates(exploration.category_solve(S, 1.0), t, x, p, 1.0)
        var = np.einsum("mij,i,j->m", inst.A_inv, x, x)
        want = inst.theta @ x + exploration.category_weights(q, x, 1.0)[code] * var
        assert inst.recommend(None, x, 5).items == [int(i) for i in linucb.top_k(want, 5)]  # type: ignore[arg-type]
        decaying = exploration.rule_scores("decaying", 1.0, plain.clicks, plain.observations,
                                           x, 1.0, plain.theta @ x, var)
        assert plain.recommend(None, x, 5).items == [int(i) for i in linucb.top_k(decaying, 5)]  # type: ignore[arg-type]


# Off-policy evaluation (endtoend/report.py off_policy) on a catalogue of 10 products (every
# 20th: all categories, the oracle's top-1 CTR ~0.37): a random list's first item matches the
# target's in 1 visit of 10 (600 per seed), not 1 of 200 (30).
OPE_PRODUCTS = 10
OPE_VISITS = 6000
OPE_SEEDS = (21, 22, 23, 24, 25)


@pytest.fixture(scope="module")
def ope_logs() -> list[dict]:
    """Per seed: the random policy's and the oracle's outcomes on the same visits."""
    fs = FeatureSpace.load()
    products = load_catalog()[::20]
    assert len(products) == OPE_PRODUCTS
    shop = SimulatedShop(products, fs, load_oracle("rules", fs))
    return [simulate(make_visits(OPE_VISITS, seed, load_users()),
                     [RandomPolicy(OPE_PRODUCTS, seed), OraclePolicy(shop)], shop)
            for seed in OPE_SEEDS]


def _truth_and_errors(out: dict) -> tuple[float, float, float]:
    """The oracle's true top-1 CTR on these visits (the expectation, from the click
    probabilities: each logged first item is clicked with exactly its probability), and the
    standard errors of its IPS and SNIPS estimates from the random log."""
    true = float(np.mean(out["oracle"].top1_prob))
    match = np.array([a[0] == b[0] for a, b in zip(out["random"].items, out["oracle"].items,
                                                   strict=True)])
    reward = np.asarray(out["random"].clicked) == 0
    se_ips = float(np.std(match * reward * OPE_PRODUCTS) / np.sqrt(OPE_VISITS))
    se_snips = float(np.std(reward[match]) / np.sqrt(match.sum()))
    return true, se_ips, se_snips


def test_off_policy_ips_and_snips_estimate_the_true_ctr_over_seeds(ope_logs: list[dict]) -> None:
    """IPS and SNIPS of the oracle's top-1 CTR from the random policy's log equal its true
    expected CTR within 4 standard errors on each of 5 seeds, and pooled over them; the
    importance weights average 1 (the propensity is the logging policy's). A propensity off by
    a quarter moves the pooled IPS out of its bound: the bound is tight enough to see one."""
    from endtoend.report import off_policy

    ips_err, se2 = [], []
    for seed, out in zip(OPE_SEEDS, ope_logs, strict=True):
        est = off_policy(out, OPE_PRODUCTS)
        true, se_ips, se_snips = _truth_and_errors(out)
        t = est["targets"]["oracle"]
        assert est["propensity"] == 1 / OPE_PRODUCTS
        assert abs(t["ips"] - true) <= 4 * se_ips, (seed, t, true, se_ips)
        assert abs(t["snips"] - true) <= 4 * se_snips, (seed, t, true, se_snips)
        # sum(w) / n = matches * m / n: 1 in expectation, sd sqrt(m - 1) / sqrt(n)
        mean_w = t["matches"] * OPE_PRODUCTS / OPE_VISITS
        assert abs(mean_w - 1) <= 4 * np.sqrt((OPE_PRODUCTS - 1) / OPE_VISITS), (seed, t)
        ips_err.append(t["ips"] - true)
        se2.append(se_ips**2)
    pooled_bound = 4 * np.sqrt(sum(se2)) / len(OPE_SEEDS)
    assert abs(np.mean(ips_err)) <= pooled_bound, (ips_err, pooled_bound)

    # the same logs weighted with a wrong propensity (1/8 or 1/12.5 for 1/10): IPS leaves it
    for wrong in (8, 12.5):
        errs = [off_policy(out, wrong)["targets"]["oracle"]["ips"]  # type: ignore[arg-type]
                - _truth_and_errors(out)[0] for out in ope_logs]
        assert abs(np.mean(errs)) > pooled_bound, (wrong, errs, pooled_bound)


def test_the_report_carries_the_off_policy_estimates(shop: SimulatedShop) -> None:
    from endtoend.report import summarize

    visits = make_visits(300, 21, load_users())
    out = simulate(visits, [RandomPolicy(len(shop.products), 21), OraclePolicy(shop)], shop)
    summary = summarize({"cold": out}, len(shop.products))["cold"]
    assert summary["off_policy"]["propensity"] == 1 / len(shop.products)
    assert set(summary["off_policy"]["targets"]) == {"oracle"}
