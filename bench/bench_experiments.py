"""What an experiment costs a request (docs/EXPERIMENTS.md): serving's ``recommend`` in process,
top 5 of the shipped 200 products, learned-looking parameters, events kept in memory.

Baseline: the same recommender without an experiment (LinUCB). Measured: a LinUCB variant with
two shadows (their lists computed and logged with every impression), and the exploring
plackett_luce variant with the same shadows (sampling plus the slot marginals). Calls are
interleaved round by round so a load change on the machine hits all three alike; p50 and p99
of each, and the ratios to the baseline measured in the same run.

``python -m bench.bench_experiments [--requests 3000]`` -> results/bench_experiments.json
"""

from __future__ import annotations

import argparse

import numpy as np

from bench.common import interleaved_request_times, write_result
from contract import linucb
from contract.codec import Params
from contract.config import Settings
from contract.experiments import Experiment
from contract.features import load_catalog
from serving.eventlog import MemoryEventLog
from serving.recommender import Recommender
from serving.snapshot import Snapshot

SHADOWS = [{"name": "greedy", "policy": "greedy"},
           {"name": "a2", "policy": "linucb", "alpha": 2.0}]


def _snapshot(settings: Settings, ids: list[str], seed: int) -> Snapshot:
    rng = np.random.default_rng(seed)
    d = settings.model.dim
    params = {}
    for p in ids:
        scale = rng.uniform(0.05, 1.0)
        params[p] = Params(linucb.ArmState(np.eye(d) * scale,
                                           rng.normal(0, 0.3, size=d) / scale, 5), 1)
    return Snapshot.from_params(ids, d, settings.model.l2, params)


def _experiment(policy: str) -> Experiment:
    v = {"name": "v", "policy": policy, "alpha": 1.0, "share": 1.0}
    if policy == "plackett_luce":
        v.update(temperature=0.1, epsilon=0.2)
    return Experiment.from_dict({"name": "bench", "salt": "s", "variants": [v],
                                 "shadows": SHADOWS})


def run(requests: int = 3000, seed: int = 1) -> dict:
    settings = Settings.from_env({})
    ids = [p.product_id for p in load_catalog()]
    snap = _snapshot(settings, ids, seed)
    recs = {"baseline": Recommender(settings, snapshot=snap, events=MemoryEventLog(), seed=1),
            "linucb+2 shadows": Recommender(settings, snapshot=snap, events=MemoryEventLog(),
                                            seed=1, experiment=_experiment("linucb")),
            "plackett_luce+2 shadows": Recommender(settings, snapshot=snap,
                                                   events=MemoryEventLog(), seed=1,
                                                   experiment=_experiment("plackett_luce"))}
    rng = np.random.default_rng(seed)
    xs = rng.random((requests, settings.model.dim))
    out = interleaved_request_times(recs, xs, requests, "baseline")
    for rec in recs.values():
        rec.close(1)
    return {"requests": requests, "products": len(ids), "k": 5, "results": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    res = run(args.requests)
    path = write_result("bench_experiments", res)
    print(f"{'variant':<26} {'p50 ms':>8} {'p99 ms':>8} {'p50 x':>6} {'p99 x':>6}")
    for name, r in res["results"].items():
        print(f"{name:<26} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f} {r['p50_ratio']:>6.2f} "
              f"{r['p99_ratio']:>6.2f}")
    print(f"-> {path}")


if __name__ == "__main__":
    main()
