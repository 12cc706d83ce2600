"""The Python ends of the lines exchanged with the job's JVM operators, without Flink.

Every format (source record lines, join lines, micro-batch lines, the dead-letter envelope)
is specified in docs/JOB_LINES.md; tests/flink_job/test_job_lines.py checks these functions
against its golden vectors, the ones the Java side is tested against too.

>>> meta, raw = split_record("clicks\\t2\\t17\\t1700000000000\\tu\\t{}")
>>> meta.topic, meta.partition, meta.offset, meta.timestamp, raw
('clicks', 2, 17, 1700000000000, b'{}')
>>> json.loads(dead_letter(meta, "unparseable", "$", "not JSON", "{")).get("reason")
'unparseable'
"""

from __future__ import annotations

import base64
import json
from typing import NamedTuple
from urllib.parse import quote, unquote

import numpy as np

from contract.config import ModelSettings
from contract.events import OVERSIZED, UNPARSEABLE, Click, EventError, Impression
from contract.reasons import NOT_LEARNABLE


class SourceMeta(NamedTuple):
    """Where a record came from, and its original value as carried to the dead letter."""

    topic: str
    partition: int
    offset: int
    timestamp: int  # Kafka record timestamp (ms); the job's event time
    kind: str  # u | b | o | n (docs/JOB_LINES.md)
    body: str


def split_record(line: str) -> tuple[SourceMeta, bytes]:
    """Split a source line into its metadata and the value bytes to parse.

    Raises :class:`EventError` for values that cannot be events at all (oversized, null,
    malformed line); their metadata is then read with :func:`meta_only`.
    """
    meta = meta_only(line)
    if meta.kind == "u":
        return meta, meta.body.encode("utf-8")
    if meta.kind == "b":
        return meta, base64.b64decode(meta.body)
    if meta.kind == "o":
        size = meta.body.split(":", 1)[0]
        raise EventError(OVERSIZED, "$", f"{size} bytes > limit")
    raise EventError(UNPARSEABLE, "$", "null value")


def meta_only(line: str) -> SourceMeta:
    """The metadata of a source line; a malformed line (never expected) keeps all as body."""
    parts = line.split("\t", 5)
    if len(parts) != 6:
        return SourceMeta("?", -1, -1, -1, "u", line)
    try:
        return SourceMeta(parts[0], int(parts[1]), int(parts[2]), int(parts[3]), parts[4], parts[5])
    except ValueError:
        return SourceMeta("?", -1, -1, -1, "u", line)


# the separators of the JVM lines (TAB, comma) and batches (0x1E), newline, and the escape
_SPECIAL = ("\t", ",", "\x1e", "\n", "%")


def escape_id(value: str) -> str:
    """An id as it travels in the JVM operators' lines (docs/JOB_LINES.md): unchanged unless
    it holds a separator or ``%``, else percent-encoded, so the mapping is one-to-one.

    >>> escape_id("p001"), escape_id("a,b"), unescape_id(escape_id("a,b"))
    ('p001', 'a%2Cb', 'a,b')
    """
    # five ``in`` tests, not any() over _SPECIAL (a generator per id, ~1.2 us more): the
    # validator escapes ~4.7 ids per event; docs/JOB.md "Figures" has what it saves
    if "\t" in value or "," in value or "\x1e" in value or "\n" in value or "%" in value:
        return quote(value, safe="")
    return value


def unescape_id(value: str) -> str:
    return unquote(value) if "%" in value else value


def join_line(event: Impression | Click, ts: int, source_line: str) -> str:
    """The reward join's input line for a validated event (docs/JOB_LINES.md, join line).

    x travels as the hex of its float64 bytes: the same bits come back, at a tenth of the cost
    of formatting decimals (the JVM never looks inside).
    """
    if isinstance(event, Impression):
        return "\t".join(("i" + str(event.user_id), escape_id(event.request_id), str(ts),
                          np.asarray(event.x, dtype="<f8").tobytes().hex(),
                          ",".join(map(escape_id, event.products)), source_line))
    return "\t".join(("c", escape_id(event.request_id), str(ts), escape_id(event.product_id),
                      "" if event.kind == "click" else event.kind, source_line))


def join_spec(model: ModelSettings, max_lateness_s: float) -> str:
    """The reward join's spec string (``RewardJoin(window, retain, skew, spec)``): the
    feedback rule, examination probabilities, reward values and cap, the maximum lateness, and
    ``at_close`` when forgetting is on (docs/LEARNING.md says why)."""
    rewards = ",".join(f"{k}:{v!r}" for k, v in model.reward_values.items())
    return ";".join((f"feedback={model.feedback}",
                     "examination=" + ",".join(repr(p) for p in model.examination_probs),
                     f"rewards={rewards}", f"cap={model.reward_cap!r}",
                     f"lateness_ms={round(max_lateness_s * 1000)}",
                     f"at_close={'true' if model.half_life > 0 else 'false'}"))


def parse_items(line: str, dim: int
                ) -> tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """:func:`parse_batch` and the observations' weights (k,) (``o<reward>@<weight>``; 1 when
    absent), or None when no item has one (the usual batch of the ``all`` rule).

    >>> x = np.array([1.0, 2.0]).tobytes().hex()
    >>> pid, X, r, o, w = parse_items(f"p1\\to0@0.5:{x}\\to0@-1:{x}\\ta1.25:{x}", 2)
    >>> r.tolist(), o.tolist(), w.tolist()
    ([0.0, 0.0, 1.25], [True, True, False], [0.5, -1.0, 1.0])
    """
    product, *items = line.split("\t")
    heads, xs = zip(*(item.split(":", 1) for item in items), strict=True)
    X = np.frombuffer(bytes.fromhex("".join(xs)), dtype="<f8").reshape(len(items), dim)
    observe = np.array([h[0] == "o" for h in heads], dtype=bool)
    if not any("@" in h for h in heads):
        return product, X, np.array([h[1:] for h in heads], dtype=np.float64), observe, None
    parts = [h[1:].partition("@") for h in heads]
    rewards = np.array([r for r, _, _ in parts], dtype=np.float64)
    weights = np.array([w or 1.0 for _, _, w in parts], dtype=np.float64)
    return product, X, rewards, observe, weights


def parse_batch(line: str, dim: int) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """A micro-batch line of ``java/rtrec/MicroBatcher.java`` (docs/JOB_LINES.md): returns
    (escaped product id, X (k, d), rewards (k,), observe (k,)); a line with weights
    (``o0@0.5``) is refused (ValueError): the learner reads it with :func:`parse_items`.

    >>> x = np.array([1.0, 2.0]).tobytes().hex()
    >>> pid, X, r, o = parse_batch(f"p1\\to0:{x}\\ta1:{x}", 2)
    >>> pid, X.tolist(), r.tolist(), o.tolist()
    ('p1', [[1.0, 2.0], [1.0, 2.0]], [0.0, 1.0], [True, False])
    """
    product, X, rewards, observe, weights = parse_items(line, dim)
    if weights is not None:
        raise ValueError("weighted items: read them with parse_items")
    return product, X, rewards, observe


def dead_letter(meta: SourceMeta, reason: str, field: str, message: str,
                error_class: str = "EventError") -> str:
    """The dead-letter value: the original record plus why it was rejected, as the JSON
    envelope of docs/JOB_LINES.md (``RewardJoin.deadLetter`` writes the same bytes).

    An envelope because the Kafka Connect convention's headers cannot be set by PyFlink's
    KafkaSink.
    """
    env = {
        "reason": reason, "field": field, "message": message[:500], "error_class": error_class,
        "topic": meta.topic, "partition": meta.partition, "offset": meta.offset,
        "timestamp": meta.timestamp,
    }
    if meta.kind == "u":
        env["value"] = meta.body
    elif meta.kind == "b":
        env["value_b64"] = meta.body
    elif meta.kind == "o":
        size, _, prefix = meta.body.partition(":")
        env["value_b64"] = prefix
        env["value_size"] = int(size) if size.isdigit() else -1
        env["value_truncated"] = True
    else:
        env["value"] = None
    return json.dumps(env, separators=(",", ":"), ensure_ascii=False)


LEARNER_ERROR_CLASS = "NotLearnableError"
"""The ``error_class`` of the learner's dead letters (``contract.linucb.NotLearnableError``)."""


def learner_dead_letter(product: str, item: str, why: str) -> str:
    """The dead letter of an item the learner refused (docs/JOB_LINES.md, section 6): the
    learner has no source record, so topic ``?`` and -1s, and the value is the item as it came,
    a one-item micro-batch line ``product TAB item`` (x's exact bits in hex).

    >>> x = np.array([1e154, 0.0]).tobytes().hex()
    >>> env = json.loads(learner_dead_letter("p1", f"o0:{x}", "too large"))
    >>> env["reason"], env["topic"], env["offset"], env["message"]
    ('not_learnable', '?', -1, "observation of product 'p1' not learned: too large")
    >>> env["value"] == "p1\\to0:" + x
    True
    """
    kind = "observation" if item.startswith("o") else "reward"
    return dead_letter(SourceMeta("?", -1, -1, -1, "u", f"{product}\t{item}"), NOT_LEARNABLE,
                       "x", f"{kind} of product {unescape_id(product)!r} not learned: {why}",
                       LEARNER_ERROR_CLASS)
