"""The in-process snapshot: every product's parameters as stacked arrays, scored in one go.

A :class:`Snapshot` is immutable. The refresher builds a new one when parameters change
(copy-on-write) and swaps one reference, so a request never sees half an update and never
takes a lock: reading ``recommender.snapshot`` is atomic in CPython.

Scoring is the contract's UCB, ``x . theta + alpha * sqrt(x^T A^-1 x)``, for all m products at
once. Because A^-1 is symmetric, ``x^T A^-1 x = sum_{i<=j} c_ij A^-1_ij x_i x_j`` (c = 1 on
the diagonal, 2 off it): one (m, d(d+1)/2) x (d(d+1)/2,) matrix-vector product over the packed
upper triangles, which BLAS does in one call and which reads 120 numbers per product instead
of 225 (d = 15). It is the same number as :func:`contract.linucb.ucb_scores` to rounding
(tests/serving/test_serving_scoring.py checks it) and 2-3x faster than its einsum.

>>> snap = Snapshot.prior(["p0", "p1"], dim=2, l2=1.0)
>>> snap.versions.tolist(), snap.model_version
([0, 0], 0)
>>> snap.scores(np.array([1.0, 0.0]), alpha=1.0).tolist()
[1.0, 1.0]
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from contract import linucb
from contract.codec import Params


@functools.cache
def _triangle(d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Upper triangle (diagonal included) of a d x d matrix: row and column indices, flat
    indices, and weights (1 on the diagonal, 2 off it)."""
    rows, cols = np.triu_indices(d)
    return rows, cols, rows * d + cols, np.where(rows == cols, 1.0, 2.0)


@dataclass(frozen=True)
class Snapshot:
    """Parameters of all products, row i = ``product_ids[i]``.

    ``versions[i]`` is the product's version (its observation count n; 0 = the prior).
    ``model_version`` is their sum: monotone (versions never go down), and equal on every
    replica that has seen the same writes, so an impression names the model that scored it.
    ``synced_at`` is when the refresher last confirmed the snapshot matched Redis (monotonic
    seconds); its age is how stale the snapshot may be.
    """

    product_ids: tuple[str, ...]
    thetas: np.ndarray  # (m, d) float64, A^-1 b per product
    A_invs: np.ndarray  # (m, d, d) float64, C-contiguous
    versions: np.ndarray  # (m,) int64
    updated_at_ms: np.ndarray  # (m,) int64, when the job produced each row (0 = prior)
    synced_at: float = field(default_factory=time.monotonic)
    observations: np.ndarray | None = None  # (m,) int64, n per product (None: = versions)
    model_version: int = field(init=False)
    _A_packed: np.ndarray = field(init=False, repr=False)  # (m, d(d+1)/2) upper triangles
    _index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        m = len(self.product_ids)
        d = self.thetas.shape[1] if self.thetas.ndim == 2 else 0
        if self.thetas.shape != (m, d) or self.A_invs.shape != (m, d, d):
            raise ValueError(f"thetas {self.thetas.shape} / A_invs {self.A_invs.shape} do not "
                             f"match {m} products")
        if self.versions.shape != (m,) or self.updated_at_ms.shape != (m,):
            raise ValueError("versions/updated_at_ms must have one entry per product")
        object.__setattr__(self, "model_version", int(self.versions.sum()))
        if self.observations is None:  # n unknown: every update counted as an observation
            object.__setattr__(self, "observations", self.versions)
        elif self.observations.shape != (m,):
            raise ValueError("observations must have one entry per product")
        rows, cols, _flat, _weight = _triangle(d)
        object.__setattr__(self, "_A_packed", np.ascontiguousarray(self.A_invs[:, rows, cols]))
        object.__setattr__(self, "_index", {p: i for i, p in enumerate(self.product_ids)})

    @classmethod
    def prior(cls, product_ids: Sequence[str], dim: int, l2: float = 1.0) -> Snapshot:
        """Every product at the prior A = l2 I, b = 0 (scores 0 + alpha * |x| / sqrt(l2))."""
        if len(set(product_ids)) != len(product_ids):
            raise ValueError("product_ids: duplicates")
        m = len(product_ids)
        A_invs = np.broadcast_to(np.eye(dim) / l2, (m, dim, dim)).copy()
        return cls(tuple(product_ids), np.zeros((m, dim)), A_invs, np.zeros(m, dtype=np.int64),
                   np.zeros(m, dtype=np.int64))

    @classmethod
    def from_params(cls, product_ids: Sequence[str], dim: int, l2: float,
                    params: Mapping[str, Params], synced_at: float | None = None) -> Snapshot:
        """Exactly ``params`` over the prior, whatever their versions: what a replica starting
        now builds. The refresher replaces its snapshot with this when the store's epoch
        changes (a wiped or rolled-back store), where versions lower than the ones held are
        the truth and :meth:`with_params` would ignore them.

        >>> from contract.codec import Params
        >>> p = Params(linucb.ArmState(np.eye(2), np.ones(2), 3), updated_at_ms=1)
        >>> Snapshot.from_params(["p0", "p1"], 2, 1.0, {"p1": p}).versions.tolist()
        [0, 3]
        """
        return cls.prior(product_ids, dim, l2).with_params(params, synced_at)[0]

    # --- reading ---------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return int(self.thetas.shape[1])

    def __len__(self) -> int:
        return len(self.product_ids)

    def index(self, product_id: str) -> int | None:
        return self._index.get(product_id)

    def version_of(self, product_id: str) -> int | None:
        i = self._index.get(product_id)
        return None if i is None else int(self.versions[i])

    @property
    def clicks(self) -> np.ndarray:
        """(m,) clicks learned per product: ``version - n``. The job learns every shown
        product at once with reward 0 (``o0``) and each click as one reward correction
        (``a1``; docs/JOB_LINES.md), so the updates beyond the observations are the clicks:
        published in every value, exactly once, with no extra key."""
        return self.versions - self.observations  # type: ignore[operator]

    def age_s(self, now: float | None = None) -> float:
        return max(0.0, (time.monotonic() if now is None else now) - self.synced_at)

    def scores(self, x: np.ndarray, alpha: float) -> np.ndarray:
        """UCB of every product for context x (d,) -> (m,); alpha = 0 is the greedy mean."""
        return self.scores_and_mean(x, alpha)[0]

    def scores_and_mean(self, x: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
        """(UCB, mean theta.x) of every product: the mean comes free with the scores (the
        exploration health counter compares the two's best products)."""
        mean = self.thetas @ x  # (m,)
        if alpha == 0:
            return mean, mean
        _rows, _cols, flat, weight = _triangle(self.dim)
        xx = np.outer(x, x).ravel().take(flat)  # (d(d+1)/2,) x_i x_j for i <= j
        xx *= weight  # A^-1 is symmetric: each off-diagonal pair counts twice
        var = self._A_packed @ xx  # (m,) x^T A^-1 x per product
        np.maximum(var, 0.0, out=var)  # in place: no temporaries on the request path
        np.sqrt(var, out=var)
        var *= alpha
        var += mean
        return var, mean

    # --- changing (returns a new snapshot) ---------------------------------------------------
    def with_params(self, params: Mapping[str, Params], synced_at: float | None = None
                    ) -> tuple[Snapshot, list[str]]:
        """A snapshot with these products' parameters applied where strictly newer.

        Returns the new snapshot (``self`` when nothing changed, only re-stamped) and the
        product ids that changed. An older or equal version is ignored: a replayed or
        reordered value never moves a product backwards. Unknown products and values of
        another dimension are ignored too (the caller logs them).
        """
        rows: list[tuple[int, Params]] = []
        for pid, p in params.items():
            i = self._index.get(pid)
            if i is None or p.state.dim != self.dim or p.version <= self.versions[i]:
                continue
            if not (np.isfinite(p.state.A_inv).all() and np.isfinite(p.state.b).all()):
                continue  # a NaN would poison every ranking it takes part in
            rows.append((i, p))
        stamp = time.monotonic() if synced_at is None else synced_at
        if not rows:
            return self.restamped(stamp), []
        thetas, A_invs = self.thetas.copy(), self.A_invs.copy()
        versions, updated = self.versions.copy(), self.updated_at_ms.copy()
        observations = self.observations.copy()  # type: ignore[union-attr]
        for i, p in rows:
            A_invs[i] = p.state.A_inv
            thetas[i] = linucb.theta(p.state)
            versions[i] = p.version
            updated[i] = p.updated_at_ms
            observations[i] = p.state.n
        snap = Snapshot(self.product_ids, thetas, A_invs, versions, updated, synced_at=stamp,
                        observations=observations)
        return snap, [self.product_ids[i] for i, _ in rows]

    def restamped(self, synced_at: float) -> Snapshot:
        """The same parameters, confirmed in sync at ``synced_at`` (arrays are shared)."""
        if synced_at <= self.synced_at:
            return self
        snap = object.__new__(Snapshot)
        for name in ("product_ids", "thetas", "A_invs", "versions", "updated_at_ms",
                     "model_version", "_A_packed", "_index", "observations"):
            object.__setattr__(snap, name, getattr(self, name))
        object.__setattr__(snap, "synced_at", synced_at)
        return snap
