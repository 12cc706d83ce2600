"""What ``RTREC_EXPLORATION=category_rate`` costs serving (docs/EXPLORATION.md section 1):

- **per request**: ``Recommender.recommend`` (policy linucb, top-5, x given) under
  ``decaying`` (the baseline) and ``category_rate``, interleaved call by call on the same
  learned snapshot and catalog (categories assigned round-robin);
- **per parameter update**: a chain of ``Snapshot.with_params`` batches (each product learned
  a little more, as the refresher applies them), and the category pools following each
  batch (``CategoryPools.advance``), both timed per batch: the pools' cost against the
  snapshot's own in the same run; plus one sum afresh of the pools (a new epoch, the start).

Writes results/bench_category_rate_time.json and prints the table.

    python -m bench.category_rate_time [--products 10000,100000] [--calls 1000]
        [--categories 8] [--batches 300] [--batch 20]
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
from bench.learning_rule_time import _x, learned_snapshot
from contract import linucb
from contract.codec import Params
from contract.config import Settings
from contract.features import CONTEXT_DIM

RULES = ("decaying", "category_rate")


def _pct(samples: Sequence[float], q: float) -> float:
    return round(float(np.percentile(samples, q)) * 1e6, 1)


def time_requests(snap: Any, cats: list[str], calls: int, seed: int = 0) -> dict[str, Any]:
    """decaying vs category_rate recommend(), interleaved, microseconds."""
    from serving import Recommender
    from serving.controls import CatalogIndex

    index = CatalogIndex(snap.product_ids, cats)
    recs = {r: Recommender(Settings.from_env({"RTREC_EXPLORATION": r}), snapshot=snap,
                           catalog=index, seed=0) for r in RULES}
    rng = np.random.default_rng([seed, 1])
    xs = [_x(rng) for _ in range(64)]
    for r in RULES:
        for x in xs[:10]:
            recs[r].recommend(1, x=x, k=5, policy="linucb")
    samples: dict[str, list[float]] = {r: [] for r in RULES}
    for i in range(calls):
        x = xs[i % len(xs)]
        for r in (RULES if i % 2 == 0 else RULES[::-1]):  # alternate which goes first
            t0 = time.perf_counter()
            recs[r].recommend(1, x=x, k=5, policy="linucb")
            samples[r].append(time.perf_counter() - t0)
    out: dict[str, Any] = {}
    for r in RULES:
        out[r] = {"p50_us": _pct(samples[r], 50), "p99_us": _pct(samples[r], 99)}
    for q in ("p50_us", "p99_us"):
        out[f"category_rate_{q[:3]}_ratio_to_decaying"] = round(
            out["category_rate"][q] / out["decaying"][q], 3)
    return out


def time_updates(snap: Any, cats: list[str], batches: int, batch: int, seed: int = 0
                 ) -> dict[str, Any]:
    """with_params per batch (the baseline) and the pools following it, per update."""
    from serving.category_rates import CategoryPools

    rng = np.random.default_rng([seed, 2])
    pools = CategoryPools(CONTEXT_DIM, 1.0)
    pools.set_categories(cats)
    t0 = time.perf_counter()
    pools.rebuild(snap)
    rebuild_s = time.perf_counter() - t0
    ids = snap.product_ids
    # the updates, prepared beforehand: each chosen product learns one more x
    plans = []
    for _ in range(batches):
        chosen = rng.choice(len(ids), size=batch, replace=False)
        plans.append(chosen)
    snap_s, pool_s = [], []
    for step, chosen in enumerate(plans):
        thetas, A_invs = snap.params_of(chosen)
        params = {}
        for j, i in enumerate(chosen.tolist()):
            A = np.linalg.inv(A_invs[j])
            state = linucb.ArmState(A_invs[j], A @ thetas[j], snap.version_of(ids[i]))
            state = linucb.update(state, _x(rng), float(rng.random() < 0.1))
            params[ids[i]] = Params(state, step + 2)
        t0 = time.perf_counter()
        new, changed = snap.with_params(params)
        t1 = time.perf_counter()
        pools.advance(snap, new, changed)
        t2 = time.perf_counter()
        snap = new
        snap_s.append((t1 - t0) / batch)
        pool_s.append((t2 - t1) / batch)
    assert pools.rebuilds == 1, "the pools summed afresh during the chain"
    return {"batches": batches, "batch": batch, "rebuild_s": round(rebuild_s, 3),
            "with_params_per_update_us": {"p50": _pct(snap_s, 50), "p99": _pct(snap_s, 99)},
            "pools_per_update_us": {"p50": _pct(pool_s, 50), "p99": _pct(pool_s, 99)},
            "pools_p50_ratio_to_with_params": round(float(np.median(pool_s))
                                                    / float(np.median(snap_s)), 3),
            "pools_cpu_share_at_2000_updates_s": round(float(np.median(pool_s)) * 2000, 3)}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.category_rate_time",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", default="10000,100000")
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--categories", type=int, default=8)
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--batch", type=int, default=20)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    load = os.getloadavg()
    runs = []
    for m in (int(s) for s in args.products.split(",") if s):
        snap = learned_snapshot(m)
        cats = [f"c{i % args.categories}" for i in range(m)]
        run = {"products": m, "categories": args.categories,
               "requests": time_requests(snap, cats, args.calls),
               "updates": time_updates(snap, cats, args.batches, args.batch)}
        runs.append(run)
        rq, up = run["requests"], run["updates"]
        dec, cat = rq["decaying"], rq["category_rate"]
        print(f"{m:>7} products: request p50/p99 us decaying {dec['p50_us']:.0f}/"
              f"{dec['p99_us']:.0f}, category_rate {cat['p50_us']:.0f}/{cat['p99_us']:.0f} "
              f"(ratio {rq['category_rate_p50_ratio_to_decaying']} / "
              f"{rq['category_rate_p99_ratio_to_decaying']}); per update us with_params "
              f"{up['with_params_per_update_us']}, pools {up['pools_per_update_us']} "
              f"(p50 ratio {up['pools_p50_ratio_to_with_params']}); sum afresh "
              f"{up['rebuild_s']} s")
        del snap
    command = (f"python -m bench.category_rate_time --products {args.products} --calls "
               f"{args.calls} --categories {args.categories} --batches {args.batches} "
               f"--batch {args.batch}")
    path = write_result("bench_category_rate_time", {
        "command": command, "load_before": [round(v, 2) for v in load],
        "load_after": [round(v, 2) for v in os.getloadavg()], "runs": runs})
    print(f"wrote {path} (load {load[0]:.1f} before, {os.getloadavg()[0]:.1f} after)")


if __name__ == "__main__":
    main()
