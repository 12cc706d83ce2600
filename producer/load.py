"""Load generation: synthetic impression and click events into Kafka at a target rate.

confluent-kafka (librdkafka) is the client because it is the faster one here (bench/
bench_load.py measures both; docs/PRODUCER.md gives the figures).
To reach 20k+ events/s from one Python thread, the expensive part (features, oracle, JSON) is
done once for a pool of visits; each send only splices a fresh request id and timestamp into
pre-serialised bytes. Visits follow the simulator: a random user at a time drawn from the
context distribution (its x is what serving would have logged), 5 distinct random products,
the user reads them in order and clicks each with its oracle probability, stopping at the
first click. ``ts_ms`` is the wall clock at send time, so the job's reward windows behave as
in production. ``--bad-fraction`` swaps that share of events for malformed ones, each with a
Kafka header ``rtrec-bad: <kind>`` so tests and the dead-letter check know which are bad.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from contract.config import Settings
from contract.errors import RtrecError
from contract.events import Click, Impression
from contract.features import FeatureSpace, Product, User
from contract.kafka import kafka_producer
from producer.context import REFERENCE, ContextDistribution
from producer.oracle import Oracle

log = logging.getLogger(__name__)

POOL_VISITS = 5000
SHOWN = 5
BAD_HEADER = "rtrec-bad"
BAD_KINDS = ("not_json", "not_finite", "wrong_dimension", "unknown_product", "missing_field",
             "duplicate_key")
_RID = b'"__RID__"'
_TS = b'"ts_ms":1000000000000'
PRODUCER_CONFIG = {
    "linger.ms": 5,
    "batch.num.messages": 10000,
    "queue.buffering.max.messages": 1_000_000,
    "queue.buffering.max.kbytes": 1_048_576,
    "acks": "all",
    "enable.idempotence": False,
    "socket.keepalive.enable": True,
}


class LoadError(RtrecError, RuntimeError):
    """The load cannot run (broker unreachable, bad input); the message is one line."""


@dataclass
class LoadStats:
    """What a load run did; latencies are produce() -> broker ack, in seconds."""

    sent: int = 0
    acked: int = 0
    failed: int = 0
    bad: int = 0
    impressions: int = 0
    clicks: int = 0
    elapsed_s: float = 0.0  # first send to last ack (flush included)
    send_s: float = 0.0  # first send to last produce() call
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Acknowledged events per second, first send to last ack: the honest figure."""
        return self.acked / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def send_rate(self) -> float:
        return self.sent / self.send_s if self.send_s > 0 else 0.0

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies, q) * 1000) if self.latencies else float("nan")

    def summary(self) -> dict[str, float | int | dict[str, int]]:
        return {"sent": self.sent, "acked": self.acked, "failed": self.failed, "bad": self.bad,
                "impressions": self.impressions, "clicks": self.clicks,
                "elapsed_s": round(self.elapsed_s, 3), "rate_per_s": round(self.rate, 1),
                "send_rate_per_s": round(self.send_rate, 1),
                "latency_p50_ms": round(self.percentile_ms(50), 2),
                "latency_p99_ms": round(self.percentile_ms(99), 2), "errors": self.errors}


@dataclass(frozen=True)
class EncodedVisit:
    """Pre-serialised events of one visit: the impression and the click (if any)."""

    impression: bytes
    click: bytes | None


def make_pool(users: list[User], products: list[Product], features: FeatureSpace,
              oracle: Oracle, seed: int, n: int = POOL_VISITS,
              dist: ContextDistribution = REFERENCE) -> list[EncodedVisit]:
    """``n`` visits with placeholders for request id and timestamp."""
    rng = np.random.default_rng([seed, 7])  # stream 7: load pool
    user_idx = rng.integers(0, len(users), n)
    times = dist.draw(rng, n)
    shown = np.argpartition(rng.random((n, len(products))), SHOWN, axis=1)[:, :SHOWN]
    vis_users = [users[i] for i in user_idx]
    x = features.context_matrix(vis_users, times)
    flat_p = oracle.click_probabilities(
        [u for u in vis_users for _ in range(SHOWN)],
        [products[j] for j in shown.ravel()],
        [t for t in times for _ in range(SHOWN)],
    ).reshape(n, SHOWN)
    draws = rng.random((n, SHOWN)) < flat_p
    pool = []
    for i in range(n):
        pids = tuple(products[j].product_id for j in shown[i])
        imp = Impression(request_id="__RID__", user_id=vis_users[i].user_id,
                         ts_ms=1_000_000_000_000, x=tuple(float(v) for v in x[i]),
                         products=pids, scores=tuple(float(v) for v in flat_p[i].round(4)),
                         policy="random", model_version=0,
                         propensity=None).to_json()
        first = int(np.argmax(draws[i])) if draws[i].any() else -1
        click = (Click(request_id="__RID__", product_id=pids[first],
                       ts_ms=1_000_000_000_000).to_json() if first >= 0 else None)
        pool.append(EncodedVisit(imp, click))
    return pool


def bad_payload(kind: str, good: bytes) -> bytes:
    """A malformed variant of a good impression (``kind`` is one of BAD_KINDS)."""
    obj = json.loads(good)
    if kind == "not_json":
        return good[: len(good) // 2]
    if kind == "not_finite":
        obj["x"][0] = float("nan")  # json.dumps writes NaN, which the contract rejects
    elif kind == "wrong_dimension":
        obj["x"] = obj["x"][:-1]
    elif kind == "unknown_product":
        obj["products"][0] = "p999"
    elif kind == "missing_field":
        del obj["ts_ms"]
    elif kind == "duplicate_key":
        return good.replace(b'{"v":1,', b'{"v":1,"v":1,', 1)
    else:
        raise ValueError(f"kind: {kind!r} is not one of {BAD_KINDS}")
    return json.dumps(obj, separators=(",", ":")).encode()


def read_replay(path: Path, settings: Settings) -> list[tuple[str, bytes]]:
    """(topic, value) of each line of a JSON-lines event file (e.g. history.jsonl)."""
    if not path.is_file():
        raise LoadError(f"replay file not found: {path}")
    out = []
    with path.open("rb") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                kind = json.loads(line).get("type")
            except (ValueError, AttributeError) as exc:
                raise LoadError(f"{path}:{n}: not a JSON event: {exc}") from exc
            k = settings.kafka
            topic = k.topic_clicks if kind == "click" else k.topic_impressions
            out.append((topic, line))
    return out


def open_producer(settings: Settings, timeout_s: float = 5.0, create_topics: bool = True):
    """A confluent-kafka Producer after proving the broker answers; topics created if missing."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    base = {"bootstrap.servers": settings.kafka.bootstrap, "client.id": "rtrec-load"}
    # librdkafka logs every failed connect to fd 2; the probe reports one line instead, and the
    # producer's own client logs go through Python logging (logger "librdkafka").
    admin = AdminClient({**base, "socket.timeout.ms": int(timeout_s * 1000), "log_level": 0})
    try:
        md = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise LoadError(f"Kafka broker unreachable at {settings.kafka.bootstrap} "
                        f"({exc.args[0].str() if exc.args else exc})") from exc
    wanted = [settings.kafka.topic_impressions, settings.kafka.topic_clicks]
    missing = [t for t in wanted if t not in md.topics]
    if missing and create_topics:
        futures = admin.create_topics([NewTopic(t, settings.kafka.topic_partitions, 1)
                                       for t in missing])
        for topic, fut in futures.items():
            try:
                fut.result(timeout=timeout_s)
                log.info("created topic %s", topic)
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise LoadError(f"cannot create topic {topic}: {exc}") from exc
    return kafka_producer(settings.kafka, **{"client.id": "rtrec-load", **PRODUCER_CONFIG,
                                             "logger": logging.getLogger("librdkafka")})


def _messages(pool: list[EncodedVisit], settings: Settings, rng: np.random.Generator,
              bad_fraction: float, run_id: str) -> Iterator[tuple[str, bytes, bytes, str | None]]:
    """Endless (topic, key, value, bad_kind) in visit order; bad events replace good ones."""
    i = 0
    timps, tclk = settings.kafka.topic_impressions, settings.kafka.topic_clicks
    while True:
        coins = rng.random(4096)
        kinds = rng.integers(0, len(BAD_KINDS), 4096)
        for c, k in zip(coins, kinds, strict=True):
            visit = pool[i % len(pool)]
            rid = f"{run_id}-{i}".encode()
            ts = b'"ts_ms":%d' % (time.time_ns() // 1_000_000)
            value = visit.impression.replace(_RID, b'"' + rid + b'"', 1).replace(_TS, ts, 1)
            if c < bad_fraction:
                kind = BAD_KINDS[int(k)]
                yield timps, rid, bad_payload(kind, value), kind
            else:
                yield timps, rid, value, None
            if visit.click is not None:
                yield tclk, rid, visit.click.replace(_RID, b'"' + rid + b'"', 1).replace(
                    _TS, ts, 1), None
            i += 1


def run_load(producer, settings: Settings, rate: float, *, count: int | None = None,
             duration_s: float | None = None, pool: list[EncodedVisit] | None = None,
             replay: list[tuple[str, bytes]] | None = None, bad_fraction: float = 0.0,
             seed: int = 1237, progress: bool = True, flush_timeout_s: float = 30.0) -> LoadStats:
    """Send at ``rate`` events/s until ``count`` events or ``duration_s`` seconds."""
    from confluent_kafka import KafkaError
    from tqdm import tqdm

    if rate <= 0:
        raise LoadError(f"--rate must be > 0, got {rate}")
    if not 0.0 <= bad_fraction <= 1.0:
        raise LoadError(f"--bad-fraction must be in [0, 1], got {bad_fraction}")
    if replay is not None:
        count = len(replay) if count is None else min(count, len(replay))
        source: Iterator = ((t, None, v, None) for t, v in replay)
    else:
        if pool is None:
            raise LoadError("no event pool and no replay file")
        source = _messages(pool, settings, np.random.default_rng([seed, 8]), bad_fraction,
                           uuid.uuid4().hex[:8])
    if count is None and duration_s is None:
        raise LoadError("give --count or --duration")
    stats = LoadStats()
    lat = stats.latencies

    def on_delivery(err, msg) -> None:
        if err is None:
            stats.acked += 1
            lat.append(msg.latency())
        else:
            stats.failed += 1
            name = err.name() if isinstance(err, KafkaError) else str(err)
            stats.errors[name] = stats.errors.get(name, 0) + 1

    if count is None:
        # --duration: send rate x duration events; a one-second grace lets a loop that fell
        # behind catch up, and then it stops (the achieved rate shows the shortfall).
        count = int(rate * duration_s)  # type: ignore[operator]
    # disable=None: drawn on a terminal only (a CI log would get a line per refresh)
    bar = tqdm(total=count, unit="ev", disable=None if progress else True, smoothing=0.1,
               mininterval=0.5)
    start = time.perf_counter()
    end = start + duration_s + 1.0 if duration_s is not None else float("inf")
    produce, poll = producer.produce, producer.poll
    timps = settings.kafka.topic_impressions
    try:
        while True:
            now = time.perf_counter()
            if now >= end or stats.sent >= count:
                break
            due = min(int((now - start) * rate) - stats.sent, count - stats.sent)
            if due <= 0:
                poll(0)
                time.sleep(min(0.001, max(0.0, (stats.sent + 1) / rate - (now - start))))
                continue
            due = min(due, 5000)
            for _ in range(due):
                topic, key, value, bad = next(source)
                headers = [(BAD_HEADER, bad.encode())] if bad is not None else None
                while True:
                    try:
                        produce(topic, value, key, on_delivery=on_delivery, headers=headers)
                        break
                    except BufferError:
                        poll(0.005)
                stats.sent += 1
                if bad is not None:
                    stats.bad += 1
                if topic == timps:
                    stats.impressions += 1
                else:
                    stats.clicks += 1
            poll(0)
            bar.update(due)
        stats.send_s = time.perf_counter() - start
        remaining = producer.flush(flush_timeout_s)
        if remaining:
            log.warning("%d events not acknowledged after %.0f s", remaining, flush_timeout_s)
    finally:
        stats.elapsed_s = time.perf_counter() - start
        bar.close()
    return stats
