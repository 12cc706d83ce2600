"""The exploring logging policy: a list sampled from a softmax over the UCB scores
(Plackett-Luce), optionally mixed with a share ``epsilon`` of uniformly random lists, with the
exact probabilities off-policy evaluation needs (docs/EXPERIMENTS.md).

With weights ``w_i = exp(s_i / temperature)`` the list ``(a_1, ..., a_k)`` is drawn slot by
slot without replacement, ``P(a_j | a_1..a_{j-1}) = w_{a_j} / (W - w_{a_1} - ... - w_{a_{j-1}})``.
Logged per impression:

- the list probability (``propensity``) and the probability of each prefix ``a_1..a_j``
  (``prefix_propensities``: the cascade estimator's weights), both closed-form products;
- per slot, the marginal probability that ``a_j`` is at slot j whatever came before
  (``slot_propensities``: the position-based estimator's weights). No closed form: with the
  exponential-race form of Plackett-Luce (item i arrives at an Exp(w_i) time; the list is the
  arrival order), ``P(i at slot j) = integral of w_i e^{-w_i t} P(exactly j-1 others arrived
  by t) dt``, and that count's distribution is the coefficients of
  ``prod_{l != i} (e^{-w_l t} + (1 - e^{-w_l t}) z)``. The integral is taken by the trapezoid
  rule in log t, which converges geometrically here (the integrand is analytic and decays at
  both ends): within 1e-8 of the sum over every ordered list (tests/contract/test_slates.py).

The uniform share mixes in linearly: each probability is ``(1 - eps) * PL + eps * uniform``.

>>> pl = PlackettLuce(np.array([1.0, 0.0, 0.0]), temperature=1.0)
>>> round(pl.list_probability([0, 1]), 6)   # e/(e+2) * 1/2
0.288058
>>> np.round(pl.slot_marginals([1, 0]), 6).tolist()   # 1/(e+2); 2/(e+2) * e/(e+1)
[0.211942, 0.309883]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from contract.errors import RtrecError

LOG_T_STEP = 0.25
"""Step of the trapezoid rule in log t: the marginals of 200 products sum to 1 per slot
within 1e-11 (a step of 0.4 left 5e-7)."""
_TAIL = 36.0
"""e^-36 ~ 2e-16: an item whose arrival time is beyond _TAIL / w has surely arrived."""


class SlateError(RtrecError, ValueError):
    """A list or parameter the policy cannot give a probability to."""


class PlackettLuce:
    """The sampling distribution of one request: scores (m,), temperature > 0, epsilon in
    [0, 1). ``sample`` draws a list; the other methods give its exact probabilities."""

    def __init__(self, scores: np.ndarray, temperature: float, epsilon: float = 0.0) -> None:
        s = np.asarray(scores, dtype=np.float64).reshape(-1)
        if s.size == 0 or not np.isfinite(s).all():
            raise SlateError("scores: expected a non-empty vector of finite numbers")
        if not (math.isfinite(temperature) and temperature > 0):
            raise SlateError(f"temperature: must be > 0, got {temperature}")
        if not 0.0 <= epsilon < 1.0:
            raise SlateError(f"epsilon: must be in [0, 1), got {epsilon}")
        self.m = int(s.size)
        self.temperature = float(temperature)
        self.epsilon = float(epsilon)
        self.log_w = (s - s.max()) / temperature  # (m,), max 0
        w = np.exp(self.log_w)
        self.w = w / w.sum()  # (m,) the softmax, W = 1

    # --- sampling ------------------------------------------------------------------------
    def sample(self, k: int, rng: np.random.Generator) -> np.ndarray:
        """Indices of a list of ``min(k, m)``, best first: with probability epsilon uniform,
        else Plackett-Luce by the Gumbel-top-k trick (argsort of log w + Gumbel noise)."""
        k = min(k, self.m)
        if self.epsilon and rng.random() < self.epsilon:
            return rng.choice(self.m, size=k, replace=False)
        keys = self.log_w + rng.gumbel(size=self.m)
        idx = np.argpartition(-keys, k - 1)[:k] if k < self.m else np.arange(self.m)
        return idx[np.argsort(-keys[idx], kind="stable")]

    # --- probabilities -------------------------------------------------------------------
    def prefix_probabilities(self, items: Sequence[int]) -> np.ndarray:
        """``P(the list starts with items[:j+1])`` for j = 0..k-1, shape (k,)."""
        items = self._items(items)
        w = self.w[items]
        # the mass left before slot j, summed from what is left (1 - sum of the shown above
        # would cancel catastrophically when those carry nearly all of it)
        unshown = np.ones(self.m, dtype=bool)
        unshown[items] = False
        left = self.w[unshown].sum() + np.cumsum(w[::-1])[::-1]
        pl = np.cumprod(w / left)
        if not self.epsilon:
            return pl
        uniform = np.cumprod(1.0 / (self.m - np.arange(len(items))))
        return (1.0 - self.epsilon) * pl + self.epsilon * uniform

    def list_probability(self, items: Sequence[int]) -> float:
        """``P(exactly this list)``: the last prefix probability."""
        return float(self.prefix_probabilities(items)[-1])

    def slot_marginals(self, items: Sequence[int]) -> np.ndarray:
        """``P(items[j] at slot j)`` for each j, shape (k,) (what is above it may differ)."""
        items = self._items(items)
        every = self._marginals(items, len(items))  # (k, k): item row, slot column
        pl = every[np.arange(len(items)), np.arange(len(items))]
        if not self.epsilon:
            return pl
        return (1.0 - self.epsilon) * pl + self.epsilon / self.m

    def marginal_matrix(self, k: int) -> np.ndarray:
        """``P(item i at slot j)`` for every item and slot, shape (m, k): for tests and small
        catalogues."""
        k = min(k, self.m)
        out = self._marginals(np.arange(self.m), k)
        if self.epsilon:
            out = (1.0 - self.epsilon) * out + self.epsilon / self.m
        return out

    # --- the integral --------------------------------------------------------------------
    def _items(self, items: Sequence[int]) -> np.ndarray:
        arr = np.asarray(items, dtype=np.int64).reshape(-1)
        if arr.size == 0 or arr.size > self.m or arr.min() < 0 or arr.max() >= self.m:
            raise SlateError(f"items: expected 1..{self.m} indices in 0..{self.m - 1}")
        if np.unique(arr).size != arr.size:
            raise SlateError("items: an item appears twice")
        return arr

    def _grid(self, items: np.ndarray, k: int) -> np.ndarray:
        """Nodes in t, one grid for all ``items``: from where none of them has arrived yet
        to where each has surely arrived or at least k others surely have (then no slot < k
        is left for it)."""
        w_items = self.w[items]
        t_lo = 1e-13 / w_items.max()  # P(i arrives before t_lo) <= w_i t_lo <= 1e-13
        t_hi = _TAIL / max(w_items.min(), 1e-300)  # every item of items has arrived
        if self.m > k + 1:  # the k+1 largest weights: k of them are others for any item
            kth = np.partition(self.w, self.m - k - 1)[self.m - k - 1]
            t_hi = min(t_hi, _TAIL / max(kth, 1e-300))
        t_hi = max(t_hi, t_lo * 10)
        n = math.ceil((math.log(t_hi) - math.log(t_lo)) / LOG_T_STEP) + 1
        return np.exp(np.linspace(math.log(t_lo), math.log(t_hi), n))

    def _marginals(self, items: np.ndarray, k: int) -> np.ndarray:
        """``P(items[r] at slot j)``, shape (len(items), k), by the integral in the module
        docstring: the factors of the items not asked about are multiplied once."""
        t = self._grid(items, k)  # (T,)
        y_step = math.log(t[1] / t[0])
        rest = np.ones(self.m, dtype=bool)
        rest[items] = False
        rest &= self.w * t[-1] > 1e-17  # the others arrive after the grid: a factor of 1
        # coefficients of prod_l (a_l + (1 - a_l) z), truncated to degree k-1: (T, k)
        base = _poly_product(np.exp(-np.outer(t, self.w[rest])), k)
        a_items = np.exp(-np.outer(t, self.w[items]))  # (T, s)
        out = np.empty((items.size, k))
        for r in range(items.size):
            others = np.delete(a_items, r, axis=1)
            poly = _poly_times(base, others)
            w_i = self.w[items[r]]
            f = (w_i * t * a_items[:, r])[:, None] * poly  # w_i e^{-w_i t} dt, dt = t dy
            # trapezoid in y = log t; the end points carry (next to) nothing
            out[r] = y_step * (f.sum(axis=0) - 0.5 * (f[0] + f[-1]))
        return out


def _poly_times(poly: np.ndarray, a: np.ndarray) -> np.ndarray:
    """``poly`` (T, k) times ``prod_c (a[:, c] + (1 - a[:, c]) z)``, truncated to degree k-1."""
    out = np.array(poly.T, order="C")  # (k, T), a copy: poly (shared by items) stays as it is
    for col in range(a.shape[1]):
        al = a[:, col]
        out[1:] = out[1:] * al + out[:-1] * (1.0 - al)  # the right side reads the old rows
        out[0] *= al
    return out.T


def _poly_product(a: np.ndarray, k: int) -> np.ndarray:
    """``prod_c (a[:, c] + (1 - a[:, c]) z)`` truncated to degree k-1, shape (T, k): one pass
    over the factors on (k, T) rows (a pairwise tree was 3x slower: bigger temporaries)."""
    T, n = a.shape
    poly = np.zeros((k, T))
    poly[0] = 1.0
    aT = np.ascontiguousarray(a.T)
    bT = 1.0 - aT
    for c in range(n):
        poly[1:] = poly[1:] * aT[c] + poly[:-1] * bT[c]  # the right side reads the old rows
        poly[0] *= aT[c]
    return poly.T
