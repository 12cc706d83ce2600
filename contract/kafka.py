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
