"""The impression's experiment fields (contract/events.py; docs/EXPERIMENTS.md): they travel
through JSON unchanged, bad ones are refused naming the field, an impression without them is
byte for byte what it was, and the job's validator accepts one that carries them."""

from __future__ import annotations

import sys

import pytest

from contract.config import Settings
from contract.events import EventError, Impression, parse_event
from contract.features import load_catalog
from flink_job import functions
from tests.helpers import FakeRuntimeContext

S = Settings.from_env({})
PRODUCTS = [p.product_id for p in load_catalog()]
BASE = dict(request_id="r1", user_id=7, ts_ms=1_700_000_000_000, x=(0.5,) * S.model.dim,
            products=("p001", "p002", "p003"), scores=(0.9, 0.5, 0.1),
            policy="plackett_luce", model_version=3, propensity=0.01)
FULL = dict(experiment="alpha-test", variant="explore", prefix_propensities=(0.5, 0.1, 0.01),
            slot_propensities=(0.5, 0.3, 0.2),
            shadows={"greedy": ["p003", "p001", "p002"], "a2": ["p009", "p001", "p002"]})


def test_round_trip_through_json() -> None:
    imp = Impression(**BASE, **FULL)
    back = parse_event(imp.to_json(), dim=S.model.dim, known_products=PRODUCTS)
    assert back == imp and hash(back) == hash(imp)
    assert dict(imp.shadows) == {"greedy": ("p003", "p001", "p002"),
                                 "a2": ("p009", "p001", "p002")}
    d = imp.to_dict()
    assert d["shadows"] == FULL["shadows"] and d["variant"] == "explore"
    # without them the event is what it was: no new keys
    assert set(Impression(**BASE).to_dict()) == {
        "v", "type", "request_id", "user_id", "ts_ms", "x", "products", "scores", "policy",
        "model_version", "propensity"}


@pytest.mark.parametrize("change, match", [
    ({"prefix_propensities": (0.1, 0.5, 0.01)}, "bad_value: prefix_propensities: a longer"),
    ({"prefix_propensities": (0.5, 0.1)}, "wrong_dimension: prefix_propensities"),
    ({"slot_propensities": (0.5, 0.0, 0.2)}, r"bad_value: slot_propensities\[1\]"),
    ({"slot_propensities": (0.5, 1.5, 0.2)}, r"bad_value: slot_propensities\[1\]"),
    ({"slot_propensities": (0.5, float("nan"), 0.2)}, "not_finite"),
    ({"shadows": {"g": ["p1", "p1"]}}, "bad_value: shadows.g: a product is shown twice"),
    ({"shadows": {"": ["p1"]}}, "bad_value: shadows: length 0"),
    ({"shadows": {f"s{i}": ["p1"] for i in range(17)}}, "at most 16"),
    ({"shadows": ["p1"]}, "wrong_type: shadows"),
    ({"experiment": ""}, "bad_value: experiment"),
    ({"variant": 3}, "wrong_type: variant"),
])
def test_bad_fields_are_refused_by_name(change: dict, match: str) -> None:
    with pytest.raises(EventError, match=match):
        Impression(**BASE, **{**FULL, **change})


def test_the_jobs_validator_accepts_them() -> None:
    fn = functions.Validate(S.model.dim, frozenset(PRODUCTS), S.job.max_event_bytes,
                            S.model.max_abs_x, round(S.job.max_event_age_s * 1000),
                            round(S.job.max_clock_skew_s * 1000))
    interval = sys.getswitchinterval()
    fn.open(FakeRuntimeContext())  # type: ignore[arg-type]
    try:
        now = functions._now_ms()
        imp = Impression(**{**BASE, "ts_ms": now}, **FULL)
        line = f"{S.kafka.topic_impressions}\t0\t0\t{now}\tu\t{imp.to_json().decode()}"
        out = list(fn.process_element(line, None))
        assert [o for o in out if isinstance(o, tuple)] == []  # no dead letter
        assert len(out) == 1 and out[0].startswith("i") and "\tr1\t" in out[0]
        bad = imp.to_dict()
        bad["shadows"] = {"g": ["p001", "p001"]}
        import json
        line = f"{S.kafka.topic_impressions}\t0\t1\t{now}\tu\t{json.dumps(bad)}"
        dead = [o for o in fn.process_element(line, None) if isinstance(o, tuple)]
        assert len(dead) == 1 and '"reason":"bad_value"' in dead[0][1]
    finally:
        sys.setswitchinterval(interval)
