"""Disjoint LinUCB as pure numpy functions over explicit per-product state.

One ridge regression per product (arm). With observations (x_t, r_t) of an arm:

    A = l2 * I + sum_t x_t x_t^T        b = sum_t r_t x_t        theta = A^-1 b
    ucb(x) = x . theta + alpha * sqrt(x^T A^-1 x)

The state keeps A^-1 directly and updates it by Sherman-Morrison in O(d^2) per observation,

    (A + x x^T)^-1 = A^-1 - (A^-1 x)(A^-1 x)^T / (1 + x^T A^-1 x)

or, for a micro-batch X (k, d), by the Woodbury identity (one k x k solve instead of k rank-one
steps). Both are additive in the sufficient statistics, so the order of events does not change
the result beyond floating-point rounding; a replay gives the same matrices.

The job learns through :func:`learn_checked`, which refuses what float64 cannot hold: an item
whose ``x.x / l2`` exceeds :data:`LEARNABLE_XX_PER_L2` (checked per item, so the same items
are refused however they are batched), and a step whose A^-1 is not finite or not positive
definite (then the items are learned one at a time and only those whose own step fails are
refused). Refused items leave the state as it was; the job dead-letters them.

Weighted observations and forgetting (docs/LEARNING.md): an observation may carry a weight w,
``A += w x x^T`` (w < 0 removes one learned before: an exact downdate, refused when it would
leave A^-1 not positive definite), and a discount ``gamma`` in (0, 1] multiplies the old
statistics before each observation of positive weight, ``A <- gamma A + w x x^T``,
``b <- gamma b + r x``, so ``A^-1 <- A^-1 / gamma`` and then Sherman-Morrison:

    (A + w x x^T)^-1 = A^-1 - w (A^-1 x)(A^-1 x)^T / (1 + w x^T A^-1 x)

>>> s = init_state(2, l2=1.0)
>>> s = update(s, np.array([1.0, 0.0]), 1.0)
>>> s.A_inv.tolist(), s.b.tolist(), s.n
([[0.5, 0.0], [0.0, 1.0]], [1.0, 0.0], 1)
>>> theta(s).tolist()
[0.5, 0.0]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from contract.errors import RtrecError


class StateError(RtrecError, ValueError):
    """Arrays or counts that are not the statistics of one arm (shapes, counts, NaN or inf)."""


class NotLearnableError(StateError):
    """An item whose update float64 cannot hold (overflow, A^-1 no longer positive definite,
    or too few digits left); the state keeps its last good value."""


LEARNABLE_XX_PER_L2 = 1e10
"""Largest ``x.x / l2`` of an item :func:`learn_checked` learns. A step divides A^-1 along x by
``1 + x.A^-1.x <= 1 + x.x / l2`` and float64 keeps about ``16 - log10`` of that digits of it:
past 1e10 fewer than 6 (past ~1e154 the sums overflow). The shipped features (15 values in
[0, 1]) reach 15; ``RTREC_MAX_ABS_X``'s default 1000 at most 1.5e7."""


@dataclass(frozen=True)
class ArmState:
    """Sufficient statistics of one product; checked on construction, so a NaN or a wrong shape
    is refused where it appears instead of poisoning every ranking it later takes part in.

    ``version`` counts the updates applied (observations and reward corrections); it only
    grows, and a replay of the same events reaches the same version whatever the batching,
    so it orders the values published to Redis. ``None`` (omitted) means no corrections yet:
    it becomes ``n``, so after construction it is always an int with ``0 <= n <= version``.
    ``A_inv`` and ``b`` are stored as float64 arrays.
    """

    A_inv: np.ndarray  # (d, d) float64, inverse of l2*I + X^T X
    b: np.ndarray  # (d,) float64, X^T r
    n: int  # observations learned
    version: int | None = None

    def __post_init__(self) -> None:
        A_inv = np.asarray(self.A_inv, dtype=np.float64)
        b = np.asarray(self.b, dtype=np.float64)
        d = b.shape[0] if b.ndim == 1 else 0
        if d < 1 or A_inv.shape != (d, d):
            raise StateError(f"shapes: A_inv {A_inv.shape} and b {b.shape} are not (d, d) "
                             f"and (d,) with d >= 1")
        n = self.n if type(self.n) is int and self.n >= 0 else _count(self.n, "n")
        version = self.version
        if version is None:
            version = n
        elif type(version) is not int or version < 0:
            version = _count(version, "version")
        if version < n:
            raise StateError(f"version {version} < n {n}: every observation is an update")
        if not all_finite(A_inv, b):
            raise StateError("A_inv and b must be finite (a NaN or inf would poison rankings)")
        if A_inv is not self.A_inv:
            object.__setattr__(self, "A_inv", A_inv)
        if b is not self.b:
            object.__setattr__(self, "b", b)
        if n is not self.n:
            object.__setattr__(self, "n", n)
        if version is not self.version:
            object.__setattr__(self, "version", version)

    @property
    def dim(self) -> int:
        return int(self.b.shape[0])


def _count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise StateError(f"{name}: expected an integer, got {type(value).__name__}")
    if value < 0:
        raise StateError(f"{name}: {value} < 0")
    return int(value)


def all_finite(A_inv: np.ndarray, b: np.ndarray) -> bool:
    """True when no entry is NaN or inf (ArmState's check, and the codec's before it writes)."""
    # a dot product (one BLAS call, and no overflow warning) is NaN or inf when any entry is;
    # it also overflows for entries beyond ~1e154, so then each entry is asked
    if math.isfinite(np.vdot(A_inv, A_inv)) and math.isfinite(np.vdot(b, b)):
        return True
    return bool(np.isfinite(A_inv).all() and np.isfinite(b).all())


def init_state(dim: int, l2: float = 1.0) -> ArmState:
    """The prior: A = l2 I, b = 0 (what a product never seen scores from)."""
    if dim < 1:
        raise StateError(f"dim must be >= 1, got {dim}")
    if not l2 > 0:
        raise StateError(f"l2 must be > 0, got {l2}")
    return ArmState(A_inv=np.eye(dim) / l2, b=np.zeros(dim), n=0)


def sherman_morrison(A_inv: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(A + x x^T)^-1 from A^-1 in O(d^2). A^-1 (d, d) symmetric, x (d,)."""
    Ax = A_inv @ x  # (d,)
    return A_inv - np.outer(Ax, Ax) / (1.0 + x @ Ax)


def woodbury(A_inv: np.ndarray, X: np.ndarray) -> np.ndarray:
    """(A + X^T X)^-1 from A^-1 for a batch X (k, d): one k x k solve."""
    AX = A_inv @ X.T  # (d, k)
    S = np.eye(X.shape[0]) + X @ AX  # (k, k), symmetric positive definite
    return A_inv - AX @ np.linalg.solve(S, AX.T)


def update(state: ArmState, x: np.ndarray, reward: float) -> ArmState:
    """Learn one observation (x, reward)."""
    x = np.asarray(x, dtype=np.float64)
    return ArmState(A_inv=sherman_morrison(state.A_inv, x), b=state.b + reward * x, n=state.n + 1,
                    version=state.version + 1)


def add_reward(state: ArmState, x: np.ndarray, reward: float) -> ArmState:
    """Add ``reward * x`` to b for an observation already learned with reward 0.

    This is how the job learns without waiting for the reward window: each shown product is
    learned at once with the default reward 0 (A and n change), and a click that arrives
    within the window adds its reward here. The sums end where waiting would have put them.
    """
    x = np.asarray(x, dtype=np.float64)
    return ArmState(A_inv=state.A_inv, b=state.b + reward * x, n=state.n,
                    version=state.version + 1)


def weighted_sherman_morrison(A_inv: np.ndarray, x: np.ndarray, w: float) -> np.ndarray:
    """(A + w x x^T)^-1 from A^-1; w < 0 is a downdate. Raises :class:`NotLearnableError`
    when ``1 + w x^T A^-1 x <= 0`` (A + w x x^T would not be positive definite: the
    observation removed was never learned, or rounding took over)."""
    Ax = A_inv @ x
    denom = 1.0 + w * (x @ Ax)
    if not denom > 1e-12:
        raise NotLearnableError(f"weight {w:g}: 1 + w x.A^-1.x = {denom:.6g} <= 0, A^-1 would "
                                f"not be positive definite (a downdate of what was not learned)")
    return A_inv - (w / denom) * np.outer(Ax, Ax)


def weighted_woodbury(A_inv: np.ndarray, X: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(A + X^T diag(w) X)^-1 from A^-1 for rows X (k, d) of weights w (k,), any sign:
    ``A^-1 - A^-1 X^T (I + W X A^-1 X^T)^-1 W X A^-1`` (one k x k solve)."""
    AX = A_inv @ X.T  # (d, k)
    S = np.eye(X.shape[0]) + w[:, None] * (X @ AX)
    return A_inv - AX @ np.linalg.solve(S, w[:, None] * AX.T)


def downdate(state: ArmState, x: np.ndarray, reward: float) -> ArmState:
    """Remove an observation (x, reward) learned before: ``A -= x x^T``, ``b -= reward x``,
    ``n -= 1`` (exact unlearning; :class:`NotLearnableError` when A^-1 would not stay
    positive definite, :class:`StateError` when n would go below 0)."""
    x = np.asarray(x, dtype=np.float64).reshape(1, -1)
    return learn_batch(state, x, np.array([-reward]), np.array([True]),
                       weights=np.array([-1.0]))


def discount_factor(half_life: float) -> float:
    """gamma = 2^(-1/half_life): the weight of an observation halves after ``half_life`` later
    observations of the same product; 0 or inf means no forgetting (1.0)."""
    if half_life == 0 or math.isinf(half_life):
        return 1.0
    if not half_life > 0:
        raise StateError(f"half-life must be > 0 (or 0 for none), got {half_life}")
    return 2.0 ** (-1.0 / half_life)


def update_batch(state: ArmState, X: np.ndarray, rewards: np.ndarray) -> ArmState:
    """Learn k observations at once (rows of X (k, d), rewards (k,)) by Woodbury."""
    X = np.asarray(X, dtype=np.float64).reshape(-1, state.dim)
    return learn_batch(state, X, rewards, np.ones(X.shape[0], dtype=bool))


def learn_batch(state: ArmState, X: np.ndarray, rewards: np.ndarray,
                observe: np.ndarray, weights: np.ndarray | None = None,
                gamma: float = 1.0) -> ArmState:
    """Learn a micro-batch of items in one step: rows of X (k, d) with their rewards (k,);
    ``observe[i]`` True for an observation (A, n and b change, as :func:`update`), False for a
    reward added to one already learned (only b, as :func:`add_reward`).

    ``weights`` (k,), None for all 1: an observation adds ``w x x^T`` to A (w < 0 removes
    one: n goes down by one; w = 0 leaves A and n alone) while every item adds ``r x`` to b,
    the reward as given. ``gamma`` < 1 forgets: each observation of positive weight first
    multiplies A and b by gamma, in item order (:func:`learn_weighted`).

    Without weights and discount, the same sums as applying the items one by one, in any
    order (up to rounding). A^-1 moves by Woodbury in chunks of at most d rows, so a large
    batch costs O(k d^2), not O(k^3).
    """
    X = np.asarray(X, dtype=np.float64).reshape(-1, state.dim)
    rewards = np.asarray(rewards, dtype=np.float64).reshape(-1)
    observe = np.asarray(observe, dtype=bool).reshape(-1)
    k = X.shape[0]
    if k == 0:
        return state
    if weights is not None or gamma != 1.0:
        w = np.ones(k) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
        return learn_weighted(state, X, rewards, observe, w, gamma)
    n_obs = int(np.count_nonzero(observe))
    # no boolean-index copy when the items are all of one kind (the usual batch)
    obs = X if n_obs == k else X[observe] if n_obs else X[:0]
    A_inv = state.A_inv
    for i in range(0, obs.shape[0], state.dim):
        chunk = obs[i:i + state.dim]
        A_inv = sherman_morrison(A_inv, chunk[0]) if chunk.shape[0] == 1 \
            else woodbury(A_inv, chunk)
    return ArmState(A_inv=A_inv, b=state.b + rewards @ X, n=state.n + n_obs,
                    version=state.version + k)


def learn_weighted(state: ArmState, X: np.ndarray, rewards: np.ndarray, observe: np.ndarray,
                   w: np.ndarray, gamma: float) -> ArmState:
    """:func:`learn_batch` with weights and a discount, exactly the items applied one by one:
    item j's contribution is multiplied by ``gamma^m_j``, m_j the observations of positive
    weight after it in the batch, and the old state by ``gamma^M`` (M all of them), so

        A^-1 <- gamma^-M A^-1, then Woodbury with the weights w_j gamma^m_j
        b    <- gamma^M b + sum_j gamma^m_j r_j x_j
    """
    if w.shape != (X.shape[0],) or not np.isfinite(w).all():
        raise StateError(f"weights: expected {X.shape[0]} finite values")
    if not 0 < gamma <= 1:
        raise StateError(f"discount gamma must be in (0, 1], got {gamma}")
    obs = observe & (w != 0)
    if gamma != 1.0:
        forget = obs & (w > 0)
        after = int(np.count_nonzero(forget)) - np.cumsum(forget)  # positive obs after j
        scale = gamma ** after
        total = gamma ** int(np.count_nonzero(forget))
    else:
        scale = np.ones(X.shape[0])
        total = 1.0
    A_inv = state.A_inv / total if total != 1.0 else state.A_inv
    Xo, wo = X[obs], (w * scale)[obs]
    if Xo.shape[0] == 1 or (wo < 0).any():
        # one at a time: a downdate's own step is checked (1 + w x.A^-1.x > 0)
        for x, wj in zip(Xo, wo, strict=True):
            A_inv = weighted_sherman_morrison(A_inv, x, float(wj))
    else:
        for i in range(0, Xo.shape[0], state.dim):
            A_inv = weighted_woodbury(A_inv, Xo[i:i + state.dim], wo[i:i + state.dim])
    b = state.b * total + (rewards * scale) @ X
    dn = int(np.count_nonzero(obs & (w > 0))) - int(np.count_nonzero(obs & (w < 0)))
    if state.n + dn < 0:
        raise StateError(f"n would be {state.n + dn} < 0: a downdate of what was not learned")
    return ArmState(A_inv=A_inv, b=b, n=state.n + dn, version=state.version + X.shape[0])


def check_learned(state: ArmState) -> None:
    """Raise :class:`NotLearnableError` unless ``state.A_inv`` is positive definite (finite it is,
    by construction): the inverse of ``l2 I + X^T X`` always is, so a step that loses it has
    lost the matrix to rounding."""
    try:
        np.linalg.cholesky(state.A_inv)
    except np.linalg.LinAlgError:
        raise NotLearnableError("A^-1 would not be positive definite (rounding took over)") \
            from None


def learn_checked(state: ArmState, X: np.ndarray, rewards: np.ndarray, observe: np.ndarray,
                  l2: float, weights: np.ndarray | None = None,
                  gamma: float = 1.0) -> tuple[ArmState, list[tuple[int, str]]]:
    """:func:`learn_batch` for the job: returns the new state and the refused items, as
    ``(index, why)`` in index order; what is refused is not learned (docs/JOB.md).
    ``weights`` and ``gamma`` as in :func:`learn_batch`; a downdate whose step would leave
    A^-1 not positive definite is refused like any other failing step.

    An item is refused when its x or reward is not finite or ``x.x > LEARNABLE_XX_PER_L2 * l2``
    (per item, so batching cannot change it), or when, learned one at a time after the batch's
    step failed, its own step leaves A^-1 not finite or not positive definite.

    >>> s, refused = learn_checked(init_state(2), np.array([[1.0, 0.0], [1e154, 0.0]]),
    ...                            np.array([1.0, 0.0]), np.array([True, True]), l2=1.0)
    >>> s.n, s.b.tolist(), [i for i, _ in refused]
    (1, [1.0, 0.0], [1])
    """
    X = np.asarray(X, dtype=np.float64).reshape(-1, state.dim)
    rewards = np.asarray(rewards, dtype=np.float64).reshape(-1)
    observe = np.asarray(observe, dtype=bool).reshape(-1)
    limit = LEARNABLE_XX_PER_L2 * l2
    refused: list[tuple[int, str]] = []
    # fast path: one dot product bounds every row (and is NaN or inf when any entry is)
    xx_all = float(np.vdot(X, X)) if X.size else 0.0
    if not (xx_all <= limit and math.isfinite(float(np.vdot(rewards, rewards)))):
        with np.errstate(over="ignore", invalid="ignore"):
            xx = np.einsum("ij,ij->i", X, X)
        for i in range(X.shape[0]):
            if not math.isfinite(rewards[i]):
                refused.append((i, f"reward {rewards[i]} is not finite"))
            elif not xx[i] <= limit:  # NaN and inf compare False
                refused.append((i, f"x.x = {xx[i]:.6g} > {LEARNABLE_XX_PER_L2:g} * l2 {l2:g}: "
                                   f"float64 cannot learn it (max |x_i| "
                                   f"{float(np.max(np.abs(X[i]))):.6g})"))
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float64).reshape(-1)
        known = {i for i, _ in refused}
        for i in np.flatnonzero(~np.isfinite(weights)):
            if int(i) not in known:
                refused.append((int(i), f"weight {weights[i]} is not finite"))
        refused.sort()
    if refused:
        keep = np.ones(X.shape[0], dtype=bool)
        keep[[i for i, _ in refused]] = False
        index = np.flatnonzero(keep)
        X, rewards, observe = X[keep], rewards[keep], observe[keep]
        if weights is not None:
            weights = weights[keep]
    else:
        index = None
    try:
        new = learn_batch(state, X, rewards, observe, weights, gamma)
        check_learned(new)
        return new, refused
    except StateError:
        pass
    # the batch's step failed: one item at a time, refusing only those whose own step fails
    st = state
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for j in range(X.shape[0]):
            try:
                nxt = learn_batch(st, X[j:j + 1], rewards[j:j + 1], observe[j:j + 1],
                                  None if weights is None else weights[j:j + 1], gamma)
                check_learned(nxt)
            except StateError as exc:
                refused.append((int(index[j]) if index is not None else j, str(exc)))
                continue
            st = nxt
    refused.sort()
    return st, refused


def theta(state: ArmState) -> np.ndarray:
    """Ridge coefficients A^-1 b, shape (d,)."""
    return state.A_inv @ state.b


def ucb_scores(thetas: np.ndarray, A_invs: np.ndarray, x: np.ndarray, alpha: float) -> np.ndarray:
    """UCB of every arm for one context in one vectorised expression.

    thetas (m, d), A_invs (m, d, d), x (d,) -> (m,). alpha = 0 gives the greedy estimate.
    """
    mean = thetas @ x  # (m,)
    if alpha == 0:
        return mean
    var = np.einsum("mij,i,j->m", A_invs, x, x, optimize=False)  # x^T A^-1 x per arm
    return mean + alpha * np.sqrt(np.maximum(var, 0.0))


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest scores, best first; ties broken by the lower index."""
    k = min(k, scores.shape[0])
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    idx = np.argpartition(-scores, k - 1)[:k] if k < scores.shape[0] else np.arange(k)
    return idx[np.lexsort((idx, -scores[idx]))]
