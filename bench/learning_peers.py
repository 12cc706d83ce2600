"""The learners of the learning benchmark behind one interface: ``rank(x) -> product index``
(the one product shown), ``update(x, item, reward)`` and ``pretrain(X, items, rewards)``.

- :class:`ProjectLinUCB`: the project's learner, the contract's maths (contract.linucb, what
  the job learns with) ranked with an exploration rule from contract.exploration;
- :class:`SelfTuningLinUCB`: the same model, the live rule chosen by
  :class:`contract.exploration.SelfTuner` from SNIPS estimates of the candidates;
- peers at their libraries' defaults: :class:`MabwiserLinUCB` (MABWiser's LinUCB, alpha 1,
  l2 1), :class:`RiverLinUCB` (river's LinUCBDisjoint, a Bayesian linear regression per arm)
  and :class:`VowpalCB` (Vowpal Wabbit ``--cb_explore_adf`` with SquareCB or epsilon-greedy,
  the product id as action feature crossed with the context, ``-q ua``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from contract import exploration, linucb
from contract.config import Settings


class ProjectLinUCB:
    """Disjoint LinUCB with contract.linucb's updates; ``rule`` is ``calibrated`` or ``fixed``
    (then ``alpha``). Ties go to the lower index, as contract.linucb.top_k breaks them."""

    def __init__(self, name: str, n_products: int, dim: int, rule: str = "calibrated",
                 alpha: float = 1.0, l2: float = 1.0) -> None:
        self.name, self.rule, self.alpha, self.l2 = name, rule, alpha, l2
        self.A_inv = np.repeat((np.eye(dim) / l2)[None], n_products, axis=0)
        self.b = np.zeros((n_products, dim))
        self.theta = np.zeros((n_products, dim))
        self.clicks = 0.0
        self.observations = 0

    def alpha_for(self, x: np.ndarray) -> float:
        return exploration.exploration_alpha(self.rule, self.alpha, self.clicks,
                                             self.observations, x, self.l2)

    def mean_std(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        var = np.einsum("mij,i,j->m", self.A_inv, x, x, optimize=False)
        return self.theta @ x, np.sqrt(np.maximum(var, 0.0))

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Every product's score under the rule (contract.exploration.rule_scores)."""
        if self.rule == "decaying":
            mean = self.theta @ x
            var = np.einsum("mij,i,j->m", self.A_inv, x, x, optimize=False)
            return exploration.rule_scores(self.rule, self.alpha, self.clicks,
                                           self.observations, x, self.l2, mean, var)
        return linucb.ucb_scores(self.theta, self.A_inv, x, self.alpha_for(x))

    def rank(self, x: np.ndarray) -> int:
        return int(np.argmax(self.scores(x)))

    def update(self, x: np.ndarray, item: int, reward: float) -> None:
        self.A_inv[item] = linucb.sherman_morrison(self.A_inv[item], x)
        self.b[item] += reward * x
        self.theta[item] = self.A_inv[item] @ self.b[item]
        self.clicks += reward
        self.observations += 1

    def pretrain(self, X: np.ndarray, items: np.ndarray, rewards: np.ndarray) -> None:
        for x, j, r in zip(X, items, rewards, strict=True):
            self.update(x, int(j), float(r))


class ThompsonLinUCB(ProjectLinUCB):
    """Thompson sampling for the same Gaussian model, the posterior scaled by the observed
    reward noise: each visit every product's ``x . theta`` is drawn from
    ``N(x . theta, s^2 x^T A^-1 x)`` with ``s^2 = p (1 - p)`` (the Bernoulli variance at the
    shop's click rate ``p``, contract.exploration.click_rate), and the highest draw is shown.
    A candidate measured in the benchmark, not a setting of the system (docs/EXPLORATION.md)."""

    def __init__(self, name: str, n_products: int, dim: int, seed: int, l2: float = 1.0) -> None:
        super().__init__(name, n_products, dim, "calibrated", 0.0, l2)
        self.rng = np.random.default_rng([seed, 25])

    def rank(self, x: np.ndarray) -> int:
        mean, std = self.mean_std(x)
        p = exploration.click_rate(self.clicks, self.observations)
        draw = mean + math.sqrt(p * (1.0 - p)) * std * self.rng.standard_normal(mean.size)
        return int(np.argmax(draw))


class CategoryPriorLinUCB(ProjectLinUCB):
    """The default rule with the category prior as production runs it (``RTREC_PRIOR=category``,
    contract.prior, docs/LEARNING.md): a product's first learned step starts from its
    category's pool (``informed_state`` with ``m`` pseudo-observations once the pool holds
    ``min_obs``), a never-learned product is scored at the identity prior (as serving does).
    It uses the catalog's categories, which no peer gets: opt-in (``--only``), reported apart."""

    def __init__(self, name: str, n_products: int, dim: int, categories: Sequence[str],
                 m: float, min_obs: int, rule: str = "decaying", l2: float = 1.0) -> None:
        super().__init__(name, n_products, dim, rule, 0.0, l2)
        names = sorted(set(categories))
        self.cat = np.array([names.index(c) for c in categories])
        self.S = np.zeros((len(names), dim, dim))
        self.t = np.zeros((len(names), dim))
        self.n = np.zeros(len(names), dtype=np.int64)
        self.learned = np.zeros(n_products, dtype=bool)
        self.m, self.min_obs, self.dim = m, min_obs, dim

    def update(self, x: np.ndarray, item: int, reward: float) -> None:
        from contract.prior import CategoryPool, informed_state

        c = int(self.cat[item])
        if not self.learned[item]:  # the job: the first learned step starts from the pool
            self.learned[item] = True
            st = informed_state(CategoryPool(self.S[c], self.t[c], int(self.n[c])), self.dim,
                                self.l2, self.m, self.min_obs)
            self.A_inv[item], self.b[item] = st.A_inv, st.b
        super().update(x, item, reward)
        self.S[c] += np.outer(x, x)  # the pool of the data (not of the prior's pseudo-rows)
        self.t[c] += reward * x
        self.n[c] += 1


class SharedPriorLinUCB(ProjectLinUCB):
    """Hierarchical shrinkage (issue 22's experiment, docs/EXPLORATION.md section 2): the
    per-product ridge state is unchanged; one shared ridge model over the same x learns every
    observation, ``A0 = l2 I + sum x x^T``, ``b0 = sum r x`` (one per group when ``groups``
    is given: the catalog's categories, information the peers do not get), and takes the
    place of what the ``decaying`` rule centres each product's prior on.

    - ``centre="rate"``: ``decaying`` with the shop's rate ``p`` replaced by the shared
      model's rate for x, ``q(x) = x^T A0^-1 (b0 + l2 p x / x.x)`` (the shared model ranked
      by the decaying rule itself, so with no data ``q = p`` and this is ``decaying``):
      ``score = x . theta + q(x) w x^T A^-1 x / x.x``.
    - ``centre="mean"``: the posterior mean with the prior centred on the shared parameter
      ``theta_s = A0^-1 b0``: ``score = x^T A^-1 (b + w theta_s)``; ``"mean_p"`` adds the
      decaying rule's term ``p w x^T A^-1 x / x.x`` (its optimism).

    ``weight`` is the prior's weight w (default: the state's own l2). Another w scores with
    ``(A + (w - l2) I)^-1`` (an inverse per product per call): a measurement, not a setting.
    """

    def __init__(self, name: str, n_products: int, dim: int, centre: str,
                 groups: Sequence[str] | None = None, weight: float | None = None,
                 l2: float = 1.0, nested: bool = False, optimism: float = 0.0) -> None:
        super().__init__(name, n_products, dim, "decaying", 0.0, l2)
        if centre not in ("rate", "mean", "mean_p"):
            raise ValueError(f"centre {centre!r}")
        names = sorted(set(groups)) if groups is not None else [""]
        self.group = (np.array([names.index(g) for g in groups]) if groups is not None
                      else np.zeros(n_products, dtype=np.int64))
        self.A0 = np.repeat((l2 * np.eye(dim))[None], len(names), axis=0)
        self.b0 = np.zeros((len(names), dim))
        self.centre, self.dim = centre, dim
        self.weight = l2 if weight is None else float(weight)
        self.nested = nested  # centre="rate": each group's prior on the shop's shared rate
        self.optimism = optimism  # centre="rate": q(x) + optimism * sd of q(x) (category_ucb)
        self.A_all = l2 * np.eye(dim)
        self.b_all = np.zeros(dim)
        self._A0_inv: np.ndarray | None = None  # optimism: A0^-1, refreshed where A0 changed
        self._stale: set[int] = set()

    def scores(self, x: np.ndarray) -> np.ndarray:
        xx = float(x @ x)
        if xx == 0.0:
            return self.theta @ x
        p = exploration.click_rate(self.clicks, self.observations)
        w = self.weight
        if w == self.l2:
            M, mean = self.A_inv, self.theta @ x
        else:
            M = np.linalg.inv(np.linalg.inv(self.A_inv) + (w - self.l2) * np.eye(self.dim))
            mean = np.einsum("mij,mj->mi", M, self.b, optimize=False) @ x
        Mx = np.einsum("mij,j->mi", M, x, optimize=False)
        var = np.maximum(Mx @ x, 0.0)
        if self.centre == "rate":
            if self.nested:  # shop -> category -> product: q_0(x) replaces p
                p = float(np.linalg.solve(self.A_all, self.b_all + self.l2 * p * x / xx) @ x)
            q = np.linalg.solve(self.A0, (self.b0 + self.l2 * p * x / xx)[..., None])[..., 0] @ x
            if self.optimism:
                q = q + self.optimism * exploration.category_rate_sd(self._a0_inverse(), x, p)
            return mean + q[self.group] * w * var / xx
        theta_s = np.linalg.solve(self.A0, self.b0[..., None])[..., 0]  # (groups, d)
        s = mean + w * np.einsum("mi,mi->m", Mx, theta_s[self.group], optimize=False)
        if self.centre == "mean_p":
            s = s + p * w * var / xx
        return s

    def _a0_inverse(self) -> np.ndarray:
        """``A0^-1`` per group, inverting again only the groups learned since the last call
        (each matrix's inverse is the same numbers inverted alone or in the batch)."""
        if self._A0_inv is None:
            self._A0_inv = np.linalg.inv(self.A0)
        else:
            for g in self._stale:
                self._A0_inv[g] = np.linalg.inv(self.A0[g])
        self._stale.clear()
        return self._A0_inv

    def update(self, x: np.ndarray, item: int, reward: float) -> None:
        super().update(x, item, reward)
        g = int(self.group[item])
        self._stale.add(g)
        self.A0[g] += np.outer(x, x)
        self.b0[g] += reward * x
        self.A_all += np.outer(x, x)
        self.b_all += reward * x


class SelfTuningLinUCB(SharedPriorLinUCB):
    """One model; every visit each candidate rule picks a product, the controller's traffic
    split picks which candidate serves, and the log keeps the shown product's propensity (the
    split's mass on the candidates that picked it). Every ``every`` visits the candidates'
    SNIPS over the last ``window`` visits go to the controller.

    It starts on the system's default rule (``RTREC_EXPLORATION``'s default,
    :data:`DEFAULT_RULE`), as a shop turning ``RTREC_SELF_TUNE`` on would. ``category_ucb``
    and ``category_rate`` are candidates when ``categories`` are given (the catalog's, one per
    product: the pools are those of :class:`SharedPriorLinUCB` ``centre="rate"``, i.e.
    ``linucb_category_ucb`` and ``linucb_category_rate``); without them they are not, and the
    start is ``decaying`` (what both are with no categories)."""

    CANDIDATES: ClassVar[dict[str, tuple[str, float]]] = {
        "category_ucb": ("category_ucb", 0.0), "category_rate": ("category_rate", 0.0),
        "decaying": ("decaying", 0.0), "calibrated": ("calibrated", 0.0),
        "alpha_0.03": ("fixed", 0.03),
        "alpha_0.1": ("fixed", 0.1), "alpha_0.3": ("fixed", 0.3), "alpha_1": ("fixed", 1.0)}

    def __init__(self, name: str, n_products: int, dim: int, seed: int,
                 categories: Sequence[str] | None = None, l2: float = 1.0,
                 min_explore_share: float = 0.1, margin: float = 0.0,
                 min_interval: int = 500, every: int = 250, window: int = 1000) -> None:
        super().__init__(name, n_products, dim, "rate", groups=categories, l2=l2)
        self.candidates = {n: c for n, c in self.CANDIDATES.items()
                           if categories is not None
                           or c[0] not in exploration.CATEGORY_RULES}
        start = DEFAULT_RULE if DEFAULT_RULE in self.candidates else "decaying"
        self.tuner = exploration.SelfTuner(list(self.candidates), start,
                                           min_explore_share, margin, min_interval)
        self.rng = np.random.default_rng([seed, 23])
        self.every, self.window = every, window
        self.t = 0
        self.log_r: list[float] = []
        self.log_p: list[float] = []
        self.log_match: list[np.ndarray] = []
        self._pending: tuple[np.ndarray, float] | None = None
        self.live_history: list[tuple[int, str]] = [(0, self.tuner.live)]

    def candidate_scores(self, name: str, x: np.ndarray,
                         moments: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """Every product's score under candidate ``name`` on the shared model (``moments``:
        :meth:`mean_std` of x when the caller has it: computed once per visit)."""
        rule, alpha = self.candidates[name]
        if rule in exploration.CATEGORY_RULES:
            self.optimism = exploration.CATEGORY_OPTIMISM[rule]
            return SharedPriorLinUCB.scores(self, x)
        mean, std = self.mean_std(x) if moments is None else moments
        if rule == "decaying":
            return exploration.rule_scores(rule, alpha, self.clicks, self.observations, x,
                                           self.l2, mean, std * std)
        a = exploration.exploration_alpha(rule, alpha, self.clicks, self.observations, x,
                                          self.l2)
        return mean + a * std

    def scores(self, x: np.ndarray) -> np.ndarray:
        """The live candidate's scores."""
        return self.candidate_scores(self.tuner.live, x)

    def rank(self, x: np.ndarray) -> int:
        names = list(self.candidates)
        moments = self.mean_std(x)
        picks = np.array([int(np.argmax(self.candidate_scores(n, x, moments)))
                          for n in names], dtype=np.int64)
        shares = self.tuner.shares()
        p = np.array([shares[n] for n in names])
        serving = int(self.rng.choice(len(names), p=p / p.sum()))
        shown = int(picks[serving])
        match = picks == shown
        self._pending = (match, float(p[match].sum()))
        return shown

    def update(self, x: np.ndarray, item: int, reward: float) -> None:
        super().update(x, item, reward)
        if self._pending is None:  # pretraining: no decision of ours to log
            return
        match, propensity = self._pending
        self._pending = None
        self.log_match.append(match)
        self.log_p.append(propensity)
        self.log_r.append(reward)
        self.t += 1
        if self.t % self.every == 0:
            lo = max(0, len(self.log_r) - self.window)
            r = np.asarray(self.log_r[lo:])
            pr = np.asarray(self.log_p[lo:])
            m = np.asarray(self.log_match[lo:])
            estimates = {name: exploration.snips(r, m[:, i], pr)
                         for i, name in enumerate(self.candidates)}
            before = self.tuner.live
            if self.tuner.observe(self.t, estimates) != before:
                self.live_history.append((self.t, self.tuner.live))


class MabwiserLinUCB:
    """MABWiser's LinUCB (alpha 1, l2 1, its defaults). predict through the public API; an
    update fits the shown arm's ridge model exactly as ``partial_fit`` does, but only that
    arm's (``partial_fit`` deep-copies all 200 models per call: ~50 ms; its time is measured
    separately, :meth:`time_public_partial_fit`)."""

    def __init__(self, name: str, n_products: int, dim: int, seed: int) -> None:
        from mabwiser.mab import MAB, LearningPolicy

        self.name = name
        self.arms = list(range(n_products))
        self.mab = MAB(self.arms, LearningPolicy.LinUCB(alpha=1.0, l2_lambda=1.0), seed=seed)
        # fit needs rows; one fit on zero rows of every arm initialises the models at the prior
        self.mab.fit(decisions=np.zeros(0, dtype=np.int64), rewards=np.zeros(0),
                     contexts=np.zeros((0, dim)))

    def rank(self, x: np.ndarray) -> int:
        return int(self.mab.predict(contexts=x[None]))

    def update(self, x: np.ndarray, item: int, reward: float) -> None:
        self.mab._imp._fit_arm(item, np.array([item]), np.array([reward]), x[None])

    def pretrain(self, X: np.ndarray, items: np.ndarray, rewards: np.ndarray) -> None:
        self.mab.partial_fit(decisions=np.asarray(items), rewards=np.asarray(rewards),
                             contexts=np.asarray(X))

    def time_public_partial_fit(self, x: np.ndarray, calls: int = 20) -> list[float]:
        """Seconds of ``partial_fit`` of one row, on a copy (the benchmark's model is kept)."""
        import time

        mab = copy.deepcopy(self.mab)
        out = []
        for i in range(calls):
            t0 = time.perf_counter()
            mab.partial_fit(decisions=[i % len(self.arms)], rewards=[0.0], contexts=x[None])
            out.append(time.perf_counter() - t0)
        return out


class RiverLinUCB:
    """river's ``bandit.LinUCBDisjoint`` at its defaults (alpha 1, beta 1), seeded.

    river learns (``policy.update``: its Bayesian linear regression per arm). Its ``pull``
    builds each arm's arrays from dicts, ~0.35 ms an arm, 70 ms a visit for 200 products: too
    slow to run every visit of the benchmark on a shared machine. So the ranking here computes
    the same upper bound river does, ``mu + (1 / beta + x S x) ** (1/4)`` from each arm's own
    posterior (mean and covariance read back from river after each update), picks the highest
    and breaks exact ties with river's own generator as ``pull`` does.
    tests/bench/test_learning_bench.py checks the bounds equal river's ``predict_one``; the
    time of river's real ``pull`` is measured on a sample (:meth:`time_pull`).
    """

    def __init__(self, name: str, n_products: int, dim: int, seed: int) -> None:
        from river import bandit

        self.name = name
        self.arms = list(range(n_products))
        self.keys = [f"x{i}" for i in range(dim)]
        self.policy = bandit.LinUCBDisjoint(seed=seed)
        prior = 1.0 / self.policy.alpha  # river's prior covariance: I / alpha
        self.M = np.zeros((n_products, dim))
        self.S = np.repeat((np.eye(dim) * prior)[None], n_products, axis=0)

    def _ctx(self, x: np.ndarray) -> dict[str, float]:
        return dict(zip(self.keys, x.tolist(), strict=True))

    def upper_bounds(self, x: np.ndarray) -> np.ndarray:
        var = 1.0 / self.policy.beta + np.einsum("mij,i,j->m", self.S, x, x, optimize=False)
        # river 0.23 builds the Gaussian with _from_state(sig=sqrt(var)), which it reads as a
        # variance: the sigma pull adds is var ** (1/4); this is the number pull ranks by
        return self.M @ x + var ** 0.25

    def rank(self, x: np.ndarray) -> int:
        ub = self.upper_bounds(x)
        candidates = np.flatnonzero(ub == ub.max())
        if candidates.size > 1:
            return int(self.policy._rng.choice([int(c) for c in candidates]))
        return int(candidates[0])

    def update(self, x: np.ndarray, item: int, reward: float) -> None:
        self.policy.update(item, self._ctx(x), float(reward))
        m, _, s = self.policy._bayes_lin_regs[item]._get_arrays(self.keys, ss=False)
        self.M[item], self.S[item] = m, s

    def pretrain(self, X: np.ndarray, items: np.ndarray, rewards: np.ndarray) -> None:
        for x, j, r in zip(X, items, rewards, strict=True):
            self.update(x, int(j), float(r))

    def river_bounds(self, x: np.ndarray) -> np.ndarray:
        """Each arm's bound as river's ``pull`` computes it (``predict_one``, with_dist)."""
        ctx = self._ctx(x)
        out = []
        for arm in self.arms:
            dist = self.policy._bayes_lin_regs[arm].predict_one(ctx, with_dist=True)
            out.append(dist.mu + dist.sigma)
        return np.asarray(out)

    def time_pull(self, X: np.ndarray, calls: int = 10) -> list[float]:
        """Seconds of river's own ``pull`` over all products, on a copy (its generator and
        state are kept)."""
        import time

        policy = copy.deepcopy(self.policy)
        out = []
        for i in range(calls):
            ctx = self._ctx(X[i % len(X)])
            t0 = time.perf_counter()
            policy.pull(self.arms, context=ctx)
            out.append(time.perf_counter() - t0)
        return out


class VowpalCB:
    """Vowpal Wabbit's contextual bandit over action-dependent features: one example line per
    product (``|a p<j>``) under a shared line of the context (``|u x0:.. x1:..``), ``-q ua`` so
    each product has its own weights on the context (what disjoint LinUCB has). It samples the
    shown product from the pmf it returns (its own seeded generator) and learns cost
    ``1 - reward`` with that probability."""

    def __init__(self, name: str, n_products: int, dim: int, seed: int, explore: str,
                 groups: Sequence[str] | None = None) -> None:
        import vowpalwabbit

        self.name = name
        self.m = n_products
        self.vw = vowpalwabbit.Workspace(
            f"--cb_explore_adf {explore} -q ua --quiet --random_seed {seed}",
            enable_logging=False)
        # groups (opt-in: the catalog's categories): a second action feature, so the context
        # crossed with the category is shared by the category's products
        self.actions = [f"|a p{j}" + (f" c{groups[j].replace(' ', '_')}" if groups else "")
                        for j in range(n_products)]
        self.rng = np.random.default_rng([seed, 24])
        self._prob = 1.0 / n_products

    @staticmethod
    def _shared(x: np.ndarray) -> str:
        return "shared |u " + " ".join(f"x{i}:{v:.9g}" for i, v in enumerate(x.tolist()) if v)

    def _example(self, x: np.ndarray, label: tuple[int, float, float] | None = None
                 ) -> list[str]:
        lines = [self._shared(x), *self.actions]
        if label is not None:
            j, cost, prob = label
            lines[1 + j] = f"0:{cost:.9g}:{prob:.9g} {self.actions[j]}"
        return lines

    def rank(self, x: np.ndarray) -> int:
        pmf = np.asarray(self.vw.predict(self._example(x)), dtype=np.float64)
        pmf = pmf / pmf.sum()
        j = int(self.rng.choice(self.m, p=pmf))
        self._prob = float(pmf[j])
        return j

    def update(self, x: np.ndarray, item: int, reward: float) -> None:
        self.vw.learn(self._example(x, (item, 1.0 - reward, max(self._prob, 1e-6))))

    def pretrain(self, X: np.ndarray, items: np.ndarray, rewards: np.ndarray) -> None:
        p = 1.0 / self.m  # the log drew the product uniformly
        for x, j, r in zip(X, items, rewards, strict=True):
            self.vw.learn(self._example(x, (int(j), 1.0 - float(r), p)))


def make_learners(n_products: int, dim: int, seed: int,
                  only: Sequence[str] | None = None) -> list:
    """Every learner of the benchmark, fresh, in the report's order (``only``: these names)."""
    from contract.features import load_catalog

    model = Settings.from_env({}).model
    cats = [p.category for p in load_catalog()]
    shipped = len(cats) == n_products  # the shipped catalog (the benchmark's worlds)
    makers = {}
    if shipped:  # the category rules (the default, DEFAULT, among them): the catalog's
        # categories, as a shop has them
        makers["linucb_category_ucb"] = lambda: SharedPriorLinUCB(
            "linucb_category_ucb", n_products, dim, "rate", groups=cats,
            optimism=exploration.CATEGORY_OPTIMISM["category_ucb"])
        makers["linucb_category_rate"] = lambda: SharedPriorLinUCB(
            "linucb_category_rate", n_products, dim, "rate", groups=cats)
    makers |= {
        "linucb_decaying": lambda: ProjectLinUCB("linucb_decaying", n_products, dim,
                                                 "decaying"),
        "linucb_calibrated": lambda: ProjectLinUCB("linucb_calibrated", n_products, dim),
        "linucb_thompson": lambda: ThompsonLinUCB("linucb_thompson", n_products, dim, seed),
        "linucb_alpha_1": lambda: ProjectLinUCB("linucb_alpha_1", n_products, dim, "fixed", 1.0),
        "linucb_alpha_0.3": lambda: ProjectLinUCB("linucb_alpha_0.3", n_products, dim, "fixed",
                                                  0.3),
        "linucb_alpha_0.1": lambda: ProjectLinUCB("linucb_alpha_0.1", n_products, dim, "fixed",
                                                  0.1),
        "linucb_alpha_0.03": lambda: ProjectLinUCB("linucb_alpha_0.03", n_products, dim,
                                                   "fixed", 0.03),
        "self_tuning": lambda: SelfTuningLinUCB("self_tuning", n_products, dim, seed,
                                                cats if shipped else None),
        "mabwiser_linucb": lambda: MabwiserLinUCB("mabwiser_linucb", n_products, dim, seed),
        "river_linucb": lambda: RiverLinUCB("river_linucb", n_products, dim, seed),
        "vw_squarecb": lambda: VowpalCB("vw_squarecb", n_products, dim, seed, "--squarecb"),
        "vw_epsilon": lambda: VowpalCB("vw_epsilon", n_products, dim, seed, "--epsilon 0.05"),
    }
    if shipped:  # shop -> category -> product (opt-in)
        makers["linucb_nested_rate"] = lambda: SharedPriorLinUCB(
            "linucb_nested_rate", n_products, dim, "rate", groups=cats, nested=True)
    if shipped:
        makers["linucb_decaying_category"] = lambda: CategoryPriorLinUCB(
            "linucb_decaying_category", n_products, dim, cats, model.prior_pseudo_obs,
            model.prior_min_obs)
    if shipped:  # a peer given the categories too (issue 22, opt-in)
        makers["vw_squarecb_category"] = lambda: VowpalCB(
            "vw_squarecb_category", n_products, dim, seed, "--squarecb", cats)
        makers["vw_epsilon_category"] = lambda: VowpalCB(
            "vw_epsilon_category", n_products, dim, seed, "--epsilon 0.05", cats)
    for c in ("rate", "mean", "mean_p"):  # issue 22: hierarchical shrinkage, opt-in
        makers[f"linucb_shared_{c}"] = (lambda c=c: SharedPriorLinUCB(
            f"linucb_shared_{c}", n_products, dim, c))
        makers[f"linucb_shared_{c}_w10"] = (lambda c=c: SharedPriorLinUCB(
            f"linucb_shared_{c}_w10", n_products, dim, c, weight=10.0))
        if shipped and c != "rate":
            makers[f"linucb_category_{c}"] = (lambda c=c: SharedPriorLinUCB(
                f"linucb_category_{c}", n_products, dim, c, groups=cats))
    names = [n for n in makers if n not in OPT_IN] if only is None else list(only)
    unknown = [n for n in names if n not in makers]
    if unknown:
        raise ValueError(f"unknown learners {unknown}: not among {list(makers)}")
    return [makers[n]() for n in names]


OPT_IN = ("linucb_decaying_category", "linucb_nested_rate",
          *(f"linucb_{g}_{c}{w}" for g in ("shared", "category")
            for c in ("rate", "mean", "mean_p") for w in ("", "_w10")
            if f"linucb_{g}_{c}{w}" != "linucb_category_rate"),
          "vw_squarecb_category", "vw_epsilon_category")
"""Learners only run when named (``--only``): variants measured once (docs/EXPLORATION.md
section 2) and Vowpal Wabbit given the categories. ``linucb_category_ucb`` (the default) and
``linucb_category_rate`` run in every run: they use the catalog's categories, which the peers
do not get, and a shop running this system has them."""
PEERS = ("mabwiser_linucb", "river_linucb", "vw_squarecb", "vw_epsilon")
FIXED = ("linucb_alpha_1", "linucb_alpha_0.3", "linucb_alpha_0.1", "linucb_alpha_0.03")
DEFAULT_RULE = Settings.from_env({}).model.exploration
"""The system's default exploration rule (``RTREC_EXPLORATION``'s default, contract/config.py)."""
DEFAULT = f"linucb_{DEFAULT_RULE}"
"""The row the issue's targets are checked on: the project's default rule."""
RULES = ("linucb_calibrated", "linucb_decaying", "linucb_thompson", "linucb_category_rate",
         "linucb_category_ucb")
"""The exploration rules of ours without a tuned constant (docs/EXPLORATION.md section 1):
the default is chosen among them by the stated criterion, from the same run.
``linucb_category_ucb`` and ``linucb_category_rate`` are ``RTREC_EXPLORATION=category_ucb``
and ``category_rate`` (the catalog's categories)."""

__all__ = ["DEFAULT", "FIXED", "OPT_IN", "PEERS", "RULES", "CategoryPriorLinUCB",
           "MabwiserLinUCB", "ProjectLinUCB", "RiverLinUCB", "SelfTuningLinUCB",
           "SharedPriorLinUCB",
           "ThompsonLinUCB", "VowpalCB", "make_learners"]
