"""The big store's float32 rows (serving/snapshot.py, docs/SERVING.md "float32 rows"): the
published numbers come back bit for bit, the best k are the float64 best k with their float64
scores (near-ties included), every other score is within the stated bound, and a request
answers the same on both layouts. The float32 layout is forced on small stores here by
lowering EXACT_STORE_ROWS."""

from __future__ import annotations

import numpy as np
import pytest
from serving_helpers import learned_state

import serving.snapshot as snapshot_mod
from contract import linucb
from contract.codec import Params
from contract.config import Settings
from contract.features import CONTEXT_DIM
from serving import Recommender, Snapshot
from serving.controls import CatalogIndex
from serving.eventlog import MemoryEventLog

D = CONTEXT_DIM
K = 5
# a score the float32 pass leaves unrefined is within this of its float64 value, relative to
# the largest |score| (measured: about 6e-8, float32's resolution; the proven bound that
# top_scores re-scores by is looser, about 1e-4 per product)
TOLERANCE = 1e-5


@pytest.fixture
def float32_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snapshot_mod, "EXACT_STORE_ROWS", 0)


def _params(rng: np.random.Generator, m: int) -> dict[str, Params]:
    """m learned products, 0-59 observations each (version n + 1: every one applies)."""
    out = {}
    for i in range(m):
        s = learned_state(rng, D, int(rng.integers(0, 60)))
        out[f"p{i:04d}"] = Params(linucb.ArmState(s.A_inv, s.b, s.n, version=s.n + 1), 1)
    return out


def _snapshot(params: dict[str, Params]) -> Snapshot:
    snap, _ = Snapshot.prior(list(params), D).with_params(params)
    return snap


def test_the_float32_layout_is_the_one_tested(float32_rows: None) -> None:
    snap = _snapshot(_params(np.random.default_rng(0), 20))
    rows = snap._rows
    assert rows.hot64 is None and rows.hot.dtype == np.float32 and rows.low.dtype == np.int32
    per_row = sum(a.nbytes for a in (rows.theta32, rows.avar32, rows.low, rows.cold, rows.meta,
                                     rows.terms, rows.vbound))
    assert per_row / rows.capacity == 1564  # the float64 rows' 1,540 (d = 15), the bound's 24
    assert per_row == snap.nbytes - snap._slot.nbytes  # what nbytes counts


def test_published_numbers_come_back_bit_for_bit(float32_rows: None) -> None:
    rng = np.random.default_rng(3)
    m = 40
    thetas = rng.normal(0, 0.3, (m, D))
    A_invs = np.linalg.inv(np.eye(D) + (lambda G: G @ G.transpose(0, 2, 1))(
        rng.normal(0, 0.3, (m, D, D))))
    A_invs[1, 0, 1] = np.nextafter(A_invs[1, 1, 0], 1.0)  # not symmetric in the last bit
    thetas[2, :4] = (1e-39, -3e-42, 1e39, -0.0)  # subnormal / beyond float32: kept aside
    A_invs[3, 2, 3] = A_invs[3, 3, 2] = 1e-40
    thetas[4] = np.nextafter(np.ldexp(1.0, np.arange(D) - 7), 0.0)  # just below 2^k
    snap = Snapshot([f"p{i}" for i in range(m)], thetas, A_invs, np.ones(m, np.int64),
                    np.zeros(m, np.int64))
    assert snap._rows.exact_hot  # the rows float32 + rest cannot hold
    assert (snap.thetas == thetas).all() and (snap.A_invs == A_invs).all()
    for i in range(m):
        assert (snap.theta(i) == thetas[i]).all() and (snap.A_inv(i) == A_invs[i]).all()
    # through an update and a copy into a bigger store (a reader holding every spare row)
    held = [snap]
    for j in range(3):
        new = Params(linucb.ArmState(A_invs[j], np.ones(D), 5, version=10 + j), 1)
        snap, _ = snap.with_params({f"p{j}": new})
        held.append(snap)
        assert (snap.A_inv(snap.index(f"p{j}")) == A_invs[j]).all()
    grown = snap._copied(200)
    assert grown._rows is not snap._rows
    assert (grown.A_invs == snap.A_invs).all() and (grown.thetas == snap.thetas).all()
    assert (grown.A_invs[5:] == A_invs[5:]).all() and (grown.thetas[5:] == thetas[5:]).all()


def _reference(snap: Snapshot, x: np.ndarray, alpha: float, weight: float,
               x_var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scores in float64 from the published numbers, by the contract's own arithmetic."""
    mean = snap.thetas @ x
    var = np.einsum("i,mij,j->m", x_var, snap.A_invs, x_var)
    return mean + alpha * np.sqrt(np.maximum(var, 0)) + weight * np.maximum(var, 0), mean


def _check_top(s: np.ndarray, ref: np.ndarray, k: int) -> None:
    """The best k equal the float64 best k, except where float64 implementations' own
    rounding (1e-12 of the scale) could order them either way; their scores to 1e-12; and
    every score within TOLERANCE."""
    scale = float(np.abs(ref).max())
    got, want = linucb.top_k(s, k), linucb.top_k(ref, k)
    for a, b in zip(got.tolist(), want.tolist(), strict=True):
        assert a == b or abs(ref[a] - ref[b]) <= 1e-12 * scale, (got, want)
    np.testing.assert_allclose(s[got], ref[got], rtol=1e-12, atol=1e-12 * scale)
    assert np.abs(s - ref).max() <= TOLERANCE * scale


@pytest.mark.parametrize("seed", range(5))
def test_top_k_is_the_float64_top_k(float32_rows: None, seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    snap = _snapshot(_params(rng, 400))
    assert snap._rows.hot64 is None
    for _ in range(10):
        x = rng.uniform(0, 1, D)
        u = x / np.linalg.norm(x)
        for alpha, weight, xv in ((0.0, 0.0, x), (1.0, 0.0, x), (3.0, 0.0, x),
                                  (0.0, 0.4, u)):
            s, mean = snap.top_scores(x, K, alpha, weight, x_var=xv)
            ref, ref_mean = _reference(snap, x, alpha, weight, xv)
            _check_top(s, ref, K)
            assert mean.max() == pytest.approx(ref_mean.max(), rel=1e-12)
            assert int(np.argmax(mean)) == int(np.argmax(ref_mean))
            if weight == 0.0:  # the same numbers as the snapshot's float64 scores
                exact = snap.scores(x, alpha)
                top = linucb.top_k(exact, K)
                assert (linucb.top_k(s, K) == top).all() and (s[top] == exact[top]).all()


def test_near_ties_rank_in_float64_order(float32_rows: None) -> None:
    """Products 1e-13 apart in float64 - one number to float32 - still rank in float64's
    order (the best k are re-scored from the exact rows); without the re-scoring this fails."""
    rng = np.random.default_rng(11)
    base = learned_state(rng, D, 30)
    theta = linucb.theta(base)
    m, tied = 300, 40
    order = rng.permutation(tied)
    params = {}
    for i in range(m):
        if i < tied:  # theta + order[i] * 1e-13 in x's first feature
            t = theta.copy()
            t[0] += order[i] * 1e-13
            state = linucb.ArmState(base.A_inv, np.linalg.solve(base.A_inv, t), 30, version=31)
        else:  # the others well below
            state = linucb.ArmState(base.A_inv, np.linalg.solve(base.A_inv, theta - 0.5), 30,
                                    version=31)
        params[f"p{i:03d}"] = Params(state, 1)
    snap = _snapshot(params)
    x = np.zeros(D)
    x[0] = 1.0
    s32 = (snap._rows.hot[:, :D] @ x.astype(np.float32)).take(snap._slot)
    assert np.unique(s32[:tied]).size < tied // 4  # float32 cannot tell most of them apart
    for alpha in (0.0, 1.0):
        s, _ = snap.top_scores(x, 10, alpha)
        best = linucb.top_k(s, 10)
        assert order[best].tolist() == list(range(tied - 1, tied - 11, -1))


def test_scores_beyond_float32_are_exact(float32_rows: None) -> None:
    """A theta beyond float32's range: the pass would overflow, so the store is scored in
    float64 (finite, as the float64 scores are)."""
    rng = np.random.default_rng(5)
    m = 30
    thetas = rng.normal(0, 1, (m, D))
    thetas[7, 0] = 1e39
    A_invs = np.broadcast_to(np.eye(D), (m, D, D)).copy()
    snap = Snapshot([f"p{i}" for i in range(m)], thetas, A_invs, np.ones(m, np.int64),
                    np.zeros(m, np.int64))
    x = rng.uniform(0, 1, D)
    s, _ = snap.top_scores(x, K, 1.0)
    assert np.isfinite(s).all() and linucb.top_k(s, 1)[0] == 7
    np.testing.assert_array_equal(s, snap.scores(x, 1.0))


@pytest.mark.parametrize("rule", ["decaying", "calibrated", "fixed"])
def test_recommend_answers_the_same_on_both_layouts(monkeypatch: pytest.MonkeyPatch,
                                                    rule: str) -> None:
    rng = np.random.default_rng(21)
    params = _params(rng, 300)
    settings = Settings.from_env({"RTREC_EXPLORATION": rule})
    monkeypatch.setattr(snapshot_mod, "EXACT_STORE_ROWS", 10**9)
    exact = Recommender(settings, snapshot=_snapshot(params), events=MemoryEventLog(), seed=1)
    monkeypatch.setattr(snapshot_mod, "EXACT_STORE_ROWS", 0)
    fast = Recommender(settings, snapshot=_snapshot(params), events=MemoryEventLog(), seed=1)
    assert exact.snapshot._rows.hot64 is not None and fast.snapshot._rows.hot64 is None
    for _ in range(30):
        x = rng.uniform(0, 1, D)
        for policy in ("linucb", "greedy"):
            a = exact.recommend(3, x=x, k=K, policy=policy, explain=True)
            b = fast.recommend(3, x=x, k=K, policy=policy, explain=True)
            ga, gb = _tied_groups(a), _tied_groups(b)  # ties (the prior's): a random draw
            assert ga[:-1] == gb[:-1] and len(ga[-1]) == len(gb[-1])  # of who makes the cut
            assert [i.score for i in b.items] == pytest.approx([i.score for i in a.items],
                                                                rel=1e-12, abs=1e-12)
            for e in b.explanations or ():
                assert e["expected_reward"] + e["exploration_bonus"] == pytest.approx(
                    e["score"], rel=1e-9, abs=1e-12)
    # the exploration health counter (the first product's mean against the best mean) too
    assert exact.product_health.explored == fast.product_health.explored > 0


def test_controls_rank_within_the_bound_on_float32_rows(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    """Under controls (exclusions, a per-category cap) the ranking on float32 rows is
    float64's except between products whose float64 scores are within TOLERANCE."""
    rng = np.random.default_rng(31)
    params = _params(rng, 300)
    ids = list(params)
    settings = Settings.from_env({"RTREC_EXPLORATION": "fixed"})
    catalog = CatalogIndex(ids, [f"c{i % 4}" for i in range(len(ids))], [10.0] * len(ids))
    monkeypatch.setattr(snapshot_mod, "EXACT_STORE_ROWS", 10**9)
    exact = Recommender(settings, snapshot=_snapshot(params), events=MemoryEventLog(),
                        seed=1, catalog=catalog)
    monkeypatch.setattr(snapshot_mod, "EXACT_STORE_ROWS", 0)
    fast = Recommender(settings, snapshot=_snapshot(params), events=MemoryEventLog(),
                       seed=1, catalog=catalog)
    ref = exact.snapshot
    for _ in range(20):
        x = rng.uniform(0, 1, D)
        scores = ref.scores(x, 1.0)
        excluded = [ids[i] for i in linucb.top_k(scores, 3)]
        a = exact.recommend(3, x=x, k=K, policy="linucb", exclude=excluded, max_per_category=2)
        b = fast.recommend(3, x=x, k=K, policy="linucb", exclude=excluded, max_per_category=2)
        scale = float(np.abs(scores).max())
        for p, q in zip(a.items, b.items, strict=True):
            assert p.product_id == q.product_id or abs(p.score - q.score) <= TOLERANCE * scale
            assert q.score == pytest.approx(scores[ref.index(q.product_id)],
                                            abs=TOLERANCE * scale)
        assert not {i.product_id for i in b.items} & set(excluded)


def _tied_groups(r: object) -> list[list[str]]:
    """The shown ids, those with equal scores as one sorted group (drawn in random order)."""
    groups: dict[float, list[str]] = {}
    for item in r.items:  # type: ignore[attr-defined]
        groups.setdefault(item.score, []).append(item.product_id)
    return [sorted(g) for g in groups.values()]


def test_an_update_writes_only_the_changed_rows(float32_rows: None) -> None:
    rng = np.random.default_rng(9)
    params = _params(rng, 100)
    snap = _snapshot(params)
    rows = snap._rows
    before = (rows.hot.copy(), rows.low.copy())
    x = rng.uniform(0, 1, D)
    old_scores = snap.top_scores(x, K, 1.0)[0]
    changed = {p: Params(linucb.ArmState(v.state.A_inv, v.state.b * 2, v.state.n,
                                         version=v.version + 1), 2)
               for p, v in list(params.items())[:3]}
    new, ids = snap.with_params(changed)
    assert new._rows is rows and len(ids) == 3
    written = np.flatnonzero(((rows.hot != before[0]) | (rows.low != before[1])).any(axis=1))
    assert written.size == 3 and not np.isin(written, snap._slot).any()
    np.testing.assert_array_equal(snap.top_scores(x, K, 1.0)[0], old_scores)
    for p, v in changed.items():
        i = new.index(p)
        assert (new.A_inv(i) == v.state.A_inv).all()
        np.testing.assert_allclose(new.theta(i), linucb.theta(v.state), rtol=1e-15)


def _reference_w(snap: Snapshot, x: np.ndarray, alpha: float, weight: np.ndarray,
                 x_var: np.ndarray, m: int) -> np.ndarray:
    """Float64 exhaustive scores of the first m products with a weight per product."""
    mean = snap.thetas[:m] @ x
    var = np.maximum(np.einsum("i,mij,j->m", x_var, snap.A_invs[:m], x_var), 0.0)
    return mean + alpha * np.sqrt(var) + weight[:m] * var


@pytest.mark.parametrize("seed", range(5))
def test_a_weight_per_product_ranks_as_float64(monkeypatch: pytest.MonkeyPatch, seed: int
                                               ) -> None:
    """``weight`` as one float64 per product (the decaying rule with a rate per category):
    the best k are the float64 exhaustive best k, on float32 rows and on float64 rows, with
    ``upto`` below the store and the weights longer than ``upto``."""
    rng = np.random.default_rng(200 + seed)
    params = _params(rng, 400)
    monkeypatch.setattr(snapshot_mod, "EXACT_STORE_ROWS", 0)
    fast = _snapshot(params)
    monkeypatch.setattr(snapshot_mod, "EXACT_STORE_ROWS", 10**9)
    exact = _snapshot(params)
    assert fast._rows.hot64 is None and exact._rows.hot64 is not None
    for _ in range(8):
        x = rng.uniform(0, 1, D)
        u = x / np.linalg.norm(x)
        cats = rng.integers(0, 6, 450)  # per-category rates, some categories at 0
        weight = np.where(cats == 0, 0.0, rng.uniform(0, 3, 6)[cats])
        for alpha, xv, upto in ((0.0, u, None), (1.0, x, None), (0.0, u, 350)):
            m = 400 if upto is None else upto
            ref = _reference_w(exact, x, alpha, weight, xv, m)
            for snap in (fast, exact):
                s, mean = snap.top_scores(x, K, alpha, weight, x_var=xv, upto=upto)
                assert s.shape == (m,)
                _check_top(s, ref, K)
                assert int(np.argmax(mean)) == int(np.argmax(exact.thetas[:m] @ x))
        # one weight for all as an array: the same numbers as the float
        w = np.full(400, 0.7)
        a = fast.top_scores(x, K, 0.0, w, x_var=u)[0]
        b = fast.top_scores(x, K, 0.0, 0.7, x_var=u)[0]
        top = linucb.top_k(b, K)
        assert (linucb.top_k(a, K) == top).all() and (a[top] == b[top]).all()
    with pytest.raises(ValueError):
        fast.top_scores(x, K, 0.0, np.ones(399), x_var=u)


@pytest.mark.parametrize("seed", range(4))
def test_near_ties_made_by_the_weights_rank_in_float64_order(float32_rows: None, seed: int
                                                              ) -> None:
    """Weights that bring 60 products' float64 scores within 1e-7 of each other at a scale
    of 1,000 (float32's error there is ~1e-4, so its order is a shuffle): the best 10 are
    float64's, in its order. Fails when a candidate's error leaves out its own weight's term
    (the float32 scores are then not re-scored)."""
    rng = np.random.default_rng(300 + seed)
    params = _params(rng, 300)
    snap = _snapshot(params)
    x = rng.uniform(0, 1, D)
    u = x / np.linalg.norm(x)
    mean = snap.thetas @ x
    var = np.einsum("i,mij,j->m", u, snap.A_invs, u)
    tied, target = 60, 1000.0
    order = rng.permutation(tied)
    weight = rng.uniform(0, 1, 300)  # the others: scores about 1
    weight[:tied] = (target + order * 1e-7 - mean[:tied]) / var[:tied]
    ref = _reference_w(snap, x, 0.0, weight, u, 300)
    assert linucb.top_k(ref, 10).tolist() == np.argsort(-order)[:10].tolist()  # float64 tells
    s32 = (snap._rows.hot[:, :D] @ x.astype(np.float32)).take(snap._slot).astype(np.float64)
    v32 = (snap._rows.hot[:, D:] @ snapshot_mod._pairs(u).astype(np.float32)).take(snap._slot)
    rough = s32 + weight * v32
    assert linucb.top_k(rough, 10).tolist() != linucb.top_k(ref, 10).tolist()  # float32 can't
    s, _ = snap.top_scores(x, 10, 0.0, weight, x_var=u)
    assert linucb.top_k(s, 10).tolist() == linucb.top_k(ref, 10).tolist()
    np.testing.assert_allclose(s[:tied], ref[:tied], rtol=1e-14)


def _stored_var(snap: Snapshot, xv: np.ndarray) -> np.ndarray:
    """x^T A^-1 x as the store's float64 rows compute it, for every product."""
    rows = snap._rows
    return snap._exact_terms(snap._slot, np.zeros(D), snapshot_mod._pairs(xv))[1] \
        if rows.hot64 is None else rows.hot64[snap._slot, D:] @ snapshot_mod._pairs(xv)


@pytest.mark.parametrize("seed", range(4))
def test_the_variance_bound_holds_for_every_x(seed: int) -> None:
    """The per-row bound top_scores prunes by: x^T A^-1 x (as float64 computes it from the
    upper triangle) <= rows.var_bound(x), and <= vmax |x|^2, for learned, isotropic (the
    prior: the bound is tight), indefinite and not-quite-symmetric A^-1, at random x, along
    and across the split direction and at each matrix's top eigenvector. Fails with the
    absolute value left out of the row sums, or with the cross term 2 |c| s r left out."""
    rng = np.random.default_rng(400 + seed)
    m = 60
    G = rng.normal(0, 0.5, (m, D, D))
    A_invs = np.linalg.inv(np.eye(D) + G @ G.transpose(0, 2, 1))  # learned-like
    A_invs[:10] = np.eye(D) * rng.uniform(0.1, 3.0, (10, 1, 1))  # isotropic (priors)
    S = rng.normal(0, 1, (10, D, D))
    A_invs[10:20] = S + S.transpose(0, 2, 1)  # indefinite
    A_invs[20:30, 0, 1] = np.nextafter(A_invs[20:30, 1, 0], 9.0)  # asymmetric in the last bit
    for i in range(40, 60):  # learned from non-negative contexts, as serving's are
        A_invs[i] = learned_state(rng, D, int(rng.integers(5, 80))).A_inv
    snap = Snapshot([f"p{i}" for i in range(m)], rng.normal(0, 0.3, (m, D)), A_invs,
                    np.ones(m, np.int64), np.zeros(m, np.int64))
    rows = snap._rows
    vmax = rows.vmax[snap._slot]
    sym = np.triu(A_invs) + np.swapaxes(np.triu(A_invs, 1), 1, 2)  # what scoring reads
    tops = np.linalg.eigh(sym)[1][:, :, -1]
    e = np.ones(D) / np.sqrt(D)
    across = rng.normal(0, 1, D)
    across -= (across @ e) * e
    xs = ([rng.normal(0, 1, D) for _ in range(30)] + [rng.uniform(0, 1, D) for _ in range(30)]
          + [e, 2.5 * e, -e, across, e + 1e-9 * across])
    for x in xs:
        v = _stored_var(snap, x)
        assert (v <= rows.var_bound(x)[snap._slot]).all()
        assert (v <= vmax * float(x @ x)).all()
    for i in range(m):  # the direction of the largest eigenvalue
        for x in (tops[i], tops[i] * 3.7, -tops[i]):
            assert _stored_var(snap, x)[i] <= rows.var_bound(x)[snap._slot[i]]
    prior = snap._slot[:10]  # isotropic: the bound is the variance, to its 1e-9 margin
    x = rng.uniform(0, 1, D)
    np.testing.assert_allclose(rows.var_bound(x)[prior], _stored_var(snap, x)[:10],
                               rtol=3e-9)


def _ranked_alike(s: np.ndarray, ref: np.ndarray, k: int) -> None:
    """``only_best``'s contract: the best k (in order, ties aside at 1e-12) and their scores
    are float64's; every other value is at least its own float64 score (an upper bound) and
    below the k-th best."""
    scale = float(np.abs(ref).max())
    got, want = linucb.top_k(s, k), linucb.top_k(ref, k)
    for a, b in zip(got.tolist(), want.tolist(), strict=True):
        assert a == b or abs(ref[a] - ref[b]) <= 1e-12 * scale, (got, want)
    np.testing.assert_allclose(s[got], ref[got], rtol=1e-12, atol=1e-12 * scale)
    rest = np.setdiff1d(np.arange(s.size), got)
    kth = ref[want[-1]]
    assert (s[rest] >= ref[rest] - 1e-12 * scale).all()
    assert (s[rest] <= kth + 1e-12 * scale).all()


def _learned_params(rng: np.random.Generator, m: int, spread: float) -> dict[str, Params]:
    """m products, thetas spread this much (the means' spread against the exploration
    term decides how much the bound prunes)."""
    out = {}
    for i in range(m):
        s = learned_state(rng, D, int(rng.integers(0, 60)))
        t = rng.normal(0, spread, D)
        b = np.linalg.solve(s.A_inv, t)
        out[f"p{i:04d}"] = Params(linucb.ArmState(s.A_inv, b, s.n, version=s.n + 1), 1)
    return out


def _spy_pruning(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Record, per call of ``Snapshot._pruned``, whether the bound pruned (the A^-1 rows
    unread)."""
    calls: list[bool] = []
    pruned = Snapshot._pruned

    def spy(self: Snapshot, *a: object) -> object:
        out = pruned(self, *a)  # type: ignore[arg-type]
        calls.append(out is not None)
        return out
    monkeypatch.setattr(Snapshot, "_pruned", spy)
    return calls


@pytest.mark.parametrize("seed", range(5))
def test_only_best_ranks_as_float64(float32_rows: None, monkeypatch: pytest.MonkeyPatch,
                                    seed: int) -> None:
    """A plain request's ranking (``only_best``) on float32 rows: the UCB rule (alpha), the
    decaying rule (one weight, a weight per product) with a popularity term, ``upto``
    below the store; the bound must prune here (the A^-1 rows unread) and the answer is
    float64's."""
    rng = np.random.default_rng(500 + seed)
    snap = _snapshot(_learned_params(rng, 400, 1.0))
    calls = _spy_pruning(monkeypatch)
    for _ in range(8):
        x = rng.uniform(0, 1, D)
        u = x / np.linalg.norm(x)
        pop = np.where(rng.uniform(size=400) < 0.1, rng.uniform(0, 0.5, 400), 0.0)
        w = rng.uniform(0, 0.05, 420)
        for alpha, weight, xv, plus, upto in ((0.05, 0.0, x, None, None),
                                              (0.0, 0.03, u, pop, None),
                                              (0.0, w, u, None, None),
                                              (0.02, w, u, pop[:350], 350)):
            m = 400 if upto is None else upto
            ref = _reference_w(snap, x, alpha, np.broadcast_to(weight, (420,)), xv, m)
            if plus is not None:
                ref = ref + plus
            s, mean = snap.top_scores(x, K, alpha, weight, x_var=xv, plus=plus, upto=upto,
                                      only_best=True)
            _ranked_alike(s, ref, K)
            exact_mean = snap.thetas[:m] @ x
            assert int(np.argmax(mean)) == int(np.argmax(exact_mean))
            assert mean.max() == pytest.approx(exact_mean.max(), rel=1e-12)
            full = snap.top_scores(x, K, alpha, weight, x_var=xv, plus=plus, upto=upto)[0]
            top = linucb.top_k(full, K)
            assert (linucb.top_k(s, K) == top).all() and (s[top] == full[top]).all()
    assert calls and all(calls)


@pytest.mark.parametrize("seed", range(4))
def test_only_best_prunes_under_negative_weights(float32_rows: None,
                                                 monkeypatch: pytest.MonkeyPatch, seed: int
                                                 ) -> None:
    """``category_rate`` gives a category a negative weight when its rate ``q_c(x)`` is
    negative (its pooled click sums point away from x: the bench's synthetic parameters do
    it for most contexts): a product's variance then only lowers its score, so the mean
    alone bounds it and the bound still prunes. Weights of both signs per product, and one
    negative weight; with and without alpha and a popularity term: float64's best k, and
    the A^-1 rows unread."""
    rng = np.random.default_rng(900 + seed)
    snap = _snapshot(_learned_params(rng, 400, 1.0))
    calls = _spy_pruning(monkeypatch)
    for _ in range(8):
        x = rng.uniform(0, 1, D)
        u = x / np.linalg.norm(x)
        pop = np.where(rng.uniform(size=400) < 0.1, rng.uniform(0, 0.5, 400), 0.0)
        mixed = rng.uniform(-0.05, 0.05, 400)
        mixed[rng.uniform(size=400) < 0.1] = 0.0  # a weight of 0 takes nothing either way
        for alpha, weight, plus in ((0.0, mixed, None), (0.02, mixed, pop),
                                    (0.0, -0.03, pop), (0.05, -0.03, None)):
            ref = _reference_w(snap, x, alpha, np.broadcast_to(weight, (400,)), u, 400)
            if plus is not None:
                ref = ref + plus
            s, _ = snap.top_scores(x, K, alpha, weight, x_var=u, plus=plus, only_best=True)
            _ranked_alike(s, ref, K)
            full = snap.top_scores(x, K, alpha, weight, x_var=u, plus=plus)[0]
            top = linucb.top_k(full, K)
            assert (linucb.top_k(s, K) == top).all() and (s[top] == full[top]).all()
    assert calls and all(calls)


@pytest.mark.parametrize("seed", range(4))
def test_weights_per_category_rank_as_the_per_product_array(float32_rows: None,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          seed: int) -> None:
    """A category rule's weights given per category (GroupWeights: the plain request's
    path, the bound taken from the largest weight and only the candidates' gathered) rank
    exactly as the same weights given as the (m,) array: the same best k, bit-equal scores
    there, float64's order. Categories of both signs, products with no category and beyond
    the codes, ``upto`` below the store; the bound prunes for small weights, and where it
    prunes too little (large weights) the array path is taken and agrees too."""
    rng = np.random.default_rng(1300 + seed)
    snap = _snapshot(_learned_params(rng, 400, 1.0))
    codes = rng.integers(-1, 5, 380)  # products 380..399 beyond the codes: no category
    calls = _spy_pruning(monkeypatch)
    for scale, prunes in ((0.05, True), (50.0, False)):
        for _ in range(6):
            x = rng.uniform(0, 1, D)
            u = x / np.linalg.norm(x)
            values = rng.uniform(-0.5, 1.0, 6) * scale  # 5 categories and the last: none
            pop = np.where(rng.uniform(size=400) < 0.1, rng.uniform(0, 0.5, 400), 0.0)
            for alpha, plus, upto in ((0.0, None, None), (0.02, pop, None),
                                      (0.0, pop[:350], 350)):
                m = 400 if upto is None else upto
                every = np.concatenate([codes, np.full(20, -1)])[:m]
                group = snapshot_mod.GroupWeights(values, codes, np.unique(every), m)
                array = group.full()
                assert (array == values.take(every)).all()
                calls.clear()
                s, mean = snap.top_scores(x, K, alpha, group, x_var=u, plus=plus, upto=upto,
                                          only_best=True)
                assert calls == [prunes]
                a, mean_a = snap.top_scores(x, K, alpha, array, x_var=u, plus=plus,
                                            upto=upto, only_best=True)
                top = linucb.top_k(a, K)
                assert (linucb.top_k(s, K) == top).all() and (s[top] == a[top]).all()
                assert mean.max() == mean_a.max()
                ref = _reference_w(snap, x, alpha, np.concatenate([array, np.zeros(400)]),
                                   u, m)
                if plus is not None:
                    ref = ref + plus
                # pruned: every other value an upper bound below the k-th; else float32's
                (_ranked_alike if prunes else _check_top)(s, ref, K)


@pytest.mark.parametrize("seed", range(3))
def test_only_best_near_ties_and_a_big_exploration_term(float32_rows: None, seed: int
                                                         ) -> None:
    """Near-ties made by the exploration term (60 products 1e-9 apart at a scale of 10),
    and a store where the bound prunes nothing (alpha large, every product at the prior
    but a few): the best k in float64's order either way."""
    rng = np.random.default_rng(600 + seed)
    params = _learned_params(rng, 300, 0.3)
    snap = _snapshot(params)
    x = rng.uniform(0, 1, D)
    u = x / np.linalg.norm(x)
    mean = snap.thetas @ x
    var = np.einsum("i,mij,j->m", u, snap.A_invs, u)
    tied = 60
    order = rng.permutation(tied)
    weight = rng.uniform(0, 0.01, 300)
    weight[:tied] = (10.0 + order * 1e-9 - mean[:tied]) / var[:tied]
    ref = _reference_w(snap, x, 0.0, weight, u, 300)
    s, _ = snap.top_scores(x, 10, 0.0, weight, x_var=u, only_best=True)
    assert linucb.top_k(s, 10).tolist() == linucb.top_k(ref, 10).tolist() \
        == np.argsort(-order)[:10].tolist()
    prior = Snapshot.prior(list(params), D).with_params(
        dict(list(params.items())[:5]))[0]
    for alpha in (0.0, 5.0):
        ref = _reference(prior, x, alpha, 0.0, x)[0]
        s, _ = prior.top_scores(x, K, alpha, only_best=True)
        _check_top(s, ref, K)
