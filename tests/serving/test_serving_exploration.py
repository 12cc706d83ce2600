"""Serving ranks with RTREC_EXPLORATION's rule (docs/EXPLORATION.md): by default the decaying
rule from the click rate its snapshot holds; ``calibrated`` its alpha; ``fixed`` keeps
RTREC_ALPHA; a request's alpha overrides any."""

from __future__ import annotations

import numpy as np
import pytest

from contract import linucb
from contract.codec import Params
from contract.config import Settings
from contract.exploration import calibrated_alpha
from contract.features import CONTEXT_DIM, CONTEXT_NAMES
from serving import Recommender, Snapshot

D = CONTEXT_DIM
TOD = [i for i, n in enumerate(CONTEXT_NAMES) if n.startswith("tod_")]


def _x(rng: np.random.Generator) -> np.ndarray:
    x = rng.uniform(0, 1, D)
    x[TOD] = 0.0
    x[TOD[int(rng.integers(0, 3))]] = 1.0
    return x


def _learned(rng: np.random.Generator, m: int) -> tuple[Snapshot, int, int]:
    """A snapshot of m products learned from x of the shipped layout, with its true counts."""
    ids = [f"p{i:03d}" for i in range(m)]
    params, clicks, n = {}, 0, 0
    for pid in ids:
        s = linucb.init_state(D)
        for _ in range(int(rng.integers(0, 25))):
            r = float(rng.random() < 0.2)
            s = linucb.update(s, _x(rng), r)
            clicks, n = clicks + int(r), n + 1
        if s.n:
            params[pid] = Params(s, 1)
    snap, _ = Snapshot.prior(ids, D).with_params(params)
    return snap, clicks, n


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_calibrated_rule_ranks_with_the_calibrated_alpha(seed: int) -> None:
    rng = np.random.default_rng(seed)
    snap, clicks, n = _learned(rng, 40)
    rec = Recommender(Settings.from_env({"RTREC_EXPLORATION": "calibrated"}), snapshot=snap,
                      seed=0)
    for _ in range(5):
        x = _x(rng)
        alpha = calibrated_alpha(clicks, n, x, 1.0)
        expected = linucb.ucb_scores(snap.thetas, snap.A_invs, x, alpha)
        got = rec.recommend(1, x=x, k=5, policy="linucb")
        assert [i.score for i in got.items] == pytest.approx(sorted(expected)[::-1][:5])
        # and not what the old fixed alpha 1 would have scored
        old = linucb.ucb_scores(snap.thetas, snap.A_invs, x, 1.0)
        assert [i.score for i in got.items] != pytest.approx(sorted(old)[::-1][:5])


def test_fixed_rule_and_request_alpha() -> None:
    rng = np.random.default_rng(5)
    snap, _, _ = _learned(rng, 30)
    x = _x(rng)
    fixed = Recommender(Settings.from_env({"RTREC_EXPLORATION": "fixed", "RTREC_ALPHA": "0.7"}),
                        snapshot=snap, seed=0)
    expected = linucb.ucb_scores(snap.thetas, snap.A_invs, x, 0.7)
    got = fixed.recommend(1, x=x, k=5, policy="linucb")
    assert [i.score for i in got.items] == pytest.approx(sorted(expected)[::-1][:5])
    calibrated = Recommender(Settings.from_env({"RTREC_EXPLORATION": "calibrated"}),
                             snapshot=snap, seed=0)
    asked = calibrated.recommend(1, x=x, k=5, policy="linucb", alpha=0.7)
    assert [i.score for i in asked.items] == pytest.approx(sorted(expected)[::-1][:5])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_decaying_rule_ranks_with_the_contracts_scores(seed: int) -> None:
    """RTREC_EXPLORATION=decaying: serving scores every product mean + w x^T A^-1 x with w the
    contract's decaying_weight of the snapshot's counts (docs/EXPLORATION.md); the explanation's
    bonus is that term; a request's alpha still overrides the rule."""
    from contract.exploration import decaying_weight, rule_scores

    rng = np.random.default_rng(seed)
    snap, clicks, n = _learned(rng, 40)
    rec = Recommender(Settings.from_env({"RTREC_EXPLORATION": "decaying"}), snapshot=snap,
                      seed=0)
    for _ in range(5):
        x = _x(rng)
        mean = snap.thetas @ x
        var = np.einsum("mij,i,j->m", snap.A_invs, x, x)
        expected = rule_scores("decaying", 1.0, clicks, n, x, 1.0, mean, var)
        w = decaying_weight(clicks, n, x, 1.0)
        assert rec._decaying_weight(snap, x) == pytest.approx(w, rel=1e-9)
        got = rec.recommend(1, x=x, k=5, policy="linucb", explain=True)
        top = np.argsort(-expected, kind="stable")[:5]
        assert [i.product_id for i in got.items] == [snap.product_ids[j] for j in top]
        assert [i.score for i in got.items] == pytest.approx(expected[top].tolist(), rel=1e-9)
        assert got.explanations is not None
        for e, j in zip(got.explanations, top, strict=True):
            assert e["exploration_bonus"] == pytest.approx(w * var[j], rel=1e-9)
            assert e["expected_reward"] + e["exploration_bonus"] == pytest.approx(
                e["score"], rel=1e-9, abs=1e-12)
        # the calibrated rule would rank by another score
        calib = linucb.ucb_scores(snap.thetas, snap.A_invs, x, calibrated_alpha(clicks, n, x, 1.0))
        assert [i.score for i in got.items] != pytest.approx(sorted(calib)[::-1][:5])
        asked = rec.recommend(1, x=x, k=5, policy="linucb", alpha=0.7)
        fixed = linucb.ucb_scores(snap.thetas, snap.A_invs, x, 0.7)
        assert [i.score for i in asked.items] == pytest.approx(sorted(fixed)[::-1][:5])


@pytest.mark.parametrize("rule", ["decaying", "category_rate"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_tiny_x_is_explained_with_finite_terms(rule: str, seed: int) -> None:
    """x whose x.x underflows (entries ~1e-160 and below) is a valid request: the variance
    rules rank it on u = x / |x| (a product at the prior scores the click rate whatever |x|),
    and the explanation's bonus must be that same finite number, not inf * 0 (NaN, which the
    HTTP layer cannot encode: a 500)."""
    import json

    from contract.catalog import ProductRecord

    rng = np.random.default_rng(seed)
    snap, _, _ = _learned(rng, 40)
    catalog = [ProductRecord(p, f"c{i % 3}", 1.0) for i, p in enumerate(snap.product_ids)]
    rec = Recommender(Settings.from_env({"RTREC_EXPLORATION": rule}), snapshot=snap, seed=0,
                      catalog=catalog)
    base = np.abs(_x(rng)) + 0.1
    for scale in (1e-160, 1e-200, 1e-308):
        got = rec.recommend(1, x=base * scale, k=5, policy="linucb", explain=True)
        assert got.explanations is not None
        json.dumps(got.explanations, allow_nan=False)  # what the HTTP layer does
        for item, e in zip(got.items, got.explanations, strict=True):
            assert np.isfinite(e["exploration_bonus"])
            terms = e["expected_reward"] + e["exploration_bonus"] + e["popularity"] + e["boost"]
            assert terms == pytest.approx(item.score, rel=1e-9, abs=1e-12)
