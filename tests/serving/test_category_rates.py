"""RTREC_EXPLORATION=category_rate in serving (docs/EXPLORATION.md section 1): the category
pools serving derives from the published parameters (serving/category_rates.py) - followed
update by update they equal a sum afresh, several seeds - and a request ranks, scores and
explains as the formula says on a real snapshot; through a real Redis the refresher keeps
the pools in step with its snapshot without summing afresh."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from serving_helpers import OwnRedis, blob

from contract import exploration, linucb
from contract.codec import Params
from contract.config import Settings
from contract.features import CONTEXT_DIM, CONTEXT_NAMES
from serving import Recommender, Snapshot
from serving.category_rates import CategoryPools
from serving.controls import CatalogIndex
from serving.refresher import SnapshotRefresher
from tests.helpers import redis_settings, wait_for
from tests.helpers import store as open_store

D = CONTEXT_DIM
TOD = [i for i, n in enumerate(CONTEXT_NAMES) if n.startswith("tod_")]
NAMES = ("shoes", "hats", "bags", "scarves")


def _x(rng: np.random.Generator) -> np.ndarray:
    """x of the shipped layout (one time of day set), so serving can count clicks."""
    x = rng.uniform(0, 1, D)
    x[TOD] = 0.0
    x[TOD[int(rng.integers(0, 3))]] = 1.0
    return x


def _learn(rng: np.random.Generator, state: linucb.ArmState, n: int, rate: float
           ) -> tuple[linucb.ArmState, int]:
    clicks = 0
    for _ in range(n):
        r = float(rng.random() < rate)
        state = linucb.update(state, _x(rng), r)
        clicks += int(r)
    return state, clicks


def _scratch(snap: Snapshot, cats: list[str | None], names: tuple[str, ...], l2: float
             ) -> tuple[np.ndarray, np.ndarray]:
    """S_c, t_c summed directly from the snapshot's whole arrays (not serving's path)."""
    S = np.zeros((len(names), D, D))
    t = np.zeros((len(names), D))
    A_invs, thetas = snap.A_invs, snap.thetas
    for i, c in enumerate(cats[:len(snap)]):
        if c is None:
            continue
        A = np.linalg.inv(A_invs[i])
        S[names.index(c)] += A - l2 * np.eye(D)
        t[names.index(c)] += A @ thetas[i]
    return S, t


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_pools_followed_update_by_update_equal_a_sum_afresh(seed: int) -> None:
    rng = np.random.default_rng([seed, 22])
    m = 40
    ids = [f"p{i:03d}" for i in range(m)]
    cats: list[str | None] = [None if i % 9 == 0 else NAMES[int(rng.integers(0, 4))]
                              for i in range(m)]
    states = {p: linucb.init_state(D) for p in ids}
    snap = Snapshot.prior(ids, D)
    pools = CategoryPools(D, 1.0)
    pools.set_categories(cats)
    pools.rebuild(snap)
    for step in range(40):
        if step % 10 == 5:  # new catalog products: appended at the prior, then categorised
            new = [f"n{step:02d}{j}" for j in range(3)]
            old, snap = snap, snap.with_products(new)
            pools.advance(old, snap, new)
            ids += new
            states.update({p: linucb.init_state(D) for p in new})
            cats += [NAMES[int(rng.integers(0, 4))] for _ in new]
            if step < 30:  # the last ones learn before their categories are known
                pools.set_categories(cats)
        batch = {}
        for p in rng.choice(ids, size=int(rng.integers(1, 8)), replace=False).tolist():
            states[p], _ = _learn(rng, states[p], int(rng.integers(1, 4)), 0.2)
            batch[p] = Params(states[p], step + 1)
        old, (snap, changed) = snap, snap.with_params(batch)
        pools.advance(old, snap, changed)
    pools.set_categories(cats)  # the last products' shares come from the pools' snapshot
    assert pools.rebuilds == 1  # every update was followed, none summed afresh
    st = pools.state
    assert st.generation == snap.generation
    S, t = _scratch(snap, cats, st.names, 1.0)
    assert sorted(st.names) == sorted(set(c for c in cats if c is not None))
    np.testing.assert_allclose(st.S, S, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(st.t, t, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(st.M, exploration.category_solve(S, 1.0), rtol=1e-9, atol=1e-12)
    # and a sum afresh of the same snapshot gives the same numbers
    fresh = CategoryPools(D, 1.0)
    fresh.set_categories(cats)
    fresh.rebuild(snap)
    np.testing.assert_allclose(fresh.state.S, S, rtol=1e-9, atol=1e-9)
    # a replacement that does not follow the pools' snapshot is summed afresh
    other = Snapshot.prior(ids, D)
    pools.advance(other, snap, [ids[1]])
    assert pools.rebuilds == 2
    np.testing.assert_allclose(pools.state.S, S, rtol=1e-9, atol=1e-9)


def _world(seed: int, m: int = 48) -> tuple[Snapshot, list[str], int, int]:
    """A learned snapshot whose categories click at different rates, its true counts."""
    rng = np.random.default_rng([seed, 23])
    ids = [f"p{i:03d}" for i in range(m)]
    cats = [NAMES[i % 4] for i in range(m)]
    rate = {"shoes": 0.05, "hats": 0.2, "bags": 0.4, "scarves": 0.1}
    params, clicks, n = {}, 0, 0
    for i, p in enumerate(ids):
        k = 0 if i % 7 == 0 else int(rng.integers(1, 12))  # some never learned
        s, c = _learn(rng, linucb.init_state(D), k, rate[cats[i]])
        clicks, n = clicks + c, n + k
        if k:
            params[p] = Params(s, 1)
    snap, _ = Snapshot.prior(ids, D).with_params(params)
    return snap, cats, clicks, n


def _expected(snap: Snapshot, cats: list[str], x: np.ndarray, p: float, l2: float,
              optimism: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Every product's score and bonus by the formula, solved directly (``optimism``:
    standard deviations of the category's rate added to it, category_ucb's 1)."""
    names = tuple(sorted(set(cats)))
    S, t = _scratch(snap, list(cats), names, l2)
    xx = float(x @ x)
    q = np.array([x @ np.linalg.solve(l2 * np.eye(D) + S[c], t[c] + l2 * p * x / xx)
                  + optimism * np.sqrt(p * (1 - p) * x @ np.linalg.solve(
                      l2 * np.eye(D) + S[c], x))
                  for c in range(len(names))])
    var = np.einsum("mij,i,j->m", snap.A_invs, x, x)
    bonus = q[[names.index(c) for c in cats]] * l2 * var / xx
    return snap.thetas @ x + bonus, bonus


@pytest.mark.parametrize("rule", ["category_rate", "category_ucb"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_requests_rank_score_and_explain_by_the_formula(rule: str, seed: int) -> None:
    snap, cats, clicks, n = _world(seed)
    settings = Settings.from_env({"RTREC_EXPLORATION": rule})
    rec = Recommender(settings, snapshot=snap, catalog=CatalogIndex(snap.product_ids, cats),
                      seed=0)
    plain = Recommender(Settings.from_env({"RTREC_EXPLORATION": "decaying"}), snapshot=snap,
                        seed=0)
    p = exploration.click_rate(clicks, n)
    rng = np.random.default_rng([seed, 24])
    differs = 0
    for _ in range(6):
        x = _x(rng)
        score, bonus = _expected(snap, cats, x, p, 1.0,
                                 1.0 if rule == "category_ucb" else 0.0)
        order = np.argsort(-score, kind="stable")[:5]
        got = rec.recommend(1, x=x, k=5, policy="linucb", explain=True)
        # the best five scores; products that tie exactly (never-seen products of one
        # category) are ordered by serving's per-request tie-break, so compare by product
        assert [i.score for i in got.items] == pytest.approx(score[order].tolist(), rel=1e-9)
        index = {pid: j for j, pid in enumerate(snap.product_ids)}
        shown = [index[i.product_id] for i in got.items]
        assert score[shown] == pytest.approx(score[order], rel=1e-9)
        for e, j in zip(got.explanations or (), shown, strict=True):
            assert e["exploration_bonus"] == pytest.approx(bonus[j], rel=1e-9, abs=1e-15)
            assert e["expected_reward"] + e["exploration_bonus"] == pytest.approx(e["score"])
        old = plain.recommend(1, x=x, k=5, policy="linucb")
        differs += [i.product_id for i in old.items] != [i.product_id for i in got.items]
    assert differs  # the categories' rates changed some ranking: not the decaying rule's


@pytest.mark.parametrize("rule", ["category_rate", "category_ucb"])
def test_without_categories_it_is_the_decaying_rule(rule: str) -> None:
    snap, _cats, _c, _n = _world(4)
    rec = Recommender(Settings.from_env({"RTREC_EXPLORATION": rule}), snapshot=snap, seed=0)
    plain = Recommender(Settings.from_env({"RTREC_EXPLORATION": "decaying"}), snapshot=snap,
                        seed=0)
    rng = np.random.default_rng(5)
    for _ in range(4):
        x = _x(rng)
        a = rec.recommend(1, x=x, k=5, policy="linucb")
        b = plain.recommend(1, x=x, k=5, policy="linucb")
        assert a.items == b.items


@pytest.mark.integration
def test_the_refresher_keeps_the_pools_in_step_through_redis(tmp_path) -> None:
    server = OwnRedis(tmp_path)
    server.start()
    try:
        settings = redis_settings(server.port, RTREC_REDIS_TIMEOUT_S=0.5,
                                  RTREC_POLL_INTERVAL_S=60.0,
                                  RTREC_EXPLORATION="category_rate")
        store = open_store(settings)
        rng = np.random.default_rng(22)
        ids = [f"p{i:03d}" for i in range(24)]
        cats = [NAMES[i % 4] for i in range(24)]
        states = {}
        for p in ids[:10]:
            states[p], _ = _learn(rng, linucb.init_state(D), int(rng.integers(1, 6)), 0.3)
            store.write(p, blob(states[p]))
        ref = SnapshotRefresher(settings, ids, notifications=True, reconcile_every=1000)
        assert ref.start(wait_s=5)
        rec = Recommender(settings, refresher=ref, catalog=CatalogIndex(ids, cats), seed=0)
        try:
            pools = rec.category_pools
            assert pools is not None and pools.rebuilds == 1
            for p in rng.choice(ids, size=12, replace=False).tolist():
                states[p], _ = _learn(rng, states.get(p, linucb.init_state(D)), 2, 0.3)
                assert store.write(p, blob(states[p]))
            wait_for(lambda: all(ref.snapshot.version_of(p) == s.n for p, s in states.items()),
                     5.0, "the notifications")
            wait_for(lambda: pools.state.generation == ref.snapshot.generation, 2.0)
            assert pools.rebuilds == 1  # followed update by update
            S, t = _scratch(ref.snapshot, list(cats), pools.state.names, 1.0)
            np.testing.assert_allclose(pools.state.S, S, rtol=1e-9, atol=1e-9)
            np.testing.assert_allclose(pools.state.t, t, rtol=1e-9, atol=1e-9)
            clicks, n = ref.snapshot.learned_counts(1.0)
            x = _x(rng)
            score, _b = _expected(ref.snapshot, cats, x, exploration.click_rate(clicks, n),
                                  1.0)
            got = rec.recommend(1, x=x, k=5, policy="linucb")
            assert [i.score for i in got.items] == pytest.approx(
                sorted(score.tolist())[::-1][:5], rel=1e-9)
        finally:
            rec.close()
    finally:
        server.stop()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_big_store_ranks_by_the_formula(seed: int) -> None:
    """Above EXACT_STORE_ROWS the snapshot scores from float32 rows and prunes by a variance
    bound (serving/snapshot.py): with a weight per product the best k are still the
    formula's, exactly (float64, solved directly)."""
    from serving.snapshot import EXACT_STORE_ROWS

    rng = np.random.default_rng([seed, 25])
    m = EXACT_STORE_ROWS + 3000
    ids = [f"p{i:05d}" for i in range(m)]
    cats = [NAMES[i % 4] for i in range(m)]
    rate = {"shoes": 0.02, "hats": 0.1, "bags": 0.3, "scarves": 0.05}
    params = {}
    for i, p in enumerate(ids):
        n = int(rng.integers(0, 4))
        if n:
            X = rng.uniform(0, 1, (n, D))
            X[:, TOD] = 0.0
            X[np.arange(n), np.asarray(TOD)[rng.integers(0, 3, n)]] = 1.0
            r = (rng.random(n) < rate[cats[i]]).astype(float)
            params[p] = Params(linucb.update_batch(linucb.init_state(D), X, r), 1)
    snap, _ = Snapshot.prior(ids, D).with_params(params)
    rec = Recommender(Settings.from_env({"RTREC_EXPLORATION": "category_rate"}),
                      snapshot=snap, catalog=CatalogIndex(ids, cats), seed=0)
    p = exploration.click_rate(*snap.learned_counts(1.0))
    for _ in range(3):
        x = _x(rng)
        score, _b = _expected(snap, cats, x, p, 1.0)
        order = np.argsort(-score, kind="stable")[:5]
        got = rec.recommend(1, x=x, k=5, policy="linucb")
        assert [i.product_id for i in got.items] == [ids[j] for j in order]
        assert [i.score for i in got.items] == pytest.approx(score[order].tolist(), rel=1e-9)


@pytest.mark.parametrize(("seed", "float32_rows"), [(1, False), (2, False), (3, True),
                                                    (4, True)])
def test_each_changed_product_is_inverted_once_and_the_pools_are_unchanged(
        monkeypatch: pytest.MonkeyPatch, seed: int, float32_rows: bool) -> None:
    """The pools take each changed product's new share from the inverses the update computed
    for its count terms (Snapshot.params_and_inverses), and invert only the old shares: the
    sums, solves and count terms are bit for bit those of the path that reads every share
    back and inverts it (the update's inverses dropped), on small (float64) and big
    (float32) stores, through updates that change a product twice in a row."""
    import serving.snapshot as snapshot_mod

    if float32_rows:
        monkeypatch.setattr(snapshot_mod, "EXACT_STORE_ROWS", 0)
    rng = np.random.default_rng([seed, 23])
    m = 60
    ids = [f"p{i:03d}" for i in range(m)]
    cats: list[str | None] = [None if i % 7 == 0 else NAMES[int(rng.integers(0, 4))]
                              for i in range(m)]
    states = {p: linucb.init_state(D) for p in ids}
    lineages = []
    for _ in range(2):
        snap = Snapshot.prior(ids, D)
        pools = CategoryPools(D, 1.0)
        pools.set_categories(cats)
        pools.rebuild(snap)
        lineages.append([snap, pools])
    inverted: list[int] = []
    inverses = exploration.inverses

    def counting(A_invs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        inverted.append(len(A_invs))
        return inverses(A_invs)
    monkeypatch.setattr(exploration, "inverses", counting)
    last: list[str] = []
    history: list[list[str]] = []
    for step in range(30):
        picked = rng.choice(ids, size=int(rng.integers(1, 9)), replace=False).tolist()
        picked = list(dict.fromkeys(picked + last[:2]))  # some changed again at once
        batch = {}
        for p in picked:
            states[p], _ = _learn(rng, states[p], int(rng.integers(1, 4)), 0.3)
            batch[p] = Params(states[p], step + 1)
        for j, lineage in enumerate(lineages):
            old, pools = lineage
            inverted.clear()
            new, changed = old.with_params(batch)
            assert inverted == [len(changed)]  # the count terms: each changed one, once
            if j == 1:
                new._written = None  # the path before: every share read back and inverted
            inverted.clear()
            pools.advance(old, new, changed)
            lineage[0] = new
            held = [p for p in changed if cats[ids.index(p)] is not None]
            # old shares only, but those the previous update wrote come with its inverses
            again = sum(p in last for p in held)
            assert sum(inverted) == (len(held) - again if j == 0 else 2 * len(held))
        last = changed
        history.append(changed)
    assert any(set(a) & set(b) for a, b in itertools.pairwise(history))
    (a, pa), (b, pb) = lineages
    for name in ("S", "t", "M"):
        assert np.array_equal(getattr(pa.state, name), getattr(pb.state, name)), name
    assert np.array_equal(a._sums[0], b._sums[0])
    S, t = _scratch(a, cats, pa.state.names, 1.0)
    np.testing.assert_allclose(pa.state.S, S, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(pa.state.t, t, rtol=1e-9, atol=1e-9)
