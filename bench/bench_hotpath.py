"""The job's Python hot path outside Flink, per call, against the cheapest thing it must do.

Throughput of the job is bounded by the Python it runs per event (one GIL in thread mode),
so this says where a microsecond goes:

- validate one impression / click (``split_record`` + ``contract.events.parse_event`` +
  ``join_line``), against ``json.loads`` of the same bytes (the floor of any parse);
- learn one micro-batch of 1 / 20 items (``parse_batch`` + ``contract.linucb.learn_batch`` +
  ``codec.encode``), against one Sherman-Morrison step (the floor of any update).

Writes results/bench_hotpath.json: ``{"<step>": {"p50_us", "p99_us", "baseline_p50_us",
"ratio_p50"}, ...}``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import numpy as np

from bench.common import write_result
from contract import codec, linucb
from contract.events import Click, Impression, parse_event
from flink_job.records import join_line, parse_batch, split_record

DIM = 15
REPEAT = 20_000


def _us(fn: Callable[[], object], repeat: int = REPEAT) -> np.ndarray:
    out = np.empty(repeat)
    for i in range(repeat):
        t0 = time.perf_counter_ns()
        fn()
        out[i] = time.perf_counter_ns() - t0
    return out / 1000.0


def _row(step: np.ndarray, base: np.ndarray) -> dict[str, float]:
    p50, p99, b50 = (float(np.percentile(step, 50)), float(np.percentile(step, 99)),
                     float(np.percentile(base, 50)))
    return {"p50_us": round(p50, 2), "p99_us": round(p99, 2), "baseline_p50_us": round(b50, 2),
            "ratio_p50": round(p50 / b50, 2)}


def main() -> None:
    rng = np.random.default_rng(0)
    known = frozenset(f"p{i:03d}" for i in range(1000))
    x = tuple(float(v) for v in rng.normal(size=DIM))
    imp = Impression("req-0123456789", 42, 1_764_000_000_000, x,
                     ("p001", "p002", "p003", "p004", "p005"), (0.1,) * 5, "linucb", 3, 0.2)
    clk = Click("req-0123456789", "p003", 1_764_000_000_500)
    results: dict[str, dict[str, float]] = {}
    for name, event, topic in (("validate_impression", imp, "impressions"),
                               ("validate_click", clk, "clicks")):
        raw = event.to_json()
        line = f"{topic}\t0\t123\t1764000000000\tu\t{raw.decode()}"

        def validate(line: str = line) -> str:
            meta, value = split_record(line)
            return join_line(parse_event(value, DIM, known), meta.timestamp, line)

        results[name] = _row(_us(validate), _us(lambda raw=raw: json.loads(raw)))

    state = linucb.init_state(DIM)
    x_arr = np.asarray(x)
    xhex = x_arr.astype("<f8").tobytes().hex()
    for k in (1, 20):
        batch = "p001\t" + "\t".join(f"o0:{xhex}" if i % 4 else f"a1:{xhex}" for i in range(k))

        def learn(batch: str = batch) -> bytes:
            _, X, r, o = parse_batch(batch, DIM)
            return codec.encode(linucb.learn_batch(state, X, r, o), 1)

        results[f"learn_batch_{k}"] = _row(
            _us(learn), _us(lambda: linucb.sherman_morrison(state.A_inv, x_arr)))
    path = write_result("bench_hotpath", {"dim": DIM, **results})
    print(f"{'step':22} {'p50 us':>8} {'p99 us':>8} {'floor p50':>10} {'x floor':>8}")
    for name, r in results.items():
        print(f"{name:22} {r['p50_us']:8.2f} {r['p99_us']:8.2f} {r['baseline_p50_us']:10.2f} "
              f"{r['ratio_p50']:8.2f}")
    print("floors: json.loads of the same record; one Sherman-Morrison step")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
