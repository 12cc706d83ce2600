"""Warm the learner from history through Kafka: append a historical log to the job's topics.

Going through Kafka (rather than a separate batch job writing state) means history is learned
by exactly the same code path, validated, joined and checkpointed like live traffic, and a
restart cannot learn it twice (the offsets are in the checkpoint).

The Kafka timestamp is the job's event time. History keeps its relative timing (clicks stay
inside or outside their windows) but is shifted so its last event lands at "now": a log from a
simulated calendar ahead of the wall clock would otherwise push the watermark past live
traffic (every live window would close at once), and Kafka refuses timestamps more than
``log.message.timestamp.after.max.ms`` (1 h) ahead. The job refuses event times older than
``RTREC_MAX_EVENT_AGE_S`` (7 days), so a log spanning more than half of that (the shipped one
spans 52 weeks) also has its long gaps cut short: :func:`event_times`.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Iterable
from pathlib import Path

from contract.config import Settings

log = logging.getLogger(__name__)


def append_events(settings: Settings, lines: Iterable[bytes], shift_to_now: bool = True) -> int:
    """Append raw event lines (impressions and clicks, contract JSON); returns the count."""
    import time

    from contract.kafka import kafka_producer

    events = [(line.strip(), _obj(line)) for line in lines if line.strip()]
    times = [o.get("ts_ms") if type(o.get("ts_ms")) is int else None for _, o in events]
    if shift_to_now:
        j = settings.job
        times = event_times(times, time.time_ns() // 1_000_000,
                            round(j.max_event_age_s * 1000),
                            round(j.reward_window_s * 1000) + j.click_skew_ms + 1000)
    else:
        newest = max((t for t in times if t is not None), default=0)
        times = [newest if t is None else t for t in times]
    producer = kafka_producer(settings.kafka, **{"linger.ms": 20, "enable.idempotence": True})
    n = 0
    for (line, obj), ts in zip(events, times, strict=True):
        k = settings.kafka
        topic = k.topic_clicks if obj.get("type") == "click" else k.topic_impressions
        producer.produce(topic, value=line, key=str(obj.get("request_id", "")).encode(),
                         timestamp=max(0, ts))
        n += 1
        if n % 10_000 == 0:
            producer.poll(0)
    remaining = producer.flush(60)
    if remaining:
        raise RuntimeError(f"{remaining} events not acknowledged by Kafka within 60 s")
    return n


def event_times(times: list[int | None], now_ms: int, max_age_ms: int,
                max_gap_ms: int) -> list[int]:
    """The Kafka timestamps of history: shifted so the newest lands at ``now_ms`` (a missing
    time lands there too). When the history spans more than ``max_age_ms / 2``, each gap
    between consecutive times longer than ``max_gap_ms`` is cut to ``max_gap_ms`` first: two
    events closer than that keep their exact distance and farther ones stay at least that far
    apart, so with ``max_gap_ms`` beyond the reward window and the click skew every click stays
    inside or outside its window, and the log is recent enough for the job (up to
    ``max_age_ms / 2 / max_gap_ms`` distinct times; a warning says when it is not).

    >>> event_times([0, 500, 10**12, None], now_ms=10**13, max_age_ms=10**9, max_gap_ms=5000)
    [9999999994500, 9999999995000, 10000000000000, 10000000000000]
    """
    known = sorted({t for t in times if t is not None})
    if not known:
        return [now_ms for _ in times]
    offset = {t: t - known[0] for t in known}
    if known[-1] - known[0] > max_age_ms // 2:
        at = 0
        for prev, t in itertools.pairwise(known):
            at += min(t - prev, max_gap_ms)
            offset[t] = at
        if at > max_age_ms // 2:
            log.warning("history spans %.1f days even with gaps cut to %d ms: the job will "
                        "refuse what is older than %.1f days", at / 86_400_000, max_gap_ms,
                        max_age_ms / 86_400_000)
    last = offset[known[-1]]
    return [now_ms if t is None else now_ms - last + offset[t] for t in times]


def _obj(line: bytes) -> dict:
    """The event's routing fields; a bad line still goes in (the job dead-letters it)."""
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        return {}
    return obj if isinstance(obj, dict) else {}


def append_log(settings: Settings, path: Path) -> int:
    with path.open("rb") as f:
        return append_events(settings, f)
