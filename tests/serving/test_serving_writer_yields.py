"""The writer gives the GIL up (serving.snapshot.yield_gil, docs/SERVING.md "How parameter
updates apply"): the refresher decodes a read with a yield every YIELD_EVERY values and
applies it in swaps of at most APPLY_CHUNK products with a yield between them; a sum afresh
of the category pools yields between its chunks. The swaps give the same snapshot and pools
as one application of everything. (What the yields buy was measured, not tested:
docs/SERVING.md run 11.)"""

from __future__ import annotations

import time

import numpy as np
import pytest
from serving_helpers import OwnRedis, blob, learned_state

import serving.category_rates as category_rates_module
import serving.refresher as refresher_module
import serving.snapshot as snapshot_mod
from contract import linucb
from contract.codec import ParamBatch, Params
from contract.features import CONTEXT_DIM
from contract.store import ParamStore
from serving import Snapshot
from serving.category_rates import CategoryPools
from serving.refresher import SnapshotRefresher
from tests.helpers import redis_settings

D = CONTEXT_DIM
CATS = ("shoes", "hats", "bags")


def _params(rng: np.random.Generator, ids: list[str]) -> dict[str, Params]:
    out = {}
    for p in ids:
        s = learned_state(rng, D, int(rng.integers(1, 12)))
        out[p] = Params(linucb.ArmState(s.A_inv, s.b, s.n, version=s.n + 1), 1)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_apply_in_swaps_equals_one_application(monkeypatch: pytest.MonkeyPatch,
                                               seed: int) -> None:
    """``_apply`` of 100 values: ceil(100 / APPLY_CHUNK) swaps of at most APPLY_CHUNK
    products (the chunk lowered to 32 here: 4 swaps), a yield between the swaps; the snapshot
    and the pools that followed the swaps equal one ``with_params`` of everything and a
    sum afresh."""
    rng = np.random.default_rng([seed, 41])
    ids = [f"p{i:03d}" for i in range(120)]
    cats = [CATS[int(rng.integers(0, 3))] for _ in ids]
    settings = redis_settings(6379)  # never connected: _apply alone
    ref = SnapshotRefresher(settings, ids, notifications=False)
    pools = CategoryPools(D, settings.model.l2)
    pools.set_categories(cats)
    pools.rebuild(ref.snapshot)
    events: list[tuple[str, int]] = []
    monkeypatch.setattr(refresher_module, "yield_gil", lambda: events.append(("yield", 0)))

    def listener(old: Snapshot, new: Snapshot, changed: list[str] | None) -> None:
        assert changed is not None
        events.append(("swap", len(changed)))
        pools.advance(old, new, changed)
    ref.on_change = listener
    monkeypatch.setattr(refresher_module, "APPLY_CHUNK", 32)
    params = _params(rng, list(rng.permutation(ids)[:100]))
    start = ref.snapshot
    ref._apply(ParamBatch.of(params, D), stamp=1.0)
    chunk = refresher_module.APPLY_CHUNK
    sizes = [min(chunk, 100 - lo) for lo in range(0, 100, chunk)]
    want: list[tuple[str, int]] = []
    for j, n in enumerate(sizes):
        want += ([("yield", 0)] if j else []) + [("swap", n)]
    assert events == want
    whole, changed = start.with_params(params)
    assert sorted(changed) == sorted(params)
    snap = ref.snapshot
    assert snap.model_version == whole.model_version
    assert np.array_equal(snap.versions, whole.versions)
    assert np.array_equal(snap.thetas, whole.thetas)
    assert np.array_equal(snap.A_invs, whole.A_invs)
    fresh = CategoryPools(D, settings.model.l2)
    fresh.set_categories(cats)
    fresh.rebuild(snap)
    assert pools.rebuilds == 1
    np.testing.assert_allclose(pools.state.S, fresh.state.S, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(pools.state.t, fresh.state.t, rtol=1e-9, atol=1e-9)


def test_a_read_yields_every_few_values(own_redis: OwnRedis,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The first load through a real Redis: 50 values decoded in batches of YIELD_EVERY
    (lowered to 16 here: 4 batches, a yield between two: 3 yields)."""
    rng = np.random.default_rng(5)
    settings = redis_settings(own_redis.port)
    store = ParamStore.from_settings(settings)
    ids = [f"p{i:03d}" for i in range(50)]
    store.write_many([(p, blob(learned_state(rng, D, 3))) for p in ids])
    ref = SnapshotRefresher(settings, ids, notifications=False)
    monkeypatch.setattr(refresher_module, "YIELD_EVERY", 16)
    calls = [0]
    monkeypatch.setattr(refresher_module, "yield_gil", lambda: calls.__setitem__(0, calls[0] + 1))
    _epoch, params = ref._read(store, ids)
    assert len(params) == 50
    assert calls[0] == 50 // refresher_module.YIELD_EVERY


def test_a_sum_afresh_yields_between_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(6)
    ids = [f"p{i:03d}" for i in range(70)]
    snap, _ = Snapshot.prior(ids, D).with_params(_params(rng, ids))
    monkeypatch.setattr(category_rates_module, "_CHUNK", 16)
    calls = [0]
    monkeypatch.setattr(category_rates_module, "yield_gil",
                        lambda: calls.__setitem__(0, calls[0] + 1))
    pools = CategoryPools(D, 1.0)
    pools.set_categories([CATS[i % 3] for i in range(70)])
    pools.rebuild(snap)
    assert calls[0] == 4  # 5 chunks of at most 16


def test_yield_gil_sleeps() -> None:
    t0 = time.perf_counter()
    snapshot_mod.yield_gil()
    assert time.perf_counter() - t0 >= snapshot_mod._YIELD_S
