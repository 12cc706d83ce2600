"""Event schemas: impressions (what serving showed) and clicks (what the user took).

(Longer than our ~350-line norm on purpose: the two types and every rule that makes an event
valid stay in one file, so the contract can be read and reviewed in one place; the job's
validator and serving both run exactly this code.)

An :class:`Impression` or :class:`Click` is valid by construction: the constructor checks
every field and raises :class:`EventError` naming the field and a machine-readable ``reason``
(the one the job writes beside a dead-lettered record), so an invalid event can neither be
published by serving nor reach the learner.

Events travel as UTF-8 JSON objects. :func:`parse_event` is strict JSON (Python's ``json`` is
not: it accepts ``NaN``, ``Infinity``, ``1e309`` as inf, duplicate keys with the last winning,
and a 10,000-deep nesting raises ``RecursionError``), then the constructor, then the checks
that need the reader's context: the dimension of ``x``, the known products and the bound on
``x`` (``RTREC_MAX_ABS_X``). :func:`check_event_time` is the reader's check of an event time
against its own clock (the job's validator calls it, docs/JOB.md).

Domains (what the constructors accept; docs/JOB_LINES.md repeats them):

- ``user_id``, ``model_version``: integers in ``0..2**53 - 1`` (:data:`MAX_SAFE_INT`), the
  integers every JSON reader holds exactly (a JavaScript number, a float64);
- ``ts_ms``: epoch milliseconds in ``0..MAX_TS_MS - 1`` (1970 up to, not including, the year
  10000: every value is a ``datetime``). It is the time of the visit, which serving lets a
  caller choose (``at``) and a historical log keeps, so how recent it must be is the job's
  rule, on the time it joins on: :func:`check_event_time`;
- ids: 1..128 characters; ``x`` and ``scores``: finite floats; ``propensity`` in (0, 1].

>>> imp = Impression(request_id="r1", user_id=7, ts_ms=1700000000000, x=(0.0, 1.0),
...                  products=("p001", "p002"), scores=(0.9, 0.1), policy="linucb",
...                  model_version=3, propensity=1.0)
>>> parse_event(imp.to_json(), dim=2) == imp
True
>>> parse_event(b'{"v": 1, "type": "click", "request_id": "r1"}', dim=2)
Traceback (most recent call last):
...
contract.events.EventError: missing_field: product_id: required field is missing
>>> Click(request_id="r1", product_id="", ts_ms=5)
Traceback (most recent call last):
...
contract.events.EventError: bad_value: product_id: length 0 not in 1..128
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import orjson

from contract import SCHEMA_VERSION
from contract.errors import RtrecError
from contract.feedback import REWARD_KINDS

# the reasons this module raises; the one list is contract/reasons.py
from contract.reasons import (
    BAD_EVENT_TIME,
    BAD_VALUE,
    MISSING_FIELD,
    NOT_FINITE,
    OVERSIZED,
    UNKNOWN_PRODUCT,
    UNPARSEABLE,
    UNSUPPORTED_VERSION,
    WRONG_DIMENSION,
    WRONG_TYPE,
)

MAX_EVENT_BYTES = 65536
MAX_ID_LEN = 128
MAX_SHOWN = 100
MAX_VALUES = 4096  # items of x or scores
MAX_SAFE_INT = 2**53 - 1
"""Largest ``user_id`` and ``model_version``: the integers JSON readers hold exactly."""
MAX_TS_MS = 253_402_300_800_000
"""``ts_ms`` is below this: 10000-01-01T00:00:00Z (``datetime`` and ISO 8601 end there)."""


class EventError(RtrecError, ValueError):
    """A record that is not a valid event. ``reason`` is one of :mod:`contract.reasons`."""

    def __init__(self, reason: str, field: str, message: str) -> None:
        super().__init__(f"{reason}: {field}: {message}")
        self.reason = reason
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Impression:
    """Serving showed ``products`` (in order) to ``user_id`` for context ``x``.

    ``propensity`` is the probability the policy had of showing exactly this ranking (1.0 for a
    deterministic policy), kept for off-policy evaluation; ``None`` when the policy defines none.
    Lists are accepted for the sequences and integers for the floats; the stored values are
    tuples of floats, so two equal events compare equal however they were built.
    """

    request_id: str
    user_id: int
    ts_ms: int
    x: tuple[float, ...]
    products: tuple[str, ...]
    scores: tuple[float, ...]
    policy: str
    model_version: int
    propensity: float | None = None
    type: str = "impression"
    v: int = SCHEMA_VERSION
    # Under merchandising controls (docs/SERVING.md): the controls that applied, and the
    # products they left eligible - their count, a hash of the eligibility mask in catalog
    # order, and the ids when few. ``propensity`` is then the list's probability given that
    # set. Absent (None) when no control applied; the job ignores them.
    controls: tuple[str, ...] | None = None
    eligible_n: int | None = None
    eligible_hash: str | None = None
    eligible: tuple[str, ...] | None = None
    # For experiments and off-policy evaluation (docs/EXPERIMENTS.md): the experiment and
    # variant that served it; per slot, the logging policy's probability of the list's first
    # j products and of the j-th product at slot j; the shadows' would-be lists, never shown,
    # as (name, products) pairs (a JSON object). Absent (None) otherwise; the job ignores them.
    experiment: str | None = None
    variant: str | None = None
    prefix_propensities: tuple[float, ...] | None = None
    slot_propensities: tuple[float, ...] | None = None
    shadows: tuple[tuple[str, tuple[str, ...]], ...] | None = None

    def __post_init__(self) -> None:
        _check_impression(self)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "v": self.v, "type": self.type, "request_id": self.request_id,
            "user_id": self.user_id, "ts_ms": self.ts_ms, "x": list(self.x),
            "products": list(self.products), "scores": list(self.scores),
            "policy": self.policy, "model_version": self.model_version,
            "propensity": self.propensity,
        }
        if self.eligible_n is not None:
            out["controls"] = list(self.controls or ())
            out["eligible_n"] = self.eligible_n
            out["eligible_hash"] = self.eligible_hash
            if self.eligible is not None:
                out["eligible"] = list(self.eligible)
        for name in ("experiment", "variant"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        for name in ("prefix_propensities", "slot_propensities"):
            if getattr(self, name) is not None:
                out[name] = list(getattr(self, name))
        if self.shadows is not None:
            out["shadows"] = {n: list(lst) for n, lst in self.shadows}
        return out

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False).encode()


@dataclass(frozen=True)
class Click:
    """The user of request ``request_id`` clicked ``product_id``, or did more with it:
    ``kind`` is one of :data:`contract.feedback.REWARD_KINDS` (click, add_to_cart, purchase),
    each with its configured reward (docs/LEARNING.md); absent from the JSON when a click."""

    request_id: str
    product_id: str
    ts_ms: int
    type: str = "click"
    v: int = SCHEMA_VERSION
    kind: str = "click"

    def __post_init__(self) -> None:
        _check_version(self.v)
        _check_type(self.type, "click")
        _id(self.product_id, "product_id")
        _id(self.request_id, "request_id")
        _ts(self.ts_ms)
        if self.kind != "click":
            if type(self.kind) is not str:
                raise EventError(WRONG_TYPE, "kind",
                                 f"expected a string, got {type(self.kind).__name__}")
            if self.kind not in REWARD_KINDS:
                raise EventError(BAD_VALUE, "kind", f"{self.kind[:40]!r} is not one of "
                                                    f"{', '.join(REWARD_KINDS)}")

    def to_dict(self) -> dict[str, Any]:
        out = {"v": self.v, "type": self.type, "request_id": self.request_id,
               "product_id": self.product_id, "ts_ms": self.ts_ms}
        if self.kind != "click":
            out["kind"] = self.kind
        return out

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False).encode()


Event = Impression | Click

_FIELDS: dict[str, frozenset[str]] = {
    "impression": frozenset({"v", "type", "request_id", "user_id", "ts_ms", "x", "products",
                             "scores", "policy", "model_version", "propensity"}),
    "click": frozenset({"v", "type", "request_id", "product_id", "ts_ms", "kind"}),
}
_OPTIONAL = frozenset({"propensity", "kind"})
_CONTROLS = frozenset({"controls", "eligible_n", "eligible_hash", "eligible"})
"""Optional impression fields: absent from the common shape, so they cost nothing there."""
_EXPERIMENT = frozenset({"experiment", "variant", "prefix_propensities", "slot_propensities",
                         "shadows"})
"""Optional impression fields of experiments (docs/EXPERIMENTS.md), absent likewise."""
MAX_SHADOWS = 16
_CLASSES: dict[str, type[Impression] | type[Click]] = {"impression": Impression, "click": Click}


def parse_event(
    raw: bytes | str,
    dim: int,
    known_products: Collection[str] | None = None,
    max_bytes: int = MAX_EVENT_BYTES,
    max_abs_x: float | None = None,
) -> Event:
    """Parse and validate one record; raise :class:`EventError` on anything off-contract.

    The fields are checked once, by the event's constructor; this adds strict JSON, the set of
    keys, and what only the reader knows: ``x`` has ``dim`` values, each at most ``max_abs_x``
    in absolute value (``RTREC_MAX_ABS_X``; None: no bound), the products are known.
    """
    if isinstance(raw, str):
        raw = raw.encode("utf-8", errors="surrogatepass")
    if len(raw) > max_bytes:
        raise EventError(OVERSIZED, "$", f"{len(raw)} bytes > limit {max_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EventError(UNPARSEABLE, "$", f"not UTF-8: {exc}") from exc
    obj = _loads(raw, text)
    if not isinstance(obj, dict):
        raise EventError(WRONG_TYPE, "$", f"expected an object, got {type(obj).__name__}")
    kind = obj.get("type")
    fields = _FIELDS.get(kind) if type(kind) is str else None
    if fields is None or obj.keys() != fields:
        # not the common shape: name the first problem in the order version (a record of
        # another version may have other keys), type, keys; the values are the constructor's
        _check_version(_get(obj, "v"))
        _check_type(_get(obj, "type"), None)
        _no_extra(obj, fields | _CONTROLS | _EXPERIMENT  # type: ignore[operator]
                  if kind == "impression" else fields)
    event = _CLASSES[kind](**obj)
    if isinstance(event, Impression):
        if len(event.x) != dim:
            raise EventError(WRONG_DIMENSION, "x", f"length {len(event.x)} != dim {dim}")
        if max_abs_x is not None:
            check_x_bound(event.x, max_abs_x)
        if known_products is not None:
            _known(event.products, "products", known_products)
    elif known_products is not None and event.product_id not in known_products:
        raise EventError(UNKNOWN_PRODUCT, "product_id",
                         f"{event.product_id!r} is not in the catalog")
    return event


# --- the checks of the constructors ----------------------------------------------------------

def _check_version(v: Any) -> None:
    if _int(v, "v") != SCHEMA_VERSION:
        raise EventError(UNSUPPORTED_VERSION, "v", f"schema version {v} != {SCHEMA_VERSION}")


def _check_type(kind: Any, expected: str | None) -> None:
    """``kind`` must be ``expected``, or (None) any event type."""
    if type(kind) is not str:
        raise EventError(WRONG_TYPE, "type", f"expected a string, got {type(kind).__name__}")
    if expected is None:
        if kind not in _FIELDS:
            raise EventError(BAD_VALUE, "type", f"{kind!r} is neither 'impression' nor 'click'")
    elif kind != expected:
        raise EventError(BAD_VALUE, "type", f"{kind!r} is not {expected!r}")


def _check_impression(e: Impression) -> None:
    _check_version(e.v)
    _check_type(e.type, "impression")
    x = _floats(e.x, "x")
    products = _ids(e.products, "products")
    scores = _floats(e.scores, "scores")
    if len(scores) != len(products):
        raise EventError(WRONG_DIMENSION, "scores",
                         f"length {len(scores)} != products {len(products)}")
    propensity = e.propensity
    if propensity is not None:
        propensity = _float(propensity, "propensity")
        if not 0.0 < propensity <= 1.0:
            raise EventError(BAD_VALUE, "propensity", f"{propensity} not in (0, 1]")
    _safe_int(e.model_version, "model_version")
    _id(e.request_id, "request_id")
    _safe_int(e.user_id, "user_id")
    _ts(e.ts_ms)
    _id(e.policy, "policy")
    if e.eligible_n is not None or e.controls is not None or e.eligible_hash is not None \
            or e.eligible is not None:
        _check_controls(e)
    if e.experiment is not None or e.variant is not None or e.shadows is not None \
            or e.prefix_propensities is not None or e.slot_propensities is not None:
        _check_experiment(e, len(products))
    # store what was checked (tuples of floats) where the caller gave lists or integers
    if x is not e.x:
        object.__setattr__(e, "x", x)
    if products is not e.products:
        object.__setattr__(e, "products", products)
    if scores is not e.scores:
        object.__setattr__(e, "scores", scores)
    if propensity is not e.propensity:
        object.__setattr__(e, "propensity", propensity)


def _check_experiment(e: Impression, k: int) -> None:
    """Names of 1..MAX_ID_LEN characters; one probability in (0, 1] per shown product, the
    prefixes' never increasing; at most MAX_SHADOWS shadows, each a valid list of products."""
    for name in ("experiment", "variant"):
        if getattr(e, name) is not None:
            _id(getattr(e, name), name)
    for name in ("prefix_propensities", "slot_propensities"):
        values = getattr(e, name)
        if values is None:
            continue
        probs = _floats(values, name)
        if len(probs) != k:
            raise EventError(WRONG_DIMENSION, name, f"length {len(probs)} != products {k}")
        for i, p in enumerate(probs):
            if not 0.0 < p <= 1.0:
                raise EventError(BAD_VALUE, f"{name}[{i}]", f"{p} not in (0, 1]")
        if name == "prefix_propensities" and any(
                b > a * (1 + 1e-9) for a, b in itertools.pairwise(probs)):
            raise EventError(BAD_VALUE, name, "a longer prefix cannot be more likely")
        if probs is not values:
            object.__setattr__(e, name, probs)
    if e.shadows is not None:
        items = tuple(e.shadows.items()) if isinstance(e.shadows, dict) else e.shadows
        if not isinstance(items, tuple | list):
            raise EventError(WRONG_TYPE, "shadows", "expected an object of named lists")
        pairs = []
        for pair in items:
            if not isinstance(pair, tuple | list) or len(pair) != 2:
                raise EventError(WRONG_TYPE, "shadows", "expected an object of named lists")
            name, lst = pair
            _id(name, "shadows")
            pairs.append((name, _ids(lst, f"shadows.{name}")))
        if len(pairs) > MAX_SHADOWS or len({n for n, _ in pairs}) != len(pairs):
            raise EventError(BAD_VALUE, "shadows", f"at most {MAX_SHADOWS} distinct names")
        object.__setattr__(e, "shadows", tuple(pairs))


def _check_controls(e: Impression) -> None:
    """The controls' fields come together: names (strings, at most MAX_SHOWN), the eligible
    count (at least the products shown) and hash; the eligible ids, when given, are that many
    and include every shown product."""
    if e.eligible_n is None or e.controls is None or e.eligible_hash is None:
        raise EventError(MISSING_FIELD, "eligible_n", "controls, eligible_n and eligible_hash "
                                                      "come together")
    if not isinstance(e.controls, tuple | list) or len(e.controls) > MAX_SHOWN:
        raise EventError(WRONG_TYPE, "controls", f"expected a list of at most {MAX_SHOWN}")
    for i, name in enumerate(e.controls):
        _id(name, f"controls[{i}]")
    if not len(e.products) <= _safe_int(e.eligible_n, "eligible_n"):
        raise EventError(BAD_VALUE, "eligible_n", f"{e.eligible_n} < the {len(e.products)} "
                                                  f"products shown")
    _id(e.eligible_hash, "eligible_hash")
    if not isinstance(e.controls, tuple):
        object.__setattr__(e, "controls", tuple(e.controls))
    if e.eligible is not None:
        if not isinstance(e.eligible, tuple | list) or len(e.eligible) != e.eligible_n:
            raise EventError(BAD_VALUE, "eligible", f"expected a list of eligible_n "
                                                    f"({e.eligible_n}) ids")
        for i, pid in enumerate(e.eligible):
            _id(pid, f"eligible[{i}]")
        if not set(e.products) <= set(e.eligible):
            raise EventError(BAD_VALUE, "eligible", "a shown product is not eligible")
        if not isinstance(e.eligible, tuple):
            object.__setattr__(e, "eligible", tuple(e.eligible))


def _int(value: Any, name: str) -> int:
    if type(value) is not int and (isinstance(value, bool) or not isinstance(value, int)):
        raise EventError(WRONG_TYPE, name, f"expected an integer, got {type(value).__name__}")
    return value  # type: ignore[no-any-return]


def _float(value: Any, where: str) -> float:
    if type(value) is not float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise EventError(WRONG_TYPE, where, f"expected a number, got {type(value).__name__}")
        try:
            value = float(value)
        except OverflowError:  # an integer beyond float's range
            raise EventError(NOT_FINITE, where, "integer beyond the float range") from None
    if not math.isfinite(value):
        raise EventError(NOT_FINITE, where, f"{value} is not finite")
    return value  # type: ignore[no-any-return]


_FLOAT = frozenset({float})
_STR = frozenset({str})


def _floats(values: Any, name: str) -> tuple[float, ...]:
    if not isinstance(values, tuple | list):
        raise EventError(WRONG_TYPE, name, f"expected a list, got {type(values).__name__}")
    if len(values) > MAX_VALUES:
        raise EventError(OVERSIZED, name, f"{len(values)} items")
    # fast path (C loops): all floats and finite; anything else takes the careful path below,
    # which converts ints and names the first offending item
    if set(map(type, values)) <= _FLOAT and all(map(math.isfinite, values)):
        return values if type(values) is tuple else tuple(values)
    return tuple(_float(v, f"{name}[{i}]") for i, v in enumerate(values))


def _id(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise EventError(WRONG_TYPE, where, f"expected a string, got {type(value).__name__}")
    if not 0 < len(value) <= MAX_ID_LEN:
        raise EventError(BAD_VALUE, where, f"length {len(value)} not in 1..{MAX_ID_LEN}")
    return value


def _ids(values: Any, name: str) -> tuple[str, ...]:
    if not isinstance(values, tuple | list):
        raise EventError(WRONG_TYPE, name, f"expected a list, got {type(values).__name__}")
    if not 0 < len(values) <= MAX_SHOWN:
        raise EventError(BAD_VALUE, name, f"{len(values)} items, expected 1..{MAX_SHOWN}")
    # fast path (C loops): all strings of a valid length; else find the first offending item
    if not (set(map(type, values)) <= _STR and min(map(len, values)) > 0
            and max(map(len, values)) <= MAX_ID_LEN):
        for i, v in enumerate(values):
            _id(v, f"{name}[{i}]")
    ids = values if type(values) is tuple else tuple(values)
    if len(set(ids)) != len(ids):
        raise EventError(BAD_VALUE, name, "a product is shown twice")
    return ids


def _safe_int(value: Any, name: str) -> int:
    if not 0 <= _int(value, name) <= MAX_SAFE_INT:
        raise EventError(BAD_VALUE, name, f"{value} not in 0..2**53-1")
    return value  # type: ignore[no-any-return]


def _ts(ts: Any) -> int:
    if not 0 <= _int(ts, "ts_ms") < MAX_TS_MS:
        raise EventError(BAD_VALUE, "ts_ms", f"{ts} is not an epoch millisecond of years "
                                             f"1970..9999")
    return ts  # type: ignore[no-any-return]


def check_x_bound(x: tuple[float, ...], max_abs_x: float) -> None:
    """Refuse an ``x`` with an entry beyond ``max_abs_x`` (reason ``bad_value``, field
    ``x[i]``): bounded values are what keeps the learner's float64 sums meaningful.

    >>> check_x_bound((0.5, -1e154), 1000.0)
    Traceback (most recent call last):
    ...
    contract.events.EventError: bad_value: x[1]: |-1e+154| > max_abs_x 1000.0
    """
    if x and max(max(x), -min(x)) > max_abs_x:  # two C loops; the loop below is rare
        for i, v in enumerate(x):
            if abs(v) > max_abs_x:
                raise EventError(BAD_VALUE, f"x[{i}]", f"|{v}| > max_abs_x {max_abs_x}")


def check_event_time(ts_ms: int, now_ms: int, max_age_ms: int, max_ahead_ms: int,
                     field: str = "ts_ms") -> None:
    """Refuse an event time older than ``max_age_ms`` or more than ``max_ahead_ms`` ahead of
    ``now_ms``, the reader's clock (reason ``bad_event_time``).

    A future time would hold the reward join's state until the clock reaches it; one older
    than the topic's retention cannot be a live event. The job calls this at validation, on
    the time it joins on (``RTREC_MAX_EVENT_AGE_S``, ``RTREC_MAX_CLOCK_SKEW_S``).

    >>> check_event_time(1_000, now_ms=61_000, max_age_ms=60_000, max_ahead_ms=0)
    >>> check_event_time(999, now_ms=61_000, max_age_ms=60_000, max_ahead_ms=0)
    Traceback (most recent call last):
    ...
    contract.events.EventError: bad_event_time: ts_ms: 999 is 60001 ms old > max age 60000 ms
    """
    if ts_ms < now_ms - max_age_ms:
        raise EventError(BAD_EVENT_TIME, field, f"{ts_ms} is {now_ms - ts_ms} ms old > max age "
                                                f"{max_age_ms} ms")
    if ts_ms > now_ms + max_ahead_ms:
        raise EventError(BAD_EVENT_TIME, field, f"{ts_ms} is {ts_ms - now_ms} ms ahead of the "
                                                f"clock > max skew {max_ahead_ms} ms")


# --- the checks of the reader ----------------------------------------------------------------

def _loads(raw: bytes, text: str) -> Any:
    """Strict JSON of one event: the compiled parser (orjson, ~10x faster than ``json`` with
    its pairs hook) where its answer is provably the strict reader's, else the strict reader.

    The fast path takes only an object with no backslash in it: there every ``"`` delimits a
    string, so the text holds ``count('"') / 2`` strings, and a parse that kept them all
    (keys included) dropped no duplicate key. Nor a run of 19 digits: orjson reads an integer
    beyond 64 bits as a float (the strict reader keeps the int, which the checks then refuse
    by name). orjson refuses NaN, Infinity, numbers that round to infinity and deep nesting;
    any refusal, a backslash, a long run of digits or a count that differs goes to
    :func:`_loads_strict`, which names the problem as before, so
    the accepted events and every refusal (reason, field, message) are unchanged
    (tests/contract/test_events_fast.py compares both on fuzzed records).
    """
    if raw[:1] == b"{" and b"\\" not in raw and _LONG_DIGITS not in raw.translate(_ZEROS):
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
        else:
            if raw.count(b'"') == 2 * _n_strings(obj):
                return obj
    return _loads_strict(text)


def _loads_strict(text: str) -> Any:
    """The strict reader: ``json`` refusing NaN/Infinity and duplicate keys."""
    try:
        return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_dup_keys)
    except EventError:
        raise
    except (ValueError, RecursionError) as exc:
        raise EventError(UNPARSEABLE, "$", f"not JSON: {type(exc).__name__}: {exc}"[:300]) from exc


_NUMBERS = frozenset({float, int})
# 19 digits in a row (every digit read as 0, two C loops: a regex costs 10x more here): maybe
# an integer orjson would not hold as an int (>= 10**18 takes the strict reader)
_ZEROS = bytes.maketrans(b"123456789", b"000000000")
_LONG_DIGITS = b"0" * 19


def _n_strings(v: Any) -> int:
    """How many strings (object keys included) a parsed JSON value holds."""
    t = type(v)
    if t is dict:  # scalars counted here, not by a call each (an event is mostly scalars)
        n = len(v)
        for u in v.values():
            tu = type(u)
            if tu is str:
                n += 1
            elif tu is list or tu is dict:
                n += _n_strings(u)
        return n
    if t is str:
        return 1
    if t is list:
        types = set(map(type, v))
        if types <= _NUMBERS:
            return 0
        if types == _STR:
            return len(v)
        return sum(map(_n_strings, v))
    return 0


def _reject_constant(name: str) -> Any:
    raise EventError(NOT_FINITE, "$", f"{name} is not allowed in events")


def _no_dup_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):  # rare: find the first repeated key for the message
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise EventError(UNPARSEABLE, key, "duplicate key")
            seen.add(key)
    return out


def _get(obj: dict[str, Any], name: str) -> Any:
    if name not in obj:
        raise EventError(MISSING_FIELD, name, "required field is missing")
    return obj[name]


def _no_extra(obj: dict[str, Any], allowed: frozenset[str]) -> None:
    extra = sorted(set(obj) - allowed)
    if extra:
        raise EventError(BAD_VALUE, extra[0], "unknown field")
    for name in sorted(allowed - _OPTIONAL - _CONTROLS - _EXPERIMENT):
        _get(obj, name)


def _known(ids: tuple[str, ...], name: str, known: Collection[str]) -> None:
    if isinstance(known, frozenset | set) and known.issuperset(ids):
        return
    for i, pid in enumerate(ids):
        if pid not in known:
            raise EventError(UNKNOWN_PRODUCT, f"{name}[{i}]", f"{pid!r} is not in the catalog")
