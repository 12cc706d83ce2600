"""Small helpers shared by the benchmarks: percentiles and the results file."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path("results")


def percentiles_ms(samples_s: list[float] | np.ndarray) -> dict[str, float]:
    """p50 / p99 / mean of durations given in seconds, in milliseconds."""
    a = np.asarray(samples_s) * 1000.0
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
            "mean_ms": float(a.mean()), "n": int(a.size)}


def write_result(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    payload = {**payload, "machine": {"python": platform.python_version(),
                                      "cpus": __import__("os").cpu_count(),
                                      "when": time.strftime("%Y-%m-%dT%H:%M:%S")}}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def interleaved_request_times(recs: dict[str, Any], xs: np.ndarray, requests: int,
                              baseline: str) -> dict[str, dict[str, float]]:
    """``recommend(i, x=xs[i], k=5)`` on each recommender in turn, request by request (so all
    see the same machine: it is shared), after 50 warm-up calls each; per recommender its
    percentiles and their ratios to ``baseline``'s and the milliseconds added."""
    times: dict[str, list[float]] = {name: [] for name in recs}
    for rec in recs.values():  # warm-up
        for i in range(50):
            rec.recommend(i, x=xs[i], k=5)
    perf = time.perf_counter
    for i in range(requests):
        for name, rec in recs.items():
            t0 = perf()
            rec.recommend(i, x=xs[i], k=5)
            times[name].append(perf() - t0)
            if len(rec.events.events) > 10_000:  # MemoryEventLog: keep memory flat
                rec.events.events.clear()
    out = {name: percentiles_ms(t) for name, t in times.items()}
    base = out[baseline]
    for r in out.values():
        r["p50_ratio"] = r["p50_ms"] / base["p50_ms"]
        r["p99_ratio"] = r["p99_ms"] / base["p99_ms"]
        r["p50_added_ms"] = r["p50_ms"] - base["p50_ms"]
        r["p99_added_ms"] = r["p99_ms"] - base["p99_ms"]
    return out
