"""The snapshot's row store: updates in O(changed) rows, readers never see a row change under
them, rows reused once no reader holds them, new products added at the prior."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from serving_helpers import learned_state

from contract import exploration, linucb
from contract.codec import Params
from contract.features import CONTEXT_DIM
from serving import Snapshot

D = CONTEXT_DIM


MARK = np.eye(D) + 1.0  # invertible; scaled by the version, every entry says it


def _marked(v: int) -> Params:
    """Parameters whose every number says their version: A^-1 = v (I + 1), b = e0."""
    b = np.zeros(D)
    b[0] = 1.0
    return Params(linucb.ArmState(v * MARK, b, 0, version=v), updated_at_ms=v)


def _check_whole(snap: Snapshot, x: np.ndarray, rng: np.random.Generator) -> None:
    """Every number this snapshot gives is of the version it gave first, row by row."""
    versions = snap.versions.copy()
    assert snap.model_version == int(versions.sum())
    score, mean = snap.scores_and_mean(x, 1.0)
    mark_mean, mark_var = MARK[:, 0] @ x, x @ MARK @ x
    np.testing.assert_allclose(mean, versions * mark_mean, rtol=1e-12)
    np.testing.assert_allclose(score, versions * mark_mean + np.sqrt(versions * mark_var),
                               rtol=1e-12)
    for i in rng.choice(len(snap), 8, replace=False).tolist():
        v = versions[i]
        assert (snap.A_inv(i) == v * MARK).all() and (snap.theta(i) == v * MARK[:, 0]).all()
        assert snap.version_of(snap.product_ids[i]) == v
        assert int(snap.updated_at_ms[i]) == v


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_readers_see_whole_versions_while_updates_land(seed: int) -> None:
    """Three reader threads score and read rows while a writer applies updates as fast as it
    can, through the few spare rows (64 for 64 products: each row is reused many times)."""
    rng = np.random.default_rng(seed)
    ids = [f"p{i:03d}" for i in range(64)]
    first, _ = Snapshot.prior(ids, D).with_params({p: _marked(1) for p in ids})
    current = [first]
    del first
    stop = threading.Event()
    errors: list[BaseException] = []
    reads = [0]

    def reader(k: int) -> None:
        r = np.random.default_rng(seed * 10 + k)
        try:
            while not stop.is_set():
                _check_whole(current[0], r.uniform(0, 1, D), r)
                reads[0] += 1
        except BaseException as exc:  # reported below
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    updates = 0
    deadline = time.monotonic() + 1.0
    try:
        while time.monotonic() < deadline and not stop.is_set():
            snap = current[0]
            chosen = rng.choice(len(ids), int(rng.integers(1, 12)), replace=False)
            new, changed = snap.with_params(
                {ids[i]: _marked(int(snap.versions[i]) + 1) for i in chosen.tolist()})
            assert len(changed) == chosen.size
            current[0] = new
            updates += chosen.size
            del snap, new
    finally:
        stop.set()
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    final = current[0]
    assert reads[0] > 50 and updates > 2 * 64  # every row was rewritten several times over
    assert final.model_version == 64 + updates
    _check_whole(final, rng.uniform(0, 1, D), rng)


def test_an_update_writes_only_the_changed_rows() -> None:
    rng = np.random.default_rng(4)
    ids = [f"p{i:03d}" for i in range(300)]
    base = Snapshot.prior(ids, D)
    store = base._rows
    before = (store.hot.copy(), base._slot.copy())
    params = {ids[i]: Params(learned_state(rng, D, 5), 1) for i in (3, 70, 299)}
    new, changed = base.with_params(params)
    assert sorted(changed) == sorted(params)
    assert new._rows is store  # the same arrays: no copy of the other 297 products
    moved = np.flatnonzero(new._slot != base._slot)
    assert moved.tolist() == [3, 70, 299]
    # the old snapshot's rows are untouched; only the three new rows were written
    np.testing.assert_array_equal(store.hot[base._slot], before[0][before[1]])
    written = np.flatnonzero((store.hot != before[0]).any(axis=1))
    assert set(written.tolist()) <= set(new._slot[moved].tolist())
    for i in (3, 70, 299):
        np.testing.assert_array_equal(new.A_inv(i), params[ids[i]].state.A_inv)
        assert new.version_of(ids[i]) == 5 and base.version_of(ids[i]) == 0


def test_rows_are_reused_once_readers_let_go() -> None:
    """A long stream of updates with no reader holding old snapshots stays in one store."""
    ids = [f"p{i:03d}" for i in range(100)]
    snap = Snapshot.prior(ids, D)
    store = snap._rows
    for v in range(1, 60):  # 59 x 20 = 1,180 row writes through 64 spare rows
        snap, _ = snap.with_params({ids[(v * 7 + j) % 100]: _marked(v + 10) for j in range(20)})
    assert snap._rows is store and store.capacity == 100 + 64


def test_a_reader_holding_an_old_snapshot_keeps_it_whole() -> None:
    """The spare rows run out while an old snapshot is held: the writer moves to a bigger
    store and the old snapshot still reads its own numbers."""
    rng = np.random.default_rng(5)
    ids = [f"p{i:03d}" for i in range(100)]
    held, _ = Snapshot.prior(ids, D).with_params({p: _marked(1) for p in ids})
    snap = held
    for v in range(2, 12):  # 10 x 30 = 300 row writes, more than the 64 spare rows
        snap, _ = snap.with_params({ids[(v * 30 + j) % 100]: _marked(v) for j in range(30)})
    assert snap._rows is not held._rows  # it had to grow
    assert held.versions.tolist() == [1] * 100
    _check_whole(held, rng.uniform(0, 1, D), rng)
    _check_whole(snap, rng.uniform(0, 1, D), rng)


def test_with_products_adds_new_products_at_the_prior() -> None:
    rng = np.random.default_rng(6)
    ids = [f"p{i:03d}" for i in range(20)]
    old, _ = Snapshot.prior(ids, D).with_params({"p003": Params(learned_state(rng, D, 4), 1)})
    new = old.with_products(["n1", "n2"])
    assert len(old) == 20 and old.index("n1") is None and old.version_of("n2") is None
    assert len(new) == 22 and new.product_ids[-2:] == ("n1", "n2")
    assert new.version_of("n1") == 0 and new.version_of("p003") == 4
    assert new.model_version == old.model_version == 4
    np.testing.assert_array_equal(new.A_inv(20), np.eye(D))
    x = rng.uniform(0, 1, D)
    np.testing.assert_array_equal(new.scores(x, 0.5)[:20], old.scores(x, 0.5))
    assert new.scores(x, 0.5)[21] == pytest.approx(0.5 * np.linalg.norm(x))
    later, changed = new.with_params({"n2": Params(learned_state(rng, D, 3), 1)})
    assert changed == ["n2"] and later.version_of("n2") == 3
    with pytest.raises(ValueError, match="already"):
        new.with_products(["p001"])
    with pytest.raises(ValueError, match="duplicates"):
        new.with_products(["z", "z"])
    # a branch from the old snapshot adds other products without disturbing the new one
    other = old.with_products(["o1"])
    assert other.index("o1") == 20 and other.index("n1") is None and new.index("n1") == 20


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_learned_counts_equal_the_contracts(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ids = [f"p{i:03d}" for i in range(30)]
    snap, _ = Snapshot.prior(ids, D).with_params(
        {p: Params(learned_state(rng, D, int(rng.integers(0, 30))), 1) for p in ids[:25]})
    expected = exploration.counts_from_params(snap.thetas, snap.A_invs, 1.0)
    assert snap.learned_counts(1.0) == pytest.approx(expected, rel=1e-9)
    assert expected[1] > 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_inv_comes_back_exactly_as_published(seed: int) -> None:
    """Asymmetric A^-1 (Woodbury's rounding, or far from symmetric) is kept bit for bit,
    through updates and through a move to a bigger store."""
    rng = np.random.default_rng(seed)
    ids = [f"p{i:02d}" for i in range(10)]
    far = learned_state(rng, D, 9)
    skew = far.A_inv + np.tril(rng.normal(0, 1e-3, (D, D)), -1)  # not a float32 difference
    states = {"p01": learned_state(rng, D, 30), "p02": linucb.ArmState(skew, far.b, 9),
              "p03": learned_state(rng, D, 1)}
    assert any((s.A_inv != s.A_inv.T).any() for s in states.values())
    held = Snapshot.prior(ids, D)
    snap, _ = held.with_params({p: Params(s, 1) for p, s in states.items()})
    for v in range(2, 80):  # past the 64 spare rows while `held` pins them: the store moves
        snap, _ = snap.with_params({"p09": _marked(v)})
    assert snap._rows is not held._rows
    for p, s in states.items():
        i = snap.index(p)
        np.testing.assert_array_equal(snap.A_inv(i), s.A_inv)
        np.testing.assert_array_equal(snap.A_invs[i], s.A_inv)


def test_a_whole_reload_stays_in_one_store_of_the_usual_size() -> None:
    """from_params (start, epoch change) writes every product into its own fresh store: no
    second store, no rows beyond the spare."""
    rng = np.random.default_rng(8)
    ids = [f"p{i:03d}" for i in range(200)]
    params = {p: Params(learned_state(rng, D, 3), 1) for p in ids[:150]}
    snap = Snapshot.from_params(ids, D, 1.0, params, synced_at=5.0)
    assert snap._rows.capacity == 200 + 64 and snap.synced_at == 5.0
    assert snap.model_version == 150 * 3 and snap.version_of("p199") == 0
    for p in ("p000", "p149"):
        np.testing.assert_array_equal(snap.A_inv(snap.index(p)), params[p].state.A_inv)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sums_kept_per_update_equal_a_fresh_pass(seed: int) -> None:
    """The calibrated rule's counts and the number of products at the prior, kept per
    update, equal what a pass over every product gives, through 1,100 updates (past the
    1,024 after which they are summed afresh) and added products."""
    rng = np.random.default_rng(seed)
    ids = [f"p{i:03d}" for i in range(40)]
    pool = [learned_state(rng, D, int(n)) for n in rng.integers(1, 20, 8)]
    snap = Snapshot.prior(ids, D)
    for step in range(1100):
        if step == 500:
            snap = snap.with_products(["n1", "n2", "n3"])
        pid = snap.product_ids[int(rng.integers(len(snap)))]
        s = pool[int(rng.integers(len(pool)))]
        v = snap.version_of(pid) + int(rng.integers(1, 3))
        snap, _ = snap.with_params(
            {pid: Params(linucb.ArmState(s.A_inv, s.b, min(s.n, v), version=v), 1)})
        if step % 97 == 0 or step in (1023, 1024, 1025, 1099):
            assert snap.prior_count == int((snap.versions == 0).sum())
            expected = exploration.counts_from_params(snap.thetas, snap.A_invs, 1.0)
            assert snap.learned_counts(1.0) == pytest.approx(expected, rel=1e-9, abs=1e-9)
    assert snap.prior_count < 43
