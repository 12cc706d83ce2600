"""serving/experiments.py: a variant's ranking and the probabilities it logs, shadows ranked
from the same scores, per-variant counters and their Wilson interval."""

from __future__ import annotations

import numpy as np
import pytest

from contract.experiments import Experiment
from contract.slates import PlackettLuce
from serving.experiments import ExperimentRunner, wilson

EXP = Experiment.from_dict({"name": "e", "salt": "s", "variants": [
    {"name": "pl", "policy": "plackett_luce", "alpha": 0.5, "temperature": 0.2,
     "epsilon": 0.1, "share": 0.4},
    {"name": "rnd", "policy": "random", "share": 0.3},
    {"name": "ucb", "policy": "linucb", "share": 0.3}],
    "shadows": [{"name": "greedy", "policy": "greedy"},
                {"name": "a2", "policy": "linucb", "alpha": 2.0}]})


def scores_fn(base: np.ndarray, bonus: np.ndarray):
    return lambda x, alpha: base + alpha * bonus


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_rankings_and_their_logged_probabilities(seed: int) -> None:
    rng = np.random.default_rng(seed)
    m, k = 30, 5
    base, bonus = rng.random(m), rng.random(m)
    fn = scores_fn(base, bonus)
    run = ExperimentRunner(EXP, default_alpha=1.0)
    eligible = np.sort(rng.choice(m, size=12, replace=False))
    pl = run.rank(EXP.variant("pl"), fn, m, np.ones(3), k, rng, eligible=eligible)
    assert set(pl.indices.tolist()) <= set(eligible.tolist())
    ref = PlackettLuce((base + 0.5 * bonus)[eligible], 0.2, 0.1)
    pos = [int(np.flatnonzero(eligible == i)[0]) for i in pl.indices]
    assert np.allclose(pl.prefix, ref.prefix_probabilities(pos))
    assert np.allclose(pl.slots, ref.slot_marginals(pos))
    assert pl.propensity == pytest.approx(ref.list_probability(pos))
    rnd = run.rank(EXP.variant("rnd"), fn, m, np.ones(3), k, rng, eligible=eligible)
    assert rnd.propensity == pytest.approx(1 / (12 * 11 * 10 * 9 * 8))
    assert np.allclose(rnd.slots, 1 / 12)
    ucb = run.rank(EXP.variant("ucb"), fn, m, np.ones(3), k, rng)
    assert ucb.propensity == 1.0 and ucb.prefix is None
    assert ucb.indices.tolist() == np.argsort(-(base + bonus))[:k].tolist()  # default alpha
    ids = [f"p{i}" for i in range(m)]
    sh = run.shadows(fn, np.ones(3), k, ids)
    assert sh["greedy"] == tuple(ids[i] for i in np.argsort(-base)[:k])
    assert sh["a2"] == tuple(ids[i] for i in np.argsort(-(base + 2 * bonus))[:k])
    sh_e = run.shadows(fn, np.ones(3), k, ids, eligible=eligible)
    assert {p for lst in sh_e.values() for p in lst} <= {ids[i] for i in eligible}


def test_counters_report_ctr_with_an_interval() -> None:
    run = ExperimentRunner(EXP, default_alpha=1.0)
    for _ in range(200):
        run.count_impression("pl")
    for _ in range(50):
        run.count_click("pl")
    run.count_click("unknown-variant")  # a click of a request another replica served
    rep = run.report()
    assert rep["pl"]["impressions"] == 200 and rep["pl"]["clicks"] == 50
    assert rep["pl"]["ctr"] == 0.25
    assert rep["pl"]["ctr_low"] < 0.25 < rep["pl"]["ctr_high"]
    assert rep["rnd"] == {"impressions": 0, "clicks": 0, "ctr": 0.0, "ctr_low": 0.0,
                          "ctr_high": 1.0}
    names = {f.name for f in run.metric_families()}
    assert names == {"rtrec_experiment_impressions", "rtrec_experiment_clicks",
                     "rtrec_experiment_ctr"}


@pytest.mark.parametrize("p, n", [(0.05, 200), (0.3, 100), (0.6, 1000)])
def test_the_wilson_interval_covers_about_95_percent(p: float, n: int) -> None:
    rng = np.random.default_rng([int(p * 100), n])
    clicks = rng.binomial(n, p, size=4000)
    cover = np.mean([lo <= p <= hi for lo, hi in (wilson(int(c), n) for c in clicks)])
    assert 0.93 <= cover <= 0.975
