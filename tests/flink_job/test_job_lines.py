"""The Python side of docs/JOB_LINES.md: the validator, the learner and the dead-letter builder
produce and parse the golden lines of tests/golden/job_lines.json byte for byte. The JVM side
(flink_job/java/test/rtrec/JobLinesTest.java) checks the same file, so a line format cannot
change on one side only. No Flink: the functions run on stand-ins for their runtime context.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from contract import codec, reasons
from contract.events import EventError
from flink_job import functions
from flink_job.records import dead_letter, meta_only, parse_batch, split_record, unescape_id
from tests.helpers import FakeRuntimeContext

ROOT = Path(__file__).resolve().parents[2]
GOLDEN_PATH = ROOT / "tests" / "golden" / "job_lines.json"
GOLDEN: dict[str, Any] = json.loads(GOLDEN_PATH.read_text(encoding="utf-8"))
SOURCE = {r["name"]: r for r in GOLDEN["source_records"]}


@pytest.fixture
def validate() -> Iterator[functions.Validate]:
    g = GOLDEN["validate"]
    known = None if g["known_products"] is None else frozenset(g["known_products"])
    fn = functions.Validate(g["dim"], known, g["max_bytes"], max_abs_x=g["max_abs_x"],
                            max_age_ms=g["max_event_age_ms"],
                            max_ahead_ms=g["max_clock_skew_ms"], clock=lambda: g["now_ms"])
    interval = sys.getswitchinterval()
    fn.open(FakeRuntimeContext())  # type: ignore[arg-type]
    yield fn
    sys.setswitchinterval(interval)  # open() tunes the interpreter for the job


def test_the_reasons_are_the_contracts() -> None:
    """The golden list is what RewardJoin.REASONS is checked against on the JVM side."""
    assert GOLDEN["reasons"] == {"validation": list(reasons.VALIDATION),
                                 "join": list(reasons.JOIN), "learn": list(reasons.LEARN)}
    assert set(reasons.ALL) == set(reasons.VALIDATION) | set(reasons.JOIN) | set(reasons.LEARN)
    for envelope in GOLDEN["reward_join"]["dead_letters"]:
        assert json.loads(envelope)["reason"] in reasons.JOIN
    for envelope in GOLDEN["validate"]["dead_letters"]:
        assert json.loads(envelope)["reason"] in reasons.VALIDATION
    for envelope in GOLDEN["learner"]["refused"]["dead_letters"]:
        assert json.loads(envelope)["reason"] in reasons.LEARN


def test_the_record_separator_is_the_golden_one() -> None:
    assert functions.RECORD_SEPARATOR == GOLDEN["record_separator"] == "\x1e"


@pytest.mark.parametrize("record", GOLDEN["source_records"], ids=lambda r: r["name"])
def test_source_record_lines_parse_to_their_kafka_record(record: dict[str, Any]) -> None:
    meta = meta_only(record["line"])
    assert (meta.topic, meta.partition, meta.offset, meta.timestamp) == \
        (record["topic"], record["partition"], record["offset"], record["timestamp"])
    if "rejected" in record:  # oversized or null: never an event
        with pytest.raises(EventError) as err:
            split_record(record["line"])
        assert err.value.reason == record["rejected"]
        return
    _, raw = split_record(record["line"])
    assert raw == base64.b64decode(record["value_b64"])


def test_the_validator_turns_the_source_batch_into_join_lines_and_dead_letters(
        validate: functions.Validate) -> None:
    batch = GOLDEN["source_batch"]
    sep = GOLDEN["record_separator"]
    assert batch["line"] == sep.join(SOURCE[name]["line"] for name in batch["records"])
    out = list(validate.process_element(batch["line"], None))  # type: ignore[arg-type]
    side = [o for o in out if isinstance(o, tuple)]
    assert all(tag is functions.DEAD_LETTERS for tag, _ in side)
    dead = [value for _, value in side]
    lines = [o for o in out if not isinstance(o, tuple)]
    assert lines == [GOLDEN["validate"]["out"]]
    assert dead == GOLDEN["validate"]["dead_letters"]
    assert GOLDEN["validate"]["out"] == sep.join(j["line"] for j in GOLDEN["join_lines"])


@pytest.mark.parametrize("batch", GOLDEN["learner"]["batches"], ids=lambda b: b["product"])
def test_micro_batch_lines_parse_to_the_exact_floats(batch: dict[str, Any]) -> None:
    assert [batch["product"], batch["batch"]] in GOLDEN["micro_batch"]["rows"]
    product, X, rewards, observe = parse_batch(batch["batch"], GOLDEN["learner"]["dim"])
    assert product == batch["product"] and unescape_id(product) == batch["product_id"]
    assert X.tobytes() == np.asarray(batch["x"], dtype="<f8").tobytes()  # bit for bit, -0.0 too
    assert rewards.tolist() == batch["rewards"] and observe.tolist() == batch["observe"]


def test_the_learner_dead_letters_what_it_cannot_learn_and_learns_the_rest(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 20: an item whose x float64 cannot hold leaves as a dead letter (reason
    not_learnable, the item as its value), is counted and logged; the batch's other items
    are learned."""
    g = GOLDEN["learner"]["refused"]
    monkeypatch.setattr(functions, "check_dim", lambda *_: None)  # the golden lines' d is 2
    fn = functions.Learn(GOLDEN["learner"]["dim"], g["l2"])
    ctx = FakeRuntimeContext()
    interval = sys.getswitchinterval()
    fn.open(ctx)  # type: ignore[arg-type]
    sys.setswitchinterval(interval)
    with caplog.at_level(logging.WARNING, logger="flink_job.functions"):
        out = list(fn.process_element(g["batch"], None))  # type: ignore[arg-type]
    assert "product p2: 2 of 3 item(s) not learned (not_learnable)" in caplog.text
    dead = [value for tag, value in (o for o in out if o[0] is functions.DEAD_LETTERS)]
    assert dead == g["dead_letters"]
    (pid, blob, _), = [o for o in out if o[0] is not functions.DEAD_LETTERS]
    state = codec.decode(blob).state
    assert (pid, state.n, state.version) == ("p2", g["n"], g["version"])
    assert ctx.state.blob == blob and np.isfinite(state.A_inv).all()
    assert fn.refused == len(dead) and fn.learned == g["n"]


@pytest.mark.parametrize("case", GOLDEN["dead_letters"], ids=lambda c: c["name"])
def test_the_dead_letter_envelope(case: dict[str, Any]) -> None:
    """The same vectors RewardJoin.deadLetter() is checked against: one envelope, two builders."""
    assert dead_letter(meta_only(case["source"]), case["reason"], case["field"], case["message"],
                       case["error_class"]) == case["envelope"]


def _golden_strings(node: Any, out: set[str]) -> set[str]:
    if isinstance(node, str):
        out.add(node)
    elif isinstance(node, list):
        out.add(json.dumps(node, ensure_ascii=False))
        for v in node:
            _golden_strings(v, out)
    elif isinstance(node, dict):
        for v in node.values():
            _golden_strings(v, out)
    return out


def test_the_docs_examples_are_golden_lines() -> None:
    """docs/JOB_LINES.md shows lines as JSON strings; every whole one (no "…") is golden."""
    golden = _golden_strings(GOLDEN, set())
    doc = (ROOT / "docs" / "JOB_LINES.md").read_text(encoding="utf-8")
    examples = [line for block in re.findall(r"```\n(.*?)```", doc, re.S)
                for line in block.splitlines() if line[:1] in '"[' and "…" not in line]
    assert len(examples) >= 15
    for line in examples:
        value = json.loads(line)
        assert (value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)) \
            in golden, line
