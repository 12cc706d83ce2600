"""The off-policy estimators (contract/ope.py) on synthetic logs whose truth is known: a
Plackett-Luce logging policy (contract/slates.py) over a few contexts and products, clicks
from known probabilities, targets whose CTR is computed exactly. Each estimator's mean over
repetitions is within 4 standard errors of that mean from the truth, on several seeds; the
intervals cover the truth about as often as they say."""

from __future__ import annotations

import numpy as np
import pytest

from contract import ope
from contract.slates import PlackettLuce

C, M, K = 3, 8, 3  # contexts, products, slots


class World:
    """Known click probabilities, a logging policy and two targets per context."""

    def __init__(self, seed: int, epsilon: float = 0.1) -> None:
        rng = np.random.default_rng([seed, 99])
        self.p = rng.uniform(0.02, 0.6, size=(C, M))  # P(click | context, product)
        self.logging = [PlackettLuce(rng.normal(size=M), 0.8, epsilon) for _ in range(C)]
        # a deterministic target: the top K of noisy truth; and the uniform random target
        self.target = np.array([np.argsort(-(self.p[c] + rng.normal(0, 0.1, M)))[:K]
                                for c in range(C)])
        self.cache: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    def probs(self, c: int, lst: tuple) -> tuple[np.ndarray, np.ndarray]:
        key = (c, lst)
        if key not in self.cache:
            pl = self.logging[c]
            self.cache[key] = (pl.prefix_probabilities(lst), pl.slot_marginals(lst))
        return self.cache[key]

    def truth_top1(self) -> float:
        return float(np.mean([self.p[c, self.target[c, 0]] for c in range(C)]))

    def truth_random_top1(self) -> float:
        return float(self.p.mean())

    def truth_list(self, cascade: bool) -> float:
        vals = []
        for c in range(C):
            q = self.p[c, self.target[c]]
            vals.append(1 - np.prod(1 - q) if cascade else float((q * SLOT_EXAM).sum()))
        return float(np.mean(vals))

    def log(self, n: int, rng: np.random.Generator, cascade: bool = True) -> dict:
        ctx = rng.integers(0, C, n)
        # Plackett-Luce draws, vectorised (the Gumbel-top-k of PlackettLuce.sample, whose
        # frequencies tests/contract/test_slates.py checks) with the uniform share
        log_w = np.array([pl.log_w for pl in self.logging])[ctx]  # (n, M)
        keys = log_w + rng.gumbel(size=(n, M))
        uniform = rng.random(n) < self.logging[0].epsilon
        keys[uniform] = rng.random((int(uniform.sum()), M))
        lists = np.argsort(-keys, axis=1)[:, :K]
        p_shown = self.p[ctx[:, None], lists]  # (n, K)
        u = rng.random((n, K))
        if cascade:
            clicks = np.zeros((n, K))
            first = np.where(u < p_shown, np.arange(K), K).min(axis=1)
            rows = first < K
            clicks[rows, first[rows]] = 1.0
        else:  # position-based: each slot examined with SLOT_EXAM[j], clicked independently
            clicks = (u < p_shown * SLOT_EXAM).astype(float)
        prefix = np.empty((n, K))
        marg = np.empty((n, K))
        for t in range(n):
            prefix[t], marg[t] = self.probs(int(ctx[t]), tuple(int(i) for i in lists[t]))
        return {"ctx": ctx, "lists": lists, "clicks": clicks, "prefix": prefix, "marg": marg}


SLOT_EXAM = np.array([1.0, 0.7, 0.4])


def deterministic_weights(world: World, log: dict) -> dict:
    tgt = world.target[log["ctx"]]  # (n, K)
    same = log["lists"] == tgt
    prefix_same = np.cumprod(same, axis=1).astype(float)
    return {"w": same[:, 0] / log["prefix"][:, 0], "W_prefix": prefix_same / log["prefix"],
            "W_pos": same / log["marg"], "tgt": tgt}


def mean_within(estimates: list[float], truth: float, sigmas: float = 4.0) -> None:
    est = np.asarray(estimates)
    se = est.std(ddof=1) / np.sqrt(est.size)
    assert abs(est.mean() - truth) <= sigmas * se + 1e-12, (est.mean(), truth, se)


REPS, N = 60, 1500


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_top1_estimators_are_unbiased(seed: int) -> None:
    world = World(seed)
    rng = np.random.default_rng(seed)
    truth, truth_rand = world.truth_top1(), world.truth_random_top1()
    bad_q = np.full((C, M), 0.3)  # a wrong reward model: DR must stay unbiased
    got: dict[str, list[float]] = {k: [] for k in ("ips", "snips", "dr", "rips", "rsnips",
                                                  "rdr")}
    covered = 0
    for rep in range(REPS):
        log = world.log(N, rng)
        w = deterministic_weights(world, log)["w"]
        r = log["clicks"][:, 0]
        a1 = log["lists"][:, 0]
        got["ips"].append(ope.ips(w, r, n_boot=1).estimate)
        e = ope.snips(w, r, n_boot=200, seed=rep)
        got["snips"].append(e.estimate)
        covered += e.covers(truth)
        q_logged = bad_q[log["ctx"], a1]
        q_target = bad_q[log["ctx"], world.target[log["ctx"], 0]]
        got["dr"].append(ope.dr(w, r, q_logged, q_target, n_boot=1).estimate)
        # the random target: pi(a_1) = 1/M for every product
        w_r = (1.0 / M) / log["prefix"][:, 0]
        got["rips"].append(ope.ips(w_r, r, n_boot=1).estimate)
        got["rsnips"].append(ope.snips(w_r, r, n_boot=1).estimate)
        got["rdr"].append(ope.dr(w_r, r, q_logged, bad_q[log["ctx"]].mean(axis=1),
                                 n_boot=1).estimate)
    for name in ("ips", "snips", "dr"):
        mean_within(got[name], truth)
    for name in ("rips", "rsnips", "rdr"):
        mean_within(got[name], truth_rand)
    assert covered >= 0.85 * REPS  # a 95% interval: about 57 of 60


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_list_estimators_are_unbiased_under_their_click_models(seed: int) -> None:
    world = World(seed)
    rng = np.random.default_rng([seed, 5])
    cascade_truth, position_truth = world.truth_list(True), world.truth_list(False)
    slate, cdr, pos = [], [], []
    for _ in range(REPS):
        log = world.log(N, rng, cascade=True)
        wt = deterministic_weights(world, log)
        slate.append(ope.cascade_ips(wt["W_prefix"], log["clicks"], n_boot=1).estimate)
        q = np.full((N, K), 0.25)  # a wrong item model: cascade DR stays unbiased
        cdr.append(ope.cascade_dr(wt["W_prefix"], log["clicks"],
                                  ope.cascade_click_probabilities(q),
                                  ope.cascade_click_probabilities(q), n_boot=1).estimate)
        log_p = world.log(N, rng, cascade=False)
        wp = deterministic_weights(world, log_p)
        pos.append(ope.position_ips(wp["W_pos"], log_p["clicks"], n_boot=1).estimate)
    mean_within(slate, cascade_truth)
    mean_within(cdr, cascade_truth)
    mean_within(pos, position_truth)


def test_the_checks_have_power() -> None:
    """A propensity that is wrong by 20% moves IPS out of the 4-SE band."""
    world = World(4)
    rng = np.random.default_rng(4)
    est = []
    for _ in range(REPS):
        log = world.log(N, rng)
        w = deterministic_weights(world, log)["w"] * 1.2
        est.append(ope.ips(w, log["clicks"][:, 0], n_boot=1).estimate)
    with pytest.raises(AssertionError):
        mean_within(est, world.truth_top1())


def test_kish_ess_and_bad_inputs() -> None:
    assert ope.kish_ess(np.ones(10)) == pytest.approx(10)
    assert ope.kish_ess(np.array([1.0, 0, 0, 0])) == pytest.approx(1)
    assert ope.kish_ess(np.zeros(3)) == 0.0
    with pytest.raises(ope.OpeError, match="finite"):
        ope.ips(np.array([np.nan]), np.array([1.0]))
    with pytest.raises(ope.OpeError, match=">= 0"):
        ope.ips(np.array([-1.0]), np.array([1.0]))
    with pytest.raises(ope.OpeError, match="one length"):
        ope.ips(np.ones(2), np.ones(3))
    with pytest.raises(ope.OpeError, match="shape"):
        ope.cascade_ips(np.ones((2, 3)), np.ones((2, 2)))
    # the slate estimators report the ESS of their thinnest slot (the deepest prefix)
    W = np.array([[2.0, 4.0], [2.0, 0.0], [0.0, 0.0], [2.0, 0.0]])
    e = ope.cascade_ips(W, np.zeros_like(W), n_boot=10)
    assert e.ess == pytest.approx(1.0) and e.matched == 1
    e = ope.snips(np.zeros(4), np.ones(4), n_boot=10)
    assert np.isnan(e.estimate) and e.ess == 0.0 and e.matched == 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_replay_model_learns_as_one_sherman_morrison_step_per_shown_product(seed: int) -> None:
    """The batched update equals the per-item rule it replaces (each shown product: A^-1 by
    Sherman-Morrison, b += x at a clicked slot, theta = A^-1 b), over a log that also repeats
    a product in one list and names clicked slots outside it (ignored)."""
    from contract import linucb

    rng = np.random.default_rng(seed)
    m, d = 12, 5
    model = ope.ReplayModel(m, d, l2=0.7)
    A_inv = np.repeat((np.eye(d) / 0.7)[None], m, axis=0)
    b, theta = np.zeros((m, d)), np.zeros((m, d))
    for t in range(300):
        k = int(rng.integers(1, 6))
        items = [int(i) for i in rng.choice(m, size=k, replace=t % 10 == 0)]
        x = rng.normal(size=d)
        clicked = [int(s) for s in rng.choice(k + 2, size=int(rng.integers(0, 3)))]
        model.learn(items, x, clicked)
        for pos, i in enumerate(items):  # the per-item rule
            A_inv[i] = linucb.sherman_morrison(A_inv[i], x)
            if pos in clicked:
                b[i] += x
            theta[i] = A_inv[i] @ b[i]
    np.testing.assert_allclose(model.A_inv, A_inv, rtol=0, atol=1e-12)
    np.testing.assert_allclose(model.b, b, rtol=0, atol=1e-12)
    np.testing.assert_allclose(model.theta, theta, rtol=0, atol=1e-12)
