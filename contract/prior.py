"""Where a product's model starts: the identity prior, or what its category has taught.

Disjoint LinUCB keeps, per product p, ``A_p = l2 I + sum x x^T`` and ``b_p = sum r x``. A new
product starts from ``A = l2 I, b = 0``: theta 0 and the widest bonus, however much its
category already knows. The *category prior* starts it from its category's pooled data,
shrunk to ``m`` pseudo-observations (docs/LEARNING.md, "The category prior"):

    S_c = sum_{p in c} (A_p - A_p^start)      the data part of A, pooled over the category
    t_c = sum_{p in c} (b_p - b_p^start)      the data part of b
    N_c = sum_{p in c} n_p                    observations behind them
    s   = min(1, m / N_c)                     the shrinkage (s = 0 when N_c = 0)

    A_new = l2 I + s S_c,   b_new = s t_c,    n_new = 0

which is ridge regression on the category's observations, each weighted ``s``, so the new
product's theta starts at the pooled (shrunk) estimate and its bonus is that of about ``m``
observations. It is the posterior of a Gaussian prior N(theta_c, (l2 I + s S_c)^-1) in the
Bayesian reading, and learning goes on from it with the same rank-one updates.

The pool is kept from *deltas*: each learned batch adds ``A_after - A_before`` and
``b_after - b_before`` of its product, so a product that itself started from the pool never
feeds its pseudo-observations back (no double counting), and an unlearned user leaves the
pool as it leaves the product.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from contract.errors import RtrecError
from contract.linucb import ArmState, init_state

__all__ = ["PRIORS", "CategoryPool", "PriorError", "informed_state", "pool_delta"]

PRIORS = ("identity", "category")


class PriorError(RtrecError, ValueError):
    """A pool or a prior setting that cannot be used (shapes, non-finite sums, m < 0)."""


@dataclass(frozen=True)
class CategoryPool:
    """The pooled data statistics of one category: ``S`` (d, d), ``t`` (d,), ``n``."""

    S: np.ndarray
    t: np.ndarray
    n: int

    def __post_init__(self) -> None:
        S = np.asarray(self.S, dtype=np.float64)
        t = np.asarray(self.t, dtype=np.float64)
        d = t.shape[0] if t.ndim == 1 else 0
        if d < 1 or S.shape != (d, d):
            raise PriorError(f"pool shapes: S {S.shape} and t {t.shape} are not (d, d), (d,)")
        if not (np.isfinite(S).all() and np.isfinite(t).all()):
            raise PriorError("pool sums must be finite")
        if isinstance(self.n, bool) or not isinstance(self.n, int | np.integer):
            raise PriorError(f"pool n: expected an integer, got {type(self.n).__name__}")
        object.__setattr__(self, "S", S)
        object.__setattr__(self, "t", t)
        object.__setattr__(self, "n", int(self.n))

    @classmethod
    def empty(cls, dim: int) -> CategoryPool:
        return cls(np.zeros((dim, dim)), np.zeros(dim), 0)

    @property
    def dim(self) -> int:
        return int(self.t.shape[0])

    def plus(self, dS: np.ndarray, dt: np.ndarray, dn: int) -> CategoryPool:
        """The pool after one product's learned batch (its deltas; negative for a downdate)."""
        return CategoryPool(self.S + dS, self.t + dt, self.n + int(dn))

    def to_json(self) -> str:
        """Lossless JSON (float repr round-trips); what the job writes to Redis, never a pickle."""
        return json.dumps({"S": self.S.tolist(), "t": self.t.tolist(), "n": self.n})

    @classmethod
    def from_json(cls, text: str | bytes, dim: int | None = None) -> CategoryPool:
        try:
            d: dict[str, Any] = json.loads(text)
            pool = cls(np.array(d["S"], dtype=np.float64), np.array(d["t"], dtype=np.float64),
                       d["n"])
        except (ValueError, KeyError, TypeError) as exc:
            raise PriorError(f"not a category pool: {exc}") from None
        if dim is not None and pool.dim != dim:
            raise PriorError(f"pool of d={pool.dim}, expected d={dim}")
        return pool


def pool_delta(before: ArmState, after: ArmState) -> tuple[np.ndarray, np.ndarray, int]:
    """What one learned step adds to its category's pool: ``A_after - A_before`` (from the two
    inverses: d^3 each, a few microseconds at d = 15), ``b_after - b_before``, and the change
    of n. Symmetrised, so rounding never makes the pool asymmetric."""
    dA = np.linalg.inv(after.A_inv) - np.linalg.inv(before.A_inv)
    dA = (dA + dA.T) / 2
    return dA, after.b - before.b, after.n - before.n


def informed_state(pool: CategoryPool | None, dim: int, l2: float, m: float,
                   min_obs: int = 0) -> ArmState:
    """A new product's starting state: the identity prior when there is no pool, fewer than
    ``min_obs`` observations in it (at least one), or ``m == 0``; else ridge on the pool's
    observations weighted ``s = min(1, m / n)``.

    ``min_obs`` keeps a young pool out: a category's first few observations are mostly noise,
    and they would steer every unlearned product of the category at once (measured by
    ``python -m endtoend churn``: docs/LEARNING.md)."""
    if not (m >= 0 and math.isfinite(m)):
        raise PriorError(f"pseudo-observations m must be finite and >= 0, got {m}")
    if pool is None or pool.n <= 0 or pool.n < min_obs or m == 0:
        return init_state(dim, l2)
    if pool.dim != dim:
        raise PriorError(f"pool of d={pool.dim}, expected d={dim}")
    s = min(1.0, m / pool.n)
    A = l2 * np.eye(dim) + s * pool.S
    A = (A + A.T) / 2
    try:
        np.linalg.cholesky(A)
    except np.linalg.LinAlgError:
        return init_state(dim, l2)  # a pool rounding made indefinite teaches nothing safe
    return ArmState(A_inv=np.linalg.inv(A), b=s * pool.t, n=0)
