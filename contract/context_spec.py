"""The context x as configuration: a versioned feature-spec file says which user and time
attributes make x, how each is encoded, its buckets and its crosses (docs/FEATURES.md).

The bandit's d is the spec's number of columns. Serving builds x from the spec, the job
learns from the x serving logged and records which spec it learns under (``<prefix>:spec`` in
Redis, :func:`claim_store`), and serving refuses parameters published under another spec
(:func:`spec_conflict`): a parameter vector only means something against the columns it was
learned on. The file is JSON (never pickle) and is validated as a whole on load; every error
names the feature and what is wrong.

Attributes (:data:`ATTRIBUTES`): the user's ``age``, ``lat``, ``lon`` (numbers), ``gender``
and ``source`` (categories); the visit's UTC ``hour`` (0..23) and ``weekday`` (0 Monday ..
6 Sunday). Kinds of feature, each a block of columns named ``<name>`` or ``<name>_<value>``:

- ``scale``: one column, a number min-max scaled and clipped to [0, 1] (``min``/``max``; left
  out for age, lat, lon: the ranges fitted in contract/data/features.json);
- ``onehot``: one column per listed category of a category attribute;
- ``buckets``: one column per bucket, each a list of half-open ``ranges`` [lo, hi) of a number
  or ``values`` of a category, or ``"rest": true`` (whatever no other bucket holds);
- ``cross``: one column per combination of two or more one-hot/bucket blocks (``keep``: only
  these combinations); ``"emit": false`` on a block keeps it out of x, for use in crosses.

>>> spec = load_spec()
>>> spec.ref, spec.dim, spec.names[10:13]
('shipped@1', 15, ('tod_morning', 'tod_afternoon', 'tod_evening'))
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from contract.features import DATA_DIR, GENDERS, SOURCES, FeatureError, User

SPEC_FORMAT = "rtrec.context_spec"
SPEC_FORMAT_VERSION = 1
SHIPPED_SPEC = DATA_DIR / "context_spec.json"
KINDS = ("scale", "onehot", "buckets", "cross")


@dataclass(frozen=True)
class Attribute:
    """What a spec can build x from: a user's field or the visit's time."""

    source: str  # "user" or "time"
    kind: str  # "number" or "category"
    values: tuple[str, ...] = ()  # a category's allowed values


ATTRIBUTES: dict[str, Attribute] = {
    "age": Attribute("user", "number"),
    "lat": Attribute("user", "number"),
    "lon": Attribute("user", "number"),
    "gender": Attribute("user", "category", GENDERS),
    "source": Attribute("user", "category", SOURCES),
    "hour": Attribute("time", "number"),  # the visit's UTC hour, 0..23
    "weekday": Attribute("time", "number"),  # 0 Monday .. 6 Sunday
}
FITTED = ("age", "lat", "lon")  # the attributes contract/data/features.json has ranges for
_KEYS = {"scale": {"name", "kind", "attribute", "min", "max", "emit", "doc"},
         "onehot": {"name", "kind", "attribute", "categories", "emit", "doc"},
         "buckets": {"name", "kind", "attribute", "buckets", "emit", "doc"},
         "cross": {"name", "kind", "of", "keep", "emit", "doc"}}


class SpecError(FeatureError):
    """A feature-spec file that cannot be used; the message names the feature and the fault."""


@dataclass(frozen=True)
class Block:
    """One validated feature of the spec: its columns' labels and how a row picks one.

    ``labels`` are the categorical values (one column each; a scale block has one, its
    name). ``ranges[i]``/``values[i]`` are bucket i's; ``rest`` the index of the rest bucket.
    """

    name: str
    kind: str
    attribute: str | None
    labels: tuple[str, ...]
    emit: bool = True
    lo: float = 0.0
    hi: float = 1.0
    ranges: tuple[tuple[tuple[float, float], ...], ...] = ()
    values: tuple[tuple[str, ...], ...] = ()
    rest: int | None = None
    of: tuple[str, ...] = ()
    keep: tuple[tuple[str, ...], ...] = ()  # a cross's combinations, in column order

    @property
    def columns(self) -> tuple[str, ...]:
        if self.kind == "scale":
            return (self.name,)
        return tuple(f"{self.name}_{label}" for label in self.labels)


@dataclass(frozen=True)
class ContextSpec:
    """A validated feature spec: ``names`` are x's columns, ``dim`` the bandit's d.

    ``digest`` covers everything that decides x (the blocks with their resolved ranges), so two
    specs with one digest build the same x from the same visit; ``ref`` (``name@version``) is
    what people read.
    """

    name: str
    version: int
    blocks: tuple[Block, ...]
    doc: str = ""

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c for b in self.blocks if b.emit for c in b.columns)

    @property
    def dim(self) -> int:
        return len(self.names)

    @property
    def digest(self) -> str:
        body = json.dumps([_block_json(b) for b in self.blocks], sort_keys=True,
                          separators=(",", ":"))
        return hashlib.sha256(body.encode()).hexdigest()[:16]

    def count_block(self) -> tuple[int, ...] | None:
        """Columns of x of which every visit sets exactly one (a time block first): summed
        over them, b is the clicks and diag A - l2 the observations, which the calibrated
        exploration reads back from published parameters (contract/exploration.py). None:
        no block is complete (every onehot lists fewer values, every bucket set has gaps)."""
        col, found = 0, []
        for b in self.blocks:
            width = 1 if b.kind == "scale" else len(b.labels)
            if b.emit and b.kind != "scale" and self._complete(b):
                found.append((ATTRIBUTES[b.attribute].source != "time" if b.attribute
                              else True, tuple(range(col, col + width))))
            col += width if b.emit else 0
        return min(found)[1] if found else None

    def _complete(self, b: Block) -> bool:
        if b.kind == "cross":
            return (len(b.keep) == math.prod(len(self._block(o).labels) for o in b.of)
                    and all(self._complete(self._block(o)) for o in b.of))
        if b.kind == "onehot":
            return set(b.labels) == set(ATTRIBUTES[b.attribute].values)  # type: ignore[index]
        if b.rest is not None:
            return True
        domain = {"hour": range(24), "weekday": range(7)}.get(b.attribute)  # type: ignore[arg-type]
        if domain is None:
            return False
        raw = {b.attribute: np.array(domain, dtype=np.float64)}
        return bool((self._codes(b, raw, {}) >= 0).all())  # type: ignore[arg-type]

    def identity(self) -> dict[str, Any]:
        """What the job records in ``<prefix>:spec`` and serving compares."""
        return {"name": self.name, "version": self.version, "digest": self.digest,
                "dim": self.dim}

    # --- applying it -------------------------------------------------------------------
    def matrix(self, users: Sequence[User], times: Sequence[datetime]) -> np.ndarray:
        """x for many visits, shape (n, dim), float64."""
        if len(users) != len(times):
            raise FeatureError(f"times: {len(times)} times for {len(users)} users")
        n = len(users)
        out = np.zeros((n, self.dim), dtype=np.float64)
        if n == 0:
            return out
        raw = _attributes(users, times, {b.attribute for b in self.blocks if b.attribute})
        codes: dict[str, np.ndarray] = {}
        col = 0
        rows = np.arange(n)
        for b in self.blocks:
            if b.kind == "scale":
                span = b.hi - b.lo if b.hi > b.lo else 1.0
                value = np.clip((raw[b.attribute] - b.lo) / span, 0.0, 1.0)  # type: ignore[index]
                if b.emit:
                    out[:, col] = value
                    col += 1
                continue
            code = self._codes(b, raw, codes)
            codes[b.name] = code
            if b.emit:
                hit = code >= 0
                out[rows[hit], col + code[hit]] = 1.0
                col += len(b.labels)
        return out

    def time_key(self, at: datetime) -> tuple[int, ...]:
        """What x takes from the time: equal keys, equal x for one user (serving caches x by
        user and key). A table lookup: x depends on the time only through hour and weekday."""
        return self._time_keys[at.hour * 7 + at.weekday()]

    @functools.cached_property
    def _time_keys(self) -> tuple[tuple[int, ...], ...]:
        hours = np.repeat(np.arange(24, dtype=np.float64), 7)
        raw = {"hour": hours, "weekday": np.tile(np.arange(7, dtype=np.float64), 24)}
        cols = [raw[b.attribute].astype(np.int64) if b.kind == "scale"
                else self._codes(b, raw, {}) for b in self.blocks if b.attribute in raw]
        if not cols:
            return ((),) * (24 * 7)
        return tuple(tuple(int(v) for v in row) for row in np.stack(cols, axis=1))

    def _codes(self, b: Block, raw: Mapping[str, np.ndarray],
               codes: Mapping[str, np.ndarray]) -> np.ndarray:
        """Which of the block's columns each row sets (-1: none)."""
        if b.kind == "cross":
            parts = [codes[name] for name in b.of]
            sizes = [len(self._block(name).labels) for name in b.of]
            flat = np.zeros_like(parts[0])
            for code, size in zip(parts, sizes, strict=True):
                flat = flat * size + code
            table = np.full(math.prod(sizes), -1, dtype=np.int64)
            for j, combo in enumerate(b.keep):
                f = 0
                for name, label, size in zip(b.of, combo, sizes, strict=True):
                    f = f * size + self._block(name).labels.index(label)
                table[f] = j
            valid = np.all(np.stack(parts) >= 0, axis=0)
            return np.where(valid, table[np.where(valid, flat, 0)], -1)
        v = raw[b.attribute]  # type: ignore[index]
        code = np.full(len(v), -1, dtype=np.int64)
        if b.kind == "onehot":
            for j, label in enumerate(b.labels):
                code[v == label] = j
            return code
        for j in range(len(b.labels)):
            if j == b.rest:
                continue
            if b.values and b.values[j]:
                code[np.isin(v, b.values[j])] = j
            for lo, hi in b.ranges[j] if b.ranges else ():
                code[(v >= lo) & (v < hi)] = j
        if b.rest is not None:
            code[code < 0] = b.rest
        return code

    def _block(self, name: str) -> Block:
        return next(b for b in self.blocks if b.name == name)


def _attributes(users: Sequence[User], times: Sequence[datetime],
                wanted: set[str | None]) -> dict[str, np.ndarray]:
    n = len(users)
    out: dict[str, np.ndarray] = {}
    for name in wanted:
        if name in ("age", "lat", "lon"):
            out[name] = np.fromiter((getattr(u, name) for u in users), dtype=np.float64, count=n)
        elif name in ("gender", "source"):
            out[name] = np.array([getattr(u, name) for u in users], dtype=object)
        elif name == "hour":
            out[name] = np.fromiter((t.hour for t in times), dtype=np.float64, count=n)
        elif name == "weekday":
            out[name] = np.fromiter((t.weekday() for t in times), dtype=np.float64, count=n)
    return out


def _block_json(b: Block) -> dict[str, Any]:
    d: dict[str, Any] = {"name": b.name, "kind": b.kind, "emit": b.emit}
    if b.kind == "scale":
        d.update(attribute=b.attribute, min=b.lo, max=b.hi)
    elif b.kind == "onehot":
        d.update(attribute=b.attribute, categories=list(b.labels))
    elif b.kind == "buckets":
        d.update(attribute=b.attribute, buckets=[
            {"name": label, "rest": j == b.rest,
             "ranges": [list(r) for r in b.ranges[j]] if b.ranges else [],
             "values": list(b.values[j]) if b.values else []}
            for j, label in enumerate(b.labels)])
    else:
        d.update(of=list(b.of), keep=[list(k) for k in b.keep])
    return d


# --- loading and validating ------------------------------------------------------------
def parse_spec(d: Any, fitted: Mapping[str, tuple[float, float]] | None = None) -> ContextSpec:
    """Validate a spec (the parsed JSON) and resolve it; :class:`SpecError` names the fault.

    ``fitted`` gives the min-max ranges of a ``scale`` block that has none (age, lat, lon:
    contract/data/features.json's by default).
    """
    if not isinstance(d, dict):
        raise SpecError("spec: expected a JSON object")
    if d.get("format") != SPEC_FORMAT:
        raise SpecError(f"format: expected {SPEC_FORMAT!r}, got {d.get('format')!r}")
    if d.get("format_version") != SPEC_FORMAT_VERSION:
        raise SpecError(f"format_version: {d.get('format_version')!r} is not supported "
                        f"(this code reads {SPEC_FORMAT_VERSION})")
    unknown = set(d) - {"format", "format_version", "name", "version", "doc", "features"}
    if unknown:
        raise SpecError(f"spec: unknown key(s) {', '.join(sorted(unknown))}")
    name, version = d.get("name"), d.get("version")
    if not (isinstance(name, str) and name and "@" not in name):
        raise SpecError(f"name: a non-empty string without '@', got {name!r}")
    if not (type(version) is int and version >= 1):
        raise SpecError(f"version: an integer >= 1, got {version!r}")
    feats = d.get("features")
    if not (isinstance(feats, list) and feats):
        raise SpecError("features: a non-empty list of features")
    if fitted is None:
        fitted = _shipped_ranges()
    blocks: list[Block] = []
    for i, f in enumerate(feats):
        where = f"features[{i}]"
        if isinstance(f, dict) and isinstance(f.get("name"), str):
            where = f"feature {f['name']!r}"
        blocks.append(_parse_block(f, where, {b.name: b for b in blocks}, fitted))
    spec = ContextSpec(name, version, tuple(blocks), str(d.get("doc", "")))
    if spec.dim == 0:
        raise SpecError("features: every feature has emit false: x would be empty")
    dup = sorted({c for c in spec.names if spec.names.count(c) > 1})
    if dup:
        raise SpecError(f"features: column name(s) {', '.join(dup)} appear twice")
    return spec


def _parse_block(f: Any, where: str, seen: dict[str, Block],
                 fitted: Mapping[str, tuple[float, float]]) -> Block:
    if not isinstance(f, dict):
        raise SpecError(f"{where}: expected an object")
    kind, name = f.get("kind"), f.get("name")
    if kind not in KINDS:
        raise SpecError(f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}")
    if not (isinstance(name, str) and name.replace("_", "").isalnum()):
        raise SpecError(f"{where}: name must be letters, digits and _, got {name!r}")
    if name in seen:
        raise SpecError(f"{where}: defined twice")
    unknown = set(f) - _KEYS[kind]
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} for kind {kind}")
    emit = f.get("emit", True)
    if not isinstance(emit, bool):
        raise SpecError(f"{where}: emit must be true or false")
    if kind == "cross":
        return _parse_cross(f, where, name, emit, seen)
    attr_name = f.get("attribute")
    attr = ATTRIBUTES.get(attr_name) if isinstance(attr_name, str) else None
    if attr is None:
        raise SpecError(f"{where}: unknown attribute {attr_name!r}; known: "
                        f"{', '.join(ATTRIBUTES)}")
    if kind == "scale":
        if attr.kind != "number":
            raise SpecError(f"{where}: scale needs a number; {attr_name} is a category "
                            f"(use onehot or buckets)")
        if "min" in f or "max" in f:
            lo, hi = _number(f.get("min"), f"{where}: min"), _number(f.get("max"), f"{where}: max")
        elif attr_name in fitted:
            lo, hi = (float(v) for v in fitted[attr_name])
        else:
            raise SpecError(f"{where}: min and max are needed (no fitted range for "
                            f"{attr_name}; fitted: {', '.join(fitted)})")
        if not lo < hi:
            raise SpecError(f"{where}: min {lo} must be below max {hi}")
        return Block(name, kind, attr_name, (name,), emit, lo=lo, hi=hi)
    if kind == "onehot":
        if attr.kind != "category":
            raise SpecError(f"{where}: onehot needs a category; {attr_name} is a number "
                            f"(use buckets)")
        cats = f.get("categories")
        if not (isinstance(cats, list) and cats):
            raise SpecError(f"{where}: categories must be a non-empty list")
        for c in cats:
            if c not in attr.values:
                raise SpecError(f"{where}: category {c!r} is not a value of {attr_name} "
                                f"({', '.join(attr.values)})")
        if len(set(cats)) != len(cats):
            raise SpecError(f"{where}: a category is listed twice")
        return Block(name, kind, attr_name, tuple(cats), emit)
    return _parse_buckets(f, where, name, emit, attr_name, attr)


def _number(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise SpecError(f"{where}: a finite number, got {v!r}")
    return float(v)


def _parse_buckets(f: dict, where: str, name: str, emit: bool, attr_name: str,
                   attr: Attribute) -> Block:
    buckets = f.get("buckets")
    if not (isinstance(buckets, list) and buckets):
        raise SpecError(f"{where}: buckets must be a non-empty list")
    labels: list[str] = []
    ranges: list[tuple[tuple[float, float], ...]] = []
    values: list[tuple[str, ...]] = []
    rest: int | None = None
    for j, bk in enumerate(buckets):
        bw = f"{where}, bucket {j}"
        if not isinstance(bk, dict) or not isinstance(bk.get("name"), str) or not bk["name"]:
            raise SpecError(f"{bw}: an object with a non-empty name")
        bw = f"{where}, bucket {bk['name']!r}"
        extra = set(bk) - {"name", "ranges", "values", "rest"}
        if extra:
            raise SpecError(f"{bw}: unknown key(s) {', '.join(sorted(extra))}")
        if bk["name"] in labels:
            raise SpecError(f"{bw}: defined twice")
        labels.append(bk["name"])
        if bk.get("rest") is True:
            if rest is not None:
                raise SpecError(f"{bw}: only one bucket can be the rest")
            if "ranges" in bk or "values" in bk:
                raise SpecError(f"{bw}: the rest bucket has no ranges or values")
            rest = j
            ranges.append(())
            values.append(())
            continue
        if attr.kind == "number":
            if "values" in bk:
                raise SpecError(f"{bw}: {attr_name} is a number: use ranges, not values")
            rs = bk.get("ranges")
            if not (isinstance(rs, list) and rs):
                raise SpecError(f"{bw}: empty bucket (ranges must be a non-empty list of "
                                f"[lo, hi))")
            parsed = []
            for r in rs:
                if not (isinstance(r, list) and len(r) == 2):
                    raise SpecError(f"{bw}: a range is [lo, hi], got {r!r}")
                lo, hi = _number(r[0], f"{bw}: lo"), _number(r[1], f"{bw}: hi")
                if not lo < hi:
                    raise SpecError(f"{bw}: empty bucket: range [{lo:g}, {hi:g}) holds nothing")
                parsed.append((lo, hi))
            ranges.append(tuple(parsed))
            values.append(())
        else:
            if "ranges" in bk:
                raise SpecError(f"{bw}: {attr_name} is a category: use values, not ranges")
            vs = bk.get("values")
            if not (isinstance(vs, list) and vs):
                raise SpecError(f"{bw}: empty bucket (values must be a non-empty list)")
            for v in vs:
                if v not in attr.values:
                    raise SpecError(f"{bw}: {v!r} is not a value of {attr_name} "
                                    f"({', '.join(attr.values)})")
            values.append(tuple(vs))
            ranges.append(())
    _check_overlaps(where, labels, ranges, values)
    return Block(name, "buckets", attr_name, tuple(labels), emit,
                 ranges=tuple(ranges) if attr.kind == "number" else (),
                 values=tuple(values) if attr.kind == "category" else (), rest=rest)


def _check_overlaps(where: str, labels: list[str],
                    ranges: list[tuple[tuple[float, float], ...]],
                    values: list[tuple[str, ...]]) -> None:
    spans = [(lo, hi, labels[j]) for j, rs in enumerate(ranges) for lo, hi in rs]
    spans.sort()
    for (lo1, hi1, a), (lo2, hi2, b) in itertools.pairwise(spans):
        if lo2 < hi1:
            raise SpecError(f"{where}: buckets overlap: {a!r} [{lo1:g}, {hi1:g}) and "
                            f"{b!r} [{lo2:g}, {hi2:g})")
    owner: dict[str, str] = {}
    for j, vs in enumerate(values):
        for v in vs:
            if v in owner:
                raise SpecError(f"{where}: buckets overlap: {v!r} is in {owner[v]!r} and "
                                f"{labels[j]!r}")
            owner[v] = labels[j]


def _parse_cross(f: dict, where: str, name: str, emit: bool, seen: dict[str, Block]) -> Block:
    of = f.get("of")
    if not (isinstance(of, list) and len(of) >= 2 and all(isinstance(o, str) for o in of)):
        raise SpecError(f"{where}: of must list two or more feature names")
    if len(set(of)) != len(of):
        raise SpecError(f"{where}: crosses a feature with itself")
    parts = []
    for o in of:
        b = seen.get(o)
        if b is None:
            raise SpecError(f"{where}: crosses {o!r}, which is not defined before it")
        if b.kind not in ("onehot", "buckets"):
            raise SpecError(f"{where}: crosses {o!r} of kind {b.kind}; only onehot and "
                            f"buckets features can be crossed")
        parts.append(b)
    every = [()]  # type: list[tuple[str, ...]]
    for b in parts:
        every = [(*c, label) for c in every for label in b.labels]
    keep = f.get("keep")
    if keep is None:
        combos = every
    else:
        if not (isinstance(keep, list) and keep):
            raise SpecError(f"{where}: keep must be a non-empty list of combinations")
        combos = []
        for k in keep:
            combo = tuple(k) if isinstance(k, list) else None
            if combo not in every:
                raise SpecError(f"{where}: keep {k!r} is not a combination of "
                                f"{' x '.join(of)} (one value of each, in that order)")
            if combo in combos:
                raise SpecError(f"{where}: keep lists {k!r} twice")
            combos.append(combo)  # type: ignore[arg-type]
    labels = tuple("_".join(c) for c in combos)
    return Block(name, "cross", None, labels, emit, of=tuple(of), keep=tuple(combos))


def _shipped_ranges() -> dict[str, tuple[float, float]]:
    from contract.features import FeatureSpace

    return FeatureSpace.load().fitted_ranges()


def load_spec(path: str | Path | None = None,
              fitted: Mapping[str, tuple[float, float]] | None = None) -> ContextSpec:
    """Read and validate a spec file (default: the shipped contract/data/context_spec.json)."""
    path = Path(path) if path else SHIPPED_SPEC
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the feature spec: {exc}") from exc
    except (ValueError, RecursionError) as exc:
        raise SpecError(f"{path}: not valid JSON: {exc}") from exc
    try:
        return parse_spec(d, fitted)
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from None


_COUNT_BLOCKS: dict[int, tuple[int, ...] | None] = {}
_NAMES: dict[int, tuple[str, ...]] = {}


def use_for_counts(spec: ContextSpec) -> None:
    """Make ``spec`` the layout of x of its d in this process (a process serves one spec;
    ``FeatureSpace.context`` calls it): the calibrated exploration reads counts through its
    :meth:`ContextSpec.count_block`, serving's explanations name x's columns by it."""
    _COUNT_BLOCKS[spec.dim] = spec.count_block()
    _NAMES[spec.dim] = spec.names


def names_for(dim: int) -> tuple[str, ...] | None:
    """The column names of x of length ``dim`` (the spec in use, else the shipped one's)."""
    from contract.features import CONTEXT_DIM, CONTEXT_NAMES

    return _NAMES.get(dim) or (CONTEXT_NAMES if dim == CONTEXT_DIM else None)


def count_block(dim: int) -> tuple[int, ...] | None:
    """The count block of the spec in use for ``dim`` (the shipped spec's for its d, unless
    another spec of that d is in use); None: unknown layout."""
    if dim in _COUNT_BLOCKS:
        return _COUNT_BLOCKS[dim]
    from contract.features import CONTEXT_DIM

    if dim != CONTEXT_DIM:
        return None
    block = load_spec(fitted=dict.fromkeys(FITTED, (0.0, 1.0))).count_block()
    return _COUNT_BLOCKS.setdefault(dim, block)


def spec_dim(path: str | Path | None = None) -> int:
    """The d a spec file gives (its number of columns; no fitted ranges are read)."""
    return load_spec(path, fitted=dict.fromkeys(FITTED, (0.0, 1.0))).dim


# --- the store: which spec its parameters were learned under ----------------------------
def spec_conflict(stored: Mapping[str, Any] | None, mine: Mapping[str, Any],
                  has_params: bool, shipped: Mapping[str, Any] | None = None) -> str | None:
    """Why parameters in a store cannot be used under spec ``mine`` (None: they can).

    ``stored`` is the store's recorded identity (:meth:`ContextSpec.identity`; None: not
    recorded). A recorded spec that is not ``mine`` conflicts even before its first parameter
    (a reader must not take the ones about to come). Parameters without a record were
    published before specs were recorded, all under the shipped spec (``shipped``: its
    identity; None, the shipped file's); no record and no parameters conflict with nothing.
    """
    if stored is None and not has_params:
        return None
    if stored is None:
        stored = shipped if shipped is not None else _shipped_identity()
        how = "unrecorded, so the shipped spec's"
    else:
        how = "recorded"
    if stored.get("digest") == mine.get("digest"):
        return None
    return (f"parameters were learned under feature spec {stored.get('name')}@"
            f"{stored.get('version')} (digest {stored.get('digest')}, d={stored.get('dim')}; "
            f"{how}), not this one's {mine['name']}@{mine['version']} (digest "
            f"{mine['digest']}, d={mine['dim']})")


@functools.cache
def _shipped_identity() -> dict[str, Any]:
    """The shipped spec's identity (read once: serving compares at every probe)."""
    return load_spec().identity()


def read_store_spec(client: Any, prefix: str) -> tuple[dict[str, Any] | None, bool]:
    """(the identity recorded in ``<prefix>:spec`` or None, whether parameters exist)."""
    pipe = client.pipeline(transaction=True)
    pipe.get(f"{prefix}:spec")
    pipe.hlen(f"{prefix}:versions")
    raw, n = pipe.execute()
    return parse_stored(raw), n > 0


def parse_stored(raw: bytes | str | None) -> dict[str, Any] | None:
    """The identity in a ``<prefix>:spec`` value (None: no value). A value this code did not
    write stands for a spec no one runs: it never matches."""
    if raw is None:
        return None
    try:
        stored = json.loads(raw)
    except ValueError:
        stored = None
    if not isinstance(stored, dict):
        stored = {"name": "unreadable", "version": 0, "digest": "?", "dim": "?"}
    return stored


def claim_store(client: Any, prefix: str, spec: ContextSpec, replace: bool = False) -> str:
    """Record that the job learns under ``spec`` before it writes a parameter.

    Refuses (:class:`SpecError`) a store holding parameters of another spec unless
    ``replace``: then those parameters (and the category prior's pools) are removed, under a
    new epoch and generation (:meth:`contract.store.ParamStore.replace_all`), so no reader
    keeps one of them. Returns what happened: "recorded" (nothing of another spec was
    there), "same" (already recorded) or "replaced".
    """
    stored, has_params = read_store_spec(client, prefix)
    conflict = spec_conflict(stored, spec.identity(), has_params)
    if conflict is not None and has_params and not replace:
        raise SpecError(f"refusing to start: the store {prefix!r} holds {conflict}. Point the "
                        f"job at another Redis prefix, use the spec they were learned under, "
                        f"or start it with --replace-spec to drop them")
    # the record first: a reader that reloads on the new epoch already refuses what follows
    client.set(f"{prefix}:spec", json.dumps(spec.identity(), sort_keys=True))
    if conflict is None:
        return "same" if stored is not None else "recorded"
    if has_params:
        from contract.store import ParamStore

        store = ParamStore(client, prefix)
        store.replace_all({}, store.current_generation() + 1)
    # the category prior's pools (<prefix>:prior:<category>) were summed under the old x too
    pools = list(client.scan_iter(match=f"{prefix}:prior:*", count=1000))
    if pools:
        client.delete(*pools)
    return "replaced" if has_params else "recorded"


def settings_spec(settings: Any) -> ContextSpec:
    """The spec ``settings`` name (``RTREC_FEATURE_SPEC``), resolved against the fitted
    ranges of contract/data/features.json: the one serving builds x with."""
    from contract.features import FeatureSpace

    return FeatureSpace.load(spec=settings.model.feature_spec or None).context


def claim_for(settings: Any, replace: bool = False, wait_s: float = 30.0) -> str:
    """:func:`claim_store` on the store of ``settings``, checking d against the spec first.
    Retries while Redis does not answer, up to ``wait_s``, then refuses to start: a job that
    cannot tell which spec a store's parameters belong to must not add its own to them."""
    import time

    import redis

    from contract.features import check_dim
    from contract.store import redis_client

    spec = settings_spec(settings)
    check_dim(settings.model.dim, spec)
    deadline = time.monotonic() + wait_s
    while True:
        client = redis_client(settings.redis)
        try:
            return claim_store(client, settings.redis.prefix, spec, replace)
        except (redis.RedisError, OSError) as exc:
            if time.monotonic() >= deadline:
                raise SpecError(f"refusing to start: Redis did not answer for {wait_s:g}s "
                                f"({type(exc).__name__}: {exc}), so which feature spec its "
                                f"parameters were learned under is unknown") from exc
            time.sleep(0.5)
        finally:
            client.close()
