"""The closed-loop evaluation of self-tuning (endtoend/selftune_loop.py), on short runs: every
fixed candidate gets the visits and click draws the closed loop's reference learner gets (its
regret equals endtoend.simulation.simulate's on the same visits), the loop's split follows the
controller's shares, and a loop whose other candidates get almost no traffic is its first
candidate alone until it switches."""

from __future__ import annotations

import numpy as np
import pytest

from contract.exploration import parse_candidates
from contract.features import FeatureSpace, load_catalog, load_users
from endtoend import selftune_loop as sl
from endtoend.simulation import InstantLinUCB, SimulatedShop, make_visits, simulate
from producer.oracle import load_oracle

CANDS = parse_candidates("calibrated,alpha=0.3")
ARGS = {"min_share": 0.1, "margin": 0.01, "interval": 100.0, "min_matched": 50, "every": 50}


@pytest.mark.parametrize("seed", [1, 2])
def test_fixed_candidates_see_the_closed_loops_visits_and_draws(seed: int) -> None:
    visits = make_visits(300, seed, load_users(), sl.K)
    res = sl.run_one("rules", visits, seed, CANDS, **ARGS)
    features = FeatureSpace.load()
    products = load_catalog()
    shop = SimulatedShop(products, features, load_oracle("rules", features))
    ref = InstantLinUCB(len(products), features.dim, exploration="calibrated")
    got = simulate(visits, [ref], shop, k=sl.K)[ref.name].summary()
    assert res["calibrated"]["regret"] == pytest.approx(got["regret"], abs=1e-9)
    assert res["calibrated"]["top1_ctr"] == pytest.approx(got["top1_ctr"])
    st = res["self_tune"]
    assert sum(st["served"].values()) == 300
    assert sum(st["regret_by_served"].values()) == pytest.approx(st["regret"])
    if not st["switches"]:  # the live one ~90 % of the visits (5 binomial standard errors)
        share = st["served"]["calibrated"] / 300
        assert abs(share - 0.9) < 5 * (0.09 / 300) ** 0.5, st["served"]


@pytest.mark.parametrize("seed", [3, 4])
def test_a_loop_that_never_draws_the_others_is_its_first_candidate(seed: int) -> None:
    """With the others' share at 1e-9 and a margin no estimate meets, the loop shows what its
    first candidate alone shows, visit by visit: same regret to the last bit."""
    visits = make_visits(250, seed, load_users(), sl.K)
    res = sl.run_one("rules", visits, seed, CANDS, min_share=1e-9, margin=1.0,
                     interval=0.0, min_matched=0, every=50)
    assert res["self_tune"]["regret"] == res["calibrated"]["regret"]
    assert res["self_tune"]["served"]["alpha_0.3"] == 0
    assert np.isfinite(res["alpha_0.3"]["regret"])
