"""The HTTP API: happy paths, 4xx with a message for bad requests, metrics, a property test
over the OpenAPI schema that finds no 5xx, and ``python -m serving`` against real Redis and
Kafka."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from serving_helpers import blob, learned_state, post_both

from contract.config import Settings
from contract.events import Impression, parse_event
from contract.features import FeatureSpace, load_catalog, load_users
from contract.store import ParamStore
from devstack.stack import Stack, free_port
from serving import Recommender
from serving.app import create_app
from serving.eventlog import MemoryEventLog
from tests.helpers import read_topics, wait_for

USERS = load_users()


def _recommender() -> Recommender:
    return Recommender(Settings.from_env({}), [p.product_id for p in load_catalog()],
                       events=MemoryEventLog(), users={u.user_id: u for u in USERS},
                       features=FeatureSpace.load(), seed=0, catalog=load_catalog())


@pytest.fixture(scope="module")
def client():  # type: ignore[no-untyped-def]
    rec = _recommender()
    with TestClient(create_app(recommender=rec)) as c:
        c.rec = rec  # type: ignore[attr-defined]
        yield c


def test_recommend_by_id_features_and_x_then_feedback(client) -> None:
    uid = USERS[3].user_id
    r = client.post("/recommend", json={"user_id": uid, "at": "2026-01-05T08:30:00Z", "k": 4})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["items"]) == 4 and body["policy"] == "linucb" and body["propensity"] == 1.0
    assert body["ts_ms"] == 1767601800000 and body["model_version"] == 0
    imp = client.rec.events.events[-1]
    assert isinstance(imp, Impression) and imp.request_id == body["request_id"]
    assert imp.x[10] == 1.0 and imp.x[13] == 1.0  # morning on a Monday

    features = {"age": 33, "gender": "F", "lat": -33.9, "lon": 151.2, "source": "Search"}
    r2 = client.post("/recommend", json={"user_id": 123456, "user": features,
                                         "policy": "random", "k": 2})
    assert r2.status_code == 200, r2.text
    assert r2.json()["propensity"] == pytest.approx(1 / (200 * 199))

    r3 = client.post("/recommend", json={"user_id": 1, "x": [0.5] * 15, "policy": "greedy"})
    assert r3.status_code == 200 and len(r3.json()["items"]) == 5

    shown = body["items"][0]["product_id"]
    f = client.post("/feedback", json={"request_id": body["request_id"], "product_id": shown})
    assert f.status_code == 200 and f.json()["accepted"] is True
    metrics = client.get("/metrics").text
    assert 'rtrec_serving_clicks_total{policy="linucb"} 1.0' in metrics
    assert 'rtrec_serving_ctr{policy="linucb"}' in metrics
    assert 'rtrec_serving_request_seconds_bucket{code="200",le="0.005",route="/recommend"}' \
        in metrics
    assert "rtrec_serving_snapshot_age_seconds" in metrics
    assert 'rtrec_serving_events_total{outcome="published"}' in metrics


@pytest.mark.parametrize(("path", "body", "code", "match"), [
    ("/recommend", {"user_id": 10**7}, 404, "unknown"),
    ("/recommend", {"user_id": True}, 422, "user_id"),
    ("/recommend", {"user_id": "7"}, 422, "user_id"),
    ("/recommend", {"user_id": 1, "extra": 1}, 422, "extra"),
    ("/recommend", {"user_id": 1, "k": 0}, 422, "k"),
    ("/recommend", {"user_id": 1, "policy": "thompson"}, 422, "policy"),
    ("/recommend", {"user_id": 1, "x": [1.0] * 3}, 422, "body.x"),
    ("/recommend", {"user_id": 1, "alpha": -1}, 422, "alpha"),
    ("/recommend", {"user_id": 1, "at": "1900-01-01T00:00:00Z"}, 422, "at"),
    ("/recommend", {"user_id": 1, "user": {"age": 30}}, 422, "user"),
    ("/feedback", {"request_id": "", "product_id": "p001"}, 422, "request_id"),
    ("/feedback", {"request_id": "r", "product_id": "p001", "clicked": True}, 422, "clicked"),
    ("/feedback", {"request_id": "r", "product_id": "p001", "kind": "refund"}, 422, "kind"),
])
def test_bad_requests_get_4xx_with_a_message(client, path, body, code, match) -> None:
    r = client.post(path, json=body)
    assert r.status_code == code, r.text
    assert match in r.json()["detail"]


def test_nan_and_malformed_json_are_422(client) -> None:
    for raw in (b'{"user_id": 1, "x": [NaN, 0,0,0,0,0,0,0,0,0,0,0,0,0,0]}', b'{"user_id":',
                b'[]', b'{"user_id": 1, "alpha": Infinity}'):
        r = client.post("/recommend", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 422, (raw, r.text)


def test_feedback_for_a_product_not_shown_is_refused(client) -> None:
    body = client.post("/recommend", json={"user_id": USERS[0].user_id, "k": 1}).json()
    shown = body["items"][0]["product_id"]
    other = "p000" if shown != "p000" else "p001"
    r = client.post("/feedback", json={"request_id": body["request_id"], "product_id": other})
    assert r.status_code == 422 and "not shown" in r.json()["detail"]


def test_feedback_of_each_kind_is_published_with_it_and_only_clicks_count_in_the_ctr(
        client) -> None:
    """Issue 15: add_to_cart and purchase come through POST /feedback with a kind; the job
    learns each with its configured reward (docs/LEARNING.md)."""
    body = client.post("/recommend", json={"user_id": USERS[5].user_id, "k": 2,
                                           "policy": "greedy"}).json()
    shown = body["items"][1]["product_id"]
    clicks_before = client.rec.clicks["greedy"]
    outcomes_before = dict(client.rec.outcomes)
    for kind in ("click", "add_to_cart", "purchase", "purchase"):
        r = client.post("/feedback", json={"request_id": body["request_id"],
                                           "product_id": shown, "kind": kind})
        assert r.status_code == 200 and r.json()["kind"] == kind, r.text
    sent = [e for e in client.rec.events.events[-4:]]
    assert [(e.request_id, e.product_id, e.kind) for e in sent] == [
        (body["request_id"], shown, k) for k in ("click", "add_to_cart", "purchase", "purchase")]
    assert client.rec.clicks["greedy"] == clicks_before + 1
    assert client.rec.outcomes == {"add_to_cart": outcomes_before["add_to_cart"] + 1,
                                   "purchase": outcomes_before["purchase"] + 1}  # one repeat
    assert 'rtrec_serving_outcomes_total{kind="purchase"}' in client.get("/metrics").text


def test_health_reports_ready_without_a_refresher(client) -> None:
    h = client.get("/healthz").json()
    assert h["status"] == "ready" and h["products"] == 200 and h["notifications"] == "off"


schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(recommender=_recommender()))
# An invalid body larger than RTREC_MAX_BODY_BYTES is refused with 413 before it is parsed:
# a rejection too (documented on every JSON route), which the negative-data check's default
# list of rejection codes leaves out.
schema.config.checks.negative_data_rejection.expected_statuses.append("413")


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_openapi_property_no_server_errors(case) -> None:  # type: ignore[no-untyped-def]
    """Schemathesis generates valid and invalid requests from the schema; none may 5xx, and
    every response must match its documented schema."""
    response = case.call()
    assert response.status_code < 500, response.text
    case.validate_response(response)


@pytest.mark.integration
def test_python_m_serving_end_to_end_and_flushes_its_events_at_sigterm(
        stack: Stack, unique_settings: Settings) -> None:
    """The real entry point against the real stack: loads parameters from Redis, answers
    over HTTP, logs the impression to Kafka, and on SIGTERM shuts down cleanly, flushing what
    it holds: impressions logged right before the signal, while the broker was frozen
    (SIGSTOP), so that /healthz showed every one of them still unacknowledged, are in Kafka
    once the broker thaws during the shutdown."""
    settings = unique_settings
    store = ParamStore.from_settings(settings)
    store.write("p042", blob(learned_state(np.random.default_rng(0), settings.model.dim, 9)))
    port = free_port()
    env = {**os.environ, **settings.to_env(), "RTREC_SERVING_PORT": str(port)}
    env = {k: v for k, v in env.items() if not k.startswith("RTREC_") or k in settings.to_env()
           or k == "RTREC_SERVING_PORT"}
    kafka_pid = stack.status()["kafka"]["pid"]
    assert isinstance(kafka_pid, int)
    proc = subprocess.Popen([sys.executable, "-m", "serving", "--log-level", "warning"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    frozen = False
    try:
        url = f"http://127.0.0.1:{port}"
        health: dict = {}

        def ready() -> bool:
            try:
                health.update(httpx.get(f"{url}/healthz", timeout=1).json())
            except httpx.HTTPError:
                return False
            return health["status"] == "ready"

        wait_for(ready, 30, lambda: health)
        assert health["model_version"] == 9 and health["products_with_params"] == 1
        r = httpx.post(f"{url}/recommend", json={"user_id": USERS[0].user_id}, timeout=5)
        assert r.status_code == 200 and r.json()["model_version"] == 9
        rids = [r.json()["request_id"]]
        wait_for(lambda: httpx.get(f"{url}/healthz").json()["events"]["queued"] == 0, 30,
                 "the first impression acknowledged")

        os.kill(kafka_pid, signal.SIGSTOP)  # the broker holds its connections, answers nothing
        frozen = True
        for user in USERS[1:21]:
            r = httpx.post(f"{url}/recommend", json={"user_id": user.user_id}, timeout=5)
            assert r.status_code == 200
            rids.append(r.json()["request_id"])
        events = httpx.get(f"{url}/healthz").json()["events"]
        assert events["queued"] == 20 and events["failed"] == events["dropped"] == 0, events
        proc.send_signal(signal.SIGTERM)
        time.sleep(1.0)  # the shutdown has begun with all 20 queued
        os.kill(kafka_pid, signal.SIGCONT)
        frozen = False
    finally:
        if frozen:
            os.kill(kafka_pid, signal.SIGCONT)
        proc.terminate()
        _out, err = proc.communicate(timeout=30)
    # uvicorn shuts down gracefully (lifespan: events flushed), then re-raises the signal.
    assert proc.returncode in (0, -15), err.decode()[-2000:]
    assert b"Traceback" not in err, err.decode()[-2000:]
    messages = read_topics(settings, [settings.kafka.topic_impressions], at_least=21)
    imps = [parse_event(m.value(), dim=settings.model.dim) for m in messages]
    assert sorted(i.request_id for i in imps) == sorted(rids)  # each once, none lost
    assert all(i.model_version == 9 for i in imps)


ALIKE_AT = "2026-01-05T08:30:00Z"  # a fixed time: ts_ms and the context are then equal too


@pytest.mark.parametrize(("body", "code"), [
    ({"user_id": USERS[1].user_id, "k": 3, "at": ALIKE_AT}, 200),
    ({"user_id": 123456, "policy": "greedy", "at": ALIKE_AT,
      "user": {"age": 33, "gender": "F", "lat": -33.9, "lon": 151.2, "source": "Search"}}, 200),
    ({"user_id": 1, "x": [0.5] * 15, "alpha": 2.0, "at": ALIKE_AT}, 200),
    ({"user_id": 10**7}, 404),  # refused by the recommender: each path answers on its own
    ({"user_id": 1, "k": 0}, 422),  # refused by the schema: the fast path replays to the route
    ({"user_id": 1, "policy": "thompson"}, 422),
    ({"user_id": 1, "x": [1.0] * 3}, 422),
    ({"user_id": True}, 422),
])
def test_fast_path_and_route_answer_alike(client, body, code) -> None:
    """POST /recommend with a JSON content type is answered by the ASGI fast path, without one
    by the FastAPI route: the same request must get the same status and body from both."""
    fast, routed = post_both(client, body)
    assert (fast.status_code, routed.status_code) == (code, code), (fast.text, routed.text)
    assert fast.headers["content-type"] == routed.headers["content-type"] == "application/json"
    a, b = fast.json(), routed.json()
    if code == 200:
        assert a.pop("request_id") != b.pop("request_id")  # two requests, two impressions
        assert abs(a.pop("snapshot_age_s") - b.pop("snapshot_age_s")) < 60
        # equal scores tie, and ties break by a per-request shuffle: compare the scores
        assert [i["score"] for i in a.pop("items")] == [i["score"] for i in b.pop("items")]
        assert a == b
    else:
        assert fast.content == routed.content
