"""Event schemas: impressions (what serving showed) and clicks (what the user took).

Events travel as UTF-8 JSON objects. Parsing is strict because Python's ``json`` is not:
it accepts ``NaN``, ``Infinity``, ``1e309`` (as inf), duplicate keys (last wins), and a
10,000-deep nesting raises ``RecursionError``. :func:`parse_event` rejects all of these and
raises :class:`EventError` naming the field and a machine-readable ``reason`` that the job
writes beside a dead-lettered record.

>>> imp = Impression(request_id="r1", user_id=7, ts_ms=1700000000000, x=(0.0, 1.0),
...                  products=("p001", "p002"), scores=(0.9, 0.1), policy="linucb",
...                  model_version=3, propensity=1.0)
>>> parse_event(imp.to_json(), dim=2) == imp
True
>>> parse_event(b'{"v": 1, "type": "click", "request_id": "r1"}', dim=2)
Traceback (most recent call last):
...
contract.events.EventError: missing_field: product_id: required field is missing
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from contract import SCHEMA_VERSION
# the reasons this module raises; the one list is contract/reasons.py
from contract.reasons import (
    BAD_VALUE,
    DUPLICATE_IMPRESSION,
    LATE_CLICK,
    MISSING_FIELD,
    NOT_FINITE,
    ORPHAN_CLICK,
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


class EventError(ValueError):
    """A record that is not a valid event. ``reason`` is one of the constants above."""

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

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": self.v, "type": self.type, "request_id": self.request_id,
            "user_id": self.user_id, "ts_ms": self.ts_ms, "x": list(self.x),
            "products": list(self.products), "scores": list(self.scores),
            "policy": self.policy, "model_version": self.model_version,
            "propensity": self.propensity,
        }

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False).encode()


@dataclass(frozen=True)
class Click:
    """The user of request ``request_id`` clicked ``product_id``."""

    request_id: str
    product_id: str
    ts_ms: int
    type: str = "click"
    v: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {"v": self.v, "type": self.type, "request_id": self.request_id,
                "product_id": self.product_id, "ts_ms": self.ts_ms}

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False).encode()


Event = Impression | Click


def parse_event(
    raw: bytes | str,
    dim: int,
    known_products: Collection[str] | None = None,
    max_bytes: int = MAX_EVENT_BYTES,
) -> Event:
    """Parse and validate one record; raise :class:`EventError` on anything off-contract."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", errors="surrogatepass")
    if len(raw) > max_bytes:
        raise EventError(OVERSIZED, "$", f"{len(raw)} bytes > limit {max_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EventError(UNPARSEABLE, "$", f"not UTF-8: {exc}") from exc
    try:
        obj = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_dup_keys)
    except EventError:
        raise
    except (ValueError, RecursionError) as exc:
        raise EventError(UNPARSEABLE, "$", f"not JSON: {type(exc).__name__}: {exc}"[:300]) from exc
    if not isinstance(obj, dict):
        raise EventError(WRONG_TYPE, "$", f"expected an object, got {type(obj).__name__}")
    version = _int(obj, "v")
    if version != SCHEMA_VERSION:
        raise EventError(UNSUPPORTED_VERSION, "v", f"schema version {version} != {SCHEMA_VERSION}")
    kind = _str(obj, "type")
    if kind == "impression":
        fields = {"v", "type", "request_id", "user_id", "ts_ms", "x", "products", "scores",
                  "policy", "model_version", "propensity"}
        _no_extra(obj, fields)
        x = _floats(obj, "x")
        if len(x) != dim:
            raise EventError(WRONG_DIMENSION, "x", f"length {len(x)} != dim {dim}")
        products = _ids(obj, "products", known_products)
        scores = _floats(obj, "scores")
        if len(scores) != len(products):
            raise EventError(WRONG_DIMENSION, "scores",
                             f"length {len(scores)} != products {len(products)}")
        propensity = obj.get("propensity")
        if propensity is not None:
            propensity = _float(obj, "propensity")
            if not 0.0 < propensity <= 1.0:
                raise EventError(BAD_VALUE, "propensity", f"{propensity} not in (0, 1]")
        model_version = _int(obj, "model_version")
        if model_version < 0:
            raise EventError(BAD_VALUE, "model_version", "must be >= 0")
        return Impression(
            request_id=_id(obj, "request_id"), user_id=_int(obj, "user_id"),
            ts_ms=_ts(obj), x=x, products=products, scores=scores,
            policy=_id(obj, "policy"), model_version=model_version, propensity=propensity,
        )
    if kind == "click":
        _no_extra(obj, {"v", "type", "request_id", "product_id", "ts_ms"})
        product_id = _id(obj, "product_id")
        if known_products is not None and product_id not in known_products:
            raise EventError(UNKNOWN_PRODUCT, "product_id", f"{product_id!r} is not in the catalog")
        return Click(request_id=_id(obj, "request_id"), product_id=product_id, ts_ms=_ts(obj))
    raise EventError(BAD_VALUE, "type", f"{kind!r} is neither 'impression' nor 'click'")


# --- helpers -------------------------------------------------------------------------------

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


def _no_extra(obj: dict[str, Any], allowed: set[str]) -> None:
    if obj.keys() == allowed:  # the common case: every field, nothing else
        return
    extra = sorted(set(obj) - allowed)
    if extra:
        raise EventError(BAD_VALUE, extra[0], "unknown field")
    for name in sorted(allowed - {"propensity"}):
        _get(obj, name)


def _int(obj: dict[str, Any], name: str) -> int:
    value = _get(obj, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise EventError(WRONG_TYPE, name, f"expected an integer, got {type(value).__name__}")
    return value


def _float(obj: dict[str, Any], name: str, value: Any = None, where: str | None = None) -> float:
    value = _get(obj, name) if value is None else value
    where = where or name
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EventError(WRONG_TYPE, where, f"expected a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise EventError(NOT_FINITE, where, f"{value} is not finite")
    return value


def _floats(obj: dict[str, Any], name: str) -> tuple[float, ...]:
    values = _get(obj, name)
    if not isinstance(values, list):
        raise EventError(WRONG_TYPE, name, f"expected a list, got {type(values).__name__}")
    if len(values) > 4096:
        raise EventError(OVERSIZED, name, f"{len(values)} items")
    # fast path (C loops): all floats and finite; anything else takes the careful path below,
    # which converts ints and names the first offending item
    if set(map(type, values)) <= {float} and all(map(math.isfinite, values)):
        return tuple(values)
    return tuple(_float(obj, name, v, f"{name}[{i}]") for i, v in enumerate(values))


def _str(obj: dict[str, Any], name: str) -> str:
    value = _get(obj, name)
    if not isinstance(value, str):
        raise EventError(WRONG_TYPE, name, f"expected a string, got {type(value).__name__}")
    return value


def _id(obj: dict[str, Any], name: str, value: Any = None, where: str | None = None) -> str:
    value = _get(obj, name) if value is None else value
    where = where or name
    if not isinstance(value, str):
        raise EventError(WRONG_TYPE, where, f"expected a string, got {type(value).__name__}")
    if not 0 < len(value) <= MAX_ID_LEN:
        raise EventError(BAD_VALUE, where, f"length {len(value)} not in 1..{MAX_ID_LEN}")
    return value


def _ids(obj: dict[str, Any], name: str, known: Collection[str] | None) -> tuple[str, ...]:
    values = _get(obj, name)
    if not isinstance(values, list):
        raise EventError(WRONG_TYPE, name, f"expected a list, got {type(values).__name__}")
    if not 0 < len(values) <= MAX_SHOWN:
        raise EventError(BAD_VALUE, name, f"{len(values)} items, expected 1..{MAX_SHOWN}")
    ids = tuple(_id(obj, name, v, f"{name}[{i}]") for i, v in enumerate(values))
    if len(set(ids)) != len(ids):
        raise EventError(BAD_VALUE, name, "a product is shown twice")
    if known is not None:
        for i, pid in enumerate(ids):
            if pid not in known:
                raise EventError(UNKNOWN_PRODUCT, f"{name}[{i}]", f"{pid!r} is not in the catalog")
    return ids


def _ts(obj: dict[str, Any]) -> int:
    ts = _int(obj, "ts_ms")
    if not 0 <= ts < 2**53:
        raise EventError(BAD_VALUE, "ts_ms", f"{ts} is not a plausible epoch millisecond")
    return ts

