"""LinUCB math: Sherman-Morrison against direct inverses, and rankings against MABWiser."""

from __future__ import annotations

import numpy as np
import pytest
from mabwiser.mab import MAB, LearningPolicy

from contract import linucb


def _random_log(rng: np.random.Generator, arms: int, d: int, events: int):
    arm = rng.integers(0, arms, events)
    X = rng.uniform(-1, 1, (events, d))
    r = (rng.uniform(size=events) < 0.3).astype(float)
    return arm, X, r


def _learn(arms: int, d: int, arm, X, r, l2: float = 1.0) -> list[linucb.ArmState]:
    states = [linucb.init_state(d, l2) for _ in range(arms)]
    for a, x, y in zip(arm, X, r, strict=True):
        states[a] = linucb.update(states[a], x, y)
    return states


def test_one_step_by_hand() -> None:
    s = linucb.update(linucb.init_state(2, l2=2.0), np.array([1.0, 1.0]), 1.0)
    # A = 2I + [[1,1],[1,1]] = [[3,1],[1,3]]; A^-1 = [[3,-1],[-1,3]] / 8
    np.testing.assert_allclose(s.A_inv, np.array([[3, -1], [-1, 3]]) / 8, atol=1e-15)
    np.testing.assert_allclose(linucb.theta(s), [0.25, 0.25], atol=1e-15)
    assert s.n == 1 and s.version == 1


@pytest.mark.parametrize("d", [15, 40])
def test_sherman_morrison_matches_direct_inverse(d: int) -> None:
    rng = np.random.default_rng(d)
    arms = 200
    arm, X, r = _random_log(rng, arms, d, 6000)
    states = _learn(arms, d, arm, X, r)
    for a in range(arms):
        mask = arm == a
        A = np.eye(d) + X[mask].T @ X[mask]
        np.testing.assert_allclose(states[a].A_inv, np.linalg.inv(A), rtol=0, atol=1e-8)
        np.testing.assert_allclose(states[a].b, r[mask] @ X[mask], atol=1e-9)
        assert states[a].n == mask.sum()


def test_batch_update_equals_sequential() -> None:
    rng = np.random.default_rng(3)
    d = 15
    X = rng.uniform(-1, 1, (37, d))
    r = rng.uniform(size=37)
    seq = linucb.init_state(d)
    for x, y in zip(X, r, strict=True):
        seq = linucb.update(seq, x, y)
    batch = linucb.init_state(d)
    for chunk in np.array_split(np.arange(37), 5):
        batch = linucb.update_batch(batch, X[chunk], r[chunk])
    np.testing.assert_allclose(batch.A_inv, seq.A_inv, atol=1e-12)
    np.testing.assert_allclose(batch.b, seq.b, atol=1e-12)
    assert batch.n == seq.n == 37


@pytest.mark.parametrize(("k", "kinds"), [(1, "mixed"), (7, "mixed"), (45, "mixed"),
                                          (7, "observations"), (7, "rewards")])
def test_learn_batch_of_mixed_items_equals_one_by_one(k: int, kinds: str) -> None:
    """One item, fewer than d, several chunks of d; and batches of one kind of item."""
    rng = np.random.default_rng(k)
    d = 12
    X = rng.normal(size=(k, d))
    observe = rng.uniform(size=k) < 0.7
    observe[0] = True
    if kinds != "mixed":
        observe[:] = kinds == "observations"
    r = np.where(observe, 0.0, 1.0)
    seq = linucb.init_state(d)
    for x, y, o in zip(X, r, observe, strict=True):
        seq = (linucb.update if o else linucb.add_reward)(seq, x, y)
    batch = linucb.learn_batch(linucb.init_state(d), X, r, observe)
    np.testing.assert_allclose(batch.A_inv, seq.A_inv, rtol=0, atol=1e-12)
    np.testing.assert_allclose(batch.b, seq.b, rtol=0, atol=1e-12)
    assert (batch.n, batch.version) == (seq.n, seq.version) == (observe.sum(), k)
    assert linucb.learn_batch(seq, X[:0], r[:0], observe[:0]) is seq


@pytest.mark.parametrize("d", [15, 40])
def test_ucb_ranking_matches_mabwiser(d: int) -> None:
    rng = np.random.default_rng(100 + d)
    arms, alpha = 200, 1.25
    arm, X, r = _random_log(rng, arms, d, 4000)
    states = _learn(arms, d, arm, X, r)
    policy = LearningPolicy.LinUCB(alpha=alpha, l2_lambda=1.0)
    mab = MAB(arms=list(range(arms)), learning_policy=policy, seed=7)
    mab.fit(decisions=arm, rewards=r, contexts=X)
    thetas = np.stack([linucb.theta(s) for s in states])
    A_invs = np.stack([s.A_inv for s in states])
    contexts = rng.uniform(-1, 1, (20, d))
    expectations = mab.predict_expectations(contexts)
    for x, expected in zip(contexts, expectations, strict=True):
        ours = linucb.ucb_scores(thetas, A_invs, x, alpha)
        # same scores to rounding, hence the same full ranking
        theirs = np.array([expected[a] for a in range(arms)])
        np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-9)
        assert list(linucb.top_k(ours, 5)) == list(np.argsort(-theirs, kind="stable")[:5])


def test_ill_conditioned_stays_finite_and_accurate() -> None:
    """Many near-identical contexts: A is ill-conditioned, scores must stay finite and
    A^-1 close to the direct inverse (relative to its scale)."""
    rng = np.random.default_rng(5)
    d = 15
    base = rng.uniform(0, 1, d)
    s = linucb.init_state(d, l2=1e-3)
    X = base + 1e-7 * rng.standard_normal((5000, d))
    for x in X:
        s = linucb.update(s, x, 1.0)
    direct = np.linalg.inv(1e-3 * np.eye(d) + X.T @ X)
    assert np.isfinite(s.A_inv).all()
    rel = np.abs(s.A_inv - direct).max() / np.abs(direct).max()
    assert rel < 1e-6
    scores = linucb.ucb_scores(linucb.theta(s)[None], s.A_inv[None], base, 1.0)
    assert np.isfinite(scores).all()


def test_prior_scores_are_finite_and_explore() -> None:
    d = 15
    s = linucb.init_state(d)
    x = np.full(d, 0.5)
    score = linucb.ucb_scores(linucb.theta(s)[None], s.A_inv[None], x, alpha=1.0)
    assert score[0] == pytest.approx(np.sqrt(x @ x))  # mean 0 + full prior width
    assert linucb.ucb_scores(linucb.theta(s)[None], s.A_inv[None], x, alpha=0.0)[0] == 0.0


def test_top_k_orders_and_breaks_ties_by_index() -> None:
    scores = np.array([0.1, 0.9, 0.5, 0.9, -1.0])
    assert list(linucb.top_k(scores, 3)) == [1, 3, 2]
    assert list(linucb.top_k(scores, 10)) == [1, 3, 2, 0, 4]


def test_learn_at_once_then_add_reward_equals_waiting_for_the_reward() -> None:
    """The job's order (observe with reward 0 now, add the click's reward later) ends at the
    same statistics as learning each observation with its final reward."""
    rng = np.random.default_rng(11)
    d = 15
    X = rng.uniform(0, 1, (60, d))
    r = (rng.uniform(size=60) < 0.3).astype(float)
    waited = linucb.init_state(d)
    for x, y in zip(X, r, strict=True):
        waited = linucb.update(waited, x, y)
    at_once = linucb.init_state(d)
    for x in X:
        at_once = linucb.update(at_once, x, 0.0)
    for x, y in zip(X, r, strict=True):
        if y:
            at_once = linucb.add_reward(at_once, x, y)
    np.testing.assert_allclose(at_once.A_inv, waited.A_inv, atol=1e-12)
    np.testing.assert_allclose(at_once.b, waited.b, atol=1e-12)
    assert at_once.n == waited.n == 60
    assert at_once.version == 60 + int(r.sum()) and waited.version == 60


@pytest.mark.parametrize(
    ("A_inv", "b", "n", "version", "match"),
    [
        (np.eye(3), np.zeros(2), 0, None, "shapes"),
        (np.eye(3)[:2], np.zeros(3), 0, None, "shapes"),
        (np.zeros(3), np.zeros(3), 0, None, "shapes"),
        (np.eye(2), np.zeros((2, 1)), 0, None, "shapes"),
        (np.eye(0), np.zeros(0), 0, None, "shapes"),
        (np.eye(2), np.zeros(2), -1, None, "n: -1 < 0"),
        (np.eye(2), np.zeros(2), 1.0, None, "n: expected an integer"),
        (np.eye(2), np.zeros(2), True, None, "n: expected an integer"),
        (np.eye(2), np.zeros(2), 5, 4, "version 4 < n 5"),
        (np.eye(2), np.zeros(2), 0, -1, "version: -1 < 0"),
        (np.full((2, 2), np.nan), np.zeros(2), 0, None, "finite"),
        (np.eye(2), np.array([0.0, np.inf]), 0, None, "finite"),
        (np.eye(2), np.array([0.0, -np.inf]), 0, None, "finite"),
    ],
)
def test_arm_state_refuses_what_is_not_one(A_inv, b, n, version, match: str) -> None:
    with pytest.raises(linucb.StateError, match=match):
        linucb.ArmState(A_inv, b, n, version)


def test_arm_state_version_defaults_to_n_and_arrays_to_float64() -> None:
    s = linucb.ArmState([[1, 0], [0, 1]], [0, 1], np.int64(4))
    assert (s.n, s.version, type(s.n), type(s.version)) == (4, 4, int, int)
    assert s.A_inv.dtype == s.b.dtype == np.float64 and s.dim == 2
    assert linucb.ArmState(s.A_inv, s.b, 4, 9).version == 9
    big = np.full((2, 2), 1e200)  # finite, though its squares overflow
    assert linucb.ArmState(big, np.full(2, -1e300), 0).A_inv is big


def test_an_overflowing_update_is_refused_not_learned() -> None:
    """x is finite (the event contract holds) but x^T A^-1 x overflows: no NaN state."""
    s = linucb.init_state(3)
    with np.errstate(over="ignore", invalid="ignore"), pytest.raises(linucb.StateError):
        linucb.learn_batch(s, np.full((1, 3), 1e200), np.zeros(1), np.ones(1, dtype=bool))
    with pytest.raises(linucb.StateError, match="dim"):
        linucb.init_state(0)
    with pytest.raises(linucb.StateError, match="l2"):
        linucb.init_state(2, l2=float("nan"))
