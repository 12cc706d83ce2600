"""A parameter learned under one feature spec is never scored under another (issue 13, item
6): the job's record of its spec in Redis (``<prefix>:spec``, contract.context_spec), and
serving refusing parameters published under another spec - degraded, the reason in /healthz,
scores from the prior - until the record is its spec again. Real redis-server of the test's
own; parameters written the way the job writes them (contract.store.ParamStore)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from serving_helpers import OwnRedis, blob, learned_state, with_version

from contract.context_spec import (
    SHIPPED_SPEC,
    SpecError,
    claim_for,
    claim_store,
    load_spec,
    parse_spec,
    read_store_spec,
)
from contract.features import DATA_DIR, FeatureError, FeatureSpace, load_users, utc
from contract.store import ParamStore
from devstack.stack import free_port
from serving import Recommender
from serving.app import create_app
from serving.refresher import SnapshotRefresher
from tests.helpers import PRODUCTS, redis_settings, wait_for

pytestmark = pytest.mark.integration
IDS = PRODUCTS[:20]
CROSSES = DATA_DIR / "context_spec_crosses.json"


def shipped():
    return FeatureSpace.load().context


def moved_morning():
    """Another spec of the same d (15): mornings from 5:00. Same shapes, other meaning."""
    d = json.loads(SHIPPED_SPEC.read_text())
    d["name"], d["features"][5]["buckets"][0]["ranges"] = "early", [[5, 12]]
    return parse_spec(d)


def publish(store: ParamStore, seed: int, version: int, dim: int = 15) -> None:
    """Five products' parameters by a writer of the store's current generation (a job started
    now: a writer keeps the generation of its first write)."""
    store = ParamStore(store.client, store.keys.prefix)
    rng = np.random.default_rng(seed)
    for pid in IDS[:5]:
        store.write(pid, blob(with_version(learned_state(rng, dim, 4), version)))


def test_the_job_records_its_spec_and_refuses_another_spec_s_parameters(own_redis: OwnRedis
                                                                          ) -> None:
    s = redis_settings(own_redis.port)
    store = ParamStore.from_settings(s)
    client, prefix = store.client, s.redis.prefix
    mine, other = shipped(), moved_morning()
    assert claim_store(client, prefix, mine) == "recorded"
    assert read_store_spec(client, prefix) == (mine.identity(), False)
    assert claim_store(client, prefix, mine) == "same"
    publish(store, 0, 1)
    # another spec, with parameters there: refused, nothing touched
    before = client.hgetall(store.keys.versions), store.epoch()
    with pytest.raises(SpecError, match=r"refusing to start.*shipped@1 .*not this one's "
                                        r"early@1.*--replace-spec"):
        claim_store(client, prefix, other)
    assert (client.hgetall(store.keys.versions), store.epoch()) == before
    assert read_store_spec(client, prefix)[0] == mine.identity()
    # told to: the parameters and the prior's pools go, under a new epoch and generation
    client.set(f"{prefix}:prior:Pizzas", b"pool")
    assert claim_store(client, prefix, other, replace=True) == "replaced"
    assert read_store_spec(client, prefix) == (other.identity(), False)
    assert store.epoch() not in (None, before[1]) and store.current_generation() == 1
    assert client.get(f"{prefix}:prior:Pizzas") is None
    # a spec recorded with no parameters yet is simply replaced by the next job's record
    assert claim_store(client, prefix, mine) == "recorded"


def test_parameters_from_before_specs_count_as_the_shipped_spec(own_redis: OwnRedis) -> None:
    s = redis_settings(own_redis.port)
    store = ParamStore.from_settings(s)
    publish(store, 1, 1)  # no record: published before specs were recorded
    crosses = FeatureSpace.load(spec=CROSSES).context
    with pytest.raises(SpecError, match="unrecorded, so the shipped spec's"):
        claim_store(store.client, s.redis.prefix, crosses)
    assert claim_store(store.client, s.redis.prefix, shipped()) == "recorded"


def test_claim_for_checks_d_and_refuses_when_redis_does_not_answer(own_redis: OwnRedis) -> None:
    s = redis_settings(own_redis.port, RTREC_FEATURE_SPEC=CROSSES)
    assert claim_for(s) == "recorded"
    assert read_store_spec(ParamStore.from_settings(s).client, "t")[0]["dim"] == 23
    with pytest.raises(FeatureError, match="dim 15 != CONTEXT_DIM 23"):
        claim_for(s.override(RTREC_DIM=15))
    dead = redis_settings(free_port())
    with pytest.raises(SpecError, match="Redis did not answer for 0.5s"):
        claim_for(dead, wait_s=0.5)


@pytest.mark.parametrize("notifications", [True, False])
def test_serving_refuses_another_spec_s_parameters_and_takes_its_own_back(
        own_redis: OwnRedis, notifications: bool) -> None:
    s = redis_settings(own_redis.port, RTREC_POLL_INTERVAL_S=0.05)
    store = ParamStore.from_settings(s)
    client, prefix = store.client, s.redis.prefix
    mine, other = shipped(), moved_morning()
    claim_store(client, prefix, mine)
    publish(store, 2, 1)
    ref = SnapshotRefresher(s, IDS, notifications=notifications, spec=mine.identity())
    rec = Recommender(s, refresher=ref)
    try:
        assert ref.start(wait_s=5)
        wait_for(lambda: ref.health().products_with_params == 5, 5, "own parameters loaded")
        assert ref.health().spec_error is None and rec.health().status == "ready"
        # a job restarted under another spec (--replace-spec) and publishing
        claim_store(client, prefix, other, replace=True)
        publish(store, 3, 7)
        wait_for(lambda: ref.health().spec_error is not None, 5, "the other spec seen")
        wait_for(lambda: ref.health().products_with_params == 0, 5, "back to the prior")
        publish(store, 4, 9)  # more of the other spec's: still not taken
        h = rec.health()
        assert h.status == "degraded"
        assert any("feature spec: parameters were learned under feature spec early@1" in r
                   and "scoring from the prior" in r for r in h.reasons), h.reasons
        x = np.random.default_rng(1).uniform(0, 1, 15)
        scores = [i.score for i in rec.recommend(1, x=x, k=5, alpha=0.0).items]
        assert scores == [0.0] * 5  # every product at the prior
        with TestClient(create_app(recommender=rec)) as http:
            body = http.get("/healthz").json()
            assert body["status"] == "degraded"
            assert any("early@1" in r for r in body["reasons"])
        # its own spec again: everything reloaded
        claim_store(client, prefix, mine, replace=True)
        publish(store, 5, 11)
        wait_for(lambda: ref.health().spec_error is None
                 and ref.health().products_with_params == 5, 5, "own parameters again")
        assert rec.health().status == "ready"
        assert rec.snapshot.version_of(IDS[0]) == 11
    finally:
        rec.close()


def test_a_recommender_built_with_a_spec_scores_its_x(own_redis: OwnRedis) -> None:
    """RTREC_FEATURE_SPEC reaches serving: d = 23, x built by the spec, the refresher checks
    against it (the store holds shipped-spec parameters from before specs: refused)."""
    s = redis_settings(own_redis.port, RTREC_FEATURE_SPEC=CROSSES)
    assert s.model.dim == 23
    publish(ParamStore.from_settings(s), 6, 1)  # d=15 parameters, no record
    rec = Recommender.from_settings(s, kafka=False, notifications=False, wait_s=5)
    try:
        user = next(u for u in load_users() if u.age >= 61)
        at = utc(2026, 1, 7, 14)
        x = rec.context(user.user_id, at=at)
        assert x.shape == (23,)
        np.testing.assert_array_equal(x, FeatureSpace.load(spec=CROSSES).context_vector(user, at))
        assert rec.recommend(user.user_id, at=at, k=3).items
        h = rec.health()
        assert h.status == "degraded" and any("unrecorded, so the shipped spec's" in r
                                              for r in h.reasons), h.reasons
    finally:
        rec.close()
    assert load_spec(CROSSES).dim == 23


def test_a_wiped_store_gets_the_writer_s_spec_back_with_its_first_values(
        own_redis: OwnRedis) -> None:
    """Under a spec other than the shipped one, a Redis wipe must not leave values without a
    record (serving would take them for the shipped spec's and refuse them for good): the
    job's writer puts its record back in the batch that writes the first values, and never
    overwrites another spec's record."""
    s = redis_settings(own_redis.port, RTREC_FEATURE_SPEC=CROSSES, RTREC_POLL_INTERVAL_S=0.05)
    crosses = FeatureSpace.load(spec=CROSSES).context
    record = json.dumps(crosses.identity(), sort_keys=True)
    client = ParamStore.from_settings(s).client
    claim_store(client, "t", crosses)
    writer = ParamStore(client, "t", spec_record=record)
    rng = np.random.default_rng(7)
    ref = SnapshotRefresher(s, IDS, notifications=False, spec=crosses.identity())
    try:
        assert ref.start(wait_s=5)
        writer.write(IDS[0], blob(with_version(learned_state(rng, 23, 3), 1)))
        wait_for(lambda: ref.health().products_with_params == 1, 5, "first values")
        client.flushdb()  # Redis wiped: values, versions, epoch and the record gone
        writer.write(IDS[1], blob(with_version(learned_state(rng, 23, 3), 2)))
        assert read_store_spec(client, "t") == (crosses.identity(), True)
        wait_for(lambda: ref.snapshot.version_of(IDS[1]) == 2, 5, "values after the wipe")
        assert ref.health().spec_error is None
        # another spec's record stays: this writer does not take the store back
        client.set("t:spec", json.dumps(shipped().identity()))
        writer.write(IDS[2], blob(with_version(learned_state(rng, 23, 3), 3)))
        assert read_store_spec(client, "t")[0] == shipped().identity()
        wait_for(lambda: ref.health().spec_error is not None, 5, "the other record seen")
    finally:
        ref.stop()
