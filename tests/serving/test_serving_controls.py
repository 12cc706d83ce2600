"""Merchandising controls (serving/controls.py, docs/SERVING.md): property tests of each
control's effect on random catalogs and scores, MMR at lambda 0 against the plain ranking,
the random policy's logged propensities against the empirical frequencies of the lists it
showed under controls (several seeds), the impression's control fields through the job's
validator, and the 422s."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contract.config import Settings
from contract.events import EventError, Impression, parse_event
from contract.features import CONTEXT_DIM, load_catalog
from serving.controls import Boost, CatalogIndex, Controls, Limits, Pin, rng_of, select
from serving.errors import InvalidRequestError, ServingError
from serving.eventlog import MemoryEventLog
from serving.recommender import Recommender


@st.composite
def cases(draw: st.DrawFn) -> tuple:
    """A catalog (m products, c categories, some out of stock), scores (ties possible),
    controls and k."""
    m = draw(st.integers(3, 60))
    c = draw(st.integers(1, 5))
    cats = [f"c{draw(st.integers(0, c - 1))}" for _ in range(m)]
    prices = draw(st.lists(st.floats(1, 50), min_size=m, max_size=m))
    ids = [f"p{i}" for i in range(m)]
    stock = draw(st.lists(st.booleans(), min_size=m, max_size=m).filter(any))
    cat = CatalogIndex(ids, cats, prices, in_stock=stock)
    ties = draw(st.booleans())
    scores = np.array(draw(st.lists(
        st.sampled_from([0.0, 0.5, 1.0]) if ties else st.floats(-5, 5), min_size=m,
        max_size=m)))
    k = draw(st.integers(1, 8))
    exclude = frozenset(draw(st.lists(st.sampled_from(ids), max_size=5)))
    present = sorted(set(cats))
    include = draw(st.none() | st.sets(st.sampled_from(present), min_size=1))
    excl_c = frozenset(draw(st.sets(st.sampled_from(present), max_size=1)))
    free_ids = [p for p in ids if p not in exclude]
    n_pins = draw(st.integers(0, min(2, k, len(free_ids))))
    pin_ids = draw(st.lists(st.sampled_from(free_ids), min_size=n_pins, max_size=n_pins,
                            unique=True)) if free_ids else []
    slots = draw(st.lists(st.integers(0, k - 1), min_size=len(pin_ids),
                          max_size=len(pin_ids), unique=True))
    pins = tuple(Pin(p, s) for p, s in zip(pin_ids, slots, strict=True))
    cap = draw(st.none() | st.integers(1, 3))
    lam = draw(st.sampled_from([0.0, 0.3, 1.0]))
    in_stock_only = draw(st.booleans())
    controls = Controls(exclude=exclude, in_stock_only=in_stock_only,
                        include_categories=frozenset(include) if include else None,
                        exclude_categories=excl_c, pins=pins, max_per_category=cap,
                        mmr_lambda=lam)
    policy = draw(st.sampled_from(["linucb", "greedy", "random"]))
    return cat, scores, controls, k, policy


def _eligible(cat: CatalogIndex, c: Controls) -> set[int]:
    """The eligible products, by a plain loop (the reference for the masks)."""
    out = set()
    for i, pid in enumerate(cat.product_ids):
        name = cat.category_name(i)
        if pid in c.exclude or (c.in_stock_only and not cat.in_stock[i]):
            continue
        if c.include_categories is not None and name not in c.include_categories:
            continue
        if name in c.exclude_categories:
            continue
        out.add(i)
    return out


@settings(max_examples=120, deadline=None)
@given(cases(), st.integers(0, 2**32 - 1))
def test_controls_hold(case: tuple, seed: int) -> None:
    """An excluded, out-of-stock or category-filtered product never appears; the cap holds
    (pins may exceed it only by themselves); eligible pins hold their slots; the list is as
    long as the eligible products and the cap allow; the logged eligible count is the loop's."""
    cat, scores, c, k, policy = case
    eligible = _eligible(cat, c)
    if not eligible:
        with pytest.raises(InvalidRequestError, match="no product is eligible"):
            select(policy, scores, cat, c, k, np.random.default_rng(seed))
        return
    sel = select(policy, scores, cat, c, k, np.random.default_rng(seed))
    shown = sel.indices.tolist()
    assert sel.eligible_n == len(eligible)
    assert len(set(shown)) == len(shown) and set(shown) <= eligible
    pinned = {cat.index[p.product_id]: p.slot for p in c.pins
              if cat.index[p.product_id] in eligible}
    assert set(pinned) <= set(shown)
    if pinned and len(shown) > max(pinned.values()):  # room for every pin: each at its slot
        assert all(shown[slot] == i for i, slot in pinned.items()), (shown, pinned)
    else:  # too few products: the list closes up, the pins in their slots' order
        order = [i for i in shown if i in pinned]
        assert order == sorted(pinned, key=pinned.__getitem__), (shown, pinned)
    per_cat = Counter(cat.category_name(i) for i in shown)
    pins_per_cat = Counter(cat.category_name(i) for i in pinned)
    if c.max_per_category is not None:
        for name, n in per_cat.items():
            assert n <= max(c.max_per_category, pins_per_cat[name]), (name, shown)
        room = sum(min(max(c.max_per_category, pins_per_cat[name]),
                       sum(1 for i in eligible if cat.category_name(i) == name))
                   for name in {cat.category_name(i) for i in eligible})
        assert len(shown) == min(k, room)
    else:
        assert len(shown) == min(k, len(eligible))
    if sel.eligible is not None:
        assert {cat.index[p] for p in sel.eligible} == eligible
    if policy != "random":
        assert sel.propensity == 1.0
        if c.max_per_category is None and c.mmr_lambda == 0.0:  # the best eligible, in order
            free = [i for i in shown if i not in pinned]
            best = sorted((i for i in eligible if i not in pinned), key=lambda i: -scores[i])
            assert sorted(scores[free].tolist(), reverse=True) == scores[free].tolist()
            assert scores[free].tolist() == [scores[i] for i in best[:len(free)]]


@settings(max_examples=80, deadline=None)
@given(st.integers(5, 400), st.integers(1, 8), st.integers(1, 20), st.integers(0, 2**32 - 1))
def test_mmr_lambda_zero_is_the_plain_ranking(m: int, n_cat: int, k: int, seed: int) -> None:
    """MMR's code path (forced by a cap that cannot bind) at lambda 0 returns exactly the
    plain ranking's list, on continuous random scores (no ties)."""
    g = np.random.default_rng(seed)
    cat = CatalogIndex([f"p{i}" for i in range(m)],
                       [f"c{j}" for j in g.integers(0, n_cat, m)], g.uniform(1, 30, m))
    scores = g.normal(size=m)
    plain = select("linucb", scores, cat, Controls(), k, g)
    mmr = select("linucb", scores, cat, Controls(max_per_category=k, mmr_lambda=0.0), k, g)
    assert f"max_per_category:{k}" in mmr.applied
    assert mmr.indices.tolist() == plain.indices.tolist() == np.argsort(-scores)[:k].tolist()


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_mmr_diversifies(seed: int) -> None:
    """Where the best products are all of one category, MMR with lambda 0.5 shows more
    categories than the plain ranking, and lambda 1 shows k distinct categories."""
    g = np.random.default_rng(seed)
    m = 200
    cats = [f"c{j}" for j in g.integers(0, 6, m)]
    cat = CatalogIndex([f"p{i}" for i in range(m)], cats, g.uniform(1, 30, m))
    scores = g.normal(size=m)
    top = np.argsort(-scores)[:10]
    scores[[i for i in range(m) if cats[i] == cats[top[0]]][:5]] += 10.0  # one category first
    plain = select("greedy", scores, cat, Controls(), 5, g).indices
    assert len({cats[i] for i in plain}) == 1
    half = select("greedy", scores, cat, Controls(mmr_lambda=0.5), 5, g)
    full = select("greedy", scores, cat, Controls(mmr_lambda=1.0), 5, g)
    assert half.indices[0] == plain[0] == full.indices[0]  # the first pick is the best
    assert len({cats[i] for i in half.indices}) > 1
    assert len({cats[i] for i in full.indices}) == 5


def test_boosts() -> None:
    """Additive and multiplicative boosts per category and product, by the documented
    formula, whatever the score's sign; a boosted product moves up."""
    cat = CatalogIndex(["a", "b", "c"], ["x", "y", "y"], [1, 2, 3])
    scores = np.array([1.0, -2.0, 0.5])
    c = Controls(boosts=(Boost(category="y", multiply=2.0), Boost(product_id="c", add=0.25)))
    sel = select("greedy", scores, cat, c, 3, np.random.default_rng(0))
    assert sel.boosted.tolist() == [1.0, -2.0 + 2.0, 0.5 * 2 + 0.25]
    assert sel.indices.tolist() == [2, 0, 1] and "boost:2" in sel.applied


def _recommender(seed: int, **env: object) -> Recommender:
    catalog = load_catalog()
    return Recommender(Settings.from_env({k: str(v) for k, v in env.items()}),
                       product_ids=[p.product_id for p in catalog], catalog=catalog, seed=seed,
                       events=MemoryEventLog())


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_random_policy_propensities_match_frequencies_under_controls(seed: int) -> None:
    """Through the recommender and its event log: under an exclusion, a category filter, a
    pin and a cap, the random policy's logged propensity of each shown list equals that
    list's empirical frequency (4 standard errors), the lists seen cover almost all the
    probability, and each impression names its controls and eligible set."""
    rec = _recommender(seed)
    cats = ["Pizzas", "Salads & Healthy Options", "Drinks & Desserts"]
    of = {c: [p.product_id for p in load_catalog() if p.category == c] for c in cats}
    # 4 pizzas, 2 salads, 3 drinks (one pinned) eligible: with one per category, a pizza
    # drawn first leaves 2 salads (p = 1/6 * 1/2), a salad first leaves 4 pizzas (1/6 * 1/4)
    keep = of[cats[0]][:4] + of[cats[1]][:2] + of[cats[2]][:3]
    exclude = [p for c in cats for p in of[c] if p not in keep]
    pin = of[cats[2]][0]
    n = 6_000
    for _ in range(n):
        rec.recommend(1, x=np.full(CONTEXT_DIM, 0.5), k=3, policy="random",
                      include_categories=cats, exclude=exclude, max_per_category=1,
                      pins=[Pin(pin, 2)])
    imps = [e for e in rec.events.events if isinstance(e, Impression)]
    assert len(imps) == n
    freq = Counter(i.products for i in imps)
    logged = {}
    for i in imps:
        assert logged.setdefault(i.products, i.propensity) == i.propensity
        assert i.products[2] == pin
        assert i.eligible_n == 9 and set(i.eligible) == set(keep)
        assert f"exclude:{len(exclude)}" in i.controls and "max_per_category:1" in i.controls
    for lst, count in freq.items():
        p = logged[lst]
        assert abs(count / n - p) <= 4 * math.sqrt(p * (1 - p) / n) + 1e-12, (lst, count, p)
    assert len(freq) == 16 and sum(logged.values()) == pytest.approx(1.0)
    assert sorted(set(logged.values())) == pytest.approx([1 / 24, 1 / 12])


def test_impression_control_fields_pass_the_validator() -> None:
    """The job's validator (contract.events.parse_event, as the job's Validate calls it)
    accepts an impression under controls and keeps its fields; one without controls is the
    same JSON as before (no new keys); an unknown field or inconsistent control fields are
    refused (dead-lettered by the job)."""
    rec = _recommender(1)
    known = frozenset(rec.snapshot.product_ids)
    rec.recommend(1, x=np.full(CONTEXT_DIM, 0.5), k=3, exclude=["p000"],
                  include_categories=["Pizzas"])
    rec.recommend(1, x=np.full(CONTEXT_DIM, 0.5), k=3)
    with_c, plain = rec.events.events
    back = parse_event(with_c.to_json(), CONTEXT_DIM, known)
    assert back == with_c and back.controls == ("include_categories:1", "exclude:1")
    assert back.eligible is not None and len(back.eligible) == back.eligible_n
    assert set(plain.to_dict()) == {"v", "type", "request_id", "user_id", "ts_ms", "x",
                                    "products", "scores", "policy", "model_version",
                                    "propensity"}
    assert parse_event(plain.to_json(), CONTEXT_DIM, known) == plain
    d = with_c.to_dict()
    import json

    for bad, why in (({**d, "surprise": 1}, "unknown field"),
                     ({**d, "eligible_n": 1}, "eligible_n"),
                     ({**d, "eligible": d["eligible"][1:]}, "eligible"),
                     ({k: v for k, v in d.items() if k != "eligible_hash"}, "come together")):
        with pytest.raises(EventError, match=why):
            parse_event(json.dumps(bad), CONTEXT_DIM, known)


def test_eligible_logged_as_count_and_hash_when_many() -> None:
    """Above RTREC_ELIGIBLE_LIST_MAX eligible products the impression keeps the count and a
    hash of the mask: equal sets, equal hashes; a different set, a different hash."""
    rec = _recommender(2, RTREC_ELIGIBLE_LIST_MAX=10)
    x = np.full(CONTEXT_DIM, 0.5)
    a = rec.recommend(1, x=x, exclude=["p001", "p002"])
    b = rec.recommend(2, x=x, exclude=["p002", "p001"])
    c = rec.recommend(3, x=x, exclude=["p001", "p003"])
    ea, eb, ec = rec.events.events
    assert a.eligible_n == b.eligible_n == c.eligible_n == 198
    assert ea.eligible is None and ea.eligible_hash == eb.eligible_hash != ec.eligible_hash


def test_defaults_from_settings_and_request_override() -> None:
    """RTREC_* defaults apply to every request; a request adds exclusions and replaces the
    cap; out-of-stock ids set at start or by set_out_of_stock are never shown unless a
    request asks in_stock_only=false; a bad default fails at start naming the setting."""
    pizza = [p.product_id for p in load_catalog() if p.category == "Pizzas"]
    rec = _recommender(3, RTREC_EXCLUDE_CATEGORIES="Drinks & Desserts",
                       RTREC_MAX_PER_CATEGORY=1, RTREC_OUT_OF_STOCK=",".join(pizza[:3]),
                       RTREC_PINS=f"{pizza[5]}@0", RTREC_BOOSTS="category:Pizzas*1.5")
    x = np.full(CONTEXT_DIM, 0.5)
    drinks = {p.product_id for p in load_catalog() if p.category == "Drinks & Desserts"}
    for _ in range(50):
        r = rec.recommend(1, x=x, k=5)
        shown = [i.product_id for i in r.items]
        assert shown[0] == pizza[5] and not drinks & set(shown)
        assert not set(pizza[:3]) & set(shown)
        cats = Counter(rec.catalog.category_name(rec.catalog.index[p]) for p in shown)
        assert max(cats.values()) == 1
    r = rec.recommend(1, x=x, k=5, max_per_category=5, include_categories=["Pizzas"],
                      in_stock_only=False, pins=[])
    assert {i.product_id for i in r.items} <= set(pizza) and len(r.items) == 5
    assert rec.set_out_of_stock(pizza[3:]) == frozenset(pizza[3:])  # replaces the start's
    for _ in range(20):
        r = rec.recommend(1, x=x, k=5, include_categories=["Pizzas"], max_per_category=5)
        assert {i.product_id for i in r.items} == set(pizza[:3])
        assert f"pin_skipped:{pizza[5]}" in r.controls  # the pin is out of stock now
    with pytest.raises(InvalidRequestError, match="RTREC_PINS"):
        _recommender(1, RTREC_PINS="p999@0")
    with pytest.raises(InvalidRequestError, match="multiply"):
        _recommender(1, RTREC_BOOSTS="category:Pizzas*100")


@pytest.mark.parametrize(("kwargs", "message", "status"), [
    ({"exclude": ["nope"]}, "exclude: 'nope' is not in the catalog", 404),
    ({"pins": [Pin("p001", 5)]}, r"pins\[0\].slot: 5 not in 0..4", 409),
    ({"pins": [Pin("p001", 0), Pin("p002", 0)]}, "pinned twice", 409),
    ({"pins": [Pin("p001", 0)], "exclude": ["p001"]}, "also excluded", 409),
    ({"boosts": [Boost(product_id="p001", add=2.0)]}, "RTREC_MAX_BOOST_ADD", 409),
    ({"boosts": [Boost(category="Pizzas", multiply=0.01)]}, "RTREC_MAX_BOOST_MULTIPLY", 409),
    ({"boosts": [Boost(add=0.1)]}, "exactly one of", 409),
    ({"include_categories": ["Soup"]}, "'Soup' is not a category", 422),
    ({"include_categories": []}, "include_categories: empty", 422),
    ({"max_per_category": 0}, "max_per_category: must be >= 1", 422),
    ({"mmr_lambda": 1.5}, "mmr_lambda: must be in 0..1", 422),
    ({"mmr_lambda": float("nan")}, "mmr_lambda", 422),
    ({"include_categories": ["Pizzas"], "exclude_categories": ["Pizzas"]}, "no product", 409),
])
def test_bad_controls_are_refused(kwargs: dict, message: str, status: int) -> None:
    """Each refusal names its control, carries its HTTP status (404 unknown product, 409
    controls that cannot be honoured, 422 the rest) and logs nothing."""
    rec = _recommender(4)
    with pytest.raises(ServingError, match=message) as refused:
        rec.recommend(1, x=np.full(CONTEXT_DIM, 0.5), k=5, **kwargs)
    assert refused.value.status == status
    assert rec.events.events == []  # nothing logged for a refused request


def test_limits_pool_falls_back_to_every_product() -> None:
    """A cap the pool cannot satisfy (every pooled product of one category) still fills the
    list from beyond the pool."""
    m = 300
    cats = ["a"] * 100 + [f"b{i}" for i in range(200)]
    cat = CatalogIndex([f"p{i}" for i in range(m)], cats, np.arange(m, dtype=float))
    scores = np.concatenate([np.linspace(10, 9, 100), np.linspace(1, 0, 200)])
    sel = select("linucb", scores, cat, Controls(max_per_category=1), 5,
                 np.random.default_rng(0), Limits(mmr_pool=20))
    assert sel.indices.tolist() == [0, 100, 101, 102, 103]


def test_ties_break_by_request_seeded_shuffle() -> None:
    """Equal scores: the order depends on the request id, and is reproducible from it."""
    cat = CatalogIndex([f"p{i}" for i in range(50)])
    scores = np.zeros(50)
    a = select("greedy", scores, cat, Controls(exclude=frozenset({"p1"})), 5,
               lambda: rng_of("00ff" * 8)).indices.tolist()
    b = select("greedy", scores, cat, Controls(exclude=frozenset({"p1"})), 5,
               lambda: rng_of("00ff" * 8)).indices.tolist()
    c = select("greedy", scores, cat, Controls(exclude=frozenset({"p1"})), 5,
               lambda: rng_of("1234" * 8)).indices.tolist()
    assert a == b != c and a != [0, 2, 3, 4, 5]


def test_out_of_stock_admin_route_over_http() -> None:
    """PUT /admin/out-of-stock needs the admin token (401 without, 403 wrong), refuses an
    unknown id (404, nothing changed), and what it sets is never shown unless a request asks
    in_stock_only=false; the answer names the controls that applied."""
    from fastapi.testclient import TestClient

    from serving.app import create_app

    rec = _recommender(5, RTREC_ADMIN_TOKEN="s3cret")
    client = TestClient(create_app(recommender=rec))
    pizza = [p.product_id for p in load_catalog() if p.category == "Pizzas"]
    body = {"product_ids": pizza[:20]}
    assert client.put("/admin/out-of-stock", json=body).status_code == 401
    assert client.put("/admin/out-of-stock", json=body,
                      headers={"authorization": "Bearer nope"}).status_code == 403
    ok = {"authorization": "Bearer s3cret"}
    bad = client.put("/admin/out-of-stock", json={"product_ids": ["p000", "zz"]}, headers=ok)
    assert bad.status_code == 404 and "'zz' is not in the catalog" in bad.json()["detail"]
    assert rec.catalog.out_of_stock == frozenset()
    r = client.put("/admin/out-of-stock", json=body, headers=ok)
    assert r.status_code == 200 and r.json()["out_of_stock"] == sorted(pizza[:20])
    req = {"user_id": 1, "x": [0.5] * CONTEXT_DIM, "include_categories": ["Pizzas"],
           "k": 10}
    for _ in range(10):
        a = client.post("/recommend", json=req).json()
        assert not {i["product_id"] for i in a["items"]} & set(pizza[:20])
        assert a["controls"] == ["in_stock:20", "include_categories:1"]
        assert a["eligible_n"] == len(pizza) - 20
    shown = set()
    for _ in range(30):
        a = client.post("/recommend", json={**req, "in_stock_only": False}).json()
        shown |= {i["product_id"] for i in a["items"]}
    assert shown & set(pizza[:20])
