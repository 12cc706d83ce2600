"""Serving follows the catalog topic (docs/CATALOG.md, docs/SERVING.md "The live catalog").

A thread reads the compacted catalog topic (``RTREC_CATALOG_TOPIC``) from its beginning into a
:class:`contract.catalog.Catalog`, the same reader the job and the command line use, so a
restarted instance rebuilds the same catalog (same offset, same digest), and then follows it.
After each batch of records it hands the catalog to the recommender
(:meth:`serving.recommender.Recommender.apply_catalog`), which turns it into the eligibility
mask the merchandising controls already use: a product whose record says ``in_stock: false``
is out of stock (left out unless a request asks ``in_stock_only=false``), a retired product is
hidden from every answer. Kafka down: the last catalog stays in force, the thread retries,
``/healthz`` says so.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from contract.catalog import Catalog, ensure_catalog_topic
from contract.config import Settings

log = logging.getLogger(__name__)

POLL_S = 0.05


@dataclass(frozen=True)
class CatalogHealth:
    """What /healthz and /metrics say about the catalog: ``offset`` (the catalog's version:
    records read), ``digest`` (its content), products live and retired, whether the first
    read to the end is done, and the last error."""

    offset: int
    digest: str
    products: int
    retired: int
    invalid: int
    loaded: bool
    last_error: str | None
    applied_at_ms: int | None


class CatalogFollower:
    """Reads the catalog topic in a thread and calls ``apply(catalog)`` after each batch."""

    def __init__(self, settings: Settings, apply: Callable[[Catalog], None]) -> None:
        self.settings = settings
        self.apply = apply
        self.catalog = Catalog()
        self._stop = threading.Event()
        self._loaded = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_error: str | None = "not started"
        self._applied_at_ms: int | None = None
        self._digest = self.catalog.digest()

    def start(self, wait_s: float = 0.0) -> bool:
        """Start the thread; wait up to ``wait_s`` for the topic to be read to its end."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="rtrec-catalog", daemon=True)
            self._thread.start()
        return self._loaded.wait(wait_s) if wait_s > 0 else self._loaded.is_set()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def health(self) -> CatalogHealth:
        c = self.catalog
        return CatalogHealth(c.offset, self._digest, len(c.records), len(c.retired), c.invalid,
                             self._loaded.is_set(), self._last_error, self._applied_at_ms)

    def _run(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            try:
                self._follow()
            except Exception as exc:  # Kafka down or the topic missing: keep the last catalog
                self._last_error = f"{type(exc).__name__}: {exc}"[:300]
                log.warning("catalog topic not readable (%s); retrying in %.1fs",
                            self._last_error, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _follow(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        s = self.settings
        ensure_catalog_topic(s, timeout_s=5.0)
        topic = s.kafka.topic_catalog
        consumer = Consumer({"bootstrap.servers": s.kafka.bootstrap,
                             "group.id": "rtrec-serving-catalog", "enable.auto.commit": False,
                             "enable.partition.eof": True, "fetch.wait.max.ms": 20,
                             "socket.timeout.ms": 5000})
        try:
            consumer.assign([TopicPartition(topic, 0, self.catalog.offset or OFFSET_BEGINNING)])
            self._last_error = None
            while not self._stop.is_set():
                msgs = consumer.consume(500, timeout=POLL_S)
                changed = False
                for msg in msgs:
                    err = msg.error()
                    if err is not None:
                        if err.code() == -191:  # _PARTITION_EOF: read to the end
                            if not self._loaded.is_set():
                                self._loaded.set()
                                changed = True
                            continue
                        raise OSError(str(err))
                    self.catalog.apply(msg.key(), msg.value(), msg.offset())
                    changed = True
                if changed:
                    self._digest = self.catalog.digest()
                    self.apply(self.catalog)
                    self._applied_at_ms = time.time_ns() // 1_000_000
        finally:
            consumer.close()
