"""Event schemas: valid events round-trip; every way to be wrong gets a named reason and field."""

from __future__ import annotations

import json

import pytest

from contract import events
from contract.events import Click, EventError, Impression, parse_event

DIM = 3
GOOD_IMPRESSION = {
    "v": 1, "type": "impression", "request_id": "r-1", "user_id": 7, "ts_ms": 1_700_000_000_000,
    "x": [0.1, 0.2, 0.3], "products": ["p001", "p002"], "scores": [0.9, 0.1],
    "policy": "linucb", "model_version": 12, "propensity": 1.0,
}
GOOD_CLICK = {"v": 1, "type": "click", "request_id": "r-1", "product_id": "p002",
              "ts_ms": 1_700_000_000_500}
KNOWN = {"p001", "p002", "p003"}


def _raw(obj: dict, **changes) -> bytes:
    obj = {**obj, **changes}
    return json.dumps({k: v for k, v in obj.items() if v is not _DROP}).encode()


_DROP = object()


def test_good_events_round_trip() -> None:
    imp = parse_event(_raw(GOOD_IMPRESSION), DIM, KNOWN)
    assert isinstance(imp, Impression) and imp.products == ("p001", "p002")
    assert parse_event(imp.to_json(), DIM, KNOWN) == imp
    click = parse_event(_raw(GOOD_CLICK), DIM, KNOWN)
    assert click == Click("r-1", "p002", 1_700_000_000_500)
    assert parse_event(click.to_json(), DIM) == click


def test_propensity_may_be_absent_or_null() -> None:
    assert parse_event(_raw(GOOD_IMPRESSION, propensity=_DROP), DIM).propensity is None
    assert parse_event(_raw(GOOD_IMPRESSION, propensity=None), DIM).propensity is None


@pytest.mark.parametrize("name", sorted(set(GOOD_IMPRESSION) - {"propensity"}))
def test_every_required_impression_field(name: str) -> None:
    with pytest.raises(EventError, match=f"missing_field: {name}") as err:
        parse_event(_raw(GOOD_IMPRESSION, **{name: _DROP}), DIM)
    assert err.value.reason == events.MISSING_FIELD and err.value.field == name


@pytest.mark.parametrize("name", sorted(GOOD_CLICK))
def test_every_required_click_field(name: str) -> None:
    with pytest.raises(EventError, match=f"missing_field: {name}"):
        parse_event(_raw(GOOD_CLICK, **{name: _DROP}), DIM)


@pytest.mark.parametrize(
    ("changes", "reason", "field"),
    [
        ({"user_id": "7"}, events.WRONG_TYPE, "user_id"),
        ({"user_id": True}, events.WRONG_TYPE, "user_id"),
        ({"user_id": 7.0}, events.WRONG_TYPE, "user_id"),
        ({"ts_ms": -1}, events.BAD_VALUE, "ts_ms"),
        ({"x": "0.1,0.2,0.3"}, events.WRONG_TYPE, "x"),
        ({"x": [0.1, "0.2", 0.3]}, events.WRONG_TYPE, "x[1]"),
        ({"x": [0.1, True, 0.3]}, events.WRONG_TYPE, "x[1]"),
        ({"x": [0.1, 0.2]}, events.WRONG_DIMENSION, "x"),
        ({"x": [0.1, 0.2, 0.3, 0.4]}, events.WRONG_DIMENSION, "x"),
        ({"products": []}, events.BAD_VALUE, "products"),
        ({"products": ["p001", "p001"], "scores": [1, 2]}, events.BAD_VALUE, "products"),
        ({"products": ["p001", 2]}, events.WRONG_TYPE, "products[1]"),
        ({"products": ["p001", "zzz"]}, events.UNKNOWN_PRODUCT, "products[1]"),
        ({"scores": [0.9]}, events.WRONG_DIMENSION, "scores"),
        ({"propensity": 0.0}, events.BAD_VALUE, "propensity"),
        ({"propensity": 1.5}, events.BAD_VALUE, "propensity"),
        ({"model_version": -3}, events.BAD_VALUE, "model_version"),
        ({"request_id": ""}, events.BAD_VALUE, "request_id"),
        ({"request_id": "r" * 200}, events.BAD_VALUE, "request_id"),
        ({"v": 2}, events.UNSUPPORTED_VERSION, "v"),
        ({"type": "purchase"}, events.BAD_VALUE, "type"),
        ({"extra": 1}, events.BAD_VALUE, "extra"),
    ],
)
def test_bad_impressions(changes: dict, reason: str, field: str) -> None:
    with pytest.raises(EventError) as err:
        parse_event(_raw(GOOD_IMPRESSION, **changes), DIM, KNOWN)
    assert (err.value.reason, err.value.field) == (reason, field)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", events.UNPARSEABLE),
        (b"{not json", events.UNPARSEABLE),
        (b"\xff\xfe{}", events.UNPARSEABLE),
        (b'{"v": 1, "v": 1}', events.UNPARSEABLE),
        (b'{"x": NaN}', events.NOT_FINITE),
        (b'{"x": -Infinity}', events.NOT_FINITE),
        (b"[" * 10000 + b"]" * 10000, events.UNPARSEABLE),
        (b"[1, 2]", events.WRONG_TYPE),
        (b"x" * (events.MAX_EVENT_BYTES + 1), events.OVERSIZED),
    ],
)
def test_unparseable_records(raw: bytes, reason: str) -> None:
    with pytest.raises(EventError) as err:
        parse_event(raw, DIM)
    assert err.value.reason == reason


def test_literal_overflow_to_inf_is_named() -> None:
    raw = _raw(GOOD_IMPRESSION).replace(b"[0.1, 0.2, 0.3]", b"[0.1, 1e309, 0.3]")
    with pytest.raises(EventError) as err:
        parse_event(raw, DIM)
    assert (err.value.reason, err.value.field) == (events.NOT_FINITE, "x[1]")


def test_unknown_clicked_product() -> None:
    with pytest.raises(EventError, match="unknown_product: product_id"):
        parse_event(_raw(GOOD_CLICK, product_id="p999"), DIM, KNOWN)


def test_event_error_is_a_value_error() -> None:
    assert issubclass(EventError, ValueError)
