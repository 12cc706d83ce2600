"""The in-stream evaluator's per-batch cost (flink_job/evaluate.py), its state written the old
way (one blob of every product, pickled as Flink's PICKLED_BYTE_ARRAY does) against the new
(the rows of the products the batch learned, and a small head), same batches, interleaved.
Outside Flink: the replay and the bytes handed to the state backend, not RocksDB's own work
(which grows with those bytes). Writes results/bench_ope_state.{json,md,png}.

    python -m bench.bench_ope_state [--products 200 10000] [--batches 60] [--per-batch 50]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import time

import numpy as np

from bench.common import RESULTS, percentiles_ms, write_result
from contract.events import Impression
from flink_job.evaluate import StreamEvaluator

DIM = 15


def _lines(rng: np.random.Generator, products: list[str], n: int, t0: int) -> list[str]:
    """``n`` closed impressions of 5 products drawn from the catalogue (a ``random``
    policy: the random and popularity targets get terms), 20% with the top slot clicked."""
    out = []
    for i in range(n):
        shown = tuple(str(p) for p in rng.choice(products, 5, replace=False))
        imp = Impression(request_id=f"b{t0}-{i}", user_id=1, ts_ms=t0 + i, products=shown,
                         x=tuple(float(v) for v in np.round(rng.uniform(0, 1, DIM), 6)),
                         scores=(0.0,) * 5, policy="random", model_version=0)
        out.append(f"{t0 + i}|{'0' if rng.random() < 0.2 else ''}|{json.dumps(imp.to_dict())}")
    return out


def _old_write(ev: StreamEvaluator) -> int:
    ev.dirty.clear()
    return len(pickle.dumps(ev.encode()))


def _new_write(ev: StreamEvaluator) -> int:
    rows = ev.take_rows()  # MapState values: PICKLED_BYTE_ARRAY too (a pickled bytes each)
    return (sum(len(pickle.dumps(r)) for r in rows.values())
            + len(pickle.dumps(ev.encode_head())))


def run(m: int, batches: int, per_batch: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    products = [f"p{i:05d}" for i in range(m)]
    evs = {"old": StreamEvaluator(products, DIM, 1.0), "new": StreamEvaluator(products, DIM, 1.0)}
    writes = {"old": _old_write, "new": _new_write}
    total: dict[str, list[float]] = {"old": [], "new": []}
    write: dict[str, list[float]] = {"old": [], "new": []}
    nbytes: dict[str, list[int]] = {"old": [], "new": []}
    for k in range(batches):
        lines = _lines(rng, products, per_batch, 1_700_000_000_000 + k * per_batch)
        order = ("old", "new") if k % 2 == 0 else ("new", "old")  # interleaved
        for name in order:
            ev = evs[name]
            t0 = time.perf_counter()
            ev.batch(lines)
            t1 = time.perf_counter()
            nbytes[name].append(writes[name](ev))
            t2 = time.perf_counter()
            total[name].append(t2 - t0)
            write[name].append(t2 - t1)
    assert evs["old"].summaries() == evs["new"].summaries()  # the same replay
    return {"products": m, "batches": batches, "impressions_per_batch": per_batch,
            **{name: {"batch_and_write": percentiles_ms(total[name]),
                      "write": percentiles_ms(write[name]),
                      "bytes_per_batch_p50": float(np.median(nbytes[name]))}
               for name in ("old", "new")},
            "ratio_new_old_p50": float(np.percentile(total["new"], 50)
                                       / np.percentile(total["old"], 50)),
            "ratio_new_old_p99": float(np.percentile(total["new"], 99)
                                       / np.percentile(total["old"], 99))}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--products", type=int, nargs="+", default=[200, 10_000])
    ap.add_argument("--batches", type=int, default=60)
    ap.add_argument("--per-batch", type=int, default=50)
    a = ap.parse_args(argv)
    rows = [run(m, a.batches, a.per_batch) for m in a.products]
    load = [f"{v:.2f}" for v in os.getloadavg()]
    path = write_result("bench_ope_state", {"runs": rows, "loadavg": load})
    md = ["| products | old p50 / p99 ms | new p50 / p99 ms | new/old p50 | new/old p99 | "
          "write old / new p50 ms | bytes/batch old / new |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        o, n = r["old"], r["new"]
        md.append(f"| {r['products']:,} | {o['batch_and_write']['p50_ms']:.2f} / "
                  f"{o['batch_and_write']['p99_ms']:.2f} | {n['batch_and_write']['p50_ms']:.2f}"
                  f" / {n['batch_and_write']['p99_ms']:.2f} | {r['ratio_new_old_p50']:.3f} | "
                  f"{r['ratio_new_old_p99']:.3f} | {o['write']['p50_ms']:.2f} / "
                  f"{n['write']['p50_ms']:.3f} | {o['bytes_per_batch_p50']:,.0f} / "
                  f"{n['bytes_per_batch_p50']:,.0f} |")
    md.append(f"\nload average {' '.join(load)}; {a.batches} batches of {a.per_batch} "
              "impressions, old and new interleaved")
    (RESULTS / "bench_ope_state.md").write_text("\n".join(md) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        x = np.arange(len(rows))
        for off, name in ((-0.2, "old"), (0.2, "new")):
            ax.bar(x + off, [r[name]["batch_and_write"]["p50_ms"] for r in rows], 0.4,
                   yerr=[[0] * len(rows), [r[name]["batch_and_write"]["p99_ms"]
                                           - r[name]["batch_and_write"]["p50_ms"]
                                           for r in rows]], label=f"{name} (p50, bar to p99)")
        ax.set_xticks(x, [f"{r['products']:,} products" for r in rows])
        ax.set_ylabel("ms per batch (replay + state write)")
        ax.set_yscale("log")
        ax.legend()
        fig.tight_layout()
        fig.savefig(RESULTS / "bench_ope_state.png", dpi=120)
    except ImportError:
        pass
    print("\n".join(md))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
