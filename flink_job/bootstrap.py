"""Warm the learner from history through Kafka: append a historical log to the job's topics.

Going through Kafka (rather than a separate batch job writing state) means history is learned
by exactly the same code path, validated, joined and checkpointed like live traffic, and a
restart cannot learn it twice (the offsets are in the checkpoint).

The Kafka timestamp is the job's event time. History keeps its relative timing (clicks stay
inside or outside their windows) but is shifted so its last event lands at "now": a log from a
simulated calendar ahead of the wall clock would otherwise push the watermark past live
traffic (every live window would close at once), and Kafka refuses timestamps more than
``log.message.timestamp.after.max.ms`` (1 h) ahead.
"""

from __future__ import annotations

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
    newest = max((o["ts_ms"] for _, o in events if isinstance(o.get("ts_ms"), int)), default=0)
    shift = time.time_ns() // 1_000_000 - newest if shift_to_now else 0
    producer = kafka_producer(settings.kafka, **{"linger.ms": 20, "enable.idempotence": True})
    n = 0
    for line, obj in events:
        k = settings.kafka
        topic = k.topic_clicks if obj.get("type") == "click" else k.topic_impressions
        ts = obj.get("ts_ms")
        ts = ts + shift if isinstance(ts, int) and not isinstance(ts, bool) else newest + shift
        producer.produce(topic, value=line, key=str(obj.get("request_id", "")).encode(),
                         timestamp=max(0, ts))
        n += 1
        if n % 10_000 == 0:
            producer.poll(0)
    remaining = producer.flush(60)
    if remaining:
        raise RuntimeError(f"{remaining} events not acknowledged by Kafka within 60 s")
    return n


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
