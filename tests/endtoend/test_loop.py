"""The closed loop end to end on the real stack: serving -> Kafka -> Flink job -> Redis ->
serving, with the oracle's clicks. Slow (a Flink mini-cluster): one short seeded run."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from contract.codec import encode
from contract.config import Settings
from contract.events import Click, Impression
from contract.features import CONTEXT_DIM
from contract.linucb import ArmState
from contract.store import ParamStore
from devstack.stack import Stack
from endtoend.harness import ridge
from endtoend.loop import LiveWorld, LoopError, LoopOptions, run_start

pytestmark = pytest.mark.integration  # the real closed loop is also marked flink


@pytest.mark.flink
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


class _FakeJob:
    """Stands in for ``python -m flink_job run``: what it has learned is written to Redis by
    the test's stand-in for ``python -m flink_job bootstrap``."""

    def __init__(self, module: str, args: list[str], settings: Settings,
                 log_path: Path) -> None:
        self.log_path = log_path

    def start(self, *extra: str) -> _FakeJob:
        return self

    def alive(self) -> bool:
        return True

    def stop(self, timeout_s: float = 30.0) -> None:
        pass


class _PastTheCheckError(Exception):
    """Raised where the loop would start serving: the bootstrap check let the start go on."""


def _small_history(products: list[str], path: Path) -> dict[str, list[tuple[np.ndarray, float]]]:
    """30 historical impressions (x with one gender column set, as the features have it, so
    the loop can count learned clicks), every third clicked; returns what they teach."""
    rng = np.random.default_rng(5)
    lines: list[bytes] = []
    observations: dict[str, list[tuple[np.ndarray, float]]] = defaultdict(list)
    for i in range(30):
        x = rng.uniform(0, 1, CONTEXT_DIM)
        x[3], x[4] = (1.0, 0.0) if i % 2 else (0.0, 1.0)
        pid, clicked = products[i % 7], i % 3 == 0
        lines.append(Impression(f"h{i}", 1, 1_000 + i, tuple(float(v) for v in x), (pid,),
                                (0.0,), "historical", 0, 1 / len(products)).to_json())
        if clicked:
            lines.append(Click(f"h{i}", pid, 1_010 + i).to_json())
        observations[pid].append((x, 1.0 if clicked else 0.0))
    path.write_bytes(b"\n".join(lines) + b"\n")
    return observations


@pytest.mark.parametrize("learned", ["all", "one observation less", "one click less"])
def test_a_bootstrapped_start_goes_on_only_when_the_job_learned_the_whole_history(
        stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, learned: str) -> None:
    import endtoend.loop as loop

    world = LiveWorld.load("rules")
    products = [p.product_id for p in world.shop.products]
    history = _small_history(products, tmp_path / "history.jsonl")
    taught = {pid: list(obs) for pid, obs in history.items()}
    if learned == "one observation less":
        taught[products[1]].pop()
    elif learned == "one click less":
        x, _ = taught[products[0]][0]
        taught[products[0]][0] = (x, 0.0)

    def bootstrap(cmd: list[str], env: dict[str, str], **_: object) -> None:
        """What the job publishes once it learned ``taught`` (batch ridge, as it learns)."""
        assert cmd[-2:] == ["bootstrap", str(tmp_path / "history.jsonl")]
        s = Settings.from_env(env)
        st = ParamStore.from_settings(s, timeout_s=2)
        for pid, (n, A_inv, b) in ridge(taught, s.model.dim, s.model.l2).items():
            clicks = sum(1 for _, r in taught[pid] if r)
            st.write(pid, encode(ArmState(A_inv, b, n, n + clicks)))

    def past_the_check(*args: object, **kwargs: object) -> None:
        raise _PastTheCheckError

    monkeypatch.setattr(loop, "ChildProcess", _FakeJob)
    monkeypatch.setattr(loop, "wait_live", lambda *args: 0.0)
    monkeypatch.setattr(loop.subprocess, "run", bootstrap)
    monkeypatch.setattr(loop.Recommender, "from_settings", past_the_check)
    opts = LoopOptions(visits=10, starts=("bootstrapped",), history=tmp_path / "history.jsonl",
                       work_dir=tmp_path / "loop", ready_timeout_s=1.0, progress=False)
    if learned == "all":
        with pytest.raises(_PastTheCheckError):
            run_start("bootstrapped", stack.settings, world, opts)
    else:
        with pytest.raises(LoopError, match=r"the job learned \d+ of the history's 30 "
                                            r"observations and \d+ of its 10 clicks"):
            run_start("bootstrapped", stack.settings, world, opts)
