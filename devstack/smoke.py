"""A smoke round trip through the real stack: one impression event through Kafka, one
parameter value through the Redis store, each read back and compared."""

from __future__ import annotations

import logging
import time
import uuid

import numpy as np
from confluent_kafka import Consumer

from contract import codec, linucb
from contract.config import Settings
from contract.events import Impression, parse_event
from contract.kafka import kafka_producer
from contract.store import ParamStore, redis_client

log = logging.getLogger(__name__)


def smoke(settings: Settings) -> list[str]:
    """Run the round trips; return what was checked (raises on any mismatch)."""
    done: list[str] = []
    imp = Impression(request_id=f"smoke-{uuid.uuid4().hex[:8]}", user_id=0,
                     ts_ms=int(time.time() * 1000), x=tuple([0.5] * settings.model.dim),
                     products=("p000",), scores=(0.0,), policy="smoke", model_version=0,
                     propensity=1.0)
    producer = kafka_producer(settings.kafka)
    producer.produce(settings.kafka.topic_impressions, imp.to_json(), key=imp.request_id.encode())
    if producer.flush(10) != 0:
        raise RuntimeError(f"Kafka at {settings.kafka.bootstrap} did not acknowledge the event")
    consumer = Consumer({"bootstrap.servers": settings.kafka.bootstrap,
                         "group.id": f"smoke-{uuid.uuid4().hex}", "auto.offset.reset": "earliest"})
    consumer.subscribe([settings.kafka.topic_impressions])
    deadline, found = time.monotonic() + 30, False
    while not found and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        # only its own record, by key: the topic may hold anything, junk the job dead-letters too
        if msg is not None and msg.error() is None and msg.key() == imp.request_id.encode():
            found = parse_event(msg.value(), settings.model.dim) == imp
    consumer.close()
    if not found:
        raise RuntimeError("the event did not come back from topic "
                           f"{settings.kafka.topic_impressions}")
    done.append(f"Kafka: produced an impression to '{settings.kafka.topic_impressions}' and "
                "read it back")

    client = redis_client(settings.redis, timeout_s=2)
    store = ParamStore(client, prefix=f"{settings.redis.prefix}-smoke")
    state = linucb.update(linucb.init_state(settings.model.dim, settings.model.l2),
                          np.full(settings.model.dim, 0.5), 1.0)
    store.write("p000", codec.encode(state, updated_at_ms=int(time.time() * 1000)))
    back = store.read_many(["p000"], dim=settings.model.dim)["p000"].state
    if back.A_inv.tobytes() != state.A_inv.tobytes():
        raise RuntimeError("Redis returned different parameter bytes")
    refused = not store.write("p000", codec.encode(linucb.init_state(settings.model.dim)))
    store.clear()
    done.append("Redis: wrote LinUCB parameters (version 1), read them back bit-exact, "
                f"and an older version was {'refused' if refused else 'ACCEPTED (bug)'}")
    return done
