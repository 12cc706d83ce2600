"""The job follows the catalog topic (docs/JOB.md "The live catalog", docs/CATALOG.md).

The compacted catalog topic (``RTREC_CATALOG_TOPIC``, contract/catalog.py) is read by a Kafka
source of its own (from the earliest offset on a fresh start; from the checkpoint's offset on a
restore), its records turned into ``(product_id, status)`` updates and **broadcast** to every
validator subtask, which keeps them in Flink *broadcast state* (checkpointed with the job, so a
restore knows the catalog even when the topic cannot be read) and in a dict beside it (a
lookup per event through the state bridge would cost more than the event's parsing).

What the validator then decides per product of an event (:class:`LiveProducts`): the product's
latest catalog record is a record -> learned; a tombstone -> dead-lettered ``retired_product``;
no record -> the static list decides (``--products``, by default the shipped catalog;
``--products topic``: none, only the topic counts), and a product in neither is
``unknown_product`` - after the subtask has read the topic again, rate-limited, in case the
product's record is there but not yet delivered by the source (:class:`ValidateWithCatalog`).
A retired product's learned state (keyed, in the learner) is never touched: events are simply
no longer learned, and learning resumes from that state when a record re-adds it.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from pyflink.datastream import BroadcastProcessFunction, RuntimeContext

from contract.catalog import (
    Catalog,
    CatalogError,
    catalog_consumer,
    parse_record,
    read_catalog,
)
from contract.events import Click, EventError, Impression
from contract.reasons import RETIRED_PRODUCT, UNKNOWN_PRODUCT
from flink_job.gauges import Gauges

log = logging.getLogger(__name__)

ACTIVE = "a"
RETIRED = "r"
STATE_NAME = "catalog"
OPEN_TIMEOUT_S = 10.0  # the read of the topic at open
RETRY_S = 5.0  # after a failed read of the topic, no other read for this long
# an unknown product: the topic is read again, at most once per interval, within a timeout
RECHECK_INTERVAL_S = 1.0
RECHECK_TIMEOUT_S = 2.0


def catalog_update(line: str) -> tuple[str, str]:
    """A catalog source line (``java/rtrec/CatalogDeserializer.java``: ``offset TAB keyKind
    TAB key TAB valueKind TAB value``) -> ``(product_id, ACTIVE or RETIRED)``;
    :class:`CatalogError` for a record that is neither a valid product record nor a tombstone.

    >>> catalog_update('3\\tu\\tp1\\tu\\t{"product_id":"p1","category":"Tea","price":2}')
    ('p1', 'a')
    >>> catalog_update("4\\tu\\tp1\\tn\\t")
    ('p1', 'r')
    """
    parts = line.split("\t", 4)
    if len(parts) != 5:
        raise CatalogError("$", "not a catalog source line")
    _, key_kind, key, kind, body = parts
    if key_kind != "u" or not key:
        raise CatalogError("key", "a catalog record needs a UTF-8 product id as its key")
    if kind == "n":
        return key, RETIRED
    if kind == "o":
        raise CatalogError("$", f"{body} bytes: too large for a product record")
    raw: bytes | str = base64.b64decode(body) if kind == "b" else body
    return parse_record(raw, key).product_id, ACTIVE


class LiveProducts:
    """Which products an event may name: the catalog topic's statuses over a static list
    (None: no static list, only retired products are refused). ``refresh``, when given, is
    called for a product neither knows, or one retired, before it is refused
    (``unknown_product``, ``retired_product``): it may bring the statuses up to date (True
    when it read the topic) and the product is looked up again (a product re-added a moment
    ago is then learned)."""

    def __init__(self, static: frozenset[str] | None,
                 refresh: Callable[[], bool] | None = None) -> None:
        self.static = static
        self.status: dict[str, str] = {}
        # products per status, kept as statuses change: the metrics read them from another
        # thread, where a walk over ``status`` could meet it changing (flink_job/gauges.py)
        self.counts = {ACTIVE: 0, RETIRED: 0}
        self.refresh = refresh

    def apply(self, pid: str, status: str) -> None:
        old = self.status.get(pid)
        if old == status:
            return
        if old is not None:
            self.counts[old] -= 1
        self.counts[status] = self.counts.get(status, 0) + 1
        self.status[pid] = status

    def check(self, event: Impression | Click) -> None:
        """Raise :class:`EventError` (``retired_product`` or ``unknown_product``, the field
        of the first product refused) unless every product of ``event`` may be learned."""
        if isinstance(event, Impression):
            for i, pid in enumerate(event.products):
                self._one(pid, f"products[{i}]")
        else:
            self._one(event.product_id, "product_id")

    def _one(self, pid: str, where: str) -> None:
        st = self.status.get(pid)
        unknown = st is None and self.static is not None and pid not in self.static
        if (unknown or st == RETIRED) and self.refresh is not None and self.refresh():
            st = self.status.get(pid)
        if st == ACTIVE:
            return
        if st == RETIRED:
            raise EventError(RETIRED_PRODUCT, where, f"{pid!r} was retired from the catalog")
        if self.static is not None and pid not in self.static:
            raise EventError(UNKNOWN_PRODUCT, where, f"{pid!r} is not in the catalog")


def state_descriptor():  # type: ignore[no-untyped-def]
    from pyflink.common.typeinfo import Types
    from pyflink.datastream.state import MapStateDescriptor

    return MapStateDescriptor(STATE_NAME, Types.STRING(), Types.STRING())


class TopicReader:
    """The catalog topic read on from where it was last read, into ``catalog`` (a
    :class:`contract.catalog.Catalog`: its ``offset`` is where the next read starts). The
    validator and the category prior both meet products whose record the job's catalog source
    has not delivered yet and read the topic for them. :meth:`read` is refused for
    ``min_interval_s`` after a read and for ``retry_s`` after a failed one (logged), so a
    flood of unknown ids does not become a flood of reads; each read is bounded by
    ``timeout_s``. A failed read keeps what it read (a prefix of the topic: still
    consistent).

    One consumer is kept from read to read (made at the first, closed after a failed one and
    by :meth:`close`): a read that finds nothing new is then two requests to the broker, not
    a new client's connection (measured: p50 61 ms a read with a consumer made per read)."""

    def __init__(self, settings: Any, timeout_s: float, retry_s: float,
                 min_interval_s: float = 0.0, purpose: str = "") -> None:
        self.settings = settings
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self.min_interval_s = min_interval_s
        self.purpose = purpose
        self.catalog = Catalog()
        self.next_at = 0.0
        self.reads = 0
        self.failures = 0
        self.consumer: Any = None
        self.consumers_made = 0

    def read(self) -> bool:
        """Read the topic to its current end; False when refused (too soon) or failed."""
        if time.monotonic() < self.next_at:
            return False
        self.reads += 1
        try:
            if self.consumer is None:
                self.consumer = catalog_consumer(self.settings)
                self.consumers_made += 1
            read_catalog(self.settings, timeout_s=self.timeout_s, into=self.catalog,
                         consumer=self.consumer)
        except Exception as exc:  # no topic yet, or Kafka down
            self.failures += 1
            self.close()  # the next read starts from a new client
            self.next_at = time.monotonic() + self.retry_s
            log.warning("catalog topic not read (%s)%s; retrying in %g s at the earliest",
                        exc, f": {self.purpose}" if self.purpose else "", self.retry_s)
            return False
        self.next_at = time.monotonic() + self.min_interval_s
        return True

    def close(self) -> None:
        """Close the kept consumer (a later read makes a new one)."""
        consumer, self.consumer = self.consumer, None
        if consumer is not None:
            with contextlib.suppress(Exception):
                consumer.close()


class ValidateWithCatalog(BroadcastProcessFunction):
    """The validator (:class:`flink_job.functions.Validate`) with the catalog as its broadcast
    input: ``process_element`` validates a batch of source records, ``process_broadcast_element``
    applies one catalog source line to the broadcast state and to the validator's
    :class:`LiveProducts`. The dict is filled from the broadcast state at the first element
    after a (re)start, so a restore starts with the catalog of its checkpoint.

    With ``settings``, each subtask also reads the catalog topic to its end at ``open`` (a
    :class:`TopicReader`; read there, not when the job is built, so nothing of the size of
    the catalog is pickled into the graph, and a failover restart reads it anew): the two
    inputs are separate sources, so without it the events waiting in Kafka at a start are
    validated before the catalog source has delivered the records they need, and a product
    the topic holds is dead-lettered ``unknown_product``. That read is newer than a restored
    checkpoint's state, so it is applied over it; catalog records older than the read's
    offset (the source replaying the topic) go to the broadcast state but do not undo the
    read's status in the dict; records from its offset on apply as usual.

    While the job runs the same race remains for a product added (or re-added) a moment ago:
    its event can come before its record. So a product neither the dict nor the static list
    knows, or one the dict holds as retired, makes the subtask read the topic on to its
    current end (at most once per ``recheck_interval_s``, within ``recheck_timeout_s``, none
    for ``RETRY_S`` after a failure) and look it up again before it is dead-lettered
    ``unknown_product`` or ``retired_product``. Such a read applies like the one at open:
    over the dict (it is newer than what the source delivered, unless a read cut short ends
    before that: then it is not applied), and the offset guard above moves to its end."""

    open_timeout_s = OPEN_TIMEOUT_S
    recheck_interval_s = RECHECK_INTERVAL_S
    recheck_timeout_s = RECHECK_TIMEOUT_S

    def __init__(self, validate: Any, static: frozenset[str] | None,
                 settings: Any = None) -> None:
        self.validate = validate
        self.static = static
        self.settings = settings

    def open(self, runtime_context: RuntimeContext) -> None:
        self.validate.open(runtime_context)
        self.loaded = False
        self.updates = 0
        self.invalid = 0
        self.found = 0
        self.source_next = 0  # the offset after the last record the catalog source delivered
        self.reader: TopicReader | None = None
        if self.settings is not None:
            self.reader = TopicReader(self.settings, self.open_timeout_s, RETRY_S,
                                      purpose="products the catalog source has not delivered "
                                      "yet may be dead-lettered")
            self.reader.read()
            self.reader.timeout_s = self.recheck_timeout_s  # the reads after open
            self.reader.min_interval_s = self.recheck_interval_s
        self.live = LiveProducts(self.static, self._recheck if self.reader else None)
        self.validate.catalog = self.live
        # the validator's own gauges are in its group, which this shares
        gauges = self.gauges = Gauges(runtime_context.get_metrics_group())
        gauges.add("catalog_updates", lambda: self.updates)
        gauges.add("catalog_records_invalid", lambda: self.invalid)
        gauges.add("catalog_products_active", lambda: self.live.counts[ACTIVE])
        gauges.add("catalog_products_retired", lambda: self.live.counts[RETIRED])
        gauges.add("catalog_topic_reads", lambda: self.reader.reads if self.reader else 0)
        gauges.add("catalog_topic_read_failures",
                   lambda: self.reader.failures if self.reader else 0)
        gauges.add("catalog_products_found_by_read", lambda: self.found)
        self.descriptor = state_descriptor()

    def close(self) -> None:
        self.gauges.close()
        self.validate.close()
        if self.reader is not None:
            self.reader.close()

    def _load(self, ctx: Any) -> None:
        if not self.loaded:
            for pid, status in ctx.get_broadcast_state(self.descriptor).items():
                self.live.apply(pid, status)
            self._take_read()
            self.loaded = True

    def _take_read(self) -> int:
        """Apply what the reader read to the dict (over the broadcast state and the source's
        records, which are older), then drop its records: only the statuses are kept, in the
        dict. A read that ended before the source's last record (cut short by its timeout)
        is older than the dict and is not applied: the source delivers the rest in order.
        Returns how many statuses it changed (a product new to the dict, or re-added, or
        retired)."""
        if self.reader is None:
            return 0
        cat = self.reader.catalog
        changed = 0
        if cat.offset > self.source_next:
            for pids, status in ((cat.records, ACTIVE), (cat.retired, RETIRED)):
                for pid in pids:
                    changed += self.live.status.get(pid) != status
                    self.live.apply(pid, status)
        cat.records.clear()
        cat.retired.clear()
        return changed

    def _recheck(self) -> bool:
        """A product is unknown or retired: read the topic on to its end, if the rate limit
        allows."""
        assert self.reader is not None
        read = self.reader.read()
        self.found += self._take_read()  # a failed read keeps a consistent prefix: applied
        return read

    def process_element(self, value: str, ctx: Any) -> Iterable[Any]:
        self._load(ctx)
        yield from self.validate.process_element(value, ctx)

    def process_broadcast_element(self, value: str, ctx: Any) -> None:
        self._load(ctx)
        try:
            pid, status = catalog_update(value)
        except (CatalogError, ValueError) as exc:  # the record stays in the topic; logged
            self.invalid += 1
            log.warning("catalog record refused (%s): %.200s", exc, value)
            return
        ctx.get_broadcast_state(self.descriptor).put(pid, status)
        offset = _offset(value)
        self.source_next = max(self.source_next, offset + 1)
        if self.reader is not None and offset < self.reader.catalog.offset:
            return  # the read holds this product's latest status up to its offset
        self.live.apply(pid, status)
        self.updates += 1


def _offset(line: str) -> int:
    """A catalog source line's topic offset (its first field; -1 when unreadable)."""
    head = line.split("\t", 1)[0]
    return int(head) if head.isdigit() else -1


def catalog_stream(env, settings):  # type: ignore[no-untyped-def]
    """The catalog topic as a stream of source lines (one subtask: one partition), from the
    earliest offset on a fresh start (the broadcast state is empty then)."""
    from pyflink.common import Duration, WatermarkStrategy
    from pyflink.datastream.connectors.kafka import KafkaSource
    from pyflink.java_gateway import get_gateway

    from contract.catalog import ensure_catalog_topic

    if ensure_catalog_topic(settings):
        log.info("created the catalog topic %s (compacted)", settings.kafka.topic_catalog)
    jvm = get_gateway().jvm
    builder = (KafkaSource.builder()
               .set_bootstrap_servers(settings.kafka.bootstrap)
               .set_topics(settings.kafka.topic_catalog)
               .set_group_id(f"rtrec-catalog-{settings.redis.prefix}")
               .set_property("fetch.max.wait.ms", "50")
               .set_property("client.id.prefix", f"rtrec-catalog-{settings.redis.prefix}"))
    builder._j_builder.setStartingOffsets(
        jvm.org.apache.flink.connector.kafka.source.enumerator.initializer.OffsetsInitializer
        .earliest())
    builder._j_builder.setDeserializer(jvm.rtrec.CatalogDeserializer(
        int(settings.job.max_event_bytes)))
    # The validator's event time is the minimum of its two inputs' watermarks: an idle catalog
    # input must not hold the events' watermark back (it would stall the reward join), so it
    # is marked idle after 200 ms without a record; while records flow, their Kafka
    # timestamps (write time, about now) are its watermark.
    watermarks = WatermarkStrategy.for_monotonous_timestamps().with_idleness(
        Duration.of_millis(200))
    return (env.from_source(builder.build(), watermarks, "kafka: catalog")
            .uid("kafka-catalog").set_parallelism(1))
