"""The log an evaluation reads: impressions with their logging probabilities, joined with
their clicks, from the topics' JSON lines (a file) or from the Kafka topics themselves.

Every line is parsed by the contract (``parse_event``), the experiment fields included
(``prefix_propensities``, ``slot_propensities``, ``shadows``, ``experiment``, ``variant``:
contract/events.py, docs/EXPERIMENTS.md); a line that is not a valid event is counted by its
reason and skipped. An impression of the ``random`` policy needs no probabilities: they follow
from the number of products it drew from. Other impressions without them (a deterministic
policy's) are counted and skipped by the evaluation: nothing off-policy can be learned from
them.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from contract.config import Settings
from contract.errors import RtrecError
from contract.events import Click, EventError, Impression, parse_event

log = logging.getLogger(__name__)

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
    """One JSON line: an impression (the contract's, OPE fields included) or a click; a line
    that is not a valid event raises :class:`LogError` with the event's reason first."""
    try:
        event = parse_event(raw, dim=dim)
    except EventError as exc:
        raise LogError(f"{exc.reason}: {exc.field}: {exc.message}") from exc
    if isinstance(event, Click):
        return event
    return Logged(event, event.prefix_propensities, event.slot_propensities,
                  dict(event.shadows or ()), event.experiment, event.variant, order)


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
            stats.refuse(str(exc).split(":")[0])  # the event's reason
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
