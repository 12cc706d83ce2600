"""The category prior (contract/prior.py) against its batch formula: the pool kept from the
learner's deltas equals the category's pooled sums, and a new product's start equals ridge on
the category's observations each weighted s = min(1, m / N)."""

from __future__ import annotations

import numpy as np
import pytest

from contract import linucb
from contract.config import ModelSettings, SettingsError
from contract.prior import CategoryPool, PriorError, informed_state, pool_delta

D = 6
L2 = 1.5


def _learn_category(rng: np.random.Generator, m: float, products: int = 5
                    ) -> tuple[CategoryPool, np.ndarray, np.ndarray]:
    """Products of one category learned in random micro-batches, the later ones starting from
    the pool so far (as the job starts a new product); returns the pool and all raw rows."""
    pool = CategoryPool.empty(D)
    X_all, r_all = [], []
    for _ in range(products):
        st = informed_state(pool, D, L2, m)
        n = int(rng.integers(3, 40))
        X = rng.random((n, D))
        r = (rng.random(n) < 0.3).astype(float)
        for chunk in np.array_split(np.arange(n), int(rng.integers(1, 5))):
            new = linucb.learn_batch(st, X[chunk], r[chunk], np.ones(len(chunk), bool))
            pool = pool.plus(*pool_delta(st, new))
            st = new
        X_all.append(X)
        r_all.append(r)
    return pool, np.vstack(X_all), np.concatenate(r_all)


@pytest.mark.parametrize("seed", range(5))
def test_the_pool_kept_from_deltas_equals_the_categorys_pooled_sums(seed: int) -> None:
    pool, X, r = _learn_category(np.random.default_rng(seed), m=8.0)
    assert pool.n == X.shape[0]
    np.testing.assert_allclose(pool.S, X.T @ X, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(pool.t, X.T @ r, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("m", [1.0, 8.0, 1e6])
def test_a_new_products_start_is_weighted_ridge_on_the_categorys_observations(
        seed: int, m: float) -> None:
    pool, X, r = _learn_category(np.random.default_rng(seed), m=m)
    s = min(1.0, m / X.shape[0])
    A = L2 * np.eye(D) + s * X.T @ X  # batch: every row weighted s
    start = informed_state(pool, D, L2, m)
    np.testing.assert_allclose(start.A_inv, np.linalg.inv(A), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(linucb.theta(start), np.linalg.solve(A, s * X.T @ r),
                               rtol=1e-9, atol=1e-12)
    assert start.n == 0 and start.version == 0


def test_a_downdate_leaves_the_pool_as_it_leaves_the_product() -> None:
    rng = np.random.default_rng(3)
    X, r = rng.random((10, D)), (rng.random(10) < 0.5).astype(float)
    st0 = linucb.init_state(D, L2)
    st1 = linucb.learn_batch(st0, X, r, np.ones(10, bool))
    pool = CategoryPool.empty(D).plus(*pool_delta(st0, st1))
    # unlearn rows 0 and 1 (weights -1, rewards negated: docs/PRIVACY.md)
    st2 = linucb.learn_batch(st1, X[:2], -r[:2], np.ones(2, bool), weights=-np.ones(2))
    pool = pool.plus(*pool_delta(st1, st2))
    assert pool.n == 8
    np.testing.assert_allclose(pool.S, X[2:].T @ X[2:], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(pool.t, X[2:].T @ r[2:], rtol=1e-9, atol=1e-9)


def test_no_pool_no_data_or_m_zero_is_the_identity_prior() -> None:
    rng = np.random.default_rng(0)
    pool, _, _ = _learn_category(rng, m=5.0)
    identity = linucb.init_state(D, L2)
    for start in (informed_state(None, D, L2, 5.0), informed_state(pool, D, L2, 0.0),
                  informed_state(CategoryPool.empty(D), D, L2, 5.0)):
        np.testing.assert_array_equal(start.A_inv, identity.A_inv)
        np.testing.assert_array_equal(start.b, identity.b)
    assert not np.array_equal(informed_state(pool, D, L2, 5.0).b, identity.b)


@pytest.mark.parametrize("seed", range(3))
def test_a_pool_younger_than_min_obs_gives_the_identity(seed: int) -> None:
    pool, _, _ = _learn_category(np.random.default_rng(seed), m=4.0)
    identity = linucb.init_state(D, L2)
    young = informed_state(pool, D, L2, 4.0, min_obs=pool.n + 1)
    np.testing.assert_array_equal(young.A_inv, identity.A_inv)
    np.testing.assert_array_equal(young.b, identity.b)
    grown = informed_state(pool, D, L2, 4.0, min_obs=pool.n)
    np.testing.assert_allclose(grown.A_inv, informed_state(pool, D, L2, 4.0).A_inv)
    assert not np.array_equal(grown.A_inv, identity.A_inv)


def test_the_pool_round_trips_through_json_exactly() -> None:
    pool, _, _ = _learn_category(np.random.default_rng(1), m=5.0)
    back = CategoryPool.from_json(pool.to_json(), dim=D)
    np.testing.assert_array_equal(back.S, pool.S)
    np.testing.assert_array_equal(back.t, pool.t)
    assert back.n == pool.n


@pytest.mark.parametrize("text", ["", "[]", '{"S": [[1]], "t": [1, 2], "n": 1}',
                                  '{"S": [[NaN]], "t": [1], "n": 1}', '{"S": [[1]], "t": [1]}',
                                  '{"S": [[1]], "t": [1], "n": true}'])
def test_a_bad_pool_is_refused_with_a_reason(text: str) -> None:
    with pytest.raises(PriorError):
        CategoryPool.from_json(text)


def test_pool_of_another_dimension_and_bad_m_are_refused() -> None:
    pool = CategoryPool(np.eye(3), np.ones(3), 4)
    with pytest.raises(PriorError, match="d=3"):
        CategoryPool.from_json(pool.to_json(), dim=D)
    with pytest.raises(PriorError, match="d=3"):
        informed_state(pool, D, L2, 5.0)
    with pytest.raises(PriorError, match="m must be"):
        informed_state(pool, 3, L2, -1.0)


def test_settings_refuse_an_unknown_prior_and_the_category_prior_with_forgetting() -> None:
    assert ModelSettings().prior == "identity"
    with pytest.raises(SettingsError, match="RTREC_PRIOR"):
        ModelSettings(prior="hybrid")
    with pytest.raises(SettingsError, match="RTREC_HALF_LIFE"):
        ModelSettings(prior="category", half_life=100.0)
    with pytest.raises(SettingsError, match="RTREC_PRIOR_PSEUDO_OBS"):
        ModelSettings(prior_pseudo_obs=-1.0)
    with pytest.raises(SettingsError, match="RTREC_PRIOR_MIN_OBS"):
        ModelSettings(prior_min_obs=-1)
