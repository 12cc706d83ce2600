"""The ``category_rate`` exploration rule's maths (contract.exploration ``category_solve``,
``category_rates``, ``category_weights``, ``pool_terms``): by hand, and against the
benchmark's learner that measured it (bench.learning_peers.SharedPriorLinUCB with
``centre="rate"`` and the catalog's groups) on random learned states, several seeds."""

from __future__ import annotations

import numpy as np
import pytest

from bench.learning_peers import SharedPriorLinUCB
from contract import exploration


def test_hand_computation() -> None:
    # d = 2, l2 = 2; category 0: S = [[2, 1], [1, 2]], t = (3, 0); category 1: no data
    # l2 I + S = [[4, 1], [1, 4]], its inverse [[4, -1], [-1, 4]] / 15
    # x = (1, 2), x.x = 5, p = 0.25: t + l2 p x / x.x = (3, 0) + (0.1, 0.2) = (3.1, 0.2)
    # M (3.1, 0.2) = (12.2, -2.3) / 15, x^T of it = (12.2 - 4.6) / 15 = 7.6 / 15
    S = np.array([[[2.0, 1.0], [1.0, 2.0]], [[0.0, 0.0], [0.0, 0.0]]])
    t = np.array([[3.0, 0.0], [0.0, 0.0]])
    x = np.array([1.0, 2.0])
    M = exploration.category_solve(S, 2.0)
    assert np.allclose(M[0], np.array([[4.0, -1.0], [-1.0, 4.0]]) / 15, rtol=0, atol=1e-15)
    q = exploration.category_rates(M, t, x, 0.25, 2.0)
    assert q == pytest.approx([7.6 / 15, 0.25], rel=1e-12)
    # the weight of x^T A^-1 x: q l2 / x.x; a category with no data is the decaying rule's
    w = exploration.category_weights(q, x, 2.0)
    assert w == pytest.approx([7.6 / 15 * 2 / 5, 0.25 * 2 / 5], rel=1e-12)
    # p = 0.25 is click_rate(0, 2)
    assert w[1] == pytest.approx(exploration.decaying_weight(0, 2, x, 2.0), rel=1e-12)
    # x = 0 has no direction: the prior rate, and no bonus
    assert exploration.category_rates(M, t, np.zeros(2), 0.25, 2.0).tolist() == [0.25, 0.25]
    assert exploration.category_weights(q, np.zeros(2), 2.0).tolist() == [0.0, 0.0]
    # category_ucb: plus one standard deviation, sqrt(p (1 - p) x^T M x); p (1 - p) = 3 / 16
    # category 0: x^T M x = (4 - 2 - 2 + 16) / 15 = 16 / 15, so p (1 - p) x^T M x = 0.2
    # category 1 (no data): x^T M x = x.x / l2 = 2.5, so 3 / 16 * 2.5 = 0.46875
    sd = exploration.category_rate_sd(M, x, 0.25)
    assert sd == pytest.approx([0.2 ** 0.5, 0.46875 ** 0.5], rel=1e-12)
    ucb = exploration.category_rates(M, t, x, 0.25, 2.0, exploration.CATEGORY_OPTIMISM[
        "category_ucb"])
    assert ucb == pytest.approx([7.6 / 15 + 0.2 ** 0.5, 0.25 + 0.46875 ** 0.5], rel=1e-12)
    # the docstring's example: S = diag(3, 0), t = (1, 0), l2 = 1, p = 0.2, x = (1, 0)
    M1 = exploration.category_solve(np.array([[[3.0, 0.0], [0.0, 0.0]]]), 1.0)
    assert exploration.category_rates(M1, np.array([[1.0, 0.0]]), np.array([1.0, 0.0]), 0.2,
                                      1.0, 1.0) == pytest.approx([0.5], rel=1e-12)
    # x = 0: no direction, no deviation either
    assert exploration.category_rates(M, t, np.zeros(2), 0.25, 2.0, 1.0).tolist() == \
        [0.25, 0.25]


def test_pool_terms_by_hand() -> None:
    # one product, d = 2, l2 = 1, learned x = (1, 1) with reward 1: A = I + x x^T, b = x
    A = np.eye(2) + np.ones((2, 2))
    theta = np.linalg.solve(A, np.ones(2))
    S, b = exploration.pool_terms(theta[None], np.linalg.inv(A)[None], 1.0)
    assert np.allclose(S[0], np.ones((2, 2)), atol=1e-14)
    assert np.allclose(b[0], np.ones(2), atol=1e-14)


def test_refuses_what_it_cannot_compute() -> None:
    with pytest.raises(exploration.ExplorationError):
        exploration.category_solve(np.zeros((1, 2, 2)), 0.0)
    with pytest.raises(exploration.ExplorationError):
        exploration.category_rates(np.zeros((1, 2, 2)), np.zeros((1, 3)), np.ones(2), 0.1, 1.0)
    with pytest.raises(exploration.ExplorationError):
        exploration.category_rates(np.eye(2)[None], np.zeros((1, 2)),
                                   np.array([np.inf, 0.0]), 0.1, 1.0)
    with pytest.raises(exploration.ExplorationError, match="variance"):
        exploration.exploration_alpha("category_rate", 1.0, 1, 2, np.ones(2), 1.0)
    with pytest.raises(exploration.ExplorationError, match="category"):
        exploration.rule_scores("category_rate", 1.0, 1, 2, np.ones(2), 1.0, np.zeros(3),
                                np.ones(3))


@pytest.mark.parametrize("rule", ["category_rate", "category_ucb"])
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
@pytest.mark.parametrize("l2", [1.0, 2.0])
def test_equals_the_benchmarks_category_learner(rule: str, seed: int, l2: float) -> None:
    """The pools summed from each product's state as published (A^-1, theta), the contract's
    q_c(x) (plus the rule's optimism) and weights, give exactly the scores of the learner the
    benchmark measured."""
    opt = exploration.CATEGORY_OPTIMISM[rule]
    rng = np.random.default_rng([seed, 2222])
    m, d, n = 12, 5, 300
    names = [("shoes", "hats", "bags")[j % 3] for j in range(m)]
    names[-1] = "scarves"  # a category whose one product is never learned: q = p there
    learner = SharedPriorLinUCB(rule, m, d, "rate", groups=names, l2=l2, optimism=opt)
    for _ in range(n):
        x = rng.random(d) * rng.choice([0.5, 1.0, 3.0])
        j = int(rng.integers(0, m - 1))
        learner.update(x, j, float(rng.random() < 0.1 + 0.05 * (j % 4)))
    groups = sorted(set(names))
    code = np.array([groups.index(c) for c in names])
    dS, db = exploration.pool_terms(learner.theta, learner.A_inv, l2)
    S = np.zeros((len(groups), d, d))
    t = np.zeros((len(groups), d))
    np.add.at(S, code, dS)
    np.add.at(t, code, db)
    assert np.allclose(S + l2 * np.eye(d), learner.A0, rtol=1e-9, atol=1e-9)
    assert np.allclose(t, learner.b0, rtol=1e-9, atol=1e-9)
    M = exploration.category_solve(S, l2)
    p = exploration.click_rate(learner.clicks, learner.observations)
    for _ in range(20):
        x = rng.random(d) * rng.choice([0.1, 1.0, 10.0])
        q = exploration.category_rates(M, t, x, p, l2, opt)
        sd_empty = (p * (1 - p) * float(x @ x) / l2) ** 0.5  # no data: M = I / l2
        assert q[groups.index("scarves")] == pytest.approx(p + opt * sd_empty, rel=1e-12)
        w = exploration.category_weights(q, x, l2)
        var = np.einsum("mij,i,j->m", learner.A_inv, x, x)
        ours = learner.theta @ x + w[code] * var
        theirs = learner.scores(x)
        assert np.allclose(ours, theirs, rtol=1e-9, atol=1e-12)
        assert np.array_equal(np.argsort(-ours, kind="stable")[:3],
                              np.argsort(-theirs, kind="stable")[:3])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_inverses_once_give_the_same_shares_and_counts(seed: int) -> None:
    """``inverses`` computed once and handed to ``count_terms`` and ``pool_terms`` give their
    numbers bit for bit; a singular A^-1 in the batch is marked (not ok) and the others'
    inverses are those of the whole batch's inversion without it."""
    rng = np.random.default_rng([seed, 31])
    d = 15
    G = rng.normal(0, 0.4, (12, d, d))
    A_invs = np.linalg.inv(np.eye(d) + G @ G.transpose(0, 2, 1))
    thetas = rng.normal(0, 0.2, (12, d))
    A, ok = exploration.inverses(A_invs)
    assert ok.all() and np.array_equal(A, np.linalg.inv(A_invs))
    assert np.array_equal(exploration.count_terms(thetas, A_invs, inverse=A),
                          exploration.count_terms(thetas, A_invs))
    for got, want in zip(exploration.pool_terms(thetas, A_invs, 1.5, inverse=A),
                         exploration.pool_terms(thetas, A_invs, 1.5), strict=True):
        assert np.array_equal(got, want)
    assert np.array_equal(A, np.linalg.inv(A_invs))  # pool_terms did not write into it
    bad = A_invs.copy()
    bad[[3, 7]] = 0.0  # singular
    A2, ok2 = exploration.inverses(bad)
    assert ok2.tolist() == [j not in (3, 7) for j in range(12)]
    assert np.isnan(A2[~ok2]).all()
    assert np.array_equal(A2[ok2], np.linalg.inv(A_invs[ok2]))
