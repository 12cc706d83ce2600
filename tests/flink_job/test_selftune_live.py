"""Issue 22 item 3: exploration that tunes itself live. The job's evaluator runs the controller
on its running estimates (flink_job/evaluate.py ``LiveTuner``), checkpoints it with its sums,
publishes the decision to Redis ``<prefix>:tuner``; serving routes by it (serving/selftune.py).

Without Flink (several seeds): on a log served by the candidates' mixture whose clicks favour
one candidate, the controller switches to it once, a restore half way decides the same, a margin
no estimate can meet never switches. Through the real stack (Kafka, Redis, the job as a
subprocess, serving in process on the same Redis): the margin no estimate meets keeps the
default live, then the job restored with a margin the evidence clears switches, and serving's
answers follow (the new live candidate serves ~1 - min share of them)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from contract import exploration
from contract.config import Settings
from contract.events import Click, Impression
from endtoend.harness import JobProcess, now_ms, produce, sentinels
from flink_job.evaluate import LiveTuner, StreamEvaluator, tuner_key
from tests.helpers import PRODUCTS, FakeMetricGroup, FakeRuntimeContext, wait_for

log = logging.getLogger(__name__)

DIM = 15
W_MS = 3000  # the default reward window
POOL = PRODUCTS[:25]
CANDIDATES = "calibrated,alpha=0.1"
NAMES = ("calibrated", "alpha_0.1")


def mixture_log(seed: int, n: int, t0: int, live: str = "calibrated", favour: str = "alpha_0.1",
                min_share: float = 0.1, step_ms: int = 20) -> list[tuple[bytes, int, str]]:
    """``n`` impressions served as serving serves them under self-tuning: each candidate's list
    (random; its top agrees with the other's 40% of the time) logged as a shadow, one drawn by
    the split (``live`` 1 - min share), the mixture's probabilities. The top slot is clicked
    with probability 0.6 when it is ``favour``'s first product, else 0.1 (true values: 0.6 for
    ``favour``, 0.3 for the other). (JSON, event time, "i"|"c"), in time order."""
    rng = np.random.default_rng(seed)
    shares = {c: (1 - min_share) if c == live else min_share / (len(NAMES) - 1) for c in NAMES}
    out: list[tuple[bytes, int, str]] = []
    for i in range(n):
        t = t0 + i * step_ms
        rid = f"st{seed}-r{i}"
        lists: dict[str, tuple[str, ...]] = {}
        first = tuple(str(p) for p in rng.choice(POOL, 5, replace=False))
        lists[NAMES[0]] = first
        if rng.random() < 0.4:
            rest = [q for q in POOL if q != first[0]]
            lists[NAMES[1]] = (first[0], *(str(p) for p in rng.choice(rest, 4, replace=False)))
        else:
            rest = [q for q in POOL if q != first[0]]
            lists[NAMES[1]] = tuple(str(p) for p in rng.choice(rest, 5, replace=False))
        drawn = NAMES[0] if rng.random() < shares[NAMES[0]] else NAMES[1]
        shown = lists[drawn]
        prefix, slots = exploration.mixture_probabilities(lists, shares, shown)
        x = tuple(float(v) for v in np.round(rng.uniform(0.0, 1.0, DIM), 6))
        imp = Impression(request_id=rid, user_id=int(rng.integers(1, 50)), ts_ms=t, x=x,
                         products=shown, scores=tuple(0.0 for _ in shown), policy="linucb",
                         model_version=0, propensity=prefix[-1], experiment="self-tune",
                         variant=drawn, prefix_propensities=prefix, slot_propensities=slots,
                         shadows=tuple(lists.items()))
        out.append((json.dumps(imp.to_dict()).encode(), t, "i"))
        if rng.random() < (0.6 if shown[0] == lists[favour][0] else 0.1):
            ts = t + int(rng.integers(5, W_MS - 200))
            out.append((Click(rid, shown[0], ts).to_json(), ts, "c"))
    return sorted(out, key=lambda r: r[1])


def closed_lines(log_: list[tuple[bytes, int, str]]) -> list[str]:
    """The reward join's closed lines (t|slots|json) of the log (top-slot clicks only here)."""
    clicked = {json.loads(raw)["request_id"] for raw, _, kind in log_ if kind == "c"}
    return [f"{t}|{'0' if json.loads(raw)['request_id'] in clicked else ''}|{raw.decode()}"
            for raw, t, kind in log_ if kind == "i"]


def _settings(margin: float, interval_s: float = 0.0) -> Settings:
    return Settings.from_env({"RTREC_SELF_TUNE": CANDIDATES, "RTREC_REDIS_PREFIX": "t",
                              "RTREC_SELF_TUNE_MIN_SHARE": "0.1",  # the 90 / 10 split counted
                              "RTREC_SELF_TUNE_MARGIN": str(margin),
                              "RTREC_SELF_TUNE_INTERVAL_S": str(interval_s)})


def _run(lines: list[str], tuner: LiveTuner, ev: StreamEvaluator, batch: int = 100) -> None:
    for lo in range(0, len(lines), batch):
        ev.batch(lines[lo:lo + batch])
        tuner.step(ev)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_controller_on_the_stream_switches_once_and_a_restore_decides_the_same(
        seed: int) -> None:
    """Clicks favour alpha_0.1: the controller leaves calibrated for it once, past the margin
    (its lower bound above calibrated's upper bound by 0.02); stopped half way, encoded with the
    evaluator's state and decoded (a restore), it decides exactly as the uninterrupted one; a
    margin of 1 (no estimate can meet it) never switches."""
    lines = closed_lines(mixture_log(seed, 1200, 1_700_000_000_000))
    whole, ev = LiveTuner(_settings(0.02)), StreamEvaluator(PRODUCTS, DIM, 1.0)
    _run(lines, whole, ev)
    t = whole.tuner
    assert t.live == "alpha_0.1" and t.switch_count == 1, t.switches
    sw = t.switches[0]
    assert sw.from_ == "calibrated" and sw.challenger.lower - sw.live.upper >= 0.02
    assert whole.state()["shares"] == {"alpha_0.1": 0.9, "calibrated": pytest.approx(0.1)}
    # a restore half way: the controller's state rides in the evaluator's blob
    half, ev1 = LiveTuner(_settings(0.02)), StreamEvaluator(PRODUCTS, DIM, 1.0)
    _run(lines[:600], half, ev1)
    ev1.tuner = half.state()
    ev2 = StreamEvaluator.decode(ev1.encode(), PRODUCTS, DIM, 1.0)
    again = LiveTuner(_settings(0.02), ev2.tuner)
    _run(lines[600:], again, ev2)
    assert again.state() == whole.state()
    stubborn = LiveTuner(_settings(1.0))
    _run(lines, stubborn, StreamEvaluator(PRODUCTS, DIM, 1.0))
    assert stubborn.tuner.live == "calibrated" and stubborn.tuner.switch_count == 0


@pytest.mark.parametrize("seed", [4, 5])
def test_the_interval_counts_event_time_and_a_restore_keeps_it(seed: int) -> None:
    """With a minimum interval longer than the log, the first switch happens and a second
    (back, once the clicks favour calibrated) waits: the clock is the impressions' time."""
    t0 = 1_700_000_000_000
    one = closed_lines(mixture_log(seed, 800, t0))
    # then the world turns: calibrated's products are the clicked ones, served mostly by
    # alpha_0.1 (now live)
    two = closed_lines(mixture_log(seed + 50, 2500, t0 + 800 * 20, live="alpha_0.1",
                                   favour="calibrated"))
    slow = LiveTuner(_settings(0.0, interval_s=3600))
    fast = LiveTuner(_settings(0.0, interval_s=1))
    for tuner in (slow, fast):
        ev = StreamEvaluator(PRODUCTS, DIM, 1.0)
        _run(one + two, tuner, ev)
    assert slow.tuner.switch_count == 1 and slow.tuner.live == "alpha_0.1"
    assert fast.tuner.switch_count == 2 and fast.tuner.live == "calibrated"
    gap = fast.tuner.switches[1].at - fast.tuner.switches[0].at
    assert 1 <= gap < 3600


def test_the_jobs_function_publishes_the_decision_and_its_metrics(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Evaluate (the job's function) with self-tuning on: after each batch Redis holds the
    decision (live, shares, generation, the switch log), the gauges say it, and a new instance
    on the same state (a restore) continues it; with it off nothing is written."""
    from flink_job import evaluate as ev_mod

    class _Redis:
        def __init__(self) -> None:
            self.data: dict[str, str] = {}

        def pipeline(self, transaction: bool = False):  # type: ignore[no-untyped-def]
            r = self

            class _P:
                def set(self, k: str, v: str) -> None:
                    r.data[k] = v

                def execute(self) -> None:
                    pass
            return _P()

    class _Group(FakeMetricGroup):
        def __init__(self) -> None:
            super().__init__()
            self.groups: dict[tuple[str, str | None], _Group] = {}

        def add_group(self, key: str, value: str | None = None) -> _Group:
            return self.groups.setdefault((key, value), _Group())

    redis = _Redis()
    monkeypatch.setattr(ev_mod, "redis_client", lambda *a, **k: redis)
    lines = closed_lines(mixture_log(9, 1000, 1_700_000_000_000))
    s = _settings(0.02)
    ctx = FakeRuntimeContext()
    ctx.metrics = _Group()
    fn = ev_mod.Evaluate(s, tuple(PRODUCTS))
    fn.open(ctx)  # type: ignore[arg-type]
    want, ev = LiveTuner(s), StreamEvaluator(PRODUCTS, DIM, 1.0)  # the same batches, alone
    list(fn.process_element("ope\t" + "\t".join(lines[:10]), None))
    _run(lines[:10], want, ev, batch=10)
    first = json.loads(redis.data[tuner_key("t")])
    assert first["live"] == "calibrated" == want.tuner.live and first["generation"] == 0
    assert first["shares"] == {"calibrated": 0.9, "alpha_0.1": pytest.approx(0.1)}
    assert ctx.metrics.gauges["tuner_switches"]() == 0
    again = ev_mod.Evaluate(s, tuple(PRODUCTS))  # restored: the same state, a new instance
    again.open(ctx)  # type: ignore[arg-type]
    for lo in range(10, len(lines), 100):
        list(again.process_element("ope\t" + "\t".join(lines[lo:lo + 100]), None))
    _run(lines[10:], want, ev)
    got = json.loads(redis.data[tuner_key("t")])
    assert got["live"] == "alpha_0.1" == want.tuner.live and got["generation"] == 1
    assert got["switches"] == want.state()["switches"]
    assert got["through_ts_ms"] == ev.through_ts
    assert ctx.metrics.gauges["tuner_switches"]() == 1
    live = {name: ctx.metrics.groups[("candidate", name)].gauges["tuner_live"]()
            for name in NAMES}
    assert live == {"calibrated": 0, "alpha_0.1": 1}
    off = Settings.from_env({"RTREC_REDIS_PREFIX": "u"})
    ctx = FakeRuntimeContext()
    ctx.metrics = _Group()
    fn = ev_mod.Evaluate(off, tuple(PRODUCTS))
    fn.open(ctx)  # type: ignore[arg-type]
    list(fn.process_element("ope\t" + "\t".join(lines[:50]), None))
    assert tuner_key("u") not in redis.data and "u:ope" in redis.data
    assert "tuner_switches" not in ctx.metrics.gauges


def _served(s: Settings, n: int, seed: int) -> tuple[dict[str, int], int]:
    """``n`` answers of serving (in process, on the stack's Redis): who served each, and the
    switches serving counted (from its configured default to the decision)."""
    from serving import Recommender

    rec = Recommender(s, PRODUCTS, seed=seed)
    assert rec.self_tune is not None
    rec.self_tune.poll_once()
    out = dict.fromkeys(NAMES, 0)
    rng = np.random.default_rng(seed)
    for i in range(n):
        out[rec.recommend(i, x=rng.uniform(0, 1, DIM)).variant] += 1
    imp = rec.events.events[-1]
    assert imp.experiment == "self-tune" and dict(imp.shadows).keys() == set(NAMES)
    return out, rec.self_tune.switch_count


def _near(count: int, n: int, p: float) -> bool:
    return abs(count / n - p) < 5 * (p * (1 - p) / n) ** 0.5


@pytest.mark.integration
@pytest.mark.flink
@pytest.mark.timeout(600)
def test_the_live_loop_through_the_real_job_switches_and_serving_follows(
        job_settings: Settings, products_file: Path, tmp_path: Path) -> None:
    """A log served by the mixture (live calibrated) whose clicks favour alpha_0.1, through
    Kafka and the job: with a margin no estimate can meet (1) the decision in Redis stays
    calibrated (0 switches) and serving keeps serving ~90% of its answers with it; the job
    restored from its checkpoint with margin 0.02 and a few more impressions switches to
    alpha_0.1 once (the switch log, generation 1, the job's gauges), and serving follows: ~90%
    of its answers by alpha_0.1, the switch counted in its metrics."""
    from contract.store import redis_client
    from flink_job import checkpoints
    from tests.helpers import flink_rest_port, job_metrics

    base = job_settings.override(RTREC_SELF_TUNE=CANDIDATES, RTREC_SELF_TUNE_INTERVAL_S=0,
                                 RTREC_SELF_TUNE_MIN_SHARE=0.1)  # the 90 / 10 split counted
    s1 = base.override(RTREC_SELF_TUNE_MARGIN=1.0)
    t0 = now_ms() - 10 * 60_000
    n1, n2 = 800, 200
    log1 = mixture_log(21, n1, t0)
    end1 = t0 + n1 * 20 + W_MS + 2_000
    topic = {"i": s1.kafka.topic_impressions, "c": s1.kafka.topic_clicks}
    produce(s1, [(topic[k], raw, t, None) for raw, t, k in log1] + sentinels(s1, end1))
    r = redis_client(s1.redis)
    key = tuner_key(s1.redis.prefix)

    def decision(impressions: int) -> dict | None:
        status = json.loads(r.get(f"{s1.redis.prefix}:ope") or b"{}")
        raw = r.get(key)
        return json.loads(raw) if raw and status.get("impressions") == impressions else None

    job = JobProcess(s1, tmp_path / "job.log", ["--products", str(products_file)]).start()
    try:
        wait_for(lambda: decision(n1), 300, "the decision after every impression", job,
                 every_s=0.5)
        d1 = decision(n1)
        before = {str(p) for p in checkpoints.completed(s1.job.checkpoint_dir)}
        wait_for(lambda: any(str(p) not in before
                             for p in checkpoints.completed(s1.job.checkpoint_dir)),
                 60, "a checkpoint after the log", job)
    finally:
        job.kill()
    assert d1 is not None and d1["live"] == "calibrated" and d1["switch_count"] == 0, d1
    assert d1["margin"] == 1.0 and d1["shares"] == {"calibrated": 0.9, "alpha_0.1": 0.1}
    n = 1500
    served, switches = _served(s1, n, 1)
    assert _near(served["calibrated"], n, 0.9) and switches == 0, served

    s2 = base.override(RTREC_SELF_TUNE_MARGIN=0.02)
    log2 = mixture_log(22, n2, end1 + 1_000)
    job = JobProcess(s2, tmp_path / "job2.log", ["--products", str(products_file)])
    job.start("--restore", "latest")
    try:
        produce(s2, [(topic[k], raw, t, None) for raw, t, k in log2]
                + sentinels(s2, now_ms() + 30_000))
        wait_for(lambda: decision(n1 + n2), 300, "the decision after the new impressions",
                 job, every_s=0.5)
        d2 = decision(n1 + n2)
        metrics: dict[str, float] = {}

        def counted() -> bool:
            try:  # the REST endpoint may lag (its metrics cache: up to 10 s)
                metrics.update(job_metrics(flink_rest_port(job)))
            except (AssertionError, OSError) as exc:
                log.info("metrics not read yet: %s", exc)
                return False
            return metrics.get("ope-evaluate.tuner_switches") == 1

        wait_for(counted, 60, lambda: {k: v for k, v in metrics.items() if "tuner" in k}, job,
                 every_s=2)
    finally:
        job.kill()
    assert d2 is not None and d2["live"] == "alpha_0.1" and d2["generation"] == 1, d2
    (sw,) = d2["switches"]
    assert (sw["from"], sw["to"]) == ("calibrated", "alpha_0.1")
    assert sw["challenger"]["lower"] - sw["live"]["upper"] >= 0.02
    assert sw["at"] * 1000 > end1  # decided on the restored job's first batches
    # Flink's REST API writes the group's value with "_" for "." (alpha_0_1)
    live = {k.split(".")[-2]: v for k, v in metrics.items()
            if k.startswith("ope-evaluate.candidate.") and k.endswith(".tuner_live")}
    assert live == {"alpha_0_1": 1, "calibrated": 0}, sorted(metrics)
    served, switches = _served(s2, n, 2)
    assert _near(served["alpha_0.1"], n, 0.9) and _near(served["calibrated"], n, 0.1), served
    assert switches == 1
