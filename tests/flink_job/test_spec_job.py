"""The job under a feature spec of a team's own (issue 13, item 6), as a user starts it
(``python -m flink_job run``): d follows RTREC_FEATURE_SPEC, the job records the spec in
``<prefix>:spec`` before it learns, refuses to start against a store holding another spec's
parameters, and with --replace-spec drops them and learns under its own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from contract.config import Settings
from contract.context_spec import read_store_spec
from contract.features import DATA_DIR, FeatureSpace
from endtoend.harness import JobProcess, now_ms, produce, ridge, seeded_traffic, versions
from endtoend.processes import child_env
from tests.helpers import PRODUCTS, assert_parity, store, wait_for, wait_learned

ROOT = Path(__file__).resolve().parents[2]
CROSSES = DATA_DIR / "context_spec_crosses.json"

pytestmark = [pytest.mark.integration, pytest.mark.flink]


def test_the_job_learns_under_its_spec_and_guards_the_store(
        job_settings: Settings, products_file: Path, tmp_path: Path) -> None:
    s = job_settings.override(RTREC_FEATURE_SPEC=CROSSES)
    assert s.model.dim == 23
    crosses = FeatureSpace.load(spec=CROSSES).context.identity()
    traffic = seeded_traffic(s, 120, seed=13, start_ms=now_ms(), products=PRODUCTS[:10])
    job = JobProcess(s, tmp_path / "job.log", ["--products", str(products_file)]).start()
    try:
        wait_for(lambda: read_store_spec(store(s).client, s.redis.prefix)[0] == crosses, 60,
                 "the job's spec recorded", job)
        produce(s, traffic.records)
        wait_learned(s, versions(traffic.observations), job, timeout_s=120)
        assert_parity(s, ridge(traffic.observations, 23, s.model.l2))  # d = 23 learned
    finally:
        job.kill()
    learned = store(s).versions()

    # the shipped spec against that store: refused, exit 2, the store untouched
    shipped = s.override(RTREC_FEATURE_SPEC="")
    run = subprocess.run([sys.executable, "-m", "flink_job", "run", "--products",
                          str(products_file)], env=child_env(shipped), cwd=ROOT,
                         capture_output=True, timeout=180)
    err = run.stderr.decode()
    assert run.returncode == 2, err[-3000:]
    assert "refusing to start" in err and "crosses@1" in err and "shipped@1" in err, err[-3000:]
    assert store(s).versions() == learned
    assert read_store_spec(store(s).client, s.redis.prefix)[0] == crosses

    # told to: the crosses parameters are dropped and the shipped spec recorded
    job = JobProcess(shipped, tmp_path / "job2.log",
                     ["--products", str(products_file), "--replace-spec"]).start()
    try:
        want = FeatureSpace.load().context.identity()
        wait_for(lambda: read_store_spec(store(s).client, s.redis.prefix)[0] == want, 60,
                 "the shipped spec recorded", job)
        assert store(s).versions() == {}
        assert json.loads(store(s).client.get(s.redis.key("spec")))["dim"] == 15
    finally:
        job.kill()
