"""Bootstrap appends history to the job's topics: routed by type, relative timing kept, the
whole log shifted to end at "now" (a simulated calendar ahead of the clock would push the
watermark past live traffic), bad lines passed on for the job to dead-letter."""

from __future__ import annotations

import time

import pytest

from contract.config import Settings
from contract.events import Click, Impression
from flink_job.bootstrap import append_events

pytestmark = pytest.mark.integration


def _read_all(s: Settings, topic: str, n: int) -> list[tuple[bytes, int]]:
    from confluent_kafka import Consumer

    c = Consumer({"bootstrap.servers": s.kafka.bootstrap, "group.id": f"boot-{topic}",
                  "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    out: list[tuple[bytes, int]] = []
    deadline = time.monotonic() + 30
    while len(out) < n and time.monotonic() < deadline:
        msg = c.poll(0.5)
        if msg is not None and not msg.error():
            out.append((msg.value(), msg.timestamp()[1]))
    c.close()
    return out


def test_history_is_routed_and_shifted_to_now(unique_settings: Settings) -> None:
    s = unique_settings
    future = int(time.time() * 1000) + 30 * 24 * 3_600_000  # a calendar a month ahead
    imp = Impression("h1", 1, future, (0.0,) * s.model.dim, ("p001",), (0.0,), "historical", 0)
    lines = [imp.to_json(), Click("h1", "p001", future + 1000).to_json(), b"not json"]
    before = int(time.time() * 1000)
    assert append_events(s, lines) == 3
    imps = _read_all(s, s.kafka.topic_impressions, 2)
    clicks = _read_all(s, s.kafka.topic_clicks, 1)
    assert sorted(v for v, _ in imps) == sorted([imp.to_json(), b"not json"])
    (click_ts,) = [ts for _, ts in clicks]
    imp_ts = next(ts for v, ts in imps if v == imp.to_json())
    assert click_ts - imp_ts == 1000  # relative timing kept
    assert before <= click_ts <= int(time.time() * 1000)  # the newest event lands at "now"
