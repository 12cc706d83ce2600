"""Scores equal the contract's math and MABWiser's ranking on the same parameters; policies."""

from __future__ import annotations

import math

import numpy as np
import pytest
from mabwiser.mab import MAB, LearningPolicy
from serving_helpers import learned_state

from contract import linucb
from contract.codec import Params
from contract.config import Settings
from contract.features import CONTEXT_DIM
from serving import InvalidRequestError, Recommender, Snapshot
from serving.eventlog import MemoryEventLog
from serving.policies import UnknownPolicyError, ranking_propensity

D = CONTEXT_DIM


def _snapshot(rng: np.random.Generator, m: int = 50) -> Snapshot:
    ids = [f"p{i:03d}" for i in range(m)]
    snap = Snapshot.prior(ids, D)
    params = {pid: Params(learned_state(rng, D, int(rng.integers(0, 40))), 1) for pid in ids}
    snap, _ = snap.with_params({p: v for p, v in params.items() if v.version > 0})
    return snap


@pytest.mark.parametrize("alpha", [0.0, 0.25, 1.0, 3.0])
def test_scores_equal_contract_ucb(alpha: float) -> None:
    rng = np.random.default_rng(1)
    snap = _snapshot(rng)
    for _ in range(20):
        x = rng.uniform(0, 1, D)
        expected = linucb.ucb_scores(snap.thetas, snap.A_invs, x, alpha)
        np.testing.assert_allclose(snap.scores(x, alpha), expected, rtol=1e-12, atol=1e-12)


def test_prior_scores_are_finite_and_equal() -> None:
    snap = Snapshot.prior(["a", "b", "c"], D, l2=2.0)
    x = np.linspace(0, 1, D)
    s = snap.scores(x, 1.0)
    assert np.isfinite(s).all()
    np.testing.assert_allclose(s, np.linalg.norm(x) / math.sqrt(2.0))


def test_ranking_matches_mabwiser_on_the_same_parameters() -> None:
    """Fit MABWiser's LinUCB, load its per-arm A^-1 and beta into a snapshot, compare."""
    rng = np.random.default_rng(7)
    arms = [f"p{i:03d}" for i in range(30)]
    n = 3000
    decisions = rng.choice(arms, n)
    contexts = rng.uniform(0, 1, (n, D))
    rewards = (rng.uniform(size=n) < 0.2 + 0.5 * contexts[:, 0]).astype(int)
    alpha = 1.5
    mab = MAB(arms, LearningPolicy.LinUCB(alpha=alpha, l2_lambda=1.0), seed=3)
    mab.fit(decisions, rewards, contexts)
    snap = Snapshot.prior(arms, D)
    params = {}
    for arm, model in mab._imp.arm_to_model.items():
        count = int((decisions == arm).sum())
        b = model.A @ model.beta  # A theta = b
        params[arm] = Params(linucb.ArmState(np.asarray(model.A_inv), b, count), 1)
    snap, changed = snap.with_params(params)
    assert len(changed) == len(arms)
    tests = rng.uniform(0, 1, (50, D))
    expectations = mab.predict_expectations(tests)
    rec = Recommender(Settings.from_env({"RTREC_EXPLORATION": "fixed", "RTREC_ALPHA": alpha}),
                      snapshot=snap)
    for x, exp in zip(tests, expectations, strict=True):
        ours = snap.scores(x, alpha)
        theirs = np.array([exp[a] for a in arms])
        np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-9)
        top = [i.product_id for i in rec.recommend(1, x=x, k=5, policy="linucb").items]
        assert top == sorted(arms, key=lambda a: -exp[a])[:5]
        assert top[0] == arms[int(np.argmax(theirs))]


def test_with_params_ignores_older_equal_unknown_and_nonfinite() -> None:
    rng = np.random.default_rng(2)
    snap = Snapshot.prior(["a", "b"], D)
    s5 = learned_state(rng, D, 5)
    snap, changed = snap.with_params({"a": Params(s5, 1)})
    assert changed == ["a"] and snap.version_of("a") == 5 and snap.model_version == 5
    older = learned_state(rng, D, 3)
    same = linucb.ArmState(older.A_inv, older.b, 5)
    with pytest.raises(ValueError, match="finite"):  # a NaN state cannot even be built
        linucb.ArmState(np.full((D, D), np.nan), np.zeros(D), 9)
    snap2, changed = snap.with_params({"a": Params(older, 2), "zzz": Params(s5, 1)})
    assert changed == []
    np.testing.assert_array_equal(snap2.A_invs[0], s5.A_inv)
    snap3, changed = snap2.with_params({"a": Params(same, 3)})
    assert changed == [] and snap3.version_of("a") == 5


def test_greedy_is_alpha_zero_and_linucb_explores() -> None:
    rng = np.random.default_rng(3)
    snap = _snapshot(rng, 40)
    rec = Recommender(Settings.from_env({"RTREC_EXPLORATION": "fixed", "RTREC_ALPHA": 2.0}),
                      snapshot=snap, seed=0)
    x = rng.uniform(0, 1, D)
    greedy = rec.recommend(1, x=x, k=5, policy="greedy")
    assert [i.product_id for i in greedy.items] == [
        snap.product_ids[j] for j in linucb.top_k(snap.thetas @ x, 5)]
    assert greedy.propensity == 1.0
    ucb = rec.recommend(1, x=x, k=5, policy="linucb")
    expected = linucb.ucb_scores(snap.thetas, snap.A_invs, x, 2.0)
    assert [i.score for i in ucb.items] == pytest.approx(sorted(expected)[::-1][:5])
    assert ucb.propensity == 1.0


def test_random_policy_is_uniform_with_its_propensity() -> None:
    ids = [f"p{i}" for i in range(10)]
    events = MemoryEventLog()
    rec = Recommender(Settings.from_env({}), ids, events=events, seed=42)
    firsts = [rec.recommend(1, x=np.ones(D), k=3, policy="random").items[0].product_id
              for _ in range(3000)]
    counts = np.array([firsts.count(p) for p in ids])
    assert counts.min() > 220 and counts.max() < 380  # 300 expected each
    imp = events.events[0]
    assert imp.propensity == pytest.approx(1 / (10 * 9 * 8))
    assert len(set(imp.products)) == 3
    assert ranking_propensity("random", 200, 5) == pytest.approx(1 / 200 / 199 / 198 / 197 / 196)
    assert ranking_propensity("random", 100_000, 100) is None


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"x": np.ones(D), "policy": "thompson"}, UnknownPolicyError, "policy"),
    ({"x": np.ones(D), "k": 0}, InvalidRequestError, "k: must be"),
    ({"x": np.ones(D), "k": 101}, InvalidRequestError, "k: must be"),
    ({"x": np.ones(D - 1)}, InvalidRequestError, "x: length"),
    ({"x": [float("nan")] * D}, InvalidRequestError, "finite"),
    ({"x": np.ones(D), "alpha": -1.0}, InvalidRequestError, "alpha"),
    ({"x": [1e200] * D}, InvalidRequestError, "RTREC_MAX_ABS_X"),  # the job would refuse it
    ({}, InvalidRequestError, "feature space"),
])
def test_invalid_requests(kwargs: dict, error: type[Exception], match: str) -> None:
    rec = Recommender(Settings.from_env({}), ["a", "b"])
    with pytest.raises(error, match=match):
        rec.recommend(1, **kwargs)


def test_scores_that_overflow_are_refused() -> None:
    """Within a raised RTREC_MAX_ABS_X, an x whose scores overflow is still refused (the
    calibrated rule's bonus grows with |x|; the decaying rule's does not: a product at the
    prior scores the click rate p = 1/2 whatever |x|, docs/EXPLORATION.md)."""
    rec = Recommender(Settings.from_env({"RTREC_MAX_ABS_X": "1e300",
                                         "RTREC_EXPLORATION": "calibrated"}), ["a", "b"])
    with pytest.raises(InvalidRequestError, match="overflow"):
        rec.recommend(1, x=[1e200] * D)
    decaying = Recommender(Settings.from_env({"RTREC_MAX_ABS_X": "1e300"}), ["a", "b"])
    r = decaying.recommend(1, x=[1e200] * D, k=2)
    assert [i.score for i in r.items] == pytest.approx([0.5, 0.5], rel=1e-12)


def test_k_larger_than_catalog_shows_everything_once() -> None:
    rec = Recommender(Settings.from_env({}), ["a", "b", "c"])
    r = rec.recommend(1, x=np.ones(D), k=10)
    assert sorted(i.product_id for i in r.items) == ["a", "b", "c"]


def test_context_of_known_users_equals_the_shared_transform() -> None:
    """The per-(user, time bucket, day kind) cache of x gives exactly context_vector's x."""
    from datetime import UTC, datetime, timedelta

    from contract.features import FeatureSpace, load_users

    users = load_users()
    fs = FeatureSpace.load()
    rec = Recommender(Settings.from_env({}), ["a", "b"], users={u.user_id: u for u in users},
                      features=fs)
    rng = np.random.default_rng(9)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    for _ in range(500):
        user = users[int(rng.integers(len(users)))]
        at = base + timedelta(minutes=int(rng.integers(0, 60 * 24 * 21)))
        np.testing.assert_array_equal(rec.context(user.user_id, at=at),
                                      fs.context_vector(user, at))
        r = rec.recommend(user.user_id, at=at, k=1)
        np.testing.assert_array_equal(r.x, fs.context_vector(user, at))
