"""Where a new product starts under the category prior (flink_job/prior.py ``PriorStarts``),
against a real Redis and a real Kafka catalog topic; Flink's runtime context is replaced by a
metrics stub (the start is plain Python the learner calls).

Both tests pin races a running job meets: the pool published a moment ago, and a product
added to the catalog topic a moment after the operator last read it."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from contract.catalog import ProductRecord, ensure_catalog_topic, write_records
from contract.config import Settings
from contract.features import load_catalog
from contract.kafka import kafka_producer
from contract.linucb import init_state
from contract.prior import CategoryPool, informed_state
from flink_job.prior import UNKNOWN, PriorStarts
from tests.helpers import store

pytestmark = [pytest.mark.integration]


class _Metrics:
    def gauge(self, _name: str, _fn: Callable[[], int]) -> None:
        pass


class _Context:
    def get_metrics_group(self) -> _Metrics:
        return _Metrics()


def _opened(s: Settings) -> PriorStarts:
    starts = PriorStarts(s)
    starts.open(_Context())  # type: ignore[arg-type]
    return starts


def _settings(unique_settings: Settings) -> Settings:
    # a publish interval far longer than the test: nothing may wait for it to pass
    return unique_settings.override(RTREC_PRIOR="category", RTREC_PRIOR_PSEUDO_OBS=5,
                                    RTREC_PUBLISH_INTERVAL_MS=600_000)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_product_starts_from_the_pool_published_before_its_first_batch(
        unique_settings: Settings, seed: int) -> None:
    """The pool a product starts from is the one in Redis when its first batch is learned
    (docs/LEARNING.md), even if another product of the category started just before it
    from no pool."""
    s = _settings(unique_settings)
    d, l2 = s.model.dim, s.model.l2
    cats: dict[str, list[str]] = {}
    for p in load_catalog():
        cats.setdefault(p.category, []).append(p.product_id)
    cat = sorted(cats)[seed]
    first, second = cats[cat][:2]
    ensure_catalog_topic(s)
    starts = _opened(s)

    st = starts.start(first)  # no pool yet: the identity
    np.testing.assert_array_equal(st.A_inv, init_state(d, l2).A_inv)

    rng = np.random.default_rng(seed)
    X = rng.random((400, d))
    pool = CategoryPool(X.T @ X, X.T @ (rng.random(400) < 0.3), 400)
    store(s).client.set(s.redis.key("prior", cat), pool.to_json())

    st = starts.start(second)
    want = informed_state(pool, d, l2, s.model.prior_pseudo_obs, s.model.prior_min_obs)
    np.testing.assert_allclose(st.A_inv, want.A_inv, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(st.b, want.b, rtol=1e-12, atol=1e-12)
    assert starts.started == 1


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_product_added_just_after_a_read_of_the_topic_gets_its_category(
        unique_settings: Settings, seed: int) -> None:
    """The topic was read (at open) a moment before the product's record arrived: its events
    can only reach the learner after the record (the validator checks it), so the start
    reads the topic again rather than pin the product to no category."""
    s = _settings(unique_settings)
    cat = sorted({p.category for p in load_catalog()})[seed]
    ensure_catalog_topic(s)
    starts = _opened(s)
    new = f"added{seed}"
    write_records(kafka_producer(s.kafka), s.kafka.topic_catalog,
                  [(new, ProductRecord(new, cat, 4.5))])
    assert starts.category(new) == cat
    # a product the topic does not hold, read to its end: no category, and that is kept
    assert starts.category(f"nowhere{seed}") == UNKNOWN
    assert starts.resolved[f"nowhere{seed}"] == UNKNOWN


def test_a_failed_read_of_the_topic_is_not_kept_as_no_category(
        unique_settings: Settings) -> None:
    """Kafka unreachable when a product is met: it starts without a category (degraded), but
    its category is looked up again next time instead of being pinned to none."""
    s = _settings(unique_settings)
    cat = sorted({p.category for p in load_catalog()})[0]
    ensure_catalog_topic(s)
    starts = _opened(s)
    starts.reader.timeout_s = 0.5
    good = starts.reader.settings
    starts.reader.settings = s.override(RTREC_KAFKA_BOOTSTRAP="127.0.0.1:1")  # nothing listens
    starts.reader.close()  # the kept consumer is of the good broker: the next read makes one
    new = "added-during-outage"
    write_records(kafka_producer(s.kafka), s.kafka.topic_catalog,
                  [(new, ProductRecord(new, cat, 4.5))])
    assert starts.category(new) == UNKNOWN
    assert new not in starts.resolved
    starts.reader.settings = good
    starts.reader.next_at = 0.0  # the outage's back-off has passed
    assert starts.category(new) == cat
