"""The category prior in the job (RTREC_PRIOR=category; the maths: contract/prior.py,
docs/LEARNING.md "The category prior").

- :class:`PriorStarts`, used by ``Learn``: where a product with no state starts, from its
  category's pool as last published to Redis (``<prefix>:prior:<category>``), and the delta
  each learned batch adds to that pool.
- :class:`PoolCategory`, keyed by category: sums the deltas in keyed state (checkpointed, so
  exactly once with the events like the products' own state) and publishes the pool to Redis
  at most once per ``RTREC_PUBLISH_INTERVAL_MS``.

The pool goes through Redis because the learner is keyed by product: a product's operator
cannot read another key's state, and a graph cannot feed back into itself. So a product's
start is the pool as published when its first batch is learned; that start is then part of
its own state (checkpointed), so a restore never changes it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from pyflink.common.typeinfo import Types
from pyflink.datastream import KeyedProcessFunction, OutputTag, RuntimeContext
from pyflink.datastream.state import ValueStateDescriptor

from contract.config import Settings
from contract.linucb import ArmState, init_state
from contract.prior import CategoryPool, informed_state, pool_delta
from flink_job.catalog import TopicReader
from flink_job.gauges import Gauges

log = logging.getLogger(__name__)

# (category, dS, dt, dn) from Learn to PoolCategory (pickled by PyFlink between its own
# Python operators, never stored or read from outside)
POOL_DELTAS = OutputTag("pool-deltas", Types.PICKLED_BYTE_ARRAY())
UNKNOWN = ""  # products with no category in the catalog: their own (empty) pool
READ_TIMEOUT_S = 5.0  # one read of the catalog topic, for a product met the first time
RETRY_S = 5.0  # after a failed read, no other read for this long


def category_map() -> dict[str, str]:
    """product_id -> category from the catalog (contract/features.py); empty without one."""
    try:
        from contract.features import load_catalog

        return {p.product_id: p.category for p in load_catalog()}
    except Exception as exc:  # no catalog: every product starts from the identity
        log.warning("no product catalog (%s): the category prior starts every product from "
                    "the identity", exc)
        return {}


class PriorStarts:
    """Made in ``Learn.__init__`` (pickled with it), opened in ``Learn.open``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dim = settings.model.dim
        self.l2 = settings.model.l2
        self.m = settings.model.prior_pseudo_obs
        self.min_obs = settings.model.prior_min_obs

    def open(self, runtime_context: RuntimeContext) -> None:
        from contract.store import redis_client

        self.redis = redis_client(self.settings.redis)
        self.categories = category_map()
        # the catalog topic, read on from where it was last read (shared with the validator)
        self.reader = TopicReader(self.settings, READ_TIMEOUT_S, RETRY_S,
                                  purpose="categories from the shipped catalog")
        self.live = self.reader.catalog
        self.resolved: dict[str, str] = {}
        self.reader.read()
        self.started = 0
        self.fallbacks = 0
        self.gauges = Gauges(runtime_context.get_metrics_group())
        self.gauges.add("prior_informed_starts", lambda: self.started)
        self.gauges.add("prior_fallbacks", lambda: self.fallbacks)

    def category(self, product_id: str) -> str:
        """The product's category: the live catalog topic's record, else the shipped
        catalog's, else ``UNKNOWN``.

        The topic is read at open, and read again to its end for a product neither it nor
        the shipped catalog knows: its record is in the topic before any of its events reach
        the learner (the validator checks it, docs/JOB.md), so a product added a moment after
        the last read still gets its category. Resolved once per product and operator
        instance (a later change of category moves only the deltas after the next restart:
        docs/LEARNING.md); but not when the topic could not be read (Kafka down): that
        product is looked up again at its next batch, after a back-off."""
        got = self.resolved.get(product_id)
        if got is not None:
            return got
        rec = self.live.records.get(product_id) or self.live.retired.get(product_id)
        if rec is None and product_id not in self.categories:
            if not self.reader.read():
                return UNKNOWN  # degraded, not kept: asked again after the back-off
            rec = self.live.records.get(product_id) or self.live.retired.get(product_id)
        got = rec.category if rec is not None else self.categories.get(product_id, UNKNOWN)
        self.resolved[product_id] = got
        return got

    def _pool(self, category: str) -> CategoryPool | None:
        """The category's pool as published now: read once per new product (a product
        starts once), so not cached - a cached pool would start a product from a pool older
        than the one in Redis when its first batch is learned."""
        text = self.redis.get(self.settings.redis.key("prior", category))
        return None if text is None else CategoryPool.from_json(text, self.dim)

    def close(self) -> None:
        """Close the catalog reader's consumer (the function's close)."""
        if getattr(self, "gauges", None) is not None:
            self.gauges.close()
        if getattr(self, "reader", None) is not None:
            self.reader.close()

    def start(self, product_id: str) -> ArmState:
        """A new product's state: informed by its category's published pool; the identity
        when there is none, and (degraded, counted, logged) when Redis or the pool fails."""
        try:
            pool = self._pool(self.category(product_id))
            st = informed_state(pool, self.dim, self.l2, self.m, self.min_obs)
        except Exception as exc:  # Redis down, or a pool it cannot use
            self.fallbacks += 1
            log.warning("product %s starts from the identity prior: %s", product_id, exc)
            return init_state(self.dim, self.l2)
        if pool is not None and pool.n > 0 and pool.n >= self.min_obs and self.m > 0:
            self.started += 1
        return st

    def delta(self, product_id: str, before: ArmState, after: ArmState
              ) -> tuple[str, Any, Any, int]:
        return (self.category(product_id), *pool_delta(before, after))


class PoolCategory(KeyedProcessFunction):
    """Keyed by category: the pool of its products' learned data, published to Redis."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def open(self, runtime_context: RuntimeContext) -> None:
        from contract.store import redis_client

        self.state = runtime_context.get_state(ValueStateDescriptor("pool", Types.STRING()))
        self.redis = redis_client(self.settings.redis)
        self.interval_ms = self.settings.job.publish_interval_ms
        self.pending: set[str] = set()
        self.published = 0
        self.failed = 0
        self.gauges = Gauges(runtime_context.get_metrics_group())
        self.gauges.add("prior_pools_published", lambda: self.published)
        self.gauges.add("prior_publish_failures", lambda: self.failed)

    def process_element(self, value: tuple, ctx: KeyedProcessFunction.Context
                        ) -> Iterable[Any]:
        category, dS, dt, dn = value
        text = self.state.value()
        pool = CategoryPool.from_json(text) if text else CategoryPool.empty(len(dt))
        self.state.update(pool.plus(dS, dt, dn).to_json())
        if category not in self.pending:
            self.pending.add(category)
            ctx.timer_service().register_processing_time_timer(
                ctx.timer_service().current_processing_time() + self.interval_ms)
        return ()

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext
                 ) -> Iterable[Any]:
        category = ctx.get_current_key()
        text = self.state.value()
        if text:
            try:
                self.redis.set(self.settings.redis.key("prior", category), text)
                self.published += 1
            except Exception as exc:  # retried at the next interval
                self.failed += 1
                log.warning("category pool %r not published (%s); retrying", category, exc)
                ctx.timer_service().register_processing_time_timer(
                    ctx.timer_service().current_processing_time() + self.interval_ms)
                return ()
        self.pending.discard(category)
        return ()

    def close(self) -> None:
        self.gauges.close()
