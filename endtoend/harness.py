"""Drive the job from outside, as a user would: a subprocess ``python -m flink_job run`` that can be
SIGKILLed, seeded traffic appended to Kafka with explicit timestamps, and what the learned
model must be (batch ridge regression in numpy). Shared by tests/ and bench/.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from contract.config import Settings
from contract.events import Click, Impression
from contract.kafka import kafka_producer
from endtoend.processes import ChildProcess

log = logging.getLogger(__name__)

# A Kafka record to append: (topic, value, timestamp_ms, partition or None)
Record = tuple[str, bytes, int, int | None]


class JobProcess(ChildProcess):
    """The job as a user starts it, ``python -m flink_job run [args]``, in its own process group
    (the client and its JVM). ``module`` runs another entry point with the same arguments:
    the benchmarks' cut-down graphs (``bench.stage_job``)."""

    def __init__(self, settings: Settings, log_path: Path, args: Sequence[str] = (),
                 module: str = "flink_job") -> None:
        super().__init__(module, ["run", *args], settings, log_path)

    def stop(self, timeout_s: float = 10.0) -> None:
        super().stop(timeout_s)


def produce(settings: Settings, records: Iterable[Record], rate_eps: float | None = None,
            on_sent: Callable[[int, int], None] | None = None) -> int:
    """Append records with their timestamps (optionally paced); returns the count."""
    producer = kafka_producer(settings.kafka, **{"linger.ms": 2, "enable.idempotence": True,
                                                 "message.max.bytes": 2_000_000})
    n = 0
    t0 = time.perf_counter()
    for topic, value, ts, partition in records:
        if rate_eps:
            wait = t0 + n / rate_eps - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
        kwargs = {"partition": partition} if partition is not None else {}
        while True:
            try:
                producer.produce(topic, value=value, timestamp=ts, **kwargs)
                break
            except BufferError:  # the local queue is full: let it drain
                producer.poll(0.05)
        if on_sent is not None:
            on_sent(n, time.time_ns())
        n += 1
        if n % 500 == 0:
            producer.poll(0)
    if producer.flush(60):
        raise RuntimeError("Kafka did not acknowledge every record within 60 s")
    return n


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Traffic:
    """Seeded impressions and clicks with the observations they must teach the model."""

    records: list[Record] = field(default_factory=list)
    # product_id -> list of (x, reward) in no particular order
    observations: dict[str, list[tuple[np.ndarray, float]]] = field(
        default_factory=lambda: defaultdict(list))
    n_events: int = 0

    def observe(self, product: str, x: Sequence[float], reward: float) -> None:
        self.observations[product].append((np.asarray(x, dtype=np.float64), reward))

    @property
    def n_observations(self) -> int:
        return sum(len(v) for v in self.observations.values())


def seeded_traffic(settings: Settings, n_events: int, seed: int, start_ms: int,
                   products: Sequence[str], step_ms: float = 2.0, click_p: float = 0.5,
                   shown: int = 5, traffic: Traffic | None = None) -> Traffic:
    """``n_events`` events (impressions and their in-window clicks) starting at ``start_ms``.

    Each impression shows ``shown`` products; with probability ``click_p`` one of them is
    clicked 50..(W-500) ms later. Timestamps advance ``step_ms`` per impression.
    """
    rng = np.random.default_rng(seed)
    t = traffic or Traffic()
    window_ms = int(settings.job.reward_window_s * 1000)
    ts = float(start_ms)
    i = 0
    pending: list[tuple[int, bytes]] = []  # clicks waiting for their time: (ts, value)
    while True:
        ts += step_ms
        while pending and pending[0][0] <= ts:
            cts, value = pending.pop(0)
            t.records.append((settings.kafka.topic_clicks, value, cts, None))
            t.n_events += 1
        if t.n_events + len(pending) >= n_events:
            if not pending:
                break
            continue
        x = np.round(rng.normal(0.0, 1.0, settings.model.dim), 6)
        idx = rng.choice(len(products), size=shown, replace=False)
        shown_ids = tuple(products[j] for j in idx)
        rid = f"s{seed}-{i}"
        i += 1
        imp = Impression(request_id=rid, user_id=int(rng.integers(1000)), ts_ms=int(ts),
                         x=tuple(float(v) for v in x), products=shown_ids,
                         scores=tuple(0.0 for _ in shown_ids), policy="linucb", model_version=0,
                         propensity=1.0)
        t.records.append((settings.kafka.topic_impressions, imp.to_json(), int(ts), None))
        t.n_events += 1
        clicked = None
        # a click is only "expected" if the log has room for it before n_events
        if rng.random() < click_p and t.n_events + len(pending) < n_events:
            clicked = shown_ids[int(rng.integers(shown))]
            cts = int(ts) + int(rng.integers(50, max(51, window_ms - 500)))
            pending.append((cts, Click(rid, clicked, cts).to_json()))
            pending.sort()
        for p in shown_ids:
            t.observe(p, x, 1.0 if p == clicked else 0.0)
    return t


SENTINEL = b"watermark-sentinel"


def sentinels(settings: Settings, ts_ms: int) -> list[Record]:
    """One far-future record per partition of both topics: event time jumps past every open
    window, so the job closes them and dead-letters pending orphan clicks (the watermark only
    moves with data). They are not events: the job dead-letters them as ``unparseable``
    (2 x partitions dead letters), so they never touch the model."""
    return [(topic, SENTINEL, ts_ms, p) for topic in (settings.kafka.topic_impressions,
                                                     settings.kafka.topic_clicks)
            for p in range(settings.kafka.topic_partitions)]


def ridge(observations: dict[str, list[tuple[np.ndarray, float]]], dim: int,
          l2: float) -> dict[str, tuple[int, np.ndarray, np.ndarray]]:
    """Batch ridge per product: (n, A^-1 = inv(l2 I + X^T X), b = X^T r)."""
    out = {}
    for pid, obs in observations.items():
        X = np.array([x for x, _ in obs]).reshape(-1, dim)
        r = np.array([r for _, r in obs])
        out[pid] = (len(obs), np.linalg.inv(l2 * np.eye(dim) + X.T @ X), X.T @ r)
    return out


def versions(observations: dict[str, list[tuple[np.ndarray, float]]]) -> dict[str, int]:
    """The version each product ends at: one update per observation (learned at once with
    reward 0) plus one per non-zero reward (the click's correction)."""
    return {pid: len(obs) + sum(1 for _, r in obs if r) for pid, obs in observations.items()}


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str,
             job: JobProcess | None = None, every_s: float = 0.2) -> None:
    """Poll until ``predicate()``; fail with ``what`` (and the job's log tail if it died)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        if job is not None and not job.alive():
            raise AssertionError(f"the job exited while waiting for {what}; log tail:\n"
                                 f"{job.log_tail()}")
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
