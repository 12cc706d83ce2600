"""PyFlink functions: thin shells that hold state descriptors and clients (made in ``open``) and
call the pure logic of :mod:`flink_job.records`, :mod:`flink_job.publish` and the shared
contract. The reward join and the micro-batcher between them run on the JVM
(``java/rtrec/``); docs/JOB.md says why.

Records between operators: the lines exchanged with the JVM operators are specified in
docs/JOB_LINES.md; parameters leave ``Learn`` as ``(product_id, codec blob, learned_at_ms)``
(pickled by PyFlink, never stored).

The learner's keyed state is ONE codec blob of the product's
:class:`contract.linucb.ArmState` (one packed value per product: 3 separate states halve
throughput, as measured when the job was designed).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from pyflink.common.typeinfo import Types
from pyflink.datastream import KeyedProcessFunction, OutputTag, ProcessFunction, RuntimeContext
from pyflink.datastream.state import ValueStateDescriptor

from contract import codec, linucb, reasons
from contract.config import Settings
from contract.events import EventError, Impression, check_event_time, parse_event
from contract.features import check_dim
from flink_job.gauges import Gauges
from flink_job.prior import POOL_DELTAS, PriorStarts
from flink_job.publish import Publisher
from flink_job.records import (
    dead_letter,
    join_line,
    learner_dead_letter,
    meta_only,
    parse_items,
    split_record,
    unescape_id,
)

log = logging.getLogger(__name__)

DEAD_LETTERS = OutputTag("dead-letters", Types.STRING())
# joins the lines of a batch, both ways (docs/JOB_LINES.md; MetaDeserializer.SEPARATOR)
RECORD_SEPARATOR = "\x1e"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# In thread mode every Python operator and the Redis writer share one interpreter and its GIL.
# With the default 5 ms switch interval, a task thread calling into Python waits up to 5 ms
# for the GIL held by another: measured here, freshness at 500 ev/s went from p50 114-426 ms
# (four runs) to 94 ms with 0.2 ms. Set by every function's open(); harmless in process mode.
GIL_SWITCH_INTERVAL_S = 0.0002


def _tune_interpreter() -> None:
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)


class _DeadLetterCounters:
    """One Flink counter per reason plus a total (visible in the web UI)."""

    def __init__(self, ctx: RuntimeContext,
                 which: tuple[str, ...] = reasons.VALIDATION) -> None:
        group = ctx.get_metrics_group()
        self.total = group.counter("dead_letters")
        self.by_reason = {r: group.counter(f"dead_letters_{r}") for r in which}

    def inc(self, reason: str) -> None:
        self.total.inc()
        c = self.by_reason.get(reason)
        if c is not None:
            c.inc()


class Validate(ProcessFunction):
    """Parse each source record of a batch (``java/rtrec/SourceBatcher.java``) against the
    contract: good ones leave as one batch of join lines, bad ones go to the dead-letter side
    output, each with its reason (formats: docs/JOB_LINES.md).

    Beyond the event itself: every x entry within ``max_abs_x``, and the time the join will
    use (the Kafka record's timestamp, else ``ts_ms``) within ``max_age_ms`` before and
    ``max_ahead_ms`` after ``clock()``, read once per batch: the processing time at
    validation (docs/JOB.md). None: not checked.

    ``skip_before`` (``"topic:partition" -> offset``, after a rollback: docs/JOB.md
    "Snapshots and rollback") drops the records below those offsets, unparsed and not
    dead-lettered: the events learned after the snapshot that was rolled back to.
    """

    def __init__(self, dim: int, known_products: frozenset[str] | None, max_bytes: int,
                 max_abs_x: float | None = None, max_age_ms: int | None = None,
                 max_ahead_ms: int | None = None, clock: Callable[[], int] | None = None,
                 skip_before: dict[str, int] | None = None) -> None:
        self.dim = dim
        self.known = known_products
        self.max_bytes = max_bytes
        self.max_abs_x = max_abs_x
        self.max_age_ms = max_age_ms
        self.max_ahead_ms = max_ahead_ms
        self.clock = clock or _now_ms
        self.skip_before = dict(skip_before) if skip_before else None
        # the live catalog (flink_job/catalog.py LiveProducts) when the job follows the
        # catalog topic: it decides known, retired and unknown products instead of ``known``
        self.catalog: Any = None

    def open(self, runtime_context: RuntimeContext) -> None:
        _tune_interpreter()
        # per-record tallies are plain ints shown as gauges (flink_job/gauges.py): a Flink
        # counter's inc() is a call into the JVM, too dear several times per event
        self.counts = {"events_in": 0, "impressions_valid": 0, "clicks_valid": 0,
                       "events_skipped_rollback": 0}
        self.gauges = Gauges(runtime_context.get_metrics_group())
        for name in self.counts:
            self.gauges.add(name, lambda name=name: self.counts[name])
        self.dead = _DeadLetterCounters(runtime_context)

    def close(self) -> None:
        self.gauges.close()

    def process_element(self, value: str, ctx: ProcessFunction.Context) -> Iterable[Any]:
        lines = []
        impressions = 0
        records = value.split(RECORD_SEPARATOR)
        if self.skip_before is not None:
            records = self._unskipped(records)
            if not records:
                return
        now = self.clock()
        age, ahead = self.max_age_ms, self.max_ahead_ms
        for record in records:
            try:
                meta, raw = split_record(record)
                event = parse_event(raw, self.dim, self.known, self.max_bytes, self.max_abs_x)
                if self.catalog is not None:
                    self.catalog.check(event)
                if meta.timestamp >= 0:
                    ts, field = meta.timestamp, "$timestamp"
                else:
                    ts, field = event.ts_ms, "ts_ms"
                if age is not None and ahead is not None:
                    check_event_time(ts, now, age, ahead, field)
                line = join_line(event, ts, record)
            except Exception as exc:  # a bad record (or a bug) must never fail the job
                yield DEAD_LETTERS, self._dead_letter(record, exc)
                continue
            impressions += isinstance(event, Impression)
            lines.append(line)
        self.counts["events_in"] += len(records)
        self.counts["impressions_valid"] += impressions
        self.counts["clicks_valid"] += len(lines) - impressions
        if lines:
            yield RECORD_SEPARATOR.join(lines)

    def _unskipped(self, records: list[str]) -> list[str]:
        """The records at or after their partition's skip offset (a malformed one is kept:
        validation dead-letters it)."""
        skip = self.skip_before
        assert skip is not None
        kept = []
        for record in records:
            meta = meta_only(record)  # never raises; a malformed line has offset -1
            if meta.offset < 0 or meta.offset >= skip.get(f"{meta.topic}:{meta.partition}", -1):
                kept.append(record)
        self.counts["events_skipped_rollback"] += len(records) - len(kept)
        return kept

    def _dead_letter(self, record: str, exc: Exception) -> str:
        meta = meta_only(record)
        if isinstance(exc, EventError):
            self.dead.inc(exc.reason)
            return dead_letter(meta, exc.reason, exc.field, exc.message)
        # a bug, not bad data: still dead-lettered (with the exception's class), and logged
        self.dead.inc("unparseable")
        log.error("unexpected error validating %s:%s@%s", meta.topic, meta.partition,
                  meta.offset, exc_info=exc)
        return dead_letter(meta, "unparseable", "$", str(exc), type(exc).__name__)


class Learn(KeyedProcessFunction):
    """Keyed by product_id: learn one micro-batch (``java/rtrec/MicroBatcher.java``: every item
    of this product over one publish interval) in ONE write of the packed state (codec bytes),
    by :func:`contract.linucb.learn_checked`, and emit the new parameters at once.

    An item the learner refuses (its x too large for float64, or a step that would leave A^-1
    not finite or not positive definite) is not learned: it goes to the dead-letter side output
    (reason ``not_learnable``), is counted and logged, and the state keeps its last good value.

    The batcher already coalesces per interval, so each product emits at most one update per
    interval and subtask of the join, without a timer per product.

    The decoded state of recently learned products is also kept in memory, so a batch usually
    costs one state *write* and no read (a read through the bridge plus a decode cost as much
    as the learning). Safe because the state is written on every batch (RocksDB and the cache
    never differ) and nothing else writes it; a restore builds new function instances, so the
    cache starts empty and is filled from the restored state.
    """

    CACHE_MAX = 20_000  # products (~2 KB each at d=15)

    def __init__(self, dim: int, l2: float, gamma: float = 1.0,
                 starts: PriorStarts | None = None, feature_spec: str = "") -> None:
        # built with the job graph: a d serving will not send fails at start
        check_dim(dim, feature_spec)
        self.dim = dim
        self.l2 = l2
        # the discount per observation (RTREC_HALF_LIFE; docs/LEARNING.md); 1: none
        self.gamma = gamma
        # RTREC_PRIOR=category: new products start from their category's pool, and each
        # learned batch's delta goes to it (flink_job/prior.py); None: the identity prior
        self.starts = starts

    def open(self, runtime_context: RuntimeContext) -> None:
        _tune_interpreter()
        self.state = runtime_context.get_state(
            ValueStateDescriptor("arm", Types.PICKLED_BYTE_ARRAY()))
        self.learned = 0
        self.emitted = 0
        self.refused = 0
        self.gauges = Gauges(runtime_context.get_metrics_group())
        self.gauges.add("updates_learned", lambda: self.learned)
        self.gauges.add("updates_emitted", lambda: self.emitted)
        self.gauges.add("dead_letters", lambda: self.refused)
        self.gauges.add(f"dead_letters_{reasons.NOT_LEARNABLE}", lambda: self.refused)
        self.cache: dict[str, linucb.ArmState] = {}
        if self.starts is not None:
            self.starts.open(runtime_context)

    def close(self) -> None:
        self.gauges.close()
        if self.starts is not None:
            self.starts.close()

    def process_element(self, value: str, ctx: KeyedProcessFunction.Context) -> Iterable[Any]:
        key, X, rewards, observe, weights = parse_items(value, self.dim)
        st = self.cache.pop(key, None)
        if st is None:
            blob = self.state.value()
            st = codec.decode(blob).state if blob is not None \
                else linucb.init_state(self.dim, self.l2) if self.starts is None \
                else self.starts.start(unescape_id(key))
            if len(self.cache) >= self.CACHE_MAX:  # drop the least recently learned
                del self.cache[next(iter(self.cache))]
        new, refused = linucb.learn_checked(st, X, rewards, observe, self.l2, weights,
                                            self.gamma)
        if refused:
            items = value.split("\t")[1:]
            self.refused += len(refused)
            log.warning("product %s: %d of %d item(s) not learned (%s): %s", unescape_id(key),
                        len(refused), len(items), reasons.NOT_LEARNABLE, refused[0][1])
            for i, why in refused:
                yield DEAD_LETTERS, learner_dead_letter(key, items[i], why)
        if new is st:  # nothing learned: no write, nothing to publish
            self.cache[key] = st
            return
        before, st = st, new
        now = _now_ms()
        blob = codec.encode(st, now)
        self.state.update(blob)
        self.cache[key] = st
        self.learned += len(rewards) - len(refused)
        self.emitted += 1
        if self.starts is not None:
            yield POOL_DELTAS, self.starts.delta(unescape_id(key), before, st)
        yield unescape_id(key), blob, now


class PublishToRedis(ProcessFunction):
    """The Redis sink: versioned writes through :class:`contract.store.ParamStore`.

    ``process_element`` only records the newest blob per product (memory bounded by the
    number of products); a writer thread drains them in one pipeline per round, so one slow
    Redis round trip never stalls the Python operator, and retries with backoff while Redis is
    down (nothing lost: a product's newest blob stays pending until Redis takes it).
    """

    def __init__(self, settings: Settings, generation: int | None = None) -> None:
        self.settings = settings
        # None: the store's generation at the first write (docs/PARAMS_FORMAT.md)
        self.generation = generation

    def open(self, runtime_context: RuntimeContext) -> None:
        import threading

        from contract.store import ParamStore, redis_client

        s = self.settings
        client = redis_client(s.redis)
        try:
            client.ping()
        except Exception as exc:  # keep going: the writer retries until Redis is back
            log.warning("Redis %s:%d not reachable at start (%s); writes will retry",
                        s.redis.host, s.redis.port, exc)
        import json

        from contract.context_spec import settings_spec

        # the job's feature-spec record rides along, so a wiped Redis gets it back with the
        # first values (docs/FEATURES.md)
        record = json.dumps(settings_spec(s).identity(), sort_keys=True)
        self.store = ParamStore(client, s.redis.prefix, self.generation, spec_record=record)
        self.publisher = Publisher(self.store)
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.closing = False
        self.pending: dict[str, tuple[bytes, int]] = {}
        self.written = 0
        self.lag_ms = 0
        self.gauges = Gauges(runtime_context.get_metrics_group())
        self.gauges.add("updates_published", lambda: self.written)
        self.gauges.add("publish_lag_ms", lambda: int(self.lag_ms))
        self.gauges.add("redis_retries", lambda: int(self.publisher.retries))
        self.gauges.add("updates_refused_older", lambda: int(self.publisher.refused))
        self.gauges.add("publish_pending", lambda: len(self.pending))
        self.gauges.add("updates_refused_generation",
                        lambda: int(self.store.refused_generation))
        self.thread = threading.Thread(target=self._drain_forever, name="redis-writer",
                                       daemon=True)
        self.thread.start()

    def process_element(self, value: tuple, ctx: ProcessFunction.Context) -> Iterable[Any]:
        pid, blob, learned_at = value
        with self.lock:
            old = self.pending.get(pid)
            if old is None or codec.peek_version(blob) >= codec.peek_version(old[0]):
                self.pending[pid] = (blob, learned_at)
        self.wake.set()
        return ()

    def _drain_once(self) -> None:
        with self.lock:
            batch, self.pending = self.pending, {}
        if not batch:
            return
        n = self.publisher.publish((pid, blob) for pid, (blob, _) in batch.items())
        now = _now_ms()
        with self.lock:
            self.written += n
        self.lag_ms = now - min(t for _, t in batch.values())

    def _drain_forever(self) -> None:
        while not self.closing:
            self.wake.wait(0.1)
            self.wake.clear()
            try:
                self._drain_once()
            except Exception:  # never let the writer die: log and go on
                log.exception("Redis writer round failed")

    def close(self) -> None:
        self.closing = True
        self.wake.set()
        self.thread.join(5)
        self._drain_once()
        self.gauges.close()
