"""The hierarchical-shrinkage learners of the learning benchmark (issue 22's experiment,
bench.learning_peers.SharedPriorLinUCB) score what docs/EXPLORATION.md says: checked against
the ridge formulas computed from scratch (explicit inverses of ``l2 I + X^T X``) and against
one hand computation."""

from __future__ import annotations

import numpy as np
import pytest

from bench.learning_peers import ProjectLinUCB, SharedPriorLinUCB


def _learn(learner: ProjectLinUCB, X: np.ndarray, items: np.ndarray, r: np.ndarray) -> None:
    for x, j, y in zip(X, items, r, strict=True):
        learner.update(x, int(j), float(y))


def _from_scratch(X: np.ndarray, items: np.ndarray, r: np.ndarray, m: int, l2: float,
                  groups: np.ndarray) -> tuple[list, list, list, list]:
    d = X.shape[1]
    A = [l2 * np.eye(d) + X[items == j].T @ X[items == j] for j in range(m)]
    b = [X[items == j].T @ r[items == j] for j in range(m)]
    g_of = groups[items]
    A0 = [l2 * np.eye(d) + X[g_of == g].T @ X[g_of == g] for g in range(groups.max() + 1)]
    b0 = [X[g_of == g].T @ r[g_of == g] for g in range(groups.max() + 1)]
    return A, b, A0, b0


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("grouped", [False, True])
def test_scores_equal_the_ridge_formulas_from_scratch(seed: int, grouped: bool) -> None:
    rng = np.random.default_rng([seed, 22])
    m, d, n, l2 = 6, 4, 40, 2.0
    X = rng.random((n, d))
    items = rng.integers(0, m, n)
    r = (rng.random(n) < 0.3).astype(float)
    names = ["a", "b", "a", "c", "b", "a"] if grouped else None
    groups = np.array([0, 1, 0, 2, 1, 0]) if grouped else np.zeros(m, dtype=int)
    A, b, A0, b0 = _from_scratch(X, items, r, m, l2, groups)
    p = (r.sum() + 1) / (n + 2)
    x = rng.random(d)
    xx = x @ x
    want_rate, want_mean, want_mean_p = [], [], []
    for j in range(m):
        Ai = np.linalg.inv(A[j])
        g = groups[j]
        q = x @ np.linalg.solve(A0[g], b0[g] + l2 * p * x / xx)
        theta_s = np.linalg.solve(A0[g], b0[g])
        var = x @ Ai @ x
        want_rate.append(x @ Ai @ b[j] + q * l2 * var / xx)
        want_mean.append(x @ Ai @ (b[j] + l2 * theta_s))
        want_mean_p.append(want_mean[-1] + p * l2 * var / xx)
    for centre, want in (("rate", want_rate), ("mean", want_mean), ("mean_p", want_mean_p)):
        learner = SharedPriorLinUCB("s", m, d, centre, groups=names, l2=l2)
        _learn(learner, X, items, r)
        np.testing.assert_allclose(learner.scores(x), want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("seed", [1, 2])
def test_another_prior_weight_scores_with_that_weight(seed: int) -> None:
    rng = np.random.default_rng([seed, 23])
    m, d, n, l2, w = 4, 3, 30, 1.5, 10.0
    X, items = rng.random((n, d)), rng.integers(0, m, n)
    r = (rng.random(n) < 0.3).astype(float)
    A, b, A0, b0 = _from_scratch(X, items, r, m, l2, np.zeros(m, dtype=int))
    x = rng.random(d)
    theta_s = np.linalg.solve(A0[0], b0[0])
    want = [x @ np.linalg.solve(A[j] + (w - l2) * np.eye(d), b[j] + w * theta_s)
            for j in range(m)]
    learner = SharedPriorLinUCB("s", m, d, "mean", weight=w, l2=l2)
    _learn(learner, X, items, r)
    np.testing.assert_allclose(learner.scores(x), want, rtol=1e-9)


def test_rate_by_hand_and_equal_to_decaying_before_any_data() -> None:
    """d = 2, l2 = 4, x = (3, 4): one observation (x, click) of product 0. Shared model:
    A0 = 4 I + x x', p = 2/3, so q = x' A0^-1 (x + 4 p x / 25) = (1 + 8/75) x' A0^-1 x and
    x' A0^-1 x = 25 / (4 + 25) (x is an eigenvector of A0 with eigenvalue 29): q = 83/87.
    Product 1 (never seen): its score is q * 4 * (25/4) / 25 = q. Product 0: x.theta =
    x' A^-1 x = 25/29, bonus q * 4 * (1/29 * 25) / 25 = 4q/29."""
    x = np.array([3.0, 4.0])
    learner = SharedPriorLinUCB("s", 2, 2, "rate", l2=4.0)
    decaying = ProjectLinUCB("d", 2, 2, "decaying", l2=4.0)
    np.testing.assert_allclose(learner.scores(x), decaying.scores(x), rtol=1e-12)  # q = p
    learner.update(x, 0, 1.0)
    q = 83 / 87
    np.testing.assert_allclose(learner.scores(x), [25 / 29 + 4 * q / 29, q], rtol=1e-12)
