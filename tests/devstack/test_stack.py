"""The local stack is real: Kafka round-trips records, Redis round-trips values, and
``down`` leaves nothing of ours running."""

from __future__ import annotations

import os
import time
import uuid

import pytest
import redis
from confluent_kafka import Consumer, Producer

from contract.config import Settings
from devstack.stack import Stack, StackError, free_port
from tests.helpers import alive

pytestmark = pytest.mark.integration


def test_kafka_round_trip_1000_records(stack: Stack) -> None:
    topic = stack.settings.kafka.topic_impressions
    producer = Producer({"bootstrap.servers": stack.settings.kafka.bootstrap, "linger.ms": 5})
    sent = {f"rec-{i}-{uuid.uuid4().hex}" for i in range(1000)}
    for value in sent:
        producer.produce(topic, value.encode())
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": stack.settings.kafka.bootstrap,
                         "group.id": uuid.uuid4().hex, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    got: set[str] = set()
    deadline = time.monotonic() + 60
    while not sent <= got and time.monotonic() < deadline:
        for msg in consumer.consume(500, timeout=1):
            assert msg.error() is None, msg.error()
            got.add(msg.value().decode())
    consumer.close()
    assert sent <= got


def test_topics_have_explicit_partitions(stack: Stack) -> None:
    from confluent_kafka.admin import AdminClient

    md = AdminClient({"bootstrap.servers": stack.settings.kafka.bootstrap}).list_topics(timeout=10)
    for topic in (stack.settings.kafka.topic_impressions, stack.settings.kafka.topic_clicks,
                  stack.settings.kafka.topic_dead_letter):
        assert len(md.topics[topic].partitions) == stack.settings.kafka.topic_partitions


def test_redis_round_trip(stack: Stack) -> None:
    client = redis.Redis(port=stack.settings.redis.port, socket_timeout=2)
    payload = os.urandom(2048)
    client.set("round-trip", payload)
    assert client.get("round-trip") == payload
    assert client.config_get("save")["save"] == ""  # no persistence by default


def test_second_up_is_a_no_op(stack: Stack) -> None:
    before = {n: s["pid"] for n, s in stack.status().items()}
    stack.up()
    assert {n: s["pid"] for n, s in stack.status().items()} == before


def test_down_stops_exactly_what_up_started(tmp_path) -> None:
    settings = Settings.from_env({"RTREC_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
                                  "RTREC_REDIS_PORT": free_port(),
                                  "RTREC_REDIS_PASSWORD": "s3cret-for-test",
                                  "RTREC_STACK_DIR": tmp_path})
    own = Stack(settings, kafka_controller_port=free_port())
    own.up(timeout_s=120)
    try:
        pids = {n: s["pid"] for n, s in own.status().items()}
        assert all(pids.values())
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=settings.redis.port).ping()
        assert redis.Redis(port=settings.redis.port, password="s3cret-for-test").ping()
    finally:
        stopped = own.down()
    assert sorted(stopped) == ["kafka", "redis"]
    for pid in pids.values():
        assert not alive(pid)
    assert own.down() == []  # nothing left to stop


def test_unready_service_names_itself_and_its_log(tmp_path) -> None:
    taken = free_port()
    import socket

    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", taken))
        blocker.listen()
        settings = Settings.from_env({"RTREC_REDIS_PORT": taken, "RTREC_STACK_DIR": str(tmp_path)})
        with pytest.raises(StackError, match="port .* is taken"):
            Stack(settings).up(timeout_s=5)


def test_smoke_finds_its_event_beside_records_that_are_not_events(
        unique_settings: Settings) -> None:
    """A topic that already holds what the job dead-letters (here: not JSON) must not fail the
    smoke round trip `make demo` starts with: it reads back its own record, by key."""
    from devstack.smoke import smoke

    producer = Producer({"bootstrap.servers": unique_settings.kafka.bootstrap})
    for partition in range(unique_settings.kafka.topic_partitions):  # before the event, wherever
        for junk in (b"not json", b'{"v": 1}', b""):
            producer.produce(unique_settings.kafka.topic_impressions, junk, partition=partition)
    assert producer.flush(10) == 0
    done = smoke(unique_settings)
    assert len(done) == 2 and "read it back" in done[0], done
