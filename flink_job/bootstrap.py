"""Warm the learner from history through Kafka: append a historical log to the job's topics.

Going through Kafka (rather than a separate batch job writing state) means history is learned
by exactly the same code path, validated, joined and checkpointed like live traffic, and a
restart cannot learn it twice (the offsets are in the checkpoint). Each event is appended with
its own ``ts_ms`` as the Kafka timestamp, so the reward join sees history's real timing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

from contract.config import Settings

log = logging.getLogger(__name__)


def append_events(settings: Settings, lines: Iterable[bytes]) -> int:
    """Append raw event lines (impressions and clicks, contract JSON); returns the count."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 20,
                         "enable.idempotence": True})
    n = 0
    for line in lines:
        line = line.strip()
        if not line:
            continue
        obj = json.loads(line)
        topic = settings.topic_clicks if obj.get("type") == "click" else settings.topic_impressions
        producer.produce(topic, value=line, key=str(obj.get("request_id", "")).encode(),
                         timestamp=int(obj.get("ts_ms", 0)) or 0)
        n += 1
        if n % 10_000 == 0:
            producer.poll(0)
    remaining = producer.flush(60)
    if remaining:
        raise RuntimeError(f"{remaining} events not acknowledged by Kafka within 60 s")
    return n


def append_log(settings: Settings, path: Path) -> int:
    with path.open("rb") as f:
        return append_events(settings, f)
