"""The in-process snapshot: every product's parameters as rows of preallocated arrays, scored
in one go, updated in O(changed products).

A :class:`Snapshot` is immutable for its readers: a request reads ``recommender.snapshot``
once (one reference, atomic in CPython) and every number it uses afterwards belongs to that
snapshot, without a lock. Underneath, the snapshots of one lineage share a row store
(:class:`_Rows`): arrays with a few spare rows beyond the products. A snapshot is a small
index object - which row holds each product (``_slot``, (m,) ints) - over that store.
Applying parameter updates (:meth:`Snapshot.with_params`) writes each changed product into a
*free* row, one that no live snapshot points at, copies the row index with those entries
changed, and returns the new snapshot: the refresher then swaps one reference. Rows a live
snapshot points at are never written, so a reader never sees half a row; the rows an update
replaced become free again once every snapshot older than it has been dropped (counted by the
snapshots' ``__del__``; CPython frees a request's snapshot when the request returns). If the
spare rows run out (a reader holding an old snapshot for long), the store is copied into a
bigger one - the old snapshots keep the old arrays - so the cost per update is O(changed) and
the rare growth is amortised.

Scoring is the contract's UCB, ``x . theta + alpha * sqrt(x^T A^-1 x)``, for all m products at
once. Because A^-1 is symmetric, ``x^T A^-1 x = sum_{i<=j} c_ij A^-1_ij x_i x_j`` (c = 1 on
the diagonal, 2 off it): each row keeps theta and the packed upper triangle with c already
multiplied in, side by side, so one matrix-vector product each over the store (BLAS, 135
numbers per product for d = 15) gives the means and the variances; a gather by ``_slot``
picks the products' rows. The strictly lower triangle is kept in a second array that scoring
never reads, so :attr:`Snapshot.A_invs` gives back exactly the matrices published (the job's
A^-1 may differ from its transpose in the last bits). It is the same number as
:func:`contract.linucb.ucb_scores` to rounding (tests/serving/test_serving_scoring.py).

The pass is memory-bound at 100,000 products (it reads every row per request), so the rows
it reads are float32 (``theta32`` and ``avar32``): half the bytes. Each number's float64
value is kept exactly
as the float32 nearest plus an int32 rest (``low``: a multiple of the float64 step, see
:func:`_split`; the rare row they cannot hold - beyond float32's range or below its normal
numbers - keeps its float64 row aside), so every number read back is the published one.
:meth:`Snapshot.top_scores` (what requests rank with) scores every product in float32, then
re-scores from the exact float64 rows every product whose float64 score could be among the
best k, by a proven bound on the float32 error: the best k, their order, scores and ties
are float64's (tests/serving/test_serving_float32.py). A plain request (``only_best``: it
takes the best k and nothing else) mostly skips the A^-1 rows: each row keeps three numbers
that bound x^T A^-1 x for every x (``vbound``: A^-1 along a fixed direction, across it, and
a bound of its largest eigenvalue), so the mean pass (15 of the 135 numbers) bounds every
score from above, and only the products whose bound reaches a floor for the k-th best
score are scored further (:meth:`Snapshot._pruned`). A store of at most
``EXACT_STORE_ROWS`` rows also keeps float64 rows and scores in float64 as before: it fits
in the cache, where float32 saves nothing.

Memory per row: 4 + 4 bytes for each of theta (d) and A^-1's upper triangle (d(d+1)/2)
(float32 + int32 rest), 4 for each of the strictly lower triangle's differences from the
upper one (d(d-1)/2), 40 for the version, time, observation count and the calibrated rule's
two terms, 24 for ``vbound``: 1,564 bytes at d = 15, 0.80 of the published value (1,956 bytes);
plus 8 bytes of row index per product and snapshot alive (docs/SERVING.md, "How parameter
updates apply").
A small store's float64 rows add 8 per number (2,620 bytes a row, at most 43 MB).

>>> snap = Snapshot.prior(["p0", "p1"], dim=2, l2=1.0)
>>> snap.versions.tolist(), snap.model_version
([0, 0], 0)
>>> snap.scores(np.array([1.0, 0.0]), alpha=1.0).tolist()
[1.0, 1.0]
"""

from __future__ import annotations

import functools
import itertools
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from contract import exploration
from contract.codec import ParamBatch, Params

_V, _T, _N = 0, 1, 2  # the meta columns: version, updated_at_ms, observations
_GENERATIONS = itertools.count(1)  # unique across stores: caches key on it
_INDEX_LOCK = threading.Lock()


@functools.cache
def _triangle(d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Upper triangle (diagonal included) of a d x d matrix: row and column indices, its
    weights (1 on the diagonal, 2 off it), and the strictly lower triangle's row and column
    indices."""
    rows, cols = np.triu_indices(d)
    lrows, lcols = np.tril_indices(d, -1)
    return rows, cols, np.where(rows == cols, 1.0, 2.0), lrows, lcols


EXACT_STORE_ROWS = 16_384  # a store of at most this many rows keeps its float64 rows too
WRITTEN_KEPT = 1024  # an update of at most this many products keeps their inverses (<= 3.7 MB)
_EXPONENT = np.int32(0x7F800000)
_U32 = 2.0 ** -24  # float32's unit roundoff


def _unit(hi: np.ndarray) -> np.ndarray:
    """2^(e - 53) for each float32 ``hi`` = 1.f x 2^e (0 for zeros and subnormals): the step
    of the float64 rest ``low`` counts. A float64 within half a float32 step of hi is hi plus
    a multiple of it no larger than 2^29 (below hi's binade the float64 step is that small)."""
    return (hi.view(np.int32) & _EXPONENT).view(np.float32).astype(np.float64) * 2.0 ** -53


def _split(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float64 numbers -> (float32 nearest, int32 rest, rows held exactly): ``_join`` of the
    two gives every number of a held row back bit for bit (not held: beyond float32's range,
    below its normal numbers, or not finite)."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        hi = v.astype(np.float32)
        hi64, unit = hi.astype(np.float64), _unit(hi)
        q = (v - hi64) / unit
        low = np.where(np.abs(q) < 2.0 ** 31, q, 0.0).astype(np.int32)
        whole = (hi64 + low * unit == v).all(axis=1)  # _join, with its parts at hand
    return hi, low, whole


def _join(hi: np.ndarray, low: np.ndarray) -> np.ndarray:
    """The float64 numbers ``_split`` took apart (exact: a power-of-two multiple of an int
    below 2^31, added to a float64 it is within half a float32 step of)."""
    with np.errstate(invalid="ignore"):
        return hi.astype(np.float64) + low * _unit(hi)


def _gamma(n: int) -> float:
    """Bound on the relative error of an n-term float32 dot product, any summation order
    (Higham's gamma_n), doubled: it also covers the float64 rounding of the exact pass."""
    return 2.0 * n * _U32 / (1.0 - n * _U32)


def _pairs(x: np.ndarray) -> np.ndarray:
    """x_i x_j for i <= j (the 2 off the diagonal is in the rows)."""
    r, c, _w, _lr, _lc = _triangle(x.shape[0])
    xx = x.take(r)
    xx *= x.take(c)
    return xx


def _weighted(weight: float | np.ndarray) -> bool:
    """Whether a weight of v (one float, or one per product) adds anything."""
    return bool(weight.any()) if isinstance(weight, np.ndarray) else bool(weight)


def _per_product(weight: Any) -> bool:
    """Whether ``weight`` is one per product (an array, or :class:`GroupWeights`)."""
    return isinstance(weight, np.ndarray | GroupWeights)


@functools.cache
def _direction(d: int) -> np.ndarray:
    """The unit vector the variance bound splits x along: all features alike (contexts are
    non-negative features, so most of a context lies along it)."""
    return np.full(d, 1.0 / np.sqrt(d))


def _vbound(A_invs: np.ndarray) -> np.ndarray:
    """(k, 3) per row (a, r, vmax) for S = the symmetric matrix of A^-1's upper triangle
    (what scoring reads) and e = _direction(d): a = e^T S e, r = |S e - a e| and vmax, an
    upper bound of S's largest eigenvalue - the smaller of the largest absolute row sum
    (Gershgorin) and the Frobenius norm (both bound the spectral radius), raised by 1e-9 of
    itself. Writing x = c e + y (y orthogonal to e, s = |y|):
    x^T S x = c^2 a + 2 c y^T S e + y^T S y <= c^2 a + 2 |c| s r + s^2 vmax; top_scores adds
    1e-12 vmax |x|^2 for the roundings (of a, r, c, s, this sum and float64's x^T S x: each
    below 1e-13 vmax |x|^2 at d = 15, as |a|, r <= the spectral radius). Not finite for a
    row that is not: no pruning can exclude it."""
    _r, _c, _w, lr, lc = _triangle(A_invs.shape[1])
    sym = A_invs.copy()
    sym[:, lr, lc] = A_invs[:, lc, lr]  # the upper triangle mirrored (two triu's cost more)
    e = _direction(A_invs.shape[1])
    out = np.empty((A_invs.shape[0], 3))
    with np.errstate(over="ignore", invalid="ignore"):
        gersh = np.abs(sym).sum(axis=2).max(axis=1, initial=0.0)
        frob = np.sqrt((sym * sym).sum(axis=(1, 2)))
        out[:, 2] = np.fmin(gersh, frob) * (1.0 + 1e-9)
        se = sym @ e
        out[:, 0] = se @ e
        out[:, 1] = np.sqrt(((se - out[:, :1] * e) ** 2).sum(axis=1))
    out[~np.isfinite(out).all(axis=1)] = (np.inf, np.inf, np.inf)
    return out


def _combine(mean: np.ndarray, var: np.ndarray, alpha: float,
             weight: float | np.ndarray) -> np.ndarray:
    """mean + alpha sqrt(v) + weight v, v = max(var, 0), written over ``var`` (a fresh array,
    or ``mean`` itself when neither term is asked for): the same operations for the float32
    pass, its exact re-scoring and the float64 one (equal inputs, equal scores: ties stay
    ties), and no temporaries on the request path. ``weight`` is one float or one per
    product (aligned with ``mean``): elementwise, the same operations either way."""
    if not alpha and not _weighted(weight):
        return mean.copy()
    v = np.maximum(var, 0.0, out=var)
    if not _weighted(weight):
        np.sqrt(v, out=v)
        v *= alpha
        v += mean
        return v
    out = mean.copy()
    if alpha:
        out += alpha * np.sqrt(v)
    v *= weight
    out += v
    return out


class GroupWeights:
    """One weight per product given as one per group (a category rule's weight of v:
    ``values[codes[i]]``, code -1 or a product beyond ``codes`` taking the last value), so a
    plain request need not build the (m,) array: :meth:`Snapshot.top_scores` bounds every
    product with the largest weight and gathers only its candidates' (``w[idx]``); the
    whole array is made (:meth:`full`) only where every product is scored.

    ``present``: the codes some product of the first m has (-1 included when one has
    none), so :attr:`top_abs`, :attr:`upper` and :attr:`nonzero` are those of the (m,)
    array, without a pass over it."""

    __slots__ = ("codes", "m", "nonzero", "present", "top_abs", "upper", "values")

    def __init__(self, values: np.ndarray, codes: np.ndarray, present: np.ndarray,
                 m: int) -> None:
        self.values = np.asarray(values, dtype=np.float64)  # (groups + 1,): the last, none
        self.codes, self.m, self.present = codes, m, present
        used = self.values[present]
        self.top_abs = float(np.abs(used).max(initial=0.0))
        self.upper = float(used.max(initial=0.0))  # of the weights >= 0: the bound's
        self.nonzero = bool(used.any())

    def __getitem__(self, idx: np.ndarray | int) -> Any:
        """The weights of products ``idx`` (an index array; one index: one float)."""
        if isinstance(idx, int | np.integer):
            return float(self[np.array([idx])][0])
        idx = np.asarray(idx, dtype=np.intp)
        n = self.codes.shape[0]
        if idx.size and int(idx.max()) >= n:
            code = np.full(idx.size, -1, dtype=np.int64)
            inside = idx < n
            code[inside] = self.codes[idx[inside]]
            return self.values.take(code)
        return self.values.take(self.codes.take(idx))

    def full(self, m: int | None = None) -> np.ndarray:
        """(m,) float64: every product's weight (one gather)."""
        m = self.m if m is None else m
        n = self.codes.shape[0]
        if n >= m:
            return self.values.take(self.codes[:m])
        out = np.full(m, self.values[-1])
        out[:n] = self.values.take(self.codes)
        return out


def spare_rows(m: int) -> int:
    """Rows kept free beyond the products: updates land there while readers hold the rows they
    replace (m // 64, at least 64: 1,562 rows at 100,000 products, 1.6% more memory). A store
    whose spare rows run out is copied into one with twice the spare rows."""
    return max(64, m // 64)


def trim_heap() -> None:
    """Give the heap freed by building a whole store back to the OS (glibc's malloc_trim; a
    no-op elsewhere): the build's temporaries would otherwise stay in the process's
    resident memory, about a tenth of the store at 100,000 products."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            import ctypes

            _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim: Any = None

# The writer (the refresher's thread) runs Python under the GIL that requests need, and its
# numpy calls on a few products are too small to let a waiting thread in: a backlog would
# hold it until the interpreter's 5 ms switch, a sum afresh of the category pools for ~1 s.
# It gives the GIL up after each YIELD_EVERY values decoded (one contract.codec.decode_many
# call), between swaps of at most APPLY_CHUNK
# products and between a sum's chunks. Not within a steady-state batch (~20 products): each
# hand-over costs the writer its caches (measured: 15-25% more CPU per update with yields
# every 16 values and before the listeners, no lower p99; docs/SERVING.md run 11).
YIELD_EVERY = 64
APPLY_CHUNK = 64
_YIELD_S = 50e-6  # long enough for a thread waiting on the GIL to take it


def yield_gil() -> None:
    """Let a thread waiting for the GIL run (a sleep releases it; ``sleep(0)`` alone is
    usually taken back before the waiting thread wakes)."""
    time.sleep(_YIELD_S)


class _Rows:
    """The row store a lineage of snapshots shares (written only under ``lock``, by
    :meth:`Snapshot.with_params` and :meth:`Snapshot.with_products`; readers never lock)."""

    def __init__(self, d: int, capacity: int) -> None:
        t = d * (d + 1) // 2
        self.d = d
        # theta | weighted upper triangle of A^-1, rounded to float32: what the scoring pass
        # reads (half the bytes of float64), as two arrays so the mean pass reads only the
        # thetas (60 of the 540 bytes a row: rows.hot is the two side by side); ``low`` holds
        # each number's float64 rest exactly (_split), and a row the two do not hold exactly
        # keeps its float64 in ``exact_hot``
        self.theta32 = np.zeros((capacity, d), dtype=np.float32)
        self.avar32 = np.zeros((capacity, t), dtype=np.float32)
        self.low = np.zeros((capacity, d + t), dtype=np.int32)
        # per row, what bounds x^T A^-1 x for every x (see _vbound): e^T A^-1 e, the rest of
        # A^-1 e, and an upper bound of A^-1's largest eigenvalue (vmax, a view);
        # top_scores prunes by it
        self.vbound = np.zeros((capacity, 3))
        self.vmax = self.vbound[:, 2]
        self.unbounded = False  # a row without a finite bound was ever written (never lowered)
        self.exact_hot: dict[int, np.ndarray] = {}
        # a small store also keeps the float64 rows, scored exactly as before: it fits in the
        # cache, where the float32 pass saves nothing and its refinement would cost
        self.hot64 = np.zeros((capacity, d + t)) if capacity <= EXACT_STORE_ROWS else None
        # largest |theta| and |weighted A^-1| entry ever written (never lowered: a bound for
        # every row of every snapshot of this store): the float32 pass's error bound
        self.bound = (0.0, 0.0)
        # the strictly lower triangle of A^-1 as its difference from the upper one's mirror:
        # float32 holds that difference exactly (0 for a symmetric A^-1, a few units of the
        # last place for a Woodbury update's rounding); a row it does not hold exactly keeps
        # its lower triangle in ``exact``
        self.cold = np.zeros((capacity, d * (d - 1) // 2), dtype=np.float32)
        self.exact: dict[int, np.ndarray] = {}
        self.meta = np.zeros((capacity, 3), dtype=np.int64)  # version, updated_at_ms, n
        self.terms = np.zeros((capacity, 2))  # exploration.count_terms per row
        self.free: list[int] = list(range(capacity - 1, -1, -1))
        self.pending: deque[tuple[int, np.ndarray]] = deque()  # (generation, rows it freed)
        self.head = next(_GENERATIONS)  # newest generation
        self.live: dict[int, int] = {}  # generation -> snapshot objects alive
        self.born: deque[int] = deque()  # appended by constructors and __del__ (atomic)
        self.died: deque[int] = deque()
        self.lock = threading.Lock()

    @property
    def capacity(self) -> int:
        return self.theta32.shape[0]

    @property
    def hot(self) -> np.ndarray:
        """theta | weighted upper triangle in float32, side by side (a copy, for checks)."""
        return np.hstack([self.theta32, self.avar32])

    def var_bound(self, xv: np.ndarray) -> np.ndarray:
        """(capacity,) an upper bound of xv^T A^-1 xv for every row, as float64 computes it
        (see _vbound): one (capacity, 3) product, no A^-1 row read."""
        e = _direction(xv.shape[0])
        c = float(xv @ e)
        s2 = float(((xv - c * e) ** 2).sum())
        coef = np.array([c * c, 2.0 * abs(c) * np.sqrt(s2), s2 + 1e-12 * float(xv @ xv)])
        return self.vbound @ coef

    def exact_rows(self, rows: np.ndarray) -> np.ndarray:
        """The float64 numbers (theta | weighted upper triangle) of these rows, exactly as
        written: (k, d + t)."""
        if self.hot64 is not None:
            return self.hot64[rows]
        out = _join(np.hstack([self.theta32[rows], self.avar32[rows]]), self.low[rows])
        held = self.exact_hot
        for j, q in enumerate(rows.tolist()) if held else ():
            v = held.get(q)
            if v is not None:
                out[j] = v
        return out

    def write(self, rows: np.ndarray, thetas: np.ndarray, A_invs: np.ndarray,
              meta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Fill these (free) rows: thetas (k, d), A_invs (k, d, d), meta (k, 3). Returns
        the inverses it computed, ``exploration.inverses(A_invs)``."""
        d = self.d
        r, c, w, lr, lc = _triangle(d)
        vals = np.empty((rows.size, self.low.shape[1]))
        vals[:, :d] = thetas
        vals[:, d:] = A_invs[:, r, c] * w
        hi, low, whole = _split(vals)
        if rows.size:
            with np.errstate(invalid="ignore"):
                top = (float(np.abs(vals[:, :d]).max(initial=0.0)),
                       float(np.abs(vals[:, d:]).max(initial=0.0)))
            b = self.bound  # raised before any snapshot can point at these rows
            self.bound = (max(b[0], top[0]) if top[0] == top[0] else np.inf,
                          max(b[1], top[1]) if top[1] == top[1] else np.inf)
        self.theta32[rows] = hi[:, :d]
        self.avar32[rows] = hi[:, d:]
        self.low[rows] = low
        vb = _vbound(A_invs)
        self.vbound[rows] = vb
        if not self.unbounded and not np.isfinite(vb).all():
            self.unbounded = True
        if self.hot64 is not None:
            self.hot64[rows] = vals
        for j, q in enumerate(rows.tolist()):
            if whole[j]:
                self.exact_hot.pop(q, None)
            else:
                self.exact_hot[q] = vals[j].copy()
        lower, mirror = A_invs[:, lr, lc], A_invs[:, lc, lr]
        delta = (lower - mirror).astype(np.float32)
        held = (mirror + delta == lower).all(axis=1)
        self.cold[rows] = delta
        for j, r in enumerate(rows.tolist()):  # rows are free: no reader looks at them
            if held[j]:
                self.exact.pop(r, None)
            else:
                self.exact[r] = lower[j].copy()
        self.meta[rows] = meta
        # A = A_inv^-1, inverted once: the count terms here, the category pools' new shares
        # (Snapshot.params_and_inverses) after; a singular A^-1 (not a valid value) counts
        # nothing
        A, ok = exploration.inverses(A_invs)
        terms = exploration.count_terms(thetas, A_invs, inverse=A)
        terms[~ok] = 0.0
        self.terms[rows] = terms
        return A, ok

    def reclaim(self) -> None:
        """Rows replaced by generation g are free once no snapshot older than g is alive."""
        live = self.live
        # deaths first: a snapshot born after the births are read was made (restamped) from
        # one alive then, whose death is read no earlier than the next call
        for q, step in ((self.died, -1), (self.born, 1)):
            while q:
                g = q.popleft()
                n = live.get(g, 0) + step
                if n:
                    live[g] = n
                else:
                    del live[g]
        oldest = min(live, default=self.head + 1)
        while self.pending and self.pending[0][0] <= oldest:
            self.free.extend(self.pending.popleft()[1].tolist())

    def take(self, k: int) -> np.ndarray | None:
        """k free rows, or None when there are not that many."""
        if len(self.free) < k:
            self.reclaim()
            if len(self.free) < k:
                return None
        out = self.free[-k:]
        del self.free[-k:]
        return np.asarray(out, dtype=np.intp)


class Snapshot:
    """Parameters of all products, row i = ``product_ids[i]``.

    ``versions[i]`` is the product's version (its observation count n; 0 = the prior).
    ``model_version`` is their sum: monotone (versions never go down), and equal on every
    replica that has seen the same writes, so an impression names the model that scored it.
    ``synced_at`` is when the refresher last confirmed the snapshot matched Redis (monotonic
    seconds); its age is how stale the snapshot may be.

    Built from whole arrays (``Snapshot(product_ids, thetas, A_invs, versions, updated_at_ms,
    synced_at, observations)``) or by :meth:`prior`; changed by :meth:`with_params` and
    :meth:`with_products`, which return new snapshots. The array attributes (``thetas``,
    ``A_invs``, ``versions``, ...) are read-only views gathered on first use.
    """

    __slots__ = ("__weakref__", "_cache", "_gen", "_hot", "_index", "_rows", "_slot", "_sums",
                 "_written", "model_version", "product_ids", "synced_at")

    def __init__(self, product_ids: Sequence[str], thetas: np.ndarray, A_invs: np.ndarray,
                 versions: np.ndarray, updated_at_ms: np.ndarray,
                 synced_at: float | None = None, observations: np.ndarray | None = None
                 ) -> None:
        ids = tuple(product_ids)
        m = len(ids)
        thetas = np.asarray(thetas, dtype=np.float64)
        A_invs = np.asarray(A_invs, dtype=np.float64)
        d = thetas.shape[1] if thetas.ndim == 2 else 0
        if thetas.shape != (m, d) or A_invs.shape != (m, d, d):
            raise ValueError(f"thetas {thetas.shape} / A_invs {A_invs.shape} do not "
                             f"match {m} products")
        versions, updated_at_ms = np.asarray(versions), np.asarray(updated_at_ms)
        if versions.shape != (m,) or updated_at_ms.shape != (m,):
            raise ValueError("versions/updated_at_ms must have one entry per product")
        if observations is None:  # n unknown: every update counted as an observation
            observations = versions
        elif np.shape(observations) != (m,):
            raise ValueError("observations must have one entry per product")
        index = {p: i for i, p in enumerate(ids)}
        if len(index) != m:
            raise ValueError("product_ids: duplicates")
        rows = _Rows(d, m + spare_rows(m))
        slot = rows.take(m)
        assert slot is not None
        slot = slot[::-1].copy()  # rows 0..m-1 in product order: the gather reads in order
        meta = np.stack([versions, updated_at_ms, observations], axis=1)
        for lo in range(0, m, 4096):  # in chunks: the temporaries stay small
            rows.write(slot[lo:lo + 4096], thetas[lo:lo + 4096], A_invs[lo:lo + 4096],
                       meta[lo:lo + 4096])
        if m >= 4096:
            trim_heap()
        self._init(ids, index, rows, slot, rows.head, int(versions.sum()),
                   time.monotonic() if synced_at is None else synced_at)

    def _init(self, ids: tuple[str, ...], index: dict[str, int], rows: _Rows, slot: np.ndarray,
              gen: int, model_version: int, synced_at: float,
              sums: tuple[np.ndarray, int, int] | None = None) -> None:
        self.product_ids = ids
        self._index = index  # shared by a lineage; entries >= len(ids) belong to newer ones
        self._rows = rows
        self._hot = rows.theta32  # this snapshot's arrays, even after the store grows
        self._slot = slot
        self._gen = gen
        self.model_version = model_version
        self.synced_at = synced_at
        self._cache: dict[str, Any] = {}
        # (sum of the rows' count terms, products at the prior, updates since a full sum):
        # kept per update, so a new snapshot costs requests no O(m) pass
        self._sums = self._full_sums() if sums is None else sums
        # (product indices, thetas, A_invs, their inverses, ok) the update that made this
        # snapshot wrote, when it wrote at most WRITTEN_KEPT: see params_and_inverses
        self._written: tuple[np.ndarray, ...] | None = None
        rows.born.append(gen)

    def _full_sums(self) -> tuple[np.ndarray, int, int]:
        rows, slot = self._rows, self._slot
        return (rows.terms[slot].sum(axis=0),
                int(np.count_nonzero(rows.meta[slot, _V] == 0)), 0)

    @classmethod
    def _new(cls, ids: tuple[str, ...], index: dict[str, int], rows: _Rows, slot: np.ndarray,
             gen: int, model_version: int, synced_at: float,
             sums: tuple[np.ndarray, int, int] | None = None) -> Snapshot:
        snap = cls.__new__(cls)
        snap._init(ids, index, rows, slot, gen, model_version, synced_at, sums)
        return snap

    def __del__(self) -> None:
        rows = getattr(self, "_rows", None)
        if rows is not None:
            rows.died.append(self._gen)

    def __repr__(self) -> str:
        return (f"Snapshot({len(self)} products, model_version {self.model_version}, "
                f"generation {self._gen})")

    @classmethod
    def prior(cls, product_ids: Sequence[str], dim: int, l2: float = 1.0) -> Snapshot:
        """Every product at the prior A = l2 I, b = 0 (scores 0 + alpha * |x| / sqrt(l2));
        written in chunks, with no (m, d, d) temporary."""
        ids = tuple(product_ids)
        index = {p: i for i, p in enumerate(ids)}
        if len(index) != len(ids):
            raise ValueError("product_ids: duplicates")
        m = len(ids)
        rows = _Rows(dim, m + spare_rows(m))
        slot = rows.take(m)
        assert slot is not None
        slot = slot[::-1].copy()
        eye = np.eye(dim) / l2
        for lo in range(0, m, 4096):
            part = slot[lo:lo + 4096]
            rows.write(part, np.zeros((part.size, dim)),
                       np.broadcast_to(eye, (part.size, dim, dim)),
                       np.zeros((part.size, 3), dtype=np.int64))
        if m >= 4096:
            trim_heap()
        return cls._new(ids, index, rows, slot, rows.head, 0, time.monotonic())

    @classmethod
    def from_params(cls, product_ids: Sequence[str], dim: int, l2: float,
                    params: Mapping[str, Params] | ParamBatch,
                    synced_at: float | None = None) -> Snapshot:
        """Exactly ``params`` over the prior, whatever their versions: what a replica starting
        now builds. The refresher replaces its snapshot with this when the store's epoch
        changes (a wiped or rolled-back store), where versions lower than the ones held are
        the truth and :meth:`with_params` would ignore them.

        >>> from contract import linucb
        >>> from contract.codec import ParamBatch, Params
        >>> p = Params(linucb.ArmState(np.eye(2), np.ones(2), 3), updated_at_ms=1)
        >>> Snapshot.from_params(["p0", "p1"], 2, 1.0, {"p1": p}).versions.tolist()
        [0, 3]
        """
        snap = cls.prior(product_ids, dim, l2)
        rows = snap._rows
        picked = snap._picked(params)
        if picked is not None:  # nobody holds this snapshot yet: its own rows are written
            idx, thetas, A_invs, meta = picked
            for lo in range(0, idx.size, 4096):
                rows.write(snap._slot[idx[lo:lo + 4096]], thetas[lo:lo + 4096],
                           A_invs[lo:lo + 4096], meta[lo:lo + 4096])
            snap.model_version = int(meta[:, _V].sum())
            snap._sums = snap._full_sums()
        snap.synced_at = time.monotonic() if synced_at is None else synced_at
        return snap

    # --- reading ---------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self._rows.d

    def __len__(self) -> int:
        return len(self.product_ids)

    @property
    def generation(self) -> int:
        """Unique per set of parameters (a re-stamped snapshot keeps it): what per-snapshot
        caches key on, without holding the snapshot (which would keep its rows from being
        reused)."""
        return self._gen

    @property
    def nbytes(self) -> int:
        """Bytes of the row store this snapshot reads (shared with its lineage) and of its
        row index."""
        r = self._rows
        return (r.theta32.nbytes + r.avar32.nbytes + r.low.nbytes + r.cold.nbytes
                + r.meta.nbytes + r.terms.nbytes + r.vbound.nbytes
                + (0 if r.hot64 is None else r.hot64.nbytes) + self._slot.nbytes)

    def index(self, product_id: str) -> int | None:
        i = self._index.get(product_id)
        return i if i is not None and i < len(self.product_ids) else None

    def version_of(self, product_id: str) -> int | None:
        i = self.index(product_id)
        return None if i is None else int(self._rows.meta[self._slot[i], _V])

    def _gathered(self, name: str) -> np.ndarray:
        out = self._cache.get(name)
        if out is None:
            slot, rows = self._slot, self._rows
            d = rows.d
            if name in ("versions", "updated_at_ms", "observations"):
                out = rows.meta[slot, ("versions", "updated_at_ms", "observations").index(name)]
            elif name == "thetas":
                out = np.empty((len(self), d))
                for lo in range(0, len(self), 4096):  # in chunks: no (m, 135) temporary
                    out[lo:lo + 4096] = rows.exact_rows(slot[lo:lo + 4096])[:, :d]
            elif name == "A_invs":
                ur, uc, w, lr, lc = _triangle(d)
                out = np.empty((len(self), d, d))
                for lo in range(0, len(self), 4096):
                    out[lo:lo + 4096, ur, uc] = rows.exact_rows(slot[lo:lo + 4096])[:, d:] / w
                out[:, lr, lc] = out[:, lc, lr] + rows.cold[slot]
                for j, r in enumerate(slot.tolist()) if rows.exact else ():
                    if r in rows.exact:
                        out[j, lr, lc] = rows.exact[r]
            else:
                raise KeyError(name)
            out.setflags(write=False)
            self._cache[name] = out
        return out

    @property
    def thetas(self) -> np.ndarray:
        """(m, d) A^-1 b per product (a read-only copy, made on first use)."""
        return self._gathered("thetas")

    @property
    def A_invs(self) -> np.ndarray:  # noqa: N802 (the math's name, as before)
        """(m, d, d) A^-1 per product, exactly as published (read-only, made on first use:
        m d^2 numbers; :meth:`A_inv` reads one)."""
        return self._gathered("A_invs")

    @property
    def versions(self) -> np.ndarray:
        """(m,) int64 version per product (0 = the prior)."""
        return self._gathered("versions")

    @property
    def updated_at_ms(self) -> np.ndarray:
        """(m,) int64, when the job produced each product's parameters (0 = prior)."""
        return self._gathered("updated_at_ms")

    @property
    def observations(self) -> np.ndarray:
        """(m,) int64 observations n per product."""
        return self._gathered("observations")

    def theta(self, i: int) -> np.ndarray:
        """Product i's theta (d,), a copy."""
        return self._rows.exact_rows(self._slot[i:i + 1])[0, :self._rows.d]

    def A_inv(self, i: int) -> np.ndarray:  # noqa: N802
        """Product i's A^-1 (d, d), exactly as published."""
        rows, r = self._rows, self._slot[i]
        d = rows.d
        ur, uc, w, lr, lc = _triangle(d)
        out = np.empty((d, d))
        out[ur, uc] = rows.exact_rows(self._slot[i:i + 1])[0, d:] / w
        lower = rows.exact.get(int(r))
        out[lr, lc] = out[lc, lr] + rows.cold[r] if lower is None else lower
        return out

    def params_of(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(thetas (k, d), A_invs (k, d, d)) of products ``idx``, exactly as published (as
        :meth:`theta` and :meth:`A_inv` give them), read in one batch without gathering the
        whole store: serving/category_rates.py follows each update with it, O(changed)."""
        rows, d = self._rows, self._rows.d
        slot = self._slot[np.asarray(idx, dtype=np.intp)]
        ur, uc, w, lr, lc = _triangle(d)
        vals = rows.exact_rows(slot)
        out = np.empty((slot.size, d, d))
        out[:, ur, uc] = vals[:, d:] / w
        out[:, lr, lc] = out[:, lc, lr] + rows.cold[slot]
        for j, r in enumerate(slot.tolist()) if rows.exact else ():
            lower = rows.exact.get(r)
            if lower is not None:
                out[j, lr, lc] = lower
        return vals[:, :d].copy(), out

    def params_and_inverses(self, idx: np.ndarray
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(thetas, A_invs, A, ok) of products ``idx``: :meth:`params_of` and
        ``exploration.inverses`` of its A_invs. The products the update that made this
        snapshot wrote come with the inverses it computed for their count terms (the same
        numbers: each changed product is inverted once, not again by the category pools
        that follow the update); the others are read and inverted here."""
        idx = np.asarray(idx, dtype=np.intp)
        w = self._written
        if w is None or not idx.size:
            thetas, A_invs = self.params_of(idx)
            return (thetas, A_invs, *exploration.inverses(A_invs))
        widx, wthetas, wA_invs, wA, wok = w
        order = np.argsort(widx, kind="stable")
        at = np.minimum(np.searchsorted(widx, idx, sorter=order), widx.size - 1)
        pos = order[at]
        found = widx[pos] == idx
        if found.all():
            return wthetas[pos], wA_invs[pos], wA[pos], wok[pos]
        if not found.any():  # the usual old share: written by an earlier update
            thetas, A_invs = self.params_of(idx)
            return (thetas, A_invs, *exploration.inverses(A_invs))
        thetas, A_invs = np.empty((idx.size, self.dim)), np.empty((idx.size, self.dim, self.dim))
        A, ok = np.empty_like(A_invs), np.empty(idx.size, dtype=bool)
        hit, miss = np.flatnonzero(found), np.flatnonzero(~found)
        thetas[hit], A_invs[hit], A[hit], ok[hit] = (wthetas[pos[hit]], wA_invs[pos[hit]],
                                                     wA[pos[hit]], wok[pos[hit]])
        thetas[miss], A_invs[miss] = self.params_of(idx[miss])
        A[miss], ok[miss] = exploration.inverses(A_invs[miss])
        return thetas, A_invs, A, ok

    @property
    def clicks(self) -> np.ndarray:
        """(m,) clicks learned per product: ``version - n``. The job learns every shown
        product at once with reward 0 (``o0``) and each click as one reward correction
        (``a1``; docs/JOB_LINES.md), so the updates beyond the observations are the clicks:
        published in every value, exactly once, with no extra key.

        Read-only. Gathered once per lineage: a snapshot made by an update from one that has
        them gets them from its parent with the changed products' entries replaced (the
        writer copies (m,) ints; a request asking for them after an update - the popularity
        term does - gathers nothing)."""
        out = self._cache.get("clicks")
        if out is None:
            meta = self._rows.meta[self._slot]  # one gather, both columns
            out = meta[:, _V] - meta[:, _N]
            out.setflags(write=False)
            self._cache["clicks"] = out
        return out

    @property
    def prior_count(self) -> int:
        """Products at the prior (version 0): kept per update, no pass over the products."""
        return self._sums[1]

    def learned_counts(self, l2: float) -> tuple[float, float]:
        """(clicks, observations) the parameters hold, as
        :func:`contract.exploration.counts_from_params` reads them (the calibrated rule's
        click rate), from the sum of per-row terms kept at each update (added and taken off
        per changed row, summed afresh every 1,024 updates so rounding cannot drift): no
        matrix inversion, no pass over the products."""
        return exploration.counts_from_terms(self._sums[0], len(self), self.dim, l2)

    def age_s(self, now: float | None = None) -> float:
        return max(0.0, (time.monotonic() if now is None else now) - self.synced_at)

    def scores(self, x: np.ndarray, alpha: float) -> np.ndarray:
        """UCB of every product for context x (d,) -> (m,); alpha = 0 is the greedy mean."""
        return self.scores_and_mean(x, alpha)[0]

    def scores_and_mean(self, x: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
        """(UCB, mean theta.x) of every product, exact in float64: the mean comes free with
        the scores (the exploration health counter compares the two's best products). A big
        store (no float64 rows) rebuilds every row's float64 numbers for it: requests that
        rank use :meth:`top_scores`, which reads the float32 rows."""
        mean, var = self._exact_all(x, x, alpha != 0)
        if alpha == 0:
            return mean, mean
        return _combine(mean, var, alpha, 0.0), mean

    def _exact_all(self, x: np.ndarray, xv: np.ndarray, with_var: bool,
                   m: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(theta.x, xv^T A^-1 xv) of the first m products from the float64 numbers."""
        rows, slot = self._rows, self._slot if m is None else self._slot[:m]
        d = x.shape[0]
        xx = _pairs(xv)
        if rows.hot64 is not None:  # over the store, then this snapshot's rows
            mean = (rows.hot64[:, :d] @ x).take(slot)
            var = (rows.hot64[:, d:] @ xx).take(slot) if with_var else mean
            return mean, var
        mean, var = np.empty(slot.size), np.empty(slot.size)
        for lo in range(0, slot.size, 4096):  # in chunks: the float64 temporaries stay small
            mean[lo:lo + 4096], var[lo:lo + 4096] = self._exact_terms(slot[lo:lo + 4096], x,
                                                                      xx, with_var)
        return mean, var

    def _exact_terms(self, rows: np.ndarray, x: np.ndarray, xx: np.ndarray,
                     with_var: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(theta.x, x^T A^-1 x) of these store rows from their float64 numbers; each row
        summed alone (the same number whichever rows are asked with it)."""
        vals = self._rows.exact_rows(rows)
        d = x.shape[0]
        mean = (vals[:, :d] * x).sum(axis=1)
        return mean, (vals[:, d:] * xx).sum(axis=1) if with_var else mean

    def top_scores(self, x: np.ndarray, k: int, alpha: float = 0.0,
                   weight: float | np.ndarray = 0.0, x_var: np.ndarray | None = None,
                   plus: np.ndarray | None = None, upto: int | None = None, *,
                   only_best: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(scores, means) of the first ``upto`` products for ranking their best k:
        ``theta.x + alpha sqrt(v) + weight v (+ plus)``, v = x_var^T A^-1 x_var (x_var
        defaults to x), and means theta.x. ``weight`` is one float or one float64 per
        product (length >= upto, indexed like the products: the decaying rule with a rate
        per category).

        A big store is scored from its float32 rows (half the bytes of the memory-bound
        pass), each score within a bound of its float64 value (float32 dot products, Higham's
        gamma_n times the largest entry ever written); then every product whose float64
        score could be among the k best (and whose mean could be the best) is scored again
        from its exact float64 numbers. So the best k, their order, their scores and the
        ties among them are the float64 ones; a score that cannot reach the best k may be
        off by up to the bound (loose: about 1e-4 of the scores' scale per product on learned
        data; measured errors are float32's 6e-8). A small store (float64
        rows kept, see EXACT_STORE_ROWS) is scored in float64 throughout.

        ``only_best`` (a caller that takes the best k and nothing else, as a plain request
        does): on a big store with an exploration term (alpha >= 0), the A^-1 rows
        are not read at all when a bound prunes (see :meth:`_pruned`): the best k, their
        order, scores and ties are float64's as above, and every other score is replaced by
        an upper bound of it that is below the k-th best.
        """
        m = len(self) if upto is None else upto
        rows, slot = self._rows, self._slot[:m]
        d = x.shape[0]
        xv = x if x_var is None else x_var
        group = weight if isinstance(weight, GroupWeights) else None
        if group is not None and not (only_best and rows.hot64 is None and 0 < k < m
                                      and alpha >= 0 and group.nonzero):
            weight, group = group.full(m), None  # every product is scored: the array
        if group is not None:
            w_top = group.top_abs
        elif isinstance(weight, np.ndarray):
            if weight.shape[0] < m:
                raise ValueError(f"weight: {weight.shape[0]} entries for {m} products")
            weight = np.asarray(weight[:m], dtype=np.float64)
            w_top = float(np.abs(weight).max(initial=0.0))
        else:
            w_top = abs(float(weight))
        with_var = bool(alpha) or (group.nonzero if group is not None else _weighted(weight))
        if rows.hot64 is None and 0 < k < m:
            xx = _pairs(xv)
            b_theta, b_a = rows.bound
            x1, v1 = float(np.abs(x).sum()), float(np.abs(xx).sum())
        if (rows.hot64 is not None or not 0 < k < m
                or not max(x1, v1, b_theta * x1, b_a * v1) < 1e30):  # float32 would overflow
            mean, var = self._exact_all(x, xv, with_var, m)
            out = _combine(mean, var, alpha, weight)
            if plus is not None:
                out += plus
            return out, mean
        tiny = 2.0 ** -100 * (x1 + v1)  # float32's subnormals: an absolute error, not relative
        e_mean = _gamma(d + 4) * b_theta * x1 + tiny
        e_var = _gamma(xx.size + 4) * b_a * v1 + tiny if with_var else 0.0
        mean = (rows.theta32 @ x.astype(np.float32)).take(slot).astype(np.float64)
        if only_best and with_var:
            pruned = self._pruned(mean, x, xv, xx, k, alpha, weight, plus, e_mean, e_var)
            if pruned is not None:
                return pruned
            if group is not None:  # the bound pruned too little: every product is scored
                weight = group.full(m)
                w_top = float(np.abs(weight).max(initial=0.0))
        var32 = (rows.avar32 @ xx.astype(np.float32)).take(slot) if with_var else None
        var = var32.astype(np.float64) if var32 is not None else mean  # _combine writes it
        out = _combine(mean, var, alpha, weight)
        if plus is not None:
            out += plus
        # every product whose float64 score may be among the best k: within twice the
        # largest error of a float32 score at most the k-th (the k-th of an even sample: no
        # pass over all), then within the sum of its own error and the k-th largest lower
        # bound (the error of sqrt(v) shrinks as 1/sqrt(v))
        loose = e_mean + alpha * np.sqrt(e_var) + w_top * e_var
        sample = out[::max(1, m // 4096)] if m >= 8192 else out
        kth = np.partition(sample, sample.size - k)[sample.size - k]
        cand = np.flatnonzero(out >= kth - 2.0 * loose)
        w_cand = np.abs(weight[cand]) if isinstance(weight, np.ndarray) else w_top
        err: float | np.ndarray = e_mean + alpha * np.sqrt(e_var) + w_cand * e_var
        if alpha and var32 is not None:
            v = np.maximum(var32[cand].astype(np.float64), 0.0)
            with np.errstate(divide="ignore", invalid="ignore"):
                root = e_var / (np.sqrt(v) + np.sqrt(np.maximum(v - e_var, 0.0)))
            err = e_mean + w_cand * e_var + alpha * np.fmin(root, np.sqrt(e_var))
        return self._settled(out, mean, cand, out[cand], err, k, e_mean, x, xx, with_var,
                             alpha, weight, plus)

    def _settled(self, out: np.ndarray, mean: np.ndarray, cand: np.ndarray, got: np.ndarray,
                 err: float | np.ndarray, k: int, e_mean: float, x: np.ndarray,
                 xx: np.ndarray, with_var: bool, alpha: float, weight: float | np.ndarray,
                 plus: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(out, mean) with every candidate whose float64 score may be among the best k
        (``got`` within ``err`` of the k-th largest lower bound), and every product whose
        mean may be the best, scored again from its exact numbers (in place)."""
        low = got - err
        floor = np.partition(low, low.size - k)[low.size - k]
        redo = cand[got + err >= floor]
        best = np.flatnonzero(mean >= mean.max() - 2.0 * e_mean)  # the best mean, exact
        redo = np.union1d(redo, best)
        exact_mean, again = self._rescored(redo, x, xx, with_var, alpha, weight, plus)
        mean[redo] = exact_mean
        out[redo] = again
        return out, mean

    def _rescored(self, idx: np.ndarray, x: np.ndarray, xx: np.ndarray, with_var: bool,
                  alpha: float, weight: float | np.ndarray, plus: np.ndarray | None
                  ) -> tuple[np.ndarray, np.ndarray]:
        """(exact means, exact scores) of products ``idx``, from their float64 numbers: the
        same operations as every exact score (equal inputs, equal scores)."""
        exact_mean, exact_var = self._exact_terms(self._slot[idx], x, xx, with_var)
        again = _combine(exact_mean, exact_var, alpha,
                         weight[idx] if _per_product(weight) else weight)
        if plus is not None:
            again += plus[idx]
        return exact_mean, again

    def _pruned(self, mean: np.ndarray, x: np.ndarray, xv: np.ndarray, xx: np.ndarray, k: int,
                alpha: float, weight: float | np.ndarray, plus: np.ndarray | None,
                e_mean: float, e_var: float) -> tuple[np.ndarray, np.ndarray] | None:
        """top_scores without the pass over every A^-1 row, or None when the bound prunes
        too little.

        Each product's score has an upper bound from the mean pass alone: its float32 mean
        plus that mean's error bound, and v <= c^2 a + 2 |c| s r + s^2 vmax (the row's
        bounds, _vbound; c, s: x_var along and across _direction), put through
        :func:`_combine` like an exact score (its
        operations are monotone in the mean and v for alpha, weight >= 0, and so are their
        roundings: the bound holds for the float64 score as computed; a negative weight
        only lowers a score, so it enters the bound as 0). The float32 scores'
        lower bounds of the products whose bound is among the best of an even sample give a
        floor for the k-th best score; only products whose upper bound reaches it can be
        among the best k. Those are scored from their float32 rows with top_scores' error
        bounds, and the ones whose float64 score may be among the best k are scored exactly.
        Every other product keeps an upper bound (below the k-th best). Prunes well when the
        exploration term is small next to the means' spread (on bench_serving's data: the
        best k alone)."""
        if alpha < 0:
            return None
        rows, m = self._rows, mean.size
        limit = max(4 * k, m // 64)  # beyond this, the float32 pass costs less
        vb = rows.var_bound(xv).take(self._slot[:m])
        # a negative weight (category_rate: a category whose rate for x is negative) can
        # only lower a score, weight * max(v, 0) <= 0: its part of the bound is 0; weights
        # given per group are bounded by the largest (one float, no (m,) array)
        up = _combine(mean + e_mean, vb, alpha,
                      weight.upper if isinstance(weight, GroupWeights)
                      else np.maximum(weight, 0.0))
        if rows.unbounded:  # a row's inf bound times a 0 is NaN: no bound
            np.nan_to_num(up, copy=False, nan=np.inf)
        if plus is not None:
            up += plus
        sample = up[::max(1, m // 4096)] if m >= 8192 else up
        t = np.partition(sample, sample.size - k)[sample.size - k]
        probe = np.flatnonzero(up >= t)
        if probe.size > limit:
            return None
        xx32 = xx.astype(np.float32)
        got, err = self._scored32(probe, mean, xx32, alpha, weight, plus, e_mean, e_var)
        low = got - err
        floor = np.partition(low, low.size - k)[low.size - k]  # <= the k-th best score
        reach = up >= floor
        if np.count_nonzero(reach) > limit:  # the bound prunes too little: give up early
            return None
        cand = np.flatnonzero(reach)
        got, err = self._scored32(cand, mean, xx32, alpha, weight, plus, e_mean, e_var)
        up[cand] = got + err  # an upper bound: below the k-th best unless re-scored
        return self._settled(up, mean, cand, got, err, k, e_mean, x, xx, True, alpha,
                             weight, plus)

    def _scored32(self, idx: np.ndarray, mean: np.ndarray, xx32: np.ndarray, alpha: float,
                  weight: float | np.ndarray, plus: np.ndarray | None, e_mean: float,
                  e_var: float) -> tuple[np.ndarray, np.ndarray]:
        """(float32 scores, their error bounds) of products ``idx`` from their float32 rows
        and float32 means, bounded as top_scores bounds its float32 pass."""
        var = (self._rows.avar32[self._slot[idx]] @ xx32).astype(np.float64)
        v = np.maximum(var, 0.0)
        w = weight[idx] if _per_product(weight) else weight
        got = _combine(mean[idx], var, alpha, w)
        if plus is not None:
            got += plus[idx]
        err = e_mean + np.abs(w) * e_var
        if alpha:
            with np.errstate(divide="ignore", invalid="ignore"):
                root = e_var / (np.sqrt(v) + np.sqrt(np.maximum(v - e_var, 0.0)))
            err = err + alpha * np.fmin(root, np.sqrt(e_var))
        return got, np.broadcast_to(err, got.shape)

    # --- changing (returns a new snapshot) ---------------------------------------------------
    def with_params(self, params: Mapping[str, Params] | ParamBatch,
                    synced_at: float | None = None
                    ) -> tuple[Snapshot, list[str]]:
        """A snapshot with these products' parameters applied where strictly newer
        (``params``: a :class:`~contract.codec.ParamBatch`, as the refresher decodes them, or
        one Params per product).

        Returns the new snapshot (``self`` when nothing changed, only re-stamped) and the
        product ids that changed. An older or equal version is ignored: a replayed or
        reordered value never moves a product backwards. Unknown products and values of
        another dimension are ignored too (the caller logs them).

        O(changed) rows written into free rows of the shared store, plus a copy of the
        (m,) row index; on a snapshot that is not its store's newest (two updates branching
        from one snapshot), the store is copied first.
        """
        stamp = time.monotonic() if synced_at is None else synced_at
        picked = self._picked(params)
        if picked is None:
            return self.restamped(stamp), []
        idx, thetas, A_invs, meta = picked
        snap = self._rewritten(idx, thetas, A_invs, meta, stamp)
        return snap, [self.product_ids[i] for i in idx.tolist()]

    def _picked(self, params: Mapping[str, Params] | ParamBatch
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """The products of ``params`` to apply (known, of this dimension, strictly newer,
        finite) as (indices, thetas, A_invs, meta), or None."""
        index, m, d = self._index, len(self.product_ids), self.dim
        batch = params if isinstance(params, ParamBatch) else ParamBatch.of(params, d)
        if not len(batch) or batch.A_inv.shape[1:] != (d, d):
            return None
        where = [index.get(pid) for pid in batch.product_ids]
        rows = [j for j, i in enumerate(where) if i is not None and i < m]
        if not rows:
            return None
        # one numpy call per check for the batch, not one per product
        idx = np.array([where[j] for j in rows], dtype=np.intp)
        if len(rows) < len(where):
            batch = batch[np.array(rows, dtype=np.intp)]
        meta = np.stack([batch.version, batch.updated_at_ms, batch.n], axis=1)
        A_invs, bs = batch.A_inv, batch.b
        # strictly newer only; and finite (a NaN would poison every ranking it takes part in)
        keep = ((meta[:, _V] > self._rows.meta[self._slot[idx], _V])
                & np.isfinite(A_invs).all(axis=(1, 2)) & np.isfinite(bs).all(axis=1))
        if not keep.any():
            return None
        if not keep.all():
            idx, meta, A_invs, bs = idx[keep], meta[keep], A_invs[keep], bs[keep]
        # linucb.theta (A_inv @ b) of each, in one call: the same numbers (the same
        # matrix-vector product per product)
        thetas = np.matmul(A_invs, bs[:, :, None])[:, :, 0]
        return idx, thetas, A_invs, meta

    def _rewritten(self, idx: np.ndarray, thetas: np.ndarray, A_invs: np.ndarray,
                   meta: np.ndarray, stamp: float, ids: tuple[str, ...] | None = None,
                   index: dict[str, int] | None = None) -> Snapshot:
        """Products ``idx`` (some may be new, >= len(self) when ``ids`` is longer) with these
        rows: written into free rows, then a new row index."""
        rows = self._rows
        ids = self.product_ids if ids is None else ids
        index = self._index if index is None else index
        with rows.lock:
            if self._gen != rows.head:  # a branch: its own store
                return self._copied(len(ids) - len(self))._rewritten(idx, thetas, A_invs, meta,
                                                                     stamp, ids, index)
            new_rows = rows.take(idx.size)
            if new_rows is None:  # readers hold the spare rows: a bigger store
                return self._copied(len(ids) - len(self) + idx.size)._rewritten(
                    idx, thetas, A_invs, meta, stamp, ids, index)
            m_old = len(self)
            gone = self._slot[idx[idx < m_old]]  # the rows replaced
            old_meta = rows.meta[gone, _V]
            old_terms = rows.terms[gone].sum(axis=0)
            inv, ok = rows.write(new_rows, thetas, A_invs, meta)
            total, n_prior, steps = self._sums
            sums = (total + rows.terms[new_rows].sum(axis=0) - old_terms,
                    n_prior - int(np.count_nonzero(old_meta == 0))
                    + int(np.count_nonzero(meta[:, _V] == 0)), steps + 1)
            if len(ids) > m_old:
                slot = np.empty(len(ids), dtype=np.intp)
                slot[:m_old] = self._slot
            else:
                slot = self._slot.copy()
            replaced = slot[idx[idx < m_old]].copy()
            slot[idx] = new_rows
            gen = next(_GENERATIONS)
            rows.head = gen
            if replaced.size:
                rows.pending.append((gen, replaced))
            version = self.model_version + int(meta[:, _V].sum()) - int(old_meta.sum())
            snap = Snapshot._new(ids, index, rows, slot, gen, version, stamp,
                                 None if steps >= 1024 else sums)
            if idx.size <= WRITTEN_KEPT:
                snap._written = (idx, thetas, A_invs, inv, ok)
            parent = self._cache.get("clicks")
            if parent is not None:  # O(m) copy here, in the writer, not in a request
                clicks = np.empty(len(ids), dtype=np.int64)
                clicks[:m_old] = parent
                clicks[idx] = meta[:, _V] - meta[:, _N]  # new products are all in idx
                clicks.setflags(write=False)
                snap._cache["clicks"] = clicks
            return snap

    def _copied(self, extra: int) -> Snapshot:
        """This snapshot in a new store with room for ``extra`` more rows than the spare
        (the old store stays with the snapshots that use it). Called under the old lock."""
        old, m = self._rows, len(self)
        spare = max(spare_rows(m + extra), 2 * (old.capacity - m))
        rows = _Rows(old.d, m + extra + spare)
        slot = rows.take(m)
        assert slot is not None
        slot = slot[::-1].copy()
        for lo in range(0, m, 4096):  # in chunks: no second whole copy at once
            src, dst = self._slot[lo:lo + 4096], slot[lo:lo + 4096]
            rows.theta32[dst] = old.theta32[src]
            rows.avar32[dst] = old.avar32[src]
            rows.vbound[dst] = old.vbound[src]
            rows.low[dst] = old.low[src]
            if rows.hot64 is not None:
                rows.hot64[dst] = old.exact_rows(src)
            rows.cold[dst] = old.cold[src]
            rows.meta[dst] = old.meta[src]
            rows.terms[dst] = old.terms[src]
        for j, r in enumerate(self._slot.tolist()) if old.exact else ():
            if r in old.exact:
                rows.exact[int(slot[j])] = old.exact[r]
        for j, r in enumerate(self._slot.tolist()) if old.exact_hot else ():
            if r in old.exact_hot:
                rows.exact_hot[int(slot[j])] = old.exact_hot[r]
        rows.bound, rows.unbounded = old.bound, old.unbounded
        if m >= 4096:
            trim_heap()
        snap = Snapshot._new(self.product_ids, self._index, rows, slot, rows.head,
                             self.model_version, self.synced_at)
        if "clicks" in self._cache:  # the same products and parameters
            snap._cache["clicks"] = self._cache["clicks"]
        return snap

    def with_products(self, product_ids: Sequence[str], l2: float = 1.0,
                      synced_at: float | None = None) -> Snapshot:
        """A snapshot with these brand-new products appended at the prior (A = l2 I, b = 0,
        version 0), after the existing ones: their rows written into free rows, O(added)
        (plus the (m,) row index and the id tuple). Ids already held are refused."""
        new = list(dict.fromkeys(product_ids))
        if len(new) != len(product_ids) or any(self.index(p) is not None for p in new):
            raise ValueError("product_ids: duplicates, or already in the snapshot")
        if not new:
            return self
        m, d = len(self), self.dim
        index = self._index
        with _INDEX_LOCK:  # shared by a lineage (and its branches): extended by one at a time
            if len(index) == m:  # nobody added beyond this snapshot: extend it in place
                index.update((p, m + j) for j, p in enumerate(new))
            else:
                index = {p: i for i, p in enumerate(self.product_ids + tuple(new))}
        k = len(new)
        ids = self.product_ids + tuple(new)
        return self._rewritten(np.arange(m, m + k, dtype=np.intp), np.zeros((k, d)),
                               np.broadcast_to(np.eye(d) / l2, (k, d, d)),
                               np.zeros((k, 3), dtype=np.int64),
                               self.synced_at if synced_at is None else synced_at, ids, index)

    def restamped(self, synced_at: float) -> Snapshot:
        """The same parameters, confirmed in sync at ``synced_at`` (arrays are shared)."""
        if synced_at <= self.synced_at:
            return self
        snap = Snapshot._new(self.product_ids, self._index, self._rows, self._slot, self._gen,
                             self.model_version, synced_at, self._sums)
        snap._hot = self._hot
        snap._cache = self._cache  # the same rows: what was gathered holds
        return snap
