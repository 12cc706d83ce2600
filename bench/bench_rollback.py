"""Rollback benchmark: seconds from ``rollback NAME`` to serving answering from the snapshot.

Writes results/bench_rollback.json (and prints the table)::

    {"rounds": N, "switch_s": {"p50", "p99", "max", "runs"}, "running_s": {...},
     "ratio_p50": switch / running, "load_before": ..., "load_after": ...}

One standalone cluster and one job (flink_job.cluster) on a Kafka + Redis of their own
(devstack, free ports, temp folder). Traffic A is learned and snapshotted; then each round
learns more traffic on top and rolls back to the snapshot (flink_job.snapshots.rollback) while
a serving refresher (serving.refresher) is watched every millisecond:

- **switch_s**: from the call to the first serving snapshot whose versions are the snapshot's
  (Redis is replaced in one transaction, announced on the channel);
- **running_s** (the baseline, same run): from the call until the job restored from the
  savepoint is RUNNING again: the earliest a rollback that only restored the job could start
  republishing (it would still have to relearn or re-emit every product).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench.common import write_result
from contract.config import Settings
from contract.store import ParamStore
from devstack.stack import Stack, free_port
from endtoend.harness import now_ms, produce, seeded_traffic, sentinels, versions, wait_for
from flink_job import cluster, snapshots
from serving.refresher import SnapshotRefresher

log = logging.getLogger("bench_rollback")
PRODUCTS = [f"p{i:03d}" for i in range(200)]
MINUTE_MS = 60_000


def _stats(xs: list[float]) -> dict[str, object]:
    a = np.asarray(xs)
    return {"p50": round(float(np.percentile(a, 50)), 3),
            "p99": round(float(np.percentile(a, 99)), 3),
            "max": round(float(a.max()), 3), "runs": [round(x, 3) for x in xs]}


def run(rounds: int, root: Path) -> dict[str, object]:
    base = Settings.from_env({
        "RTREC_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}", "RTREC_REDIS_PORT": free_port(),
        "RTREC_STACK_DIR": root / "stack", "RTREC_CHECKPOINT_DIR": root / "checkpoints",
        "RTREC_SNAPSHOT_DIR": root / "snapshots", "RTREC_FLINK_REST_PORT": free_port(),
        "RTREC_CHECKPOINT_INTERVAL_MS": 1000, "RTREC_DATA_DIR": root / "data"})
    stack = Stack(base, kafka_controller_port=free_port())
    products = root / "products.txt"
    products.write_text("\n".join(PRODUCTS) + "\n")
    ref = None
    load_before = os.getloadavg()[0]
    try:
        stack.up(timeout_s=180)
        s = base
        t0 = now_ms() - 60 * MINUTE_MS
        a = seeded_traffic(s, 1000, seed=1, start_ms=t0, products=PRODUCTS[:120])
        produce(s, [*a.records, *sentinels(s, t0 + 2 * MINUTE_MS)])
        cluster.up(s, timeout_s=180)
        assert cluster.submit(s, products=str(products)) == 0
        store = ParamStore.from_settings(s)
        want = versions(a.observations)
        wait_for(lambda: store.versions() == want, 300, "A learned")
        manifest = snapshots.snapshot(s, "bench", products=str(products))
        good = {p: manifest["versions"].get(p, 0) for p in PRODUCTS}
        ref = SnapshotRefresher(s, PRODUCTS)
        ref.start(wait_s=10)
        switch, running = [], []
        for i in range(rounds):
            start = t0 + (4 + 4 * i) * MINUTE_MS
            more = seeded_traffic(s, 400, seed=100 + i, start_ms=start, products=PRODUCTS[60:])
            produce(s, [*more.records, *sentinels(s, start + 2 * MINUTE_MS)])
            wait_for(lambda: ref.snapshot.model_version > sum(good.values()), 300,
                     "serving to hold more than the snapshot")
            seen: list[float] = []
            stop = threading.Event()

            def watch(seen: list[float] = seen, stop: threading.Event = stop) -> None:
                while not stop.is_set() and not seen:
                    snap = ref.snapshot
                    if dict(zip(snap.product_ids, snap.versions.tolist(), strict=True)) == good:
                        seen.append(time.monotonic())
                    time.sleep(0.001)

            watcher = threading.Thread(target=watch)
            watcher.start()
            began = time.monotonic()
            facts = snapshots.rollback(s, "bench", products=str(products))
            wait_for(lambda seen=seen: bool(seen), 60, "serving on the snapshot")
            stop.set()
            watcher.join(5)
            switch.append(seen[0] - began)
            running.append(float(facts["running_s"]))
            log.info("round %d: serving on the snapshot after %.3fs, job running after %.1fs",
                     i + 1, switch[-1], running[-1])
        return {"rounds": rounds, "switch_s": _stats(switch), "running_s": _stats(running),
                "ratio_p50": round(float(np.median(switch) / np.median(running)), 4),
                "products_in_snapshot": len(manifest["versions"]),
                "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2)}
    finally:
        if ref is not None:
            ref.stop()
        pids = cluster.pids(base)
        cluster.down(base)
        time.sleep(2)
        for p in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        stack.down()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_rollback", description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="bench-rollback-") as tmp:
        result = run(args.rounds, Path(tmp))
    path = write_result("bench_rollback", result)
    print("| measure | p50 s | p99 s | max s |\n| --- | --- | --- | --- |")
    for key, label in (("switch_s", "rollback -> serving on the snapshot"),
                       ("running_s", "rollback -> restored job RUNNING (baseline)")):
        st = result[key]
        print(f"| {label} | {st['p50']} | {st['p99']} | {st['max']} |")  # type: ignore[index]
    print(f"ratio of the p50s: {result['ratio_p50']}; wrote {path}")


if __name__ == "__main__":
    main()
