"""Serving across a rollback (docs/PARAMS_FORMAT.md "Generations: rollback"): the refresher
switches at the announcement, not at its next probe, to exactly the rolled-back values; and
/metrics reports the newest model snapshot's age (rtrec_snapshot_age_seconds)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from serving_helpers import OwnRedis, blob, learned_state

from contract.config import Settings
from contract.features import CONTEXT_DIM
from contract.store import ParamStore
from serving import Recommender
from serving.app import create_app
from serving.refresher import SnapshotRefresher
from tests.helpers import PRODUCTS, prom_value, redis_settings, wait_for

pytestmark = pytest.mark.integration
D = CONTEXT_DIM
IDS = PRODUCTS[:20]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_rollback_is_followed_at_its_announcement(own_redis: OwnRedis, seed: int) -> None:
    rng = np.random.default_rng(seed)
    # the probe and the poll 60 s away: only the announcement can be in time
    settings: Settings = redis_settings(own_redis.port, RTREC_PROBE_INTERVAL_S=60,
                                        RTREC_POLL_INTERVAL_S=60, RTREC_REDIS_PREFIX=f"r{seed}")
    store = ParamStore.from_settings(settings)
    newer = {p: learned_state(rng, D, 8 + i) for i, p in enumerate(IDS[:10])}
    older = {p: learned_state(rng, D, 2 + i) for i, p in enumerate(IDS[:6])}
    store.write_many([(p, blob(s)) for p, s in newer.items()])
    ref = SnapshotRefresher(settings, IDS, notifications=True)
    try:
        assert ref.start(wait_s=5)
        assert ref.snapshot.model_version == sum(s.version for s in newer.values())
        t0 = time.monotonic()
        store.replace_all({p: blob(s) for p, s in older.items()}, generation=1)
        wait_for(lambda: ref.snapshot.model_version == sum(s.version for s in older.values()),
                 5.0, "the rolled-back snapshot")
        assert time.monotonic() - t0 < 5.0  # well before the 60 s probe
        snap = ref.snapshot
        for i, p in enumerate(IDS):
            if p in older:
                assert snap.version_of(p) == older[p].version
                np.testing.assert_array_equal(snap.A_invs[i], older[p].A_inv)
            else:  # not in the snapshot rolled back to: the prior
                assert snap.version_of(p) == 0
        assert ref.health().epoch == store.epoch() and ref.health().epoch_changes == 1
        # the old writer's generation is refused; serving keeps the rolled-back values
        old_writer = ParamStore(store.client, settings.redis.prefix, generation=0)
        assert old_writer.write_many([(IDS[0], blob(learned_state(rng, D, 50)))]) == [False]
        time.sleep(0.3)
        assert ref.snapshot.version_of(IDS[0]) == older[IDS[0]].version
    finally:
        ref.stop()


def test_metrics_report_the_snapshot_age(own_redis: OwnRedis) -> None:
    settings = redis_settings(own_redis.port, RTREC_PROBE_INTERVAL_S=0.1)
    store = ParamStore.from_settings(settings)
    ref = SnapshotRefresher(settings, IDS, notifications=True)
    try:
        assert ref.start(wait_s=5)
        with TestClient(create_app(recommender=Recommender(settings, refresher=ref))) as client:
            assert "rtrec_snapshot_age_seconds" not in client.get("/metrics").text  # none yet
            store.mark_snapshot("good", int(time.time() * 1000) - 90_000)  # 90 s ago
            wait_for(lambda: ref.health().last_snapshot_ms is not None, 2.0, "the probe")
            age = prom_value(client.get("/metrics").text, "rtrec_snapshot_age_seconds")
            assert 90 <= age < 100, age
    finally:
        ref.stop()
