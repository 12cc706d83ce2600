"""RTREC_EXPLORATION=category_rate in the learning benchmark: ``linucb_category_rate`` is one
of the rules the stated criterion chooses among (bench.bench_learning.targets/choose_rule);
as the system's default it is the row the issue's targets are checked on, in every run, and
the self-tuning learner starts on it."""

from __future__ import annotations

import numpy as np
import pytest

from bench.bench_learning import targets
from bench.learning_peers import DEFAULT, OPT_IN, RULES, make_learners
from contract.config import Settings


def _row(regret: float) -> dict[str, float]:
    return {"regret": regret}


@pytest.mark.parametrize("winner", ["linucb_decaying", "linucb_category_rate"])
def test_the_criterion_weighs_category_rate_beside_the_other_rules(winner: str) -> None:
    assert "linucb_category_rate" in RULES
    loser = "linucb_decaying" if winner == "linucb_category_rate" else "linucb_category_rate"
    table = {w: {s: {"river_linucb": _row(100.0), "vw_epsilon": _row(150.0),
                     DEFAULT: _row(105.0),
                     winner: _row(70.0 if s == "cold" else 90.0), loser: _row(110.0)}
                 for s in ("cold", "pretrained")} for w in ("rules", "bench_rules")}
    goals = targets(table)
    cold = goals["rules"]["cold"]["rules"]
    assert cold["linucb_category_rate"]["ratio_to_best_peer"] in (0.7, 1.1)
    assert cold[winner]["ok"] and not cold[loser]["ok"]
    assert goals["choice"]["chosen"] == winner
    assert goals["choice"]["mean_ratio_to_best_peer"][winner] == pytest.approx(0.8)


def test_the_rows_are_the_category_pooled_learners_and_the_default_in_every_run() -> None:
    rate, ucb = make_learners(200, 15, 1, only=["linucb_category_rate", "linucb_category_ucb"])
    for learner in (rate, ucb):
        assert learner.centre == "rate" and int(learner.group.max()) + 1 \
            == learner.A0.shape[0] > 1
        assert learner.name not in OPT_IN
        assert learner.name in [lr.name for lr in make_learners(200, 15, 1)]
    assert (rate.optimism, ucb.optimism) == (0.0, 1.0)
    assert DEFAULT == f"linucb_{Settings.from_env({}).model.exploration}" \
        == "linucb_category_ucb"


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_self_tuning_starts_on_the_default_and_its_candidates_are_those_rules(seed: int) -> None:
    """On the same data, the self-tuner's category_ucb and category_rate candidates rank as
    their rows do, and with every share on the live candidate (the default) it shows what the
    default's row shows."""
    ref, rate, tuned = make_learners(200, 15, seed, only=[
        "linucb_category_ucb", "linucb_category_rate", "self_tuning"])
    assert tuned.tuner.live == "category_ucb" and "category_rate" in tuned.candidates
    rng = np.random.default_rng(seed)
    X = rng.random((300, 15))
    items = rng.integers(0, 200, 300)
    rewards = (rng.random(300) < 0.2).astype(float)
    for lr in (ref, rate, tuned):
        lr.pretrain(X, items, rewards)
    tuned.tuner.min_explore_share = 0.0  # every visit served by the live candidate
    for x in rng.random((20, 15)):
        np.testing.assert_allclose(tuned.candidate_scores("category_ucb", x), ref.scores(x),
                                   rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(tuned.candidate_scores("category_rate", x), rate.scores(x),
                                   rtol=1e-12, atol=1e-15)
        assert tuned.rank(x) == ref.rank(x)
    assert not np.allclose(ref.scores(x), rate.scores(x))  # the optimism changes scores


def test_self_tuning_without_categories_has_no_category_candidate() -> None:
    from bench.learning_peers import SelfTuningLinUCB

    tuned = SelfTuningLinUCB("self_tuning", 10, 3, 1)
    assert not {"category_rate", "category_ucb"} & set(tuned.candidates)
    assert tuned.tuner.live == "decaying"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_nested_rule_centres_an_empty_category_on_the_shops_shared_rate(seed: int) -> None:
    """``linucb_nested_rate`` (opt-in): a category with no data is worth the shop's shared
    model's rate for x, ``q_0(x) = x^T (l2 I + S)^-1 (t + l2 p x / x.x)``, computed here by
    hand from the raw observations; ``linucb_category_rate`` gives it the scalar ``p``."""
    (nested,) = make_learners(200, 15, seed, only=["linucb_nested_rate"])
    (flat,) = make_learners(200, 15, seed, only=["linucb_category_rate"])
    rng = np.random.default_rng(seed)
    empty = int(nested.group[0])
    others = np.flatnonzero(nested.group != empty)
    X = rng.random((200, 15))
    items = rng.choice(others, 200)
    rewards = (rng.random(200) < 0.3).astype(float)
    nested.pretrain(X, items, rewards)
    flat.pretrain(X, items, rewards)
    x = rng.random(15)
    xx = float(x @ x)
    p = (rewards.sum() + 1.0) / (len(rewards) + 2.0)
    q0 = x @ np.linalg.solve(np.eye(15) + X.T @ X, X.T @ rewards + p * x / xx)
    unseen = np.flatnonzero(nested.group == empty)
    np.testing.assert_allclose(nested.scores(x)[unseen], q0, rtol=1e-9)
    np.testing.assert_allclose(flat.scores(x)[unseen], p, rtol=1e-9)
    assert abs(q0 - p) > 1e-3  # the two centres differ on this data
