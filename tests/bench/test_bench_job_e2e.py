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



def test_thread_cpu_counts_the_cpu_of_the_process_group_it_is_given(tmp_path: Path) -> None:
    """The stage cut's per-thread CPU (bench_job.thread_cpu_s): a child in a group of its own
    that has burnt 0.5 s of CPU shows about that under its name, and nothing more once it
    sleeps; a group that does not exist reads as nothing."""
    import subprocess
    import sys
    import time

    ready = tmp_path / "ready"
    spin = ("import time, pathlib\n"
            "while time.process_time() < 0.5: pass\n"
            f"pathlib.Path({str(ready)!r}).write_text('x')\n"
            "time.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "-c", spin], start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert child.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        name = Path(f"/proc/{child.pid}/comm").read_text().strip()
        before = bench_job.thread_cpu_s(child.pid)
        assert before[name] >= 0.45  # /proc counts whole 10 ms ticks
        used = bench_job._cpu_between(before, bench_job.thread_cpu_s(child.pid))
        assert used["total"] < 0.2 and name in used["threads"]  # asleep since
    finally:
        child.kill()
        child.wait()
    assert bench_job.thread_cpu_s(child.pid) == {}
