"""Merchandising controls: which products may be shown, where, and how they are re-ranked.

A request (or the ``RTREC_*`` defaults, docs/CONFIG.md) can exclude product ids, keep
out-of-stock products away, include or exclude categories, pin a product at a slot, boost
products or categories (additive or multiplicative, bounded), cap the products per category
and diversify by MMR (docs/SERVING.md, "Merchandising controls"). Everything that touches all
m products is a numpy mask or gather over arrays built once per catalog (:class:`CatalogIndex`);
the per-item work (caps, MMR, pins) runs on a pool of the best ``RTREC_MMR_POOL`` eligible
candidates, so a request at 10,000 products costs a few vector operations more than without.

:func:`select` returns the shown indices, their scores, the probability of that ordered list
under the policy *given the eligible set* (what off-policy evaluation needs) and what the
impression logs: the controls that applied and the eligible set (count, hash, and the ids when
there are at most ``RTREC_ELIGIBLE_LIST_MAX``).

>>> cat = CatalogIndex(("p0", "p1", "p2", "p3"), ("a", "a", "b", "b"), (1.0, 2.0, 3.0, 4.0))
>>> c = Controls(exclude=frozenset({"p1"}), max_per_category=1)
>>> sel = select("greedy", np.array([4.0, 3.0, 2.0, 1.0]), cat, c, 3, rng_of("00"))
>>> sel.indices.tolist(), sel.propensity, sel.eligible_n, sel.applied
([0, 2], 1.0, 3, ('exclude:1', 'max_per_category:1'))
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from contract.linucb import top_k
from serving.errors import ControlConflictError, InvalidRequestError, UnknownProductError

__all__ = ["Boost", "CatalogIndex", "Controls", "Limits", "Pin", "Selection", "parse_boosts",
           "parse_ids", "parse_pins", "rng_of", "select", "top_desc"]


@dataclass(frozen=True)
class Pin:
    """Show ``product_id`` at ``slot`` (0 = first) when it is eligible."""

    product_id: str
    slot: int


@dataclass(frozen=True)
class Boost:
    """``score + (multiply - 1) * |score| + add`` for a product or every product of a category.

    The multiplicative part scales the score's magnitude, so a factor above 1 always raises a
    score and one below 1 always lowers it, whatever its sign (UCB scores can be negative)."""

    product_id: str | None = None
    category: str | None = None
    add: float = 0.0
    multiply: float = 1.0


@dataclass(frozen=True)
class Controls:
    """What one request asks for, already merged with the defaults (:meth:`merged`)."""

    exclude: frozenset[str] = frozenset()
    in_stock_only: bool = True
    include_categories: frozenset[str] | None = None  # None: every category
    exclude_categories: frozenset[str] = frozenset()
    pins: tuple[Pin, ...] = ()
    boosts: tuple[Boost, ...] = ()
    max_per_category: int | None = None
    mmr_lambda: float = 0.0

    def merged(self, *, exclude: Sequence[str] | None = None, in_stock_only: bool | None = None,
               include_categories: Sequence[str] | None = None,
               exclude_categories: Sequence[str] | None = None,
               pins: Sequence[Pin] | None = None, boosts: Sequence[Boost] | None = None,
               max_per_category: int | None = None, mmr_lambda: float | None = None
               ) -> Controls:
        """These defaults with a request's values: excluded ids and categories add to the
        defaults; the other controls replace them when given."""
        return Controls(
            exclude=self.exclude | frozenset(exclude or ()),
            in_stock_only=self.in_stock_only if in_stock_only is None else in_stock_only,
            include_categories=(self.include_categories if include_categories is None
                                else frozenset(include_categories)),
            exclude_categories=self.exclude_categories | frozenset(exclude_categories or ()),
            pins=self.pins if pins is None else tuple(pins),
            boosts=self.boosts if boosts is None else tuple(boosts),
            max_per_category=(self.max_per_category if max_per_category is None
                              else max_per_category),
            mmr_lambda=self.mmr_lambda if mmr_lambda is None else mmr_lambda)


@dataclass(frozen=True)
class Limits:
    """Bounds and sizes from the settings (``RTREC_MAX_BOOST_ADD``, ``RTREC_MAX_BOOST_MULTIPLY``,
    ``RTREC_MMR_POOL``, ``RTREC_MMR_ATTRIBUTE_WEIGHT``, ``RTREC_ELIGIBLE_LIST_MAX``)."""

    max_boost_add: float = 1.0
    max_boost_multiply: float = 10.0
    mmr_pool: int = 50
    mmr_attribute_weight: float = 0.25
    eligible_list_max: int = 50


class CatalogIndex:
    """The catalog as arrays in the snapshot's product order: category codes (for masks and
    caps), a normalised attribute (price, for MMR's attribute similarity) and the in-stock
    flags. Out-of-stock ids are set by :meth:`set_out_of_stock` (an admin call; the swap of
    one array is atomic for readers)."""

    def __init__(self, product_ids: Sequence[str], categories: Sequence[str] | None = None,
                 prices: Sequence[float] | None = None,
                 in_stock: Sequence[bool] | None = None) -> None:
        m = len(product_ids)
        self.product_ids = tuple(product_ids)
        self.index: dict[str, int] = {p: i for i, p in enumerate(self.product_ids)}
        cats = list(categories) if categories is not None else ["(none)"] * m
        if len(cats) != m:
            raise ValueError("categories: one per product")
        self._cats = cats
        self.categories: tuple[str, ...] = tuple(sorted(set(cats)))
        code = {c: i for i, c in enumerate(self.categories)}
        self.category_of = np.array([code[c] for c in cats], dtype=np.int64)
        self.known_categories = categories is not None
        price = np.asarray(prices if prices is not None else np.zeros(m), dtype=np.float64)
        self._prices = price
        span = float(price.max() - price.min()) if m else 0.0
        self.attribute = (price - price.min()) / span if span > 0 else np.zeros(m)
        self._stock_base = (np.ones(m, dtype=bool) if in_stock is None
                            else np.asarray(in_stock, dtype=bool).copy())
        self.in_stock = self._stock_base.copy()
        self.out_of_stock: frozenset[str] = frozenset(
            p for p, ok in zip(self.product_ids, self.in_stock, strict=True) if not ok)
        self._admin_out: list[int] = []
        # retired from the live catalog (serving/catalog.py): never shown, whatever the request
        self.hidden = np.zeros(m, dtype=bool)
        self.hidden_ids: frozenset[str] = frozenset()
        self.visible_cache: tuple[tuple[Any, ...], Visible] | None = None  # visible()'s

    def __len__(self) -> int:
        return len(self.product_ids)

    def category_name(self, i: int) -> str:
        return self.categories[int(self.category_of[i])]

    def category_codes(self, names: frozenset[str], where: str) -> list[int]:
        if not self.known_categories:
            raise InvalidRequestError(f"{where}: this recommender has no catalog categories")
        unknown = sorted(names - set(self.categories))
        if unknown:
            raise InvalidRequestError(f"{where}: {unknown[0]!r} is not a category; one of "
                                      f"{', '.join(self.categories)}")
        return [self.categories.index(c) for c in sorted(names)]

    def indices(self, ids: Sequence[str] | frozenset[str], where: str) -> list[int]:
        out = []
        for pid in sorted(ids):
            i = self.index.get(pid)
            if i is None:
                raise UnknownProductError(f"{where}: {pid!r} is not in the catalog")
            out.append(i)
        return out

    def set_out_of_stock(self, product_ids: Sequence[str]) -> frozenset[str]:
        """Replace the admin-set out-of-stock ids (the catalog's own flags stay); returns
        the whole out-of-stock set."""
        idx = self.indices(frozenset(product_ids), "out_of_stock")
        self._admin_out = idx
        return self._restock()

    def _restock(self) -> frozenset[str]:
        stock = self._stock_base.copy()
        stock[self._admin_out] = False
        self.in_stock = stock  # one reference swap: a request sees the old or the new array
        self.out_of_stock = frozenset(self.product_ids[i] for i in np.flatnonzero(~stock))
        return self.out_of_stock

    def extended(self, product_ids: Sequence[str], categories: Sequence[str],
                 prices: Sequence[float], in_stock: Sequence[bool]) -> CatalogIndex:
        """A new index with these products appended, in this order (the snapshot appends the
        same ids in the same order: serving/recommender.py ``add_products``), carrying the
        admin's out-of-stock ids and the hidden (retired) ones; categories are re-coded and
        the price attribute re-normalised over all products. Built aside, then swapped in
        with one reference: a request holds one index for its whole ranking."""
        if any(p in self.index for p in product_ids):
            raise ValueError("product_ids: already in the catalog")
        cats = self._cats + list(categories) if self.known_categories else None
        new = CatalogIndex(self.product_ids + tuple(product_ids), cats,
                           np.concatenate([self._prices, np.asarray(prices, dtype=np.float64)]),
                           np.concatenate([self._stock_base, np.asarray(in_stock, dtype=bool)]))
        new._admin_out = list(self._admin_out)
        new.hidden = np.concatenate([self.hidden, np.zeros(len(product_ids), dtype=bool)])
        new.hidden_ids = self.hidden_ids
        new._restock()
        return new

    def set_catalog(self, in_stock: Mapping[str, bool], retired: Collection[str]) -> None:
        """The live catalog's flags (serving/catalog.py): the in-stock flag of each product it
        has a record for (the admin's out-of-stock ids stay out), and the retired ids, hidden
        from every answer. Ids this index does not hold are ignored."""
        base = self._stock_base.copy()
        for pid, ok in in_stock.items():
            i = self.index.get(pid)
            if i is not None:
                base[i] = ok
        hidden = np.zeros(len(self.product_ids), dtype=bool)
        hidden[[self.index[p] for p in retired if p in self.index]] = True
        self._stock_base = base
        self.hidden = hidden  # swapped before the ids: a request may see the mask first
        self.hidden_ids = frozenset(self.product_ids[i] for i in np.flatnonzero(hidden))
        self._restock()


@dataclass(frozen=True)
class Selection:
    """What :func:`select` chose and what the impression logs about it."""

    indices: np.ndarray  # (k',) into the catalog, in shown order
    scores: np.ndarray  # (k',) the scores after boosts
    propensity: float | None
    applied: tuple[str, ...]
    eligible_n: int
    eligible_hash: str
    eligible: tuple[str, ...] | None
    boosted: np.ndarray | None = field(default=None, repr=False)  # (m,) when boosts applied
    mask: np.ndarray | None = field(default=None, repr=False)  # (m,) the eligible products


def rng_of(request_id: str) -> np.random.Generator:
    """The per-request generator of tie-breaks: seeded by the (logged) request id, so a
    ranking can be replayed from its impression."""
    return np.random.default_rng(int(request_id[:16] or "0", 16))


def _decreasing(s: np.ndarray) -> bool:
    """Whether s is strictly decreasing (False with a NaN): in Python for a few values, where
    numpy's calls cost more than the comparisons."""
    if s.shape[0] <= 8:
        v = s.tolist()
        return all(v[i] > v[i + 1] for i in range(len(v) - 1))
    return bool((s[:-1] > s[1:]).all())


def top_desc(scores: np.ndarray, n: int, rng: Callable[[], np.random.Generator]
             ) -> np.ndarray:
    """Indices of the n best scores, best first, equal scores in a random order drawn from
    ``rng()`` (called only when there are ties): never the catalog's order.

    >>> top_desc(np.zeros(4), 2, lambda: np.random.default_rng(3)).tolist()
    [2, 0]
    """
    m = scores.shape[0]
    if 1 < n < m:  # the usual case first: no ties, so the one order there is
        part = np.argpartition(scores, m - n - 1)  # [m-n-1] is the best of the rest
        idx = part[m - n:]
        order = scores[idx].argsort()[::-1]
        idx = idx[order]
        best = scores[idx]
        if best[-1] > scores[part[m - n - 1]] and _decreasing(best):
            return idx
    idx = top_k(scores, n)  # ties (or NaN): the tie-breaking draw below, as always
    if idx.size == 0:
        return idx
    s = scores[idx]
    last = s[-1]
    boundary_ties = idx.size < scores.shape[0] and np.count_nonzero(scores == last) > \
        np.count_nonzero(s == last)
    if not boundary_ties and (idx.size < 2 or not (s[1:] == s[:-1]).any()):
        return idx  # no ties: the common case, no generator built
    g = rng()
    if boundary_ties:  # which of the tied products make the cut is a random draw
        above = idx[s > last]
        tied = np.flatnonzero(scores == last)
        idx = np.concatenate([above, g.choice(tied, idx.size - above.size, replace=False)])
    order = np.lexsort((g.random(idx.size), -scores[idx]))
    return idx[order]


def parse_ids(text: str) -> tuple[str, ...]:
    """``"p1,p2"`` -> ("p1", "p2") (settings' lists; blanks ignored)."""
    return tuple(p.strip() for p in text.split(",") if p.strip())


def parse_pins(text: str) -> tuple[Pin, ...]:
    """``RTREC_PINS``: ``"p003@0,p010@2"`` (product at slot, 0 = first)."""
    out = []
    for part in parse_ids(text):
        pid, sep, slot = part.partition("@")
        if not sep or not slot.strip().isdigit():
            raise ValueError(f"RTREC_PINS: {part!r} is not product_id@slot")
        out.append(Pin(pid.strip(), int(slot)))
    return tuple(out)


def parse_boosts(text: str) -> tuple[Boost, ...]:
    """``RTREC_BOOSTS``: ``"category:Pizzas*1.2,product:p003+0.1"`` (``*`` multiplies, ``+``
    or ``-`` adds; a category name may hold spaces and ``&``)."""
    out = []
    for part in parse_ids(text):
        kind, sep, rest = part.partition(":")
        op_at = max(rest.rfind("*"), rest.rfind("+"), rest.rfind("-"))
        if not sep or kind not in ("category", "product") or op_at <= 0:
            raise ValueError(f"RTREC_BOOSTS: {part!r} is not category:<name>*<f> or "
                             f"product:<id>+<v>")
        target, op, value = rest[:op_at].strip(), rest[op_at], rest[op_at + 1:]
        try:
            v = float(value)
        except ValueError:
            raise ValueError(f"RTREC_BOOSTS: {part!r}: {value!r} is not a number") from None
        b = {"multiply": v} if op == "*" else {"add": v if op == "+" else -v}
        out.append(Boost(**({"category": target} if kind == "category"  # type: ignore[arg-type]
                            else {"product_id": target}), **b))
    return tuple(out)


def check(controls: Controls, cat: CatalogIndex, k: int, limits: Limits) -> None:
    """Refuse what cannot be honoured, naming the control (a 422)."""
    cat.indices(controls.exclude, "exclude")
    if controls.include_categories is not None:
        if not controls.include_categories:
            raise InvalidRequestError("include_categories: empty; omit it to include all")
        cat.category_codes(controls.include_categories, "include_categories")
    cat.category_codes(controls.exclude_categories, "exclude_categories") \
        if controls.exclude_categories else None
    slots: set[int] = set()
    pinned: set[str] = set()
    for i, pin in enumerate(controls.pins):
        where = f"pins[{i}]"
        cat.indices([pin.product_id], f"{where}.product_id")
        if not 0 <= pin.slot < k:
            raise ControlConflictError(f"{where}.slot: {pin.slot} not in 0..{k - 1} (k={k})")
        if pin.slot in slots:
            raise ControlConflictError(f"{where}.slot: slot {pin.slot} is pinned twice")
        if pin.product_id in pinned:
            raise ControlConflictError(f"{where}.product_id: {pin.product_id!r} is pinned twice")
        if pin.product_id in controls.exclude:
            raise ControlConflictError(f"{where}.product_id: {pin.product_id!r} is also "
                                      f"excluded")
        slots.add(pin.slot)
        pinned.add(pin.product_id)
    for i, b in enumerate(controls.boosts):
        where = f"boosts[{i}]"
        if (b.product_id is None) == (b.category is None):
            raise ControlConflictError(f"{where}: give exactly one of product_id and category")
        if b.product_id is not None:
            cat.indices([b.product_id], f"{where}.product_id")
        else:
            cat.category_codes(frozenset([b.category]), f"{where}.category")  # type: ignore[list-item]
        if not (math.isfinite(b.add) and abs(b.add) <= limits.max_boost_add):
            raise ControlConflictError(f"{where}.add: {b.add} not within "
                                      f"+-{limits.max_boost_add:g} (RTREC_MAX_BOOST_ADD)")
        top = limits.max_boost_multiply
        if not (math.isfinite(b.multiply) and 1 / top <= b.multiply <= top):
            raise ControlConflictError(f"{where}.multiply: {b.multiply} not in {1 / top:g}.."
                                      f"{top:g} (RTREC_MAX_BOOST_MULTIPLY)")
    if controls.max_per_category is not None and controls.max_per_category < 1:
        raise InvalidRequestError(f"max_per_category: must be >= 1, got "
                                  f"{controls.max_per_category}")
    if not (math.isfinite(controls.mmr_lambda) and 0.0 <= controls.mmr_lambda <= 1.0):
        raise InvalidRequestError(f"mmr_lambda: must be in 0..1, got {controls.mmr_lambda}")


def is_plain(controls: Controls, cat: CatalogIndex) -> bool:
    """Whether these controls change nothing (the recommender then takes the plain path)."""
    return (asks_nothing(controls) and not (controls.in_stock_only and cat.out_of_stock)
            and not cat.hidden_ids)


def asks_nothing(controls: Controls) -> bool:
    """Whether nothing but the catalog's own flags (retired, out of stock under the default
    ``in_stock_only``) may hide a product: the recommender then ranks on the plain path over
    :func:`visible` products, with every policy's sampling and probabilities, instead of the
    controls' selection (which logs none)."""
    return (not controls.exclude and controls.include_categories is None
            and not controls.exclude_categories and not controls.pins and not controls.boosts
            and controls.max_per_category is None and controls.mmr_lambda == 0.0)


@dataclass(frozen=True)
class Visible:
    """The products a request that asks for no control may show, and what the impression logs
    about them (the fields :class:`Selection` logs)."""

    indices: np.ndarray  # (n,) into the catalog, ascending
    mask: np.ndarray  # (m,)
    applied: tuple[str, ...]
    eligible_n: int
    eligible_hash: str
    eligible: tuple[str, ...] | None


def visible(controls: Controls, cat: CatalogIndex, limits: Limits) -> Visible:
    """The products the catalog's flags leave (``controls`` asks nothing else:
    :func:`asks_nothing`), computed once per state of the flags and cached on the index (the
    flags are swapped as whole arrays, so their identity says when they changed)."""
    key = (cat.hidden, cat.in_stock, controls.in_stock_only, limits.eligible_list_max)
    cached = cat.visible_cache  # one read: another thread may swap it
    if cached is not None and all(a is b if isinstance(a, np.ndarray) else a == b
                                  for a, b in zip(cached[0], key, strict=True)):
        return cached[1]
    mask, applied = eligible_mask(controls, cat)
    n = int(np.count_nonzero(mask))
    if n == 0:
        raise ControlConflictError("controls: no product is eligible (the catalog's retired "
                                  "and out-of-stock products leave none)")
    listed = (tuple(cat.product_ids[i] for i in np.flatnonzero(mask))
              if n <= limits.eligible_list_max else None)
    out = Visible(np.flatnonzero(mask), mask, tuple(applied), n, eligible_digest(mask), listed)
    cat.visible_cache = (key, out)
    return out


def eligible_digest(mask: np.ndarray) -> str:
    """The impression's ``eligible_hash``: which products were eligible, in 16 hex digits."""
    return hashlib.blake2b(np.packbits(mask).tobytes(), digest_size=8).hexdigest()


def eligible_mask(controls: Controls, cat: CatalogIndex) -> tuple[np.ndarray, list[str]]:
    """(m,) bool: the products this request may show (pins included), and what filtered."""
    applied = []
    m = len(cat)
    if controls.in_stock_only and cat.out_of_stock:
        mask = cat.in_stock.copy()
        applied.append(f"in_stock:{m - int(np.count_nonzero(mask))}")
    else:
        mask = np.ones(m, dtype=bool)
    if controls.include_categories is not None:
        keep = np.zeros(m, dtype=bool)
        for c in cat.category_codes(controls.include_categories, "include_categories"):
            keep |= cat.category_of == c
        mask &= keep
        applied.append(f"include_categories:{len(controls.include_categories)}")
    if controls.exclude_categories:
        for c in cat.category_codes(controls.exclude_categories, "exclude_categories"):
            mask &= cat.category_of != c
        applied.append(f"exclude_categories:{len(controls.exclude_categories)}")
    if controls.exclude:
        mask[cat.indices(controls.exclude, "exclude")] = False
        applied.append(f"exclude:{len(controls.exclude)}")
    hidden = cat.hidden
    if cat.hidden_ids:  # retired from the live catalog: whatever the request asked
        mask &= ~hidden
        applied.append(f"retired:{int(np.count_nonzero(hidden))}")
    return mask, applied


def apply_boosts(scores: np.ndarray, boosts: Sequence[Boost], cat: CatalogIndex) -> np.ndarray:
    """The scores after boosts (a new array): per category by one gather, per product by
    index; a product in a boosted category and boosted itself gets both."""
    ncat = len(cat.categories)
    mul_c, add_c = np.ones(ncat), np.zeros(ncat)
    prod: list[tuple[int, Boost]] = []
    for b in boosts:
        if b.category is not None:
            c = cat.categories.index(b.category)
            mul_c[c] *= b.multiply
            add_c[c] += b.add
        else:
            prod.append((cat.index[b.product_id], b))  # type: ignore[index]
    mul = mul_c[cat.category_of]
    add = add_c[cat.category_of]
    for i, b in prod:
        mul[i] *= b.multiply
        add[i] += b.add
    out = np.abs(scores)
    out *= mul - 1.0
    out += scores
    out += add
    return out


def select(policy: str, scores: np.ndarray, cat: CatalogIndex, controls: Controls, k: int,
           rng: np.random.Generator | Callable[[], np.random.Generator],
           limits: Limits = Limits()) -> Selection:
    """Choose up to k products under ``controls``.

    ``linucb`` and ``greedy`` (``scores`` already computed with their alpha) take the best
    eligible products, within the category cap, re-ranked by MMR when ``mmr_lambda > 0``;
    ``random`` draws each free slot uniformly from the eligible products the cap still
    allows, and the propensity is the product of those draws' probabilities (exact for this
    sampler). Pinned products take their slots (when eligible) under every policy; they are
    not drawn, so they add nothing to the propensity. ``rng`` is a generator, or a function
    returning one (built only when needed: ties, or the random policy).
    """
    get_rng = rng if callable(rng) else (lambda: rng)  # type: ignore[truthy-function]
    mask, applied = eligible_mask(controls, cat)
    boosted = None
    if controls.boosts:
        boosted = apply_boosts(scores, controls.boosts, cat)
        scores = boosted
        applied.append(f"boost:{len(controls.boosts)}")
    eligible_n = int(np.count_nonzero(mask))
    if eligible_n == 0:
        raise ControlConflictError("controls: no product is eligible (exclusions, stock and "
                                  "categories leave none)")
    pins: list[tuple[int, int]] = []  # (slot, index)
    for pin in sorted(controls.pins, key=lambda p: p.slot):
        i = cat.index[pin.product_id]
        if mask[i] and pin.slot < k:
            pins.append((pin.slot, i))
            applied.append(f"pin:{pin.product_id}@{pin.slot}")
        else:
            applied.append(f"pin_skipped:{pin.product_id}")
    pinned = [i for _, i in pins]
    free = mask
    if pinned:
        free = mask.copy()
        free[pinned] = False
    n_free = min(k - len(pins), eligible_n - len(pins))
    cap = controls.max_per_category
    counts = np.zeros(len(cat.categories), dtype=np.int64)
    for i in pinned:
        counts[cat.category_of[i]] += 1
    if cap is not None:
        applied.append(f"max_per_category:{cap}")
    propensity: float | None = 1.0
    if policy == "random":
        chosen, propensity = _draw(free, n_free, cat, cap, counts, get_rng())
    elif cap is None and controls.mmr_lambda == 0.0:
        chosen = top_desc(np.where(free, scores, -np.inf), n_free, get_rng)
    else:
        if controls.mmr_lambda > 0:
            applied.append(f"mmr:{controls.mmr_lambda:g}")
        chosen = _rerank(scores, free, n_free, cat, cap, counts, controls.mmr_lambda, pinned,
                         limits, get_rng)
    shown = list(chosen.tolist())
    for slot, i in pins:
        shown.insert(min(slot, len(shown)), i)
    idx = np.asarray(shown, dtype=np.int64)
    listed = None
    if eligible_n <= limits.eligible_list_max:
        listed = tuple(cat.product_ids[i] for i in np.flatnonzero(mask))
    digest = eligible_digest(mask)
    return Selection(idx, scores[idx], propensity, tuple(applied), eligible_n, digest, listed,
                     boosted, mask)


def _draw(free: np.ndarray, n: int, cat: CatalogIndex, cap: int | None, counts: np.ndarray,
          g: np.random.Generator) -> tuple[np.ndarray, float | None]:
    """Uniform draws without replacement from ``free``, each among what the cap allows."""
    cand = np.flatnonzero(free)
    if n <= 0:
        return np.empty(0, dtype=np.int64), 1.0
    if cap is None:
        n_perm = math.perm(cand.size, n)
        return g.choice(cand, n, replace=False), (1.0 / n_perm if n_perm < 1e300 else None)
    counts = counts.copy()
    cats = cat.category_of[cand]
    taken = np.zeros(cand.size, dtype=bool)
    out = []
    p = 1.0
    for _ in range(n):
        allowed = np.flatnonzero(~taken & (counts[cats] < cap))
        if allowed.size == 0:
            break
        j = allowed[g.integers(allowed.size)]
        p /= allowed.size
        taken[j] = True
        counts[cats[j]] += 1
        out.append(cand[j])
    return np.asarray(out, dtype=np.int64), p


def _rerank(scores: np.ndarray, free: np.ndarray, n: int, cat: CatalogIndex, cap: int | None,
            counts: np.ndarray, lam: float, pinned: list[int], limits: Limits,
            rng: Callable[[], np.random.Generator]) -> np.ndarray:
    """Greedy selection over the best eligible candidates: each step takes the candidate of
    highest ``(1 - lam) * relevance - lam * max similarity to what is already shown`` among
    those under the cap. Relevance is the score min-max scaled over the pool, similarity
    ``(1 - w) * [same category] + w * (1 - |attribute difference|)``; with lam = 0 this is
    the plain ranking restricted by the cap. The pool is the best ``RTREC_MMR_POOL`` (at least
    4k); if the cap exhausts it, every eligible product is tried."""
    if n <= 0:
        return np.empty(0, dtype=np.int64)
    masked = np.where(free, scores, -np.inf)
    n_free = int(np.count_nonzero(free))
    pool_n = min(n_free, max(limits.mmr_pool, 4 * n))
    while True:
        pool = top_desc(masked, pool_n, rng)
        out = _greedy(scores[pool], pool, n, cat, cap, counts, lam, pinned,
                      limits.mmr_attribute_weight)
        if len(out) == n or pool_n >= n_free:
            return pool[out] if out else np.empty(0, dtype=np.int64)
        pool_n = n_free


def _greedy(s: np.ndarray, pool: np.ndarray, n: int, cat: CatalogIndex, cap: int | None,
            counts: np.ndarray, lam: float, pinned: list[int], w: float) -> list[int]:
    """Positions in ``pool`` (sorted best first) picked by MMR under the cap.

    ``cur[i]`` is candidate i's MMR value given what is shown, -inf once taken or capped.
    Showing j raises every max similarity to at least ``sim[j]``, so the values become
    ``min(cur, value - lam * sim[j])``: with ``value - lam * sim`` built once (P x P,
    P ~ 50), a step is an argmax and one row minimum."""
    pc = cat.category_of[pool]
    span = s[0] - s[-1] if s.size else 0.0
    rel = (s - s[-1]) / span if span > 0 else np.zeros(s.size)
    cur = (1.0 - lam) * rel
    drop = None
    if lam > 0:
        pa = cat.attribute[pool]
        sim = (pc[:, None] == pc[None, :]) * (1.0 - w)
        sim += w * (1.0 - np.abs(pa[:, None] - pa[None, :]))
        drop = cur[None, :] - lam * sim  # row j: the values once j is shown
        for i in pinned:  # what is already shown: the pins
            pin_sim = (pc == cat.category_of[i]) * (1.0 - w)
            pin_sim += w * (1.0 - np.abs(pa - cat.attribute[i]))
            np.minimum(cur, (1.0 - lam) * rel - lam * pin_sim, out=cur)
    counts = counts.copy()
    if cap is not None:
        for c in np.flatnonzero(counts >= cap):  # categories the pins already filled
            cur[pc == c] = -np.inf
    out: list[int] = []
    for _ in range(n):
        j = int(cur.argmax())  # the first maximum: pool order, so lam = 0 is the plain order
        if cur[j] == -np.inf:
            break
        out.append(j)
        if drop is not None:
            np.minimum(cur, drop[j], out=cur)
        cur[j] = -np.inf
        c = pc[j]
        counts[c] += 1
        if cap is not None and counts[c] >= cap:
            cur[pc == c] = -np.inf
    return out


def describe(controls: Controls) -> Mapping[str, Any]:
    """The controls as JSON-able values (the explain answer and the docs' examples)."""
    return {
        "exclude": sorted(controls.exclude), "in_stock_only": controls.in_stock_only,
        "include_categories": (None if controls.include_categories is None
                               else sorted(controls.include_categories)),
        "exclude_categories": sorted(controls.exclude_categories),
        "pins": [{"product_id": p.product_id, "slot": p.slot} for p in controls.pins],
        "boosts": [{k: v for k, v in vars(b).items() if v is not None} for b in controls.boosts],
        "max_per_category": controls.max_per_category, "mmr_lambda": controls.mmr_lambda,
    }
