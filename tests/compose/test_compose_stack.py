"""docker-compose.yml run for real (``make compose-test``): the images built by
tests/compose/run.sh on the stand-in bases, the whole stack up with Debian's docker-compose,
and checked from outside the containers, through the ports it publishes on 127.0.0.1:

- the Flink web UI and its REST API answer; the learner job, submitted by the one-shot
  job-submit container, runs on the TaskManager container;
- serving answers /recommend; a click posted to its /feedback goes through Kafka to the job,
  which learns it and publishes the product's parameters to Redis (the version grows, b is
  no longer zero);
- the simulator profile's visitors call the serving container over the compose network: its
  requests show in serving's counters, its clicks in the job's metrics and in Redis.

The stack is taken down (containers, network, volumes) at the end, also when a test fails;
the containers' logs are kept in results/compose_test.log.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from contract.config import Settings
from contract.store import ParamStore
from tests.helpers import job_metrics, rest_get, wait_for

# starting the stack (JVMs for Kafka, Flink, the submission) takes minutes on a busy host
pytestmark = pytest.mark.timeout(2400)

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ["docker-compose", "-f", str(ROOT / "docker-compose.yml")]
LOG = ROOT / "results" / "compose_test.log"
# host ports of the compose file (variable -> the default it publishes on 127.0.0.1)
PORTS = {"RTREC_FLINK_REST_PORT": 8081, "RTREC_SERVING_PORT": 8000, "RTREC_REDIS_PORT": 6379,
         "KAFKA_HOST_PORT": 9092, "FLINK_METRICS_PORT": 9249}


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def standin_env() -> dict[str, str]:
    """The variables docker/standin/env.sh exports (the stand-in images)."""
    out = subprocess.run(["bash", "-c", ". docker/standin/env.sh && env -0"], cwd=ROOT,
                         check=True, capture_output=True, text=True).stdout
    wanted = ("PYTHON_IMAGE", "MAVEN_IMAGE", "FLINK_IMAGE", "KAFKA_IMAGE", "REDIS_IMAGE",
              "FLINK_PYTHON")
    env = dict(item.split("=", 1) for item in out.split("\0") if "=" in item)
    return {k: env[k] for k in wanted}


@dataclass
class Stack:
    env: dict[str, str]
    ports: dict[str, int]

    def compose(self, *args: str, timeout: float = 600, check: bool = True
                ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*COMPOSE, *args], cwd=ROOT, env=self.env, text=True,
                              capture_output=True, timeout=timeout, check=check)

    @property
    def flink(self) -> int:
        return self.ports["RTREC_FLINK_REST_PORT"]

    @property
    def serving(self) -> str:
        return f"http://127.0.0.1:{self.ports['RTREC_SERVING_PORT']}"

    def store(self) -> ParamStore:
        settings = Settings()
        client = redis.Redis(host="127.0.0.1", port=self.ports["RTREC_REDIS_PORT"],
                             socket_timeout=5)
        return ParamStore(client, prefix=settings.redis.prefix)


def post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200, r.status
        return json.loads(r.read())


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def learner_job(port: int) -> dict[str, Any] | None:
    try:
        jobs = rest_get(port, "/jobs/overview")["jobs"]
    except OSError:
        return None
    running = [j for j in jobs if j["name"] == "rtrec-linucb-learner" and j["state"] == "RUNNING"]
    return running[0] if len(running) == 1 else None


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    # the compose file's default host ports when free (other work on this machine may hold
    # one, e.g. a local Flink cluster on 8081), otherwise free ones
    ports = dict(PORTS)
    if not all(port_free(p) for p in ports.values()):
        ports = {k: free_port() for k in ports}
        print(f"a default port is taken; publishing on {ports}")
    # a clean environment: no RTREC_* of the caller's shell leaks into the containers
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTREC_")}
    env.update(standin_env())
    env.update({k: str(v) for k, v in ports.items()})
    env.setdefault("COMPOSE_PROJECT_NAME", "rtrec-compose-test")
    s = Stack(env, ports)
    s.compose("--profile", "simulator", "down", "-v", "--remove-orphans", check=False)
    try:
        up = s.compose("up", "-d", "--no-build", timeout=900, check=False)
        assert up.returncode == 0, f"docker-compose up failed:\n{up.stdout}\n{up.stderr}"
        yield s
    finally:
        LOG.parent.mkdir(exist_ok=True)
        logs = s.compose("--profile", "simulator", "logs", "--no-color", check=False,
                         timeout=120)
        LOG.write_text(logs.stdout + logs.stderr)
        down = s.compose("--profile", "simulator", "down", "-v", "--remove-orphans",
                         "--timeout", "20", check=False, timeout=300)
        print(down.stdout + down.stderr)


def test_the_job_was_submitted_and_the_flink_ui_answers(stack: Stack) -> None:
    wait_for(lambda: learner_job(stack.flink), 300, "the learner job RUNNING on the cluster",
             every_s=2)

    def submit_line() -> str:
        lines = [line for line in stack.compose("ps", "-a").stdout.splitlines()
                 if "job-submit" in line]
        return lines[0] if lines else ""

    # job-submit is a one-shot container: it exits 0 after `flink run --detached`
    wait_for(lambda: " Exit " in submit_line(), 120, lambda: f"job-submit to exit: {submit_line()}",
             every_s=2)
    assert " Exit 0 " in submit_line() + " ", submit_line()
    ps = stack.compose("ps", "-a").stdout
    # the web UI itself (the Angular app) and the REST API it reads
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.flink}/", timeout=10) as r:
        page = r.read().decode()
    assert "Apache Flink Web Dashboard" in page
    overview = rest_get(stack.flink, "/overview")
    assert overview["taskmanagers"] >= 1 and overview["jobs-running"] == 1, overview
    job = learner_job(stack.flink)
    assert job is not None
    vertices = rest_get(stack.flink, f"/jobs/{job['jid']}")["vertices"]
    assert vertices and all(v["status"] == "RUNNING" for v in vertices), vertices
    # every published port is on the loopback interface only
    for line in ps.splitlines():
        for host in re.findall(r"([\d.]+):\d+->", line):
            assert host == "127.0.0.1", line


def test_a_click_through_serving_is_learned_into_redis(stack: Stack) -> None:
    wait_for(lambda: learner_job(stack.flink), 300, "the learner job", every_s=2)
    health = get_json(f"{stack.serving}/healthz")
    assert health["products"] > 0, health
    store = stack.store()
    rec = post(f"{stack.serving}/recommend", {"user_id": 7})
    assert len(rec["items"]) == Settings().model.top_k, rec
    clicked = rec["items"][0]["product_id"]
    before = store.versions().get(clicked, 0)
    fb = post(f"{stack.serving}/feedback", {"request_id": rec["request_id"],
                                            "product_id": clicked})
    assert fb["accepted"] is True

    def learned() -> bool:
        params = store.read_many([clicked]).get(clicked)
        return (params is not None and store.versions().get(clicked, 0) > before
                and bool(np.any(params.state.b != 0)))

    # the first record wakes the Python workers: allow for it
    wait_for(learned, 300, lambda: f"{clicked} learned with its click in Redis (versions "
             f"{store.versions()})", every_s=1)
    # the shown products that were not clicked were learned too, with reward 0
    shown = [i["product_id"] for i in rec["items"]]
    wait_for(lambda: all(store.versions().get(p, 0) > 0 for p in shown), 60,
             lambda: f"every shown product published ({store.versions()})", every_s=1)
    for p in shown[1:]:
        params = store.read_many([p])[p]
        assert not np.any(params.state.b != 0), (p, params.state.b)


def test_the_simulator_profile_drives_serving_over_the_compose_network(stack: Stack) -> None:
    wait_for(lambda: learner_job(stack.flink), 300, "the learner job", every_s=2)
    store = stack.store()
    accepted_before = get_json(f"{stack.serving}/healthz")["events"]["accepted"]
    learned_before = sum(store.versions().values())
    events_before = job_metrics(stack.flink).get("validate.events_in", 0)
    visits = 60
    run = stack.compose("--profile", "simulator", "run", "--rm", "-T", "simulator",
                        "python", "-m", "endtoend", "visitors", "--url", "http://serving:8000",
                        "--visits", str(visits), "--rate", "30", "--no-progress",
                        check=False, timeout=300)
    assert run.returncode == 0, f"simulator failed:\n{run.stdout}\n{run.stderr}"
    assert re.search(rf"^{visits} visits to http://serving:8000: top-1 CTR [\d.]+",
                     run.stdout, re.M), run.stdout
    # the serving container took every visit's request (one impression each)
    health = get_json(f"{stack.serving}/healthz")
    assert health["events"]["accepted"] - accepted_before >= visits, health
    # ... and the job learned them: more parameter versions in Redis, the job's metrics count
    want = learned_before + visits * Settings().model.top_k
    wait_for(lambda: sum(store.versions().values()) >= want, 180,
             lambda: f"{visits} visits learned (sum of versions "
             f"{sum(store.versions().values())} < {want})", every_s=1)

    def counted() -> bool:
        return job_metrics(stack.flink).get("validate.events_in", 0) - events_before >= visits

    wait_for(counted, 60, lambda: f"the job's own metrics count the events "
             f"({job_metrics(stack.flink)})", every_s=2)
