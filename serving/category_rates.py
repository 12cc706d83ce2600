"""Each catalog category's pooled ridge sums, derived by serving from the products' published
parameters and kept in O(changed products) per parameter update: what the ``category_rate``
exploration rule ranks with (docs/EXPLORATION.md section 1, contract.exploration
``category_rates``).

A category c's pool is what every observation of its products added to the ridge state:

    S_c = sum_i (A_i - l2 I)        t_c = sum_i b_i        (i over c's products)

with ``A_i = A_inv_i^-1`` and ``b_i = A_i theta_i`` read back from the rows serving already
holds (contract.exploration ``pool_terms``). No change to the job: flink_job/ and serving/
meet only through Redis, and the per-product parameters carry all of it.

Following the snapshots: the refresher tells :meth:`CategoryPools.advance` each replacement
(the old snapshot, the new one and the products whose parameters changed); the pool takes off
each changed product's old share (read from the old snapshot's rows, still alive then, and
inverted) and adds its new one (from the inverse the update computed for its count terms:
Snapshot.params_and_inverses), and re-solves ``(l2 I + S_c)^-1`` for the categories that
changed, all on the refresher's thread. A replacement whose changes are unknown (the first
load, a new epoch, the prior after a feature-spec conflict, a snapshot set by hand) or that
does not follow the pool's own snapshot is summed afresh: O(m) inversions in chunks of 1,024
rows with the GIL given up between them (~1 s at 100,000 products: requests keep running,
on the previous pool state and the new snapshot; the refresher's next update waits for it).
Requests read one immutable
:class:`PoolState` (one reference, no lock): ``S``, ``t``, the solved inverses ``M`` and the
category of each product, consistent with each other. It may be one parameter update apart
from the snapshot a request reads (the refresher swaps the two one after the other).
Each update also copies the C categories' sums and solves once (copy on write: readers may
hold the old ones), O(C d^2): nothing at the shipped 8 categories, ~1.8 MB per update batch
at 1,000.

Rounding: the sums are updated by adding and subtracting each product's share (the same
float64 numbers each time, read from the same published values), so they differ from a sum
afresh by the rounding of the additions, about 1e-16 of the pool's size per update
(tests/serving/test_category_rates.py checks incremental == afresh after random updates).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from contract import exploration
from serving.snapshot import GroupWeights, Snapshot, trim_heap, yield_gil

log = logging.getLogger(__name__)

__all__ = ["CategoryPools", "PoolState"]

_CHUNK = 1024  # rows read and inverted at once in a sum afresh: the temporaries stay small
# (a few 1.8 MB arrays; at 4,096 rows they left ~14 MB more resident at 100,000 products)


@dataclass(frozen=True)
class PoolState:
    """One version of the pools, immutable for readers.

    ``names`` the categories (codes are positions), ``S`` (C, d, d), ``t`` (C, d), ``M``
    (C, d, d) = ``(l2 I + S_c)^-1``; ``category`` (n,) int64, the code of each product in
    the snapshot's order (-1: none; products beyond n have none); ``generation`` the snapshot
    generation the sums are of; ``version`` counts changes."""

    names: tuple[str, ...]
    S: np.ndarray
    t: np.ndarray
    M: np.ndarray
    category: np.ndarray
    generation: int
    version: int

    def rates(self, x: np.ndarray, p: float, l2: float, optimism: float = 0.0) -> np.ndarray:
        """q_c(x) per category, plus ``optimism`` standard deviations of it
        (contract.exploration.category_rates)."""
        return exploration.category_rates(self.M, self.t, x, p, l2, optimism)

    @functools.cached_property
    def codes(self) -> np.ndarray:
        """The category codes some product has (-1 among them when one has none); computed
        once per state (the state is immutable)."""
        return np.unique(self.category)

    def weights(self, per_category: np.ndarray, none: float, m: int) -> GroupWeights:
        """The first m products' category values, ``none`` for a product with no category,
        as :class:`~serving.snapshot.GroupWeights` (no (m,) array is built: one value per
        category and the codes the state already holds)."""
        ext = np.empty(per_category.shape[0] + 1)
        ext[:-1] = per_category
        ext[-1] = none
        present = self.codes
        if m > self.category.shape[0] and (not present.size or present[0] != -1):
            present = np.concatenate([[-1], present])
        return GroupWeights(ext, self.category, present, m)


class CategoryPools:
    """The pools of one serving process; :attr:`state` is what requests read."""

    def __init__(self, dim: int, l2: float) -> None:
        self.dim, self.l2 = dim, float(l2)
        self._lock = threading.Lock()  # writers: the refresher's thread, the catalog's
        self._snap: Snapshot | None = None  # the snapshot the sums are of (kept alive: its
        # rows give each product's old share at the next update)
        self._code: dict[str, int] = {}
        self.rebuilds = 0  # sums afresh (counted for tests and the log)
        self.state = PoolState((), np.zeros((0, dim, dim)), np.zeros((0, dim)),
                               np.zeros((0, dim, dim)), np.zeros(0, dtype=np.int64), 0, 0)

    # --- the catalog ---------------------------------------------------------------------
    def set_categories(self, categories: Sequence[str | None],
                       snap: Snapshot | None = None) -> None:
        """The category of each product, in the snapshot's order (``None``: no category).
        Products beyond those already known are appended (the catalog only grows; an
        existing product's category is kept, as the catalog index keeps it); their shares
        are added from the pools' snapshot (``snap`` when the pools follow none yet)."""
        with self._lock:
            st = self.state
            n_old = st.category.shape[0]
            if len(categories) < n_old:
                return
            new = [None if c is None else str(c) for c in categories[n_old:]]
            if not new:
                return
            names = list(st.names)
            for c in new:
                if c is not None and c not in self._code:
                    self._code[c] = len(names)
                    names.append(c)
            codes = np.array([-1 if c is None else self._code[c] for c in new], dtype=np.int64)
            category = np.concatenate([st.category, codes])
            grow = len(names) - len(st.names)
            S = np.concatenate([st.S, np.zeros((grow, self.dim, self.dim))]) if grow else st.S
            t = np.concatenate([st.t, np.zeros((grow, self.dim))]) if grow else st.t
            M = np.concatenate([st.M, np.repeat((np.eye(self.dim) / self.l2)[None], grow,
                                                axis=0)]) if grow else st.M
            if self._snap is None and snap is not None:
                self._snap = snap
            base = self._snap
            S, t = S.copy(), t.copy()
            touched: set[int] = set()
            if base is not None:
                idx = np.arange(n_old, n_old + len(new))
                idx = idx[(idx < len(base)) & (codes >= 0)]
                touched = self._add(S, t, (None, base), (idx[:0], idx), category)
            self.state = PoolState(tuple(names), S, t, self._solved(M, S, touched), category,
                                   base.generation if base is not None else 0,
                                   st.version + 1)

    # --- following the snapshots ---------------------------------------------------------
    def advance(self, old: Snapshot | None, new: Snapshot,
                changed: Sequence[str] | None) -> None:
        """``new`` replaces ``old``; ``changed``: the products whose parameters differ (None:
        unknown). O(changed) when ``old`` is the snapshot the pools are of, else a sum
        afresh."""
        with self._lock:
            if changed is None or old is None or self._snap is None \
                    or old.generation != self._snap.generation:
                self._rebuild(new)
                return
            st = self.state
            ids = [p for p in changed if new.index(p) is not None]
            idx_new = np.fromiter((new.index(p) for p in ids), dtype=np.intp, count=len(ids))
            keep = (idx_new < st.category.shape[0])
            idx_new = idx_new[keep]
            ids = [p for p, k in zip(ids, keep.tolist(), strict=True) if k]
            if idx_new.size:
                keep = st.category[idx_new] >= 0
                idx_new = idx_new[keep]
                ids = [p for p, k in zip(ids, keep.tolist(), strict=True) if k]
            if not ids:
                self._snap = new
                self.state = PoolState(st.names, st.S, st.t, st.M, st.category,
                                       new.generation, st.version)
                return
            S, t = st.S.copy(), st.t.copy()
            # the old shares, from the old rows (a product's index is the same in both: the
            # snapshot only appends), taken off; the new ones added: in one batch
            n_old = len(old)
            held = idx_new[idx_new < n_old]
            touched = self._add(S, t, (old, new), (held, idx_new), st.category)
            self._snap = new
            self.state = PoolState(st.names, S, t, self._solved(st.M, S, touched), st.category,
                                   new.generation, st.version + 1)

    def rebuild(self, snap: Snapshot) -> None:
        """Sum every product's share afresh from ``snap`` (O(m) inversions, chunked)."""
        with self._lock:
            self._rebuild(snap)

    def _rebuild(self, snap: Snapshot) -> None:
        st = self.state
        C = len(st.names)
        S = np.zeros((C, self.dim, self.dim))
        t = np.zeros((C, self.dim))
        if snap.dim == self.dim:
            n = min(len(snap), st.category.shape[0])
            learned = np.flatnonzero(snap.versions[:n] > 0)
            learned = learned[st.category[learned] >= 0]
            for lo in range(0, learned.size, _CHUNK):
                if lo:
                    yield_gil()  # ~1 s at 100,000 products: requests keep running
                part = learned[lo:lo + _CHUNK]
                self._add(S, t, (None, snap), (part[:0], part), st.category)
            if learned.size >= 4096:  # the chunks' heap back to the OS
                trim_heap()
        self._snap = snap
        self.rebuilds += 1
        self.state = PoolState(st.names, S, t,
                               exploration.category_solve(S, self.l2) if C else st.M,
                               st.category, snap.generation, st.version + 1)
        log.debug("category pools summed afresh: %d categories, generation %d", C,
                  snap.generation)

    def _add(self, S: np.ndarray, t: np.ndarray,
             snaps: tuple[Snapshot | None, Snapshot], idx: tuple[np.ndarray, np.ndarray],
             category: np.ndarray) -> set[int]:
        """Take off the shares of products ``idx[0]`` of ``snaps[0]`` and add those of
        ``idx[1]`` of ``snaps[1]`` into their categories' sums (one batch: one inversion
        call, one product per category). Returns the categories touched. (A product at the
        prior adds ``inv(I / l2) - l2 I``: 0 to rounding, and the same number when it is
        taken off again.)"""
        parts = [(snap, i, sign) for snap, i, sign in zip(snaps, idx, (-1.0, 1.0), strict=True)
                 if snap is not None and i.size]
        if not parts:
            return set()
        read = [snap.params_and_inverses(i) for snap, i, _s in parts]
        if len(read) == 1:  # a sum afresh: no copies of the chunk
            thetas, A_invs, A, ok = read[0]
        else:
            thetas, A_invs, A, ok = (np.concatenate([r[j] for r in read]) for j in range(4))
        codes = np.concatenate([category[i] for _snap, i, _s in parts])
        signs = np.concatenate([np.full(i.size, sign) for _snap, i, sign in parts])
        # a singular A^-1 (no valid value, A is NaN) counts nothing
        dS, db = exploration.pool_terms(thetas, A_invs, self.l2, inverse=A)
        dS[~ok] = 0.0
        db[~ok] = 0.0
        cats, where = np.unique(codes, return_inverse=True)
        W = np.zeros((cats.size, codes.size))
        W[where, np.arange(codes.size)] = signs  # one row per category touched: +1 / -1
        S[cats] += (W @ dS.reshape(codes.size, -1)).reshape(cats.size, self.dim, self.dim)
        t[cats] += W @ db
        return set(cats.tolist())

    def _solved(self, M: np.ndarray, S: np.ndarray, touched: set[int]) -> np.ndarray:
        """``M`` with the touched categories' inverses computed again (a new array: readers
        may hold the old one)."""
        if not touched:
            return M
        out = M.copy()
        cats = np.fromiter(sorted(touched), dtype=np.intp, count=len(touched))
        out[cats] = exploration.category_solve(S[cats], self.l2)
        return out
