"""What an impression teaches: the feedback rules and the batch formulas they must equal.

An impression shows products in slots 0..k-1 for one context x; reward events (a click, an
add-to-cart, a purchase: :data:`REWARD_KINDS`) may follow on some of them. A feedback rule turns
that into the items learned, ``(product, weight, reward)``: the product's ridge regression gets
``A += weight x x^T`` and ``b += reward x`` (docs/LEARNING.md gives the maths and when to
choose each rule):

- ``all``: every shown product was seen, weight 1 (the job's behaviour before issue 15);
- ``cascade``: the user reads top-down and stops at the click, so the slots below the last
  clicked one were not seen (weight 0, nothing learned); with no click all were seen;
- ``position``: slot i was seen with probability ``examination[i]``, its weight.

The reward of a product in an impression is the capped sum of the values of its events
(:func:`impression_reward`). Pure Python and numpy: the job's reward join (JVM) and learner
implement the same rules streaming, and the tests check them against :func:`batch_state`.

>>> [(p, w, r) for p, w, r in items("cascade", ["a", "b", "c"], [("b", 1.0)])]
[('a', 1.0, 0.0), ('b', 1.0, 1.0)]
>>> [(p, w, r) for p, w, r in items("position", ["a", "b"], [], examination=(1.0, 0.5))]
[('a', 1.0, 0.0), ('b', 0.5, 0.0)]
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np

from contract.errors import RtrecError

FEEDBACK_MODES: tuple[str, ...] = ("all", "cascade", "position")
"""The feedback rules ``RTREC_FEEDBACK`` names."""

REWARD_KINDS: tuple[str, ...] = ("click", "add_to_cart", "purchase")
"""The kinds of reward event a click event may carry (``kind``; absent means click)."""


class FeedbackError(RtrecError, ValueError):
    """A feedback mode, examination probabilities or reward values that cannot be used."""


class Item(NamedTuple):
    """One thing learned for one product of one impression."""

    product: str
    weight: float
    reward: float


def check_mode(mode: str) -> str:
    if mode not in FEEDBACK_MODES:
        raise FeedbackError(f"feedback mode {mode!r} is not one of {', '.join(FEEDBACK_MODES)}")
    return mode


def parse_examination(text: str) -> tuple[float, ...]:
    """``"1,0.6,0.4"`` -> (1.0, 0.6, 0.4): examination probability per slot, each in [0, 1]."""
    try:
        probs = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise FeedbackError(f"examination probabilities {text!r}: not comma-separated "
                            f"numbers") from None
    if not probs or not all(0.0 <= p <= 1.0 for p in probs):  # NaN fails too
        raise FeedbackError(f"examination probabilities {text!r}: each must be in [0, 1]")
    return probs


def slot_weight(examination: Sequence[float], slot: int) -> float:
    """Slot i's examination probability; slots past the list take its last value."""
    return float(examination[min(slot, len(examination) - 1)])


def check_reward_values(values: dict[str, float], cap: float) -> None:
    """Reward values must be finite and >= 0 with a finite cap > 0; the message names the bad
    one. (A negative value would make a purchase teach less than no event.)"""
    for kind, v in values.items():
        if kind not in REWARD_KINDS:
            raise FeedbackError(f"reward kind {kind!r} is not one of {', '.join(REWARD_KINDS)}")
        if not (math.isfinite(v) and v >= 0):
            raise FeedbackError(f"reward value of {kind!r} must be finite and >= 0, got {v}")
    if not (math.isfinite(cap) and cap > 0):
        raise FeedbackError(f"reward cap must be finite and > 0, got {cap}")


def impression_reward(values: Iterable[float], cap: float = 1.0) -> float:
    """The reward of one product in one impression: the sum of its events' values, at most
    ``cap``."""
    return min(cap, math.fsum(values))


def weights(mode: str, k: int, clicked_slots: Iterable[int],
            examination: Sequence[float] = (1.0,)) -> list[float]:
    """The observation weight of each of k slots under ``mode``."""
    check_mode(mode)
    if mode == "all":
        return [1.0] * k
    if mode == "position":
        return [slot_weight(examination, i) for i in range(k)]
    last = max(clicked_slots, default=k - 1)
    return [1.0 if i <= last else 0.0 for i in range(k)]


def items(mode: str, shown: Sequence[str], events: Iterable[tuple[str, float]],
          cap: float = 1.0, examination: Sequence[float] = (1.0,)) -> list[Item]:
    """The items an impression teaches: ``events`` are (product, value) of its reward events
    that count (inside the window or the allowed lateness). Items of weight 0 and reward 0
    are left out (they change nothing)."""
    values: dict[str, list[float]] = {}
    for product, value in events:
        values.setdefault(product, []).append(value)
    slots = [i for i, p in enumerate(shown) if p in values]
    out = []
    for p, w in zip(shown, weights(mode, len(shown), slots, examination), strict=True):
        r = impression_reward(values.get(p, ()), cap) if w > 0 else 0.0
        if w != 0 or r != 0:
            out.append(Item(p, w, r))
    return out


def batch_state(dim: int, l2: float, learned: Sequence[tuple[np.ndarray, float, float]],
                gamma: float = 1.0) -> tuple[np.ndarray, np.ndarray, int]:
    """The batch weighted, discounted ridge of one product: ``(A^-1, b, n)`` from its items
    ``(x, weight, reward)`` in the order learned. With m_t the items of positive weight after
    item t and M all of them:

        A = gamma^M l2 I + sum_t gamma^m_t w_t x_t x_t^T      b = sum_t gamma^m_t r_t x_t

    (gamma = 1: plain weighted ridge, order-free). A^-1 by a direct inverse, so it checks the
    streaming rank-one updates independently; n counts items of positive weight.
    """
    positive = np.array([w > 0 for _, w, _ in learned], dtype=bool)
    after = int(positive.sum()) - np.cumsum(positive) if len(learned) else np.zeros(0)
    A = gamma ** int(positive.sum()) * l2 * np.eye(dim)
    b = np.zeros(dim)
    for (x, w, r), m in zip(learned, after, strict=True):
        x = np.asarray(x, dtype=np.float64)
        f = gamma ** int(m)
        A += f * w * np.outer(x, x)
        b += f * r * x
    n = int(positive.sum()) - sum(1 for _, w, _ in learned if w < 0)
    return np.linalg.inv(A), b, n
