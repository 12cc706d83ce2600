"""The reward join's rules, without Flink (the integration test runs them through the job)."""

from __future__ import annotations

import pytest

from flink_job.join import Clk, Imp, RewardJoin

W = 1000
X = (1.0, 2.0)


@pytest.fixture
def join() -> RewardJoin:
    return RewardJoin(window_ms=W, retain_ms=10 * W)


def _observed(*products: str) -> list:
    return [(p, X, 0.0, True) for p in products]


def test_shown_products_are_learned_at_once_and_a_click_adds_its_reward(join: RewardJoin) -> None:
    st, out = join.on_impression(None, Imp(0, X, ("a", "b", "c")), "m")
    assert out.timers == [W]
    assert out.rewards == _observed("a", "b", "c")  # default reward 0, no wait for the window
    st, out = join.on_click(st, Clk(W, "b"), "m")  # the window's last millisecond counts
    assert out.rewards == [("b", X, 1.0, False)]
    st, out = join.on_timer(st, W)
    assert out.rewards == []  # closing learns nothing more: the rewards are final
    assert out.timers == [W + 10 * W]
    st, out = join.on_timer(st, W + 10 * W)
    assert st is None


def test_no_click_leaves_reward_zero_for_every_shown_product(join: RewardJoin) -> None:
    st, out = join.on_impression(None, Imp(5, X, ("a", "b")), "m")
    assert out.rewards == _observed("a", "b")
    st, out = join.on_timer(st, 5 + W)
    assert out.rewards == [] and st == {"s": "closed", "t": 5}


@pytest.mark.parametrize(("click_ts", "close_first", "reason", "field"), [
    (W + 1, False, "late_click", "ts_ms"),  # late by its own timestamp
    (500, True, "late_click", "request_id"),  # arrived after the window closed
])
def test_late_clicks_are_dead_lettered_not_learned(join: RewardJoin, click_ts: int,
                                                   close_first: bool, reason: str,
                                                   field: str) -> None:
    st, out = join.on_impression(None, Imp(0, X, ("a",)), "m")
    assert out.rewards == _observed("a")
    if close_first:
        st, out = join.on_timer(st, W)
        assert out.rewards == []
    st, out = join.on_click(st, Clk(click_ts, "a"), "late")
    assert out.rewards == []
    assert [(d[0], d[1], d[3]) for d in out.dead] == [(reason, field, "late")]
    if not close_first:
        _, out = join.on_timer(st, W)
        assert out.rewards == []


def test_click_before_its_impression_waits_then_counts(join: RewardJoin) -> None:
    st, out = join.on_click(None, Clk(10, "b"), "c1")
    assert out.rewards == [] and out.timers == [10 + W]
    st, out = join.on_impression(st, Imp(0, X, ("a", "b")), "i1")
    assert out.rewards == [*_observed("a", "b"), ("b", X, 1.0, False)]
    st, out = join.on_timer(st, W)
    assert out.rewards == []
    st, out = join.on_timer(st, 10 + W)  # the click's stale timer does nothing
    assert st is not None and out.rewards == [] and out.dead == []


def test_orphans_duplicates_and_unshown_products(join: RewardJoin) -> None:
    st, out = join.on_click(None, Clk(0, "a"), "orphan")
    st, out = join.on_timer(st, W)
    assert st is None and [d[0] for d in out.dead] == ["orphan_click"]

    st, _ = join.on_impression(None, Imp(0, X, ("a",)), "i1")
    st, out = join.on_impression(st, Imp(1, X, ("a",)), "i2")
    assert [(d[0], d[3]) for d in out.dead] == [("duplicate_impression", "i2")]
    st, out = join.on_click(st, Clk(1, "z"), "c-unshown")
    assert [(d[0], d[1]) for d in out.dead] == [("orphan_click", "product_id")]
    st, out = join.on_click(st, Clk(2, "a"), "c1")
    st, out = join.on_click(st, Clk(3, "a"), "c2")
    assert out.rewards == [] and [d[2] for d in out.dead] == ["duplicate click"]
