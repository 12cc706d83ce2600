"""Issue 20 through the real job (Kafka, Redis, a Flink mini-cluster; ``python -m flink_job
run`` as a subprocess): poison values and meaningless ranges sent with normal traffic never
reach the published model; each is in the dead-letter topic with its reason.

The user's poison was an impression whose x holds 1e154: finite, so the contract let it
through, and the learner's update overflowed into a NaN A^-1 in Redis (or, batched, a finite
but wrong one). At the default ``RTREC_MAX_ABS_X`` (1000) the validator refuses it
(tests/contract, tests/flink_job/test_job_lines.py). Here the bound is raised to 1e160 so the
poison reaches the learner, whose own guard must refuse it; an x beyond that bound is refused
by the validator. Poison rows land in the same micro-batches as ordinary rows of the same
products (the job reads a backlog), the case that gave the finite but wrong A^-1.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from contract.config import Settings
from contract.events import Click
from endtoend.harness import (
    JobProcess,
    Record,
    Traffic,
    now_ms,
    produce,
    ridge,
    seeded_traffic,
    sentinels,
    versions,
)
from tests.helpers import (
    PRODUCTS,
    DeadLetters,
    assert_parity,
    impression_json,
    wait_learned,
)

pytestmark = [pytest.mark.integration, pytest.mark.flink]
log = logging.getLogger(__name__)

LOG_PRODUCTS = PRODUCTS[:190]
BOUND = 1e160  # RTREC_MAX_ABS_X of this run: 1e154 passes the validator, 1e170 does not


def _poison_x(rng: np.random.Generator, dim: int, **at: float) -> np.ndarray:
    x = np.round(rng.uniform(0, 1, dim), 6)
    for i, v in at.items():
        x[int(i[1:])] = v
    return x


def _cases(s: Settings, t0: int, rng: np.random.Generator,
           traffic: Traffic) -> tuple[list[Record], list[Record], Counter, dict[str, np.ndarray]]:
    """(records among the traffic, records after it, expected dead letters by reason, poison x
    by request id). Everything in partition 0 of its topic, so the order is the one written."""
    imp_t, clk_t, dl = s.kafka.topic_impressions, s.kafka.topic_clicks, Counter()
    d = s.model.dim
    recs: list[Record] = []
    poison: dict[str, np.ndarray] = {}

    def x() -> np.ndarray:
        return np.round(rng.normal(size=d), 6)

    # learner refusals: shown products that also have ordinary traffic in the same batches
    for rid, xv, shown, clicked in (
            ("poison-1e154", _poison_x(rng, d, i0=1e154), ("p001", "p002", "p003"), "p002"),
            ("poison-overflow", _poison_x(rng, d, i0=1e154, i1=-1e154), ("p004", "p005"), None),
            ("poison-digits", _poison_x(rng, d, i3=1e6), ("p006",), "p006")):
        ts = t0 + len(recs)
        recs.append((imp_t, impression_json(rid, ts, shown, xv), ts, 0))
        if clicked:
            recs.append((clk_t, Click(rid, clicked, ts + 100).to_json(), ts + 100, 0))
        poison[rid] = xv
        dl["not_learnable"] += len(shown) + (clicked is not None)
    # beyond this run's bound, and an id out of its domain: the validator's bad_value
    recs.append((imp_t, impression_json("beyond", t0 + 10, ("p007",), _poison_x(rng, d, i2=1e170)),
                 t0 + 10, 0))
    recs.append((imp_t, impression_json("neg-user", t0 + 11, ("p007",), x(), user_id=-1),
                 t0 + 11, 0))
    dl["bad_value"] += 2
    # a record older than RTREC_MAX_EVENT_AGE_S at validation (8 days > 7)
    old = now_ms() - 8 * 86_400_000
    recs.append((clk_t, Click("old", "p008", old).to_json(), old, 0))
    dl["bad_event_time"] += 1
    # a click well before its impression is refused; one within RTREC_CLICK_SKEW_MS counts
    for rid, product, lead_ms in (("early", "p010", 2000), ("skewed", "p011", 200)):
        ts = t0 + 20 + len(recs)
        xv = x()
        recs.append((imp_t, impression_json(rid, ts, (product,), xv), ts, 0))
        recs.append((clk_t, Click(rid, product, ts - lead_ms).to_json(), ts - lead_ms, 0))
        traffic.observe(product, xv, 1.0 if lead_ms <= s.job.click_skew_ms else 0.0)
    dl["early_click"] += 1
    # after everything: a record 5 minutes ahead of the clock (> RTREC_MAX_CLOCK_SKEW_S)
    ahead = now_ms() + 5 * 60_000
    after = [(imp_t, impression_json("ahead", ahead, ("p009",), x()), ahead, 0)]
    dl["bad_event_time"] += 1
    return recs, after, dl, poison


def test_poison_and_out_of_range_events_never_reach_the_model(
        job_settings: Settings, products_file: Path, tmp_path: Path) -> None:
    """Normal traffic with the poison interleaved, one job run with no restart allowed: every
    published state is finite and equals batch ridge of the normal traffic alone (1e-9), and
    every poison and out-of-range record is in the dead-letter topic with its reason."""
    s = job_settings.override(RTREC_MAX_ABS_X=BOUND)
    t0 = now_ms() - 30 * 60_000
    traffic = seeded_traffic(s, 2000, seed=20, start_ms=t0, products=LOG_PRODUCTS)
    cases, after, expected_dl, poison = _cases(s, t0 + 1000, np.random.default_rng(20), traffic)
    expected_dl["unparseable"] += 2 * s.kafka.topic_partitions  # the sentinels
    half = len(traffic.records) // 2  # the poison in the middle of the backlog
    produce(s, [*traffic.records[:half], *cases, *traffic.records[half:], *after,
                *sentinels(s, now_ms() + 10 * 60_000)])
    expected = ridge(traffic.observations, s.model.dim, s.model.l2)

    job = JobProcess(s, tmp_path / "job.log",
                     ["--products", str(products_file), "--max-restarts", "0"]).start()
    dead = DeadLetters(s)
    try:
        try:
            wait_learned(s, versions(traffic.observations), job, timeout_s=150)
            items = dead.until_quiet(sum(expected_dl.values()), 60, job=job)
            assert job.alive(), "the job failed (no restart was allowed)"
        finally:
            job.kill()
    finally:
        dead.close()
    params = assert_parity(s, expected)  # the poison's products too, as if it never came
    for pid, p in params.items():
        assert np.isfinite(p.state.A_inv).all() and np.isfinite(p.state.b).all(), pid
        np.linalg.cholesky(p.state.A_inv)

    assert Counter(d["reason"] for d in items) == expected_dl
    refused = [d for d in items if d["reason"] == "not_learnable"]
    for d in refused:  # the item as learned: product TAB o|a<reward>:x (docs/JOB_LINES.md)
        assert (d["topic"], d["offset"], d["error_class"]) == ("?", -1, "NotLearnableError")
        product, item = d["value"].split("\t")
        xv = np.frombuffer(bytes.fromhex(item.split(":", 1)[1]), dtype="<f8")
        assert any(np.array_equal(xv, p) for p in poison.values()), d
        assert f"product '{product}'" in d["message"]
    assert Counter(d["value"].split("\t")[0] for d in refused) == \
        {"p001": 1, "p002": 2, "p003": 1, "p004": 1, "p005": 1, "p006": 2}
    by_reason = {(d["reason"], json.loads(d["value"])["request_id"]): d for d in items
                 if d["reason"] in ("bad_value", "bad_event_time", "early_click")}
    assert by_reason[("bad_value", "beyond")]["field"] == "x[2]"
    assert by_reason[("bad_value", "neg-user")]["field"] == "user_id"
    assert by_reason[("bad_event_time", "old")]["field"] == "$timestamp"
    assert by_reason[("bad_event_time", "ahead")]["field"] == "$timestamp"
    assert by_reason[("early_click", "early")]["field"] == "ts_ms"
