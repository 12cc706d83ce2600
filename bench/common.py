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
