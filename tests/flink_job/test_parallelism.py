"""Parallelism 2 on the local standalone cluster (two task slots) learns the same state as
parallelism 1 (issue 8, item 5).

One seeded traffic log goes to two fresh topic sets (4 partitions each) and Redis prefixes:
one is learned by ``python -m flink_job run`` at parallelism 1 (local mini-cluster), the other
by the job submitted with ``flink run`` at parallelism 2 to a standalone cluster started from
the pip distribution (:mod:`flink_job.cluster`) on free ports, with its conf/logs/pids in the
session's temp folder (the ``standalone_cluster`` fixture: tests/flink_job/test_rollback.py
uses the same cluster). Both run at the same time to keep the test short. Every product's n,
A^-1 and b must agree between the two runs and with batch ridge. Then Flink's in-job
failover: a spare TaskManager joins, the one running the job is SIGKILLed after a checkpoint
while more traffic comes, and the same job restarts on the spare (Flink counts the restart)
and learns everything exactly once.
"""

from __future__ import annotations

import logging
import os
import signal
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest

from contract.config import Settings
from devstack.stack import Stack
from endtoend.harness import (
    JobProcess,
    now_ms,
    produce,
    ridge,
    seeded_traffic,
    sentinels,
    versions,
)
from flink_job import checkpoints, cluster
from tests.helpers import (
    PRODUCTS,
    SharedCluster,
    alive,
    assert_parity,
    listening_ports,
    store,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.flink]
log = logging.getLogger(__name__)

N_EVENTS = 3000

def _fresh(stack: Stack, base: Settings, **over: object) -> Settings:
    """``base`` with topics and a Redis prefix of its own (topics created)."""
    tag = uuid.uuid4().hex[:8]
    s = base.isolated(f"t{tag}", Path(base.stack.dir) / "runs").override(**over)
    Stack(s, kafka_controller_port=stack.kafka_controller_port).create_topics()
    return s


def _running_taskmanager_pid(s: Settings, jid: str) -> int:
    """The pid of the one TaskManager running the job's tasks (by the RPC port it listens
    on, among this cluster's processes)."""
    running: set[str] = set()
    for vertex in cluster.rest(s, f"/jobs/{jid}")["vertices"]:
        tms = cluster.rest(s, f"/jobs/{jid}/vertices/{vertex['id']}/taskmanagers")
        running |= {t["taskmanager-id"] for t in tms["taskmanagers"]
                    if t.get("status") == "RUNNING"}
    assert len(running) == 1, running
    (tm,) = [t for t in cluster.rest(s, "/taskmanagers")["taskmanagers"]
             if t["id"] in running]
    port = int(tm["path"].rsplit(":", 1)[1].split("/", 1)[0])
    (pid,) = [p for p in cluster.pids(s) if alive(p) and port in listening_ports([p])]
    return pid


def _cancel(s: Settings, jid: str) -> None:
    req = urllib.request.Request(f"http://127.0.0.1:{s.stack.flink_rest_port}/jobs/{jid}?mode=cancel",
                                 method="PATCH")
    try:
        urllib.request.urlopen(req, timeout=5).close()
    except OSError as exc:
        log.warning("cancel %s: %s", jid, exc)


def test_parallelism_2_on_the_standalone_cluster_equals_parallelism_1(
        stack: Stack, job_settings: Settings, products_file: Path, tmp_path: Path,
        standalone_cluster: SharedCluster) -> None:
    s1 = job_settings  # parallelism 1, local mini-cluster
    assert s1.kafka.topic_partitions >= 2
    s2 = standalone_cluster.on(_fresh(stack, s1), RTREC_JOB_PARALLELISM=2,
                               RTREC_CHECKPOINT_DIR=tmp_path / "checkpoints-p2")
    assert s2.stack.flink_rest_port != 8081

    # cluster.prepare takes a free JobManager RPC port (not Flink's fixed 6123), so this
    # cluster cannot collide with one someone else runs on this machine
    # the same seeded log (impressions + clicks) to both topic sets, then the sentinels
    t0 = now_ms() - 30 * 60_000
    traffic = seeded_traffic(s1, N_EVENTS, seed=s1.world.seed, start_ms=t0, products=PRODUCTS)
    assert traffic.n_events == N_EVENTS
    far = now_ms() + 10 * 60_000
    for s in (s1, s2):
        recs = [({s1.kafka.topic_impressions: s.kafka.topic_impressions,
                  s1.kafka.topic_clicks: s.kafka.topic_clicks}[topic], value, ts, p)
                for topic, value, ts, p in traffic.records]
        produce(s, [*recs, *sentinels(s, far)])
    want = versions(traffic.observations)
    expected = ridge(traffic.observations, s1.model.dim, s1.model.l2)

    started = time.monotonic()
    job1 = JobProcess(s1, tmp_path / "job-p1.log",
                      ["--products", str(products_file), "--max-restarts", "0"]).start()
    jid = None
    orphans: list[int] = []
    try:
        cluster.up(s2, timeout_s=300)  # or already up: shared with test_rollback
        overview = cluster.rest(s2, "/overview")
        assert overview["taskmanagers"] == 1 and overview["slots-total"] == 2, overview
        log.info("cluster up on 127.0.0.1:%d in %.1fs", s2.stack.flink_rest_port,
                 time.monotonic() - started)
        assert cluster.submit(s2, products=str(products_file)) == 0
        jid = cluster.active_job(s2)
        assert jid is not None, cluster.rest(s2, "/jobs/overview")["jobs"]

        store1, store2 = store(s1), store(s2)
        wait_for(lambda: store2.versions() == want, 150,
                 "parallelism 2: every product at its final version")
        log.info("parallelism 2 learned all at %.1fs", time.monotonic() - started)
        wait_for(lambda: store1.versions() == want, 120,
                 "parallelism 1: every product at its final version", job1)
        log.info("parallelism 1 learned all at %.1fs", time.monotonic() - started)

        # it really ran at parallelism 2: every vertex has 2 subtasks, both slots are taken
        detail = cluster.rest(s2, f"/jobs/{jid}")
        assert detail["state"] == "RUNNING", detail["state"]
        # at parallelism 1 by design (docs/JOB.md): the catalog's source (one partition) and
        # the in-stream evaluator (one replay in event-time order)
        by_design = ("kafka: catalog", "ope-evaluate")
        assert detail["vertices"] and all(
            v["parallelism"] == 2 for v in detail["vertices"]
            if not any(b in v["name"] for b in by_design)), [
            (v["name"], v["parallelism"]) for v in detail["vertices"]]
        assert sum(v["parallelism"] == 2 for v in detail["vertices"]) >= 3, detail["vertices"]
        assert cluster.rest(s2, "/overview")["slots-available"] == 0
        assert job1.alive(), "the parallelism-1 job failed (no restart was allowed)"
        time.sleep(1.0)  # nothing more may arrive
        p1, p2 = store1.read_all(s1.model.dim), store2.read_all(s2.model.dim)
        job1.kill()  # compared: its CPU goes to the failover below

        # Flink's own failover: a spare TaskManager, then SIGKILL of the one running the job
        # once a checkpoint holds what it learned; more traffic comes; the same job (same id)
        # restarts on the spare from that checkpoint and learns all of it, once
        cluster.start_taskmanager(s2)
        before = {str(p) for p in checkpoints.completed(s2.job.checkpoint_dir)}
        wait_for(lambda: any(str(p) not in before
                             for p in checkpoints.completed(s2.job.checkpoint_dir)), 60,
                 "a checkpoint of the parallelism-2 job")
        victim = _running_taskmanager_pid(s2, jid)
        orphans = cluster.descendants([victim])  # its Python workers outlive a SIGKILL
        os.kill(victim, signal.SIGKILL)
        more = seeded_traffic(s1, 600, seed=s1.world.seed + 1, start_ms=now_ms(),
                              products=PRODUCTS, step_ms=3.0, click_p=0.3)
        produce(s2, [({s1.kafka.topic_impressions: s2.kafka.topic_impressions,
                       s1.kafka.topic_clicks: s2.kafka.topic_clicks}[topic], value, ts, p)
                     for topic, value, ts, p in more.records])
        for pid, obs in more.observations.items():
            traffic.observations[pid].extend(obs)
        wait_for(lambda: store2.versions() == versions(traffic.observations), 150,
                 "the job after failover: every product at its final version")
        assert not alive(victim)
        assert cluster.rest(s2, f"/jobs/{jid}")["state"] == "RUNNING"
        # Flink restarted it: the loss is in its exception history, the restart in its count
        # (the REST API caches metrics up to 10 s)
        assert cluster.rest(s2, f"/jobs/{jid}/exceptions")["exceptionHistory"]["entries"]
        wait_for(lambda: int(float(cluster.rest(s2, f"/jobs/{jid}/metrics?get=numRestarts")
                                   [0]["value"])) >= 1, 30, "numRestarts >= 1", every_s=1.0)
        assert_parity(s2, ridge(traffic.observations, s2.model.dim, s2.model.l2))
    finally:
        job1.kill()
        if jid is not None:
            _cancel(s2, jid)
        cluster.stop_orphans(orphans)

    assert set(p1) == set(p2) == set(expected) and len(expected) > 150
    assert sum(p.version for p in p2.values()) == sum(want.values())
    for pid, (n, A_inv, b) in expected.items():
        a, c = p1[pid].state, p2[pid].state
        assert a.n == c.n == n, pid
        assert p1[pid].version == p2[pid].version == want[pid], pid
        # per-product updates may interleave differently at parallelism 2: rounding only
        np.testing.assert_allclose(c.A_inv, a.A_inv, rtol=0, atol=1e-9, err_msg=pid)
        np.testing.assert_allclose(c.b, a.b, rtol=0, atol=1e-9, err_msg=pid)
        np.testing.assert_allclose(c.A_inv, A_inv, rtol=0, atol=1e-9, err_msg=pid)
        np.testing.assert_allclose(c.b, b, rtol=0, atol=1e-9, err_msg=pid)
