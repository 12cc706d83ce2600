"""Explanations (serving/explain.py), the fallback (prior + popularity, ties by a per-request
shuffle) and product health (serving/health.py): the terms of each explained score add up to
it and each equals the contract's maths on the learned state; clicks are version - n of the
published values; no two answers of the all-prior fallback both come in catalog order; the
health report, /metrics and ``python -m serving health``."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient
from serving_helpers import post_both

from contract import linucb
from contract.codec import Params
from contract.config import Settings
from contract.features import CONTEXT_DIM, CONTEXT_NAMES, load_catalog
from devstack.stack import free_port
from serving.app import create_app
from serving.controls import Boost
from serving.eventlog import MemoryEventLog
from serving.recommender import Recommender
from serving.snapshot import Snapshot
from tests.helpers import prom_value, wait_for

CATALOG = load_catalog()
IDS = [p.product_id for p in CATALOG]


def _learned(rng: np.random.Generator, n: int, clicks: int) -> linucb.ArmState:
    """A state learned as the job learns: n observations with reward 0 (o0), then a reward
    correction of 1 for ``clicks`` of them (a1)."""
    X = rng.uniform(0, 1, (n + clicks, CONTEXT_DIM))
    observe = np.r_[np.ones(n, dtype=bool), np.zeros(clicks, dtype=bool)]
    X[n:] = X[:clicks]
    rewards = np.r_[np.zeros(n), np.ones(clicks)]
    return linucb.learn_batch(linucb.init_state(CONTEXT_DIM), X, rewards, observe)


def _recommender(states: dict[str, linucb.ArmState], now_ms: int, seed: int = 0,
                 **env: object) -> Recommender:
    snap = Snapshot.from_params(IDS, CONTEXT_DIM, 1.0,
                                {p: Params(s, updated_at_ms=now_ms) for p, s in states.items()})
    return Recommender(Settings.from_env({k: str(v) for k, v in env.items()}), snapshot=snap,
                       catalog=CATALOG, seed=seed, events=MemoryEventLog())


def test_clicks_are_version_minus_observations() -> None:
    """The job learns a shown product at once with reward 0 and a click as one reward
    correction: the published value's version - n is the clicks, exactly."""
    rng = np.random.default_rng(1)
    states = {p: _learned(rng, n, c) for p, n, c in (("p001", 30, 4), ("p002", 12, 0),
                                                        ("p003", 50, 17))}
    snap = Snapshot.from_params(IDS, CONTEXT_DIM, 1.0, {p: Params(s, 1) for p, s in states.items()})
    clicks = dict(zip(IDS, snap.clicks.tolist(), strict=True))
    assert (clicks["p001"], clicks["p002"], clicks["p003"], clicks["p000"]) == (4, 0, 17, 0)
    assert snap.observations[IDS.index("p003")] == 50


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_explanations_sum_to_the_score_and_match_the_contract(seed: int) -> None:
    """Each term on its own: theta.x and alpha sqrt(x'A^-1 x) from contract.linucb on the
    learned state, the boost by its formula; they add up to the shown score; the named
    contributions theta_i x_i are the largest and, with the rest, make theta.x."""
    rng = np.random.default_rng(seed)
    now = int(time.time() * 1000)
    states = {p: _learned(rng, int(rng.integers(5, 60)), int(rng.integers(0, 5)))
              for p in IDS[:150]}
    rec = _recommender(states, now - 5_000, seed)
    x = rng.uniform(0, 1, CONTEXT_DIM)
    boosts = [Boost(category="Pizzas", multiply=1.5), Boost(product_id=IDS[3], add=0.2)]
    for kwargs in ({}, {"boosts": boosts, "mmr_lambda": 0.3}):
        r = rec.recommend(1, x=x, k=10, alpha=1.3, explain=True, **kwargs)
        assert r.explanations is not None and len(r.explanations) == 10
        for item, e in zip(r.items, r.explanations, strict=True):
            assert e["product_id"] == item.product_id and e["score"] == item.score
            total = e["expected_reward"] + e["exploration_bonus"] + e["popularity"] + e["boost"]
            assert total == pytest.approx(item.score, rel=1e-12, abs=1e-12)
            st = states.get(item.product_id, linucb.init_state(CONTEXT_DIM))
            mean = float(linucb.theta(st) @ x)
            bonus = 1.3 * float(np.sqrt(x @ st.A_inv @ x))
            assert e["expected_reward"] == pytest.approx(mean, rel=1e-9, abs=1e-12)
            assert e["exploration_bonus"] == pytest.approx(bonus, rel=1e-9)
            base = mean + bonus
            category = CATALOG[IDS.index(item.product_id)].category
            want = 0.0
            if kwargs:
                want = (0.5 * abs(base) if category == "Pizzas" else 0.0) + \
                    (0.2 if item.product_id == IDS[3] else 0.0)
            assert e["boost"] == pytest.approx(want, abs=1e-9)
            assert (e["observations"], e["parameter_version"], e["clicks"]) == (
                st.n, st.version, st.version - st.n)
            assert (e["parameter_age_s"] is None) == (st.version == 0)
            contrib = linucb.theta(st) * x
            top = e["top_features"]
            assert [t["name"] for t in top] == [CONTEXT_NAMES[i] for i in
                                                np.argsort(-np.abs(contrib), kind="stable")[:3]]
            assert [t["value"] for t in top] == pytest.approx(
                sorted(contrib.tolist(), key=abs, reverse=True)[:3])
            assert sum(t["value"] for t in top) + e["other_features"] == \
                pytest.approx(e["expected_reward"], abs=1e-12)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fallback_never_gives_two_requests_the_catalog_order(seed: int) -> None:
    """All products at the prior (cold start, a wiped store): the scores tie; ties break by a
    shuffle seeded by each request's id, so no two answers are both in catalog order (none
    is, here), and the answers differ from one another."""
    rec = Recommender(Settings.from_env({}), product_ids=IDS, catalog=CATALOG, seed=seed,
                      events=MemoryEventLog())
    x = np.random.default_rng(seed).uniform(0, 1, CONTEXT_DIM)
    answers = [tuple(i.product_id for i in rec.recommend(u, x=x, k=5).items)
               for u in range(40)]
    catalog_order = tuple(IDS[:5])
    assert sum(a == catalog_order for a in answers) <= 1
    assert catalog_order not in answers
    assert len(set(answers)) >= 35


def test_fallback_ranks_products_without_parameters_by_last_known_clicks() -> None:
    """Once clicks were seen (version - n), a wipe that takes every parameter away leaves
    the prior products ranked by popularity (most clicked first) instead of tied, with
    the popularity term in the explanation; products with parameters get no such term."""
    rng = np.random.default_rng(4)
    states = {"p010": _learned(rng, 40, 9), "p020": _learned(rng, 40, 3),
              "p030": _learned(rng, 40, 1)}
    rec = _recommender(states, int(time.time() * 1000), RTREC_POPULARITY_WEIGHT=0.5)
    x = np.full(CONTEXT_DIM, 0.5)
    r = rec.recommend(1, x=x, k=5, explain=True)  # learns the clicks; these have parameters
    assert all(e["popularity"] == 0.0 for e in r.explanations)
    rec.set_snapshot(Snapshot.prior(IDS, CONTEXT_DIM, 1.0))  # the store was wiped
    for u in range(10):
        r = rec.recommend(u, x=x, k=3, policy="greedy", explain=True)
        assert [i.product_id for i in r.items] == ["p010", "p020", "p030"]
        pops = [e["popularity"] for e in r.explanations]
        assert pops[0] == pytest.approx(0.5) and pops[0] > pops[1] > pops[2] > 0


def test_product_route_and_explain_over_http() -> None:
    """GET /products/{id} summarises the model (404 for an unknown id); explain=true gives
    the same explanations on the fast path and the route."""
    rng = np.random.default_rng(5)
    now = int(time.time() * 1000)
    states = {"p007": _learned(rng, 25, 5)}
    rec = _recommender(states, now - 60_000)
    client = TestClient(create_app(recommender=rec))
    body = client.get("/products/p007").json()
    st = states["p007"]
    assert (body["observations"], body["clicks"], body["ctr"]) == (25, 5, 0.2)
    assert body["last_update_ms"] == now - 60_000 and body["parameter_age_s"] >= 60
    assert body["category"] == CATALOG[7].category and body["in_stock"] is True
    theta = linucb.theta(st)
    assert body["top_features"][0]["name"] == CONTEXT_NAMES[int(np.argmax(np.abs(theta)))]
    assert client.get("/products/p999").status_code == 404
    assert client.get("/products/p001").json()["observations"] == 0
    fast, routed = post_both(client, {"user_id": 1, "x": [0.5] * CONTEXT_DIM, "k": 3,
                                      "explain": True, "alpha": 0.0})
    assert fast.status_code == routed.status_code == 200
    a, b = fast.json()["explanations"], routed.json()["explanations"]
    assert a[0]["product_id"] == b[0]["product_id"] == "p007"  # the only learned mean > 0
    assert abs(a[0].pop("parameter_age_s") - b[0].pop("parameter_age_s")) < 60
    assert a[0] == b[0]
    plain = client.post("/recommend", json={"user_id": 1, "x": [0.5] * CONTEXT_DIM}).json()
    assert "explanations" not in plain and "controls" not in plain


def test_health_report_metrics_and_cli() -> None:
    """Never shown in the window, stale parameters (shown, older than RTREC_STALE_PARAMS_S),
    the exploration share and per-product CTR: in GET /health/products, /metrics and
    ``python -m serving health`` against a running server."""
    rng = np.random.default_rng(6)
    now = int(time.time() * 1000)
    # p000 learned long ago with a clear mean: with a small alpha it comes first (no
    # exploration), with a large one a prior product's bonus wins (exploration)
    states = {"p000": _learned(rng, 400, 300)}
    rec = _recommender(states, now - 3_600_000, RTREC_STALE_PARAMS_S=600,
                       RTREC_HEALTH_WINDOW_S=60)
    x = np.full(CONTEXT_DIM, 0.5)
    r1 = rec.recommend(1, x=x, k=2, alpha=0.01)
    r2 = rec.recommend(1, x=x, k=2, alpha=50.0)
    rec.recommend(1, x=x, k=2, policy="greedy")  # not a bonus answer: not counted
    assert r1.items[0].product_id == "p000" != r2.items[0].product_id
    rec.feedback(r1.request_id, "p000")
    rep = rec.health_report()
    shown = {i.product_id for r in (r1, r2) for i in r.items}
    assert (rep["answers"], rep["exploration_driven"], rep["exploration_share"]) == (2, 1, 0.5)
    assert rep["stale_params"] == ["p000"]
    assert set(rep["never_shown_in_window"]) <= set(IDS) - shown
    assert len(rep["never_shown_in_window"]) >= 200 - len(shown) - 2
    row = rep["per_product"][0]
    assert (row["product_id"], row["clicks"], row["learned_clicks"]) == ("p000", 1, 300)
    assert row["ctr"] == 1 / row["shown"]

    app = create_app(recommender=rec)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, 10.0, "the server to start")
        import httpx
        text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert prom_value(text, "rtrec_serving_exploration_share") == 0.5
        assert prom_value(text, "rtrec_serving_products_stale_params") == 1
        assert prom_value(text, "rtrec_serving_product_clicks_total", product_id="p000") == 1
        assert prom_value(text, "rtrec_serving_product_ctr", product_id="p000") == row["ctr"]
        out = subprocess.run([sys.executable, "-m", "serving", "health", "--url",
                              f"http://127.0.0.1:{port}"], capture_output=True, text=True,
                             timeout=60, check=True).stdout
        assert "exploration-driven answers: 1 of 2 (50.0%)" in out
        assert "stale parameters (shown, older than 600 s): 1 p000" in out
        row_line = next(line for line in out.splitlines() if line.startswith("p000 "))
        assert row_line.split()[1:4] == [str(row["shown"]), "1", f"{row['ctr']:.3f}"]
    finally:
        server.should_exit = True
        thread.join(10)
