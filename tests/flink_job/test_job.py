"""The job end to end on a real Kafka, Redis and Flink mini-cluster (``python -m flink_job run``
as a subprocess, as a user runs it). Each job start costs 10-20 s, so one run checks parity,
dead letters and the reward join together, and the exactly-once run kills and restarts one
job twice.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import signal
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from contract import reasons
from contract.config import Settings
from contract.events import Click
from contract.linucb import ucb_scores
from endtoend.harness import (
    JobProcess,
    Record,
    Traffic,
    now_ms,
    produce,
    ridge,
    seeded_traffic,
    sentinels,
    versions,
)
from flink_job import checkpoints
from flink_job.job import JobOptions, flink_config
from tests.helpers import (
    PRODUCTS,
    DeadLetters,
    Scraper,
    assert_parity,
    impression_json,
    live_metrics,
    read_topics,
    store,
    wait_for,
    wait_learned,
)

pytestmark = pytest.mark.integration  # the Flink tests are also marked flink, one by one
log = logging.getLogger(__name__)

SEPARATED = b'{"v": 1, "type":\x1e"click"}'  # the ASCII record separator, not valid JSON
LOG_PRODUCTS = PRODUCTS[:185]  # p185.. are kept for the reward-join cases


def _join_cases(s: Settings, t0: int, rng: np.random.Generator,
                traffic: Traffic) -> tuple[list[Record], Counter, list[tuple[str, bytes]]]:
    """Reward-join cases on products of their own, and one bad record of every kind, all in
    partition 0 of their topic: the duplicate impression must be read after the original
    (with Kafka's default partitioner it sometimes came first, from another partition, and
    the original was the one dead-lettered). Returns the records, the dead letters expected
    by (operator, reason), and the (reason, value) of each record to be dead-lettered."""
    w = int(s.job.reward_window_s * 1000)
    imp_t, clk_t, dl = s.kafka.topic_impressions, s.kafka.topic_clicks, Counter()
    recs: list[Record] = []
    refused: list[tuple[str, bytes]] = []

    def dead(where: str, reason: str, value: bytes) -> None:
        dl[where, reason] += 1
        refused.append((reason, value))

    def x() -> np.ndarray:
        return np.round(rng.normal(size=s.model.dim), 6)

    def add_imp(rid: str, ts: int, products: tuple[str, ...], rewards: dict[str, float]) -> None:
        xv = x()
        recs.append((imp_t, impression_json(rid, ts, products, xv), ts, 0))
        for p in products:
            traffic.observe(p, xv, rewards.get(p, 0.0))

    def add_click(rid: str, ts: int, product: str) -> bytes:
        recs.append((clk_t, Click(rid, product, ts).to_json(), ts, 0))
        return recs[-1][1]

    join = "reward-join"
    # click inside the window: reward 1 for it, 0 for the other shown product
    add_imp("j-click", t0, ("p190", "p191"), {"p190": 1.0})
    add_click("j-click", t0 + 1000, "p190")
    # no click: reward 0 after the window; a click on a product not shown is an orphan
    add_imp("j-none", t0 + 10, ("p192",), {})
    dead(join, "orphan_click", add_click("j-none", t0 + 20, "p196"))
    # click after the window: dead-lettered, not learned (p193 gets its 0)
    add_imp("j-late", t0 + 20, ("p193",), {})
    dead(join, "late_click", add_click("j-late", t0 + 20 + w + 1500, "p193"))
    # click appended before its impression (other topic, earlier offset): still counts
    add_click("j-first", t0 + 200, "p194")
    add_imp("j-first", t0 + 30, ("p194", "p195"), {"p194": 1.0})
    # request ids holding the separators of the JVM lines and batches still join
    add_imp("j-odd,\t%41\n", t0 + 35, ("p198",), {"p198": 1.0})
    add_click("j-odd,\t%41\n", t0 + 300, "p198")
    add_imp("j-rs\x1eonly", t0 + 36, ("p199",), {"p199": 1.0})
    add_click("j-rs\x1eonly", t0 + 310, "p199")
    # click for a request never shown
    dead(join, "orphan_click", add_click("j-orphan", t0 + 40, "p197"))
    # a double tap: the reward is paid once (b = x, not 2x), the second click dead-lettered
    add_imp("j-dup", t0 + 41, ("p185", "p186"), {"p185": 1.0})
    add_click("j-dup", t0 + 400, "p185")
    dead(join, "bad_value", add_click("j-dup", t0 + 450, "p185"))
    # clicks on two products of one impression: each is paid
    add_imp("j-two", t0 + 42, ("p187", "p188", "p189"), {"p187": 1.0, "p189": 1.0})
    add_click("j-two", t0 + 500, "p189")
    add_click("j-two", t0 + 600, "p187")

    good = json.loads(impression_json("bad", t0, ("p001",), x()))
    bad: list[tuple[str, str, bytes]] = [
        ("validate", "unparseable", b"garbage{"),
        ("validate", "unparseable", b"\xff\xfe{}"),  # not UTF-8
        ("validate", "unparseable", b"[" * 10_000),  # RecursionError in json
        ("validate", "unparseable", SEPARATED),  # holds the batches' separator
        ("validate", "oversized", b'{"pad":"' + b"x" * (s.job.max_event_bytes + 10) + b'"}'),
        ("validate", "missing_field",
         json.dumps({k: v for k, v in good.items() if k != "x"}).encode()),
        ("validate", "wrong_type", json.dumps({**good, "user_id": "7"}).encode()),
        ("validate", "not_finite",
         json.dumps({**good, "x": [float("nan")] * s.model.dim}).encode()),
        ("validate", "not_finite",
         json.dumps(good).replace('"x": [', '"x": [1e309, ', 1).encode()),
        ("validate", "wrong_dimension", json.dumps({**good, "x": [0.0, 1.0, 2.0]}).encode()),
        ("validate", "unknown_product",
         json.dumps({**good, "products": ["p999"], "scores": [0.0]}).encode()),
        ("validate", "unsupported_version", json.dumps({**good, "v": 99}).encode()),
        ("validate", "bad_value", json.dumps({**good, "type": "view"}).encode()),
        (join, "duplicate_impression", impression_json("j-click", t0 + 50, ("p190",), x())),
    ]
    for i, (where, reason, value) in enumerate(bad):
        recs.append((imp_t, value, t0 + 60 + i, 0))
        dead(where, reason, value)
    return recs, dl, refused


def _wait_metrics(job: JobProcess, want: dict[str, float],
                  timeout_s: float = 45.0) -> dict[str, float]:
    """Poll the job's metrics (its Prometheus endpoint) until each named one equals ``want``."""
    got: dict[str, float] = {}

    def settled() -> bool:
        nonlocal got
        got = live_metrics(job)
        return all(got.get(k) == v for k, v in want.items())

    try:
        wait_for(settled, timeout_s, "the job's metrics", job, every_s=1.0)
    except AssertionError as exc:
        diff = {k: (got.get(k), v) for k, v in want.items() if got.get(k) != v}
        raise AssertionError(f"{exc}; (got, want): {diff}") from exc
    return got


def _assert_exact_sources(items: list[dict], records: dict[tuple[str, int, int], tuple]) -> None:
    """Each dead letter of a source record names that record exactly: at its topic, partition
    and offset Kafka holds the value it carries (its prefix and size when oversized), with its
    timestamp; no two name the same record."""
    positions = [(d["topic"], d["partition"], d["offset"]) for d in items]
    assert len(set(positions)) == len(positions)
    for d, pos in zip(items, positions, strict=True):
        assert pos in records, d
        value, ts = records[pos]
        assert d["timestamp"] == ts, d
        if "value" in d:
            assert d["value"].encode() == value, d
        elif d.get("value_truncated"):
            prefix = base64.b64decode(d["value_b64"])
            assert value.startswith(prefix) and d["value_size"] == len(value) > len(prefix), d
        else:
            assert base64.b64decode(d["value_b64"]) == value, d


@pytest.mark.flink
def test_parity_dead_letters_and_reward_join(job_settings: Settings, products_file: Path,
                                            tmp_path: Path) -> None:
    """5,000 seeded events plus join cases and every kind of bad record, one job run with no
    restart allowed: the learned state equals batch ridge in numpy (1e-9) on the good events,
    ranks like MABWiser's LinUCB, every bad record is dead-lettered with its reason and its
    exact source position, and the job's metrics count all of it."""
    s = job_settings
    t0 = now_ms() - 30 * 60_000
    traffic = seeded_traffic(s, 5000, seed=s.world.seed, start_ms=t0, products=LOG_PRODUCTS)
    rng = np.random.default_rng(7)
    cases, expected_dl, refused = _join_cases(s, t0 + 60_000, rng, traffic)
    refused_by_validate = sum(n for (w, _), n in expected_dl.items() if w == "validate")
    parts = s.kafka.topic_partitions
    far = sentinels(s, now_ms() + 10 * 60_000)
    expected_dl["validate", "unparseable"] += len(far)
    refused += [("unparseable", value) for _, value, _, _ in far]
    everything = [*traffic.records, *cases, *far]
    produce(s, everything)
    expected = ridge(traffic.observations, s.model.dim, s.model.l2)
    n_dead = sum(expected_dl.values())

    job = JobProcess(s, tmp_path / "job.log",
                     ["--products", str(products_file), "--max-restarts", "0"]).start()
    dead = DeadLetters(s)
    # the job's endpoint scraped all along: its metrics must be safe to read while it learns
    scraper = Scraper(job).start()
    try:
        st = store(s)
        wait_for(lambda: bool(st.versions()), 60, "a first update", job, every_s=0.2)
        log.info("first update published")
        wait_learned(s, versions(traffic.observations), job, timeout_s=150)
        log.info("all learned")
        items = dead.until_quiet(n_dead, 30, job=job)
        # the job's own metrics (docs/JOB.md), read through Flink's REST API
        imp_t = s.kafka.topic_impressions
        n_imp = sum(1 for r in everything if r[0] == imp_t)
        rewards = sum(1 for obs in traffic.observations.values() for _, r in obs if r)
        want = {"validate.events_in": len(everything),
                "validate.impressions_valid": n_imp - refused_by_validate - parts,
                "validate.clicks_valid": len(everything) - n_imp - parts,
                "reward-join.observations": traffic.n_observations,
                "reward-join.rewards_click": rewards,
                "micro-batch.microbatch_items": traffic.n_observations + rewards,
                "learn-linucb.updates_learned": traffic.n_observations + rewards,
                "learn-linucb.dead_letters": 0, "publish-redis.updates_refused_older": 0,
                "publish-redis.publish_pending": 0}
        for where, which in (("validate", reasons.VALIDATION), ("reward-join", reasons.JOIN)):
            want[f"{where}.dead_letters"] = sum(n for (w, _), n in expected_dl.items()
                                                if w == where)
            for r in which:
                want[f"{where}.dead_letters_{r}"] = expected_dl[where, r]
        _wait_metrics(job, want)
        # source-batch is in the source's vertex since validate became a two-input operator
        # (the catalog's broadcast input)
        wait_for(lambda: live_metrics(job).get("source-batch.source_batches", 0) >= 1, 30,
                 "source-batch.source_batches >= 1", job, every_s=1.0)
        assert job.alive(), "the job failed (no restart was allowed)"
        log.info("%d scrapes", scraper.scrapes)
        assert scraper.scrapes >= 100, scraper.scrapes
        # the mini-cluster and RocksDB work in the run's own folder, which the next run
        # removes (a killed one cannot; flink_job/job.py local_dirs)
        work = Path(tempfile.gettempdir()) / f"rtrec-flink-{os.getuid()}" / str(job.proc.pid)
        assert list(work.glob("minicluster_*")) and list(work.glob("job_*_op_*")), work
        # every RocksDB instance took the job's memtable size (RTREC_ROCKSDB_WRITE_BUFFER_MB)
        log_dir = Path(flink_config(s, JobOptions())["state.backend.rocksdb.log.dir"])
        logs = list(log_dir.glob("*LOG"))
        sizes = {line.rsplit(":", 1)[1].strip() for f in logs for line in
                 f.read_text(errors="replace").splitlines()
                 if "Options.write_buffer_size:" in line}
        assert len(logs) >= 4 and sizes == {str(s.job.rocksdb_write_buffer_mb << 20)}, sizes
    finally:
        scraper.stop()
        job.kill()
        dead.close()
    params = assert_parity(s, expected)

    # reward join: click in window -> 1, none -> 0, late -> not learned, a duplicate click
    # paid once, two clicked products each paid
    for pid, reward in (("p190", 1.0), ("p191", 0.0), ("p192", 0.0), ("p193", 0.0),
                        ("p194", 1.0), ("p195", 0.0), ("p198", 1.0), ("p199", 1.0),
                        ("p185", 1.0), ("p186", 0.0), ("p187", 1.0), ("p188", 0.0),
                        ("p189", 1.0)):
        n, _, b = expected[pid]
        assert params[pid].state.n == 1 and n == 1
        assert np.allclose(params[pid].state.b, b) and (np.abs(b).sum() > 0) == bool(reward)
        assert params[pid].version == 1 + int(reward)  # one observation, one paid click
    assert "p196" not in params and "p197" not in params

    # dead letters: each reason, the exact source record and the original value
    by_reason = Counter()
    for (_, reason), n in expected_dl.items():
        by_reason[reason] += n
    assert Counter(d["reason"] for d in items) == by_reason
    assert all(d["topic"] in (imp_t, s.kafka.topic_clicks) for d in items)
    records = {(m.topic(), m.partition(), m.offset()): (m.value(), m.timestamp()[1])
               for m in read_topics(s, [imp_t, s.kafka.topic_clicks], at_least=len(everything))}
    assert len(records) == len(everything)
    _assert_exact_sources(items, records)
    # ...and the records they name are the refused ones, each under its reason
    named = Counter((d["reason"], records[d["topic"], d["partition"], d["offset"]][0])
                    for d in items)
    assert named == Counter(refused)
    by_reason_item = {d["reason"]: d for d in items}
    assert by_reason_item["oversized"]["value_truncated"] is True
    assert by_reason_item["late_click"]["value"].startswith("{")
    originals = [base64.b64decode(d["value_b64"]) for d in items if "value_b64" in d]
    assert SEPARATED in originals and b"\xff\xfe{}" in originals

    # the same top-5 as MABWiser's LinUCB trained on the same observations
    from mabwiser.mab import MAB, LearningPolicy

    arms = sorted(expected)
    decisions, rewards_, contexts = [], [], []
    for pid in arms:
        for xv, r in traffic.observations[pid]:
            decisions.append(pid)
            rewards_.append(r)
            contexts.append(xv)
    mab = MAB(arms, LearningPolicy.LinUCB(alpha=s.model.alpha, l2_lambda=s.model.l2), seed=1)
    mab.fit(decisions, rewards_, np.array(contexts))
    queries = np.random.default_rng(11).normal(size=(25, s.model.dim))
    theirs = mab.predict_expectations(queries)
    thetas = np.stack([params[p].state.A_inv @ params[p].state.b for p in arms])
    A_invs = np.stack([params[p].state.A_inv for p in arms])
    for q, exp in zip(queries, theirs, strict=True):
        ours = ucb_scores(thetas, A_invs, q, s.model.alpha)
        top_ours = [arms[i] for i in np.argsort(-ours)[:5]]
        top_theirs = sorted(exp, key=lambda a: -exp[a])[:5]
        assert top_ours == top_theirs


@pytest.mark.flink
def test_exactly_once_across_two_sigkills(job_settings: Settings, products_file: Path,
                                          tmp_path: Path) -> None:
    """Live traffic while the job is SIGKILLed twice, each time after a completed checkpoint
    and restarted from the latest one: the final n, b, A^-1 of every product equal what an
    uninterrupted run learns (batch ridge, which the parity test ties to the job), and no
    product's version in Redis ever moved backwards, as seen by a watcher that must have
    watched through every run of the job and never failed."""
    s = job_settings
    st = store(s)
    job = JobProcess(s, tmp_path / "job.log", ["--products", str(products_file)]).start()

    backwards: list[str] = []
    stop_watch, stop_feed = threading.Event(), threading.Event()
    produced = Traffic()
    run = [0]  # which run of the job (0, then 1 and 2 after each restart)
    watched: Counter = Counter()  # per run: rounds in which the watcher saw versions
    watcher_errors: list[BaseException] = []

    def watch_versions() -> None:  # Redis must never move a product backwards
        seen: dict[str, int] = {}
        watcher_store = store(s)
        try:
            while not stop_watch.is_set():
                current = watcher_store.versions()
                for pid, v in current.items():
                    if v < seen.get(pid, 0):
                        backwards.append(f"{pid}: {seen[pid]} -> {v}")
                    seen[pid] = v
                if current:
                    watched[run[0]] += 1
                time.sleep(0.05)
        except BaseException as exc:  # its death must fail the test, not pass it silently
            watcher_errors.append(exc)
            raise

    def feed() -> None:
        """Self-contained chunks (every click with its impression) at ~150 ev/s, timestamps =
        append time, until told to stop; then the far-future sentinels."""
        chunk = 0
        while not stop_feed.is_set():
            t = seeded_traffic(s, 300, seed=1000 + chunk, start_ms=now_ms(),
                               products=LOG_PRODUCTS, step_ms=3.3, click_p=0.3)
            produce(s, t.records, rate_eps=150)
            for pid, obs in t.observations.items():
                produced.observations[pid].extend(obs)
            chunk += 1
        produce(s, sentinels(s, now_ms() + 10 * 60_000))

    feeder = threading.Thread(target=feed, daemon=True)
    watcher = threading.Thread(target=watch_versions, daemon=True)
    feeder.start()
    watcher.start()
    kills = 0
    try:
        for _ in range(3):
            seen_before = {str(p) for p in checkpoints.completed(s.job.checkpoint_dir)}
            total = sum(st.versions().values())
            # kill only after this run learned something new AND completed a checkpoint
            wait_for(lambda t=total: sum(st.versions().values()) > t + 300, 150,
                     "progress in Redis", job, every_s=0.2)
            wait_for(lambda b=seen_before: any(
                str(p) not in b for p in checkpoints.completed(s.job.checkpoint_dir)), 60,
                "a completed checkpoint", job, every_s=0.2)
            if kills == 2:
                break
            log.info("SIGKILL %d at %d learned (checkpoint %s)", kills + 1,
                     sum(st.versions().values()), checkpoints.latest(s.job.checkpoint_dir))
            job.kill(signal.SIGKILL)
            kills += 1
            run[0] = kills
            job.start("--restore", "latest")
        stop_feed.set()
        feeder.join(60)
        assert not feeder.is_alive(), "the feeder did not finish"
        expected = ridge(produced.observations, s.model.dim, s.model.l2)
        log.info("traffic done: %d observations; %d learned so far", produced.n_observations,
                 sum(st.versions().values()))
        wait_learned(s, versions(produced.observations), job, timeout_s=120)
    finally:
        stop_feed.set()
        stop_watch.set()
        job.kill()
    watcher.join(10)
    assert not watcher.is_alive() and watcher_errors == [], watcher_errors
    # it watched every run of the job while Redis held versions, not just the first moment
    assert all(watched[r] >= 10 for r in (0, 1, 2)), dict(watched)
    assert kills == 2
    text = job.log_path.read_text(errors="replace")
    assert text.count("restore latest: ") == 2 and "restore latest: no completed" not in text
    assert_parity(s, expected)
    assert backwards == []


def test_redis_refuses_a_replayed_older_version(job_settings: Settings) -> None:
    """What makes a replay after restore harmless: the write is conditional on the version."""
    from contract.codec import encode
    from contract.linucb import init_state, update
    from flink_job.publish import Publisher

    s = job_settings
    states = [init_state(s.model.dim, s.model.l2)]
    for i in range(3):
        states.append(update(states[-1], np.full(s.model.dim, 0.1 * (i + 1)), 1.0))
    st = store(s)
    pub = Publisher(st)
    assert pub.publish([("p001", encode(states[3], 30))]) == 1
    assert pub.publish([("p001", encode(states[1], 10)), ("p002", encode(states[2], 20))]) == 1
    got = st.read_all(s.model.dim)
    assert got["p001"].version == 3 and got["p001"].updated_at_ms == 30
    assert got["p002"].version == 2
    np.testing.assert_array_equal(got["p001"].state.A_inv, states[3].A_inv)


@pytest.mark.flink
def test_redis_outage_delays_publishing_but_loses_no_learning(
        job_settings: Settings, products_file: Path, tmp_path: Path) -> None:
    """Redis (a private server of this test) is killed while events keep coming and started
    again, empty, on the same port: the job neither fails nor restarts (any failure would end
    it: no restarts allowed), and the writer keeps what it could not write and retries (its
    metrics say so while Redis is down), so once Redis is back, with no new event, every
    product reaches the state batch ridge gives for all the events, including those learned
    while Redis was down."""

    from devstack.stack import Stack, free_port

    s = job_settings.override(RTREC_REDIS_PORT=free_port(),
                              RTREC_STACK_DIR=tmp_path / "private-redis")
    redis_stack = Stack(s)
    redis_stack._start_redis()
    redis_stack._wait_redis(30)
    products = LOG_PRODUCTS[:20]  # few products: every chunk touches each of them
    job = JobProcess(s, tmp_path / "job.log",
                     ["--products", str(products_file), "--max-restarts", "0"]).start()
    produced = Traffic()

    def chunk(seed: int) -> None:
        t = seeded_traffic(s, 300, seed=seed, start_ms=now_ms(), products=products,
                           step_ms=3.3, click_p=0.3)
        produce(s, t.records, rate_eps=300)
        for pid, obs in t.observations.items():
            produced.observations[pid].extend(obs)

    try:
        chunk(1)
        wait_learned(s, versions(produced.observations), job, timeout_s=120)
        assert redis_stack.services["redis"].stop()
        chunk(2)  # learned while Redis is down
        learned = sum(versions(produced.observations).values())

        def held_and_retried() -> bool:
            m = live_metrics(job)
            return (m.get("learn-linucb.updates_learned") == learned
                    and m.get("publish-redis.redis_retries", 0) > 0
                    and m.get("publish-redis.publish_pending", 0) > 0)

        wait_for(held_and_retried, 60, "chunk 2 learned while Redis is down, its writes "
                 "pending and retried", job, every_s=1.0)
        assert job.alive(), "the job failed while Redis was down"
        redis_stack._start_redis()
        redis_stack._wait_redis(30)
        assert set(versions(produced.observations)) == set(products)  # all pending, all due
        wait_learned(s, versions(produced.observations), job, timeout_s=120)
        assert job.alive()
        assert_parity(s, ridge(produced.observations, s.model.dim, s.model.l2))
    finally:
        job.kill()
        redis_stack.services["redis"].stop()
