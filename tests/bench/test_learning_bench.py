"""The learning benchmark is fair: every learner, the peers included, gets the same visits, the
same warm-up log and the same click draws (a click depends on the visit and the product shown,
not on who shows it). Runs the real peers (MABWiser, river, Vowpal Wabbit) on a few visits."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from bench.bench_learning import run
from bench.learning_peers import PEERS, make_learners
from bench.learning_world import WORLDS, make_problem

VISITS, WARMUP = 15, 60


class Recorder:
    """Passes every call to the learner and keeps what it was given and what it chose."""

    def __init__(self, inner: Any, seed: int) -> None:
        self.inner, self.name, self.seed = inner, inner.name, seed
        self.ranked: list[np.ndarray] = []
        self.updates: list[tuple[np.ndarray, int, float]] = []
        self.pretrained: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def rank(self, x: np.ndarray) -> int:
        self.ranked.append(x.copy())
        return self.inner.rank(x)

    def update(self, x: np.ndarray, item: int, reward: float) -> None:
        self.updates.append((x.copy(), item, reward))
        self.inner.update(x, item, reward)

    def pretrain(self, X: np.ndarray, items: np.ndarray, rewards: np.ndarray) -> None:
        self.pretrained = (X.copy(), items.copy(), rewards.copy())
        self.inner.pretrain(X, items, rewards)


def test_peers_get_identical_visits_and_click_draws() -> None:
    world = "rules"
    made: list[Recorder] = []

    def factory(m: int, d: int, seed: int) -> list[Recorder]:
        learners = [Recorder(lr, seed) for lr in make_learners(m, d, seed)]
        made.extend(learners)
        return learners

    res = run([world], [1, 2], VISITS, WARMUP, factory=factory)
    names = {r.name for r in made}
    assert set(PEERS) <= names and "linucb_calibrated" in names and "self_tuning" in names
    for seed in (1, 2):
        problem = make_problem(world, seed, VISITS, WARMUP)
        mine = [r for r in made if r.seed == seed]
        assert len(mine) == 2 * len(names)  # each learner, cold and pretrained
        for rec in mine:
            # the same visits, in order
            assert len(rec.ranked) == VISITS
            assert np.array_equal(np.stack(rec.ranked), problem.X)
            # the reward is the shared draw for the product it showed, nothing else
            for t, (x, item, reward) in enumerate(rec.updates):
                assert np.array_equal(x, problem.X[t])
                assert reward == float(problem.U[t, item] < problem.P[t, item])
        warm = [r.pretrained for r in mine if r.pretrained is not None]
        assert len(warm) == len(names)
        for X, items, rewards in warm:
            assert np.array_equal(X, problem.warm_X)
            assert np.array_equal(items, problem.warm_items)
            assert np.array_equal(rewards, problem.warm_rewards)
        # where two learners showed the same product at the same visit, the outcome agrees
        shown = {}
        for rec in mine:
            for t, (_x, item, reward) in enumerate(rec.updates):
                assert shown.setdefault((t, item), reward) == reward
    table = res["table"][world]
    for start in ("cold", "pretrained"):
        for name in names:
            row = table[start][name]
            assert {"regret", "top1_ctr", "rank_p50_us", "update_p50_us"} <= row.keys()
            assert row["regret"] >= 0 and 0 <= row["top1_ctr"] <= 1


@pytest.mark.parametrize("world", list(WORLDS))
def test_a_problem_is_a_function_of_world_and_seed(world: str) -> None:
    a, b = make_problem(world, 3, 40, 50), make_problem(world, 3, 40, 50)
    for field in ("X", "P", "U", "warm_X", "warm_items", "warm_rewards"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    c = make_problem(world, 4, 40, 50)
    assert not np.array_equal(a.U, c.U) and not np.array_equal(a.X, c.X)
    assert a.P.shape == a.U.shape == (40, a.n_products)
    assert np.all((a.P > 0) & (a.P < 1))
    if world == "flat":
        assert np.allclose(a.P, a.P[0, 0])  # the control: nothing to learn
    else:
        assert np.ptp(a.P, axis=1).max() > 0.3  # something to learn


def test_a_learner_that_always_shows_one_product_gets_exactly_its_draws() -> None:
    """The reward sequence of a constant choice is ``U[:, k] < P[:, k]``: the runner adds
    nothing of its own to a click."""
    problem = make_problem("rules", 5, 60, 10)

    class Always:
        name = "always_7"
        rewards: list[float] = []  # noqa: RUF012

        def rank(self, x: np.ndarray) -> int:
            return 7

        def update(self, x: np.ndarray, item: int, reward: float) -> None:
            self.rewards.append(reward)

        def pretrain(self, X: np.ndarray, items: np.ndarray, rewards: np.ndarray) -> None:
            pass

    from bench.bench_learning import run_learner

    learner = Always()
    out = run_learner(problem, learner, pretrained=False)
    expected = (problem.U[:, 7] < problem.P[:, 7]).astype(float)
    assert learner.rewards == expected.tolist()
    assert out["top1_ctr"] == pytest.approx(expected.mean())
    assert out["regret"] == pytest.approx(float((problem.P.max(1) - problem.P[:, 7]).sum()))


@pytest.mark.parametrize("seed", [1, 2])
def test_river_ranking_is_rivers_own_bound(seed: int) -> None:
    """The benchmark ranks river's learner by its bound computed from river's own posterior
    (bench/learning_peers.py says why); it equals what river's pull ranks by, per product."""
    from bench.learning_peers import RiverLinUCB

    problem = make_problem("rules", seed, 8, 120)
    river = RiverLinUCB("river_linucb", problem.n_products, problem.X.shape[1], seed)
    river.pretrain(problem.warm_X, problem.warm_items, problem.warm_rewards)
    for t in range(problem.X.shape[0]):
        x = problem.X[t]
        np.testing.assert_allclose(river.upper_bounds(x), river.river_bounds(x),
                                   rtol=1e-12, atol=1e-12)
        item = river.rank(x)
        river.update(x, item, float(problem.click(t, item)))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_category_learner_starts_a_product_from_its_pool_as_production_does(seed: int) -> None:
    """linucb_decaying_category (opt-in): a product's first learned step starts from
    contract.prior.informed_state of its category's pool of the data learned so far (m
    pseudo-observations once the pool holds min_obs), then learns as the others do; a product
    never learned stays at the identity prior (serving scores it there)."""
    from bench.learning_peers import OPT_IN, CategoryPriorLinUCB
    from contract import linucb
    from contract.prior import CategoryPool, informed_state

    rng = np.random.default_rng(seed)
    m, d = 12, 5
    cats = ["a", "b", "c"] * 4
    lr = CategoryPriorLinUCB("c", m, d, cats, m=5.0, min_obs=3)
    S = {c: np.zeros((d, d)) for c in "abc"}
    t = {c: np.zeros(d) for c in "abc"}
    n = dict.fromkeys("abc", 0)
    informed = 0
    seen: set[int] = set()
    for _ in range(80):
        j = int(rng.integers(0, m - 1))  # product m - 1 is never learned
        x, r = rng.uniform(0, 1, d), float(rng.random() < 0.3)
        c = cats[j]
        lr.update(x, j, r)
        if j not in seen:
            seen.add(j)
            st = informed_state(CategoryPool(S[c], t[c], n[c]), d, 1.0, 5.0, 3)
            want = linucb.update(st, x, r)
            np.testing.assert_allclose(lr.A_inv[j], want.A_inv, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(lr.b[j], want.b, rtol=1e-10, atol=1e-12)
            informed += n[c] >= 3
        S[c] += np.outer(x, x)
        t[c] += r * x
        n[c] += 1
    assert informed >= 1  # some product did start from a pool, not only from the identity
    assert np.array_equal(lr.A_inv[m - 1], np.eye(d)) and not lr.b[m - 1].any()
    assert "linucb_decaying_category" in OPT_IN
    names = [x.name for x in make_learners(200, 15, seed)]
    assert "linucb_decaying_category" not in names  # opt-in: only with --only
