"""The store's epoch (docs/PARAMS_FORMAT.md): a wiped or rolled-back Redis is a new life of the
store, and a running serving instance follows it down to lower versions (issue 20, item 4).

Real redis-server of the test's own (FLUSHDB would wipe other tests' data on the shared one);
parameters are written the way the job writes them, through contract.store.ParamStore.
"""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from serving_helpers import OwnRedis, blob, learned_state, with_version

from contract.config import Settings
from contract.features import CONTEXT_DIM
from contract.store import ParamStore
from serving import Recommender
from serving.app import create_app
from serving.refresher import SnapshotRefresher
from tests.helpers import PRODUCTS, redis_settings, wait_for

pytestmark = pytest.mark.integration
D = CONTEXT_DIM
IDS = PRODUCTS[:20]


def _settings(server: OwnRedis, **env: object) -> Settings:
    return redis_settings(server.port, **env)


def _same(a: Recommender, b: Recommender) -> None:
    """Two recommenders hold the same parameters and rank alike."""
    sa, sb = a.snapshot, b.snapshot
    assert sa.versions.tolist() == sb.versions.tolist()
    np.testing.assert_array_equal(sa.A_invs, sb.A_invs)
    np.testing.assert_array_equal(sa.thetas, sb.thetas)
    x = np.random.default_rng(9).uniform(0, 1, D)
    # equal scores (products at the prior) tie, and ties break by a per-request shuffle
    assert [i.score for i in a.recommend(1, x=x, k=5).items] == \
        [i.score for i in b.recommend(1, x=x, k=5).items]


def test_the_write_script_sets_an_epoch_once_and_a_wipe_gets_a_new_one(own_redis) -> None:
    store = ParamStore.from_settings(_settings(own_redis))
    assert store.epoch() is None
    state = learned_state(np.random.default_rng(0), D, 3)
    assert store.write("p000", blob(state))
    first = store.epoch()
    assert first is not None
    store.write("p001", blob(state))
    assert not store.write("p000", blob(state))  # refused (same version): epoch untouched
    assert store.epoch() == first
    store.client.flushdb()
    store.write("p000", blob(with_version(state, 1)))  # the same store object, after a wipe
    second = store.epoch()
    assert second not in (None, first)
    assert store.epoch_and_versions() == (second, {"p000": 1})
    third = store.new_epoch()
    assert store.epoch() == third and third != second


@pytest.mark.parametrize("notifications", [True, False], ids=["subscribed", "polling"])
def test_wiped_store_republished_at_lower_versions_is_served_within_2s(
        own_redis: OwnRedis, notifications: bool) -> None:
    """What a job restored from an older checkpoint does to a wiped Redis: it republishes
    lower versions. The running instance must serve them, as a replica started now does."""
    rng = np.random.default_rng(1)
    # a poll 60 s away: only the liveness probe (every 0.5 s) can see the new epoch in time
    settings = _settings(own_redis, RTREC_POLL_INTERVAL_S=60.0)
    store = ParamStore.from_settings(settings)
    store.write_many([(pid, blob(learned_state(rng, D, 5 + i))) for i, pid in
                      enumerate(IDS[:6])])
    running = Recommender(settings, refresher=SnapshotRefresher(
        settings, IDS, notifications=notifications), seed=0)
    fresh = None
    try:
        assert running._refresher is not None and running._refresher.start(wait_s=5)
        assert running.snapshot.model_version == sum(range(5, 11))
        epoch = running._refresher.health().epoch
        assert epoch == store.epoch()

        store.client.flushdb()
        lower = {pid: learned_state(rng, D, 1 + i) for i, pid in enumerate(IDS[:4])}
        assert store.write_many([(pid, blob(s)) for pid, s in lower.items()]) == [True] * 4
        expected = {pid: s.version for pid, s in lower.items()}

        def follows() -> bool:
            snap = running.snapshot
            return all(snap.version_of(pid) == expected.get(pid, 0) for pid in IDS)

        wait_for(follows, 2.0, lambda: running.snapshot.versions.tolist())
        for pid, state in lower.items():
            i = running.snapshot.index(pid)
            np.testing.assert_array_equal(running.snapshot.A_invs[i], state.A_inv)
        health = running._refresher.health()
        assert health.epoch == store.epoch() != epoch and health.epoch_changes == 1
        assert running.snapshot.model_version == sum(expected.values())  # it went down

        fresh = Recommender(settings, refresher=SnapshotRefresher(
            settings, IDS, notifications=notifications), seed=0)
        assert fresh._refresher is not None and fresh._refresher.start(wait_s=5)
        _same(running, fresh)

        # both keep following the new life: a newer write lands on both (announced; without
        # notifications it waits for the 60 s poll, which test_serving_refresh covers)
        if notifications:
            assert store.write("p000", blob(with_version(lower["p000"], 9)))
            wait_for(lambda: running.snapshot.version_of("p000") == 9
                     and fresh.snapshot.version_of("p000") == 9, 5.0)
            _same(running, fresh)
    finally:
        running.close()
        if fresh is not None:
            fresh.close()


def test_new_epoch_after_a_rollback_by_hand_is_followed(own_redis: OwnRedis) -> None:
    """A restore tool that puts older values back (around the write rule, as restoring a backup
    does) calls new_epoch(); without it the lower versions would be ignored forever."""
    rng = np.random.default_rng(2)
    settings = _settings(own_redis)
    store = ParamStore.from_settings(settings)
    newer = learned_state(rng, D, 8)
    older = learned_state(rng, D, 3)
    store.write("p002", blob(newer))
    ref = SnapshotRefresher(settings, IDS, notifications=True)
    try:
        assert ref.start(wait_s=5) and ref.snapshot.version_of("p002") == 8
        store.client.set(store.keys.arm("p002"), blob(older))
        store.client.hset(store.keys.versions, "p002", older.version)
        token = store.new_epoch()
        wait_for(lambda: ref.snapshot.version_of("p002") == 3, 2.0)
        np.testing.assert_array_equal(ref.snapshot.A_invs[2], older.A_inv)
        with TestClient(create_app(recommender=Recommender(settings, refresher=ref))) as client:
            assert client.get("/healthz").json()["epoch"] == token  # which life it serves
    finally:
        ref.stop()
