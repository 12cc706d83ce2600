"""Edges of issue 20 item 5 and issue 12, through the real app: a duplicate click is counted
once in the metrics; a frozen broker shows in /healthz once the oldest queued event is older
than RTREC_EVENT_QUEUE_MAX_AGE_S; a wrong RTREC_DIM fails at start, naming both numbers."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from fastapi.testclient import TestClient

from contract.config import Settings
from contract.events import Click
from contract.features import FeatureError, FeatureSpace, load_catalog, load_users
from devstack.stack import free_port
from serving import Recommender
from serving.app import create_app
from serving.eventlog import KafkaEventLog, MemoryEventLog
from tests.helpers import prom_value, wait_for

USERS = load_users()


def test_a_duplicate_click_is_published_but_counted_once() -> None:
    rec = Recommender(Settings.from_env({}), [p.product_id for p in load_catalog()],
                      events=MemoryEventLog(), users={u.user_id: u for u in USERS},
                      features=FeatureSpace.load(), seed=0)
    with TestClient(create_app(recommender=rec)) as client:
        shown = []
        for user in USERS[:2]:
            body = client.post("/recommend", json={"user_id": user.user_id, "k": 3}).json()
            shown.append((body["request_id"], [i["product_id"] for i in body["items"]]))
        (rid, products), _ = shown
        clicks = [(rid, products[0]), (rid, products[0]), (rid, products[1]),  # one double tap
                  ("elsewhere", "p001"), ("elsewhere", "p001")]  # another replica's request
        for request_id, product_id in clicks:
            r = client.post("/feedback", json={"request_id": request_id,
                                               "product_id": product_id})
            assert r.status_code == 200, r.text
        metrics = client.get("/metrics").text
    assert prom_value(metrics, "rtrec_serving_clicks_total", policy="linucb") == 2
    assert prom_value(metrics, "rtrec_serving_duplicate_clicks_total", policy="linucb") == 1
    assert prom_value(metrics, "rtrec_serving_clicks_total", policy="unknown") == 1
    assert prom_value(metrics, "rtrec_serving_duplicate_clicks_total", policy="unknown") == 1
    # 2 clicks, 2 impressions
    assert prom_value(metrics, "rtrec_serving_ctr", policy="linucb") == 1.0
    # every click is still an event: the job's join decides what a duplicate is worth
    assert sum(isinstance(e, Click) for e in rec.events.events) == 5


def test_a_frozen_broker_shows_in_healthz_once_the_oldest_event_is_too_old(
        frozen_broker: int) -> None:
    settings = Settings.from_env({"RTREC_KAFKA_BOOTSTRAP": f"127.0.0.1:{frozen_broker}",
                                  "RTREC_EVENT_QUEUE_MAX_AGE_S": 1.0})
    # a 60 s delivery timeout: what the health check must see is the wait, not a failure
    log = KafkaEventLog(settings, message_timeout_ms=60_000)
    rec = Recommender(settings, [p.product_id for p in load_catalog()], events=log, seed=0)
    try:
        with TestClient(create_app(recommender=rec)) as client:
            assert client.get("/healthz").json()["status"] == "ready"  # nothing queued yet
            r = client.post("/recommend", json={"user_id": 1, "x": [0.5] * 15})
            assert r.status_code == 200
            wait_for(lambda: client.get("/healthz").json()["status"] == "degraded", 10.0,
                     lambda: client.get("/healthz").json())
            health = client.get("/healthz").json()
            assert any("has waited" in reason and "broker slow or frozen" in reason
                       for reason in health["reasons"]), health["reasons"]
            assert health["events"]["queued"] == 1
            assert health["events"]["failed"] == health["events"]["dropped"] == 0
        stats = log.stats()
        assert stats.oldest_queued_age_s is not None and stats.oldest_queued_age_s > 1.0
    finally:
        rec.close(timeout_s=0.5)
    # given up at close: counted failed once (the purge's own report is not a second failure)
    stats = log.stats()
    assert (stats.accepted, stats.failed, stats.queued, stats.oldest_queued_age_s) == \
        (1, 1, 0, None)


def test_oldest_queued_age_is_none_when_nothing_waits() -> None:
    assert MemoryEventLog().stats().oldest_queued_age_s is None


def test_a_wrong_dim_fails_at_start_naming_both_numbers() -> None:
    settings = Settings.from_env({"RTREC_DIM": 16})
    with pytest.raises(FeatureError, match=r"dim 16 != CONTEXT_DIM 15.*RTREC_DIM=15"):
        Recommender.from_settings(settings, kafka=False, wait_s=0)
    with pytest.raises(FeatureError, match=r"dim 16 != CONTEXT_DIM 15"):
        create_app(settings)
    Recommender(settings, ["a", "b"]).recommend(1, x=np.ones(16))  # explicit x: its own d


def test_python_m_serving_refuses_a_wrong_dim_before_serving() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTREC_")}
    # free ports: should it start after all, it touches no one's server
    env.update(RTREC_DIM="16", RTREC_SERVING_PORT=str(free_port()),
               RTREC_REDIS_PORT=str(free_port()))
    proc = subprocess.run([sys.executable, "-m", "serving", "--no-kafka"], env=env,
                          capture_output=True, timeout=60)
    assert proc.returncode == 2, proc.stderr.decode()[-2000:]
    assert b"dim 16 != CONTEXT_DIM 15" in proc.stderr and b"Traceback" not in proc.stderr
