"""The price of feedback delay, and why the job learns shown products at once.

An in-process replay of the closed loop (same visits, same oracle, same click draws) with a
LinUCB whose updates arrive late, as they do through Kafka -> Flink -> Redis -> serving:
- ``wait_window``: clicks after ``publish`` visits, zero rewards only when the reward window
  closes (``window`` visits): the job's first design;
- ``at_once``: every shown product after ``publish`` visits with reward 0, the click's reward
  as a correction at the same time: the job's design (flink_job/java/rtrec/RewardJoin.java).
Each against the instant learner (no delay) on the same visits. Writes
results/bench_delay.json: {"visits", "delay_visits": {...}, "regret": {...}, "ratio": {...}}.
"""

from __future__ import annotations

import argparse
from collections import deque

import numpy as np

from bench.common import write_result
from contract.features import FeatureSpace, load_catalog, load_users
from endtoend.simulation import InstantLinUCB, Shown, SimulatedShop, Visit, make_visits, simulate
from producer.oracle import load_oracle


class DelayedLinUCB(InstantLinUCB):
    def __init__(self, name: str, m: int, d: int, publish: int, window: int,
                 at_once: bool) -> None:
        super().__init__(m, d)
        self.name, self.publish, self.window, self.at_once = name, publish, window, at_once
        self.pending: deque[tuple[int, str, int, np.ndarray]] = deque()

    def recommend(self, visit: Visit, x: np.ndarray, k: int) -> Shown:
        while self.pending and self.pending[0][0] <= visit.index:
            _, kind, item, xx = self.pending.popleft()
            if kind == "observe":
                self.learn(item, xx, 0.0)
            else:  # the click's reward on an observation already learned
                self.b[item] += xx
                self.theta[item] = self.A_inv[item] @ self.b[item]
        return super().recommend(visit, x, k)

    def feedback(self, visit: Visit, x: np.ndarray, shown: Shown, clicked: int | None) -> None:
        due_now = visit.index + self.publish
        for pos, item in enumerate(shown.items):
            observe_at = due_now if (self.at_once or pos == clicked) else visit.index + self.window
            self.pending.append((observe_at, "observe", item, x))
            if pos == clicked:
                self.pending.append((due_now, "reward", item, x))
        self.pending = deque(sorted(self.pending, key=lambda e: (e[0], e[1] == "reward")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--visits", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=50.0, help="visits/s of the loop")
    parser.add_argument("--window-s", type=float, default=1.0)
    parser.add_argument("--publish-s", type=float, default=0.05, help="event -> serving delay")
    parser.add_argument("--seed", type=int, default=1237)
    args = parser.parse_args()
    fs = FeatureSpace.load()
    products = load_catalog()
    shop = SimulatedShop(products, fs, load_oracle("rules", fs))
    visits = make_visits(args.visits, args.seed, load_users())
    publish = max(1, round(args.publish_s * args.rate))
    window = publish + round((args.window_s + 0.5) * args.rate)  # + 500 ms out-of-orderness
    m, d = len(products), fs.context_vector(load_users()[0], visits[0].at).shape[0]
    policies = [InstantLinUCB(m, d),
                DelayedLinUCB("wait_window", m, d, publish, window, at_once=False),
                DelayedLinUCB("at_once", m, d, publish, window, at_once=True)]
    out = simulate(visits, policies, shop)
    regret = {name: o.summary()["regret"] for name, o in out.items()}
    ratio = {name: r / regret["linucb_instant"] for name, r in regret.items()}
    path = write_result("bench_delay", {
        "visits": args.visits, "delay_visits": {"publish": publish, "window": window},
        "regret": regret, "ratio": ratio,
        "top1_ctr": {name: o.summary()["top1_ctr"] for name, o in out.items()}})
    print(f"delay in visits: publish {publish}, window close {window} (rate {args.rate}/s)")
    for name in regret:
        print(f"{name:16} regret {regret[name]:8.1f}  x{ratio[name]:.2f} of instant")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
