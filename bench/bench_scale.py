"""Scale benchmark (issue 18, items 2 and 4): the job at 100,000 products, and parallelism 2 on
two TaskManagers against parallelism 1, on the standalone cluster (``flink_job.cluster``).

Adds to results/bench_job.json (the other keys are kept)::

    "products_100k": {"state_mb", "checkpoint_s", "job_eps", "products", "events",
                      "state_bytes_per_product", "redis_bytes_per_product", ...}
    "cluster_parallelism": {"p1": {"job_eps", ...}, "p2": {"job_eps", ...}, "speedup",
                            "equal", "max_abs_diff", ...}

It starts its own Kafka + Redis (devstack, free ports, temp folder) and its own standalone
Flink cluster (free REST and RPC ports, conf/logs/pids in the temp folder), and stops both.

products_100k: a backlog of seeded events over 100,000 products (each impression shows 5)
is learned by the job on a 1-TaskManager cluster; throughput is events over the time from the
first to the last Redis update; then the job's checkpoints (Flink REST
/jobs/<id>/checkpoints) give the state size (the full size of the incremental RocksDB
checkpoint) and the duration of the checkpoints taken once every product was learned; Redis's
used_memory before and after gives bytes per product there.

cluster_parallelism: one cluster of 2 TaskManagers with 1 slot each; the same seeded events
(on two topic sets) are learned by the job at parallelism 1 (one TaskManager), then, alone,
at parallelism 2 (a subtask in each TaskManager); each one's throughput as above. Every
product's n, version, A^-1 and b must agree between the two and with batch ridge (to 1e-9),
as in tests/flink_job/test_parallelism.py: the bench fails otherwise.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.bench_job import _previous
from bench.common import write_result
from contract.config import Settings
from contract.store import ParamStore, redis_client
from devstack.stack import Stack, free_port
from endtoend.harness import (
    now_ms,
    produce,
    ridge,
    seeded_traffic,
    sentinels,
    versions,
    wait_for,
)
from flink_job import cluster

log = logging.getLogger("bench_scale")


def _fresh(base: Settings, tag: str, **over: Any) -> Settings:
    s = base.isolated(f"s{tag}", base.stack.dir).override(**over)
    Stack(s).create_topics()
    return s


def _down(s: Settings) -> None:
    """Stop this cluster (its JVMs gone, by SIGKILL if need be: ``cluster.down``)."""
    left = cluster.down(s)
    if left:
        raise RuntimeError(f"Flink JVM(s) {left} still running after SIGKILL")


def _learn(s: Settings, products: Path, want: dict[str, int], timeout_s: float,
           every_s: float = 0.05) -> tuple[str, float, float]:
    """Submit the job, wait until Redis holds every product at its final version; returns
    (job id, seconds from submit to the first update, seconds from the first to the last)."""
    client = redis_client(s.redis, timeout_s=5.0)
    store = ParamStore(client, s.redis.prefix)
    key = store.keys.versions
    before = {j["jid"] for j in cluster.rest(s, "/jobs/overview", timeout_s=10)["jobs"]}
    t0 = time.monotonic()
    if cluster.submit(s, products=str(products)) != 0:
        raise RuntimeError("flink run failed")
    jid = next(j["jid"] for j in cluster.rest(s, "/jobs/overview", timeout_s=10)["jobs"]
               if j["jid"] not in before)
    wait_for(lambda: client.hlen(key) > 0, 300, "a first update", every_s=0.02)
    t_first = time.monotonic()
    total = sum(want.values())

    def done() -> bool:  # cheap checks first: 100k products in a hash
        if client.hlen(key) < len(want):
            return False
        got = store.versions()
        return sum(got.values()) >= total and got == want

    wait_for(done, timeout_s, "every product at its final version", every_s=every_s)
    return jid, t_first - t0, time.monotonic() - t_first


def _checkpoints(s: Settings, jid: str) -> list[dict[str, Any]]:
    hist = cluster.rest(s, f"/jobs/{jid}/checkpoints", timeout_s=10).get("history", [])
    return [c for c in hist if c.get("status") == "COMPLETED"]


def products_100k(base: Settings, work: Path, n_products: int, n_events: int) -> dict[str, Any]:
    s = _fresh(base, "p100k", RTREC_FLINK_REST_PORT=free_port(),
               RTREC_STACK_DIR=work / "cluster-100k", RTREC_CHECKPOINT_DIR=work / "ckpt-100k",
               RTREC_JOB_PARALLELISM=1)
    ids = [f"q{i:06d}" for i in range(n_products)]
    products = work / "products-100k.txt"
    products.write_text("\n".join(ids) + "\n")
    t = time.monotonic()
    traffic = seeded_traffic(s, n_events, seed=11, start_ms=now_ms() - 3_600_000, products=ids)
    produce(s, [*traffic.records, *sentinels(s, now_ms() + 10 * 60_000)])
    want = versions(traffic.observations)
    log.info("%d events over %d products (%d touched) produced in %.1fs", n_events,
             n_products, len(want), time.monotonic() - t)
    client = redis_client(s.redis, timeout_s=5.0)
    mem_before = int(client.info("memory")["used_memory"])
    try:
        cluster.up(s, timeout_s=240, taskmanagers=1)
        jid, first_s, secs = _learn(s, products, want, timeout_s=900, every_s=0.5)
        t_learned = time.time() * 1000
        mem_after = int(client.info("memory")["used_memory"])
        log.info("learned %d events in %.1fs; waiting for two checkpoints after that", n_events,
                 secs)
        wait_for(lambda: sum(c["trigger_timestamp"] > t_learned for c in _checkpoints(s, jid))
                 >= 2, 180, "two checkpoints after the last update", every_s=1.0)
        done = _checkpoints(s, jid)
    finally:
        _down(s)
    after = [c for c in done if c["trigger_timestamp"] > t_learned]
    last = max(after, key=lambda c: c["trigger_timestamp"])
    state_b = int(last["state_size"])
    return {
        "products": n_products, "products_learned": len(want), "events": n_events,
        "observations": traffic.n_observations,
        "job_eps": round(n_events / secs, 1), "job_seconds": round(secs, 2),
        "first_update_s": round(first_s, 2),
        "state_mb": round(state_b / 1e6, 2),
        "state_bytes_per_product": round(state_b / len(want), 1),
        # the checkpoints while it learned upload what changed; those after it, nothing new
        "checkpoint_s": round(max(c["end_to_end_duration"] for c in done) / 1000, 3),
        "checkpoint_s_idle": round(max(c["end_to_end_duration"] for c in after) / 1000, 3),
        "checkpoints": [
            {"state_mb": round(c["state_size"] / 1e6, 2),
             "checkpointed_mb": round(c.get("checkpointed_size", 0) / 1e6, 2),
             "duration_s": round(c["end_to_end_duration"] / 1000, 3)}
            for c in sorted(done, key=lambda c: c["trigger_timestamp"])],
        "checkpoints_after_learning": [
            {"state_mb": round(c["state_size"] / 1e6, 2),
             "checkpointed_mb": round(c.get("checkpointed_size", 0) / 1e6, 2),
             "duration_s": round(c["end_to_end_duration"] / 1000, 3)} for c in after],
        "checkpoint_s_all_p50": round(float(np.percentile(
            [c["end_to_end_duration"] for c in done], 50)) / 1000, 3),
        "redis_bytes_per_product": round((mem_after - mem_before) / len(want), 1),
        "redis_used_mb": round(mem_after / 1e6, 1),
        "checkpoint_interval_ms": s.job.checkpoint_interval_ms,
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def _placement(s: Settings, jid: str) -> list[int]:
    """How many distinct TaskManagers run each vertex's subtasks."""
    out = []
    for v in cluster.rest(s, f"/jobs/{jid}", timeout_s=10)["vertices"]:
        tms = cluster.rest(s, f"/jobs/{jid}/vertices/{v['id']}/taskmanagers", timeout_s=10)
        out.append(len({t["taskmanager-id"] for t in tms["taskmanagers"]
                        if t.get("status") == "RUNNING"}))
    return out


def check_equal(a: dict[str, Any], c: dict[str, Any],
                expected: dict[str, tuple[int, np.ndarray, np.ndarray]],
                want: dict[str, int], atol: float = 1e-9) -> float:
    """The learned parameters of two runs (product -> Params) against each other and batch
    ridge: same products, n and versions, A^-1 and b within ``atol`` (the largest difference
    is returned); raises AssertionError otherwise, as tests/flink_job/test_parallelism.py."""
    if not (set(a) == set(c) == set(expected)):
        raise AssertionError("the two runs learned different product sets")
    diff = 0.0
    for pid, (n, A_inv, b) in expected.items():
        if not (a[pid].state.n == c[pid].state.n == n and
                a[pid].version == c[pid].version == want[pid]):
            raise AssertionError(f"{pid}: n or version differ")
        for x, y in ((c[pid].state.A_inv, a[pid].state.A_inv), (c[pid].state.b, a[pid].state.b),
                     (c[pid].state.A_inv, A_inv), (c[pid].state.b, b)):
            diff = max(diff, float(np.max(np.abs(x - y))))
    if diff > atol:
        raise AssertionError(f"parallelism 2 and 1 differ by {diff} (> {atol})")
    return diff


def cluster_parallelism(base: Settings, work: Path, n_events: int) -> dict[str, Any]:
    port = free_port()
    common = {"RTREC_FLINK_REST_PORT": port, "RTREC_STACK_DIR": work / "cluster-par"}
    runs = {p: _fresh(base, f"par{p}", RTREC_JOB_PARALLELISM=p,
                      RTREC_CHECKPOINT_DIR=work / f"ckpt-par{p}", **common) for p in (1, 2)}
    s1 = runs[1]
    products = work / "products-par.txt"
    ids = [f"p{i:03d}" for i in range(200)]
    products.write_text("\n".join(ids) + "\n")
    traffic = seeded_traffic(s1, n_events, seed=13, start_ms=now_ms() - 3_600_000, products=ids)
    far = now_ms() + 10 * 60_000
    for s in runs.values():
        topic = {s1.kafka.topic_impressions: s.kafka.topic_impressions,
                 s1.kafka.topic_clicks: s.kafka.topic_clicks}
        produce(s, [*[(topic[t], v, ts, p) for t, v, ts, p in traffic.records],
                    *sentinels(s, far)])
    want = versions(traffic.observations)
    out: dict[str, Any] = {"events": n_events, "observations": traffic.n_observations,
                           "partitions": s1.kafka.topic_partitions, "python_mode": "process"}
    params = {}
    try:
        cluster.up(s1, timeout_s=240, taskmanagers=2, slots=1)
        ov = cluster.rest(s1, "/overview")
        assert ov["taskmanagers"] == 2 and ov["slots-total"] == 2, ov
        for p, s in runs.items():
            jid, first_s, secs = _learn(s, products, want, timeout_s=900)
            placed = _placement(s, jid)
            params[p] = ParamStore.from_settings(s, timeout_s=5.0).read_all(s.model.dim)
            cluster.cancel(s, jid)
            wait_for(lambda: cluster.rest(s1, "/overview")["slots-available"] == 2, 120,
                     "the cancelled job's slots")
            out[f"p{p}"] = {"job_eps": round(n_events / secs, 1), "job_seconds": round(secs, 2),
                            "first_update_s": round(first_s, 2),
                            "taskmanagers_per_vertex": placed,
                            "loadavg_1m": round(os.getloadavg()[0], 2)}
            log.info("parallelism %d: %s", p, out[f"p{p}"])
    finally:
        _down(s1)
    expected = ridge(traffic.observations, s1.model.dim, s1.model.l2)
    diff = check_equal(params[1], params[2], expected, want)
    out.update({"equal": True, "max_abs_diff": diff, "products": len(expected),
                "speedup": round(out["p2"]["job_eps"] / out["p1"]["job_eps"], 3)})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="products,cluster", help="products, cluster or both")
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=100_000, help="events over the products")
    parser.add_argument("--cluster-events", type=int, default=40_000)
    parser.add_argument("--out", default="bench_job", help="results/<out>.json (keys added)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    only = set(args.only.split(","))
    load_before = round(os.getloadavg()[0], 2)
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        work = Path(tmp)
        base = Settings.from_env({
            "RTREC_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}", "RTREC_REDIS_PORT": free_port(),
            "RTREC_STACK_DIR": work / "stack", "RTREC_CHECKPOINT_INTERVAL_MS": 5000})
        stack = Stack(base, kafka_controller_port=free_port())
        try:
            stack.up(timeout_s=120)
            if "products" in only:
                result["products_100k"] = products_100k(base, work, args.products, args.events)
                log.info("products_100k: %s", result["products_100k"])
            if "cluster" in only:
                result["cluster_parallelism"] = cluster_parallelism(base, work,
                                                                    args.cluster_events)
                log.info("cluster_parallelism: %s", result["cluster_parallelism"])
        finally:
            stack.down()
    result["loadavg_1m_scale"] = {"before": load_before, "after": round(os.getloadavg()[0], 2)}
    path = write_result(args.out, {**_previous(args.out), **result})
    if (p := result.get("products_100k")):
        print(f"job at {p['products']:,} products ({p['products_learned']:,} learned): "
              f"{p['job_eps']:.0f} ev/s, state {p['state_mb']} MB "
              f"({p['state_bytes_per_product']:.0f} B/product), checkpoint {p['checkpoint_s']} s, "
              f"Redis {p['redis_bytes_per_product']:.0f} B/product (load {p['loadavg_1m']})")
    if (c := result.get("cluster_parallelism")):
        print(f"cluster: parallelism 1 on 1 TaskManager {c['p1']['job_eps']:.0f} ev/s, "
              f"parallelism 2 on 2 {c['p2']['job_eps']:.0f} ev/s (x{c['speedup']}); same "
              f"learned state (max |diff| {c['max_abs_diff']:.1e}); load "
              f"{c['p1']['loadavg_1m']}/{c['p2']['loadavg_1m']}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
