"""The job end to end on a real Kafka, Redis and Flink mini-cluster (``python -m flink_job run``
as a subprocess, as a user runs it). Each job start costs 10-20 s, so one run checks parity,
dead letters and the reward join together, and the exactly-once run kills and restarts one
job twice.
"""

from __future__ import annotations

import base64
import json
import logging
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from contract.config import Settings
from contract.events import Click, Impression
from contract.linucb import ucb_scores
from contract.store import ParamStore
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
    wait_for,
)
from flink_job import checkpoints

pytestmark = [pytest.mark.integration, pytest.mark.flink]
log = logging.getLogger(__name__)

PRODUCTS = [f"p{i:03d}" for i in range(200)]
SEPARATED = b'{"v": 1, "type":\x1e"click"}'  # the ASCII record separator, not valid JSON
LOG_PRODUCTS = PRODUCTS[:190]  # p190.. are kept for the reward-join cases


def _store(s: Settings) -> ParamStore:
    return ParamStore.from_settings(s, timeout_s=2.0)


class DeadLetters:
    """Everything in the dead-letter topic so far (polled from the beginning)."""

    def __init__(self, s: Settings) -> None:
        from confluent_kafka import Consumer

        self.consumer = Consumer({"bootstrap.servers": s.kafka.bootstrap,
                                  "group.id": f"dl-reader-{s.redis.prefix}",
                                  "auto.offset.reset": "earliest"})
        self.consumer.subscribe([s.kafka.topic_dead_letter])
        self.items: list[dict] = []

    def poll(self) -> list[dict]:
        while (msg := self.consumer.poll(0.1)) is not None:
            if not msg.error():
                self.items.append(json.loads(msg.value()))
        return self.items

    def close(self) -> None:
        self.consumer.close()


def _imp(rid: str, ts: int, products: tuple[str, ...], x: np.ndarray, **over: object) -> bytes:
    d = Impression(request_id=rid, user_id=1, ts_ms=ts, x=tuple(float(v) for v in x),
                   products=products, scores=tuple(0.0 for _ in products), policy="linucb",
                   model_version=0).to_dict()
    d.update(over)
    return json.dumps(d).encode()


def _join_cases(s: Settings, t0: int, rng: np.random.Generator,
                traffic: Traffic) -> tuple[list[Record], Counter]:
    """Reward-join cases on products of their own, and one bad record of every kind, all in
    partition 0 of their topic: the duplicate impression must be read after the original
    (with Kafka's default partitioner it sometimes came first, from another partition, and
    the original was the one dead-lettered)."""
    w = int(s.job.reward_window_s * 1000)
    imp_t, clk_t, dl = s.kafka.topic_impressions, s.kafka.topic_clicks, Counter()
    recs: list[Record] = []

    def x() -> np.ndarray:
        return np.round(rng.normal(size=s.model.dim), 6)

    def add_imp(rid: str, ts: int, products: tuple[str, ...], rewards: dict[str, float]) -> None:
        xv = x()
        recs.append((imp_t, _imp(rid, ts, products, xv), ts, 0))
        for p in products:
            traffic.observe(p, xv, rewards.get(p, 0.0))

    def add_click(rid: str, ts: int, product: str) -> None:
        recs.append((clk_t, Click(rid, product, ts).to_json(), ts, 0))

    # click inside the window: reward 1 for it, 0 for the other shown product
    add_imp("j-click", t0, ("p190", "p191"), {"p190": 1.0})
    add_click("j-click", t0 + 1000, "p190")
    # no click: reward 0 after the window; a click on a product not shown is an orphan
    add_imp("j-none", t0 + 10, ("p192",), {})
    add_click("j-none", t0 + 20, "p196")
    dl["orphan_click"] += 1
    # click after the window: dead-lettered, not learned (p193 gets its 0)
    add_imp("j-late", t0 + 20, ("p193",), {})
    add_click("j-late", t0 + 20 + w + 1500, "p193")
    dl["late_click"] += 1
    # click appended before its impression (other topic, earlier offset): still counts
    add_click("j-first", t0 + 200, "p194")
    add_imp("j-first", t0 + 30, ("p194", "p195"), {"p194": 1.0})
    # request ids holding the separators of the JVM lines and batches still join
    add_imp("j-odd,\t%41\n", t0 + 35, ("p198",), {"p198": 1.0})
    add_click("j-odd,\t%41\n", t0 + 300, "p198")
    add_imp("j-rs\x1eonly", t0 + 36, ("p199",), {"p199": 1.0})
    add_click("j-rs\x1eonly", t0 + 310, "p199")
    # click for a request never shown
    add_click("j-orphan", t0 + 40, "p197")
    dl["orphan_click"] += 1

    good = json.loads(_imp("bad", t0, ("p001",), x()))
    bad: list[tuple[str, bytes]] = [
        ("unparseable", b"garbage{"),
        ("unparseable", b"\xff\xfe{}"),  # not UTF-8
        ("unparseable", b"[" * 10_000),  # RecursionError in json
        ("unparseable", SEPARATED),  # holds the batches' separator: must not split a batch
        ("oversized", b'{"pad":"' + b"x" * (s.job.max_event_bytes + 10) + b'"}'),
        ("missing_field", json.dumps({k: v for k, v in good.items() if k != "x"}).encode()),
        ("wrong_type", json.dumps({**good, "user_id": "7"}).encode()),
        ("not_finite", json.dumps({**good, "x": [float("nan")] * s.model.dim}).encode()),
        ("not_finite", json.dumps(good).replace('"x": [', '"x": [1e309, ', 1).encode()),
        ("wrong_dimension", json.dumps({**good, "x": [0.0, 1.0, 2.0]}).encode()),
        ("unknown_product", json.dumps({**good, "products": ["p999"], "scores": [0.0]}).encode()),
        ("unsupported_version", json.dumps({**good, "v": 99}).encode()),
        ("bad_value", json.dumps({**good, "type": "view"}).encode()),
        ("duplicate_impression", _imp("j-click", t0 + 50, ("p190",), x())),
    ]
    for i, (reason, value) in enumerate(bad):
        recs.append((imp_t, value, t0 + 60 + i, 0))
        dl[reason] += 1
    return recs, dl


def _wait_learned(s: Settings, want: dict[str, int], job: JobProcess, timeout_s: float) -> None:
    store = _store(s)
    try:
        wait_for(lambda: store.versions() == want, timeout_s,
                 "every product at its final version", job)
    except AssertionError as exc:  # say which products, so a failure can be read
        got = store.versions()
        diff = {p: (got.get(p), v) for p, v in want.items() if got.get(p) != v}
        extra = sorted(set(got) - set(want))
        raise AssertionError(f"{exc}; (got, want) for {len(diff)} products: "
                             f"{dict(list(diff.items())[:10])}; unexpected: {extra[:10]}") from exc


def _assert_parity(s: Settings, expected: dict[str, tuple[int, np.ndarray, np.ndarray]]) -> dict:
    params = _store(s).read_all(s.model.dim)
    assert set(params) == set(expected)
    for pid, (n, A_inv, b) in expected.items():
        st = params[pid].state
        assert st.n == n, pid
        np.testing.assert_allclose(st.A_inv, A_inv, rtol=0, atol=1e-9, err_msg=pid)
        np.testing.assert_allclose(st.b, b, rtol=0, atol=1e-9, err_msg=pid)
    return params


def test_parity_dead_letters_and_reward_join(job_settings: Settings, products_file: Path,
                                            tmp_path: Path) -> None:
    """5,000 seeded events plus join cases and every kind of bad record, one job run with no
    restart allowed: the learned state equals batch ridge in numpy (1e-9) on the good events,
    ranks like MABWiser's LinUCB, and every bad record is dead-lettered with its reason."""
    s = job_settings
    t0 = now_ms() - 30 * 60_000
    traffic = seeded_traffic(s, 5000, seed=s.world.seed, start_ms=t0, products=LOG_PRODUCTS)
    rng = np.random.default_rng(7)
    cases, expected_dl = _join_cases(s, t0 + 60_000, rng, traffic)
    expected_dl["unparseable"] += 2 * s.kafka.topic_partitions  # the sentinels
    produce(s, [*traffic.records, *cases, *sentinels(s, now_ms() + 10 * 60_000)])
    expected = ridge(traffic.observations, s.model.dim, s.model.l2)

    job = JobProcess(s, tmp_path / "job.log",
                     ["--products", str(products_file), "--max-restarts", "0"]).start()
    dead = DeadLetters(s)
    try:
        store = _store(s)
        wait_for(lambda: bool(store.versions()), 60, "a first update", job)
        log.info("first update published")
        _wait_learned(s, versions(traffic.observations), job, timeout_s=150)
        log.info("all learned")
        wait_for(lambda: len(dead.poll()) >= sum(expected_dl.values()), 30, "dead letters", job)
        time.sleep(1.0)  # nothing more may arrive
        assert job.alive(), "the job failed (no restart was allowed)"
    finally:
        job.kill()
    params = _assert_parity(s, expected)

    # reward join: click in window -> 1, none -> 0, late -> not learned
    for pid, reward in (("p190", 1.0), ("p191", 0.0), ("p192", 0.0), ("p193", 0.0),
                        ("p194", 1.0), ("p195", 0.0), ("p198", 1.0),
                        ("p199", 1.0)):
        n, _, b = expected[pid]
        assert params[pid].state.n == 1 and n == 1
        assert np.allclose(params[pid].state.b, b) and (np.abs(b).sum() > 0) == bool(reward)
    assert "p196" not in params and "p197" not in params

    # dead letters: each reason, the source offset and the original value
    items = dead.poll()
    dead.close()
    assert Counter(d["reason"] for d in items) == expected_dl
    for d in items:
        assert d["topic"] in (s.kafka.topic_impressions, s.kafka.topic_clicks) and d["offset"] >= 0
        assert "value" in d or "value_b64" in d
    by_reason = {d["reason"]: d for d in items}
    assert by_reason["oversized"]["value_truncated"] is True
    assert by_reason["late_click"]["value"].startswith("{")
    originals = [base64.b64decode(d["value_b64"]) for d in items if "value_b64" in d]
    assert SEPARATED in originals and b"\xff\xfe{}" in originals

    # the same top-5 as MABWiser's LinUCB trained on the same observations
    from mabwiser.mab import MAB, LearningPolicy

    arms = sorted(expected)
    decisions, rewards, contexts = [], [], []
    for pid in arms:
        for xv, r in traffic.observations[pid]:
            decisions.append(pid)
            rewards.append(r)
            contexts.append(xv)
    mab = MAB(arms, LearningPolicy.LinUCB(alpha=s.model.alpha, l2_lambda=s.model.l2), seed=1)
    mab.fit(decisions, rewards, np.array(contexts))
    queries = np.random.default_rng(11).normal(size=(25, s.model.dim))
    theirs = mab.predict_expectations(queries)
    thetas = np.stack([params[p].state.A_inv @ params[p].state.b for p in arms])
    A_invs = np.stack([params[p].state.A_inv for p in arms])
    for q, exp in zip(queries, theirs, strict=True):
        ours = ucb_scores(thetas, A_invs, q, s.model.alpha)
        top_ours = [arms[i] for i in np.argsort(-ours)[:5]]
        top_theirs = sorted(exp, key=lambda a: -exp[a])[:5]
        assert top_ours == top_theirs


def test_exactly_once_across_two_sigkills(job_settings: Settings, products_file: Path,
                                          tmp_path: Path) -> None:
    """Live traffic while the job is SIGKILLed twice, each time after a completed checkpoint
    and restarted from the latest one: the final n, b, A^-1 of every product equal what an
    uninterrupted run learns (batch ridge, which the parity test ties to the job), and no
    product's version in Redis ever moved backwards."""
    s = job_settings
    store = _store(s)
    job = JobProcess(s, tmp_path / "job.log", ["--products", str(products_file)]).start()

    backwards: list[str] = []
    stop_watch, stop_feed = threading.Event(), threading.Event()
    produced = Traffic()

    def watch_versions() -> None:  # Redis must never move a product backwards
        seen: dict[str, int] = {}
        while not stop_watch.is_set():
            for pid, v in store.versions().items():
                if v < seen.get(pid, 0):
                    backwards.append(f"{pid}: {seen[pid]} -> {v}")
                seen[pid] = v
            time.sleep(0.05)

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
            total = sum(store.versions().values())
            # kill only after this run learned something new AND completed a checkpoint
            wait_for(lambda t=total: sum(store.versions().values()) > t + 300, 150,
                     "progress in Redis", job)
            wait_for(lambda b=seen_before: any(
                str(p) not in b for p in checkpoints.completed(s.job.checkpoint_dir)), 60,
                "a completed checkpoint", job)
            if kills == 2:
                break
            log.info("SIGKILL %d at %d learned (checkpoint %s)", kills + 1,
                     sum(store.versions().values()), checkpoints.latest(s.job.checkpoint_dir))
            job.kill(signal.SIGKILL)
            kills += 1
            job.start("--restore", "latest")
        stop_feed.set()
        feeder.join(60)
        expected = ridge(produced.observations, s.model.dim, s.model.l2)
        log.info("traffic done: %d observations; %d learned so far", produced.n_observations,
                 sum(store.versions().values()))
        _wait_learned(s, versions(produced.observations), job, timeout_s=120)
    finally:
        stop_feed.set()
        stop_watch.set()
        job.kill()
    assert kills == 2
    text = job.log_path.read_text(errors="replace")
    assert text.count("restore latest: ") == 2 and "restore latest: no completed" not in text
    _assert_parity(s, expected)
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
    store = _store(s)
    pub = Publisher(store)
    assert pub.publish([("p001", encode(states[3], 30))]) == 1
    assert pub.publish([("p001", encode(states[1], 10)), ("p002", encode(states[2], 20))]) == 1
    got = store.read_all(s.model.dim)
    assert got["p001"].version == 3 and got["p001"].updated_at_ms == 30
    assert got["p002"].version == 2
    np.testing.assert_array_equal(got["p001"].state.A_inv, states[3].A_inv)


def test_redis_outage_delays_publishing_but_loses_no_learning(
        job_settings: Settings, products_file: Path, tmp_path: Path) -> None:
    """Redis (a private server of this test) is killed while events keep coming and started
    again, empty, on the same port: the job neither fails nor restarts (any failure would end
    it: no restarts allowed), and the writer keeps what it could not write and retries, so once
    Redis is back, with no new event, every product reaches the state batch ridge gives for
    all the events, including those learned while Redis was down."""

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
        _wait_learned(s, versions(produced.observations), job, timeout_s=120)
        assert redis_stack.services["redis"].stop()
        chunk(2)  # learned while Redis is down
        time.sleep(3.0)
        assert job.alive(), "the job failed while Redis was down"
        redis_stack._start_redis()
        redis_stack._wait_redis(30)
        assert set(versions(produced.observations)) == set(products)  # all pending, all due
        _wait_learned(s, versions(produced.observations), job, timeout_s=120)
        assert job.alive()
        _assert_parity(s, ridge(produced.observations, s.model.dim, s.model.l2))
    finally:
        job.kill()
        redis_stack.services["redis"].stop()
