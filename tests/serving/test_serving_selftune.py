"""Serving's side of exploration that tunes itself (serving/selftune.py, docs/EXPLORATION.md
section 3): the decision read from Redis routes the traffic (live 1 - min share), the logged
probabilities are those of the drawn candidate's list under the split (so each candidate's
SNIPS from the log is right), and a missing, unreadable or unreachable decision degrades to
the default or the last one, said once."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from contract import exploration, linucb
from contract.codec import Params
from contract.config import Settings
from contract.features import CONTEXT_DIM, CONTEXT_NAMES
from serving import Recommender, Snapshot
from serving.selftune import EXPERIMENT, SelfTuneRouter

D = CONTEXT_DIM
TOD = [i for i, n in enumerate(CONTEXT_NAMES) if n.startswith("tod_")]
CANDIDATES = "calibrated,alpha=0.05,alpha=2"
# the split these tests count (90 / 5 / 5), whatever the default share is
PINNED = {"RTREC_SELF_TUNE_MIN_SHARE": "0.1"}


def _x(rng: np.random.Generator) -> np.ndarray:
    x = rng.uniform(0, 1, D)
    x[TOD] = 0.0
    x[TOD[int(rng.integers(0, 3))]] = 1.0
    return x


def _learned(rng: np.random.Generator, m: int, least: int = 0) -> Snapshot:
    """m products, some learned a little (each at least ``least`` times), so the candidates'
    lists often differ."""
    ids = [f"p{i:03d}" for i in range(m)]
    params = {}
    for pid in ids:
        s = linucb.init_state(D)
        for _ in range(int(rng.integers(least, 12))):
            s = linucb.update(s, _x(rng), float(rng.random() < 0.25))
        if s.n:
            params[pid] = Params(s, 1)
    snap, _ = Snapshot.prior(ids, D).with_params(params)
    return snap


def _rec(seed: int, **env: str) -> Recommender:
    s = Settings.from_env({"RTREC_SELF_TUNE": CANDIDATES, **PINNED, **env})
    return Recommender(s, snapshot=_learned(np.random.default_rng(seed), 30), seed=seed)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_live_candidate_gets_its_share_and_the_probabilities_are_the_mixtures(
        seed: int) -> None:
    """After a decision for alpha_2: ~90% of requests are served by it, each of the others
    ~5% (binomial, 5 standard errors); every impression records the candidate that served
    it, every candidate's list as a shadow, the served list equal to its candidate's, and the
    prefix and slot probabilities recomputed from the shadows and the split."""
    rec = _rec(seed)
    assert rec.self_tune is not None
    assert rec.self_tune.apply(json.dumps({"live": "alpha_2", "generation": 1}))
    shares = rec.self_tune.shares()
    assert shares == {"calibrated": 0.05, "alpha_0.05": 0.05, "alpha_2": 0.9}
    rng = np.random.default_rng(100 + seed)
    n = 2000
    served = dict.fromkeys(shares, 0)
    differ = 0
    for i in range(n):
        r = rec.recommend(i, x=_x(rng))
        served[r.variant] += 1
    for imp in rec.events.events:
        assert imp.experiment == EXPERIMENT and imp.policy == "linucb"
        lists = dict(imp.shadows)
        assert set(lists) == set(shares) and lists[imp.variant] == imp.products
        prefix, slots = exploration.mixture_probabilities(lists, shares, imp.products)
        assert imp.prefix_propensities == pytest.approx(prefix, abs=1e-12)
        assert imp.slot_propensities == pytest.approx(slots, abs=1e-12)
        assert imp.propensity == pytest.approx(prefix[-1], abs=1e-12)
        differ += len({lst[0] for lst in lists.values()}) > 1
    assert differ > n // 4  # the candidates disagree often enough for the test to mean much
    for name, share in shares.items():
        se = (share * (1 - share) / n) ** 0.5
        assert abs(served[name] / n - share) < 5 * se, (name, served)
    fams = {f.name: f for f in rec.self_tune.metric_families()}
    got = {s.labels["candidate"]: s.value for s in fams["rtrec_selftune_served"].samples
           if s.name.endswith("_total")}
    assert got == served
    live = {s.labels["candidate"]: s.value for s in fams["rtrec_selftune_live"].samples}
    assert live == {"calibrated": 0.0, "alpha_0.05": 0.0, "alpha_2": 1.0}


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_each_candidates_snips_from_the_served_log_is_its_true_value(seed: int) -> None:
    """With a known click model (the top product clicked with a probability of its own), the
    SNIPS of every candidate from the log serving wrote (shown top, logged probability, click)
    is within 4 standard errors of the mean click probability of that candidate's own top
    product on the same requests."""
    rec = _rec(seed)
    rec.self_tune.apply(json.dumps({"live": "alpha_0.05"}))
    rng = np.random.default_rng(200 + seed)
    appeal = {p: float(v) for p, v in zip(rec.snapshot.product_ids,
                                          rng.uniform(0.02, 0.6, len(rec.snapshot)), strict=True)}
    truth: dict[str, list[float]] = {n: [] for n in rec.self_tune.by_name}
    r, prop, tops = [], [], []
    for i in range(3000):
        rec.recommend(i, x=_x(rng))
        imp = rec.events.events[-1]
        r.append(float(rng.random() < appeal[imp.products[0]]))
        prop.append(imp.prefix_propensities[0])
        tops.append(dict(imp.shadows))
        for name, lst in imp.shadows:
            truth[name].append(appeal[lst[0]])
    shown = [imp.products[0] for imp in rec.events.events]
    for name, vals in truth.items():
        match = np.array([t[name][0] == s for t, s in zip(tops, shown, strict=True)])
        est = exploration.snips(np.array(r), match, np.array(prop))
        se = (est.upper - est.lower) / (2 * 1.96)
        assert abs(est.value - np.mean(vals)) < 4 * se + 1e-3, (name, est, np.mean(vals))


def test_requests_that_name_a_policy_or_alpha_or_carry_controls_are_outside_the_split() -> None:
    rec = _rec(7)
    rng = np.random.default_rng(7)
    r = rec.recommend(1, x=_x(rng), alpha=0.5)
    assert r.variant is None and rec.events.events[-1].shadows is None
    r = rec.recommend(1, x=_x(rng), policy="greedy")
    assert r.variant is None
    # under merchandising controls: the live rule serves, logged without probabilities
    r = rec.recommend(1, x=_x(rng), exclude=["p000"])
    imp = rec.events.events[-1]
    assert r.variant == "calibrated" and imp.variant == "calibrated"
    assert imp.prefix_propensities is None and "p000" not in imp.products


def test_a_missing_unreadable_or_foreign_decision_routes_by_the_default_said_once(
        caplog: pytest.LogCaptureFixture) -> None:
    router = SelfTuneRouter(Settings.from_env({"RTREC_SELF_TUNE": CANDIDATES, **PINNED}))
    caplog.set_level(logging.INFO, logger="serving.selftune")
    for _ in range(3):
        assert not router.apply(None)
    assert router.live == "calibrated" and router.switch_count == 0
    assert len([r for r in caplog.records if "no decision" in r.message]) == 1
    assert router.apply(json.dumps({"live": "alpha_2", "generation": 4}))
    assert router.generation == 4 and router.switch_count == 1
    switches = [r for r in caplog.records if "->" in r.message]
    assert len(switches) == 1 and "calibrated -> alpha_2" in switches[0].message
    assert not router.apply(json.dumps({"live": "alpha_2", "generation": 4}))  # no change
    for bad in (b"{not json", json.dumps({"live": "alpha_0.7"}), json.dumps([1]),
                json.dumps({"shares": {}})):
        router.apply(bad)
        assert router.live == "calibrated"
    assert len([r for r in caplog.records if "unreadable" in r.message
                and r.levelno == logging.WARNING]) == 1
    assert router.switch_count == 2  # back to the default once; the other bad ones repeat it
    fams = {f.name: f for f in router.metric_families()}
    assert fams["rtrec_selftune_switches"].samples[0].value == 2
    src = {s.labels["source"]: s.value for s in fams["rtrec_selftune_decision"].samples}
    assert src["unreadable"] == 1.0 and src["decision"] == 0.0


def test_redis_unreachable_keeps_the_last_decision_said_once(
        caplog: pytest.LogCaptureFixture) -> None:
    from devstack.stack import free_port

    s = Settings.from_env({"RTREC_SELF_TUNE": CANDIDATES, **PINNED,
                           "RTREC_REDIS_PORT": str(free_port()),
                           "RTREC_REDIS_TIMEOUT_S": "0.2"})
    router = SelfTuneRouter(s)
    router.apply(json.dumps({"live": "alpha_0.05", "generation": 1}))
    caplog.set_level(logging.INFO, logger="serving.selftune")
    for _ in range(3):
        assert not router.poll_once()
    assert router.live == "alpha_0.05" and router.source == "redis_error"
    assert len([r for r in caplog.records if "unreachable" in r.message]) == 1


def test_settings_refuse_bad_candidates_and_experiments_beside() -> None:
    from contract.config import SettingsError
    from serving.errors import InvalidRequestError

    for bad in ("calibrated", "alpha=x", "alpha=-1", "calibrated,calibrated", "beta=1",
                "alpha=0.1,alpha=0.10"):
        with pytest.raises(SettingsError, match="RTREC_SELF_TUNE"):
            Settings.from_env({"RTREC_SELF_TUNE": bad})
    with pytest.raises(SettingsError, match="MIN_SHARE"):
        Settings.from_env({"RTREC_SELF_TUNE_MIN_SHARE": "1"})
    from contract.experiments import Experiment

    exp = Experiment.from_dict({"name": "e", "salt": "s", "variants": [
        {"name": "a", "policy": "linucb", "share": 1.0}]})
    with pytest.raises(InvalidRequestError, match="RTREC_EXPERIMENTS"):
        Recommender(Settings.from_env({"RTREC_SELF_TUNE": CANDIDATES}), ["p1", "p2"],
                    experiment=exp)


@pytest.mark.parametrize("seed", [8, 9, 10])
def test_each_candidates_logged_list_is_what_its_rule_alone_would_show(seed: int) -> None:
    """The shadows serving logs are the candidates' own rankings: equal to what serving shows
    under RTREC_EXPLORATION=decaying, =calibrated, and for a request's alpha 2, on the same
    snapshot and x; under merchandising controls a decaying live rule ranks as decaying."""
    snap = _learned(np.random.default_rng(seed), 30, least=1)  # no ties among unlearned ones
    tuned = Recommender(Settings.from_env({"RTREC_SELF_TUNE": "decaying,calibrated,alpha=2"}),
                        snapshot=snap, seed=seed)
    refs = {rule: Recommender(Settings.from_env({"RTREC_EXPLORATION": rule}), snapshot=snap,
                              seed=seed) for rule in ("decaying", "calibrated")}
    rng = np.random.default_rng(300 + seed)
    differ = 0
    for i in range(60):
        x = _x(rng)
        tuned.recommend(i, x=x)
        lists = dict(tuned.events.events[-1].shadows)
        assert lists["decaying"] == tuple(it.product_id for it in
                                          refs["decaying"].recommend(i, x=x).items)
        assert lists["calibrated"] == tuple(it.product_id for it in
                                            refs["calibrated"].recommend(i, x=x).items)
        assert lists["alpha_2"] == tuple(it.product_id for it in
                                         refs["calibrated"].recommend(i, x=x, alpha=2.0).items)
        differ += len(set(lists.values())) > 1
        got = tuned.recommend(i, x=x, exclude=["p000"])
        want = refs["decaying"].recommend(i, x=x, exclude=["p000"])
        assert [it.product_id for it in got.items] == [it.product_id for it in want.items]
    assert differ > 10


def test_metrics_over_http_say_the_live_candidate_the_split_and_the_switch() -> None:
    """Through the HTTP app: POST /recommend is served by the split, and /metrics exposes
    every rtrec_selftune_* family OPERATIONS.md lists, with the switch counted."""
    from fastapi.testclient import TestClient

    from serving.app import create_app

    rec = _rec(11)
    client = TestClient(create_app(rec.settings, rec))
    rec.self_tune.apply(json.dumps({"live": "alpha_0.05", "generation": 2}))
    for user in range(30):
        resp = client.post("/recommend", json={"user_id": user, "x": [0.5] * D, "k": 3})
        assert resp.status_code == 200, resp.text
    text = client.get("/metrics").text
    assert "rtrec_selftune_switches_total 1.0" in text
    assert 'rtrec_selftune_live{candidate="alpha_0.05"} 1.0' in text
    assert 'rtrec_selftune_share{candidate="alpha_0.05"} 0.9' in text
    assert 'rtrec_selftune_decision{source="decision"} 1.0' in text
    assert "rtrec_selftune_generation 2.0" in text
    served = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                 if line.startswith("rtrec_selftune_served_total{"))
    assert served == 30
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "OPERATIONS.md").read_text()
    for name in ("switches", "live", "share", "served", "decision", "generation"):
        assert f"`rtrec_selftune_{name}`" in doc


@pytest.mark.parametrize("rule", ["category_ucb", "category_rate"])
@pytest.mark.parametrize("seed", [8, 9, 10])
def test_a_category_rule_is_a_candidate_and_ranks_as_the_setting_does(rule: str,
                                                                         seed: int) -> None:
    """``category_ucb`` (the default rule) and ``category_rate`` can be self-tuning
    candidates: the logged list is what serving shows under RTREC_EXPLORATION=<rule> on the
    same snapshot, catalog and x, and as the live rule under merchandising controls it ranks
    the same (every product learned at least once: no exact ties for the tie-break)."""
    from contract.catalog import ProductRecord

    snap = _learned(np.random.default_rng(seed), 30, least=1)
    catalog = [ProductRecord(p, f"c{i % 4}", 1.0) for i, p in enumerate(snap.product_ids)]
    tuned = Recommender(Settings.from_env(
        {"RTREC_SELF_TUNE": f"{rule},decaying,alpha=2"}), snapshot=snap, seed=seed,
        catalog=catalog)
    refs = {r: Recommender(Settings.from_env({"RTREC_EXPLORATION": r}), snapshot=snap,
                           seed=seed, catalog=catalog)
            for r in (rule, "decaying")}
    rng = np.random.default_rng(400 + seed)
    differ = 0
    for i in range(60):
        x = _x(rng)
        tuned.recommend(i, x=x)
        lists = dict(tuned.events.events[-1].shadows)
        for r in (rule, "decaying"):
            assert lists[r] == tuple(it.product_id for it in
                                     refs[r].recommend(i, x=x).items), r
        differ += lists[rule] != lists["decaying"]
        got = tuned.recommend(i, x=x, exclude=["p000"])
        want = refs[rule].recommend(i, x=x, exclude=["p000"])
        assert [it.product_id for it in got.items] == [it.product_id for it in want.items]
    assert differ > 0
