"""The compiled JSON fast path of :func:`contract.events.parse_event` (orjson, with the
duplicate-key guard) gives exactly what the strict reader gives: the same object, float bits
and types included, or the same refusal (reason, field, message), on valid events and on
fuzzed, mutated records (several seeds); and the fast path is really taken for a plain event.
"""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest

from contract import events
from contract.events import Click, EventError, Impression, parse_event

SEEDS = [0, 1, 2, 3, 4]

# what a record can be broken with: each is a valid JSON fragment or a known refusal
ODD_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1e-400", "4.9e-324",
               "2.2250738585072014e-308", "18446744073709551616", "-9223372036854775809",
               "9007199254740993", "1.7976931348623157e308", "0.1e1", "-0", "-0.0", "1E5",
               "01", "1.", ".5", "+1", "0x10", "1_000", "123456789012345678901234567890.5"]
INSERTS = ['"', "\\", "{", "}", "[", "]", ",", ":", " ", "\t", "\n", "\x00", "\x1f", "\ufeff",
           "é", "\U0001f600", "null", "true", "1", '"v":1,', '"type":"click",', "\\u0000",
           "\\ud800", '\\"', "/", "NaN"]


def _event(rng: np.random.Generator) -> bytes:
    if rng.random() < 0.3:
        return Click(f"r{rng.integers(1e9)}", f"p{rng.integers(1000):03d}",
                     int(rng.integers(0, 2**41))).to_json()
    k = int(rng.integers(1, 6))
    x = tuple(float(v) for v in rng.normal(size=4) * 10.0 ** rng.integers(-300, 300, size=4))
    return Impression(f"req-{rng.integers(1e9)}", int(rng.integers(0, 2**53)),
                      int(rng.integers(0, 2**41)), x,
                      tuple(f"p{i}" for i in rng.choice(50, k, replace=False)),
                      tuple(float(v) for v in rng.normal(size=k)), "linucb",
                      int(rng.integers(0, 1000)), float(rng.uniform(0.01, 1.0))).to_json()


def _mutate(raw: bytes, rng: np.random.Generator) -> bytes:
    text = raw.decode()
    for _ in range(int(rng.integers(1, 4))):
        i = int(rng.integers(0, len(text) + 1))
        op = rng.integers(0, 6)
        if op == 0:  # insert something odd
            text = text[:i] + INSERTS[int(rng.integers(len(INSERTS)))] + text[i:]
        elif op == 1:  # delete a run
            text = text[:i] + text[i + int(rng.integers(1, 4)):]
        elif op == 2:  # repeat a key (a duplicate) or the whole member
            key = rng.choice(["v", "type", "request_id", "x", "products", "ts_ms", "zz"])
            value = rng.choice(["1", '"click"', '"r"', "[1.5]", "{}", '{"a":1,"a":2}', "null"])
            text = text[:1] + f'"{key}":{value},' + text[1:]
        elif op == 3:  # an odd number somewhere a number is
            j = text.find(":", i)
            if j >= 0:
                end = min((p for p in (text.find(",", j), text.find("}", j)) if p >= 0),
                          default=len(text))
                text = text[:j + 1] + ODD_NUMBERS[int(rng.integers(len(ODD_NUMBERS)))] + text[end:]
        elif op == 4:  # nest deeply
            n = int(rng.choice([3, 600, 1100, 5000]))
            text = text[:i] + "[" * n + "]" * n + text[i:]
        else:  # wrap in whitespace or make it not an object
            text = rng.choice([" ", "\n", "[", ""]) + text + rng.choice([" ", "\n", "]", "x", ""])
    return text.encode("utf-8", errors="surrogatepass")


def _same(a: object, b: object) -> bool:
    """Equal values with equal types, floats bit for bit."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b) or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)  # type: ignore[index]
    if isinstance(a, list):
        return len(a) == len(b) and all(map(_same, a, b))  # type: ignore[arg-type]
    return a == b


def _outcome(f, *args):  # type: ignore[no-untyped-def]
    try:
        return "ok", f(*args)
    except EventError as exc:
        return "error", (exc.reason, exc.field, exc.message)


def _compare(raw: bytes) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "not utf-8"  # refused before either reader runs
    fast = _outcome(events._loads, raw, text)
    strict = _outcome(events._loads_strict, text)
    assert fast[0] == strict[0], (raw[:200], fast, strict)
    if fast[0] == "ok":
        assert _same(fast[1], strict[1]), raw[:200]
    else:
        assert fast[1] == strict[1], raw[:200]
    return fast[0]


@pytest.mark.parametrize("seed", SEEDS)
def test_fast_reader_equals_strict_on_valid_events(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(300):
        assert _compare(_event(rng)) == "ok"


@pytest.mark.parametrize("seed", SEEDS)
def test_fast_reader_equals_strict_on_mutated_records(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    outcomes = [_compare(_mutate(_event(rng), rng)) for _ in range(1500)]
    # the fuzz reaches both sides: records read and records refused
    assert outcomes.count("ok") > 50 and outcomes.count("error") > 50


@pytest.mark.parametrize("raw", [
    b'{"v":1,"v":1,"type":"click","request_id":"r","product_id":"p","ts_ms":5}',
    b'{"v":1,"type":"click","request_id":"r","product_id":"p","ts_ms":5,"ts_ms":6}',
    b'{"v":1,"type":"click","request_id":"r","product_id":"p","ts_ms":5,"x":{"a":1,"a":"b"}}',
    b'{"v":1,"type":"click","request_id":"r","product_id":"p","ts_ms":5,"":1,"":2}',
])
def test_duplicate_keys_are_refused_as_before(raw: bytes) -> None:
    with pytest.raises(EventError) as err:
        parse_event(raw, dim=2)
    assert (err.value.reason, err.value.message) == ("unparseable", "duplicate key")
    assert _compare(raw) == "error"


@pytest.mark.parametrize("seed", SEEDS)
def test_plain_events_take_the_fast_path(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without this the speed-up could vanish silently (every record falling back)."""
    rng = np.random.default_rng(seed)
    raws = [_event(rng) for _ in range(50)]
    expected = [parse_event(r, dim=len(json.loads(r).get("x", [0] * 4))) for r in raws]

    def refuse(text: str) -> None:
        raise AssertionError("the strict reader ran on a plain event")

    monkeypatch.setattr(events, "_loads_strict", refuse)
    for raw, want in zip(raws, expected, strict=True):
        assert parse_event(raw, dim=len(want.x) if isinstance(want, Impression) else 4) == want
