"""Model snapshots and rollback through the real job on the standalone cluster and serving's
refresher (issue 17, part 4; flink_job/snapshots.py, docs/JOB.md "Snapshots and rollback").

Learn traffic A, ``snapshot good``, learn traffic B on top, ``rollback good``: serving's
snapshot must switch to exactly the snapshot's parameters (batch ridge of A, products only B
taught back at the prior) in one step, never showing a mix of the two models; then traffic C
is learned on top of the snapshot: every product ends at batch ridge of A and C, B never
learned again although the restored source re-reads it.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from contract import codec
from contract.config import Settings
from endtoend.harness import now_ms, produce, ridge, seeded_traffic, sentinels, versions
from flink_job import cluster, snapshots
from serving.refresher import SnapshotRefresher
from tests.helpers import (
    PRODUCTS,
    SharedCluster,
    assert_parity,
    job_metrics,
    store,
    wait_for,
    wait_learned,
)

pytestmark = [pytest.mark.integration, pytest.mark.flink, pytest.mark.timeout(1200)]
log = logging.getLogger(__name__)

MINUTE_MS = 60_000


def _merged(*obs: dict[str, list]) -> dict[str, list]:
    out: dict[str, list] = {}
    for o in obs:
        for pid, items in o.items():
            out.setdefault(pid, []).extend(items)
    return out


def _serving_state(ref: SnapshotRefresher) -> dict[str, tuple[int, np.ndarray, np.ndarray]]:
    """Serving's parameters: product -> (version, A^-1, theta), of one snapshot object."""
    snap = ref.snapshot
    return {p: (int(snap.versions[i]), snap.A_invs[i], snap.thetas[i])
            for i, p in enumerate(snap.product_ids)}


def test_snapshot_learn_more_rollback_then_learn_on_top(
        job_settings: Settings, products_file: Path, tmp_path: Path,
        standalone_cluster: SharedCluster) -> None:
    s = standalone_cluster.on(job_settings, RTREC_SNAPSHOT_DIR=tmp_path / "snapshots",
                              RTREC_PROBE_INTERVAL_S=0.5)
    dim, l2 = s.model.dim, s.model.l2
    t0 = now_ms() - 30 * MINUTE_MS
    seed = s.world.seed
    # A, B and C are apart in event time, each closed by its own sentinels: no reward window
    # is open at the snapshot, and B's re-read after the rollback moves only the watermark
    a = seeded_traffic(s, 1200, seed=seed, start_ms=t0, products=PRODUCTS[:120])
    b = seeded_traffic(s, 800, seed=seed + 1, start_ms=t0 + 10 * MINUTE_MS,
                       products=PRODUCTS[60:180])
    c = seeded_traffic(s, 800, seed=seed + 2, start_ms=t0 + 20 * MINUTE_MS,
                       products=PRODUCTS[100:])
    only_b = set(b.observations) - set(a.observations)
    assert only_b, "B must teach products A did not, to see them go back to the prior"

    st = store(s)
    ref = SnapshotRefresher(s, PRODUCTS)
    try:
        produce(s, [*a.records, *sentinels(s, t0 + 5 * MINUTE_MS)])
        cluster.up(s, timeout_s=420)  # or already up: shared with test_parallelism
        assert cluster.submit(s, products=str(products_file)) == 0
        ref.start(wait_s=10)
        wait_learned(s, versions(a.observations), None, 150)

        manifest = snapshots.snapshot(s, "good", products=str(products_file))
        assert manifest["versions"] == versions(a.observations)
        assert manifest["generation"] == 0
        good = {p: codec.decode(blob) for p, blob in snapshots.load(s, "good")[1].items()}
        expected_a = ridge(a.observations, dim, l2)
        for pid, (n, A_inv, bb) in expected_a.items():
            assert good[pid].state.n == n, pid
            np.testing.assert_allclose(good[pid].state.A_inv, A_inv, rtol=0, atol=1e-9)
            np.testing.assert_allclose(good[pid].state.b, bb, rtol=0, atol=1e-9)
        # serving reports the snapshot's age (rtrec_snapshot_age_seconds)
        wait_for(lambda: ref.health().last_snapshot_ms == manifest["created_at_ms"], 5,
                 "serving to see the snapshot's time")

        # the resubmitted job goes on from the snapshot: B is learned on top of A
        produce(s, [*b.records, *sentinels(s, t0 + 15 * MINUTE_MS)])
        ab = _merged(a.observations, b.observations)
        wait_learned(s, versions(ab), None, 150)
        wait_for(lambda: ref.snapshot.model_version == sum(versions(ab).values()), 10,
                 "serving to hold A+B")

        # rollback while a watcher reads serving's snapshot as requests would
        seen: list[tuple[float, str]] = []
        good_versions = {p: good[p].version if p in good else 0 for p in PRODUCTS}
        ab_versions = {p: versions(ab).get(p, 0) for p in PRODUCTS}
        stop = threading.Event()

        def watch() -> None:
            last = None
            while not stop.is_set():
                snap = ref.snapshot
                if snap is not last:
                    last = snap
                    vs = dict(zip(snap.product_ids, snap.versions.tolist(), strict=True))
                    kind = ("good" if vs == good_versions else
                            "a+b" if vs == ab_versions else "mixed")
                    seen.append((time.monotonic(), kind))
                time.sleep(0.001)

        watcher = threading.Thread(target=watch)
        watcher.start()
        started = time.monotonic()
        try:
            facts = snapshots.rollback(s, "good", products=str(products_file))
            wait_for(lambda: seen and seen[-1][1] == "good", 10, "serving on the snapshot")
        finally:
            stop.set()
            watcher.join(5)
        switch_s = next(t for t, kind in seen if kind == "good") - started
        log.info("rollback: serving answered from the snapshot %.3fs after the rollback began "
                 "(Redis switched at %.3fs, job running at %.1fs)", switch_s, facts["switch_s"],
                 facts["running_s"])
        assert [k for _, k in seen if k == "mixed"] == [], seen  # never a mix of the two
        assert facts["generation"] == 1 and st.current_generation() == 1
        served = _serving_state(ref)
        for pid in PRODUCTS:
            version, A_inv, theta = served[pid]
            if pid in expected_a:
                n, A_exp, b_exp = expected_a[pid]
                assert version == good[pid].version, pid
                np.testing.assert_allclose(A_inv, A_exp, rtol=0, atol=1e-9, err_msg=pid)
                np.testing.assert_allclose(theta, A_exp @ b_exp, rtol=0, atol=1e-9, err_msg=pid)
            else:  # taught only by B, or never: the prior
                assert version == 0, pid
                np.testing.assert_allclose(A_inv, np.eye(dim) / l2, rtol=0, atol=0)
        assert st.versions() == versions(a.observations)

        # learning goes on from the snapshot: C on top of A, B dropped although re-read
        produce(s, [*c.records, *sentinels(s, now_ms() + 10 * MINUTE_MS)])
        ac = _merged(a.observations, c.observations)
        wait_learned(s, versions(ac), None, 150)
        assert_parity(s, ridge(ac, dim, l2))
        wait_for(lambda: ref.snapshot.model_version == sum(versions(ac).values()), 10,
                 "serving to hold A+C")
        port = s.stack.flink_rest_port
        wait_for(lambda: job_metrics(port).get("validate.events_skipped_rollback", 0)
                 == b.n_events + 2 * s.kafka.topic_partitions, 30,
                 lambda: f"B's events skipped: {job_metrics(port)}", every_s=1.0)
    finally:
        ref.stop()  # the fixture cancels the job


def test_rollback_refuses_a_bad_name_a_missing_and_a_tampered_snapshot(
        unique_settings: Settings, tmp_path: Path) -> None:
    s = unique_settings.override(RTREC_SNAPSHOT_DIR=tmp_path / "snapshots")
    with pytest.raises(snapshots.SnapshotError, match="name"):
        snapshots.load(s, "../etc")
    with pytest.raises(snapshots.SnapshotError, match="cannot read"):
        snapshots.load(s, "nope")
    folder = tmp_path / "snapshots" / "x"
    folder.mkdir(parents=True)
    (folder / "params.json").write_text("{}")
    (folder / "manifest.json").write_text('{"params_sha256": "0", "versions": {}}')
    with pytest.raises(snapshots.SnapshotError, match="does not match"):
        snapshots.load(s, "x")
