"""Weighted observations, exact downdates, the discount and the feedback rules against their
batch formulas (contract/feedback.py, contract/linucb.py; docs/LEARNING.md)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from contract import feedback, linucb
from contract.config import Settings, SettingsError

SEEDS = (1, 2, 3, 4, 5)
D = 6


def _items(rng: np.random.Generator, k: int, negative: bool = False):
    X = rng.uniform(0, 1, (k, D))
    w = rng.uniform(0.05, 1.0, k)
    if negative:
        w[rng.uniform(size=k) < 0.2] = 0.0
    r = (rng.uniform(size=k) < 0.3) * rng.choice([1.0, 2.0, 3.5], k)
    return X, w, r


def _check(state: linucb.ArmState, A_inv: np.ndarray, b: np.ndarray, n: int) -> None:
    np.testing.assert_allclose(state.A_inv, A_inv, rtol=0, atol=1e-9)
    np.testing.assert_allclose(state.b, b, rtol=0, atol=1e-9)
    assert state.n == n


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("gamma", [1.0, linucb.discount_factor(7.0)])
def test_weighted_discounted_batches_equal_batch_ridge(seed: int, gamma: float) -> None:
    """Weights (some 0) and the discount, learned in uneven micro-batches through
    learn_checked, equal the batch formula computed by a direct inverse."""
    rng = np.random.default_rng(seed)
    X, w, r = _items(rng, 60, negative=True)
    st = linucb.init_state(D, 2.0)
    bounds = sorted(rng.choice(np.arange(1, 60), 7, replace=False))
    for chunk in np.split(np.arange(60), bounds):
        st, refused = linucb.learn_checked(st, X[chunk], r[chunk], np.ones(len(chunk), bool),
                                           2.0, weights=w[chunk], gamma=gamma)
        assert refused == []
    _check(st, *feedback.batch_state(D, 2.0, list(zip(X, w, r, strict=True)), gamma))
    assert st.version == 60


@pytest.mark.parametrize("seed", SEEDS)
def test_downdates_remove_exactly(seed: int) -> None:
    """Learn 40 observations, then remove 15 of them (one call each, and a batch of the rest
    mixed with new ones): the state is batch ridge of what remains."""
    rng = np.random.default_rng(seed)
    X, _, r = _items(rng, 50)
    st = linucb.update_batch(linucb.init_state(D), X[:40], r[:40])
    gone = rng.choice(40, 15, replace=False)
    for i in gone[:8]:
        st = linucb.downdate(st, X[i], r[i])
    rest = gone[8:]
    Xb = np.vstack([X[rest], X[40:]])
    wb = np.concatenate([-np.ones(len(rest)), np.ones(10)])
    rb = np.concatenate([-r[rest], r[40:]])
    st, refused = linucb.learn_checked(st, Xb, rb, np.ones(len(wb), bool), 1.0, weights=wb)
    assert refused == []
    keep = [i for i in range(50) if i not in set(gone)]
    _check(st, *feedback.batch_state(D, 1.0, [(X[i], 1.0, r[i]) for i in keep]))
    assert st.n == 35


def test_downdate_that_would_break_the_matrix_is_refused() -> None:
    """Removing what was never learned (x.x > l2 from the prior): 1 - x.A^-1.x < 0, so A^-1
    would not be positive definite: refused, state unchanged; a good item beside it is
    learned."""
    st = linucb.update(linucb.init_state(2), np.array([0.1, 0.0]), 0.0)
    X = np.array([[0.0, 3.0], [1.0, 1.0]])
    new, refused = linucb.learn_checked(st, X, np.zeros(2), np.ones(2, bool), 1.0,
                                        weights=np.array([-1.0, 1.0]))
    assert [i for i, _ in refused] == [0] and "positive definite" in refused[0][1]
    expected = linucb.update(st, X[1], 0.0)
    np.testing.assert_allclose(new.A_inv, expected.A_inv, atol=1e-15)
    assert new.n == 2
    with pytest.raises(linucb.NotLearnableError):
        linucb.downdate(st, X[0], 0.0)
    with pytest.raises(linucb.StateError):  # n would be < 0
        linucb.downdate(linucb.init_state(2), np.array([0.1, 0.0]), 0.0)


@pytest.mark.parametrize("seed", SEEDS)
def test_weight_one_is_the_unweighted_path(seed: int) -> None:
    """learn_checked with weights of 1 and gamma 1 gives what it gave before (1e-12)."""
    rng = np.random.default_rng(seed)
    X, _, r = _items(rng, 30)
    obs = rng.uniform(size=30) < 0.7
    a, _ = linucb.learn_checked(linucb.init_state(D), X, r, obs, 1.0)
    b, _ = linucb.learn_checked(linucb.init_state(D), X, r, obs, 1.0, weights=np.ones(30))
    np.testing.assert_allclose(a.A_inv, b.A_inv, rtol=0, atol=1e-12)
    np.testing.assert_allclose(a.b, b.b, rtol=0, atol=1e-12)
    assert (a.n, a.version) == (b.n, b.version)


def test_discount_factor_halves_in_half_life() -> None:
    g = linucb.discount_factor(10.0)
    assert g ** 10 == pytest.approx(0.5, rel=1e-12)
    assert linucb.discount_factor(0) == 1.0
    with pytest.raises(linucb.StateError):
        linucb.discount_factor(-1.0)


def test_discount_forgets_old_rewards() -> None:
    """A product clicked often, then never: with a half-life of 20 observations its estimate
    falls towards 0 while the undiscounted one stays near the old rate."""
    x = np.array([1.0])
    g = linucb.discount_factor(20.0)
    disc = stat = linucb.init_state(1)
    for t in range(400):
        r = 1.0 if t < 200 else 0.0
        disc = linucb.learn_batch(disc, x[None], np.array([r]), np.array([True]), gamma=g)
        stat = linucb.update(stat, x, r)
    assert linucb.theta(disc)[0] < 0.01 < 0.45 < linucb.theta(stat)[0]


@pytest.mark.parametrize("seed", SEEDS)
def test_weighted_learning_with_corrections_in_any_order(seed: int) -> None:
    """Without a discount, observations (weights) and reward corrections (observe False) in a
    shuffled order give the batch formula of the pairs (order-free)."""
    rng = np.random.default_rng(seed)
    X, w, r = _items(rng, 40)
    Xi = np.vstack([X, X])
    ri = np.concatenate([np.zeros(40), r])
    oi = np.concatenate([np.ones(40, bool), np.zeros(40, bool)])
    wi = np.concatenate([w, np.zeros(40)])
    perm = rng.permutation(80)
    st = linucb.learn_batch(linucb.init_state(D), Xi[perm], ri[perm], oi[perm], wi[perm])
    _check(st, *feedback.batch_state(D, 1.0, list(zip(X, w, r, strict=True))))


# --- the rules ---------------------------------------------------------------------------------

SHOWN = ["a", "b", "c", "d", "e"]


def test_all_rule() -> None:
    got = feedback.items("all", SHOWN, [("c", 1.0)])
    assert got == [(p, 1.0, 1.0 if p == "c" else 0.0) for p in SHOWN]


@pytest.mark.parametrize(("clicks", "seen"), [([], 5), ([("a", 1.0)], 1), ([("c", 1.0)], 3),
                                               ([("b", 1.0), ("d", 1.0)], 4)])
def test_cascade_rule(clicks: list[tuple[str, float]], seen: int) -> None:
    """Seen down to the last clicked slot (the first, with one click); all without a click."""
    got = feedback.items("cascade", SHOWN, clicks)
    clicked = {p for p, _ in clicks}
    assert got == [(p, 1.0, 1.0 if p in clicked else 0.0) for p in SHOWN[:seen]]


def test_position_rule_and_capped_reward() -> None:
    exam = feedback.parse_examination("1,0.5,0.25")
    got = feedback.items("position", SHOWN, [("b", 1.0), ("b", 2.0), ("e", 0.5)], cap=2.5,
                         examination=exam)
    assert got == [("a", 1.0, 0.0), ("b", 0.5, 2.5), ("c", 0.25, 0.0), ("d", 0.25, 0.0),
                   ("e", 0.25, 0.5)]


@pytest.mark.parametrize("text", ["", "1,x", "1,1.5", "-0.1", "nan"])
def test_bad_examination_refused(text: str) -> None:
    with pytest.raises(feedback.FeedbackError, match="examination"):
        feedback.parse_examination(text)


@pytest.mark.parametrize(("values", "cap", "match"), [
    ({"click": -1.0}, 1.0, "'click' must be finite and >= 0"),
    ({"purchase": float("nan")}, 1.0, "'purchase'"),
    ({"click": 1.0}, 0.0, "cap"),
    ({"refund": 1.0}, 1.0, "'refund' is not one of"),
])
def test_bad_reward_values_refused(values: dict[str, float], cap: float, match: str) -> None:
    with pytest.raises(feedback.FeedbackError, match=match):
        feedback.check_reward_values(values, cap)


@pytest.mark.parametrize(("env", "name"), [
    ({"RTREC_REWARD_PURCHASE": "-2"}, "RTREC_REWARD_PURCHASE"),
    ({"RTREC_REWARD_ADD_TO_CART": "nan"}, "RTREC_REWARD_ADD_TO_CART"),
    ({"RTREC_REWARD_CLICK": "inf"}, "RTREC_REWARD_CLICK"),
    ({"RTREC_REWARD_CAP": "0"}, "RTREC_REWARD_CAP"),
    ({"RTREC_FEEDBACK": "everything"}, "RTREC_FEEDBACK"),
    ({"RTREC_EXAMINATION": "1,0.5,2"}, "RTREC_EXAMINATION"),
    ({"RTREC_HALF_LIFE": "-5"}, "RTREC_HALF_LIFE"),
    ({"RTREC_MAX_LATENESS_S": "-1"}, "RTREC_MAX_LATENESS_S"),
])
def test_settings_refuse_bad_values_naming_them(env: dict[str, str], name: str) -> None:
    """Reward values and the feedback settings come from configuration; a bad one stops the
    start with a message that names its variable."""
    with pytest.raises(SettingsError, match=f"^{name}"):
        Settings.from_env(env)


def test_settings_reward_values_come_from_configuration() -> None:
    s = Settings.from_env({"RTREC_REWARD_PURCHASE": "5", "RTREC_REWARD_CAP": "6",
                           "RTREC_FEEDBACK": "position", "RTREC_EXAMINATION": "1,0.5"})
    assert s.model.reward_values == {"click": 1.0, "add_to_cart": 1.0, "purchase": 5.0}
    assert (s.model.reward_cap, s.model.feedback, s.model.examination_probs) == \
        (6.0, "position", (1.0, 0.5))


def test_a_click_event_carries_its_kind() -> None:
    """Absent means click (the JSON of a click is unchanged); the other kinds travel in the
    event and the join line's fifth field; an unknown kind is refused (bad_value)."""
    from contract.events import Click, EventError, parse_event
    from flink_job.records import join_line

    base = {"v": 1, "type": "click", "request_id": "r", "product_id": "p", "ts_ms": 5}
    assert parse_event(json.dumps(base), 2).kind == "click"
    assert b"kind" not in Click("r", "p", 5).to_json()
    bought = parse_event(json.dumps({**base, "kind": "purchase"}), 2)
    assert bought.kind == "purchase" and json.loads(bought.to_json())["kind"] == "purchase"
    assert join_line(bought, 5, "src").split("\t")[4] == "purchase"
    assert join_line(Click("r", "p", 5), 5, "src").split("\t")[4] == ""
    for kind, reason in (("refund", "bad_value"), (3, "wrong_type"), (None, "wrong_type")):
        with pytest.raises(EventError) as info:
            parse_event(json.dumps({**base, "kind": kind}), 2)
        assert (info.value.reason, info.value.field) == (reason, "kind")
