"""Event schemas: valid events round-trip; every way to be wrong gets a named reason and field,
the same whether the event is parsed from JSON or built by its constructor."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contract import events
from contract.errors import RtrecError
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


BAD_IMPRESSIONS = [
    ({"user_id": "7"}, events.WRONG_TYPE, "user_id"),
    ({"user_id": True}, events.WRONG_TYPE, "user_id"),
    ({"user_id": 7.0}, events.WRONG_TYPE, "user_id"),
    ({"user_id": -1}, events.BAD_VALUE, "user_id"),  # issue 20: ids within their domain
    ({"user_id": 2**53}, events.BAD_VALUE, "user_id"),
    ({"user_id": 2**70}, events.BAD_VALUE, "user_id"),
    ({"ts_ms": -1}, events.BAD_VALUE, "ts_ms"),
    ({"ts_ms": 2**53}, events.BAD_VALUE, "ts_ms"),
    ({"ts_ms": events.MAX_TS_MS}, events.BAD_VALUE, "ts_ms"),  # the year 10000
    ({"x": "0.1,0.2,0.3"}, events.WRONG_TYPE, "x"),
    ({"x": [0.1, "0.2", 0.3]}, events.WRONG_TYPE, "x[1]"),
    ({"x": [0.1, True, 0.3]}, events.WRONG_TYPE, "x[1]"),
    ({"x": [0.1, 10**400, 0.3]}, events.NOT_FINITE, "x[1]"),
    ({"x": [0.1] * (events.MAX_VALUES + 1)}, events.OVERSIZED, "x"),
    ({"x": [0.1, 0.2]}, events.WRONG_DIMENSION, "x"),
    ({"x": [0.1, 0.2, 0.3, 0.4]}, events.WRONG_DIMENSION, "x"),
    ({"products": []}, events.BAD_VALUE, "products"),
    ({"products": ["p001", "p001"], "scores": [1, 2]}, events.BAD_VALUE, "products"),
    ({"products": ["p001", 2]}, events.WRONG_TYPE, "products[1]"),
    ({"products": ["p001", ""]}, events.BAD_VALUE, "products[1]"),
    ({"products": "p001"}, events.WRONG_TYPE, "products"),
    ({"products": ["p001", "zzz"]}, events.UNKNOWN_PRODUCT, "products[1]"),
    ({"scores": [0.9]}, events.WRONG_DIMENSION, "scores"),
    ({"scores": [0.9, None]}, events.WRONG_TYPE, "scores[1]"),
    ({"propensity": 0.0}, events.BAD_VALUE, "propensity"),
    ({"propensity": 1.5}, events.BAD_VALUE, "propensity"),
    ({"propensity": "1"}, events.WRONG_TYPE, "propensity"),
    ({"model_version": -3}, events.BAD_VALUE, "model_version"),
    ({"model_version": 1.0}, events.WRONG_TYPE, "model_version"),
    ({"model_version": 2**53}, events.BAD_VALUE, "model_version"),
    ({"request_id": ""}, events.BAD_VALUE, "request_id"),
    ({"request_id": "r" * 200}, events.BAD_VALUE, "request_id"),
    ({"request_id": 5}, events.WRONG_TYPE, "request_id"),
    ({"policy": ""}, events.BAD_VALUE, "policy"),
    ({"v": 2}, events.UNSUPPORTED_VERSION, "v"),
    ({"v": "1"}, events.WRONG_TYPE, "v"),
    ({"type": "purchase"}, events.BAD_VALUE, "type"),
    ({"type": 3}, events.WRONG_TYPE, "type"),
    ({"extra": 1}, events.BAD_VALUE, "extra"),
]
BAD_CLICKS = [
    ({"product_id": ""}, events.BAD_VALUE, "product_id"),
    ({"product_id": ["p001"]}, events.WRONG_TYPE, "product_id"),
    ({"product_id": "p999"}, events.UNKNOWN_PRODUCT, "product_id"),
    ({"request_id": "r" * 129}, events.BAD_VALUE, "request_id"),
    ({"ts_ms": "5"}, events.WRONG_TYPE, "ts_ms"),
    ({"ts_ms": -5}, events.BAD_VALUE, "ts_ms"),
    ({"v": 0}, events.UNSUPPORTED_VERSION, "v"),
    ({"type": "view"}, events.BAD_VALUE, "type"),
    ({"extra": 1}, events.BAD_VALUE, "extra"),
]
# what only the reader knows: x against its dim, its catalog
_THE_READERS = {(events.WRONG_DIMENSION, "x"), (events.UNKNOWN_PRODUCT, "products[1]"),
                (events.UNKNOWN_PRODUCT, "product_id")}


@pytest.mark.parametrize(("changes", "reason", "field"), BAD_IMPRESSIONS)
def test_bad_impressions(changes: dict, reason: str, field: str) -> None:
    with pytest.raises(EventError) as err:
        parse_event(_raw(GOOD_IMPRESSION, **changes), DIM, KNOWN)
    assert (err.value.reason, err.value.field) == (reason, field)


@pytest.mark.parametrize(("changes", "reason", "field"), BAD_CLICKS)
def test_bad_clicks(changes: dict, reason: str, field: str) -> None:
    with pytest.raises(EventError) as err:
        parse_event(_raw(GOOD_CLICK, **changes), DIM, KNOWN)
    assert (err.value.reason, err.value.field) == (reason, field)


def _kwargs(good: dict, changes: dict) -> dict[str, Any]:
    """Constructor arguments as a Python caller writes them (tuples, not lists)."""
    obj = {**good, **changes}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in obj.items()}


@pytest.mark.parametrize(
    ("cls", "good", "changes", "reason", "field"),
    [(Impression, GOOD_IMPRESSION, *case) for case in BAD_IMPRESSIONS]
    + [(Click, GOOD_CLICK, *case) for case in BAD_CLICKS],
)
def test_the_constructor_refuses_what_parse_event_refuses(
        cls: type, good: dict, changes: dict, reason: str, field: str) -> None:
    """One set of checks: built directly, a bad field fails with parse_event's reason."""
    if (reason, field) in _THE_READERS:
        cls(**_kwargs(good, changes))  # valid in itself; the reader refuses it
        return
    if field == "extra":  # an unknown keyword is Python's to refuse
        with pytest.raises(TypeError, match="extra"):
            cls(**_kwargs(good, changes))
        return
    with pytest.raises(EventError) as err:
        cls(**_kwargs(good, changes))
    assert (err.value.reason, err.value.field) == (reason, field)
    with pytest.raises(EventError) as err:  # lists, as JSON gives them, alike
        cls(**{**good, **changes})
    assert (err.value.reason, err.value.field) == (reason, field)


def test_the_constructor_stores_tuples_of_floats() -> None:
    imp = Impression(**{**GOOD_IMPRESSION, "x": [0, 1, 0.5], "scores": [1, 0.5],
                        "propensity": 1})
    assert imp.x == (0.0, 1.0, 0.5) and all(type(v) is float for v in imp.x + imp.scores)
    assert imp.products == ("p001", "p002") and type(imp.propensity) is float
    assert imp == parse_event(_raw(GOOD_IMPRESSION, x=[0, 1, 0.5], scores=[1, 0.5],
                                   propensity=1), DIM)
    hash(imp)  # frozen and of tuples: usable as a key


_ids = st.text(min_size=1, max_size=events.MAX_ID_LEN)
_finite = st.floats(allow_nan=False, allow_infinity=False)
_ts = st.integers(0, events.MAX_TS_MS - 1)
_safe = st.integers(0, events.MAX_SAFE_INT)


@st.composite
def _impressions(draw: st.DrawFn) -> Impression:
    products = draw(st.lists(_ids, min_size=1, max_size=20, unique=True))
    return Impression(
        request_id=draw(_ids), user_id=draw(_safe), ts_ms=draw(_ts),
        x=tuple(draw(st.lists(_finite, min_size=1, max_size=40))), products=tuple(products),
        scores=tuple(draw(st.lists(_finite, min_size=len(products), max_size=len(products)))),
        policy=draw(_ids), model_version=draw(_safe),
        propensity=draw(st.none() | st.floats(0.0, 1.0, exclude_min=True)))


_clicks = st.builds(Click, request_id=_ids, product_id=_ids, ts_ms=_ts)


@given(st.one_of(_impressions(), _clicks))
def test_any_valid_event_round_trips(event: events.Event) -> None:
    dim = len(event.x) if isinstance(event, Impression) else 1
    assert parse_event(event.to_json(), dim) == event
    assert parse_event(event.to_json().decode(), dim) == event


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


def test_event_error_is_a_value_error_and_ours() -> None:
    assert issubclass(EventError, ValueError) and issubclass(EventError, RtrecError)


def test_literal_integer_beyond_float_range_is_not_finite() -> None:
    raw = _raw(GOOD_IMPRESSION, propensity=_DROP).replace(b'"scores": [0.9, 0.1]',
                                                          b'"scores": [0.9, 1' + b"0" * 400 + b"]")
    with pytest.raises(EventError) as err:
        parse_event(raw, DIM)
    assert (err.value.reason, err.value.field) == (events.NOT_FINITE, "scores[1]")
    assert math.isfinite(parse_event(_raw(GOOD_IMPRESSION), DIM).scores[1])


@given(st.integers().filter(lambda v: not 0 <= v <= events.MAX_SAFE_INT),
       st.sampled_from(["user_id", "model_version"]))
def test_integers_outside_the_json_safe_domain_are_refused(value: int, name: str) -> None:
    with pytest.raises(EventError) as err:
        Impression(**_kwargs(GOOD_IMPRESSION, {name: value}))
    assert (err.value.reason, err.value.field) == (events.BAD_VALUE, name)


@given(st.integers().filter(lambda v: not 0 <= v < events.MAX_TS_MS))
def test_ts_ms_outside_1970_to_9999_is_refused(ts: int) -> None:
    for event in (lambda: Impression(**_kwargs(GOOD_IMPRESSION, {"ts_ms": ts})),
                  lambda: Click("r", "p", ts)):
        with pytest.raises(EventError) as err:
            event()
        assert (err.value.reason, err.value.field) == (events.BAD_VALUE, "ts_ms")
    Click("r", "p", events.MAX_TS_MS - 1)  # 9999-12-31T23:59:59.999Z is a time


_bound = st.floats(1e-3, 1e300)


@given(st.lists(_finite, min_size=DIM, max_size=DIM), _bound)
def test_x_beyond_max_abs_x_is_a_bad_value_naming_the_first_entry(x: list[float],
                                                                   bound: float) -> None:
    """Issue 20: a huge but finite x used to pass, then overflow inside the learner."""
    raw = _raw(GOOD_IMPRESSION, x=x)
    beyond = [i for i, v in enumerate(x) if abs(v) > bound]
    if not beyond:
        assert parse_event(raw, DIM, max_abs_x=bound).x == tuple(x)
        return
    with pytest.raises(EventError) as err:
        parse_event(raw, DIM, max_abs_x=bound)
    assert (err.value.reason, err.value.field) == (events.BAD_VALUE, f"x[{beyond[0]}]")
    assert parse_event(raw, DIM).x == tuple(x)  # no bound given: the contract's finite check


def test_the_issues_x_is_refused_at_the_default_bound() -> None:
    from contract.config import ModelSettings

    bound = ModelSettings().max_abs_x
    for x in ([0.1, 1e154, 0.3], [0.1, 0.2, -bound * (1 + 1e-15)]):
        with pytest.raises(EventError, match="bad_value: x"):
            parse_event(_raw(GOOD_IMPRESSION, x=x), DIM, max_abs_x=bound)
    assert parse_event(_raw(GOOD_IMPRESSION, x=[bound, -bound, 0.0]), DIM, max_abs_x=bound)


@given(st.integers(0, events.MAX_TS_MS), st.integers(0, events.MAX_TS_MS),
       st.integers(1, 10**12), st.integers(0, 10**8))
def test_event_time_is_accepted_iff_within_age_and_skew_of_the_clock(
        ts: int, now: int, max_age: int, max_ahead: int) -> None:
    inside = now - max_age <= ts <= now + max_ahead
    try:
        events.check_event_time(ts, now, max_age, max_ahead, field="$timestamp")
    except EventError as exc:
        assert not inside
        assert (exc.reason, exc.field) == (events.BAD_EVENT_TIME, "$timestamp")
    else:
        assert inside


def test_event_time_bounds_are_inclusive() -> None:
    now = 1_800_000_000_000
    for ts in (now - 604_800_000, now, now + 60_000):
        events.check_event_time(ts, now, 604_800_000, 60_000)
    for ts in (now - 604_800_001, now + 60_001, 0, events.MAX_TS_MS - 1):
        with pytest.raises(EventError, match="bad_event_time: ts_ms"):
            events.check_event_time(ts, now, 604_800_000, 60_000)
