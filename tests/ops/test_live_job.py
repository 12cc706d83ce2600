"""Operations against one real job: its Prometheus endpoint, a real Prometheus scraping it, and
the live dashboard in a real headless Chromium.

The job runs as a user starts it (``python -m flink_job run``, mini-cluster) with
``RTREC_METRICS_PORTS`` set to one free port, once for the module (a start costs 10-40 s):

1. its reporter (flink_job/reporter.py) serves the job's own metrics there, bound to
   127.0.0.1 only, with the values the traffic implies: every event in ``events_in``, each
   unparseable record in ``dead_letters_unparseable``, every observation and click in
   ``updates_learned``, no restart; a Prometheus server started as ``make monitor-up`` starts
   it (devstack.prometheus) scrapes the endpoint and answers a query with the same count;
2. serving (``python -m serving``) with visitors and a random policy's traffic: Chromium
   loads ``/dashboard``, every chart has data and painted pixels (the page reports both), and
   the screenshot is not blank; a non-loopback client is refused.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from contract.config import Settings
from devstack.stack import Stack, free_port
from endtoend.harness import (
    JobProcess,
    Traffic,
    now_ms,
    produce,
    seeded_traffic,
    sentinels,
    versions,
)
from endtoend.processes import ROOT, child_env
from tests.helpers import PRODUCTS, wait_for, wait_learned

# a job start takes 10-40 s on an idle machine and minutes at load 40-70 (seen here): the
# module's job is started inside the first test's time
pytestmark = [pytest.mark.integration, pytest.mark.flink, pytest.mark.timeout(1200)]
log = logging.getLogger(__name__)

OPERATOR = "flink_taskmanager_job_task_operator_"
OPERATIONS_MD = ROOT / "docs" / "OPERATIONS.md"
BAD = 3  # unparseable records sent to the job
LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F"}  # 127.0.0.1 in /proc/net/tcp{,6}


@dataclass
class LiveJob:
    settings: Settings
    job: JobProcess
    port: int
    traffic: Traffic
    tmp: Path
    unparseable: int  # the bad records and the sentinels
    closing_ms: int  # the sentinels' event time: later events are live again


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def job_sum(text: str, metric: str, operator: str) -> float | None:
    """Sum over subtasks of ``flink_taskmanager_job_task_operator_<metric>`` of one operator
    (None when the endpoint has no such sample yet). The reporter writes label values with
    ``_`` for ``-``: operator ``learn-linucb`` is ``operator_name="learn_linucb"``."""
    pattern = re.compile(rf"^{OPERATOR}{metric}\{{([^}}]*)\}} (\S+)$", re.M)
    values = [float(v) for labels, v in pattern.findall(text)
              if f'operator_name="{operator}"' in labels]
    return sum(values) if values else None


def listen_addresses(port: int) -> set[str]:
    """Local addresses (hex, as /proc/net/tcp* print them) listening on ``port``."""
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            addr, p = f[1].rsplit(":", 1)
            if f[3] == "0A" and int(p, 16) == port:
                out.add(addr)
    return out


@pytest.fixture(scope="module")
def live(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveJob]:
    """The job with its own topics, prefix and checkpoints, its reporter on a free port, having
    learned 300 seeded events (3 unparseable records dead-lettered)."""
    tmp = tmp_path_factory.mktemp("ops")
    tag = f"t{uuid.uuid4().hex[:8]}"
    port = free_port()
    s = stack.settings.isolated(tag, tmp).override(RTREC_METRICS_PORTS=str(port),
                                                   RTREC_CHECKPOINT_INTERVAL_MS=1000)
    Stack(s, kafka_controller_port=stack.kafka_controller_port).create_topics()
    products = tmp / "products.txt"
    products.write_text("\n".join(PRODUCTS) + "\n")
    job = JobProcess(s, tmp / "job.log", ["--products", str(products),
                                          "--max-restarts", "0"]).start()
    try:
        traffic = seeded_traffic(s, 300, seed=7, start_ms=now_ms(), products=PRODUCTS[:30],
                                 step_ms=3.0, click_p=0.4)
        bad = [(s.kafka.topic_impressions, b"{not json", now_ms(), None)] * BAD
        # sentinels past every reward window close them (dead-lettered as unparseable too);
        # live traffic must come after them (the dashboard test waits for that)
        closing_ms = now_ms() + round(s.job.reward_window_s * 1000) + 5000
        closing = sentinels(s, closing_ms)
        produce(s, [*traffic.records, *bad, *closing])
        wait_learned(s, versions(traffic.observations), job, timeout_s=420)
        yield LiveJob(s, job, port, traffic, tmp, BAD + len(closing), closing_ms)
    finally:
        job.kill()


def test_the_jobs_metrics_on_its_endpoint_and_in_prometheus(live: LiveJob) -> None:
    port, job = live.port, live.job
    n_events = len(live.traffic.records) + live.unparseable
    seen: dict[str, str] = {}

    def settled() -> bool:
        try:
            seen["text"] = scrape(port)
        except OSError as exc:
            seen["text"] = f"no answer: {exc}"
            return False
        return (job_sum(seen["text"], "events_in", "validate") == n_events
                and job_sum(seen["text"], "dead_letters_unparseable", "validate")
                == live.unparseable)

    try:
        wait_for(settled, 30, f"events_in {n_events} and {live.unparseable} unparseable on "
                 f":{port}/metrics", job, every_s=0.5)
    except AssertionError as exc:
        lines = [ln for ln in seen.get("text", "").splitlines() if "events_in" in ln
                 or "dead_letters" in ln or ln.startswith("no answer")]
        raise AssertionError(f"{exc}\n" + "\n".join(lines[:20])) from None
    text = scrape(port)
    assert job_sum(text, "dead_letters", "validate") == live.unparseable
    # one update per observation and one per click's correction: the products' versions
    learned = sum(versions(live.traffic.observations).values())
    assert job_sum(text, "updates_learned", "learn_linucb") == learned
    assert job_sum(text, "updates_published", "publish_redis") > 0
    assert re.search(r'^flink_jobmanager_job_numRestarts\{[^}]*job_name="'
                     r'rtrec_linucb_learner"[^}]*\} 0\.0$', text, re.M), \
        "the job's numRestarts is not 0 on the endpoint"
    # bound to 127.0.0.1 only: 0100007F in /proc/net/tcp, or the JVM's IPv4-mapped
    # ::ffff:127.0.0.1 in /proc/net/tcp6 (never 00000000, every interface)
    bound = listen_addresses(port)
    assert bound and bound <= LOOPBACK, bound
    # every metric of the job's own operators is documented
    ours = set(re.findall(rf"^{OPERATOR}(\w+)\{{[^}}]*operator_name=\"(?:source_batch|validate|"
                          r"reward_join|micro_batch|learn_linucb|publish_redis|"
                          r"ope_evaluate)\"", text, re.M))
    ours = {m for m in ours if not m.startswith(("num", "current", "is", "Watermark"))}
    assert {"events_in", "updates_learned", "publish_lag_ms"} <= ours, sorted(ours)
    doc = OPERATIONS_MD.read_text()
    # dead_letters_<reason> is one row listing the reasons
    missing = sorted(m for m in ours if f"`{m}`" not in doc and not (
        m.startswith("dead_letters_") and f"`{m[len('dead_letters_'):]}`" in doc))
    assert not missing, f"docs/OPERATIONS.md does not list the job's metric(s) {missing}"

    if shutil.which("prometheus") is None:
        pytest.fail("Debian's prometheus is not installed (make install installs it)")
    from devstack import prometheus

    ps = live.settings.override(RTREC_PROMETHEUS_PORT=free_port(),
                                RTREC_STACK_DIR=live.tmp / "stack")
    server = prometheus.Prometheus(ps, scrape_interval_s=2.0)
    server.up(timeout_s=60)
    try:
        def scraped() -> bool:
            got = server.query(f'sum({OPERATOR}events_in{{operator_name="validate"}})')
            return bool(got) and float(got[0]["value"][1]) == n_events

        try:
            wait_for(scraped, 90, "Prometheus's answer: sum(events_in) of the job", job,
                     every_s=1.0)
        except AssertionError as exc:
            with urllib.request.urlopen(f"{server.url}/api/v1/targets", timeout=5) as r:
                targets = [(t["scrapeUrl"], t["health"], t["lastError"])
                           for t in json.loads(r.read())["data"]["activeTargets"]
                           if t["health"] != "down" or str(port) in t["scrapeUrl"]]
            raise AssertionError(f"{exc}; targets: {targets}") from None
        up = server.query(f'up{{job="flink", instance="127.0.0.1:{port}"}}')
        assert up and up[0]["value"][1] == "1", up
        rules = {r["name"] for g in json.loads(urllib.request.urlopen(
            f"{server.url}/api/v1/rules", timeout=5).read())["data"]["groups"]
            for r in g["rules"]}
        assert "RtrecDeadLetterRate" in rules and "RtrecServing5xx" in rules, rules
    finally:
        server.down()
    assert not server.alive()
    assert listen_addresses(ps.stack.prometheus_port) == set()


CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                  "--disable-dev-shm-usage", "--no-first-run", "--window-size=1400,900"]


def _random_policy_traffic(url: str, stop: threading.Event, seed: int = 3) -> int:
    """Recommendations of the random policy (a second line on the CTR charts), a click on
    the first product of every third one; returns how many were made."""
    n = 0
    with httpx.Client(base_url=url, timeout=5) as http:
        while not stop.is_set():
            r = http.post("/recommend", json={"user_id": (seed * 7919 + n) % 1000,
                                              "policy": "random"})
            r.raise_for_status()
            body = r.json()
            if n % 3 == 0 and body["items"]:
                http.post("/feedback", json={"request_id": body["request_id"],
                                             "product_id": body["items"][0]["product_id"]})
            n += 1
            stop.wait(0.05)
    return n


def test_the_dashboard_in_headless_chromium(live: LiveJob) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is not installed (make install installs it)")
    from serving.vendor import TARGET

    assert TARGET.is_file(), "chart.js is not installed: make install (python -m serving.vendor)"
    t0 = time.monotonic()
    s = live.settings.override(RTREC_SERVING_PORT=free_port())
    url = f"http://127.0.0.1:{s.serving.port}"
    log_path = live.tmp / "serving.log"
    with open(log_path, "wb") as logf:
        serving = subprocess.Popen([sys.executable, "-m", "serving", "--log-level", "warning"],
                                   env=child_env(s), cwd=ROOT, stdout=logf,
                                   stderr=subprocess.STDOUT)
    visitors = None
    stop = threading.Event()
    try:
        def ready() -> bool:
            try:
                return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, 30, "serving's /healthz")
        wait_for(lambda: now_ms() > live.closing_ms + 1000, 30, "a clock past the sentinels")
        with open(live.tmp / "visitors.log", "wb") as vlog:
            visitors = subprocess.Popen(
                [sys.executable, "-m", "endtoend", "visitors", "--url", url, "--visits", "2000",
                 "--rate", "40", "--no-progress"], env=child_env(s), cwd=ROOT,
                stdout=subprocess.DEVNULL, stderr=vlog)
        random_thread = threading.Thread(target=_random_policy_traffic, args=(url, stop),
                                         daemon=True)
        random_thread.start()
        # the page polls every second; the test polls too so the history spans the traffic
        for _ in range(14):
            r = httpx.get(f"{url}/dashboard/data", timeout=5)
            assert r.status_code == 200, r.text
            time.sleep(1.0)
        data = r.json()
        assert {"linucb", "random"} <= set(data["policies"]), data["policies"]
        assert data["dead_letters"] == {"unparseable": live.unparseable}, data["dead_letters"]
        assert data["top_products"] and data["points"][-1]["impressions"] > 0

        shot = live.tmp / "dashboard.png"
        # two browsers at once (a few seconds each on an idle machine; minutes on a loaded
        # one: generous timeouts): one prints the DOM, the other takes the screenshot
        # each browser its own profile folder: two sharing the default one hand over to each
        # other through its singleton lock, and the screenshot's once hung for 300 s in make test
        flags = [chromium, *CHROMIUM_FLAGS, "--virtual-time-budget=4000"]
        shooter = subprocess.Popen([*flags, f"--user-data-dir={live.tmp / 'chromium-shot'}",
                                    f"--screenshot={shot}", f"{url}/dashboard"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            dom = subprocess.run([*flags, f"--user-data-dir={live.tmp / 'chromium-dom'}",
                                  "--dump-dom", f"{url}/dashboard"],
                                 capture_output=True, text=True, timeout=300)
            shooter.wait(300)
        finally:
            if shooter.poll() is None:
                shooter.kill()
                shooter.wait()
        m = re.search(r'<pre id="chart-report"[^>]*>(.*?)</pre>', dom.stdout, re.S)
        assert m, f"no chart report in the page's DOM: {dom.stdout[-2000:]} {dom.stderr[-2000:]}"
        report = json.loads(m.group(1).replace("&quot;", '"'))
        assert report["polls"] >= 1, report
        for name, chart in report["charts"].items():
            assert chart["points"] > 0, f"chart {name} has no data: {report}"
            assert chart["painted"] > 500, f"chart {name} painted nothing: {report}"
        assert set(report["charts"]) == {"ctr_window", "ctr_total", "freshness", "events",
                                          "dead", "top"}
        assert shot.is_file() and shot.stat().st_size > 20_000, "blank or missing screenshot"
        _assert_not_blank(shot)
        shutil.copy(shot, live.tmp.parent / "dashboard.png")  # kept for a look

        # loopback only: the same page asked from the machine's other address is refused
        other = _non_loopback_address()
        if other is not None:
            assert _status_from(other, url) == 403
        # every metric serving exposes is documented
        doc = OPERATIONS_MD.read_text()
        names = {re.sub(r"_total$", "", n) for n in re.findall(
            r"^# TYPE (rtrec_\w+) ", httpx.get(f"{url}/metrics").text, re.M)
            if not n.endswith("_created")}
        assert "rtrec_serving_param_age_seconds" in names
        missing = sorted(n for n in names if f"`{n}`" not in doc)
        assert not missing, f"docs/OPERATIONS.md does not list serving's metric(s) {missing}"
    finally:
        stop.set()
        if visitors is not None:
            visitors.kill()
            visitors.wait(10)
        serving.terminate()
        try:
            serving.wait(15)
        except subprocess.TimeoutExpired:
            serving.kill()
            serving.wait(5)
    log.info("dashboard test: %.1f s (the job already running)", time.monotonic() - t0)


def _assert_not_blank(png: Path) -> None:
    """More than one colour in the screenshot, and some of the charts' line colours."""
    from PIL import Image

    img = Image.open(png).convert("RGB")
    colors = img.getcolors(maxcolors=1 << 20) or []
    assert len(colors) > 50, f"the screenshot has {len(colors)} colour(s): blank"
    blue = sum(n for n, (r, g, b) in colors if b > 150 and r < 80 and 90 < g < 150)
    assert blue > 300, f"no chart line colour in the screenshot ({blue} pixels)"


def _non_loopback_address() -> str | None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("10.255.255.255", 1))
            addr = sock.getsockname()[0]
        except OSError:
            return None
    return None if addr.startswith("127.") else addr


def _status_from(source: str, url: str) -> int:
    """The status of GET /dashboard from a connection whose source address is ``source``."""
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=5) as http:
        return http.get(f"{url}/dashboard").status_code
