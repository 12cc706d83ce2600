"""The in-stream evaluator's per-batch state write through a real PyFlink keyed function
(thread mode, RocksDB, as the job runs it): the old layout (one blob of every product in a
ValueState) against the new (the rows the batch learned in a MapState, and a small head),
same batches, interleaved in one subtask (two evaluators side by side). Complements
bench/bench_ope_state.py (outside Flink). Writes results/bench_ope_state_flink_<products>.json.

    python -m bench.bench_ope_state_flink --products 200 --batches 300 --per-batch 20
"""

from __future__ import annotations

import argparse
import json
import os
import site
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.bench_ope_state import _lines
from bench.common import percentiles_ms, write_result

ROOT = Path(__file__).resolve().parents[1]
WARMUP = 5  # the first batches (the interpreter, RocksDB's first files) are not counted


def _job(m: int, batches: int, per_batch: int, out: Path) -> None:
    from pyflink.common import Configuration, Types
    from pyflink.datastream import KeyedProcessFunction, StreamExecutionEnvironment
    from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor

    class Write(KeyedProcessFunction):
        def open(self, ctx: Any) -> None:
            from flink_job.evaluate import ROWS, StreamEvaluator

            self.head = ctx.get_state(ValueStateDescriptor("ope", Types.PICKLED_BYTE_ARRAY()))
            self.rows = ctx.get_map_state(
                MapStateDescriptor(ROWS, Types.STRING(), Types.PICKLED_BYTE_ARRAY()))
            self.blob = ctx.get_state(ValueStateDescriptor("old", Types.PICKLED_BYTE_ARRAY()))
            self.products = [f"p{i:05d}" for i in range(m)]
            self.ev = {k: StreamEvaluator(self.products, 15, 1.0) for k in ("old", "new")}
            self.t: dict[str, list[float]] = {"old": [], "new": []}
            self.w: dict[str, list[float]] = {"old": [], "new": []}

        def process_element(self, value: Any, ctx: Any) -> Any:
            k = int(value[1])
            lines = _lines(np.random.default_rng(k), self.products, per_batch,
                           1_700_000_000_000 + k * per_batch)
            for name in (("old", "new") if k % 2 == 0 else ("new", "old")):
                ev = self.ev[name]
                t0 = time.perf_counter()
                ev.batch(lines)
                t1 = time.perf_counter()
                if name == "old":
                    ev.dirty.clear()
                    self.blob.update(ev.encode())
                else:
                    for pid, row in ev.take_rows().items():
                        self.rows.put(pid, row)
                    self.head.update(ev.encode_head())
                t2 = time.perf_counter()
                self.t[name].append(t2 - t0)
                self.w[name].append(t2 - t1)
            if k == batches - 1:
                out.write_text(json.dumps({"t": self.t, "w": self.w}))
            return iter(())

    conf = Configuration()
    for key, v in {"python.execution-mode": "thread", "state.backend.type": "rocksdb",
                   "python.executable": sys.executable,
                   "python.client.executable": sys.executable,
                   "python.pythonpath": ":".join([str(ROOT), *site.getsitepackages()]),
                   "parallelism.default": "1"}.items():
        conf.set_string(key, v)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    ds = env.from_collection([("ope", str(i)) for i in range(batches)],
                             type_info=Types.TUPLE([Types.STRING(), Types.STRING()]))
    ds.key_by(lambda r: r[0], key_type=Types.STRING()).process(Write(), output_type=Types.INT())
    env.execute("bench-ope-state")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--products", type=int, default=200)
    ap.add_argument("--batches", type=int, default=300)
    ap.add_argument("--per-batch", type=int, default=20)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "times.json"
        _job(a.products, a.batches, a.per_batch, out)
        raw = json.loads(out.read_text())
    res: dict[str, Any] = {"products": a.products, "batches": a.batches - WARMUP,
                           "impressions_per_batch": a.per_batch,
                           "loadavg": [f"{v:.2f}" for v in os.getloadavg()]}
    for name in ("old", "new"):
        res[name] = {"batch_and_write": percentiles_ms(raw["t"][name][WARMUP:]),
                     "write": percentiles_ms(raw["w"][name][WARMUP:])}
    for q in ("p50_ms", "p99_ms"):
        res[f"ratio_new_old_{q[:3]}"] = (res["new"]["batch_and_write"][q]
                                         / res["old"]["batch_and_write"][q])
        res[f"write_ratio_new_old_{q[:3]}"] = res["new"]["write"][q] / res["old"]["write"][q]
    path = write_result(f"bench_ope_state_flink_{a.products}", res)
    o, n = res["old"], res["new"]
    print(f"{a.products:,} products, {a.per_batch} impressions/batch, load {res['loadavg']}: "
          f"batch+write old p50/p99 {o['batch_and_write']['p50_ms']:.2f}/"
          f"{o['batch_and_write']['p99_ms']:.2f} ms, new {n['batch_and_write']['p50_ms']:.2f}/"
          f"{n['batch_and_write']['p99_ms']:.2f} ms (new/old {res['ratio_new_old_p50']:.3f}/"
          f"{res['ratio_new_old_p99']:.3f}); write old {o['write']['p50_ms']:.3f}/"
          f"{o['write']['p99_ms']:.3f} ms, new {n['write']['p50_ms']:.3f}/"
          f"{n['write']['p99_ms']:.3f} ms; wrote {path}")


if __name__ == "__main__":
    main()
