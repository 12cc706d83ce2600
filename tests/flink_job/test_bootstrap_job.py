"""Bootstrap through the real job, and a restore from a checkpoint's path, in process mode.

The job runs with ``RTREC_PYTHON_MODE=process`` (Flink's Beam runner and a Python worker;
on the local mini-cluster PyFlink serves it from the client process), the mode docs/JOB.md
says works with the same code; every other test of the real job runs thread mode.
``python -m flink_job bootstrap`` appends a small history (a few hundred events) to the
topics of a running job: the job must learn exactly that history, n, b and A^-1 of every
product equal to batch ridge of it. The job is then SIGKILLed just after a checkpoint that
holds the history, more traffic is appended, and the job is started with ``--restore`` and
that checkpoint's path: it must end where one uninterrupted run of history + traffic ends
(nothing of the history learned twice, nothing lost).
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from contract.config import Settings
from endtoend.harness import JobProcess, Traffic, now_ms, produce, ridge, seeded_traffic, versions
from endtoend.processes import ROOT, child_env
from flink_job import checkpoints
from tests.helpers import (
    PRODUCTS,
    assert_parity,
    flink_rest_port,
    live_metrics,
    rest_get,
    wait_for,
    wait_learned,
)

pytestmark = [pytest.mark.integration, pytest.mark.flink]
log = logging.getLogger(__name__)


def _history(s: Settings, path: Path) -> Traffic:
    """400 events of a day long gone (the job would refuse them as they are; bootstrap shifts
    them to now), written as the JSON lines ``python -m producer prepare-data`` writes."""
    t = seeded_traffic(s, 400, seed=42, start_ms=now_ms() - 30 * 86_400_000,
                       products=PRODUCTS[:40], step_ms=25.0, click_p=0.4)
    path.write_bytes(b"".join(value + b"\n" for _, value, _, _ in t.records))
    return t


def test_bootstrap_learns_the_history_and_restore_path_resumes_after_it(
        job_settings: Settings, products_file: Path, tmp_path: Path) -> None:
    s = job_settings.override(RTREC_PYTHON_MODE="process")
    history = _history(s, tmp_path / "history.jsonl")
    job = JobProcess(s, tmp_path / "job.log", ["--products", str(products_file)]).start()
    try:
        boot = subprocess.run([sys.executable, "-m", "flink_job", "bootstrap",
                               str(tmp_path / "history.jsonl")], env=child_env(s), cwd=ROOT,
                              capture_output=True, timeout=120)
        assert boot.returncode == 0, boot.stderr.decode()[-2000:]
        assert b"appended 400 events" in boot.stderr
        wait_learned(s, versions(history.observations), job, timeout_s=60)
        assert_parity(s, ridge(history.observations, s.model.dim, s.model.l2))

        # a checkpoint that holds the whole history, then SIGKILL before anything else comes
        before = {str(p) for p in checkpoints.completed(s.job.checkpoint_dir)}
        wait_for(lambda: any(str(p) not in before
                             for p in checkpoints.completed(s.job.checkpoint_dir)),
                 60, "a checkpoint after the history was learned", job, every_s=0.2)
        chk = max((p for p in checkpoints.completed(s.job.checkpoint_dir)
                   if str(p) not in before), key=lambda p: int(p.name.split("-")[1]))
        job.kill(signal.SIGKILL)
        assert (chk / "_metadata").is_file()

        more = seeded_traffic(s, 300, seed=43, start_ms=now_ms(), products=PRODUCTS[20:60],
                              step_ms=3.0, click_p=0.4)
        produce(s, more.records)
        job.start("--restore", str(chk))
        both = Traffic()
        for t in (history, more):
            for pid, obs in t.observations.items():
                both.observations[pid].extend(obs)
        wait_learned(s, versions(both.observations), job, timeout_s=90)
        assert_parity(s, ridge(both.observations, s.model.dim, s.model.l2))
        # restored from that checkpoint (Flink says so), so it validated only what came after
        # it: a fresh start reading the whole log again would learn the same state
        port = flink_rest_port(job)
        (jid,) = [j["jid"] for j in rest_get(port, "/jobs/overview")["jobs"]]
        restored = rest_get(port, f"/jobs/{jid}/checkpoints")["latest"]["restored"]
        assert restored is not None, "Flink restored no checkpoint"
        assert restored["external_path"].rstrip("/").endswith(str(chk)), restored
        wait_for(lambda: live_metrics(job).get("validate.events_in") == len(more.records), 30,
                 "the restored job's events_in: the new traffic only", job, every_s=1.0)
        assert job.alive()
    finally:
        job.kill()
    text = job.log_path.read_text(errors="replace")
    assert "(mode process, parallelism 1, restore none)" in text
    assert f"(mode process, parallelism 1, restore {chk})" in text
