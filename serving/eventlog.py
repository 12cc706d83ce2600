"""Asynchronous, batched event logging to Kafka that never blocks a request.

A request serialises its event (:meth:`contract.events.Impression.to_json`) and hands it to
confluent-kafka's ``produce``, which copies it into librdkafka's bounded queue and returns at
once (it never waits on the network or on metadata; a full queue raises and the event is
counted as dropped). librdkafka's own threads batch per partition (``linger.ms``) and send
with ``acks=all`` and idempotence, so an event counted as *published* is acknowledged by the
broker and a retry cannot duplicate it. Nothing is lost silently: every accepted event ends
*published* or *failed* (refused, or unacknowledged within ``message.timeout.ms``), every
refused one is *dropped*; all are counted and logged. :meth:`KafkaEventLog.close` flushes.

confluent-kafka (librdkafka) is used rather than kafka-python because it measured 76-85k msg/s
here against ~10k, and its ``produce`` never waits on metadata (kafka-python's ``send`` can block
up to ``max_block_ms``). Events are keyed by ``request_id`` so an impression and its clicks
land in the same partition number of their topics.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from confluent_kafka import KafkaError

from contract.config import Settings
from contract.events import Click, Event, Impression
from contract.kafka import kafka_producer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EventStats:
    """Counters since start. ``queued`` are accepted but not yet acknowledged either way."""

    accepted: int
    published: int
    failed: int
    dropped: int
    queued: int
    last_error: str | None = None
    last_failure_age_s: float | None = None  # seconds since the last failed/dropped event
    oldest_queued_age_s: float | None = None  # how long the oldest queued event has waited


class EventSink(Protocol):
    """Where a recommender's events go: Kafka in production, a list in unit tests."""

    def publish(self, event: Event) -> bool:
        """Queue one event; False (and counted) if it had to be dropped. Never blocks."""
        ...

    def stats(self) -> EventStats: ...

    def close(self, timeout_s: float = 10.0) -> None: ...


class MemoryEventLog:
    """Keeps events in a list (library use without Kafka, and unit tests of the logic)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def publish(self, event: Event) -> bool:
        self.events.append(event)
        return True

    def stats(self) -> EventStats:
        n = len(self.events)
        return EventStats(accepted=n, published=n, failed=0, dropped=0, queued=0)

    def close(self, timeout_s: float = 10.0) -> None:
        return None


class KafkaEventLog:
    """Impressions to ``settings.kafka.topic_impressions``, clicks to ``.topic_clicks``.

    ``publish`` serialises the event (~10 us) and calls librdkafka's ``produce``, which copies
    it into the client's bounded queue and returns; librdkafka's own threads batch and send.
    No Python thread works per event: an earlier design queued events for a Python worker
    thread, and that thread's bursts held the GIL and added milliseconds to the p99 of the
    requests it was meant to spare (bench/bench_serving.py). A background thread only calls
    ``poll``, which waits without the GIL; delivery reports are requested for failures only
    (``delivery.report.only.error``), so *published* = produced - still queued - failed.
    """

    def __init__(self, settings: Settings, max_queue: int = 100_000, linger_ms: int = 5,
                 message_timeout_ms: int = 30_000, extra_config: dict[str, object] | None = None
                 ) -> None:
        self._topics = {"impression": settings.kafka.topic_impressions,
                        "click": settings.kafka.topic_clicks}
        config: dict[str, object] = {
            "client.id": "rtrec-serving",
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": linger_ms,
            "batch.num.messages": 10_000,
            "compression.type": "lz4",
            "queue.buffering.max.messages": max_queue,
            "message.timeout.ms": message_timeout_ms,
            "delivery.report.only.error": True,
            "error_cb": self._client_error,
            "log_level": 3,  # errors only: a stopped broker otherwise logs every reconnect
            "logger": logging.getLogger("serving.eventlog.librdkafka"),  # not raw stderr
        }
        config.update(extra_config or {})
        self._producer = kafka_producer(settings.kafka, **config)
        self._closing = False
        self._flushed = False
        self._lock = threading.Lock()
        self._accepted = self._failed = self._dropped = 0
        self._last_error: str | None = None
        self._last_logged = 0.0
        self._last_failure: float | None = None
        # (monotonic time, events accepted by then), a mark each time the poller sees the
        # count grown: the age of the oldest queued event without a timestamp per event.
        self._marks: deque[tuple[float, int]] = deque()
        self._poller = threading.Thread(target=self._poll, name="rtrec-eventlog", daemon=True)
        self._poller.start()

    # --- request path ------------------------------------------------------------------------
    def publish(self, event: Event) -> bool:
        if not self._closing:
            try:
                self._producer.produce(self._topics[event.type], event.to_json(),
                                       key=event.request_id, on_delivery=self._failed_delivery)
                with self._lock:
                    self._accepted += 1
                return True
            except BufferError:  # the bounded queue is full: Kafka slower than traffic
                reason = "Kafka producer queue full: event dropped"
            except Exception as exc:  # KafkaException, bad value...: count it, never raise
                reason = f"produce failed: {type(exc).__name__}: {exc}"
        else:
            reason = "event log closed: event dropped"
        with self._lock:
            self._dropped += 1
        self._log_error(reason)
        return False

    def stats(self) -> EventStats:
        # In librdkafka, not yet acknowledged or failed (after close: counted as failed).
        queued = 0 if self._flushed else len(self._producer)
        with self._lock:
            now = time.monotonic()
            age = None if self._last_failure is None else now - self._last_failure
            return EventStats(accepted=self._accepted,
                              published=max(0, self._accepted - self._failed - queued),
                              failed=self._failed, dropped=self._dropped, queued=queued,
                              last_error=self._last_error, last_failure_age_s=age,
                              oldest_queued_age_s=self._oldest_age(queued, now))

    def _oldest_age(self, queued: int, now: float) -> float | None:
        """How long the oldest queued event has waited (a lower bound, by up to one poll
        period), assuming events leave the queue in the order they came: the first
        ``accepted - queued`` have left, so the oldest queued is event number
        ``accepted - queued``, accepted by the first mark that counts more. Exact when nothing
        is acknowledged (a frozen broker); with one partition stuck and others flowing it
        understates, and the count of queued events is the signal then. Call with the lock."""
        first = self._accepted - max(0, queued)
        marks = self._marks
        while marks and marks[0][1] <= first:  # marks of events that have all left
            marks.popleft()
        return now - marks[0][0] if marks and queued > 0 else None

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop accepting, wait up to ``timeout_s`` for what is queued to be acknowledged;
        whatever is still unacknowledged then is counted as failed."""
        if self._closing:
            return
        self._closing = True
        self._poller.join(1.0)
        left = self._producer.flush(max(0.1, timeout_s))
        self._flushed = True
        if left:
            self._producer.purge()  # give up on them (counted below), then release the client
        self._producer.close()
        if left:
            with self._lock:
                self._failed += left
            self._log_error(f"{left} events not acknowledged by Kafka at close", force=True)

    # --- callbacks (run inside poll/flush) ---------------------------------------------------
    def _poll(self) -> None:
        while not self._closing:
            self._producer.poll(0.2)  # waits without the GIL; serves error reports
            queued = len(self._producer)
            now = time.monotonic()
            with self._lock:
                if not self._marks or self._marks[-1][1] != self._accepted:
                    self._marks.append((now, self._accepted))
                self._oldest_age(queued, now)  # drops the marks no queued event needs

    def _failed_delivery(self, err: object, _msg: object) -> None:
        if err is None:  # not requested (delivery.report.only.error), but harmless
            return
        if getattr(err, "code", lambda: None)() == KafkaError._PURGE_QUEUE:
            return  # purged by close(), which counts what it gives up on: not twice
        with self._lock:
            self._failed += 1
        self._log_error(f"delivery failed: {err}")

    def _client_error(self, err: object) -> None:
        log.debug("kafka client error: %s", err)  # transient (broker down...); deliveries count

    def _log_error(self, message: str, force: bool = False) -> None:
        """Log at most once a second: an outage must not turn into a log flood."""
        now = time.monotonic()
        self._last_error = message
        self._last_failure = now
        if force or now - self._last_logged >= 1.0:
            self._last_logged = now
            log.warning("%s (accepted=%d failed=%d dropped=%d)", message, self._accepted,
                        self._failed, self._dropped)


__all__ = ["Click", "EventSink", "EventStats", "Impression", "KafkaEventLog", "MemoryEventLog"]
