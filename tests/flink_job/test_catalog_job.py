"""The live catalog through the real job (Kafka, Redis, ``python -m flink_job run`` on a
mini-cluster): a product added to the catalog topic while the job runs is learned, and one
added while the job and serving run is ranked by serving, learned, and answered with its
learned parameters; a retired
product's events are dead-lettered ``retired_product``; after a SIGKILL and a restore from a
checkpoint the job still knows it is retired (broadcast state), and once re-added it learns on
from the state it had before the retirement.

The job runs with ``--products topic``: only the catalog topic decides.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from contract import reasons
from contract.catalog import ProductRecord, write_records
from contract.config import Settings
from contract.events import Impression
from contract.kafka import kafka_producer
from endtoend.harness import JobProcess, now_ms, produce
from flink_job import checkpoints
from serving.recommender import Recommender
from tests.helpers import DeadLetters, store, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.flink, pytest.mark.timeout(900)]
log = logging.getLogger(__name__)


class Traffic:
    """Impressions of one product at a time, each with its own request id (clicks are not
    needed: the join learns every shown product at once)."""

    def __init__(self, s: Settings, seed: int) -> None:
        self.s = s
        self.rng = np.random.default_rng(seed)
        self.i = 0

    def send(self, pid: str, n: int = 1) -> None:
        recs = []
        for _ in range(n):
            self.i += 1
            ts = now_ms()
            x = tuple(float(v) for v in np.round(self.rng.uniform(0, 1, self.s.model.dim), 6))
            imp = Impression(request_id=f"c{self.i}", user_id=1, ts_ms=ts, x=x, products=(pid,),
                             scores=(0.0,), policy="linucb", model_version=0)
            recs.append((self.s.kafka.topic_impressions, imp.to_json(), ts, None))
        produce(self.s, recs)


def _catalog(s: Settings, *items: tuple[str, ProductRecord | None]) -> None:
    write_records(kafka_producer(s.kafka), s.kafka.topic_catalog, items)


def _n(s: Settings, pid: str) -> int:
    params = store(s).read_all(s.model.dim)
    return params[pid].state.n if pid in params else 0


def _retired(dl: DeadLetters, pid: str) -> int:
    return sum(1 for d in dl.poll() if d["reason"] == reasons.RETIRED_PRODUCT
               and pid in d.get("value", ""))


def _learned_while_sending(s: Settings, traffic: Traffic, pid: str, n_more: int, job: JobProcess,
                           timeout_s: float) -> int:
    """Send impressions of ``pid`` until its published n has grown by ``n_more`` (a record just
    written reaches the validator's broadcast input within a moment, events sent before that
    are dead-lettered): returns the n reached."""
    start = _n(s, pid)

    def grown() -> bool:
        traffic.send(pid)
        return _n(s, pid) >= start + n_more

    wait_for(grown, timeout_s, f"{pid} learned {n_more} more", job, every_s=0.3)
    return _n(s, pid)


def _checkpoint_after(s: Settings, job: JobProcess) -> None:
    done = checkpoints.completed(s.job.checkpoint_dir)
    newest = max((int(p.name.split("-")[1]) for p in done), default=0)
    wait_for(lambda: any(int(p.name.split("-")[1]) >= newest + 2
                         for p in checkpoints.completed(s.job.checkpoint_dir)),
             120, "a checkpoint triggered after now", job, every_s=0.2)


def test_added_learned_retired_dead_lettered_and_readded_after_a_restore(
        job_settings: Settings, tmp_path: Path) -> None:
    s = job_settings
    traffic = Traffic(s, seed=13)
    dl = DeadLetters(s)
    _catalog(s, ("k1", ProductRecord("k1", "Tea", 3.0)))
    job = JobProcess(s, tmp_path / "job.log", ["--products", "topic"]).start()
    try:
        # a product not (yet) in the catalog: unknown; k1 (in the topic before the start): learned
        traffic.send("k2", 2)
        wait_for(lambda: sum(1 for d in dl.poll() if d["reason"] == reasons.UNKNOWN_PRODUCT)
                 >= 2, 240, "k2's two events dead-lettered unknown_product", job)
        _learned_while_sending(s, traffic, "k1", 3, job, 120)
        # added while the job runs: learned
        _catalog(s, ("k2", ProductRecord("k2", "Tea", 4.0)))
        _learned_while_sending(s, traffic, "k2", 3, job, 60)
        # added while the job AND serving run: serving ranks it, its impression and click go
        # through serving, the job learns it, and serving answers with its learned parameters
        rec = Recommender.from_settings(s, wait_s=5.0, seed=3)
        try:
            _catalog(s, ("k3", ProductRecord("k3", "Tea", 5.0)))

            def served() -> str | None:
                if "k3" not in rec.catalog.index:
                    return None
                others = [p for p in rec.catalog.product_ids if p != "k3"]
                r = rec.recommend(1, x=np.full(s.model.dim, 0.5), k=1, exclude=others)
                return r.request_id if [it.product_id for it in r.items] == ["k3"] else None

            wait_for(lambda: served() is not None, 30, "k3 rankable in serving", job)

            def learned() -> bool:
                rid = served()
                assert rid is not None
                rec.feedback(rid, "k3")
                v = rec.snapshot.version_of("k3")
                return v is not None and v > 0

            wait_for(learned, 120, "k3 learned by the job and in serving's snapshot", job,
                     every_s=0.5)
            assert _n(s, "k3") >= 1
        finally:
            rec.close()
        # retired: its events dead-lettered with their own reason, its state left alone
        _catalog(s, ("k2", None))
        wait_for(lambda: (traffic.send("k2"), _retired(dl, "k2") >= 1)[1], 60,
                 "k2 dead-lettered retired_product", job, every_s=0.3)
        n_retired = _n(s, "k2")
        _checkpoint_after(s, job)
        job.kill()
    except BaseException:
        job.kill()
        raise
    # while the job is down, more events of the retired product
    traffic.send("k2", 3)
    seen = _retired(dl, "k2")
    found = checkpoints.latest(s.job.checkpoint_dir)
    assert found is not None
    job = JobProcess(s, tmp_path / "job2.log", ["--products", "topic", "--restore",
                                                str(found)]).start()
    try:
        # restored: still retired (the broadcast state came back with the checkpoint)
        wait_for(lambda: _retired(dl, "k2") >= seen + 3, 240,
                 "k2's events after the restore dead-lettered retired_product", job)
        assert _n(s, "k2") == n_retired
        # re-added: learned on from the state it had
        _catalog(s, ("k2", ProductRecord("k2", "Tea", 4.0, version=2)))
        n = _learned_while_sending(s, traffic, "k2", 2, job, 60)
        assert n >= n_retired + 2
        version = store(s).versions()["k2"]
        assert version >= n  # versions only move forward (a fresh state would restart at 1)
    finally:
        job.kill()
        dl.close()
