"""Off-policy estimators: what a target policy's CTR would have been, from a log of another
(the logging) policy's impressions with their probabilities (docs/EXPERIMENTS.md).

Every estimator takes per-impression arrays and returns an :class:`Estimate` with a
percentile bootstrap confidence interval (impressions resampled with replacement) and the
effective sample size (Kish: ``(sum w)^2 / sum w^2``, the number of equally weighted
impressions that would carry the same information).

Top-1 CTR (a click on the first slot), weights ``w = pi(a_1 | x) / mu(a_1 at slot 1 | x)``:

- ``ips``:   mean(w r)                                       unbiased when mu > 0 where pi > 0
- ``snips``: sum(w r) / sum(w)                               consistent, lower variance
- ``dr``:    mean(q(x, pi) + w (r - q(x, a_1)))             unbiased whatever the model q

List CTR (any click in the list; one at most under a cascade, where the user reads top-down
and stops at the first click), per-slot clicks ``R (n, k)``:

- ``slate`` (cascade IPS): ``mean(sum_j W_j R_j)`` with ``W_j = pi(a_1..a_j) / mu(a_1..a_j)``,
  the prefix probabilities: unbiased when a click at slot j depends only on the items at
  slots 1..j (a cascade);
- ``position`` (position-based IPS): the same with the per-slot marginals
  ``pi(a_j at j) / mu(a_j at j)``: unbiased when each slot's click depends only on its item
  and slot (no cascade), so it is reported beside the cascade one, not instead;
- ``dr`` (cascade doubly robust, Kiyohara et al. 2022): ``sum_j W_j (R_j - q_j(a_1..a_j))
  + W_{j-1} q_j(pi's a_1..a_{j-1}, pi's a_j)`` with ``q_j`` the model's probability of a click
  at slot j under a cascade; unbiased whatever the model for a deterministic target.

>>> w, r = np.array([2.0, 0.0, 2.0, 0.0]), np.array([1.0, 0.0, 0.0, 1.0])
>>> e = ips(w, r, n_boot=200, seed=1)
>>> e.estimate, e.ess
(0.5, 2.0)
>>> snips(w, r, n_boot=200, seed=1).estimate
0.5
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from contract.errors import RtrecError

if TYPE_CHECKING:
    from contract.exploration import Estimate as TunerEstimate

N_BOOT = 500
"""Bootstrap resamples of a confidence interval (the percentiles move by ~0.1 SE at 500)."""
LEVEL = 0.95


class OpeError(RtrecError, ValueError):
    """Arrays an estimator cannot use (shapes, NaN, negative weights, empty)."""


@dataclass(frozen=True)
class Estimate:
    """An estimate of a CTR with its ``LEVEL`` bootstrap interval and effective sample size;
    ``n`` impressions were used, ``matched`` had a non-zero weight."""

    estimate: float
    ci_low: float
    ci_high: float
    ess: float
    n: int
    matched: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)

    def covers(self, value: float) -> bool:
        return self.ci_low <= value <= self.ci_high


def kish_ess(w: np.ndarray) -> float:
    """``(sum w)^2 / sum w^2``; 0 when every weight is 0."""
    w = np.asarray(w, dtype=np.float64)
    sq = float(np.dot(w, w))
    return float(w.sum() ** 2 / sq) if sq > 0 else 0.0


def ips(w: np.ndarray, r: np.ndarray, *, n_boot: int = N_BOOT, seed: int = 0) -> Estimate:
    """Inverse propensity scoring: ``mean(w r)``."""
    w, r = _check(w, r)
    return _mean_estimate(w * r, w, n_boot, seed)


def snips(w: np.ndarray, r: np.ndarray, *, n_boot: int = N_BOOT, seed: int = 0) -> Estimate:
    """Self-normalised IPS: ``sum(w r) / sum(w)`` (NaN when no weight is positive)."""
    w, r = _check(w, r)
    wr = w * r
    est = float(wr.sum() / w.sum()) if w.sum() > 0 else math.nan

    def stat(idx: np.ndarray) -> np.ndarray:
        num, den = wr[idx].sum(axis=1), w[idx].sum(axis=1)
        return np.divide(num, den, out=np.full(num.shape, np.nan), where=den > 0)

    return _estimate(est, stat, w, n_boot, seed)


def dr(w: np.ndarray, r: np.ndarray, q_logged: np.ndarray, q_target: np.ndarray, *,
       n_boot: int = N_BOOT, seed: int = 0) -> Estimate:
    """Doubly robust: ``mean(q_target + w (r - q_logged))``; ``q_logged`` is the model's
    reward of the logged action, ``q_target`` its expected reward under the target."""
    w, r = _check(w, r)
    q_logged, q_target = _check(q_logged, q_target, n=w.size, what="q")
    return _mean_estimate(q_target + w * (r - q_logged), w, n_boot, seed)


def cascade_ips(W: np.ndarray, R: np.ndarray, *, n_boot: int = N_BOOT,
                seed: int = 0) -> Estimate:
    """The slate estimator under a cascade: ``mean(sum_j W_j R_j)``, W the prefix weights
    (n, k), R the clicks per slot (n, k). ESS: the smallest over slots (the deepest prefix
    usually: a deterministic target's whole list is rarely logged, and then the estimate
    rests on a few large weights); ``matched``: impressions whose whole list matched."""
    W, R = _check2(W, R)
    return _min_ess(_mean_estimate((W * R).sum(axis=1), W[:, 0], n_boot, seed,
                                   matched=W[:, -1]), W)


def position_ips(W: np.ndarray, R: np.ndarray, *, n_boot: int = N_BOOT,
                 seed: int = 0) -> Estimate:
    """Position-based IPS: ``mean(sum_j W_j R_j)`` with per-slot marginal weights W (n, k).
    ESS: the smallest over slots."""
    W, R = _check2(W, R)
    return _min_ess(_mean_estimate((W * R).sum(axis=1), W.sum(axis=1), n_boot, seed), W)


def cascade_dr(W: np.ndarray, R: np.ndarray, Q_logged: np.ndarray, Q_target: np.ndarray, *,
               n_boot: int = N_BOOT, seed: int = 0) -> Estimate:
    """Cascade doubly robust for the list CTR. ``W`` prefix weights (n, k); ``R`` clicks per
    slot; ``Q_logged[:, j]`` the model's P(click at slot j | the logged a_1..a_j) and
    ``Q_target[:, j]`` its P(click at slot j | the logged a_1..a_{j-1}, the target's a_j)
    (for a deterministic target: the target's prefix, which matters only where it is the
    logged one, i.e. where ``W_{j-1} > 0``)."""
    W, R = _check2(W, R)
    Q_logged, Q_target = _check2(Q_logged, Q_target, what="Q")
    if Q_logged.shape != W.shape:
        raise OpeError(f"Q: shape {Q_logged.shape} != W {W.shape}")
    W_prev = np.concatenate([np.ones((W.shape[0], 1)), W[:, :-1]], axis=1)
    terms = (W * (R - Q_logged) + W_prev * Q_target).sum(axis=1)
    return _min_ess(_mean_estimate(terms, W[:, 0], n_boot, seed, matched=W[:, -1]), W)


def cascade_click_probabilities(p: np.ndarray) -> np.ndarray:
    """P(click at slot j) under a cascade from per-item click probabilities p (n, k):
    ``p_j * prod_{l<j} (1 - p_l)``."""
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    survive = np.cumprod(1.0 - p, axis=1)
    before = np.concatenate([np.ones((p.shape[0], 1)), survive[:, :-1]], axis=1)
    return p * before


# --- per-impression terms, shared by the offline command and the job's running sums ----------
#
# The offline command (evaluation/offline.py) and the job's in-stream step (flink_job/
# evaluate.py) replay the log in time order through these, so the rules exist once and the two
# estimates agree to the last bits of the sums (docs/EXPERIMENTS.md section 5).

RANDOM, POPULARITY = "random", "popularity"


class ReplayModel:
    """Disjoint LinUCB learned from the log in order (contract.linucb's Sherman-Morrison): the
    DR reward model, which at each impression has learned only the impressions before it."""

    def __init__(self, m: int, dim: int, l2: float = 1.0) -> None:
        self.A_inv = np.repeat((np.eye(dim) / l2)[None], m, axis=0)  # (m, d, d)
        self.b = np.zeros((m, dim))
        self.theta = np.zeros((m, dim))

    def grow(self, n: int, l2: float = 1.0) -> None:
        """``n`` more products at the prior, after the others (products the catalogue gained
        while the log was written: the live catalogue, docs/CATALOG.md)."""
        if n <= 0:
            return
        dim = self.b.shape[1]
        self.A_inv = np.concatenate([self.A_inv, np.repeat((np.eye(dim) / l2)[None], n, axis=0)])
        self.b = np.concatenate([self.b, np.zeros((n, dim))])
        self.theta = np.concatenate([self.theta, np.zeros((n, dim))])

    def predict(self, x: np.ndarray) -> np.ndarray:
        """P(click) of every product for context x, the ridge estimate clipped to [0, 1]."""
        return np.clip(self.theta @ x, 0.0, 1.0)

    def learn(self, items: Sequence[int], x: np.ndarray, clicked: Iterable[int]) -> None:
        """Every shown product observed, reward 1 at the clicked slots (the job's rule).

        The shown products are updated in one batched Sherman-Morrison step (they are distinct
        in a valid impression, so their updates are independent): a fifth of the per-item
        loop's numpy calls, which were half of ``ope-evaluate``'s time per impression
        (docs/JOB.md). A list that repeats a product takes the loop, whose order matters."""
        from contract import linucb

        clicked = set(clicked)
        if len(set(items)) != len(items):
            for pos, i in enumerate(items):
                self.A_inv[i] = linucb.sherman_morrison(self.A_inv[i], x)
                if pos in clicked:
                    self.b[i] += x
                self.theta[i] = self.A_inv[i] @ self.b[i]
            return
        idx = np.asarray(items, dtype=np.intp)
        A = self.A_inv[idx]  # (k, d, d), each symmetric
        Ax = A @ x  # (k, d)
        A -= Ax[:, :, None] * Ax[:, None, :] / (1.0 + Ax @ x)[:, None, None]
        self.A_inv[idx] = A
        for pos in clicked:
            if 0 <= pos < len(items):
                self.b[idx[pos]] += x
        self.theta[idx] = (A @ self.b[idx][:, :, None])[:, :, 0]


def logging_probabilities(prefix: Sequence[float] | None, marginals: Sequence[float] | None,
                          policy: str, eligible_n: int | None, k: int, m: int
                          ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The logged prefix and slot probabilities, or those of a uniformly random list (policy
    ``random``, drawn from ``eligible_n`` products or the catalogue's m); None when the
    impression supports no estimate (a deterministic policy's)."""
    if prefix is not None and marginals is not None:
        return np.asarray(prefix, dtype=np.float64), np.asarray(marginals, dtype=np.float64)
    if policy == RANDOM:
        pool = eligible_n or m
        return np.cumprod(1.0 / (pool - np.arange(k))), np.full(k, 1.0 / pool)
    return None, None


def new_products(products: Sequence[str], shadows: Mapping[str, Sequence[str]] | None,
                 index: Mapping[str, int]) -> list[str]:
    """The ids an impression names (shown, then its shadows' lists by name) that ``index``
    lacks, each once, in that order: the replay adds them at the prior instead of dropping
    the impression, so a product added to the live catalogue is estimated from its first
    impression on (the stream and the offline command add them alike)."""
    seen: dict[str, None] = {}
    for p in products:
        if p not in index:
            seen.setdefault(p, None)
    for _, lst in sorted((shadows or {}).items()):
        for p in lst:
            if p not in index:
                seen.setdefault(p, None)
    return list(seen)


def target_list(name: str, shadows: Mapping[str, Sequence[str]], index: Mapping[str, int],
                clicks_so_far: np.ndarray, k: int) -> list[int] | None:
    """The list the target would have shown, as catalogue indices: a shadow's logged list,
    popularity's k most clicked so far (ties: catalogue order); None for ``random`` and for a
    shadow this impression does not carry (or of another length, or an unknown product)."""
    if name == RANDOM:
        return None
    if name == POPULARITY:
        from contract import linucb

        return [int(i) for i in linucb.top_k(clicks_so_far, k)]
    shadow = shadows.get(name)
    if shadow is None or len(shadow) != k:
        return None
    out = [index.get(p, -1) for p in shadow]
    return out if min(out) >= 0 else None


def top1_terms(tgt: Sequence[int] | None, items: Sequence[int], prefix0: float,
               q: np.ndarray) -> tuple[float, float]:
    """``(w, q_target)`` of one impression for the top-1 CTR: ``w = pi(a_1) / mu(a_1 at 1)``
    and the model's expected reward under the target (``tgt`` None: uniformly random over the
    ``len(q)`` products). With ``r`` and ``q_logged = q[items[0]]`` they give every top-1
    term: IPS ``w r``, SNIPS ``w r`` and ``w``, DR ``q_target + w (r - q_logged)``."""
    if tgt is None:
        return (1.0 / q.size) / prefix0, float(q.mean())
    return float(tgt[0] == items[0]) / prefix0, float(q[tgt[0]])


@dataclass
class Top1Sums:
    """Running sums of one target's top-1 terms: SNIPS, DR and the Kish ESS are ratios of
    them, so a stream keeps a few numbers per target, not the impressions."""

    n: int = 0
    matched: int = 0
    sum_w: float = 0.0
    sum_w2: float = 0.0
    sum_wr: float = 0.0
    sum_dr: float = 0.0
    sum_dr2: float = 0.0
    sum_w2r: float = 0.0
    sum_w2r2: float = 0.0

    def add(self, w: float, r: float, q_logged: float, q_target: float) -> None:
        d = q_target + w * (r - q_logged)
        self.n += 1
        self.matched += w > 0
        self.sum_w += w
        self.sum_w2 += w * w
        self.sum_wr += w * r
        self.sum_dr += d
        self.sum_dr2 += d * d
        self.sum_w2r += w * w * r
        self.sum_w2r2 += w * w * r * r

    def summary(self) -> dict[str, float | int | None]:
        """IPS, SNIPS and DR with normal 95% intervals from the sums of squares (the bootstrap
        needs the impressions): DR's from its terms' variance, SNIPS's by the delta method
        clipped to [0, 1] (``contract.exploration.snips``' interval, which the self-tuning
        controller reads); the ESS; None where undefined."""
        n = self.n
        z = 1.96
        dr_mean = self.sum_dr / n if n else None
        half = None
        if n > 1 and dr_mean is not None:
            var = max(0.0, (self.sum_dr2 - n * dr_mean * dr_mean) / (n - 1))
            half = z * math.sqrt(var / n)
        v = self.sum_wr / self.sum_w if self.sum_w > 0 else None
        s_half = None
        if v is not None:  # sum w^2 (r - v)^2, expanded
            sq = self.sum_w2r2 - 2 * v * self.sum_w2r + v * v * self.sum_w2
            s_half = z * math.sqrt(max(0.0, sq)) / self.sum_w
        return {"n": n, "matched": self.matched,
                "ips": self.sum_wr / n if n else None,
                "snips": v,
                "snips_ci_low": max(0.0, v - s_half) if v is not None and s_half is not None
                else None,
                "snips_ci_high": min(1.0, v + s_half) if v is not None and s_half is not None
                else None,
                "dr": dr_mean,
                "dr_ci_low": dr_mean - half if half is not None else None,
                "dr_ci_high": dr_mean + half if half is not None else None,
                "ess": self.sum_w ** 2 / self.sum_w2 if self.sum_w2 > 0 else 0.0}


def tuner_estimate(summary: Mapping[str, float | int | None]) -> TunerEstimate:
    """One target's running sums (``Top1Sums.summary()``, or the JSON the job writes to Redis
    ``<prefix>:ope:<target>``) as the self-tuning controller's estimate
    (``contract.exploration.SelfTuner.observe``): SNIPS with its delta-method interval; no
    weight yet: value 0 and the interval [0, 1], as ``exploration.snips`` says it."""
    from contract.exploration import Estimate as TunerEstimate

    v = summary.get("snips")
    n, matched = int(summary.get("n") or 0), int(summary.get("matched") or 0)
    if v is None:
        return TunerEstimate(0.0, 0.0, 1.0, n, 0)
    return TunerEstimate(float(v), float(summary["snips_ci_low"]),  # type: ignore[arg-type]
                         float(summary["snips_ci_high"]), n, matched)  # type: ignore[arg-type]


# --- shared ----------------------------------------------------------------------------------

def _min_ess(e: Estimate, W: np.ndarray) -> Estimate:
    """``e`` with the smallest Kish ESS over the slots' weights."""
    ess = min(kish_ess(W[:, j]) for j in range(W.shape[1]))
    return Estimate(e.estimate, e.ci_low, e.ci_high, ess, e.n, e.matched)


def _check(a: np.ndarray, b: np.ndarray, n: int | None = None, what: str = "w, r"
           ) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if a.size == 0 or a.shape != b.shape or (n is not None and a.size != n):
        raise OpeError(f"{what}: expected two non-empty arrays of one length, got "
                       f"{a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise OpeError(f"{what}: every value must be finite")
    if what == "w, r" and (a < 0).any():
        raise OpeError("w: weights must be >= 0")
    return a, b


def _check2(A: np.ndarray, B: np.ndarray, what: str = "W, R") -> tuple[np.ndarray, np.ndarray]:
    A = np.asarray(A, dtype=np.float64)
    B = np.asarray(B, dtype=np.float64)
    if A.ndim != 2 or A.shape != B.shape or A.size == 0:
        raise OpeError(f"{what}: expected two (n, k) arrays of one shape, got {A.shape} and "
                       f"{B.shape}")
    if not (np.isfinite(A).all() and np.isfinite(B).all()):
        raise OpeError(f"{what}: every value must be finite")
    if what == "W, R" and (A < 0).any():
        raise OpeError("W: weights must be >= 0")
    return A, B


def _mean_estimate(values: np.ndarray, w: np.ndarray, n_boot: int, seed: int,
                   matched: np.ndarray | None = None) -> Estimate:
    def stat(idx: np.ndarray) -> np.ndarray:
        return values[idx].mean(axis=1)

    return _estimate(float(values.mean()), stat, w, n_boot, seed, matched)


def _estimate(est: float, stat: Callable[[np.ndarray], np.ndarray], w: np.ndarray,
              n_boot: int, seed: int, matched: np.ndarray | None = None) -> Estimate:
    n = w.size
    rng = np.random.default_rng(seed)
    reps: list[np.ndarray] = []
    chunk = max(1, min(n_boot, 2_000_000 // max(n, 1)))  # at most ~16 MB of indices at once
    for lo in range(0, n_boot, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_boot - lo), n))
        reps.append(stat(idx))
    boot = np.concatenate(reps) if reps else np.empty(0)
    boot = boot[np.isfinite(boot)]
    if boot.size:
        lo_q, hi_q = np.quantile(boot, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    else:
        lo_q = hi_q = math.nan
    m = w if matched is None else matched
    return Estimate(est, float(lo_q), float(hi_q), kish_ess(w), int(n),
                    int(np.count_nonzero(m)))
