"""``make demo`` on the standalone Flink cluster (issue 17, part 1): while a short demo runs, the
job is visible through the REST API the web UI reads - running, its vertices, a completed
checkpoint, the job's own metrics non-zero - and the demo prints the UI's address, then stops
the cluster it started.

The demo is ``python -m endtoend demo`` as a process, on the session's Kafka and Redis (it sees
them running and leaves them) and a free web UI port; one cold start of 400 visits.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from contract.config import Settings
from devstack.stack import Stack, free_port
from endtoend.processes import ROOT
from flink_job import cluster
from tests.helpers import alive, job_metrics, rest_get

pytestmark = [pytest.mark.integration, pytest.mark.flink, pytest.mark.timeout(1200)]

JOB_NAME = "rtrec-linucb-learner"


def _running_job(port: int) -> str | None:
    try:
        jobs = rest_get(port, "/jobs/overview")["jobs"]
    except OSError:
        return None
    ids = [j["jid"] for j in jobs if j["name"] == JOB_NAME and j["state"] == "RUNNING"]
    return ids[0] if ids else None


def test_the_demos_cluster_job_is_visible_through_the_web_uis_rest_api(
        stack: Stack, tmp_path: Path) -> None:
    port = free_port()
    s: Settings = stack.settings.override(RTREC_FLINK_REST_PORT=port,
                                          RTREC_CHECKPOINT_INTERVAL_MS=1000)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTREC_")}
    env.update(s.to_env())
    out_path = tmp_path / "demo.out"
    cmd = [sys.executable, "-m", "endtoend", "demo", "--starts", "cold", "--visits", "400",
           "--rate", "40", "--no-progress", "--results-dir", str(tmp_path / "results"),
           "--work-dir", str(tmp_path / "loop")]
    seen: dict[str, object] = {}
    with open(out_path, "wb") as out:
        demo = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        jid = None
        while jid is None:
            assert demo.poll() is None, out_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "no running job on the demo's cluster"
            jid = _running_job(port)
            time.sleep(0.5)
        # everything the UI shows, read while the job runs (the loop cancels it at the end)
        while not {"vertices", "checkpoint", "metrics"} <= set(seen):
            assert _running_job(port) == jid, (
                f"the job ended before all was seen: {sorted(seen)}; "
                f"{out_path.read_text()[-3000:]}")
            assert time.monotonic() < deadline, f"seen only {sorted(seen)}"
            detail = rest_get(port, f"/jobs/{jid}")
            names = {v["name"] for v in detail["vertices"]}
            if (all(v["status"] == "RUNNING" for v in detail["vertices"])
                    and any("validate" in n for n in names)
                    and any("publish-redis" in n for n in names)):
                seen["vertices"] = sorted(names)
            counts = rest_get(port, f"/jobs/{jid}/checkpoints")["counts"]
            if counts["completed"] >= 1:
                seen["checkpoint"] = counts
            m = job_metrics(port)
            dead_by_reason = {k: v for k, v in m.items()
                              if k.startswith("validate.dead_letters_") and v > 0}
            if (m.get("validate.events_in", 0) > 0
                    and m.get("publish-redis.updates_published", 0) > 0
                    and "publish-redis.publish_lag_ms" in m and dead_by_reason):
                # the dead letter: the loop's liveness probe, a record that is no event
                seen["metrics"] = {k: m[k] for k in ("validate.events_in",
                                                      "publish-redis.updates_published",
                                                      "publish-redis.publish_lag_ms")}
                seen["dead_letters"] = dead_by_reason
            time.sleep(0.5)
        assert demo.wait(300) == 0, out_path.read_text()[-3000:]
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, 9)
            demo.wait(30)
        leftover = [p for p in cluster.pids(s) if alive(p)]
        for p in leftover:  # our own cluster's JVMs, by pid
            os.kill(p, 9)
    text = out_path.read_text()
    assert f"http://127.0.0.1:{port}" in text and "Flink web UI" in text, text[-3000:]
    assert "stopped the Flink cluster this demo started" in text, text[-3000:]
    assert not leftover, f"the demo left cluster processes: {leftover}"
    assert (tmp_path / "results" / "simulate.json").is_file()
