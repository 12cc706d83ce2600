"""kafka-python vs confluent-kafka: produce throughput and ack latency with the load's events.

Why: ``python -m producer load`` must reach 20k events/s from one Python process, and the
client decides whether it can. Both clients send the same pre-serialised impression events
(the load generator's pool) as fast as they accept them, with acks=all and linger 5 ms, and a
delivery callback on every message (the load needs one to count acks). Setup (pool, topic,
client connection and metadata) is outside the timed part. Writes results/bench_load.json.

    python -m bench.bench_load                       # starts its own Kafka via devstack
    python -m bench.bench_load --bootstrap 127.0.0.1:9092 --count 200000
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import write_result
from contract.config import Settings
from contract.features import FeatureSpace, load_catalog, load_users
from producer.load import make_pool, open_producer
from producer.oracle import load_oracle

log = logging.getLogger("bench_load")


def _version(v: object) -> str:
    """confluent_kafka.version() is a (str, int) tuple in some releases, a str in others."""
    return str(v[0] if isinstance(v, tuple) else v)


def _summary(n: int, elapsed: float, lat_s: list[float]) -> dict[str, float]:
    lat = np.asarray(lat_s) * 1000
    return {"messages": n, "acked": len(lat_s), "seconds": round(elapsed, 3),
            "msg_per_s": round(len(lat_s) / elapsed, 1),
            "latency_p50_ms": round(float(np.percentile(lat, 50)), 2) if len(lat) else None,
            "latency_p99_ms": round(float(np.percentile(lat, 99)), 2) if len(lat) else None}


def bench_confluent(bootstrap: str, topic: str, values: list[bytes], n: int) -> dict:
    from confluent_kafka import Producer

    from producer.load import PRODUCER_CONFIG

    p = Producer({"bootstrap.servers": bootstrap, **PRODUCER_CONFIG})
    for v in values[:100]:  # warm-up outside the clock: metadata, leader, connections
        p.produce(topic, v)
    p.flush(30)
    lat: list[float] = []

    def cb(err, msg) -> None:
        if err is None:
            lat.append(msg.latency())

    start = time.perf_counter()
    for i in range(n):
        v = values[i % len(values)]
        while True:
            try:
                p.produce(topic, v, on_delivery=cb)
                break
            except BufferError:
                p.poll(0.005)
        if i % 1000 == 0:
            p.poll(0)
    p.flush(60)
    return _summary(n, time.perf_counter() - start, lat)


def bench_kafka_python(bootstrap: str, topic: str, values: list[bytes], n: int) -> dict:
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                      batch_size=256 * 1024)
    for v in values[:100]:  # warm-up outside the clock: metadata, leader, connections
        p.send(topic, v)
    p.flush(30)
    lat: list[float] = []
    clock = time.perf_counter

    start = clock()
    for i in range(n):
        t0 = clock()
        p.send(topic, values[i % len(values)]).add_callback(
            lambda _md, t0=t0: lat.append(clock() - t0))
    p.flush(120)
    elapsed = clock() - start
    p.close()
    return _summary(n, elapsed, lat)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bootstrap", default=None,
                    help="Kafka bootstrap servers (default: start a broker with devstack)")
    ap.add_argument("--count", type=int, default=100_000, help="messages per client")
    ap.add_argument("--seed", type=int, default=1237, help="seed of the event pool")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    stack = None
    if args.bootstrap is None:
        from devstack.stack import Stack, free_port

        root = Path(tempfile.mkdtemp(prefix="bench-load-"))
        settings = Settings.from_env({"RTREC_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
                                      "RTREC_REDIS_PORT": free_port(), "RTREC_STACK_DIR": root})
        stack = Stack(settings, kafka_controller_port=free_port())
        log.info("starting Kafka + Redis in %s", root)
        stack.up(timeout_s=120)
    else:
        settings = Settings.from_env({"RTREC_KAFKA_BOOTSTRAP": args.bootstrap})
    try:
        tag = uuid.uuid4().hex[:8]
        users, products, fs = load_users(), load_catalog(), FeatureSpace.load()
        pool = make_pool(users, products, fs, load_oracle("rules", fs), args.seed, n=2000)
        values = [v.impression for v in pool]
        results = {}
        for name, fn in (("confluent_kafka", bench_confluent),
                         ("kafka_python", bench_kafka_python)):
            s = settings.override(RTREC_TOPIC_IMPRESSIONS=f"bench-{name}-{tag}",
                                  RTREC_TOPIC_CLICKS=f"bench-clicks-{tag}")
            open_producer(s).flush(1)  # creates the topics
            log.info("%s: %d messages", name, args.count)
            results[name] = fn(s.kafka.bootstrap, s.kafka.topic_impressions, values, args.count)
            log.info("%s: %s", name, results[name])
    finally:
        if stack is not None:
            stack.down()
    import confluent_kafka
    import kafka

    doc = {
        "count": args.count, "payload_bytes_mean": round(float(np.mean([len(v) for v in values])),
                                                         1),
        "versions": {"confluent_kafka": _version(confluent_kafka.version()),
                     "librdkafka": confluent_kafka.libversion()[0],
                     "kafka_python": kafka.__version__},
        **results,
        "ratio_confluent_over_kafka_python": round(
            results["confluent_kafka"]["msg_per_s"] / results["kafka_python"]["msg_per_s"], 2),
    }
    out = write_result("bench_load", doc)
    log.info("wrote %s", out)
    for name in ("kafka_python", "confluent_kafka"):
        r = results[name]
        print(f"{name:<16} {r['msg_per_s']:>10,.0f} msg/s  ack p50 {r['latency_p50_ms']} ms  "
              f"p99 {r['latency_p99_ms']} ms")
    print(f"confluent-kafka / kafka-python = {doc['ratio_confluent_over_kafka_python']}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
