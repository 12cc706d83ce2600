"""Issue 14 item 5: off-policy estimates in the stream (flink_job/evaluate.py) equal the offline
command's (evaluation/offline.py) on the same log: without Flink on several seeds (the replay
alone, its state across a restore), and through the real job (Kafka, Redis, a Flink
mini-cluster; ``python -m flink_job run`` as a subprocess) on a fixed log, every target."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from contract import exploration, ope
from contract.config import Settings
from contract.events import Click, Impression
from endtoend.harness import JobProcess, Record, now_ms, produce, sentinels
from evaluation.log import LogStats, read_lines
from evaluation.offline import evaluate
from flink_job.evaluate import StreamEvaluator, redis_key, status_key
from tests.helpers import (
    PRODUCTS,
    FakeMetricGroup,
    FakeRuntimeContext,
    flink_rest_port,
    job_metrics,
    wait_for,
)

log = logging.getLogger(__name__)

DIM = 15
W_MS = 3000  # the default reward window
POOL = PRODUCTS[:25]  # few products: shadows often agree with the shown top product
TOL = 1e-9


def make_log(seed: int, n: int, t0: int, step_ms: int = 20,
             favour: str | None = None) -> list[tuple[bytes, int, str]]:
    """``n`` impressions ``step_ms`` apart and their clicks, as (JSON, event time, topic
    kind) in time order: 70% logged with probabilities (Plackett-Luce-like: prefixes that never
    grow, slot marginals) and two shadows that agree with the shown top product 40% of the time,
    15% of a ``random`` policy (no probabilities logged: known), 15% deterministic (nothing
    estimable: learned only). Clicks land inside the reward window, more often on top slots;
    with ``favour`` (a shadow), the top slot is clicked with probability 0.6 when it shows that
    shadow's first product and 0.1 otherwise."""
    rng = np.random.default_rng(seed)
    out: list[tuple[bytes, int, str]] = []
    for i in range(n):
        t = t0 + i * step_ms
        rid = f"s{seed}-r{i}"
        shown = tuple(str(p) for p in rng.choice(POOL, 5, replace=False))
        x = tuple(float(v) for v in np.round(rng.uniform(0.0, 1.0, DIM), 6))
        kind = rng.random()
        extra: dict = {}
        policy = "plackett_luce"
        if kind < 0.7:
            prefix = np.cumprod(rng.uniform(0.08, 0.7, 5))
            shadows = []
            for name in ("alpha_a", "alpha_b"):
                if rng.random() < 0.4:  # agrees with the shown top product
                    rest = [q for q in POOL if q != shown[0]]
                    lst = (shown[0], *(str(p) for p in rng.choice(rest, 4, replace=False)))
                else:
                    lst = tuple(str(p) for p in rng.choice(POOL, 5, replace=False))
                shadows.append((name, lst))
            extra = {"prefix_propensities": tuple(float(p) for p in prefix),
                     "slot_propensities": tuple(float(p) for p in rng.uniform(0.05, 0.9, 5)),
                     "shadows": tuple(shadows)}
        elif kind < 0.85:
            policy = "random"
        else:
            policy = "linucb"
        imp = Impression(request_id=rid, user_id=int(rng.integers(1, 50)), ts_ms=t, x=x,
                         products=shown, scores=tuple(0.0 for _ in shown), policy=policy,
                         model_version=0, **extra)
        out.append((json.dumps(imp.to_dict()).encode(), t, "i"))
        base = 0.15 + 0.35 * x[0]
        fav = dict(extra.get("shadows", ())).get(favour) if favour else None
        for slot, p in enumerate(shown):
            prob = base / (1 + slot)
            if favour is not None and slot == 0:
                prob = 0.6 if fav is not None and fav[0] == p else 0.1
            if rng.random() < prob:
                ts = t + int(rng.integers(5, W_MS - 200))
                out.append((Click(rid, p, ts).to_json(), ts, "c"))
    return sorted(out, key=lambda r: r[1])


def closed_lines(log_: list[tuple[bytes, int, str]]) -> list[str]:
    """What the reward join's closed side output carries per impression (t|slots|json), in
    the order the windows close."""
    clicks: dict[str, set[str]] = {}
    for raw, _, kind in log_:
        if kind == "c":
            c = json.loads(raw)
            clicks.setdefault(c["request_id"], set()).add(c["product_id"])
    out = []
    for raw, t, kind in log_:
        if kind == "i":
            d = json.loads(raw)
            slots = sorted(i for i, p in enumerate(d["products"])
                           if p in clicks.get(d["request_id"], ()))
            out.append(f"{t}|{','.join(map(str, slots))}|{raw.decode()}")
    return out


def offline(log_: list[tuple[bytes, int, str]]) -> dict:
    records = read_lines([raw for raw, _, _ in log_], DIM, LogStats())
    return evaluate(records, PRODUCTS, DIM, n_boot=1)


def assert_equal(stream: dict[str, dict], off: dict) -> None:
    """Every target's point estimates, ESS and counts equal (TOL), and the logged CTR."""
    want = {name: t for name, t in off["targets"].items() if t.get("n")}
    assert set(stream) == set(want), (sorted(stream), sorted(want))
    for name, t in want.items():
        got = stream[name]
        assert got["n"] == t["n"] and got["matched"] == t["top1"]["snips"]["matched"], name
        for est in ("ips", "snips", "dr"):
            assert got[est] == pytest.approx(t["top1"][est]["estimate"], abs=TOL), (name, est)
        assert got["ess"] == pytest.approx(t["top1"]["snips"]["ess"], rel=1e-9), name
        assert got["logged_top1_ctr"] == pytest.approx(off["logged"]["top1_ctr"], abs=TOL)
        assert got["usable"] == off["usable"]


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_the_stream_replay_equals_the_offline_command(seed: int) -> None:
    """Fed in batches whose order within a batch is shuffled (the step sorts by event time),
    the running sums give the offline command's IPS, SNIPS, DR and ESS for every target."""
    log_ = make_log(seed, 600, 1_700_000_000_000)
    lines = closed_lines(log_)
    rng = np.random.default_rng(seed)
    ev = StreamEvaluator(PRODUCTS, DIM, 1.0)
    for lo in range(0, len(lines), 37):
        chunk = lines[lo:lo + 37]
        rng.shuffle(chunk)
        ev.batch(chunk)
    s = ev.summaries()
    off = offline(log_)
    assert_equal(s, off)
    st = ev.status()
    assert st["impressions"] == off["impressions"] and st["usable"] == off["usable"]
    assert st["targets"] == sorted(s)
    assert st["through_ts_ms"] == max(t for _, t, kind in log_ if kind == "i")
    # the DR of a shadow is not its SNIPS: the model matters (the test is not vacuous)
    assert abs(s["alpha_a"]["dr"] - s["alpha_a"]["snips"]) > 1e-6
    assert s["random"]["n"] > s["alpha_a"]["n"] > 100


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_products_the_catalogue_added_while_running_are_estimated_not_dropped(seed: int) -> None:
    """Products missing from the list the evaluator started with (the live catalogue added
    them since): every impression that shows or shadows one is still estimated and learned,
    the stream equals the offline command given the same short list, and both equal a replay
    that knew those products from the start, placed where they were first met (but for
    ``random``, whose list is drawn from the products there are at the time)."""
    log_ = make_log(seed, 600, 1_700_000_000_000)
    lines = closed_lines(log_)
    late = list(POOL[3:7])
    short = [p for p in PRODUCTS if p not in late]
    ev = StreamEvaluator(short, DIM, 1.0)
    for lo in range(0, len(lines), 37):
        ev.batch(lines[lo:lo + 37])
    records = read_lines([raw for raw, _, _ in log_], DIM, LogStats())
    off = evaluate(records, short, DIM, n_boot=1)
    assert off["products_added"] == len(late) and "unknown product" not in off["skipped"]
    assert ev.counts["products_added"] == len(late)
    assert_equal(ev.summaries(), off)
    met = ev.product_ids[len(short):]
    assert sorted(met) == sorted(late)
    full = StreamEvaluator(short + met, DIM, 1.0)
    full.batch(lines)
    assert full.counts["products_added"] == 0
    got, want = ev.summaries(), full.summaries()
    assert got.keys() == want.keys()
    assert {k: v for k, v in got.items() if k != "random"} == \
        {k: v for k, v in want.items() if k != "random"}
    assert got["random"]["n"] == want["random"]["n"]
    assert ev.status()["usable"] == full.status()["usable"] == off["usable"]


def test_a_wrong_reward_model_or_a_reordered_log_is_caught() -> None:
    """The comparison can fail: learning an impression before scoring it (the outcome leaks
    into DR's model), or out of order, moves DR off the offline figure."""
    log_ = make_log(5, 400, 1_700_000_000_000)
    off = offline(log_)
    lines = closed_lines(log_)

    class Leaky(StreamEvaluator):
        def step(self, imp, slots):  # type: ignore[no-untyped-def]
            items = [self.index[p] for p in imp.products]
            self.model.learn(items, np.asarray(imp.x), slots)  # learns first: wrong
            super().step(imp, slots)

    leaky = Leaky(PRODUCTS, DIM, 1.0)
    leaky.batch(lines)
    assert abs(leaky.summaries()["alpha_a"]["dr"] - off["targets"]["alpha_a"]["top1"]["dr"][
        "estimate"]) > 1e-6
    reordered = StreamEvaluator(PRODUCTS, DIM, 1.0)
    for line in lines[::-1]:  # one per batch, newest first: the sort cannot help
        reordered.batch([line])
    assert abs(reordered.summaries()["alpha_a"]["dr"]
               - off["targets"]["alpha_a"]["top1"]["dr"]["estimate"]) > 1e-6


@pytest.mark.parametrize("seed", [6, 7])
def test_the_state_across_a_restore_continues_the_same_sums(seed: int) -> None:
    """Encoded half way (the job's checkpointed state) and decoded on a catalogue with one
    more product, the replay ends where the uninterrupted one does."""
    log_ = make_log(seed, 300, 1_700_000_000_000)
    lines = closed_lines(log_)
    whole = StreamEvaluator(PRODUCTS, DIM, 1.0)
    whole.batch(lines)
    first = StreamEvaluator(PRODUCTS, DIM, 1.0)
    first.batch(lines[:150])
    again = StreamEvaluator.decode(first.encode(), PRODUCTS, DIM, 1.0)
    again.batch(lines[150:])
    assert again.summaries() == whole.summaries()
    with pytest.raises(ValueError, match="d=15"):
        StreamEvaluator.decode(first.encode(), PRODUCTS, 8, 1.0)
    # lines the join never writes, and a body that is not an impression: counted, not fatal
    bad = StreamEvaluator(PRODUCTS, DIM, 1.0)
    bad.batch(["no bars", "12|x|{}", "5||{\"type\":\"click\"}", lines[0]])
    assert bad.counts["unreadable"] == 3 and bad.counts["impressions"] == 1
    with pytest.raises(ValueError, match="not an ope-evaluate state"):
        StreamEvaluator.decode(b"garbage", PRODUCTS, DIM, 1.0)


@pytest.mark.parametrize("seed", [8, 9, 10])
def test_the_snips_interval_is_the_self_tuners(seed: int) -> None:
    """The running SNIPS and its delta-method interval, as the controller reads them
    (``contract.ope.tuner_estimate``), equal ``contract.exploration.snips`` on the target's
    per-impression arrays."""
    log_ = make_log(seed, 500, 1_700_000_000_000)
    ev = StreamEvaluator(PRODUCTS, DIM, 1.0)
    ev.batch(closed_lines(log_))
    r, match, prop = [], [], []
    for line in closed_lines(log_):
        _, slots, body = line.split("|", 2)
        d = json.loads(body)
        if "shadows" in d:
            r.append(1.0 if slots.split(",")[0] == "0" else 0.0)
            match.append(d["shadows"]["alpha_b"][0] == d["products"][0])
            prop.append(d["prefix_propensities"][0])
    want = exploration.snips(np.array(r), np.array(match), np.array(prop))
    got = ope.tuner_estimate(ev.summaries()["alpha_b"])
    assert (got.n, got.matched) == (want.n, want.matched)
    for a, b in ((got.value, want.value), (got.lower, want.lower), (got.upper, want.upper)):
        assert a == pytest.approx(b, abs=1e-12)
    assert 0 < got.lower < got.value < got.upper < 1


def test_the_self_tuner_switches_on_the_stream_estimates_with_its_guardrails() -> None:
    """The controller fed the running estimates after each batch: where clicks favour shadow
    alpha_b it leaves alpha_a for it, once, keeping the exploration share; with a margin no
    estimate can meet it never switches."""
    lines = closed_lines(make_log(12, 2000, 1_700_000_000_000, favour="alpha_b"))
    names = ["alpha_a", "alpha_b"]
    tuner = exploration.SelfTuner(names, "alpha_a", min_explore_share=0.1, margin=0.02,
                                  min_interval=10)
    stubborn = exploration.SelfTuner(names, "alpha_a", min_explore_share=0.1, margin=0.9)
    ev = StreamEvaluator(PRODUCTS, DIM, 1.0)
    for i, lo in enumerate(range(0, len(lines), 100)):
        ev.batch(lines[lo:lo + 100])
        est = {n: ope.tuner_estimate(s) for n, s in ev.summaries().items() if n in names}
        tuner.observe(float(i), est)
        stubborn.observe(float(i), est)
    assert tuner.live == "alpha_b" and tuner.switch_count == 1, tuner.switches
    sw = tuner.switches[0]
    assert sw.challenger.lower - sw.live.upper >= 0.02
    assert tuner.shares() == {"alpha_b": 0.9, "alpha_a": pytest.approx(0.1)}
    assert stubborn.live == "alpha_a" and stubborn.switch_count == 0


@pytest.mark.integration
@pytest.mark.flink
@pytest.mark.timeout(900)
def test_in_stream_estimates_equal_the_offline_command_through_the_real_job(
        job_settings: Settings, products_file: Path, tmp_path: Path) -> None:
    """A fixed log through Kafka and the job: once every window has closed, Redis holds per
    target (two shadows, random, popularity) the offline command's IPS, SNIPS, DR and ESS on
    the same events (1e-9), the logged CTR beside them, and the job's metrics (REST and the
    Prometheus endpoint) carry them. Then, restored from its checkpoint with RTREC_OPE_STREAM
    off, the job starts (the evaluator's operators are in the graph either way, so Flink finds
    a home for its state), learns new events exactly and evaluates nothing more."""
    from devstack.stack import free_port
    from flink_job import checkpoints
    from tests.helpers import wait_learned

    prom = free_port()
    s = job_settings.override(RTREC_METRICS_PORTS=str(prom))
    n = 500
    t0 = now_ms() - 10 * 60_000
    log_ = make_log(11, n, t0)
    records: list[Record] = [
        (s.kafka.topic_impressions if kind == "i" else s.kafka.topic_clicks, raw, t, None)
        for raw, t, kind in log_]
    end1 = t0 + n * 20 + W_MS + 2_000
    produce(s, records + sentinels(s, end1))
    off = offline(log_)
    targets = [name for name, t in off["targets"].items() if t.get("n")]
    assert set(targets) == {"alpha_a", "alpha_b", "random", "popularity"}, targets

    from contract.store import redis_client

    r = redis_client(s.redis)
    job = JobProcess(s, tmp_path / "job.log", ["--products", str(products_file)]).start()
    got: dict[str, dict] = {}

    def complete() -> bool:
        got.clear()
        for name in targets:
            raw = r.get(redis_key(s.redis.prefix, name))
            if raw is None:
                return False
            got[name] = json.loads(raw)
        status = json.loads(r.get(status_key(s.redis.prefix)) or b"{}")
        return all(g["impressions"] == n for g in got.values()) \
            and status.get("impressions") == n and status.get("targets") == sorted(targets)

    try:
        wait_for(complete, 420, "every impression's estimates in Redis", job, every_s=0.5)
        assert_equal(got, off)
        metrics: dict[str, float] = {}

        def counted() -> bool:
            try:  # the REST endpoint may not answer at once on a loaded host
                metrics.update(job_metrics(flink_rest_port(job)))
            except (AssertionError, OSError) as exc:
                log.info("metrics not read yet: %s", exc)
                return False
            return metrics.get("ope-evaluate.ope_impressions") == n

        wait_for(counted, 60, "ope_impressions in the job's metrics", job, every_s=2)
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{prom}/metrics", timeout=10) as resp:
            exposition = resp.read().decode()
        before = {str(p) for p in checkpoints.completed(s.job.checkpoint_dir)}
        wait_for(lambda: any(str(p) not in before
                             for p in checkpoints.completed(s.job.checkpoint_dir)),
                 60, "a checkpoint after the log", job)
    finally:
        job.kill()
    # restored with the evaluation off: the new events are learned, none evaluated
    second = make_log(16, 150, end1 + 1_000)
    off_s = s.override(RTREC_OPE_STREAM=False)
    job = JobProcess(off_s, tmp_path / "job2.log", ["--products", str(products_file)])
    job.start("--restore", "latest")
    try:
        produce(off_s, [(s.kafka.topic_impressions if kind == "i" else s.kafka.topic_clicks,
                         raw, t, None) for raw, t, kind in second]
                + sentinels(off_s, now_ms() + 30_000))
        want: dict[str, int] = {}  # a product's version: its observations and clicks
        for raw, _, kind in log_ + second:
            d = json.loads(raw)
            for p in d["products"] if kind == "i" else [d["product_id"]]:
                want[p] = want.get(p, 0) + 1
        wait_learned(off_s, want, job, 300)
    finally:
        job.kill()
    assert json.loads(r.get(status_key(s.redis.prefix)))["impressions"] == n
    assert_equal(got, off)
    for name in targets:
        assert got[name]["window"] == "cumulative" and got[name]["through_ts_ms"] >= t0
        snips = metrics.get(f"ope-evaluate.target.{name}.ope_snips_ppm")
        assert snips == round(got[name]["snips"] * 1e6), (name, snips, sorted(metrics)[:40])
    # on the Prometheus endpoint: the key group is part of the name, the target a label
    import re

    for name in targets:
        m = re.search(r'^flink_taskmanager_job_task_operator_target_ope_snips_ppm\{[^}]*'
                      rf'target="{re.escape(name)}"[^}}]*\}} (\S+)$', exposition, re.M)
        assert m and float(m.group(1)) == round(got[name]["snips"] * 1e6), (
            name, [ln for ln in exposition.splitlines() if "ope_" in ln][:8])
    shown = sum(1 for raw, _, kind in log_ if kind == "i")
    assert got["random"]["impressions"] == shown


class _Group(FakeMetricGroup):
    """A metric group with sub-groups (``add_group(key, value)``), as the evaluator uses."""

    def __init__(self) -> None:
        super().__init__()
        self.groups: dict[tuple[str, str | None], _Group] = {}

    def add_group(self, key: str, value: str | None = None) -> _Group:
        return self.groups.setdefault((key, value), _Group())


class _FlakyRedis:
    """Enough of a Redis client: a pipeline of SETs; the first ``fail`` executes raise."""

    def __init__(self, fail: int) -> None:
        self.data: dict[str, str] = {}
        self.fail = fail

    def pipeline(self, transaction: bool = False) -> _FlakyRedis._Pipe:
        return _FlakyRedis._Pipe(self)

    class _Pipe:
        def __init__(self, r: _FlakyRedis) -> None:
            self.r, self.sets = r, []

        def set(self, key: str, value: str) -> None:
            self.sets.append((key, value))

        def execute(self) -> None:
            if self.r.fail > 0:
                self.r.fail -= 1
                raise ConnectionError("redis down")
            self.r.data.update(self.sets)


def test_a_redis_outage_is_counted_and_healed_and_a_restore_continues(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The job's function: a failed write is counted and the next batch writes the newest
    sums; a new instance on the same state (a restore) goes on to the uninterrupted figures;
    the metrics carry them per target in millionths."""
    from flink_job import evaluate as ev_mod

    redis = _FlakyRedis(fail=1)
    monkeypatch.setattr(ev_mod, "redis_client", lambda *a, **k: redis)
    s = Settings.from_env({"RTREC_REDIS_PREFIX": "t"})
    lines = closed_lines(make_log(13, 300, 1_700_000_000_000))
    ctx = FakeRuntimeContext()
    ctx.metrics = _Group()
    fn = ev_mod.Evaluate(s, tuple(PRODUCTS))
    fn.open(ctx)  # type: ignore[arg-type]
    list(fn.process_element("ope\t" + "\t".join(lines[:100]), None))
    assert fn.redis_errors == 1 and redis.data == {}
    list(fn.process_element("ope\t" + "\t".join(lines[100:200]), None))
    assert json.loads(redis.data["t:ope"])["impressions"] == 200
    again = ev_mod.Evaluate(s, tuple(PRODUCTS))  # restored: the same state, a new instance
    again.open(ctx)  # type: ignore[arg-type]
    list(again.process_element("ope\t" + "\t".join(lines[200:]), None))
    whole = StreamEvaluator(PRODUCTS, DIM, 1.0)
    whole.batch(lines)
    for name, want in whole.summaries().items():
        got = json.loads(redis.data[redis_key("t", name)])
        got.pop("updated_ms")
        assert got == want, name
        gauges = ctx.metrics.groups[("target", name)].gauges
        assert gauges["ope_snips_ppm"]() == round(want["snips"] * 1e6)
    assert ctx.metrics.gauges["ope_impressions"]() == 300
    assert ctx.metrics.gauges["ope_redis_errors"]() == 0  # the new instance's own count


def test_an_unusable_restored_state_starts_the_estimates_again(monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    """A restored value the evaluator cannot read (another d, or damaged) is logged and the
    estimates start from nothing: never a job that fails and restarts forever."""
    from flink_job import evaluate as ev_mod

    redis = _FlakyRedis(fail=0)
    monkeypatch.setattr(ev_mod, "redis_client", lambda *a, **k: redis)
    s = Settings.from_env({"RTREC_REDIS_PREFIX": "t"})
    lines = closed_lines(make_log(17, 60, 1_700_000_000_000))
    ctx = FakeRuntimeContext()
    ctx.metrics = _Group()
    other = StreamEvaluator(PRODUCTS, 8, 1.0)
    for blob in (other.encode(), b"RTOPE1 damaged", b"RTOPE1"):
        ctx.state.values[None] = blob
        fn = ev_mod.Evaluate(s, tuple(PRODUCTS))
        fn.open(ctx)  # type: ignore[arg-type]
        with caplog.at_level(logging.ERROR, logger="flink_job.evaluate"):
            list(fn.process_element("ope\t" + "\t".join(lines), None))
        assert "cannot be used" in caplog.text
        assert json.loads(redis.data["t:ope"])["impressions"] == 60
        caplog.clear()
