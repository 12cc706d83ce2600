"""The closed loop end to end on the real stack: serving -> Kafka -> Flink job -> Redis ->
serving, with the oracle's clicks. Slow (a Flink mini-cluster): one short seeded run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from contract.config import Settings
from devstack.stack import Stack
from endtoend.loop import LiveWorld, LoopOptions, run_start

pytestmark = [pytest.mark.integration, pytest.mark.flink]


def test_cold_start_stream_learns_and_every_click_reaches_the_job(
        stack: Stack, tmp_path: Path) -> None:
    settings: Settings = stack.settings
    opts = LoopOptions(visits=1500, rate=60.0, seed=1237, work_dir=tmp_path / "loop",
                       progress=False)
    outcomes, facts = run_start("cold", settings, LiveWorld.load("rules"), opts)

    # every click of the streaming policy was learned by the job, and every shown product
    assert facts["learned_clicks"] == facts["stream_clicks"] > 0
    assert facts["learned_observations"] == facts["expected_observations"] == 1500 * 5

    # it learned: over the last third, its top-1 CTR beats random's on the same visits
    last = slice(1000, None)
    stream = np.mean(np.asarray(outcomes["linucb_stream"].clicked[last]) == 0)
    rand = np.mean(np.asarray(outcomes["random"].clicked[last]) == 0)
    assert stream > rand + 0.05, (stream, rand)
    # and parameters were fresh when serving answered
    age = np.asarray(outcomes["linucb_stream"].param_age_ms)
    assert np.nanmedian(age) < 1000
