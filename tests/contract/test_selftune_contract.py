"""The live self-tuning loop's contract pieces (contract/exploration.py): the candidates'
setting, the mixture's logging probabilities against a hand computation and against the
frequencies of drawn lists, the matched-count guardrail, and the controller's state across a
round trip through JSON (what the job checkpoints and publishes)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from contract.exploration import (
    Estimate,
    ExplorationError,
    SelfTuner,
    mixture_probabilities,
    parse_candidates,
    tuner_from_state,
    tuner_state,
)


def test_candidates_parse_and_refuse() -> None:
    got = parse_candidates(" calibrated , alpha=0.30, alpha=2")
    assert [(c.name, c.rule, c.alpha) for c in got] == [
        ("calibrated", "calibrated", None), ("alpha_0.3", "fixed", 0.3), ("alpha_2", "fixed", 2.0)]
    assert parse_candidates("") == () == parse_candidates(" ")
    for bad in ("calibrated", "alpha=", "alpha=nan", "alpha=inf", "alpha=-0.1", "fixed",
                "alpha=1,alpha=1.0", ",".join(f"alpha={i}" for i in range(17))):
        with pytest.raises(ExplorationError):
            parse_candidates(bad)


def test_mixture_probabilities_by_hand() -> None:
    """Three candidates at 0.8 / 0.1 / 0.1: a and b agree on the first two products, c only
    on the first. Showing a's list: slot 1 is everyone's (1.0), the first two a's and b's
    (0.9), the whole list a's alone (0.8); p3 at slot 3 is a's and c's (0.9)."""
    lists = {"a": ["p1", "p2", "p3"], "b": ["p1", "p2", "p4"], "c": ["p1", "p5", "p3"]}
    shares = {"a": 0.8, "b": 0.1, "c": 0.1}
    prefix, slots = mixture_probabilities(lists, shares, lists["a"])
    assert prefix == pytest.approx((1.0, 0.9, 0.8))
    assert slots == pytest.approx((1.0, 0.9, 0.9))
    prefix, slots = mixture_probabilities(lists, shares, lists["c"])
    assert prefix == pytest.approx((1.0, 0.1, 0.1)) and slots == pytest.approx((1.0, 0.1, 0.9))
    # the shares summing to 1 in floating point never give a probability above 1
    p, _ = mixture_probabilities({n: ["x"] for n in "abc"}, {"a": 0.7, "b": 0.2, "c": 0.1},
                                 ["x"])
    assert p == (1.0,)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mixture_probabilities_are_the_frequencies_of_the_drawn_lists(seed: int) -> None:
    """Drawing a candidate by the shares and showing its list: each distinct list's frequency
    over 20,000 draws is within 5 standard errors of its logged probability (the prefix of
    full length), and so is each first product's."""
    rng = np.random.default_rng(seed)
    pool = [f"p{i}" for i in range(6)]
    names = [f"c{i}" for i in range(4)]
    lists = {n: [str(p) for p in rng.choice(pool[:3], 3, replace=False)] for n in names}
    raw = rng.uniform(0.05, 1, len(names))
    shares = dict(zip(names, (raw / raw.sum()).tolist(), strict=True))
    n = 20_000
    drawn = rng.choice(len(names), size=n, p=list(shares.values()))
    seen: dict[tuple[str, ...], int] = {}
    first: dict[str, int] = {}
    for i in drawn.tolist():
        lst = tuple(lists[names[i]])
        seen[lst] = seen.get(lst, 0) + 1
        first[lst[0]] = first.get(lst[0], 0) + 1
    for lst, count in seen.items():
        prefix, _ = mixture_probabilities(lists, shares, lst)
        for p, c in ((prefix[-1], count), (prefix[0], first[lst[0]])):
            assert abs(c / n - p) < 5 * (p * (1 - p) / n) ** 0.5 + 1e-12, (lst, c / n, p)


def _est(value: float, half: float, matched: int) -> Estimate:
    return Estimate(value, max(0.0, value - half), min(1.0, value + half), matched, matched)


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_no_switch_rests_on_fewer_matched_visits_than_the_minimum(seed: int) -> None:
    """A challenger whose few matches were all clicks has the interval [1, 1] (the delta
    method's, degenerate): without the guardrail it wins at once, with ``min_matched`` it waits
    until both sides have that many matched visits, then switches."""
    rng = np.random.default_rng(seed)
    few = int(rng.integers(3, 10))
    live = _est(0.3, 0.05, 500)
    lucky = Estimate(1.0, 1.0, 1.0, few, few)
    eager = SelfTuner(["a", "b"], "a")
    assert eager.observe(1.0, {"a": live, "b": lucky}) == "b"
    careful = SelfTuner(["a", "b"], "a", min_matched=200)
    assert careful.observe(1.0, {"a": live, "b": lucky}) == "a"
    assert careful.observe(2.0, {"a": _est(0.3, 0.05, 150), "b": _est(0.6, 0.05, 900)}) == "a"
    assert careful.observe(3.0, {"a": live, "b": _est(0.6, 0.05, 200)}) == "b"
    assert careful.switch_count == 1


def test_the_controllers_state_round_trips_through_json() -> None:
    t = SelfTuner(["a", "b", "c"], "a", 0.2, 0.01, 60.0, min_matched=5)
    t.observe(100.0, {"a": _est(0.2, 0.02, 50), "b": _est(0.4, 0.02, 50)})
    assert t.live == "b"
    state = json.loads(json.dumps(tuner_state(t)))
    assert state["generation"] == 1 and state["shares"] == {"a": 0.1, "b": 0.8, "c": 0.1}
    again = tuner_from_state(state, ["a", "b", "c"], "a", 0.2, 0.01, 60.0, 5)
    assert tuner_state(again) == tuner_state(t)
    # within the interval after the restore: no switch; after it, the next one
    back = {"b": _est(0.2, 0.02, 50), "c": _est(0.5, 0.02, 50)}
    assert again.observe(150.0, back) == "b"
    assert again.observe(161.0, back) == "c"
    # a state whose live candidate is no longer configured: a fresh start on the default
    fresh = tuner_from_state(state, ["a", "c"], "a", 0.2, 0.01, 60.0)
    assert fresh.live == "a" and fresh.switch_count == 0
