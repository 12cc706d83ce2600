"""The calibrated exploration rule against a hand computation, the SNIPS estimate against a
hand computation and the truth, and the self-tuning controller's guardrails on synthetic
streams of estimates (docs/EXPLORATION.md)."""

from __future__ import annotations

import itertools
import logging
import math

import numpy as np
import pytest

from contract import linucb
from contract.exploration import (
    Estimate,
    ExplorationError,
    SelfTuner,
    calibrated_alpha,
    click_rate,
    counts_from_params,
    decaying_weight,
    exploration_alpha,
    rule_scores,
    snips,
)
from contract.features import CONTEXT_DIM, CONTEXT_NAMES

SEEDS = (0, 1, 2, 3, 4)


def test_calibrated_alpha_by_hand() -> None:
    # 14 clicks in 98 observations: p = 15 / 100; |(3, 4)| = 5; sqrt(l2 = 4) = 2
    assert click_rate(14, 98) == pytest.approx(0.15)
    assert calibrated_alpha(14, 98, np.array([3.0, 4.0]), l2=4.0) == pytest.approx(0.15 * 2 / 5)
    assert calibrated_alpha(0, 0, np.array([0.0, 2.0]), l2=1.0) == pytest.approx(0.5 / 2)


def test_never_seen_product_scores_the_click_rate_and_the_bonus_shrinks_by_hand() -> None:
    x, l2 = np.array([3.0, 4.0]), 4.0
    alpha = calibrated_alpha(14, 98, x, l2)
    prior = linucb.init_state(2, l2)
    score = linucb.ucb_scores(linucb.theta(prior)[None], prior.A_inv[None], x, alpha)[0]
    assert score == pytest.approx(0.15)  # the prior's bonus: exactly p
    s = prior
    for _ in range(3):
        s = linucb.update(s, x, 0.0)
    # A = l2 I + 3 x x^T, so x^T A^-1 x = (x.x / l2) / (1 + 3 x.x / l2) = 6.25 / 19.75
    bonus = linucb.ucb_scores(linucb.theta(s)[None], s.A_inv[None], x, alpha)[0]
    assert bonus == pytest.approx(0.15 / math.sqrt(19.75), rel=1e-12)


def test_decaying_rule_by_hand() -> None:
    """The decaying rule: w = p l2 / x.x weighs x^T A^-1 x. 14 clicks in 98 observations give
    p = 0.15; x = (3, 4), l2 = 4: w = 0.15 * 4 / 25 = 0.024. A never-seen product scores
    w * x.x / l2 = 0.15 = p; after 3 observations of x (no click) its bonus is
    p / (1 + 3 * 25 / 4) = 0.15 / 19.75: it decays like 1/n, not 1/sqrt(n)."""
    x, l2 = np.array([3.0, 4.0]), 4.0
    assert decaying_weight(14, 98, x, l2) == pytest.approx(0.024, rel=1e-12)
    prior = linucb.init_state(2, l2)
    var0 = float(x @ prior.A_inv @ x)
    assert var0 == pytest.approx(25 / 4)
    s0 = rule_scores("decaying", 0.0, 14, 98, x, l2, np.array([0.0]), np.array([var0]))
    assert s0[0] == pytest.approx(0.15, rel=1e-12)
    s = prior
    for _ in range(3):
        s = linucb.update(s, x, 0.0)
    var3 = float(x @ s.A_inv @ x)  # (x.x / l2) / (1 + 3 x.x / l2) = 6.25 / 19.75
    s3 = rule_scores("decaying", 0.0, 14, 98, x, l2, np.array([0.0]), np.array([var3]))
    assert s3[0] == pytest.approx(0.15 / 19.75, rel=1e-12)
    # the calibrated rule's bonus at the same point is 0.15 / sqrt(19.75): larger
    c3 = rule_scores("calibrated", 0.0, 14, 98, x, l2, np.array([0.0]), np.array([var3]))
    assert c3[0] == pytest.approx(0.15 / math.sqrt(19.75), rel=1e-12) and c3[0] > s3[0]
    # the fixed rule: mean + alpha sqrt(var), whatever the counts
    f = rule_scores("fixed", 0.5, 14, 98, x, l2, np.array([0.1, 0.2]), np.array([4.0, 0.0]))
    assert f.tolist() == pytest.approx([0.1 + 0.5 * 2.0, 0.2])
    assert decaying_weight(3, 9, np.zeros(2), 1.0) == 0.0
    with pytest.raises(ExplorationError, match="no alpha"):
        exploration_alpha("decaying", 1.0, 1, 2, x, l2)
    with pytest.raises(ExplorationError, match="not finite"):
        decaying_weight(1, 2, np.array([np.nan, 1.0]), 1.0)


@pytest.mark.parametrize("seed", SEEDS[:3])
def test_decaying_score_is_the_posterior_mean_under_a_prior_at_the_click_rate(seed: int) -> None:
    """Why the decaying bonus is what it is: with a Gaussian prior centred on theta_0 =
    p x / (x.x) (which predicts p for this x) instead of 0, ridge's posterior mean at x is
    x.theta + l2 x^T A^-1 theta_0 = x.theta + (p l2 / x.x) x^T A^-1 x: the decaying score.
    Checked on random learned states (3 seeds)."""
    rng = np.random.default_rng(seed)
    d, l2 = 6, 2.0
    s = linucb.init_state(d, l2)
    for _ in range(int(rng.integers(1, 40))):
        s = linucb.update(s, rng.normal(size=d), float(rng.random() < 0.3))
    x = rng.normal(size=d)
    clicks, n = 7, 60
    p = click_rate(clicks, n)
    theta0 = p * x / float(x @ x)
    A = np.linalg.inv(s.A_inv)
    posterior = np.linalg.solve(A, s.b + l2 * theta0)  # prior N(theta0, I / l2), same data
    got = rule_scores("decaying", 0.0, clicks, n, x, l2, np.array([linucb.theta(s) @ x]),
                      np.array([x @ s.A_inv @ x]))[0]
    assert got == pytest.approx(float(posterior @ x), rel=1e-9)


def test_fixed_rule_is_the_old_alpha_and_bad_input_is_refused() -> None:
    x = np.array([1.0, 1.0])
    assert exploration_alpha("fixed", 1.0, 5, 10, x, 1.0) == 1.0
    assert exploration_alpha("calibrated", 1.0, 5, 10, x, 1.0) == pytest.approx(
        (6 / 12) / math.sqrt(2))
    with pytest.raises(ExplorationError, match="not one of"):
        exploration_alpha("ucb2", 1.0, 5, 10, x, 1.0)
    with pytest.raises(ExplorationError, match="clicks"):
        click_rate(11, 10)
    with pytest.raises(ExplorationError, match="not finite"):
        calibrated_alpha(1, 2, np.array([np.inf, 0.0]), 1.0)
    # x.x would overflow; |x| does not
    assert calibrated_alpha(1, 2, np.array([3e200, 4e200]), 1.0) == pytest.approx(0.5 / 5e200)
    assert calibrated_alpha(1, 2, np.zeros(3), 1.0) == 0.0


@pytest.mark.parametrize("seed", SEEDS[:3])
def test_counts_read_back_from_published_parameters(seed: int) -> None:
    """Clicks and observations of several products, learned by the contract's maths, come
    back exactly (to rounding) from theta and A^-1 alone, as serving holds them."""
    rng = np.random.default_rng(seed)
    tod = [i for i, n in enumerate(CONTEXT_NAMES) if n.startswith("tod_")]
    states, clicks, n = [], 0, 0
    for _ in range(4):
        s = linucb.init_state(CONTEXT_DIM, l2=2.0)
        for _ in range(int(rng.integers(0, 30))):
            x = rng.random(CONTEXT_DIM)
            x[tod] = 0.0
            x[tod[int(rng.integers(0, 3))]] = 1.0
            r = float(rng.random() < 0.3)
            s = linucb.update(s, x, r)
            clicks, n = clicks + int(r), n + 1
        states.append(s)
    thetas = np.stack([linucb.theta(s) for s in states])
    got = counts_from_params(thetas, np.stack([s.A_inv for s in states]), l2=2.0)
    assert got == (pytest.approx(clicks, abs=1e-6), pytest.approx(n, abs=1e-6))
    # another layout of x has no such block: the rule falls back to its prior
    assert counts_from_params(np.zeros((2, 3)), np.stack([np.eye(3)] * 2), 1.0) == (0.0, 0.0)


def test_snips_by_hand() -> None:
    # w = (2, 1, 0, 1): value (2*1 + 0 + 0) / 4 = 0.5;
    # se = sqrt(4 * 0.25 + 1 * 0.25 + 1 * 0.25) / 4 = sqrt(1.5) / 4
    e = snips(np.array([1.0, 0.0, 1.0, 0.0]), np.array([True, True, False, True]),
              np.array([0.5, 1.0, 0.5, 1.0]), z=1.0)
    se = math.sqrt(1.5) / 4
    assert (e.value, e.n, e.matched) == (0.5, 4, 3)
    assert (e.lower, e.upper) == (pytest.approx(0.5 - se), pytest.approx(0.5 + se))
    none = snips(np.ones(3), np.zeros(3, dtype=bool), np.ones(3))
    assert (none.value, none.lower, none.upper, none.matched) == (0.0, 0.0, 1.0, 0)
    with pytest.raises(ExplorationError, match="propensity"):
        snips(np.ones(2), np.ones(2, dtype=bool), np.array([0.5, 0.0]))


@pytest.mark.parametrize("seed", SEEDS)
def test_snips_interval_covers_the_truth(seed: int) -> None:
    """A log of a random policy over 4 items with known click rates; the target always shows
    item 2. Its true value 0.3 lies within 4 standard errors of the estimate."""
    rng = np.random.default_rng(seed)
    n, rates = 4000, np.array([0.05, 0.1, 0.3, 0.2])
    mu = np.array([0.4, 0.3, 0.1, 0.2])
    shown = rng.choice(4, size=n, p=mu)
    rewards = (rng.random(n) < rates[shown]).astype(float)
    e = snips(rewards, shown == 2, mu[shown], z=4.0)
    assert e.lower <= 0.3 <= e.upper
    assert e.upper - e.lower < 0.2  # informative, not [0, 1]


def _est(v: float, half: float) -> Estimate:
    return Estimate(v, v - half, v + half, 1000, 100)


def test_no_switch_without_the_margin(caplog: pytest.LogCaptureFixture) -> None:
    t = SelfTuner(["a", "b"], "a", min_explore_share=0.1, margin=0.02)
    # intervals overlap: b looks better but is not shown to be
    assert t.observe(0, {"a": _est(0.10, 0.02), "b": _est(0.13, 0.02)}) == "a"
    # disjoint, but by 0.01 < margin 0.02
    assert t.observe(1, {"a": _est(0.10, 0.01), "b": _est(0.12, 0.00)}) == "a"
    assert t.switch_count == 0
    with caplog.at_level(logging.INFO, logger="contract.exploration"):
        # b's lower bound 0.14 beats a's upper 0.11 by 0.03 >= 0.02
        assert t.observe(2, {"a": _est(0.10, 0.01), "b": _est(0.15, 0.01)}) == "b"
    assert t.switch_count == 1 and t.live == "b"
    assert [(s.from_, s.to, s.at) for s in t.switches] == [("a", "b", 2)]
    assert "exploration switch #1 at 2: a -> b" in caplog.text


@pytest.mark.parametrize("seed", SEEDS)
def test_guardrails_on_a_random_stream(seed: int) -> None:
    """Random estimates of 4 candidates for 400 rounds: every switch cleared the margin,
    switches are at least min_interval apart, and the share of the candidates other than the
    live one never falls below min_explore_share (each gets its part)."""
    rng = np.random.default_rng(seed)
    names = ["calibrated", "a0.1", "a0.3", "a1"]
    t = SelfTuner(names, "calibrated", min_explore_share=0.12, margin=0.01, min_interval=7)
    for step in range(400):
        estimates = {n: _est(float(rng.uniform(0.05, 0.3)), float(rng.uniform(0.0, 0.05)))
                     for n in names}
        before = t.live
        after = t.observe(float(step), estimates)
        if after != before:
            assert estimates[after].lower - estimates[before].upper >= 0.01
        shares = t.shares()
        assert sum(shares.values()) == pytest.approx(1.0)
        others = [s for n, s in shares.items() if n != t.live]
        assert sum(others) == pytest.approx(0.12)
        assert min(others) == pytest.approx(0.12 / 3)
    times = [s.at for s in t.switches]
    assert len(times) >= 5  # the stream did call for switches
    assert all(b - a >= 7 for a, b in itertools.pairwise(times))


@pytest.mark.parametrize("seed", SEEDS)
def test_rate_limit_holds_when_every_round_asks_to_switch(seed: int) -> None:
    """The candidates take turns clearly dominating: without the limit it would switch every
    round; with min_interval 10 over 100 rounds it switches at most 10 times."""
    rng = np.random.default_rng(seed)
    names = ["a", "b", "c"]
    t = SelfTuner(names, "a", min_explore_share=0.1, margin=0.05, min_interval=10)
    free = SelfTuner(names, "a", min_explore_share=0.1, margin=0.05, min_interval=0)
    for step in range(100):
        top = names[(step + int(rng.integers(1, 3))) % 3]
        estimates = {n: _est(0.5 if n == top else 0.1, 0.01) for n in names}
        t.observe(float(step), estimates)
        free.observe(float(step), estimates)
    assert free.switch_count >= 50
    assert 1 <= t.switch_count <= 10
    assert all(b.at - a.at >= 10 for a, b in itertools.pairwise(t.switches))


def test_controller_refuses_settings_that_remove_a_guardrail() -> None:
    with pytest.raises(ExplorationError, match="min_explore_share"):
        SelfTuner(["a", "b"], "a", min_explore_share=0.0)
    with pytest.raises(ExplorationError, match="not a candidate"):
        SelfTuner(["a", "b"], "c")
    with pytest.raises(ExplorationError, match=">= 0"):
        SelfTuner(["a", "b"], "a", margin=-0.1)
    assert SelfTuner(["a"], "a", min_explore_share=0.0).shares() == {"a": 1.0}
