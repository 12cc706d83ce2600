"""Every recommendation's impression and every click are readable from a real Kafka broker,
with the fields the job and off-policy evaluation need; an unreachable broker never blocks a
request and every event ends up counted."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime

import numpy as np
import pytest

from contract.config import Settings
from contract.events import Click, Impression, parse_event
from contract.features import FeatureSpace, load_catalog, load_users
from devstack.stack import free_port
from serving import Recommender
from serving.eventlog import KafkaEventLog
from tests.helpers import read_topics

pytestmark = pytest.mark.integration


def test_every_recommendation_logs_an_impression_and_feedback_a_click(unique_settings) -> None:
    settings = unique_settings
    catalog = load_catalog()
    users = load_users()
    rec = Recommender(settings, [p.product_id for p in catalog], events=KafkaEventLog(settings),
                      users={u.user_id: u for u in users}, features=FeatureSpace.load(), seed=5)
    shown = {}
    at = datetime(2026, 1, 10, 9, 15, tzinfo=UTC)  # a Saturday morning
    policies = ["linucb", "greedy", "random"]
    try:
        for i in range(60):
            r = rec.recommend(users[i].user_id, at=at, k=5, policy=policies[i % 3])
            shown[r.request_id] = r
        clicked = list(shown.values())[:6]
        for r in clicked:
            rec.feedback(r.request_id, r.items[0].product_id, at=at)
    finally:
        rec.close()
    stats = rec.events.stats()
    assert (stats.published, stats.failed, stats.dropped, stats.queued) == (66, 0, 0, 0)

    messages = read_topics(settings, [settings.kafka.topic_impressions], at_least=60)
    assert len(messages) == 60  # read until quiet: none more
    product_ids = {p.product_id for p in catalog}
    for msg in messages:
        imp = parse_event(msg.value(), dim=settings.model.dim, known_products=product_ids)
        assert isinstance(imp, Impression)
        assert msg.key().decode() == imp.request_id
        r = shown.pop(imp.request_id)
        assert imp.user_id == r.user_id and imp.ts_ms == r.ts_ms == int(at.timestamp() * 1000)
        assert imp.products == tuple(i.product_id for i in r.items) and len(imp.products) == 5
        assert imp.scores == tuple(i.score for i in r.items)
        assert imp.policy == r.policy and imp.model_version == r.model_version == 0
        np.testing.assert_allclose(imp.x, r.x)
        assert imp.x[10] == 1.0 and imp.x[14] == 1.0  # morning, weekend
        expected = 1.0 if r.policy != "random" else 1 / (200 * 199 * 198 * 197 * 196)
        assert imp.propensity == pytest.approx(expected)
    assert not shown

    clicks = [parse_event(m.value(), dim=settings.model.dim)
              for m in read_topics(settings, [settings.kafka.topic_clicks], at_least=6)]
    assert len(clicks) == 6
    assert all(isinstance(c, Click) for c in clicks)
    assert sorted((c.request_id, c.product_id) for c in clicks) == sorted(
        (r.request_id, r.items[0].product_id) for r in clicked)
    assert rec.clicks["linucb"] + rec.clicks["greedy"] + rec.clicks["random"] == 6


class _CallLog:
    """Stands in for the event log's producer: forwards every call and records which thread
    made it and to which method."""

    def __init__(self, inner: object) -> None:
        self._inner = inner
        self.calls: list[tuple[int, str]] = []

    def __len__(self) -> int:
        return len(self._inner)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> object:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def call(*args: object, **kwargs: object) -> object:
            self.calls.append((threading.get_ident(), name))
            return attr(*args, **kwargs)

        return call


@pytest.mark.parametrize("broker", ["refused", "frozen"])
def test_an_unreachable_or_frozen_kafka_never_blocks_a_request_and_counts_every_event(
        broker: str, frozen_broker: int) -> None:
    """A port that refuses, or a broker that accepts connections and never answers (where any
    call that waits on the network would wait for the 60 s message timeout): 200 requests are
    answered, each hands its event to librdkafka's queue with one ``produce`` call and makes
    no other call on the producer; every event ends up counted (failed or dropped)."""
    frozen = broker == "frozen"
    port = frozen_broker if frozen else free_port()
    settings = Settings.from_env({"RTREC_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}"})
    log = KafkaEventLog(settings, max_queue=20,
                        message_timeout_ms=60_000 if frozen else 1500)
    spy = _CallLog(log._producer)
    log._producer = spy  # type: ignore[assignment]
    rec = Recommender(settings, ["a", "b", "c"], events=log)
    request_thread: list[int] = []

    def requests() -> None:
        request_thread.append(threading.get_ident())
        for _ in range(200):
            rec.recommend(1, x=np.ones(settings.model.dim), k=2)

    worker = threading.Thread(target=requests, daemon=True)
    worker.start()
    worker.join(30)  # only stops a hung test: a call waiting on the broker waits 60 s
    assert not worker.is_alive(), "the requests are blocked on Kafka"
    on_request = Counter(name for thread, name in spy.calls if thread == request_thread[0])
    assert on_request == {"produce": 200}, on_request
    rec.close(timeout_s=1 if frozen else 5)
    s = log.stats()
    assert s.published == 0
    assert s.failed == 20 and s.dropped == 180 and s.queued == 0, s
    assert rec.health().status == "degraded"
