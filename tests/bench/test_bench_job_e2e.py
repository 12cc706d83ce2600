"""The end-to-end freshness probe's bookkeeping and the results file's merge (bench/bench_job.py):
fast, no services."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import bench_job


def test_a_version_skipped_over_is_held_from_the_look_that_found_a_later_one() -> None:
    held = {"a": 0, "b": 0}
    seen: dict[str, int] = {}
    bench_job.note_held(held, seen, {"a": 2, "b": 0}, 100)
    bench_job.note_held(held, seen, {"a": 2, "b": 1}, 200)
    bench_job.note_held(held, seen, {"a": 5, "b": 1}, 300)
    assert seen == {"a:1": 100, "a:2": 100, "b:1": 200, "a:3": 300, "a:4": 300, "a:5": 300}
    assert held == {"a": 5, "b": 1}
    bench_job.note_held(held, seen, {"a": 5, "b": 1}, 400)  # nothing new: nothing restamped
    assert seen["a:5"] == 300 and len(seen) == 6


def test_merge_keeps_the_other_keys_of_the_results_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_job, "RESULTS", tmp_path)
    monkeypatch.setattr("bench.common.RESULTS", tmp_path)
    (tmp_path / "bj.json").write_text(json.dumps({"throughput": {"ratio": 0.2},
                                                  "stages_eps": {"noop": 1.0}}))
    e2e = {"500": {"p50": 1.0, "p99": 2.0, "probes": 3, "probes_never_served": 0,
                   "loadavg_1m": 1.0, "breakdown_ms": {
                       "append_to_redis_notice": {"p50": 0.5, "p99": 1.0},
                       "notice_to_serving": {"p50": 0.5, "p99": 1.0}}}}
    assert bench_job._merge("bj", {"freshness_e2e_ms": e2e}, (1.0, 1.0, 1.0)) == 0
    got = json.loads((tmp_path / "bj.json").read_text())
    assert got["throughput"] == {"ratio": 0.2} and got["stages_eps"] == {"noop": 1.0}
    assert got["freshness_e2e_ms"] == e2e
