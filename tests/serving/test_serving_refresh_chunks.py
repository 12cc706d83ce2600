"""The refresher reads a big store in several transactions, each with the epoch: all of it
loads, and values read under two epochs are never applied together."""

from __future__ import annotations

import numpy as np
import pytest
from serving_helpers import OwnRedis, blob, learned_state

from contract import linucb
from contract.features import CONTEXT_DIM
from contract.store import ParamStore
from serving import refresher as refresher_module
from serving.refresher import _MIXED, SnapshotRefresher
from tests.helpers import redis_settings

D = CONTEXT_DIM


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_store_bigger_than_one_transaction_loads_whole(own_redis: OwnRedis, seed: int,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    monkeypatch.setattr(refresher_module, "TX_PRODUCTS", 7)  # 50 products: 8 transactions
    rng = np.random.default_rng(seed)
    settings = redis_settings(own_redis.port)
    store = ParamStore.from_settings(settings)
    ids = [f"p{i:03d}" for i in range(50)]
    states = {p: learned_state(rng, D, int(rng.integers(1, 9))) for p in ids[:45]}
    store.write_many([(p, blob(s)) for p, s in states.items()])
    ref = SnapshotRefresher(settings, ids, notifications=False)
    try:
        assert ref.start(wait_s=10)
        snap = ref.snapshot
        assert snap.model_version == sum(s.version for s in states.values())
        for p, s in states.items():
            np.testing.assert_array_equal(snap.A_inv(snap.index(p)), s.A_inv)
        assert snap.version_of("p049") == 0
    finally:
        ref.stop()


def test_values_read_under_two_epochs_are_not_one_read(own_redis: OwnRedis,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The epoch changes between two of the transactions of one read: the read says so
    (``_MIXED``, equal to no epoch), so the refresher reads again instead of applying."""
    monkeypatch.setattr(refresher_module, "TX_PRODUCTS", 5)
    rng = np.random.default_rng(3)
    settings = redis_settings(own_redis.port)
    store = ParamStore.from_settings(settings)
    ids = [f"p{i:03d}" for i in range(12)]
    store.write_many([(p, blob(learned_state(rng, D, 3))) for p in ids])
    ref = SnapshotRefresher(settings, ids, notifications=False)
    real = store.client.pipeline
    calls = [0]

    def pipeline(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls[0] += 1
        if calls[0] == 2:  # a rollback lands between the first and second transaction
            store.new_epoch()
        return real(*args, **kwargs)

    monkeypatch.setattr(store.client, "pipeline", pipeline)
    epoch, params = ref._read(store, ids)
    assert calls[0] == 3 and epoch is _MIXED and epoch != store.epoch()
    assert len(params) == 12  # read, but the caller sees no epoch it can apply them under
    calls[0] = 10  # no more changes: one epoch again
    epoch, params = ref._read(store, ids)
    assert epoch == store.epoch() and len(params) == 12


def test_a_value_beyond_int64_is_skipped_not_a_stalled_refresher(own_redis: OwnRedis) -> None:
    """A value whose version is 2^63 (a valid uint64, put in Redis by hand) is refused with
    a reason and the other products' values load. Before decode_many it decoded, then its
    int64 row raised OverflowError in every sync, and no product in the read was applied."""
    rng = np.random.default_rng(11)
    settings = redis_settings(own_redis.port)
    store = ParamStore.from_settings(settings)
    ids = [f"p{i:03d}" for i in range(6)]
    states = {p: learned_state(rng, D, 3) for p in ids}
    store.write_many([(p, blob(s)) for p, s in states.items()])
    big = states["p002"]
    huge = blob(linucb.ArmState(big.A_inv, big.b, big.n, version=2**63))
    store.client.set(store.keys.arm("p002"), huge)
    store.client.hset(store.keys.versions, "p002", str(2**63))
    ref = SnapshotRefresher(settings, ids, notifications=False)
    try:
        assert ref.start(wait_s=10)
        snap = ref.snapshot
        assert snap.version_of("p002") == 0  # skipped: still at the prior
        for p in ids:
            if p != "p002":
                assert snap.version_of(p) == states[p].version
                np.testing.assert_array_equal(snap.A_inv(snap.index(p)), states[p].A_inv)
        assert ref.health().last_error is None
    finally:
        ref.stop()
