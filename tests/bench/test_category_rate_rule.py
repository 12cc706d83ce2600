"""RTREC_EXPLORATION=category_rate in the learning benchmark: ``linucb_category_rate`` is one
of the rules the stated criterion chooses among (bench.bench_learning.targets/choose_rule),
when a run names it."""

from __future__ import annotations

import pytest

from bench.bench_learning import targets
from bench.learning_peers import OPT_IN, RULES, make_learners


def _row(regret: float) -> dict[str, float]:
    return {"regret": regret}


@pytest.mark.parametrize("winner", ["linucb_decaying", "linucb_category_rate"])
def test_the_criterion_weighs_category_rate_beside_the_other_rules(winner: str) -> None:
    assert "linucb_category_rate" in RULES
    loser = "linucb_decaying" if winner == "linucb_category_rate" else "linucb_category_rate"
    table = {w: {s: {"river_linucb": _row(100.0), "vw_epsilon": _row(150.0),
                     winner: _row(70.0 if s == "cold" else 90.0), loser: _row(110.0)}
                 for s in ("cold", "pretrained")} for w in ("rules", "bench_rules")}
    goals = targets(table)
    cold = goals["rules"]["cold"]["rules"]
    assert cold["linucb_category_rate"]["ratio_to_best_peer"] in (0.7, 1.1)
    assert cold[winner]["ok"] and not cold[loser]["ok"]
    assert goals["choice"]["chosen"] == winner
    assert goals["choice"]["mean_ratio_to_best_peer"][winner] == pytest.approx(0.8)


def test_the_row_is_the_category_pooled_learner_and_opt_in() -> None:
    (learner,) = make_learners(200, 15, 1, only=["linucb_category_rate"])
    assert learner.centre == "rate" and int(learner.group.max()) + 1 == learner.A0.shape[0] > 1
    assert "linucb_category_rate" in OPT_IN  # runs only when named (--only)
