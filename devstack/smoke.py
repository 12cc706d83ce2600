"""A smoke round trip through the real stack: one impression event through Kafka, one
parameter value through the Redis store, each read back and compared."""

from __future__ import annotations

import logging
import time
import uuid

import numpy as np
from confluent_kafka import Consumer, Producer

from contract import codec, linucb
from contract.config import Settings
from contract.events import Impression, parse_event
from contract.store import ParamStore, connect

log = logging.getLogger(__name__)


def smoke(settings: Settings) -> list[str]:
    """Run the round trips; return what was checked (raises on any mismatch)."""
    done: list[str] = []
    imp = Impression(request_id=f"smoke-{uuid.uuid4().hex[:8]}", user_id=0,
                     ts_ms=int(time.time() * 1000), x=tuple([0.5] * settings.dim),
                     products=("p000",), scores=(0.0,), policy="smoke", model_version=0,
                     propensity=1.0)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    producer.produce(settings.topic_impressions, imp.to_json(), key=imp.request_id.encode())
    if producer.flush(10) != 0:
        raise RuntimeError(f"Kafka at {settings.kafka_bootstrap} did not acknowledge the event")
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap,
                         "group.id": f"smoke-{uuid.uuid4().hex}", "auto.offset.reset": "earliest"})
    consumer.subscribe([settings.topic_impressions])
    deadline, found = time.monotonic() + 30, False
    while not found and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            found = parse_event(msg.value(), settings.dim) == imp
    consumer.close()
    if not found:
        raise RuntimeError(f"the event did not come back from topic {settings.topic_impressions}")
    done.append(f"Kafka: produced an impression to '{settings.topic_impressions}' and read it back")

    client = connect(settings.redis_host, settings.redis_port, settings.redis_password,
                     settings.redis_db, timeout_s=2)
    store = ParamStore(client, prefix=f"{settings.redis_prefix}-smoke")
    state = linucb.update(linucb.init_state(settings.dim, settings.l2),
                          np.full(settings.dim, 0.5), 1.0)
    store.write("p000", codec.encode(state, updated_at_ms=int(time.time() * 1000)))
    back = store.read_many(["p000"], dim=settings.dim)["p000"].state
    if back.A_inv.tobytes() != state.A_inv.tobytes():
        raise RuntimeError("Redis returned different parameter bytes")
    refused = not store.write("p000", codec.encode(linucb.init_state(settings.dim)))
    store.clear()
    done.append("Redis: wrote LinUCB parameters (version 1), read them back bit-exact, "
                f"and an older version was {'refused' if refused else 'ACCEPTED (bug)'}")
    return done
