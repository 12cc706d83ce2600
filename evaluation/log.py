"""The log an evaluation reads: impressions with their logging probabilities, joined with
their clicks, from the topics' JSON lines (a file) or from the Kafka topics themselves.

Fields of an impression that off-policy evaluation uses, beside the contract's
(docs/EXPERIMENTS.md): ``prefix_propensities`` (P that the list starts with its first j
products, j = 1..k), ``slot_propensities`` (P that the j-th product is at slot j),
``shadows`` ({name: the list that policy would have shown}), ``experiment`` and
``variant``. An impression of the ``random`` policy needs none: its probabilities follow from
the number of products it drew from. Other impressions (a deterministic policy's) are counted
and skipped: nothing off-policy can be learned from them.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contract.config import Settings
from contract.errors import RtrecError
from contract.events import MAX_ID_LEN, MAX_SHOWN, Click, EventError, Impression, parse_event

log = logging.getLogger(__name__)

OPE_FIELDS = ("prefix_propensities", "slot_propensities", "shadows", "experiment", "variant")


class LogError(RtrecError, ValueError):
    """A log the evaluation cannot read (a record that is not an event, a bad OPE field)."""


@dataclass
class Logged:
    """One impression of the log, its probabilities and the slot of its first click."""

    impression: Impression
    prefix: tuple[float, ...] | None
    marginals: tuple[float, ...] | None
    shadows: dict[str, tuple[str, ...]]
    experiment: str | None
    variant: str | None
    order: int  # place in the log (ties of ts_ms keep it)
    clicked: int | None = None  # slot of the first click, None for none
    clicks: set[int] = field(default_factory=set)


@dataclass
class LogStats:
    lines: int = 0
    impressions: int = 0
    clicks: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    orphan_clicks: int = 0

    def refuse(self, why: str) -> None:
        self.refused[why] = self.refused.get(why, 0) + 1


def parse_record(raw: bytes | str, dim: int, order: int) -> Logged | Click:
    """One JSON line: an impression (with its OPE fields split off and checked) or a click."""
    try:
        obj = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise LogError(f"not JSON: {exc}"[:200]) from exc
    if not isinstance(obj, dict):
        raise LogError("not a JSON object")
    extra = {k: obj.pop(k) for k in OPE_FIELDS if k in obj}
    try:
        event = parse_event(json.dumps(obj, allow_nan=False), dim=dim)
    except EventError as exc:
        raise LogError(str(exc)) from exc
    if isinstance(event, Click):
        if extra:
            raise LogError(f"{sorted(extra)[0]}: not a field of a click")
        return event
    k = len(event.products)
    prefix = _probabilities(extra.get("prefix_propensities"), k, "prefix_propensities")
    marg = _probabilities(extra.get("slot_propensities"), k, "slot_propensities")
    if prefix is not None and any(b > a * (1 + 1e-9) for a, b in itertools.pairwise(prefix)):
        raise LogError("prefix_propensities: must not increase (a longer prefix is rarer)")
    shadows = _shadows(extra.get("shadows"))
    return Logged(event, prefix, marg, shadows, _name(extra.get("experiment"), "experiment"),
                  _name(extra.get("variant"), "variant"), order)


def read_lines(lines: Iterable[bytes | str], dim: int, stats: LogStats) -> list[Logged]:
    """Impressions joined with their clicks; bad lines are counted by reason, not fatal."""
    by_id: dict[str, Logged] = {}
    clicks: list[Click] = []
    for line in lines:
        if isinstance(line, str | bytes) and not line.strip():
            continue
        stats.lines += 1
        try:
            rec = parse_record(line, dim, stats.lines)
        except LogError as exc:
            stats.refuse(str(exc).split(":")[0])
            continue
        if isinstance(rec, Click):
            clicks.append(rec)
        else:
            stats.impressions += 1
            by_id[rec.impression.request_id] = rec
    for c in clicks:
        if getattr(c, "kind", "click") != "click":
            continue
        rec = by_id.get(c.request_id)
        if rec is None or c.product_id not in rec.impression.products:
            stats.orphan_clicks += 1
            continue
        stats.clicks += 1
        slot = rec.impression.products.index(c.product_id)
        rec.clicks.add(slot)
        rec.clicked = slot if rec.clicked is None else min(rec.clicked, slot)
    return sorted(by_id.values(), key=lambda r: (r.impression.ts_ms, r.order))


def read_file(path: str | Path, dim: int, stats: LogStats) -> list[Logged]:
    """A file of JSON lines (impressions and clicks in any order)."""
    try:
        with Path(path).open("rb") as f:
            return read_lines(f, dim, stats)
    except OSError as exc:
        raise LogError(f"--file: cannot read {path}: {exc}") from exc


def topic_lines(settings: Settings, timeout_s: float = 30.0) -> Iterator[bytes]:
    """Every record of the impressions and clicks topics from the beginning up to their end
    when the reading started (the high watermarks), then stop: a snapshot of the log."""
    import time

    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    k = settings.kafka
    consumer = Consumer({"bootstrap.servers": k.bootstrap,
                         "group.id": f"rtrec-ope-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        parts: list[TopicPartition] = []
        ends: dict[tuple[str, int], int] = {}
        meta = consumer.list_topics(timeout=timeout_s)
        for topic in (k.topic_impressions, k.topic_clicks):
            if topic not in meta.topics or meta.topics[topic].error is not None:
                raise LogError(f"topic {topic!r} does not exist at {k.bootstrap}")
            for p in meta.topics[topic].partitions:
                lo, hi = consumer.get_watermark_offsets(TopicPartition(topic, p),
                                                        timeout=timeout_s)
                if hi > lo:
                    ends[(topic, p)] = hi
                    parts.append(TopicPartition(topic, p, OFFSET_BEGINNING))
        if not parts:
            return
        consumer.assign(parts)
        deadline = time.monotonic() + timeout_s
        while ends:
            if time.monotonic() > deadline:
                raise LogError(f"read timed out after {timeout_s:g}s with "
                               f"{len(ends)} partitions unfinished")
            for msg in consumer.consume(1000, timeout=0.5):
                if msg.error() is not None:
                    raise LogError(f"kafka: {msg.error()}")
                key = (msg.topic(), msg.partition())
                if key in ends and msg.offset() < ends[key]:
                    yield msg.value()
                    if msg.offset() + 1 >= ends[key]:
                        del ends[key]
    finally:
        consumer.close()


def _probabilities(value: Any, k: int, name: str) -> tuple[float, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != k:
        raise LogError(f"{name}: expected a list of {k} probabilities (one per product)")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) \
                or not 0 < v <= 1:
            raise LogError(f"{name}: {v!r} is not a probability in (0, 1]")
        out.append(float(v))
    return tuple(out)


def _shadows(value: Any) -> dict[str, tuple[str, ...]]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > 16:
        raise LogError("shadows: expected an object of at most 16 named lists")
    out = {}
    for name, lst in value.items():
        _name(name, "shadows")
        if not isinstance(lst, list) or not 0 < len(lst) <= MAX_SHOWN or not all(
                isinstance(p, str) and 0 < len(p) <= MAX_ID_LEN for p in lst):
            raise LogError(f"shadows: {name!r} is not a list of product ids")
        out[name] = tuple(lst)
    return out


def _name(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_LEN:
        raise LogError(f"{where}: expected a name of 1..{MAX_ID_LEN} characters")
    return value


def _no_constant(name: str) -> Any:
    raise LogError(f"{name} is not allowed")
