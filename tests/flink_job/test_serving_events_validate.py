"""Issue 20: serving builds its events with the same contract, so a request serving answers must
never produce an impression or click the job refuses. Any request (hypothesis over the
arguments the library and the HTTP schema allow) is either refused by serving, publishing
nothing, or its events pass the job's validator with the default settings, stamped by Kafka at
append as serving's producer leaves them (no Flink: the validator on a stand-in context).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from contract.config import POLICIES, Settings
from contract.events import MAX_SAFE_INT, Click, Impression
from contract.features import FeatureSpace, load_catalog, load_users
from flink_job import functions
from serving.errors import ServingError
from serving.eventlog import MemoryEventLog
from serving.recommender import Recommender
from tests.helpers import FakeRuntimeContext

S = Settings.from_env({})
USERS = load_users()
PRODUCTS = [p.product_id for p in load_catalog()]


@pytest.fixture(scope="module")
def validate() -> Iterator[functions.Validate]:
    """The job's validator as job.py builds it from the default settings."""
    fn = functions.Validate(S.model.dim, frozenset(PRODUCTS), S.job.max_event_bytes,
                            S.model.max_abs_x, round(S.job.max_event_age_s * 1000),
                            round(S.job.max_clock_skew_s * 1000))
    interval = sys.getswitchinterval()
    fn.open(FakeRuntimeContext())  # type: ignore[arg-type]
    yield fn
    sys.setswitchinterval(interval)


@pytest.fixture(scope="module")
def rec() -> Iterator[Recommender]:
    r = Recommender(S, PRODUCTS, events=MemoryEventLog(), users={u.user_id: u for u in USERS},
                    features=FeatureSpace.load(), seed=0)
    yield r
    r.close(1)


def _refused_by_the_job(validate: functions.Validate, event: Impression | Click) -> list[str]:
    """Dead letters of the event appended now (Kafka stamps the append time)."""
    topic = S.kafka.topic_impressions if isinstance(event, Impression) else S.kafka.topic_clicks
    now = functions._now_ms()
    line = f"{topic}\t0\t0\t{now}\tu\t{event.to_json().decode()}"
    return [v for tag, v in (o for o in validate.process_element(line, None)
                             if isinstance(o, tuple))]


_x = st.one_of(*(st.lists(st.floats(-b, b), min_size=S.model.dim, max_size=S.model.dim)
                 for b in (S.model.max_abs_x, 1e6)))  # the job's bound, the HTTP schema's
_at = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9999, 12, 31),
                   timezones=st.just(UTC))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(user=st.one_of(st.sampled_from([u.user_id for u in USERS]),
                      st.integers(0, MAX_SAFE_INT), st.integers(max_value=-1),
                      st.integers(min_value=MAX_SAFE_INT + 1),
                      st.sampled_from([-1, 0, MAX_SAFE_INT, 2**53, 2**70])),
       x=st.none() | _x, at=st.none() | _at, k=st.integers(1, 100),
       policy=st.sampled_from(POLICIES), alpha=st.floats(0, 1e6), click=st.integers(0, 99))
def test_what_serving_publishes_the_job_accepts(
        rec: Recommender, validate: functions.Validate, user: int, x: list[float] | None,
        at: datetime | None, k: int, policy: str, alpha: float, click: int) -> None:
    log: MemoryEventLog = rec.events  # type: ignore[assignment]
    before = len(log.events)
    try:
        r = rec.recommend(user, x=x, at=at, k=k, policy=policy, alpha=alpha)
    except ServingError as exc:
        assert len(log.events) == before  # refused: nothing published
        event(f"refused: {str(exc).split(':')[0]}")
        return
    event("published")
    assert 0 <= user <= MAX_SAFE_INT
    if x is not None:
        assert np.abs(x).max() <= S.model.max_abs_x
    rec.feedback(r.request_id, r.items[click % len(r.items)].product_id, at=at)
    for published in log.events[before:]:
        assert _refused_by_the_job(validate, published) == [], published
