"""Forgetting users through the real stack (Kafka, Redis, the real job; docs/PRIVACY.md).

A seeded log of many users is learned; three of them ask to be forgotten (deletion requests in
the compacted topic, as serving and the producer write them): every product's published n,
A^-1 and b then equal batch ridge over the log without them (1e-9), each product moves
forward by exactly the items taken out, and a request for an id the job never saw changes
nothing (counted as empty). A request written while the job is down (SIGKILLed after a
checkpoint) is applied after the restore, once: a second SIGKILL and restore from a checkpoint
taken after it does not apply it again.
"""

from __future__ import annotations

import logging
import signal
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from contract.config import Settings
from contract.events import Click, Impression
from contract.forget import new_request, request_deletion
from contract.kafka import kafka_producer
from endtoend.harness import JobProcess, now_ms, produce, ridge
from flink_job import checkpoints
from tests.helpers import (
    PRODUCTS,
    assert_parity,
    live_metrics,
    settled_metrics,
    store,
    wait_for,
    wait_learned,
)

pytestmark = [pytest.mark.integration, pytest.mark.flink, pytest.mark.timeout(1200)]
log = logging.getLogger(__name__)

Obs = dict[int, dict[str, list[tuple[np.ndarray, float]]]]  # user -> product -> (x, reward)


def _log(s: Settings, seed: int, users: int, visits: int, start_ms: int
         ) -> tuple[list, Obs]:
    """Impressions of ``users`` users (3 of 30 products shown) and in-window clicks; returns
    the records and what each user teaches each product (the join learns every shown product
    at once and adds a click's reward)."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 1, (users, s.model.dim))
    records, obs = [], defaultdict(lambda: defaultdict(list))  # type: ignore[var-annotated]
    window_ms = int(s.job.reward_window_s * 1000)
    for i in range(visits):
        u = int(rng.integers(users))
        x = np.round(np.clip(base[u] + rng.normal(0, 0.1, s.model.dim), 0, 1), 6)
        ts = start_ms + 5 * i
        shown = tuple(PRODUCTS[j] for j in rng.choice(30, 3, replace=False))
        rid = f"f{seed}-{i}"
        imp = Impression(request_id=rid, user_id=1000 + u, ts_ms=ts,
                         x=tuple(float(v) for v in x), products=shown,
                         scores=(0.0, 0.0, 0.0), policy="linucb", model_version=0,
                         propensity=1.0)
        records.append((s.kafka.topic_impressions, imp.to_json(), ts, None))
        clicked = shown[int(rng.integers(3))] if rng.random() < 0.3 else None
        if clicked is not None:
            cts = ts + int(rng.integers(50, window_ms // 2))
            records.append((s.kafka.topic_clicks, Click(rid, clicked, cts).to_json(), cts, None))
        for p in shown:
            obs[1000 + u][p].append((x, 1.0 if p == clicked else 0.0))
    return records, obs


def _merge(obs: Obs, without: set[int]) -> dict[str, list[tuple[np.ndarray, float]]]:
    out: dict[str, list[tuple[np.ndarray, float]]] = defaultdict(list)
    for u, by_product in obs.items():
        for p, items in by_product.items():
            out[p]  # every product ever learned stays published
            if u not in without:
                out[p].extend(items)
    return out


def _items(obs: Obs, users: set[int]) -> dict[str, int]:
    """Items the join learned from ``users`` per product: one per observation, one per click."""
    n: dict[str, int] = defaultdict(int)
    for u in users:
        for p, items in obs[u].items():
            n[p] += len(items) + sum(1 for _, r in items if r)
    return n


def _versions(obs: Obs, forgotten: set[int]) -> dict[str, int]:
    """The version each product ends at: every item learned (observation, click), plus every
    item taken back out (versions only move forward)."""
    learned = _items(obs, set(obs))
    undone = _items(obs, forgotten)
    return {p: learned[p] + undone.get(p, 0) for p in learned}


def _forget(s: Settings, *users: int) -> list[str]:
    producer = kafka_producer(s.kafka, **{"enable.idempotence": True})
    ids = []
    for u in users:
        req = new_request(u)
        request_deletion(producer, s.kafka.topic_deletions, req)
        ids.append(req.request_id)
    return ids


def _markers(s: Settings) -> list[str]:
    """One deletion request per partition of the deletions topic, each for a user never seen
    (appended behind every earlier request in its partition); their request ids."""
    producer = kafka_producer(s.kafka, **{"enable.idempotence": True})
    ids = []
    for partition in range(s.kafka.topic_partitions):
        req = new_request(990_000 + partition)
        producer.produce(s.kafka.topic_deletions, key=req.key, value=req.to_json(),
                         partition=partition)
        ids.append(req.request_id)
    assert producer.flush(10) == 0, "the marker requests were not acknowledged"
    return ids


def _checkpoint_after(s: Settings, job: JobProcess) -> Path:
    """A checkpoint triggered after this call: one in progress now may hold older state, so
    the next one after the newest completed (checkpoints run one at a time)."""
    done = checkpoints.completed(s.job.checkpoint_dir)
    newest = max((int(p.name.split("-")[1]) for p in done), default=0)
    found: list[Path] = []

    def later() -> bool:
        found[:] = [p for p in checkpoints.completed(s.job.checkpoint_dir)
                    if int(p.name.split("-")[1]) >= newest + 2]
        return bool(found)

    wait_for(later, 120, "a checkpoint triggered after now", job, every_s=0.2)
    return max(found, key=lambda p: int(p.name.split("-")[1]))


def test_forgetting_three_users_equals_batch_ridge_without_them(
        job_settings: Settings, products_file: Path, tmp_path: Path) -> None:
    s = job_settings
    records, obs = _log(s, seed=19, users=40, visits=500, start_ms=now_ms())
    forgotten = {1003, 1017, 1031}
    assert forgotten <= set(obs)
    job = JobProcess(s, tmp_path / "job.log", ["--products", str(products_file)]).start()
    try:
        produce(s, records)
        wait_learned(s, _versions(obs, set()), job, timeout_s=420)
        assert_parity(s, ridge(_merge(obs, set()), s.model.dim, s.model.l2))
        before = store(s).versions()

        t0 = time.perf_counter()
        _forget(s, *sorted(forgotten), 424242)  # the last: never seen
        want = _versions(obs, forgotten)
        wait_learned(s, want, job, timeout_s=120)
        took_ms = (time.perf_counter() - t0) * 1000
        log.info("three deletions applied and published %.0f ms after the requests", took_ms)
        assert_parity(s, ridge(_merge(obs, forgotten), s.model.dim, s.model.l2))
        touched = {p for u in forgotten for p in obs[u]}
        assert all(want[p] > before[p] for p in touched)
        assert all(want[p] == before[p] for p in set(want) - touched)

        # the audit: four requests applied, one of them empty, every item counted
        n_items = sum(_items(obs, forgotten).values())

        def audited() -> bool:
            m = live_metrics(job)
            return (m.get("user-index.deletions_applied") == 4
                    and m.get("user-index.deletions_empty") == 1
                    and m.get("user-index.items_unlearned") == n_items)

        wait_for(audited, 60, lambda: {k: v for k, v in live_metrics(job).items()
                                       if k.startswith(("user-index", "parse-deletions"))},
                 job, every_s=1.0)
    finally:
        job.kill()


def test_a_deletion_survives_a_sigkill_and_is_applied_once(
        job_settings: Settings, products_file: Path, tmp_path: Path) -> None:
    s = job_settings
    records, obs = _log(s, seed=23, users=25, visits=300, start_ms=now_ms())
    user = 1007
    job = JobProcess(s, tmp_path / "job.log", ["--products", str(products_file)]).start()
    try:
        produce(s, records)
        wait_learned(s, _versions(obs, set()), job, timeout_s=420)
        chk = _checkpoint_after(s, job)  # holds what was learned and the index
        job.kill(signal.SIGKILL)
        _forget(s, user)  # durable while no job runs: between request and application
        job.start("--restore", str(chk))
        want = _versions(obs, {user})
        wait_learned(s, want, job, timeout_s=420)
        assert_parity(s, ridge(_merge(obs, {user}), s.model.dim, s.model.l2))

        # applied; a checkpoint after it; SIGKILL; restore from it: not applied again
        chk2 = _checkpoint_after(s, job)
        job.kill(signal.SIGKILL)
        job.start("--restore", str(chk2))
        # the new run's counters start at 0; its source reads the deletions topic from the
        # checkpoint's offset, after the request: nothing to apply. A marker request for a user
        # never seen, one per partition behind the old request, shows where the source is:
        # once every marker is applied, all before them was read.
        markers = _markers(s)
        m: dict[str, float] = {}
        wait_for(lambda: bool(m.update(live_metrics(job)))
                 or m.get("user-index.deletions_empty", 0) >= len(markers), 300,
                 lambda: f"the {len(markers)} markers applied: {m}", job, every_s=0.5)
        m = settled_metrics(job)  # parse-deletions' tally is pushed after user-index's counter
        assert m["parse-deletions.deletion_requests_read"] == len(markers), m
        assert m["user-index.deletions_applied"] == len(markers), m
        assert m["user-index.items_unlearned"] == 0, m
        assert store(s).versions() == want
        assert_parity(s, ridge(_merge(obs, {user}), s.model.dim, s.model.l2))
    finally:
        job.kill()
