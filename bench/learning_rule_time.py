"""Per-call time of the exploration rules where they run: serving's ``Recommender.recommend``
(policy linucb, top-5, x given) under ``RTREC_EXPLORATION`` = fixed (the baseline: one
alpha, nothing computed per request), calibrated and decaying, interleaved in one run on the
same learned snapshot, and the contract's own functions per call.

Writes results/bench_learning_rule_time.json (p50/p99 in microseconds and the ratio of each
rule's p50/p99 to fixed's in the same run) and prints the table.

    python -m bench.learning_rule_time [--products 200,10000] [--calls 3000]
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from bench.common import write_result
from contract import exploration, linucb
from contract.codec import Params
from contract.config import Settings
from contract.features import CONTEXT_DIM, CONTEXT_NAMES

RULES = ("fixed", "calibrated", "decaying")
TOD = [i for i, n in enumerate(CONTEXT_NAMES) if n.startswith("tod_")]


def _x(rng: np.random.Generator) -> np.ndarray:
    x = rng.uniform(0, 1, CONTEXT_DIM)
    x[TOD] = 0.0
    x[TOD[int(rng.integers(0, 3))]] = 1.0
    return x


def learned_snapshot(m: int, seed: int = 0) -> Any:
    """m products, each learned from a few x of the shipped layout (the rules' counts read)."""
    from serving import Snapshot

    rng = np.random.default_rng(seed)
    ids = [f"p{i:06d}" for i in range(m)]
    params = {}
    for pid in ids:
        s = linucb.init_state(CONTEXT_DIM)
        for _ in range(int(rng.integers(1, 8))):
            s = linucb.update(s, _x(rng), float(rng.random() < 0.1))
        params[pid] = Params(s, 1)
    snap, _ = Snapshot.prior(ids, CONTEXT_DIM).with_params(params)
    return snap


def time_rules(m: int, calls: int, seed: int = 0) -> dict[str, Any]:
    """The rules' recommend() interleaved call by call (the same load on each), plus the
    contract's per-call alpha/weight; microseconds."""
    from serving import Recommender

    snap = learned_snapshot(m, seed)
    recs = {r: Recommender(Settings.from_env({"RTREC_EXPLORATION": r, "RTREC_ALPHA": "1.0"}),
                           snapshot=snap, seed=0) for r in RULES}
    rng = np.random.default_rng([seed, 1])
    xs = [_x(rng) for _ in range(64)]
    for r in RULES:  # warm the per-snapshot caches (counts) and numpy
        for x in xs[:20]:
            recs[r].recommend(1, x=x, k=5, policy="linucb")
    samples: dict[str, list[float]] = {r: [] for r in RULES}
    for i in range(calls):
        x = xs[i % len(xs)]
        for r in RULES[i % 3:] + RULES[:i % 3]:  # rotate the order: no rule always first
            t0 = time.perf_counter()
            recs[r].recommend(1, x=x, k=5, policy="linucb")
            samples[r].append(time.perf_counter() - t0)
    clicks, obs = snap.learned_counts(1.0)
    contract_us: dict[str, float] = {}
    for name, fn in (("calibrated_alpha", exploration.calibrated_alpha),
                     ("decaying_weight", exploration.decaying_weight)):
        t = []
        for i in range(calls):
            t0 = time.perf_counter()
            fn(clicks, obs, xs[i % len(xs)], 1.0)
            t.append(time.perf_counter() - t0)
        contract_us[f"{name}_p50_us"] = round(float(np.percentile(t, 50)) * 1e6, 2)
    out: dict[str, Any] = {"products": m, "calls": calls, "contract": contract_us}
    base50 = float(np.percentile(samples["fixed"], 50))
    base99 = float(np.percentile(samples["fixed"], 99))
    for r in RULES:
        p50 = float(np.percentile(samples[r], 50))
        p99 = float(np.percentile(samples[r], 99))
        out[r] = {"p50_us": round(p50 * 1e6, 1), "p99_us": round(p99 * 1e6, 1),
                  "p50_ratio_to_fixed": round(p50 / base50, 3),
                  "p99_ratio_to_fixed": round(p99 / base99, 3)}
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.learning_rule_time",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", default="200,10000")
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    sizes = [int(s) for s in args.products.split(",") if s]
    load = os.getloadavg()
    runs = [time_rules(m, args.calls) for m in sizes]
    print(f"{'products':>9} {'rule':11} {'p50 us':>8} {'p99 us':>8} {'p50/fixed':>10} "
          f"{'p99/fixed':>10}")
    for run in runs:
        for r in RULES:
            v = run[r]
            print(f"{run['products']:9d} {r:11} {v['p50_us']:8.1f} {v['p99_us']:8.1f} "
                  f"{v['p50_ratio_to_fixed']:10.3f} {v['p99_ratio_to_fixed']:10.3f}")
        print(f"          contract per call: {run['contract']}")
    path = write_result("bench_learning_rule_time", {
        "command": f"python -m bench.learning_rule_time --products {args.products} "
                   f"--calls {args.calls}",
        "load_before": [round(v, 2) for v in load],
        "load_after": [round(v, 2) for v in os.getloadavg()], "runs": runs})
    print(f"wrote {path} (load {load[0]:.1f} before, {os.getloadavg()[0]:.1f} after)")


if __name__ == "__main__":
    main()
