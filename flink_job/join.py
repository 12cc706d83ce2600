"""The reward join as a pure state machine over one request's state (keyed by request_id).

Event time is the Kafka record timestamp of each event (see docs/JOB.md for why). The job
learns at once with the default reward and corrects on a click (``contract.linucb.add_reward``),
so learning never waits for the window to close:

- the impression emits one observation per shown product with reward 0 (A, n and b change
  now) and asks for a timer at ``t + W``;
- a click on a shown product with ``ts <= t + W`` while the window is open emits a correction:
  reward 1 (b += x). The sums end where waiting for the window would have put them;
- the timer closes the window (nothing more to learn) and the request is remembered for
  ``retain_ms`` so a late click is recognised as late, not orphan;
- a click after ``t + W`` (by its own timestamp, or arriving after the close) is a
  ``late_click`` dead letter and is never learned;
- a click that arrives before its impression (the two topics are read independently) waits in
  the state; if no impression comes by ``ts + W`` it is an ``orphan_click``.

Emitted: ``(product_id, x, reward, observe)``; ``observe`` True for an observation
(``linucb.update``), False for a reward added to one already learned (``linucb.add_reward``).
The state is a small JSON document (never a pickled object), stored as bytes.

>>> j = RewardJoin(window_ms=1000, retain_ms=5000)
>>> imp = Imp(ts=100, x=(1.0, 0.0), products=("p1", "p2"))
>>> st, out = j.on_impression(None, imp, "m1")
>>> out.rewards, out.timers
([('p1', (1.0, 0.0), 0.0, True), ('p2', (1.0, 0.0), 0.0, True)], [1100])
>>> st, out = j.on_click(st, Clk(ts=600, product="p2"), "m2")
>>> out.rewards
[('p2', (1.0, 0.0), 1.0, False)]
>>> st, out = j.on_timer(st, 1100)
>>> out.rewards, out.timers
([], [6100])
>>> st, out = j.on_click(st, Clk(ts=1500, product="p1"), "m3")
>>> out.dead[0][:2]
('late_click', 'request_id')
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from contract.events import BAD_VALUE, DUPLICATE_IMPRESSION, LATE_CLICK, ORPHAN_CLICK

OPEN, CLOSED, PENDING = "open", "closed", "pending"


class Imp(NamedTuple):
    ts: int
    x: tuple[float, ...]
    products: tuple[str, ...]


class Clk(NamedTuple):
    ts: int
    product: str


Reward = tuple[str, tuple[float, ...], float, bool]  # (product_id, x, reward, observe)


@dataclass
class Out:
    """What one step asks of the Flink shell: rewards to emit, dead letters, timers."""

    rewards: list[Reward] = field(default_factory=list)
    # (reason, field, message, meta) where meta is the opaque source handle of the record
    dead: list[tuple[str, str, str, Any]] = field(default_factory=list)
    timers: list[int] = field(default_factory=list)


def dumps(state: dict[str, Any] | None) -> bytes | None:
    return None if state is None else json.dumps(state, separators=(",", ":")).encode()


def loads(blob: bytes | None) -> dict[str, Any] | None:
    return None if blob is None else json.loads(blob)


@dataclass(frozen=True)
class RewardJoin:
    """Window W (ms) and how long a closed request is remembered (ms)."""

    window_ms: int
    retain_ms: int

    def on_impression(self, st: dict[str, Any] | None, imp: Imp,
                      meta: Any) -> tuple[dict[str, Any] | None, Out]:
        out = Out()
        if st is not None and st["s"] != PENDING:
            out.dead.append((DUPLICATE_IMPRESSION, "request_id",
                             "an impression with this request_id was already seen", meta))
            return st, out
        waiting = st["w"] if st is not None else []
        st = {"s": OPEN, "t": imp.ts, "x": list(imp.x), "p": list(imp.products), "c": []}
        out.rewards = [(p, imp.x, 0.0, True) for p in imp.products]
        out.timers.append(imp.ts + self.window_ms)
        for ts, product, cmeta in waiting:
            st, step = self.on_click(st, Clk(ts, product), cmeta)
            out.rewards += step.rewards
            out.dead += step.dead
        return st, out

    def on_click(self, st: dict[str, Any] | None, clk: Clk,
                 meta: Any) -> tuple[dict[str, Any] | None, Out]:
        out = Out()
        if st is None or st["s"] == PENDING:
            st = st or {"s": PENDING, "w": []}
            st["w"].append([clk.ts, clk.product, meta])
            out.timers.append(clk.ts + self.window_ms)
            return st, out
        if st["s"] == CLOSED:
            out.dead.append((LATE_CLICK, "request_id", "the reward window of this request closed",
                             meta))
            return st, out
        if clk.product not in st["p"]:
            out.dead.append((ORPHAN_CLICK, "product_id",
                             f"{clk.product!r} was not shown in this request", meta))
        elif clk.product in st["c"]:
            out.dead.append((BAD_VALUE, "product_id", "duplicate click", meta))
        elif clk.ts > st["t"] + self.window_ms:
            out.dead.append((LATE_CLICK, "ts_ms",
                             f"click {clk.ts - st['t']} ms after the impression > window "
                             f"{self.window_ms} ms", meta))
        else:
            st["c"].append(clk.product)
            out.rewards.append((clk.product, tuple(st["x"]), 1.0, False))
        return st, out

    def on_timer(self, st: dict[str, Any] | None,
                 timestamp: int) -> tuple[dict[str, Any] | None, Out]:
        """A timer fired; stale timers (of an earlier phase) do nothing."""
        out = Out()
        if st is None:
            return None, out
        if st["s"] == OPEN and timestamp >= st["t"] + self.window_ms:
            st = {"s": CLOSED, "t": st["t"]}
            out.timers.append(st["t"] + self.window_ms + self.retain_ms)
            return st, out
        if st["s"] == CLOSED and timestamp >= st["t"] + self.window_ms + self.retain_ms:
            return None, out
        if st["s"] == PENDING and timestamp >= max(w[0] for w in st["w"]) + self.window_ms:
            for _ts, product, meta in st["w"]:
                out.dead.append((ORPHAN_CLICK, "request_id",
                                 f"no impression for this request within the window "
                                 f"(click on {product!r})", meta))
            return None, out
        return st, out
