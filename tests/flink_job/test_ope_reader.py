"""``ope-evaluate`` reads a closed impression's JSON without re-running the contract's checks
(flink_job/evaluate.py ``read_closed``: the validator ran them on the same bytes): what it
reads must be what ``contract.events.parse_event`` reads, field for field, on every kind of
impression the evaluator meets, and what ``parse_event`` refuses must still be refused (counted
``unreadable``), so the stream stays equal to the offline command (test_ope_stream.py)."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest

from contract.events import MAX_EVENT_BYTES, EventError, Impression, parse_event
from flink_job.evaluate import StreamEvaluator, read_closed
from tests.flink_job.test_ope_stream import DIM, closed_lines, make_log, offline
from tests.helpers import PRODUCTS

FIELDS = ("request_id", "products", "policy", "eligible_n")


def _same(body: str) -> None:
    want = parse_event(body, dim=DIM)
    got = read_closed(body, DIM)
    assert isinstance(want, Impression)
    for name in FIELDS:
        assert getattr(got, name) == getattr(want, name), name
    assert np.array_equal(np.asarray(got.x, dtype=np.float64),
                          np.asarray(want.x, dtype=np.float64))
    for name in ("prefix_propensities", "slot_propensities"):
        g, w = getattr(got, name), getattr(want, name)
        assert (g is None) == (w is None), name
        if w is not None:
            assert np.array_equal(np.asarray(g, dtype=np.float64),
                                  np.asarray(w, dtype=np.float64)), name
    assert dict(got.shadows or ()) == dict(want.shadows or ())
    assert list(dict(got.shadows or ())) == list(dict(want.shadows or ()))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_reader_reads_what_the_contract_reads(seed: int) -> None:
    """Every impression of the OPE test log (logged probabilities with shadows, random,
    deterministic), and the same rewritten the ways a producer may: ints in x, escaped
    characters in ids, controls with eligible_n, keys in another order."""
    rng = np.random.default_rng(seed)
    for raw, _, kind in make_log(seed, 200, 1_700_000_000_000):
        if kind != "i":
            continue
        body = raw.decode()
        _same(body)
        d = json.loads(body)
        d["x"] = [int(v) if rng.random() < 0.3 else v for v in np.round(d["x"], 0).tolist()] \
            if rng.random() < 0.5 else d["x"]
        d["request_id"] = d["request_id"] + "\u00e9\t\"x"
        if rng.random() < 0.5:
            d.update(controls=["pin"], eligible_n=int(rng.integers(5, 40)), eligible_hash="h1")
        _same(json.dumps(dict(reversed(list(d.items())))))
        _same(json.dumps(d, ensure_ascii=False))


@pytest.mark.parametrize("body", [
    "",  # an impression open at a restore from a state without the JSON
    "{not json",
    '{"v":1,"type":"click","request_id":"r","product_id":"p","ts_ms":1}',
    json.dumps({"v": 1, "type": "impression", "request_id": "r", "user_id": 1, "ts_ms": 1,
                "x": [0.0] * (DIM - 1), "products": ["p"], "scores": [0.0],
                "policy": "linucb", "model_version": 0}),
    json.dumps({"v": 1, "type": "impression", "request_id": "r", "user_id": 1, "ts_ms": 1,
                "x": [0.0] * DIM, "products": ["p"], "scores": [0.0], "policy": "linucb",
                "model_version": 0, "pad": "x" * MAX_EVENT_BYTES}),
])
def test_what_the_contract_refuses_is_still_refused(body: str) -> None:
    """Not an impression to ``parse_event`` (refused, or a click): counted ``unreadable`` and
    skipped by the replay, as the offline command skips it."""
    with contextlib.suppress(EventError):
        assert not isinstance(parse_event(body, dim=DIM), Impression)
    ev = StreamEvaluator(PRODUCTS, DIM, 1.0)
    assert ev.batch([f"1||{body}"]) == 1
    assert ev.counts["unreadable"] == 1 and ev.counts["impressions"] == 0


@pytest.mark.parametrize("seed", [5, 6, 7])
def test_the_replay_through_the_reader_equals_the_offline_command(seed: int) -> None:
    """The whole replay (the reader inside ``StreamEvaluator.batch``) against the offline
    command on a log whose impressions are rewritten with ints in x and escaped ids."""
    from tests.flink_job.test_ope_stream import assert_equal

    rng = np.random.default_rng(seed)
    log_ = []
    for raw, t, kind in make_log(seed, 400, 1_700_000_000_000):
        if kind == "i":
            d = json.loads(raw)
            d["x"] = [round(v * 4) if rng.random() < 0.3 else v for v in d["x"]]
            d["request_id"] += "\u00e9"  # escaped in the JSON (ensure_ascii)
            raw = json.dumps(d).encode()
        else:
            c = json.loads(raw)
            c["request_id"] += "\u00e9"
            raw = json.dumps(c).encode()
        log_.append((raw, t, kind))
    ev = StreamEvaluator(PRODUCTS, DIM, 1.0)
    lines = closed_lines(log_)
    for i in range(0, len(lines), 37):
        ev.batch(lines[i:i + 37])
    assert ev.counts["impressions"] == len(lines) and ev.counts["unreadable"] == 0
    assert_equal(ev.summaries(), offline(log_))
