"""Recovery benchmark: how long from a SIGKILL to the first new parameter write in Redis.

Writes results/bench_recovery.json::

    {"minicluster": {"kill_to_first_write_s": {"p50", "max", "runs"}, ...},
     "cluster": {"kill_to_first_write_s": {"p50", "max", "runs"}, ...}, "kills": N}

Both cases run under live traffic (~150 events/s, timestamps = append time) on a Kafka + Redis
of their own (devstack, free ports, temp folder), and kill only after a checkpoint completed
and the job learned something since the previous kill:

- **minicluster**: ``python -m flink_job run`` (the local mini-cluster) is SIGKILLed, process
  group and all, and started again at once with ``--restore latest``; the time includes the
  new JVM, the graph, the state restore and the Python workers.
- **cluster**: a standalone cluster (flink_job.cluster) with one spare TaskManager; the
  TaskManager running the job is SIGKILLed and Flink itself fails the job over to the spare
  (then a new spare is started for the next kill).

After the last kill the feed stops and the run checks what recovery must keep: every
product's n, b and A^-1 in Redis equal batch ridge over everything that was sent (1e-9), so
no event was lost or learned twice across the kills (``exactly_once`` in the JSON).

"First new write" is exact: the versions hash is read once the killed process can no longer
have a write in flight (300 ms after the kill: a pipeline sent just before SIGKILL still lands
in Redis), and the clock stops at the first pub/sub notice of a version above it (a replay
after a restore rewrites older versions, which the store refuses and does not announce). No
failover is that fast: noticing the loss alone takes longer.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import write_result
from contract.config import Settings
from contract.store import ParamStore, redis_client
from devstack.stack import Stack, free_port
from endtoend.harness import (
    JobProcess,
    Traffic,
    now_ms,
    produce,
    ridge,
    seeded_traffic,
    sentinels,
    versions,
    wait_for,
)
from flink_job import checkpoints, cluster

log = logging.getLogger("bench_recovery")
PRODUCTS = [f"p{i:03d}" for i in range(200)]


class WriteWatch:
    """Every accepted write's notice, with the monotonic time it arrived."""

    def __init__(self, s: Settings) -> None:
        self.client = redis_client(s.redis, timeout_s=5.0)
        self.channel = ParamStore.from_settings(s).keys.channel
        self.seen: list[tuple[float, str, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(self.channel)
        while not self._stop.is_set():
            msg = pubsub.get_message(timeout=0.1)
            if msg and msg["type"] == "message":
                pid, _, version = msg["data"].decode().rpartition(":")
                self.seen.append((time.monotonic(), pid, int(version)))

    def first_newer(self, after: float, versions: dict[str, int]) -> float | None:
        for t, pid, v in list(self.seen):
            if t > after and v > versions.get(pid, 0):
                return t
        return None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


class Feed:
    """Seeded traffic at ~150 events/s with current timestamps until stopped; ``sent`` holds
    the observations it must have taught."""

    def __init__(self, s: Settings) -> None:
        self.s = s
        self.sent = Traffic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        chunk = 0
        while not self._stop.is_set():
            t = seeded_traffic(self.s, 150, seed=2000 + chunk, start_ms=now_ms(),
                               products=PRODUCTS, step_ms=6.6, click_p=0.3)
            produce(self.s, t.records, rate_eps=150)
            for pid, obs in t.observations.items():
                self.sent.observations[pid].extend(obs)
            chunk += 1

    def stop(self) -> None:
        """Stop, then close every open reward window (far-future sentinels); once."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(60)
        produce(self.s, sentinels(self.s, now_ms() + 10 * 60_000))


def exactly_once(s: Settings, store: ParamStore, feed: Feed, alive: Any = None) -> bool:
    """After the feed stopped: every product ends at the version, n, b and A^-1 of learning
    everything sent exactly once (batch ridge, 1e-9)."""
    want = versions(feed.sent.observations)
    wait_for(lambda: store.versions() == want, 180, "every product at its final version", alive)
    expected = ridge(feed.sent.observations, s.model.dim, s.model.l2)
    params = store.read_all(s.model.dim)
    return set(params) == set(expected) and all(
        params[p].state.n == n and np.allclose(params[p].state.A_inv, A_inv, rtol=0, atol=1e-9)
        and np.allclose(params[p].state.b, b, rtol=0, atol=1e-9)
        for p, (n, A_inv, b) in expected.items())


def _learned(store: ParamStore) -> int:
    return sum(store.versions().values())


def _ready_to_kill(s: Settings, store: ParamStore, since: int, alive: Any) -> None:
    """Wait until the job learned something new and completed a checkpoint after that."""
    wait_for(lambda: _learned(store) > since + 200, 180, "progress in Redis", alive)
    seen = {str(p) for p in checkpoints.completed(s.job.checkpoint_dir)}
    wait_for(lambda: any(str(p) not in seen for p in checkpoints.completed(s.job.checkpoint_dir)),
             60, "a completed checkpoint", alive)


IN_FLIGHT_S = 0.3


def _measure(store: ParamStore, watch: WriteWatch, t_kill: float, timeout_s: float,
             alive: Any = None) -> float:
    """Seconds from ``t_kill`` to the first write newer than what Redis held after the kill
    (and after the killed writer's last pipeline, :data:`IN_FLIGHT_S`)."""
    time.sleep(max(0.0, t_kill + IN_FLIGHT_S - time.monotonic()))
    after = store.versions()
    settled = time.monotonic()
    found: list[float] = []

    def newer() -> bool:
        t = watch.first_newer(settled, after)
        if t is not None:
            found.append(t)
        return t is not None

    wait_for(newer, timeout_s, "the first write after the kill", alive, every_s=0.02)
    return found[0] - t_kill


def minicluster(base: Settings, work: Path, products: Path,
                kills: int) -> tuple[list[float], bool]:
    s = base.isolated("mini", work)
    Stack(s).create_topics()
    store = ParamStore.from_settings(s, timeout_s=2.0)
    watch, feed = WriteWatch(s), Feed(s)
    job = JobProcess(s, work / "mini.log", ["--products", str(products)]).start()
    out: list[float] = []
    try:
        for i in range(kills):
            _ready_to_kill(s, store, _learned(store), job)
            t_kill = time.monotonic()
            job.kill(signal.SIGKILL)
            job.start("--restore", "latest")
            out.append(_measure(store, watch, t_kill, 180, job))
            log.info("minicluster kill %d: first new write after %.2f s", i + 1, out[-1])
        feed.stop()
        exact = exactly_once(s, store, feed, job)
    finally:
        feed.stop()
        watch.close()
        job.kill()
    return out, exact


def _tm_pids(s: Settings) -> dict[str, int]:
    """TaskManager resource id -> pid, by the RPC port each one listens on."""
    out = {}
    for tm in cluster.rest(s, "/taskmanagers")["taskmanagers"]:
        port = tm["path"].rsplit(":", 1)[1].split("/", 1)[0]
        ss = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True,
                            text=True).stdout
        pid = int(ss.split("pid=", 1)[1].split(",", 1)[0])
        out[tm["id"]] = pid
    return out


def _running_tms(s: Settings, jid: str) -> set[str]:
    """The TaskManagers holding the job's running tasks (parallelism 1, one slot: one)."""
    out: set[str] = set()
    for vertex in cluster.rest(s, f"/jobs/{jid}")["vertices"]:
        tms = cluster.rest(s, f"/jobs/{jid}/vertices/{vertex['id']}/taskmanagers")
        out |= {t["taskmanager-id"] for t in tms["taskmanagers"]
                if t.get("status") == "RUNNING"}
    return out


def standalone_cluster(base: Settings, work: Path, products: Path,
                       kills: int) -> tuple[list[float], bool]:
    s = base.isolated("cluster", work).override(RTREC_FLINK_REST_PORT=free_port(),
                                                RTREC_STACK_DIR=work / "cluster")
    Stack(s).create_topics()
    store = ParamStore.from_settings(s, timeout_s=2.0)
    cluster.up(s, taskmanagers=2)
    watch = feed = None
    out: list[float] = []
    orphans: list[int] = []
    try:
        assert cluster.submit(s, products=str(products)) == 0
        jid = cluster.active_job(s)
        assert jid is not None, "the job is not running on the cluster"
        watch, feed = WriteWatch(s), Feed(s)
        for i in range(kills):
            wait_for(lambda: cluster.rest(s, "/overview")["taskmanagers"] >= 2, 60,
                     "a spare TaskManager")
            _ready_to_kill(s, store, _learned(store), None)
            wait_for(lambda: len(_running_tms(s, jid)) == 1, 60, "every task running")
            victim = _running_tms(s, jid).pop()
            pid = _tm_pids(s)[victim]
            orphans += cluster.descendants([pid])  # its Python workers outlive a SIGKILL
            t_kill = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            out.append(_measure(store, watch, t_kill, 180))
            log.info("cluster kill %d (TaskManager pid %d): first new write after %.2f s",
                     i + 1, pid, out[-1])
            cluster.start_taskmanager(s)  # the next spare
        feed.stop()
        exact = exactly_once(s, store, feed)
    finally:
        if feed is not None:
            feed.stop()
        if watch is not None:
            watch.close()
        cluster.down(s)
        cluster.stop_orphans(orphans)
    return out, exact


def _summary(runs: list[float]) -> dict[str, Any]:
    return {"p50": round(float(np.percentile(runs, 50)), 2), "max": round(max(runs), 2),
            "runs": [round(r, 2) for r in runs]}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_recovery", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=3, help="kills per case")
    parser.add_argument("--cases", default="minicluster,cluster")
    parser.add_argument("--work", type=Path, default=None,
                        help="keep the run's folder (logs of the job and the cluster) here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    out: dict[str, Any] = {"kills": args.kills, "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="bench-recovery-") as tmp:
        work = args.work.resolve() if args.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        base = Settings.from_env({
            "RTREC_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}", "RTREC_REDIS_PORT": free_port(),
            "RTREC_STACK_DIR": work / "stack", "RTREC_CHECKPOINT_INTERVAL_MS": 2000})
        products = work / "products.txt"
        products.write_text("\n".join(PRODUCTS) + "\n")
        stack = Stack(base, kafka_controller_port=free_port())
        stack.up(timeout_s=120)
        try:
            cases = args.cases.split(",")
            if "minicluster" in cases:
                runs, exact = minicluster(base, work, products, args.kills)
                out["minicluster"] = {"kill_to_first_write_s": _summary(runs),
                                      "exactly_once": exact}
            if "cluster" in cases:
                runs, exact = standalone_cluster(base, work, products, args.kills)
                out["cluster"] = {"kill_to_first_write_s": _summary(runs), "exactly_once": exact,
                                  "taskmanagers": "one spare, SIGKILL of the one running"}
        finally:
            stack.down()
    out["load_after"] = os.getloadavg()
    path = write_result("bench_recovery", out)
    for case in ("minicluster", "cluster"):
        if case in out:
            r = out[case]["kill_to_first_write_s"]
            print(f"{case:12} kill -> first new write: p50 {r['p50']:.2f} s, max "
                  f"{r['max']:.2f} s ({len(r['runs'])} kills); exactly once: "
                  f"{out[case]['exactly_once']}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
