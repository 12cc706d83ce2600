"""How much LinUCB explores: the decaying rule (the default), the calibrated rule, and a
self-tuning controller.

Pure logic, no I/O: serving, the benchmark (bench/bench_learning.py) and tests call it with
the numbers they have. docs/EXPLORATION.md states the rule, why, and the measurements.

The calibrated rule
-------------------
A product's UCB is ``x . theta + alpha * sqrt(x^T A^-1 x)``. A fixed ``alpha`` (the old default
1) has no unit: it scores a never-seen product at ``alpha * |x| / sqrt(l2)``, which for the
shipped features (|x| ~ 2.2) is a 220 % click rate, so every product is tried again and again
before the known good ones are shown. The calibrated rule instead says *what a never-seen
product is worth*: the shop's observed click rate ``p``, no more. That fixes alpha per context:

    alpha(x) = p * sqrt(l2) / |x|        p = (clicks + 1) / (observations + 2)

so ``score = x . theta + p * sqrt(x^T A^-1 x) / sqrt(x^T x / l2)``: the bonus is the mean click
rate times the share of the prior's standard deviation still left for this product and
context (1 when nothing was learned, shrinking as 1/sqrt(n) with its data). ``p`` is counted
from what was learned (Laplace's rule of succession, so it is defined from the first event);
nothing in it is fitted to a world.

>>> round(calibrated_alpha(clicks=14, observations=98, x=np.array([3.0, 4.0]), l2=1.0), 6)
0.03
>>> exploration_alpha("fixed", 0.5, clicks=14, observations=98, x=np.ones(2), l2=1.0)
0.5

The self-tuning controller
--------------------------
:class:`SelfTuner` chooses which of several candidate rules the live traffic uses from a
stream of off-policy estimates (:func:`snips`, a self-normalised IPS value with a normal
confidence interval), with three guardrails: every candidate other than the live one keeps at
least ``min_explore_share`` of the traffic between them (so the estimates never starve); a
challenger replaces the live candidate only when its lower confidence bound beats the live
one's upper bound by ``margin``; and at most one switch per ``min_interval`` (in the caller's
clock: seconds, or visits in the benchmark). Every switch is logged and counted.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from contract.errors import RtrecError

log = logging.getLogger(__name__)

EXPLORATIONS: tuple[str, ...] = ("calibrated", "category_rate", "category_ucb", "decaying",
                                  "fixed")
"""Exploration rules ``RTREC_EXPLORATION`` names: ``decaying`` (a never-seen product is worth
the click rate, the bonus decays like 1/n, :func:`decaying_weight`), ``category_rate``
(``decaying`` with the click rate replaced by the product's catalog category's rate for x,
:func:`category_rates`), ``category_ucb`` (the default: the same with that rate's upper
bound, one standard deviation above it, :func:`category_rate_sd`), ``calibrated`` (the same
worth as ``decaying``, a bonus decaying like 1/sqrt(n)) or ``fixed`` (alpha =
``RTREC_ALPHA`` whatever the data, the rule before issue #22). docs/EXPLORATION.md section 1
says why the default is the default."""

CATEGORY_RULES: tuple[str, ...] = ("category_rate", "category_ucb")
"""The rules that rank with the catalog categories' pooled rates (:func:`category_rates`)."""

CATEGORY_OPTIMISM: dict[str, float] = {"category_rate": 0.0, "category_ucb": 1.0}
"""Standard deviations of its category's rate each category rule adds to that rate."""

VARIANCE_RULES: tuple[str, ...] = ("category_rate", "category_ucb", "decaying")
"""The rules that weigh the variance ``x^T A^-1 x`` (no alpha: :func:`exploration_alpha`
refuses them)."""


class ExplorationError(RtrecError, ValueError):
    """An exploration rule or controller setting that is unknown or out of range."""


def click_rate(clicks: float, observations: float) -> float:
    """The shop's click rate as the rule uses it: ``(clicks + 1) / (observations + 2)``.

    >>> click_rate(0, 0), click_rate(14, 98)
    (0.5, 0.15)
    """
    if not (clicks >= 0 and observations >= 0 and clicks <= observations):
        raise ExplorationError(f"clicks {clicks} / observations {observations}: need "
                               f"0 <= clicks <= observations")
    return (clicks + 1.0) / (observations + 2.0)


def calibrated_alpha(clicks: float, observations: float, x: np.ndarray, l2: float) -> float:
    """alpha for context x such that a never-seen product scores the shop's click rate
    ``p = click_rate(clicks, observations)``: ``p * sqrt(l2) / |x|`` (0 for x = 0, which has
    no bonus to scale)."""
    x = np.asarray(x, dtype=np.float64)
    top = float(np.max(np.abs(x))) if x.size else 0.0
    if not math.isfinite(top):
        raise ExplorationError(f"x: an entry is {top}, not finite")
    norm = top * float(np.linalg.norm(x / top)) if top > 0 else 0.0  # no overflow of x.x
    if norm == 0.0:
        return 0.0
    return click_rate(clicks, observations) * math.sqrt(l2) / norm


def decaying_weight(clicks: float, observations: float, x: np.ndarray, l2: float) -> float:
    """The weight w of the *variance* ``x^T A^-1 x`` under the ``decaying`` rule:
    ``w = p * l2 / x.x``, so ``score = x . theta + w * x^T A^-1 x``.

    The bonus is ``p`` times the share of the prior's weight still left in x's direction,
    ``l2 x^T A^-1 x / x.x``: 1 for a never-seen product (which scores ``p``, as under
    ``calibrated``), ``1 / (1 + n x.x / l2)`` after n observations of x. That is exactly what
    the posterior mean adds when the prior is centred on the shop's click rate ``p`` in x's
    direction instead of on 0, so the bonus decays like 1/n (the prior's pull), not like
    1/sqrt(n) (a confidence width). 0 for x = 0.

    >>> round(decaying_weight(14, 98, np.array([3.0, 4.0]), l2=4.0), 6)  # 0.15 * 4 / 25
    0.024
    """
    a = calibrated_alpha(clicks, observations, x, l2)  # p sqrt(l2) / |x|: checks x
    if a == 0.0:
        return 0.0
    return a * a / click_rate(clicks, observations)  # = p l2 / x.x, without squaring x


def exploration_alpha(rule: str, fixed_alpha: float, clicks: float, observations: float,
                      x: np.ndarray, l2: float) -> float:
    """The alpha a request is ranked with under ``rule``: ``calibrated`` or ``fixed`` (the
    rules whose bonus is alpha times the standard deviation; ``decaying`` has none: use
    :func:`rule_scores`)."""
    if rule == "fixed":
        return float(fixed_alpha)
    if rule == "calibrated":
        return calibrated_alpha(clicks, observations, x, l2)
    if rule in VARIANCE_RULES:
        raise ExplorationError(f"exploration rule {rule!r} weighs the variance, not the "
                               f"standard deviation: it has no alpha (rule_scores, "
                               f"category_rates)")
    raise ExplorationError(f"exploration rule {rule!r}: not one of {', '.join(EXPLORATIONS)}")


def rule_scores(rule: str, fixed_alpha: float, clicks: float, observations: float,
                x: np.ndarray, l2: float, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Every product's score under ``rule`` from its mean ``x . theta`` and variance
    ``x^T A^-1 x`` (arrays of m): ``mean + alpha sqrt(var)`` for ``calibrated``/``fixed``,
    ``mean + decaying_weight * var`` for ``decaying``."""
    mean = np.asarray(mean, dtype=np.float64)
    var = np.maximum(np.asarray(var, dtype=np.float64), 0.0)
    if rule in CATEGORY_RULES:
        raise ExplorationError(f"exploration rule {rule!r} needs each product's "
                               f"category pool: category_rates, category_weights")
    if rule == "decaying":
        return mean + decaying_weight(clicks, observations, x, l2) * var
    return mean + exploration_alpha(rule, fixed_alpha, clicks, observations, x, l2) * \
        np.sqrt(var)


def category_solve(S: np.ndarray, l2: float) -> np.ndarray:
    """``(l2 I + S_c)^-1`` for each category's pooled ``S_c = sum (A_i - l2 I)`` over its
    products, (C, d, d) -> (C, d, d): what :func:`category_rates` needs, computed once per
    change of a pool (serving caches it per pool version), not per request.

    >>> category_solve(np.zeros((1, 2, 2)), 4.0)[0].tolist()
    [[0.25, 0.0], [0.0, 0.25]]
    """
    S = np.asarray(S, dtype=np.float64)
    if S.ndim != 3 or S.shape[1] != S.shape[2]:
        raise ExplorationError(f"S: expected (C, d, d), got {S.shape}")
    if not l2 > 0:
        raise ExplorationError(f"l2: {l2} must be > 0")
    return np.linalg.inv(S + l2 * np.eye(S.shape[1]))


def category_rates(M: np.ndarray, t: np.ndarray, x: np.ndarray, p: float,
                   l2: float, optimism: float = 0.0) -> np.ndarray:
    """Each category's click rate for context x, the ``category_rate`` rule's centre:

        q_c(x) = x^T (l2 I + S_c)^-1 (t_c + l2 p x / x.x)

    with ``M = category_solve(S, l2)`` (C, d, d), ``t_c = sum b_i`` (C, d) over the category's
    products and ``p`` the shop's click rate (:func:`click_rate`). It is the category's
    *shared* ridge model (every observation of its products, ``S_c``, ``t_c``) ranked by the
    decaying rule itself - its prior centred on ``p`` in x's direction - so a category with
    no data has ``q_c = p`` and the rule is ``decaying`` there. A product of category c then
    scores ``x.theta + q_c(x) l2 x^T A^-1 x / x.x``: a never-seen product is worth its
    category's rate for x instead of the shop's (docs/EXPLORATION.md section 1;
    bench/learning_peers.py ``SharedPriorLinUCB`` with ``centre="rate"`` computes the same).
    Computed on u = x / |x| (``|x| u^T M t + l2 p u^T M u``), so a large x does not overflow;
    x = 0 has no direction and gets ``p`` (its bonus is 0 whatever the rate).

    ``optimism`` (``category_ucb``: 1, :data:`CATEGORY_OPTIMISM`) adds that many standard
    deviations of the rate, :func:`category_rate_sd`: the rate's upper bound, so a category
    whose few observations missed is not written off for good.

    Hand computation (tests/contract/test_category_rate.py): one category, d = 2, l2 = 1,
    ``S = diag(3, 0)``, ``t = (1, 0)``, p = 0.2, x = (1, 0): ``q = (1 + 0.2) / 4 = 0.3``;
    with optimism 1, ``0.3 + sqrt(0.2 * 0.8 / 4) = 0.5``.

    >>> M = category_solve(np.array([[[3.0, 0.0], [0.0, 0.0]]]), 1.0)
    >>> category_rates(M, np.array([[1.0, 0.0]]), np.array([1.0, 0.0]), 0.2, 1.0).round(6)
    array([0.3])
    """
    M = np.asarray(M, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    if M.ndim != 3 or t.shape != M.shape[:2] or x.shape != M.shape[1:2]:
        raise ExplorationError(f"M {M.shape}, t {t.shape}, x {x.shape}: expected (C, d, d), "
                               f"(C, d), (d,)")
    top = float(np.max(np.abs(x))) if x.size else 0.0
    if not math.isfinite(top):
        raise ExplorationError(f"x: an entry is {top}, not finite")
    if top == 0.0:
        return np.full(M.shape[0], float(p))
    y = x / top
    norm = top * math.sqrt(float(y.dot(y)))
    u = x / norm
    Mu = M @ u  # (C, d): M is symmetric, so u^T M = (M u)^T
    uMu = Mu @ u
    q = norm * np.einsum("cd,cd->c", Mu, t) + l2 * p * uMu
    if optimism:
        q = q + optimism * norm * np.sqrt(p * (1.0 - p) * np.maximum(uMu, 0.0))
    return q


def category_rate_sd(M: np.ndarray, x: np.ndarray, p: float) -> np.ndarray:
    """Each category's standard deviation of its rate for x, ``sqrt(p (1 - p) x^T M_c x)``
    with ``M = category_solve(S, l2)``: the pooled ridge model's posterior deviation of
    ``x . theta_c`` when the reward noise is a Bernoulli's at the shop's rate ``p`` (the
    prior's variance ``p (1 - p) / l2``). No data: ``sqrt(p (1 - p) / l2) |x|``; it shrinks
    like ``1 / sqrt(n)`` with the category's observations in x's direction."""
    M = np.asarray(M, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    quad = np.einsum("cij,i,j->c", M, x, x, optimize=False)
    return np.sqrt(p * (1.0 - p) * np.maximum(quad, 0.0))


def category_weights(q: np.ndarray, x: np.ndarray, l2: float) -> np.ndarray:
    """The weight of the variance ``x^T A^-1 x`` per category under ``category_rate``:
    ``q_c l2 / x.x`` (:func:`decaying_weight` with ``p`` replaced by ``q_c``; 0 for x = 0)."""
    q = np.asarray(q, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    top = float(np.max(np.abs(x))) if x.size else 0.0
    if not math.isfinite(top):
        raise ExplorationError(f"x: an entry is {top}, not finite")
    if top == 0.0:
        return np.zeros_like(q)
    y = x / top
    norm = top * math.sqrt(float(y.dot(y)))
    return q * (l2 / norm) / norm


def category_rate_scores(M: np.ndarray, t: np.ndarray, groups: np.ndarray, p: float,
                         x: np.ndarray, l2: float, mean: np.ndarray, var: np.ndarray,
                         optimism: float = 0.0) -> np.ndarray:
    """Every product's score under ``category_rate`` from its mean ``x . theta``, variance
    ``x^T A^-1 x`` and category ``groups`` (codes into ``M = category_solve(S, l2)`` and
    ``t``): ``mean + q_c(x) l2 var / x.x`` - what :func:`rule_scores` is for the other
    rules (in-process learners; serving computes the same on u = x / |x|)."""
    w = category_weights(category_rates(M, t, x, p, l2, optimism), x, l2)
    return np.asarray(mean, dtype=np.float64) + w[groups] * np.maximum(var, 0.0)


def inverses(A_invs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(A, ok)``: ``A = A_inv^-1`` per matrix, (m, d, d), and (m,) bool, False for a
    singular one (its ``A`` is NaN: not a valid value, it counts nothing). One inversion
    call for the batch; each matrix's inverse is the same number whatever is inverted with
    it (row by row after a singular one), so a caller can compute it once and hand it to
    :func:`count_terms` and :func:`pool_terms` (serving inverts each changed product once).
    """
    A_invs = np.asarray(A_invs, dtype=np.float64)
    try:
        return np.linalg.inv(A_invs), np.ones(A_invs.shape[0], dtype=bool)
    except np.linalg.LinAlgError:
        A = np.full(A_invs.shape, np.nan)
        ok = np.zeros(A_invs.shape[0], dtype=bool)
        for j in range(A_invs.shape[0]):
            with contextlib.suppress(np.linalg.LinAlgError):
                A[j] = np.linalg.inv(A_invs[j:j + 1])[0]
                ok[j] = True
        return A, ok


def pool_terms(thetas: np.ndarray, A_invs: np.ndarray, l2: float,
               inverse: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each product's share of its category's pool from its published parameters:
    ``(A_i - l2 I, b_i)`` with ``A_i = A_inv_i^-1`` and ``b_i = A_i theta_i``, (m, d, d) and
    (m, d). A category's ``S_c``, ``t_c`` are their sums over its products (what every
    observation of them added to the ridge state: the job starts each product at
    ``l2 I``). ``inverse``: ``A_inv^-1`` when the caller has it (:func:`inverses`; not
    changed), the same numbers as inverting here."""
    thetas = np.asarray(thetas, dtype=np.float64)
    if inverse is None:
        A = np.linalg.inv(np.asarray(A_invs, dtype=np.float64))
    else:
        A = np.array(inverse, dtype=np.float64)
    b = (A @ thetas[..., None])[..., 0]
    diag = np.arange(thetas.shape[-1])
    A[..., diag, diag] -= l2
    return A, b


def _one_hot_block(dim: int) -> list[int] | None:
    """Indexes of a block of x of which every context has exactly one 1 (the time of day of the
    shipped features; the feature spec in use for ``dim``: contract.context_spec.count_block),
    or None when no such block is known."""
    from contract.context_spec import count_block

    block = count_block(dim)
    return None if block is None else list(block)


def counts_from_params(thetas: np.ndarray, A_invs: np.ndarray, l2: float
                       ) -> tuple[float, float]:
    """(clicks, observations) learned, read back from published parameters (m products):
    with ``A = A_inv^-1`` and ``b = A theta``, a block of one-hot features that every x has
    exactly once gives ``sum_block b = sum r`` (clicks) and ``sum_block (diag A - l2) = n``.
    (0, 0) when x is not the shipped layout, which makes the rule's p its prior 1/2.
    """
    thetas = np.asarray(thetas, dtype=np.float64)
    block = _one_hot_block(thetas.shape[-1]) if thetas.ndim == 2 else None
    if block is None or thetas.shape[0] == 0:
        return 0.0, 0.0
    A = np.linalg.inv(np.asarray(A_invs, dtype=np.float64))
    b = np.einsum("mij,mj->mi", A, thetas)
    clicks = float(b[:, block].sum())
    obs = float((np.einsum("mii->mi", A)[:, block] - l2).sum())
    # rounding can leave -1e-12 or clicks a hair above n: clamp into what click_rate accepts
    obs = max(0.0, obs)
    return min(max(0.0, clicks), obs), obs


def count_terms(thetas: np.ndarray, A_invs: np.ndarray,
                inverse: np.ndarray | None = None) -> np.ndarray:
    """(m, 2) per product: the one-hot block's sums of b and of diag A, the terms
    :func:`counts_from_params` adds up (zeros when x is not the shipped layout). A store of
    many products keeps them per product as its parameters change, so the counts cost one sum
    instead of m inversions (serving/snapshot.py). ``inverse``: ``A_inv^-1`` when the caller
    has it (:func:`inverses`), the same numbers as inverting here."""
    thetas = np.asarray(thetas, dtype=np.float64)
    out = np.zeros((thetas.shape[0], 2))
    block = _one_hot_block(thetas.shape[-1]) if thetas.ndim == 2 else None
    if block is None or thetas.shape[0] == 0:
        return out
    A = np.linalg.inv(np.asarray(A_invs, dtype=np.float64)) if inverse is None else inverse
    out[:, 0] = np.einsum("mij,mj->mi", A, thetas)[:, block].sum(axis=1)
    out[:, 1] = np.einsum("mii->mi", A)[:, block].sum(axis=1)
    return out


def counts_from_terms(total: np.ndarray, m: int, dim: int, l2: float) -> tuple[float, float]:
    """:func:`counts_from_params` from the sum over m products of :func:`count_terms` (equal to
    rounding).

    >>> rng = np.random.default_rng(0)
    >>> G = rng.normal(size=(3, 15, 15)); A_invs = np.linalg.inv(np.eye(15) + G @ G.mT)
    >>> thetas = rng.normal(size=(3, 15))
    >>> a = counts_from_terms(count_terms(thetas, A_invs).sum(axis=0), 3, 15, 1.0)
    >>> np.allclose(a, counts_from_params(thetas, A_invs, 1.0))
    True
    """
    block = _one_hot_block(dim)
    if block is None or m == 0:
        return 0.0, 0.0
    obs = max(0.0, float(total[1]) - l2 * len(block) * m)
    return min(max(0.0, float(total[0])), obs), obs


# --- off-policy estimates ------------------------------------------------------------------

@dataclass(frozen=True)
class Estimate:
    """A candidate's estimated value (click rate) with a two-sided confidence interval."""

    value: float
    lower: float
    upper: float
    n: int  # logged visits it is computed from
    matched: int  # of those, visits where the candidate would have shown what was shown


def snips(rewards: np.ndarray, matches: np.ndarray, propensities: np.ndarray,
          z: float = 1.96) -> Estimate:
    """Self-normalised IPS of a deterministic candidate from a log: ``matches[t]`` is True when
    the candidate would have shown the logged item, ``propensities[t]`` the probability the
    logging policy showed it. Value ``sum(w r) / sum(w)`` with ``w = match / propensity``;
    the interval is ``value +- z * se``, ``se = sqrt(sum(w^2 (r - value)^2)) / sum(w)`` (the
    delta method), clipped to [0, 1]. No match: value 0 and the interval [0, 1].

    >>> e = snips(np.array([1.0, 0.0, 1.0, 0.0]), np.array([True, True, False, True]),
    ...           np.array([0.5, 1.0, 0.5, 1.0]))
    >>> round(e.value, 4), e.matched
    (0.5, 3)
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    matches = np.asarray(matches, dtype=bool)
    propensities = np.asarray(propensities, dtype=np.float64)
    if not rewards.shape == matches.shape == propensities.shape:
        raise ExplorationError("rewards, matches and propensities must have one entry a visit")
    if np.any(propensities[matches] <= 0):
        raise ExplorationError("a matched visit has propensity <= 0: it cannot be reweighted")
    n = int(rewards.size)
    w = np.where(matches, 1.0 / np.where(propensities > 0, propensities, 1.0), 0.0)
    sw = float(w.sum())
    if sw == 0.0:
        return Estimate(0.0, 0.0, 1.0, n, 0)
    value = float(w @ rewards) / sw
    se = math.sqrt(float(np.sum(w * w * (rewards - value) ** 2))) / sw
    return Estimate(value, max(0.0, value - z * se), min(1.0, value + z * se), n,
                    int(matches.sum()))


# --- the controller ------------------------------------------------------------------------

@dataclass
class Switch:
    """One change of the live candidate, as logged."""

    at: float
    from_: str
    to: str
    challenger: Estimate
    live: Estimate


@dataclass
class SelfTuner:
    """Chooses the live candidate from off-policy estimates, with guardrails (module doc).

    ``shares()`` is the traffic split to run: the live candidate gets
    ``1 - min_explore_share``, the others share ``min_explore_share`` equally (never less,
    whatever the estimates say). ``observe(now, estimates)`` takes one round of estimates
    (one per candidate) and returns the live candidate after it, switching at most once.
    """

    candidates: Sequence[str]
    live: str
    min_explore_share: float = 0.1
    margin: float = 0.0
    min_interval: float = 0.0
    switches: list[Switch] = field(default_factory=list)
    last_switch_at: float | None = None
    # an estimate on fewer matched visits is not trusted (its delta-method interval can be
    # [1, 1] after four clicks in four matches): neither side of a switch may rest on one
    min_matched: int = 0

    def __post_init__(self) -> None:
        self.candidates = tuple(self.candidates)
        if len(set(self.candidates)) != len(self.candidates) or len(self.candidates) < 1:
            raise ExplorationError(f"candidates: need distinct names, got {self.candidates}")
        if self.live not in self.candidates:
            raise ExplorationError(f"live: {self.live!r} is not a candidate")
        if len(self.candidates) > 1 and not 0.0 < self.min_explore_share < 1.0:
            raise ExplorationError(f"min_explore_share: {self.min_explore_share} must be in "
                                   f"(0, 1) with more than one candidate")
        if not (self.margin >= 0 and self.min_interval >= 0 and self.min_matched >= 0):
            raise ExplorationError("margin and min_interval must be >= 0")

    @property
    def switch_count(self) -> int:
        return len(self.switches)

    def shares(self) -> dict[str, float]:
        """The traffic share of each candidate now (sums to 1)."""
        others = [c for c in self.candidates if c != self.live]
        if not others:
            return {self.live: 1.0}
        each = self.min_explore_share / len(others)
        return {c: (1.0 - self.min_explore_share) if c == self.live else each
                for c in self.candidates}

    def observe(self, now: float, estimates: Mapping[str, Estimate]) -> str:
        """One round of estimates; switch to the best challenger when every guardrail allows."""
        live_est = estimates.get(self.live)
        if live_est is None:
            return self.live
        if self.last_switch_at is not None and now - self.last_switch_at < self.min_interval:
            return self.live
        if live_est.matched < self.min_matched:
            return self.live
        challengers = [(c, e) for c, e in estimates.items() if c != self.live and c in
                       self.candidates and e.matched >= self.min_matched]
        if not challengers:
            return self.live
        best, best_est = max(challengers, key=lambda ce: (ce[1].lower, ce[1].value))
        if best_est.lower - live_est.upper < self.margin or best_est.lower <= live_est.upper:
            return self.live
        sw = Switch(now, self.live, best, best_est, live_est)
        self.switches.append(sw)
        log.info("exploration switch #%d at %g: %s -> %s (challenger %.4f [%.4f, %.4f] on "
                 "%d matched, live %.4f [%.4f, %.4f] on %d matched, margin %g)",
                 len(self.switches), now, self.live, best, best_est.value, best_est.lower,
                 best_est.upper, best_est.matched, live_est.value, live_est.lower,
                 live_est.upper, live_est.matched, self.margin)
        self.live = best
        self.last_switch_at = now
        return self.live


# --- the live loop: candidates, their mixture's probabilities, the published decision -------

SELF_TUNE_KEY = "tuner"
"""``<prefix>:tuner``: the controller's decision (JSON) the job writes and serving reads."""


@dataclass(frozen=True)
class Candidate:
    """One exploration rule the live loop can choose: ``category_rate``, ``decaying``,
    ``calibrated``, or ``fixed`` with an ``alpha``. ``name`` is what impressions log (as a
    shadow and as the variant that served)."""

    name: str
    rule: str
    alpha: float | None = None


def parse_candidates(text: str) -> tuple[Candidate, ...]:
    """``RTREC_SELF_TUNE``: comma-separated ``category_rate``, ``decaying``, ``calibrated``
    or ``alpha=X`` (X >= 0); empty is off (no candidates). The first is the live one until
    the controller says otherwise.

    >>> [c.name for c in parse_candidates("decaying, calibrated, alpha=0.3,alpha=1")]
    ['decaying', 'calibrated', 'alpha_0.3', 'alpha_1']
    >>> parse_candidates("")
    ()
    """
    items = [t.strip() for t in text.split(",") if t.strip()] if text.strip() else []
    out: list[Candidate] = []
    for item in items:
        if item in ("calibrated", *VARIANCE_RULES):
            out.append(Candidate(item, item))
            continue
        key, eq, value = item.partition("=")
        try:
            alpha = float(value) if eq and key.strip() == "alpha" else None
        except ValueError:
            alpha = None
        if alpha is None or not (math.isfinite(alpha) and alpha >= 0):
            raise ExplorationError(f"self-tune candidate {item!r}: expected 'category_ucb', "
                                   f"'category_rate', 'decaying', 'calibrated' or 'alpha=X' "
                                   f"with a finite "
                                   f"X >= 0")
        out.append(Candidate(f"alpha_{alpha:g}", "fixed", alpha))
    names = [c.name for c in out]
    if len(set(names)) != len(names):
        raise ExplorationError(f"self-tune candidates: a rule is named twice ({text!r})")
    if len(out) == 1:
        raise ExplorationError(f"self-tune candidates: one ({text!r}) has nothing to choose "
                               f"from; give two or more, or none (off)")
    if len(out) > 16:  # contract.events.MAX_SHADOWS: each candidate is logged as a shadow
        raise ExplorationError(f"self-tune candidates: at most 16, got {len(out)}")
    return tuple(out)


def mixture_probabilities(lists: Mapping[str, Sequence[str]], shares: Mapping[str, float],
                          shown: Sequence[str]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The logging probabilities of ``shown`` when one candidate's deterministic list is drawn
    with ``shares``: per slot j, P(the list starts with shown[:j+1]) (the candidates whose list
    starts so, summed) and P(shown[j] at slot j). These make each candidate's SNIPS unbiased.

    >>> mixture_probabilities({"a": ["p", "q"], "b": ["p", "r"]}, {"a": 0.9, "b": 0.1},
    ...                       ["p", "r"])
    ((1.0, 0.1), (1.0, 0.1))
    """
    shown = list(shown)
    prefix, slots = [], []
    for j in range(len(shown)):
        prefix.append(min(1.0, math.fsum(s for c, s in shares.items()
                                          if list(lists[c][:j + 1]) == shown[:j + 1])))
        slots.append(min(1.0, math.fsum(s for c, s in shares.items()
                                         if len(lists[c]) > j and lists[c][j] == shown[j])))
    return tuple(prefix), tuple(slots)


def tuner_state(tuner: SelfTuner) -> dict[str, object]:
    """The controller as JSON (checkpointed by the job, published to ``<prefix>:tuner``):
    ``live``, ``shares``, ``generation`` (switches so far: it only grows), the switch log."""
    def est(e: Estimate) -> dict[str, float | int]:
        return {"value": e.value, "lower": e.lower, "upper": e.upper, "n": e.n,
                "matched": e.matched}

    return {"live": tuner.live, "candidates": list(tuner.candidates), "shares": tuner.shares(),
            "min_explore_share": tuner.min_explore_share, "margin": tuner.margin,
            "min_interval": tuner.min_interval, "min_matched": tuner.min_matched,
            "generation": tuner.switch_count,
            "switch_count": tuner.switch_count, "last_switch_at": tuner.last_switch_at,
            "switches": [{"at": s.at, "from": s.from_, "to": s.to,
                          "challenger": est(s.challenger), "live": est(s.live)}
                         for s in tuner.switches]}


def tuner_from_state(state: Mapping[str, object], candidates: Sequence[str], default: str,
                     min_explore_share: float, margin: float, min_interval: float,
                     min_matched: int = 0) -> SelfTuner:
    """A controller continuing ``state`` under today's settings: its live candidate and switch
    log when the live one is still a candidate, else a fresh start on ``default``."""
    tuner = SelfTuner(candidates, default, min_explore_share, margin, min_interval,
                      min_matched=min_matched)
    live = state.get("live")
    if live not in tuner.candidates:
        return tuner
    tuner.live = str(live)
    last = state.get("last_switch_at")
    tuner.last_switch_at = None if last is None else float(last)  # type: ignore[arg-type]
    for s in state.get("switches") or ():  # type: ignore[attr-defined]
        tuner.switches.append(Switch(float(s["at"]), str(s["from"]), str(s["to"]),
                                     Estimate(**s["challenger"]), Estimate(**s["live"])))
    return tuner
