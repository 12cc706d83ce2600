"""The snapshot follows Redis: notifications, polling, never older, and Redis outages.

Every test runs a real redis-server of its own (serving_helpers.OwnRedis) and writes
parameters the way the Flink job does, through contract.store.ParamStore.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator

import numpy as np
import pytest
from redis.connection import AbstractConnection
from serving_helpers import OwnRedis, blob, learned_state, with_version

from contract.config import Settings
from contract.features import CONTEXT_DIM
from serving import Recommender
from serving.refresher import SnapshotRefresher
from tests.helpers import PRODUCTS, redis_settings, wait_for
from tests.helpers import store as open_store

pytestmark = pytest.mark.integration
D = CONTEXT_DIM
IDS = PRODUCTS[:20]


def _settings(server: OwnRedis, **env: object) -> Settings:
    return redis_settings(server.port, RTREC_REDIS_TIMEOUT_S=0.3, **env)


@contextlib.contextmanager
def _redis_calls() -> Iterator[Counter]:
    """Counts, per thread, every command redis-py sends and every connection it opens."""
    calls: Counter = Counter()
    send, connect = AbstractConnection.send_packed_command, AbstractConnection.connect

    def counted_send(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls[threading.get_ident()] += 1
        return send(self, *args, **kwargs)

    def counted_connect(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls[threading.get_ident()] += 1
        return connect(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(AbstractConnection, "send_packed_command", counted_send)
        mp.setattr(AbstractConnection, "connect", counted_connect)
        yield calls


def test_initial_load_then_notifications_apply_newer_and_ignore_older(own_redis) -> None:
    rng = np.random.default_rng(0)
    settings = _settings(own_redis, RTREC_POLL_INTERVAL_S=60.0)  # polling cannot be what delivers
    store = open_store(settings)
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
        syncs = ref.health().syncs
        assert store.write("p002", blob(s7))
        wait_for(lambda: ref.snapshot.version_of("p002") == 7, 3.0)
        # delivered by the notification: no version sync ran (the poll is 60 s away)
        assert ref.health().syncs == syncs
        np.testing.assert_allclose(ref.snapshot.A_invs[2], s7.A_inv)

        # A stale value (older version, written around the Lua guard as a replaying or
        # misbehaving writer might) announced as newer, and an older announcement: both ignored.
        stale = learned_state(rng, D, 4)
        store.client.set(store.keys.arm("p002"), blob(stale))
        store.client.publish(store.keys.channel, "p002:8")
        store.client.publish(store.keys.channel, "p002:5")
        store.client.publish(store.keys.channel, "garbage")
        # a real write announced after them: once it is applied, they were all handled
        assert store.write("p003", blob(learned_state(rng, D, 2)))
        wait_for(lambda: ref.snapshot.version_of("p003") == 2, 3.0)
        assert ref.snapshot.version_of("p002") == 7
        np.testing.assert_allclose(ref.snapshot.A_invs[2], s7.A_inv)

        # ...and the refresher is still alive: a real newer write lands.
        assert store.write("p002", blob(with_version(s7, 9)))
        wait_for(lambda: ref.snapshot.version_of("p002") == 9, 3.0)
        assert ref.snapshot.model_version == 3 + 9 + 2
    finally:
        ref.stop()


def test_polling_with_notifications_off(own_redis) -> None:
    rng = np.random.default_rng(1)
    settings = _settings(own_redis, RTREC_POLL_INTERVAL_S=0.2)
    store = open_store(settings)
    ref = SnapshotRefresher(settings, IDS, notifications=False)
    try:
        assert ref.start(wait_s=5)
        assert ref.health().notifications == "off"
        s5 = learned_state(rng, D, 5)
        assert store.write("p010", blob(s5))
        wait_for(lambda: ref.snapshot.version_of("p010") == 5, 3.0)
        # An older version in Redis (e.g. after a restore) never moves the snapshot back.
        store.client.hset(store.keys.versions, "p010", 6)
        store.client.set(store.keys.arm("p010"), blob(learned_state(rng, D, 2)))
        syncs = ref.health().syncs
        mark = time.monotonic()
        wait_for(lambda: ref.health().syncs >= syncs + 2, 3.0)
        assert ref.snapshot.version_of("p010") == 5
        np.testing.assert_allclose(ref.snapshot.A_invs[10], s5.A_inv)
        # a sync that changed nothing still confirmed the snapshot: stamped after the mark
        assert ref.snapshot.synced_at >= mark
    finally:
        ref.stop()


def test_lost_subscription_falls_back_to_a_version_sync(own_redis) -> None:
    """Writes made while the subscription is down (no one hears their notification) still
    reach the snapshot: the refresher reconnects and compares versions."""
    rng = np.random.default_rng(2)
    settings = _settings(own_redis, RTREC_POLL_INTERVAL_S=60.0)
    store = open_store(settings)
    ref = SnapshotRefresher(settings, IDS, notifications=True, reconcile_every=1000)
    try:
        assert ref.start(wait_s=5)
        syncs = ref.health().syncs
        store.client.client_kill_filter(_type="pubsub")
        store.write("p005", blob(learned_state(rng, D, 4)))
        wait_for(lambda: ref.snapshot.version_of("p005") == 4, 5.0)
        assert ref.health().syncs > syncs
    finally:
        ref.stop()


def test_redis_outage_keeps_serving_reports_degraded_and_recovers(own_redis) -> None:
    rng = np.random.default_rng(3)
    settings = _settings(own_redis, RTREC_POLL_INTERVAL_S=0.3)
    store = open_store(settings)
    s6 = learned_state(rng, D, 6)
    store.write("p003", blob(s6))
    ref = SnapshotRefresher(settings, IDS, notifications=True)
    rec = Recommender(settings, refresher=ref, seed=0)
    try:
        assert ref.start(wait_s=5)
        assert rec.health().status == "ready"
        x = rng.uniform(0, 1, D)
        before = rec.recommend(1, x=x, k=5, policy="greedy")

        # A hung Redis (SIGSTOP: connections stay open, nothing is answered), where any call
        # would block for its timeout: requests keep being answered, and not one of them sends
        # Redis a command or opens a connection, while the refresher's own calls do go out
        # (and hang), so the spy sees what it should.
        assert own_redis.proc is not None
        with _redis_calls() as calls:
            own_redis.proc.send_signal(signal.SIGSTOP)
            try:
                refresher_calls = sum(calls.values())
                for _ in range(200):
                    r = rec.recommend(1, x=x, k=5, policy="greedy")
                    assert _scores(r) == _scores(before) and r.model_version == 6
                wait_for(lambda: sum(calls.values()) > refresher_calls, 5.0,
                         "the refresher's next call to the hung Redis")
            finally:
                own_redis.proc.send_signal(signal.SIGCONT)
        assert calls[threading.get_ident()] == 0, "a request called Redis"
        assert sum(calls.values()) > 0

        gone = time.monotonic()
        own_redis.stop()  # and a Redis that is gone: requests still answered, degraded
        r = rec.recommend(1, x=x, k=5, policy="greedy")
        assert _scores(r) == _scores(before) and r.model_version == 6
        wait_for(lambda: rec.health().status == "degraded", 3.0)
        health = rec.health()
        assert any("redis unreachable" in reason for reason in health.reasons), health.reasons
        # the age says how stale the snapshot may be: nothing stamped it since Redis went
        assert ref.snapshot.synced_at <= gone

        own_redis.start()  # empty (no persistence): the job would republish; we write once
        store = open_store(settings)
        store.write("p004", blob(learned_state(rng, D, 2)))
        wait_for(lambda: rec.health().status == "ready", 10.0, lambda: rec.health().reasons)
        wait_for(lambda: ref.snapshot.version_of("p004") == 2, 5.0)
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
        open_store(settings).write("p000", blob(learned_state(np.random.default_rng(4), D, 3)))
        wait_for(lambda: ref.snapshot.version_of("p000") == 3, 10.0)
        wait_for(lambda: rec.health().status == "ready", 5.0)
    finally:
        rec.close()
        server.stop()


def _scores(r: object) -> list[float]:
    """The shown scores: products at the prior tie, and ties break by a per-request shuffle,
    so two answers from the same parameters agree on the scores, not on the tied ids."""
    return [i.score for i in r.items]  # type: ignore[attr-defined]
