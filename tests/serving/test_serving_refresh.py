"""The snapshot follows Redis: notifications, polling, never older, and Redis outages.

Every test runs a real redis-server of its own (serving_helpers.OwnRedis) and writes
parameters the way the Flink job does, through contract.store.ParamStore.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from serving_helpers import OwnRedis, blob, learned_state, wait_for, with_version

from contract.config import Settings
from contract.store import ParamStore
from serving import Recommender
from serving.refresher import SnapshotRefresher

pytestmark = pytest.mark.integration
D = 15
IDS = [f"p{i:03d}" for i in range(20)]


def _settings(server: OwnRedis, **kw) -> Settings:  # type: ignore[no-untyped-def]
    return Settings.from_env({"RTREC_REDIS_PORT": server.port, "RTREC_REDIS_PREFIX": "t",
                              "RTREC_REDIS_TIMEOUT_S": 0.3, **kw})


def _store(settings: Settings) -> ParamStore:
    return ParamStore.from_settings(settings)


def test_initial_load_then_notifications_apply_newer_and_ignore_older(own_redis) -> None:
    rng = np.random.default_rng(0)
    settings = _settings(own_redis, RTREC_POLL_INTERVAL_S=60.0)  # polling cannot be what delivers
    store = _store(settings)
    s3 = learned_state(rng, D, 3)
    store.write("p001", blob(s3))
    ref = SnapshotRefresher(settings, IDS, notifications=True, reconcile_every=1000)
    try:
        assert ref.start(wait_s=5)
        snap = ref.snapshot
        assert snap.version_of("p001") == 3 and snap.version_of("p002") == 0
        np.testing.assert_allclose(snap.A_invs[1], s3.A_inv)
        assert ref.health().notifications == "subscribed"

        s7 = learned_state(rng, D, 7)
        t0 = time.monotonic()
        assert store.write("p002", blob(s7))
        assert wait_for(lambda: ref.snapshot.version_of("p002") == 7, 3.0)
        assert time.monotonic() - t0 < 1.0, "a notification should arrive in milliseconds"
        np.testing.assert_allclose(ref.snapshot.A_invs[2], s7.A_inv)

        # A stale value (older version, written around the Lua guard as a replaying or
        # misbehaving writer might) announced as newer, and an older announcement: both ignored.
        stale = learned_state(rng, D, 4)
        store.client.set(store.keys.arm("p002"), blob(stale))
        store.client.publish(store.keys.channel, "p002:8")
        store.client.publish(store.keys.channel, "p002:5")
        store.client.publish(store.keys.channel, "garbage")
        time.sleep(0.5)
        assert ref.snapshot.version_of("p002") == 7
        np.testing.assert_allclose(ref.snapshot.A_invs[2], s7.A_inv)

        # ...and the refresher is still alive: a real newer write lands.
        assert store.write("p002", blob(with_version(s7, 9)))
        assert wait_for(lambda: ref.snapshot.version_of("p002") == 9, 3.0)
        assert ref.snapshot.model_version == 3 + 9
    finally:
        ref.stop()


def test_polling_with_notifications_off(own_redis) -> None:
    rng = np.random.default_rng(1)
    settings = _settings(own_redis, RTREC_POLL_INTERVAL_S=0.2)
    store = _store(settings)
    ref = SnapshotRefresher(settings, IDS, notifications=False)
    try:
        assert ref.start(wait_s=5)
        assert ref.health().notifications == "off"
        s5 = learned_state(rng, D, 5)
        assert store.write("p010", blob(s5))
        assert wait_for(lambda: ref.snapshot.version_of("p010") == 5, 3.0)
        # An older version in Redis (e.g. after a restore) never moves the snapshot back.
        store.client.hset(store.keys.versions, "p010", 6)
        store.client.set(store.keys.arm("p010"), blob(learned_state(rng, D, 2)))
        syncs = ref.health().syncs
        assert wait_for(lambda: ref.health().syncs >= syncs + 2, 3.0)
        assert ref.snapshot.version_of("p010") == 5
        np.testing.assert_allclose(ref.snapshot.A_invs[10], s5.A_inv)
        assert ref.snapshot.age_s() < 1.0
    finally:
        ref.stop()


def test_lost_subscription_falls_back_to_a_version_sync(own_redis) -> None:
    """Writes made while the subscription is down (no one hears their notification) still
    reach the snapshot: the refresher reconnects and compares versions."""
    rng = np.random.default_rng(2)
    settings = _settings(own_redis, RTREC_POLL_INTERVAL_S=60.0)
    store = _store(settings)
    ref = SnapshotRefresher(settings, IDS, notifications=True, reconcile_every=1000)
    try:
        assert ref.start(wait_s=5)
        syncs = ref.health().syncs
        store.client.client_kill_filter(_type="pubsub")
        store.write("p005", blob(learned_state(rng, D, 4)))
        assert wait_for(lambda: ref.snapshot.version_of("p005") == 4, 5.0)
        assert ref.health().syncs > syncs
    finally:
        ref.stop()


def test_redis_outage_keeps_serving_reports_degraded_and_recovers(own_redis) -> None:
    rng = np.random.default_rng(3)
    settings = _settings(own_redis, RTREC_POLL_INTERVAL_S=0.3)
    store = _store(settings)
    s6 = learned_state(rng, D, 6)
    store.write("p003", blob(s6))
    ref = SnapshotRefresher(settings, IDS, notifications=True)
    rec = Recommender(settings, refresher=ref, seed=0)
    try:
        assert ref.start(wait_s=5)
        assert rec.health().status == "ready"
        x = rng.uniform(0, 1, D)
        before = rec.recommend(1, x=x, k=5, policy="greedy")

        own_redis.stop()
        t0 = time.monotonic()
        latencies = []
        while time.monotonic() - t0 < 1.5:  # requests keep being answered during the outage
            t = time.perf_counter()
            r = rec.recommend(1, x=x, k=5, policy="greedy")
            latencies.append(time.perf_counter() - t)
            assert r.items == before.items and r.model_version == 6
            time.sleep(0.005)
        # waiting on Redis would cost its 0.5 s socket timeout; scheduling noise on a shared
        # 2-core machine can cost a few hundred ms once, so the bound sits between the two
        assert max(latencies) < 0.4, "a request must never wait on Redis"
        assert float(np.median(latencies)) < 0.005
        assert wait_for(lambda: rec.health().status == "degraded", 3.0)
        health = rec.health()
        assert any("redis unreachable" in reason for reason in health.reasons), health.reasons
        assert ref.snapshot.age_s() > 0.5  # the age says how stale the snapshot may be

        own_redis.start()  # empty (no persistence): the job would republish; we write once
        store = _store(settings)
        store.write("p004", blob(learned_state(rng, D, 2)))
        assert wait_for(lambda: rec.health().status == "ready", 10.0), rec.health().reasons
        assert wait_for(lambda: ref.snapshot.version_of("p004") == 2, 5.0)
        # A Redis that came back empty is a new epoch of the store: the snapshot is what it
        # holds, as on a replica started now (p003 at the prior until the job republishes it)
        assert ref.snapshot.version_of("p003") == 0
        assert ref.health().epoch == store.epoch() and ref.health().epoch_changes >= 1
    finally:
        rec.close()


def test_redis_down_at_start_serves_the_prior_then_loads(tmp_path) -> None:
    server = OwnRedis(tmp_path)  # port chosen, not started yet
    settings = _settings(server, RTREC_POLL_INTERVAL_S=0.3)
    ref = SnapshotRefresher(settings, IDS, notifications=True)
    rec = Recommender(settings, refresher=ref)
    try:
        assert not ref.start(wait_s=0.5)
        r = rec.recommend(1, x=np.ones(D), k=3)
        assert r.model_version == 0 and len(r.items) == 3
        reasons = rec.health().reasons
        assert rec.health().status == "degraded"
        assert any("never loaded" in reason for reason in reasons), reasons
        server.start()
        _store(settings).write("p000", blob(learned_state(np.random.default_rng(4), D, 3)))
        assert wait_for(lambda: ref.snapshot.version_of("p000") == 3, 10.0)
        assert wait_for(lambda: rec.health().status == "ready", 5.0)
    finally:
        rec.close()
        server.stop()
