"""The churn simulation's pieces (endtoend/churn.py): newcomers are siblings of their category,
nothing is shown outside the catalog of its visit, and the informed learner's pool and each
product's first step are the category prior's batch formula."""

from __future__ import annotations

import numpy as np
import pytest

from contract import linucb
from contract.features import CATEGORIES, FeatureSpace, load_catalog, load_users
from contract.prior import informed_state
from endtoend import churn
from endtoend.simulation import SimulatedShop, first_click, make_visits
from producer.oracle import load_oracle

SEEDS = (1, 2, 3)


@pytest.mark.parametrize("seed", SEEDS)
def test_newcomers_spread_over_the_categories_as_siblings(seed: int) -> None:
    base = load_catalog()
    added = churn.new_products(base, 16, seed)
    assert [p.category for p in added] == [CATEGORIES[i % 8] for i in range(16)]
    assert len({p.product_id for p in added}) == 16
    assert not {p.product_id for p in added} & {p.product_id for p in base}
    texts = {(p.name, p.description, p.category) for p in base}
    for p in added:
        assert (p.name, p.description, p.category) in texts
        sib = next(b for b in base if (b.name, b.description) == (p.name, p.description))
        assert 0.8 * sib.price - 0.01 <= p.price <= 1.2 * sib.price + 0.01


@pytest.mark.parametrize("seed", SEEDS)
def test_the_catalog_of_each_visit_and_the_prior_formula(seed: int) -> None:
    base = load_catalog()[:40]  # 5 per category: a short run learns every category
    added = churn.new_products(base, 8, seed)
    products = base + added
    features = FeatureSpace.load()
    users = load_users()
    shop = SimulatedShop(products, features, load_oracle("rules", features))
    visits = make_visits(300, seed, users, churn.K)
    shop.prepare(visits)
    cats = [CATEGORIES.index(p.category) for p in products]
    dim = churn.features_dim(features, users)
    learners = [churn.ChurnLearner(p, cats, dim, p, m=10.0, min_obs=0) for p in churn.PRIORS]
    new_idx = list(range(len(base), len(products)))
    retired = [0, 7, 13]
    traces = churn.run_churn(visits, shop, learners, new_idx, retired, 100, 200)
    for tr in traces.values():
        assert tr.retired_shown_after == 0
        assert all(v >= 0 for v in tr.first_shown.values())
    informed = learners[1]
    # every learned row of a category went into its pool, nothing else (batch: sum x x^T)
    xs = [features.context_vector(v.user, v.at) for v in visits]
    S = [np.zeros((dim, dim)) for _ in CATEGORIES]
    t = [np.zeros(dim) for _ in CATEGORIES]
    n = [0] * len(CATEGORIES)
    fresh = churn.ChurnLearner("replay", cats, dim, "informed", m=10.0, min_obs=0)
    active = np.ones(len(products), bool)
    active[new_idx] = False
    started = 0
    for v, x in zip(visits, xs, strict=True):
        if v.index == 100:
            active[new_idx] = True
        if v.index == 200:
            active[retired] = False
        shown = fresh.recommend(x, active)
        assert all(active[i] for i in shown)  # never outside the visit's catalog
        clicked = first_click(v.draws, shop.probabilities(v)[shown])
        for pos, i in enumerate(shown):  # one product at a time: each start checkable
            r = 1.0 if pos == clicked else 0.0
            want = None
            if not fresh.learned[i]:
                # scored at the identity until then; its first step starts from the pool now
                np.testing.assert_array_equal(fresh.b[i], np.zeros(dim))
                st = informed_state(fresh.pools[cats[i]], dim, 1.0, 10.0)
                want = (linucb.sherman_morrison(st.A_inv, x), st.b + r * x)
                started += int(fresh.pools[cats[i]].n > 0)
            fresh.learn([i], x, 0 if pos == clicked else None)
            if want is not None:
                np.testing.assert_allclose(fresh.A_inv[i], want[0], rtol=1e-12, atol=1e-12)
                np.testing.assert_allclose(fresh.b[i], want[1], rtol=1e-12, atol=1e-12)
            S[cats[i]] += np.outer(x, x)
            t[cats[i]] += r * x
            n[cats[i]] += 1
    assert started > 0  # some products started from a pool with data
    for c in range(len(CATEGORIES)):
        assert fresh.pools[c].n == n[c]
        np.testing.assert_allclose(fresh.pools[c].S, S[c], rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(fresh.pools[c].t, t[c], rtol=1e-9, atol=1e-9)
    assert informed.learned.any()


@pytest.mark.parametrize("seed", SEEDS)
def test_the_churn_learner_explores_as_the_closed_loops_reference_under_category_rate(
        seed: int) -> None:
    """Under ``category_rate`` (the default) the churn learner's rate sums are kept apart
    from the closed loop's instant reference (endtoend/simulation.py); on the same visits,
    identity prior, both show the same lists - and not the lists ``decaying`` shows."""
    from endtoend.simulation import InstantLinUCB

    products = load_catalog()[:40]
    features = FeatureSpace.load()
    users = load_users()
    shop = SimulatedShop(products, features, load_oracle("rules", features))
    visits = make_visits(300, seed, users, churn.K)
    shop.prepare(visits)
    cats = [CATEGORIES.index(p.category) for p in products]
    dim = churn.features_dim(features, users)
    ours = churn.ChurnLearner("identity", cats, dim, "identity", exploration="category_rate")
    plain = churn.ChurnLearner("identity", cats, dim, "identity", exploration="decaying")
    ref = InstantLinUCB(len(products), dim, exploration="category_rate",
                        categories=[p.category for p in products])
    active = np.ones(len(products), bool)
    differ = 0
    for v in visits:
        x = features.context_vector(v.user, v.at)
        shown = ours.recommend(x, active)
        assert shown == ref.recommend(v, x, churn.K).items, v.index
        differ += shown != plain.recommend(x, active)
        clicked = first_click(v.draws, shop.probabilities(v)[shown])
        ours.learn(shown, x, clicked)
        plain.learn(shown, x, clicked)
        ref.feedback(v, x, ref.recommend(v, x, churn.K), clicked)
    assert differ > 0
