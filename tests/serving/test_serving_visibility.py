"""A live catalog with retired and out-of-stock products (serving/catalog.py) keeps a request
that asks for no control on the plain path, over the products it may show: an experiment's
exploring variant still samples its list and logs the probabilities, self-tuning still logs
every candidate's list and the mixture's probabilities, the shadows rank the same products,
and nothing hidden is ever shown. Before, one retired or out-of-stock product sent every
request through the controls' selection, which logs no probabilities: the off-policy
estimates and the self-tuning lost every impression from then on."""

from __future__ import annotations

import numpy as np
import pytest

from contract import exploration, linucb
from contract.catalog import Catalog, ProductRecord
from contract.codec import Params
from contract.config import Settings
from contract.experiments import Experiment
from contract.features import CONTEXT_DIM
from contract.slates import PlackettLuce
from serving.eventlog import MemoryEventLog
from serving.recommender import Recommender
from serving.snapshot import Snapshot
from tests.helpers import PRODUCTS

D = CONTEXT_DIM
EXP = Experiment.from_dict({"name": "e1", "salt": "s", "variants": [
    {"name": "explore", "policy": "plackett_luce", "alpha": 1.0, "temperature": 0.05,
     "epsilon": 0.1, "share": 1.0}],
    "shadows": [{"name": "greedy", "policy": "greedy"}]})


def _snapshot(seed: int) -> Snapshot:
    rng = np.random.default_rng(seed)
    params = {}
    for p in PRODUCTS:
        scale = rng.uniform(0.05, 1.0)
        theta = rng.normal(0, 0.3, size=D)
        params[p] = Params(linucb.ArmState(np.eye(D) * scale, theta / scale, 5), 1)
    return Snapshot.from_params(PRODUCTS, D, 1.0, params)


def _hide(rec: Recommender, seed: int) -> tuple[set[str], set[str]]:
    """Retire 15 products and put 15 others out of stock through the live catalog."""
    rng = np.random.default_rng(seed)
    picked = [str(p) for p in rng.choice(PRODUCTS, 30, replace=False)]
    retired, out = set(picked[:15]), set(picked[15:])
    cat = Catalog()
    for off, p in enumerate(PRODUCTS):
        if p in retired:
            cat.apply(p.encode(), None, off)
        else:
            cat.apply(p.encode(), ProductRecord(p, "c", 1.0, in_stock=p not in out).to_json(),
                      off)
    rec.apply_catalog(cat)
    return retired, out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_an_exploring_variant_samples_over_the_visible_products_and_logs_its_probabilities(
        seed: int) -> None:
    s = Settings.from_env({"RTREC_EXPLORATION": "fixed"})
    rec = Recommender(s, snapshot=_snapshot(seed), events=MemoryEventLog(), seed=seed,
                      experiment=EXP)
    retired, out = _hide(rec, seed)
    hidden = retired | out
    visible = [i for i, p in enumerate(PRODUCTS) if p not in hidden]
    rng = np.random.default_rng(seed)
    for user in range(150):
        x = rng.random(D)
        r = rec.recommend(user, x=x, k=5)
        imp = rec.events.events[-1]
        shown = [it.product_id for it in r.items]
        assert not set(shown) & hidden
        assert not set(dict(imp.shadows)["greedy"]) & hidden
        assert imp.policy == "plackett_luce" and imp.prefix_propensities is not None
        pl = PlackettLuce(rec.snapshot.scores(x, 1.0)[visible], 0.05, 0.1)
        pos = [visible.index(PRODUCTS.index(p)) for p in shown]
        assert imp.prefix_propensities == pytest.approx(pl.prefix_probabilities(pos))
        assert imp.slot_propensities == pytest.approx(pl.slot_marginals(pos))
        assert imp.eligible_n == len(visible) == r.eligible_n
        assert f"retired:{len(retired)}" in imp.controls and f"in_stock:{len(out)}" in imp.controls
        want = [PRODUCTS[visible[i]] for i in linucb.top_k(rec.snapshot.scores(x, 0.0)[visible],
                                                           5)]
        assert list(dict(imp.shadows)["greedy"]) == want


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_self_tuning_logs_every_candidates_list_and_the_mixture_after_a_retirement(
        seed: int) -> None:
    s = Settings.from_env({"RTREC_SELF_TUNE": "calibrated,alpha=0.05,alpha=2"})
    rec = Recommender(s, snapshot=_snapshot(seed), events=MemoryEventLog(), seed=seed)
    retired, out = _hide(rec, seed)
    hidden = retired | out
    assert rec.self_tune is not None
    shares = rec.self_tune.shares()
    rng = np.random.default_rng(seed)
    differ = 0
    for user in range(150):
        rec.recommend(user, x=rng.random(D))
        imp = rec.events.events[-1]
        lists = dict(imp.shadows)
        assert set(lists) == set(shares) and lists[imp.variant] == imp.products
        assert not {p for lst in lists.values() for p in lst} & hidden
        prefix, slots = exploration.mixture_probabilities(lists, shares, imp.products)
        assert imp.prefix_propensities == pytest.approx(prefix, abs=1e-12)
        assert imp.slot_propensities == pytest.approx(slots, abs=1e-12)
        differ += len({lst[0] for lst in lists.values()}) > 1
    assert differ > 10


@pytest.mark.parametrize("seed", [7, 8])
@pytest.mark.parametrize("policy", ["linucb", "greedy", "random"])
def test_a_plain_request_shows_the_best_visible_products_and_says_what_was_hidden(
        seed: int, policy: str) -> None:
    s = Settings.from_env({"RTREC_EXPLORATION": "fixed"})
    rec = Recommender(s, snapshot=_snapshot(seed), events=MemoryEventLog(), seed=seed)
    retired, out = _hide(rec, seed)
    hidden = retired | out
    visible = [i for i, p in enumerate(PRODUCTS) if p not in hidden]
    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    for user in range(100):
        x = rng.random(D)
        r = rec.recommend(user, x=x, k=5, policy=policy)
        shown = [it.product_id for it in r.items]
        seen |= set(shown)
        assert len(shown) == 5 and not set(shown) & hidden
        assert r.eligible_n == len(visible) and f"retired:{len(retired)}" in r.controls
        if policy != "random":
            a = 1.0 if policy == "linucb" else 0.0
            best = linucb.top_k(rec.snapshot.scores(x, a)[visible], 5)
            assert shown == [PRODUCTS[visible[i]] for i in best]
        else:
            n = len(visible)
            assert r.propensity == pytest.approx(1 / (n * (n - 1) * (n - 2) * (n - 3) * (n - 4)))
    if policy == "random":
        assert len(seen) > 100  # draws over the visible products, not a fixed list
