"""Forgetting latency: from a deletion request to serving answering without the user.

Writes results/bench_forget.json::

    {"forget_ms": {"p50_ms", "p99_ms", "mean_ms", "n"}, "learn_ms": {...}, "ratio_p50", ...}

On a Kafka + Redis of its own (devstack, free ports, temp folder) with the real job
(``python -m flink_job run``) and serving's own snapshot refresher (pub/sub, as
``python -m serving`` runs it): a seeded log of users is learned, then, one user at a time,
``contract.forget.forget_user`` (the request acknowledged by Kafka, the profile removed from a
copy of the user table) starts the clock, and it stops when serving's snapshot holds every
affected product at the version that takes the user out (the job's undoing items learned and
published). The baseline of the same run: one new impression appended for a product, until
serving's snapshot holds its new version (how fresh learning is on this machine now). The
ratio says what a deletion costs beyond an ordinary update.

    python -m bench.bench_forget [--runs 7] [--users 30] [--visits 400]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import percentiles_ms, write_result
from contract.config import Settings
from contract.events import Click, Impression
from contract.features import DATA_DIR
from contract.forget import forget_user
from contract.store import ParamStore, redis_client
from devstack.stack import Stack, free_port
from endtoend.harness import JobProcess, now_ms, produce, wait_for
from serving.refresher import SnapshotRefresher

log = logging.getLogger("bench.forget")
PRODUCTS = [f"p{i:03d}" for i in range(30)]


def _log(s: Settings, seed: int, users: int, visits: int, start_ms: int
         ) -> tuple[list, dict[int, dict[str, int]], dict[str, int]]:
    """Records, items learned per user and product, and each product's final version."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 1, (users, s.model.dim))
    records: list = []
    items: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    window_ms = int(s.job.reward_window_s * 1000)
    for i in range(visits):
        u = int(rng.integers(users))
        x = np.round(np.clip(base[u] + rng.normal(0, 0.1, s.model.dim), 0, 1), 6)
        ts = start_ms + 5 * i
        shown = tuple(PRODUCTS[j] for j in rng.choice(len(PRODUCTS), 3, replace=False))
        rid = f"b{seed}-{i}"
        records.append((s.kafka.topic_impressions, Impression(
            request_id=rid, user_id=u, ts_ms=ts, x=tuple(float(v) for v in x), products=shown,
            scores=(0.0, 0.0, 0.0), policy="linucb", model_version=0,
            propensity=1.0).to_json(), ts, None))
        for p in shown:
            items[u][p] += 1
        if rng.random() < 0.3:
            clicked = shown[int(rng.integers(3))]
            cts = ts + int(rng.integers(50, window_ms // 2))
            records.append((s.kafka.topic_clicks, Click(rid, clicked, cts).to_json(), cts, None))
            items[u][clicked] += 1
    versions: dict[str, int] = defaultdict(int)
    for by_product in items.values():
        for p, n in by_product.items():
            versions[p] += n
    return records, items, dict(versions)


def _until(refresher: SnapshotRefresher, want: dict[str, int], timeout_s: float) -> float:
    """Seconds until serving's snapshot holds every product of ``want`` at (or past) it."""
    t0 = time.perf_counter()
    deadline = t0 + timeout_s
    while time.perf_counter() < deadline:
        snap = refresher.snapshot
        if all((snap.version_of(p) or 0) >= v for p, v in want.items()):
            return time.perf_counter() - t0
        time.sleep(0.001)
    raise TimeoutError(f"serving did not reach {want} within {timeout_s:g} s")


def run(runs: int, users: int, visits: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="bench-forget-"))
    s = Settings.from_env({
        "RTREC_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}", "RTREC_REDIS_PORT": free_port(),
        "RTREC_STACK_DIR": root / "stack", "RTREC_CHECKPOINT_DIR": root / "checkpoints",
        "RTREC_USER_TABLE": root / "users.csv"})
    shutil.copy(DATA_DIR / "users.csv", root / "users.csv")
    stack = Stack(s, kafka_controller_port=free_port())
    (root / "products.txt").write_text("\n".join(PRODUCTS) + "\n")
    job = JobProcess(s, root / "job.log", ["--products", str(root / "products.txt")])
    refresher = SnapshotRefresher(s, PRODUCTS, notifications=True)
    try:
        stack.up(timeout_s=300)  # inside: a stack that fails to start is still stopped
        job.start()
        records, items, versions = _log(s, seed=7, users=users, visits=visits,
                                        start_ms=now_ms())
        produce(s, records)
        store = ParamStore(redis_client(s.redis), s.redis.prefix)
        wait_for(lambda: store.versions() == versions, 240, "the log learned", job)
        refresher.start(wait_s=10)
        _until(refresher, versions, 30)
        load_before = os.getloadavg()
        forget_s, learn_s = [], []
        for r in range(runs):
            user = sorted(items)[r]
            want = {p: versions[p] + n for p, n in items[user].items()}
            t0 = time.perf_counter()
            forget_user(s, user)
            forget_s.append(time.perf_counter() - t0 + _until(refresher, want, 60))
            versions.update(want)
            # the baseline: one ordinary update of a product, to serving
            p = PRODUCTS[r % len(PRODUCTS)]
            ts = now_ms()
            imp = Impression(request_id=f"base-{r}", user_id=999_999, ts_ms=ts,
                             x=tuple(0.1 for _ in range(s.model.dim)), products=(p,),
                             scores=(0.0,), policy="linucb", model_version=0, propensity=1.0)
            t0 = time.perf_counter()
            produce(s, [(s.kafka.topic_impressions, imp.to_json(), ts, None)])
            learn_s.append(time.perf_counter() - t0 + _until(refresher, {p: versions[p] + 1},
                                                             60))
            versions[p] += 1
        forget = percentiles_ms(forget_s)
        learn = percentiles_ms(learn_s)
        return {
            "forget_ms": forget, "learn_ms": learn,
            "ratio_p50": round(forget["p50_ms"] / learn["p50_ms"], 2),
            "ratio_p99": round(forget["p99_ms"] / learn["p99_ms"], 2),
            "runs": runs, "users": users, "visits": visits,
            "items_per_forgotten_user": [sum(items[u].values()) for u in sorted(items)[:runs]],
            "loadavg_before": [round(v, 2) for v in load_before],
            "loadavg_after": [round(v, 2) for v in os.getloadavg()],
        }
    finally:
        refresher.stop()
        job.kill()
        stack.down()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--users", type=int, default=30)
    ap.add_argument("--visits", type=int, default=400)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    result = run(args.runs, args.users, args.visits)
    path = write_result("bench_forget", result)
    f, b = result["forget_ms"], result["learn_ms"]
    print(f"{'':28} {'p50 ms':>9} {'p99 ms':>9}\n"
          f"{'request -> serving (forget)':28} {f['p50_ms']:>9.0f} {f['p99_ms']:>9.0f}\n"
          f"{'event -> serving (learn)':28} {b['p50_ms']:>9.0f} {b['p99_ms']:>9.0f}\n"
          f"{'ratio':28} {result['ratio_p50']:>9} {result['ratio_p99']:>9}\n-> {path}")


if __name__ == "__main__":
    main()
