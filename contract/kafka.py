"""The one way to make a Kafka producer from the settings.

confluent-kafka (librdkafka) is imported here, on first use, so the contract itself imports
without it. Callers add only what differs for them (linger, idempotence, a logger).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from contract.config import KafkaSettings

if TYPE_CHECKING:  # pragma: no cover
    from confluent_kafka import Producer


def kafka_producer(k: KafkaSettings, **config: Any) -> Producer:
    """A producer for the system's brokers; ``config`` holds librdkafka options
    (``{"linger.ms": 5}`` is written ``**{"linger.ms": 5}``)."""
    from confluent_kafka import Producer

    return Producer({"bootstrap.servers": k.bootstrap, **config})


def ensure_topic(k: KafkaSettings, topic: str, partitions: int, config: dict[str, str],
                 timeout_s: float = 30.0) -> bool:
    """Create ``topic`` with ``config`` when it is missing; True when this call made it (one
    made meanwhile by another process counts as there, not as an error)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": k.bootstrap})
    if topic in admin.list_topics(timeout=timeout_s).topics:
        return False
    fut = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1,
                                        config=config)], operation_timeout=timeout_s)[topic]
    try:
        fut.result(timeout=timeout_s)
    except Exception as exc:
        if "TOPIC_ALREADY_EXISTS" not in str(exc):
            raise
        return False
    return True
