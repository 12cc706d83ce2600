"""What the self-tuning loop costs a request (docs/EXPLORATION.md section 3): serving's
``recommend`` in process, top 5 of the shipped 200 products, learned-looking parameters,
events kept in memory.

Baseline: the same recommender without ``RTREC_SELF_TUNE``, ranking with the live candidate's
rule alone (``RTREC_EXPLORATION=calibrated``). Measured: self-tuning with 2 and with 3
candidates (every candidate ranks the request, one is drawn, the mixture's probabilities and
every candidate's list are logged). Calls are interleaved request by request, so a load change
hits all alike; p50 and p99 of each and the ratios to the baseline of the same run.

``python -m bench.bench_selftune [--requests 3000]`` -> results/bench_selftune.{json,md,png}
"""

from __future__ import annotations

import argparse

import numpy as np

from bench.bench_experiments import _snapshot
from bench.common import RESULTS, interleaved_request_times, write_result
from contract.config import Settings
from contract.features import load_catalog
from serving.eventlog import MemoryEventLog
from serving.recommender import Recommender

CONFIGS = {"baseline (calibrated alone)": "",
           "self-tune, 2 candidates": "calibrated,alpha=0.1",
           "self-tune, 3 candidates": "calibrated,alpha=0.3,alpha=0.1"}


def run(requests: int = 3000, seed: int = 1) -> dict:
    base = Settings.from_env({"RTREC_EXPLORATION": "calibrated"})
    ids = [p.product_id for p in load_catalog()]
    snap = _snapshot(base, ids, seed)
    recs = {name: Recommender(base.override(RTREC_SELF_TUNE=cands), snapshot=snap,
                              events=MemoryEventLog(), seed=1)
            for name, cands in CONFIGS.items()}
    rng = np.random.default_rng(seed)
    xs = rng.random((requests, base.model.dim))
    out = interleaved_request_times(recs, xs, requests, "baseline (calibrated alone)")
    for rec in recs.values():
        rec.close(1)
    return {"requests": requests, "products": len(ids), "k": 5, "configs": CONFIGS,
            "results": out}


def table(res: dict) -> str:
    rows = [f"{res['requests']} requests each, top {res['k']} of {res['products']} products, "
            "interleaved", "", "| config | p50 ms | p99 ms | p50 x baseline | p99 x baseline |",
            "| --- | ---: | ---: | ---: | ---: |"]
    for name, r in res["results"].items():
        rows.append(f"| {name} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['p50_ratio']:.2f} | "
                    f"{r['p99_ratio']:.2f} |")
    return "\n".join(rows)


def _plot(res: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(res["results"])
    fig, ax = plt.subplots(figsize=(8, 4))
    pos = np.arange(len(names))
    ax.bar(pos - 0.2, [res["results"][n]["p50_ms"] for n in names], 0.4, label="p50")
    ax.bar(pos + 0.2, [res["results"][n]["p99_ms"] for n in names], 0.4, label="p99")
    ax.set_xticks(pos, names, fontsize=8)
    ax.set_ylabel("ms per recommend (in process)")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "bench_selftune.png", dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    res = run(args.requests)
    path = write_result("bench_selftune", res)
    md = table(res)
    (RESULTS / "bench_selftune.md").write_text(md + "\n")
    _plot(res)
    print(md)
    print(f"-> {path}")


if __name__ == "__main__":
    main()
