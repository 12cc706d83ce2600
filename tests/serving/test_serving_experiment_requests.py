"""An experiment in serving's request path (docs/EXPERIMENTS.md): each user is served by its
assigned variant and every impression records it; the shadows' lists are logged and never
shown; the exploring variant logs the probabilities its list was drawn with; clicks and CTR
are counted per variant and exposed on /metrics."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from contract import linucb
from contract.codec import Params
from contract.config import Settings
from contract.experiments import Experiment
from contract.slates import PlackettLuce
from serving.eventlog import MemoryEventLog
from serving.recommender import Recommender
from serving.snapshot import Snapshot
from tests.helpers import PRODUCTS

S = Settings.from_env({})
if "exploration" in {f.name for f in dataclasses.fields(S.model)}:  # a fixed alpha here
    S = S.override(RTREC_EXPLORATION="fixed")
EXP = Experiment.from_dict({"name": "e1", "salt": "2026-12", "variants": [
    {"name": "control", "policy": "linucb", "alpha": 1.0, "share": 0.5},
    {"name": "explore", "policy": "plackett_luce", "alpha": 1.0, "temperature": 0.05,
     "epsilon": 0.1, "share": 0.5}],
    "shadows": [{"name": "greedy", "policy": "greedy"},
                {"name": "a2", "policy": "linucb", "alpha": 2.0}]})


def learned_snapshot(seed: int) -> Snapshot:
    """Parameters with some spread, so the policies disagree."""
    rng = np.random.default_rng(seed)
    d = S.model.dim
    params = {}
    for p in PRODUCTS:
        scale = rng.uniform(0.05, 1.0)
        theta = rng.normal(0, 0.3, size=d)
        params[p] = Params(linucb.ArmState(np.eye(d) * scale, theta / scale, 5), 1)
    return Snapshot.from_params(PRODUCTS, d, S.model.l2, params)


def recommender(seed: int) -> Recommender:
    return Recommender(S, snapshot=learned_snapshot(seed), events=MemoryEventLog(), seed=seed,
                       experiment=EXP)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_each_user_gets_its_variant_and_the_shadows_are_logged_not_shown(seed: int) -> None:
    rec = recommender(seed)
    snap = rec.snapshot
    rng = np.random.default_rng(seed)
    for user in range(300):
        x = rng.random(S.model.dim)
        r = rec.recommend(user, x=x, k=5)
        imp = rec.events.events[-1]
        variant = EXP.assign(user)
        assert r.variant == imp.variant == variant.name and imp.experiment == "e1"
        assert imp.policy == r.policy == variant.policy
        shown = tuple(i.product_id for i in r.items)
        assert imp.products == shown
        shadows = dict(imp.shadows)
        for name, alpha in (("greedy", 0.0), ("a2", 2.0)):
            want = tuple(PRODUCTS[i] for i in linucb.top_k(snap.scores(x, alpha), 5))
            assert shadows[name] == want
        if variant.policy == "linucb":
            assert shown == tuple(PRODUCTS[i] for i in linucb.top_k(snap.scores(x, 1.0), 5))
            assert imp.propensity == 1.0 and imp.prefix_propensities is None
        else:  # the exploring variant: the probabilities of the list it drew
            pl = PlackettLuce(snap.scores(x, 1.0), 0.05, 0.1)
            items = [PRODUCTS.index(p) for p in shown]
            assert imp.prefix_propensities == pytest.approx(pl.prefix_probabilities(items))
            assert imp.slot_propensities == pytest.approx(pl.slot_marginals(items))
            assert imp.propensity == pytest.approx(pl.list_probability(items))
    report = rec.experiment.report()
    assert report["control"]["impressions"] + report["explore"]["impressions"] == 300
    assert rec.impressions["plackett_luce"] == report["explore"]["impressions"]


def test_a_named_policy_or_alpha_is_not_part_of_the_experiment() -> None:
    rec = recommender(4)
    x = np.full(S.model.dim, 0.5)
    for kwargs in ({"policy": "greedy"}, {"alpha": 0.3}):
        r = rec.recommend(11, x=x, k=5, **kwargs)
        imp = rec.events.events[-1]
        assert r.variant is None and imp.variant is None and imp.experiment is None
        assert set(dict(imp.shadows)) == {"greedy", "a2"}  # shadows rank every request
    assert sum(v["impressions"] for v in rec.experiment.report().values()) == 0


def test_clicks_are_counted_per_variant_with_an_interval() -> None:
    rec = recommender(5)
    x = np.full(S.model.dim, 0.5)
    served: dict[str, int] = {"control": 0, "explore": 0}
    clicked: dict[str, int] = {"control": 0, "explore": 0}
    for user in range(200):
        r = rec.recommend(user, x=x, k=3)
        served[r.variant] += 1
        if user % 3 == 0:
            rec.feedback(r.request_id, r.items[0].product_id)
            rec.feedback(r.request_id, r.items[0].product_id)  # a double tap: counted once
            clicked[r.variant] += 1
    rep = rec.experiment.report()
    for v in ("control", "explore"):
        assert rep[v]["impressions"] == served[v] and rep[v]["clicks"] == clicked[v]
        assert rep[v]["ctr_low"] <= rep[v]["ctr"] == clicked[v] / served[v] <= rep[v]["ctr_high"]


def test_metrics_expose_the_variants() -> None:
    from fastapi.testclient import TestClient

    from serving.app import create_app

    rec = recommender(6)
    client = TestClient(create_app(S, rec))
    for user in range(40):
        resp = client.post("/recommend", json={"user_id": user, "x": [0.5] * S.model.dim,
                                               "k": 3})
        assert resp.status_code == 200, resp.text
    text = client.get("/metrics").text
    rep = rec.experiment.report()
    for v in ("control", "explore"):
        line = f'rtrec_experiment_impressions_total{{experiment="e1",variant="{v}"}}'
        assert f"{line} {float(rep[v]['impressions'])}" in text
        assert f'rtrec_experiment_ctr{{bound="high",experiment="e1",variant="{v}"}}' in text
    assert sum(r["impressions"] for r in rep.values()) == 40


def test_the_experiment_file_is_checked_at_start(tmp_path: Path) -> None:
    import json

    from contract.experiments import ExperimentError

    bad = tmp_path / "exp.json"
    bad.write_text(json.dumps({**EXP.to_dict(), "variants": [
        {"name": "a", "policy": "linucb", "share": 0.7}]}))
    with pytest.raises(ExperimentError, match="shares add up to 0.7"):
        Recommender.from_settings(S.override(RTREC_EXPERIMENTS=str(bad)), kafka=False,
                                  wait_s=0)
    good = tmp_path / "good.json"
    good.write_text(json.dumps(EXP.to_dict()))
    rec = Recommender.from_settings(S.override(RTREC_EXPERIMENTS=str(good),
                                               RTREC_REDIS_PORT="1"), kafka=False, wait_s=0)
    try:
        assert rec.experiment is not None and rec.experiment.experiment == EXP
        r = rec.recommend(7, x=[0.5] * S.model.dim, k=3)
        assert r.variant == EXP.assign(7).name
    finally:
        rec.close(1)


@pytest.mark.parametrize("exploration", ["decaying", "calibrated"])
@pytest.mark.parametrize("seed", [6, 7, 8])
def test_a_variant_or_shadow_without_alpha_follows_the_exploration_rule(
        exploration: str, seed: int) -> None:
    """Under RTREC_EXPLORATION's rule, a variant and a shadow that name no alpha rank alike:
    the shadow's logged list is what the no-alpha variant shows for the same context, and not
    the fixed RTREC_ALPHA's list (which the shadow logged before)."""
    settings = Settings.from_env({}).override(RTREC_EXPLORATION=exploration, RTREC_ALPHA="5.0")
    exp = Experiment.from_dict({"name": "e2", "salt": "s", "variants": [
        {"name": "rule", "policy": "linucb", "share": 1.0}],
        "shadows": [{"name": "rule_shadow", "policy": "linucb"}]})
    rec = Recommender(settings, snapshot=learned_snapshot(seed), events=MemoryEventLog(),
                      seed=seed, experiment=exp)
    plain = Recommender(settings, snapshot=learned_snapshot(seed), events=MemoryEventLog(),
                        seed=seed)
    rng = np.random.default_rng(seed)
    differs = 0
    for user in range(100):
        x = rng.random(settings.model.dim)
        r = rec.recommend(user, x=x, k=5)
        shown = tuple(i.product_id for i in r.items)
        assert dict(rec.events.events[-1].shadows)["rule_shadow"] == shown
        assert shown == tuple(i.product_id for i in plain.recommend(user, x=x, k=5).items)
        fixed = tuple(PRODUCTS[i] for i in linucb.top_k(rec.snapshot.scores(x, 5.0), 5))
        differs += fixed != shown
    assert differs > 50  # the fixed alpha would have logged another list: the test can fail
