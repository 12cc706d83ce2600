"""PyFlink functions: thin shells that hold state descriptors and clients (made in ``open``) and
call the pure logic of :mod:`flink_job.records`, :mod:`flink_job.join`, :mod:`flink_job.publish`
and the shared contract.

Records between operators (pickled by PyFlink, never stored):

- validated event: ``("i", request_id, event_ts, (x, products), meta)`` or
  ``("c", request_id, event_ts, product_id, meta)``; ``meta`` is a :class:`SourceMeta` tuple;
- reward: ``(product_id, x, reward, observe)``: an observation learned at once with reward 0
  (observe), or a click's reward added to it (not observe; ``linucb.add_reward``);
- parameters: ``(product_id, codec blob, learned_at_ms)``.

Keyed state holds only bytes: the reward join's JSON document and the codec's blob of the
product's :class:`contract.linucb.ArmState` (ONE packed value per product: 3 separate states
halve throughput, DESIGN.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
from pyflink.common.typeinfo import Types
from pyflink.datastream import KeyedProcessFunction, OutputTag, ProcessFunction, RuntimeContext
from pyflink.datastream.state import ValueStateDescriptor

from contract import codec, linucb
from contract.config import Settings
from contract.events import Click, EventError, Impression, parse_event
from flink_job import join as joinmod
from flink_job.publish import Publisher
from flink_job.records import SourceMeta, dead_letter, meta_only, split_record

log = logging.getLogger(__name__)

DEAD_LETTERS = OutputTag("dead-letters", Types.STRING())
REASONS = ("unparseable", "oversized", "missing_field", "wrong_type", "not_finite",
           "wrong_dimension", "bad_value", "unknown_product", "unsupported_version",
           "duplicate_impression", "late_click", "orphan_click")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class _DeadLetterCounters:
    """One Flink counter per reason plus a total (visible in the web UI)."""

    def __init__(self, ctx: RuntimeContext) -> None:
        group = ctx.get_metrics_group()
        self.total = group.counter("dead_letters")
        self.by_reason = {r: group.counter(f"dead_letters_{r}") for r in REASONS}

    def inc(self, reason: str) -> None:
        self.total.inc()
        c = self.by_reason.get(reason)
        if c is not None:
            c.inc()


class Validate(ProcessFunction):
    """Parse each source record against the contract; bad ones to the dead-letter side output."""

    def __init__(self, dim: int, known_products: frozenset[str] | None, max_bytes: int) -> None:
        self.dim = dim
        self.known = known_products
        self.max_bytes = max_bytes

    def open(self, runtime_context: RuntimeContext) -> None:
        group = runtime_context.get_metrics_group()
        self.events_in = group.counter("events_in")
        self.impressions = group.counter("impressions_valid")
        self.clicks = group.counter("clicks_valid")
        self.dead = _DeadLetterCounters(runtime_context)

    def process_element(self, value: str, ctx: ProcessFunction.Context) -> Iterable[Any]:
        self.events_in.inc()
        meta = None
        try:
            meta, raw = split_record(value)
            event = parse_event(raw, self.dim, self.known, self.max_bytes)
        except EventError as exc:
            meta = meta or meta_only(value)
            self.dead.inc(exc.reason)
            yield DEAD_LETTERS, dead_letter(meta, exc.reason, exc.field, exc.message)
            return
        except Exception as exc:  # a bug must not fail the job: dead-letter it with its class
            meta = meta or meta_only(value)
            self.dead.inc("unparseable")
            log.exception("unexpected error validating %s:%s@%s", meta.topic, meta.partition,
                          meta.offset)
            yield DEAD_LETTERS, dead_letter(meta, "unparseable", "$", str(exc),
                                            type(exc).__name__)
            return
        ts = meta.timestamp if meta.timestamp >= 0 else event.ts_ms
        if isinstance(event, Impression):
            self.impressions.inc()
            yield "i", event.request_id, ts, (event.x, event.products), tuple(meta)
        elif isinstance(event, Click):
            self.clicks.inc()
            yield "c", event.request_id, ts, event.product_id, tuple(meta)


class JoinRewards(KeyedProcessFunction):
    """Keyed by request_id: the reward join of :mod:`flink_job.join` on event-time timers."""

    def __init__(self, window_ms: int, retain_ms: int) -> None:
        self.logic = joinmod.RewardJoin(window_ms=window_ms, retain_ms=retain_ms)

    def open(self, runtime_context: RuntimeContext) -> None:
        self.state = runtime_context.get_state(
            ValueStateDescriptor("join", Types.PICKLED_BYTE_ARRAY()))
        group = runtime_context.get_metrics_group()
        self.rewards_1 = group.counter("rewards_click")
        self.observations = group.counter("observations")
        self.dead = _DeadLetterCounters(runtime_context)

    def process_element(self, value: tuple, ctx: KeyedProcessFunction.Context) -> Iterable[Any]:
        kind, _rid, ts, payload, meta = value
        st = joinmod.loads(self.state.value())
        if kind == "i":
            x, products = payload
            st, out = self.logic.on_impression(st, joinmod.Imp(ts, tuple(x), tuple(products)),
                                               meta)
        else:
            st, out = self.logic.on_click(st, joinmod.Clk(ts, payload), meta)
        yield from self._apply(st, out, ctx)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Iterable[Any]:
        st, out = self.logic.on_timer(joinmod.loads(self.state.value()), timestamp)
        yield from self._apply(st, out, ctx)

    def _apply(self, st: dict | None, out: joinmod.Out, ctx: Any) -> Iterable[Any]:
        if st is None:
            self.state.clear()
        else:
            self.state.update(joinmod.dumps(st))
        for t in out.timers:
            ctx.timer_service().register_event_time_timer(t)
        for reason, field, message, meta in out.dead:
            self.dead.inc(reason)
            yield DEAD_LETTERS, dead_letter(SourceMeta(*meta), reason, field, message)
        for reward in out.rewards:
            (self.observations if reward[3] else self.rewards_1).inc()
            yield reward


class Learn(KeyedProcessFunction):
    """Keyed by product_id: Sherman-Morrison update of ONE packed state (codec bytes), and a
    processing-time timer on a grid of ``publish_interval_ms`` so each product publishes at
    most once per interval (Flink keeps one timer per key and timestamp: free coalescing)."""

    def __init__(self, dim: int, l2: float, publish_interval_ms: int) -> None:
        self.dim = dim
        self.l2 = l2
        self.interval = max(1, publish_interval_ms)

    def open(self, runtime_context: RuntimeContext) -> None:
        self.state = runtime_context.get_state(
            ValueStateDescriptor("arm", Types.PICKLED_BYTE_ARRAY()))
        group = runtime_context.get_metrics_group()
        self.learned = group.counter("updates_learned")
        self.emitted = group.counter("updates_emitted")
        # product -> due time of the publish timer we registered: skips a Java call per record
        # (memory only; after a restore it is empty and we register again, Flink dedups)
        self.due: dict[str, int] = {}

    def process_element(self, value: tuple, ctx: KeyedProcessFunction.Context) -> Iterable[Any]:
        pid, x, reward, observe = value
        blob = self.state.value()
        st = codec.decode(blob).state if blob is not None else linucb.init_state(self.dim, self.l2)
        learn = linucb.update if observe else linucb.add_reward
        st = learn(st, np.asarray(x, dtype=np.float64), float(reward))
        self.state.update(codec.encode(st, _now_ms()))
        self.learned.inc()
        now = _now_ms()  # the same wall clock as Flink's processing time, without a Java call
        due = (now // self.interval + 1) * self.interval  # grid: one timer per interval
        if self.due.get(pid) != due:
            ctx.timer_service().register_processing_time_timer(due)
            self.due[pid] = due
        return ()

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Iterable[Any]:
        key = ctx.get_current_key()
        if self.due.get(key) == timestamp:
            del self.due[key]
        blob = self.state.value()
        if blob is not None:
            self.emitted.inc()
            yield key, blob, codec.decode(blob).updated_at_ms


class PublishToRedis(ProcessFunction):
    """The Redis sink: versioned writes through :class:`contract.store.ParamStore`.

    ``process_element`` only records the newest blob per product (memory bounded by the
    number of products); a writer thread drains them in one pipeline per round, so one slow
    Redis round trip never stalls the Python operator, and retries with backoff while Redis is
    down (nothing lost: a product's newest blob stays pending until Redis takes it).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def open(self, runtime_context: RuntimeContext) -> None:
        import threading

        from contract.store import ParamStore, connect

        s = self.settings
        client = connect(s.redis_host, s.redis_port, s.redis_password, s.redis_db,
                         s.redis_timeout_s)
        try:
            client.ping()
        except Exception as exc:  # keep going: the writer retries until Redis is back
            log.warning("Redis %s:%d not reachable at start (%s); writes will retry",
                        s.redis_host, s.redis_port, exc)
        self.publisher = Publisher(ParamStore(client, s.redis_prefix))
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.closing = False
        self.pending: dict[str, tuple[bytes, int]] = {}
        self.written = 0
        self.lag_ms = 0
        group = runtime_context.get_metrics_group()
        self.published = group.counter("updates_published")
        group.gauge("publish_lag_ms", lambda: int(self.lag_ms))
        group.gauge("redis_retries", lambda: int(self.publisher.retries))
        group.gauge("updates_refused_older", lambda: int(self.publisher.refused))
        group.gauge("publish_pending", lambda: len(self.pending))
        self.thread = threading.Thread(target=self._drain_forever, name="redis-writer",
                                       daemon=True)
        self.thread.start()

    def process_element(self, value: tuple, ctx: ProcessFunction.Context) -> Iterable[Any]:
        pid, blob, learned_at = value
        with self.lock:
            old = self.pending.get(pid)
            if old is None or codec.peek_version(blob) >= codec.peek_version(old[0]):
                self.pending[pid] = (blob, learned_at)
            written, self.written = self.written, 0
        self.wake.set()
        if written:
            self.published.inc(written)
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


class NoopCount(ProcessFunction):
    """The bench's no-op operator (the platform ceiling): counts records and, on a record
    containing ``bench-end``, writes (first_ms, end_ms, count) to Redis for the bench."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def open(self, runtime_context: RuntimeContext) -> None:
        from contract.store import connect

        s = self.settings
        self.client = connect(s.redis_host, s.redis_port, s.redis_password, s.redis_db, 2.0)
        self.first = 0
        self.count = 0

    def process_element(self, value: str, ctx: ProcessFunction.Context) -> Iterable[Any]:
        self.count += 1
        if self.first == 0:
            self.first = _now_ms()
        if "bench-end" in value:
            self.client.set(self.settings.redis_key("bench", "noop"),
                            f"{self.first} {_now_ms()} {self.count}")
        return ()
