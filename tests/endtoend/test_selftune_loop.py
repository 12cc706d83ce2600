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


@pytest.mark.parametrize("seed", [5, 6])
def test_category_rate_candidate_is_the_closed_loops_reference_under_the_default(
        seed: int) -> None:
    """The system's default rule (category_rate, the catalog's categories) as a candidate:
    alone it gets exactly the closed loop's reference learner's regret under that setting,
    and a loop that never draws the others shows what it shows (the shared model keeps the
    pools while the other candidates rank without them)."""
    visits = make_visits(250, seed, load_users(), sl.K)
    cands = parse_candidates("category_rate,alpha=0.3,decaying")
    res = sl.run_one("rules", visits, seed, cands, min_share=1e-9, margin=1.0,
                     interval=0.0, min_matched=0, every=50)
    features = FeatureSpace.load()
    products = load_catalog()
    shop = SimulatedShop(products, features, load_oracle("rules", features))
    ref = InstantLinUCB(len(products), features.dim, exploration="category_rate",
                        categories=[p.category for p in products])
    got = simulate(visits, [ref], shop, k=sl.K)[ref.name].summary()
    assert res["category_rate"]["regret"] == pytest.approx(got["regret"], abs=1e-9)
    assert res["self_tune"]["regret"] == res["category_rate"]["regret"]
    # the pools change the ranking: category_rate is not decaying on this catalog
    assert res["decaying"]["regret"] != res["category_rate"]["regret"]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_shared_model_ranks_each_candidate_by_its_own_rule_while_keeping_pools(
        seed: int) -> None:
    """The loop's one model keeps the category pools for its category_rate candidate; set to
    another candidate's rule it ranks exactly as a model without pools that learned the same."""
    features = FeatureSpace.load()
    products = load_catalog()
    m, d = len(products), features.dim
    pooled = InstantLinUCB(m, d, exploration="category_rate",
                           categories=[p.category for p in products])
    plain = InstantLinUCB(m, d)
    rng = np.random.default_rng(seed)
    for _ in range(400):
        x, item, r = rng.random(d), int(rng.integers(m)), float(rng.random() < 0.3)
        pooled.learn(item, x, r)
        plain.learn(item, x, r)
    visit = make_visits(1, seed, load_users(), sl.K)[0]
    for rule, alpha in (("fixed", 0.3), ("decaying", 0.0), ("calibrated", 0.0)):
        pooled.exploration, pooled.alpha = rule, alpha
        plain.exploration, plain.alpha = rule, alpha
        for x in rng.random((5, d)):
            assert pooled.recommend(visit, x, sl.K).items == plain.recommend(visit, x, sl.K).items
