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


def test_off_policy_estimates_from_the_random_log_track_the_online_ctr(shop: SimulatedShop) -> None:
    from endtoend.report import off_policy, summarize

    visits = make_visits(6000, 21, load_users())
    out = simulate(visits, [RandomPolicy(len(shop.products), 21), OraclePolicy(shop)], shop)
    est = off_policy(out, len(shop.products))["targets"]["oracle"]
    assert est["matches"] > 10
    # unbiased but noisy (about 30 matched visits): the same side of random's CTR as online
    random_ctr = out["random"].summary()["top1_ctr"]
    assert est["snips"] > random_ctr and est["online"] > random_ctr
    assert abs(est["snips"] - est["online"]) < 0.25
    assert "off_policy" in summarize({"cold": out}, len(shop.products))["cold"]
