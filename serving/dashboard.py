"""The live dashboard: ``GET /dashboard`` (a page drawn with Chart.js) and ``GET
/dashboard/data`` (the JSON it polls every second), loopback clients only.

What it shows and where each figure comes from (docs/OPERATIONS.md):

- CTR per policy over time (clicks / impressions of the last ``WINDOW_S`` seconds) and the
  learning curve (cumulative CTR per policy since serving started): serving's own counters;
- parameter freshness: the age of the parameters serving answered with (p50 / p99 of the
  last window, from ``rtrec_serving_param_age_seconds``) and the snapshot's age now;
- events/s: what serving logged to Kafka, and what the job read (``events_in``);
- dead letters by reason and the job's counters: the Flink job's Prometheus endpoints
  (``RTREC_METRICS_PORTS`` on 127.0.0.1, flink_job/reporter.py), read over HTTP: serving
  never imports the job;
- top products: the products with the most learned updates in serving's snapshot, with the
  clicks learned when the snapshot carries them.

History is sampled when the page polls (at most every ``MIN_SAMPLE_S``), ``MAX_SAMPLES``
points: nothing runs while nobody watches.
"""

from __future__ import annotations

import ipaddress
import math
import re
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import Histogram

from contract.config import Settings, port_range
from serving.recommender import Recommender

__all__ = ["Dashboard", "dashboard_router", "job_metrics"]

STATIC = Path(__file__).resolve().parent / "static"
WINDOW_S = 10.0
MIN_SAMPLE_S = 0.5
MAX_SAMPLES = 3600
TOP_N = 10
# how long an endpoint that stopped answering still counts with its last scrape
STALE_S = 30.0
# the job's pipeline.name (docs/JOB.md) as the reporter writes label values: "-" becomes "_"
JOB_NAME = "rtrec_linucb_learner"
OPERATOR_PREFIX = "flink_taskmanager_job_task_operator_"
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})? (\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def _scrape(port: int, timeout_s: float) -> dict[str, float] | None:
    """One endpoint's operator metrics of our job by ``<operator>.<name>``; None when it does
    not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout_s) as r:
            text = r.read().decode("utf-8", "replace")
    except OSError:
        return None
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith(OPERATOR_PREFIX):
            continue
        m = _SAMPLE.match(line)
        if m is None:
            continue
        labels = dict(_LABEL.findall(m.group(2) or ""))
        if labels.get("job_name") != JOB_NAME:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        if not math.isfinite(value):  # Flink reports NaN for some gauges; JSON has none
            continue
        key = f"{labels.get('operator_name', '?')}.{m.group(1)[len(OPERATOR_PREFIX):]}"
        out[key] = out.get(key, 0.0) + value
    return out


def job_metrics(ports_spec: str, timeout_s: float = 2.0,
                last: dict[int, tuple[float, dict[str, float]]] | None = None,
                stale_s: float = STALE_S) -> dict[str, float] | None:
    """The job's operator metrics summed over subtasks and endpoints, by ``<operator>.<name>``
    (``validate.events_in``, ``reward_join.dead_letters_late_click``...); None when no
    endpoint of ``ports_spec`` answers (no job, or no reporter).

    With ``last`` (port -> (time, metrics), updated in place), an endpoint that misses one
    scrape (a busy TaskManager under load) counts with its last answer for up to ``stale_s``
    seconds, so a chart does not blank for one slow scrape."""
    out: dict[str, float] = {}
    answered = False
    now = time.monotonic()
    for port in port_range(ports_spec):
        got = _scrape(port, timeout_s)
        if got is not None and last is not None:
            last[port] = (now, got)
        elif got is None and last is not None and port in last:
            at, previous = last[port]
            got = previous if now - at <= stale_s else None
        if got is None:
            continue
        answered = True
        for key, value in got.items():
            out[key] = out.get(key, 0.0) + value
    return out if answered else None


def _quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Quantile ``q`` of a window's cumulative buckets [(le, count)], linear inside the
    bucket as Prometheus's histogram_quantile; None without observations."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return None
    rank = q * total
    prev_le, prev_n = 0.0, 0.0
    for le, n in buckets:
        if n >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * ((rank - prev_n) / (n - prev_n) if n > prev_n
                                               else 1.0)
        prev_le, prev_n = le, n
    return prev_le


class Dashboard:
    """Samples serving's counters (and the job's, over HTTP) into a bounded history."""

    def __init__(self, settings: Settings, rec: Callable[[], Recommender],
                 freshness: Histogram, job_ports: str | None = None) -> None:
        self.settings = settings
        self.rec = rec
        self.freshness = freshness
        self.job_ports = settings.job.metrics_ports if job_ports is None else job_ports
        self.history: deque[dict[str, Any]] = deque(maxlen=MAX_SAMPLES)
        self.lock = threading.Lock()
        self.job: dict[str, float] | None = None
        self._scraped: dict[int, tuple[float, dict[str, float]]] = {}

    def _buckets(self) -> list[tuple[float, float]]:
        out = []
        for metric in self.freshness.collect():
            for s in metric.samples:
                if s.name.endswith("_bucket"):
                    out.append((float(s.labels["le"]), float(s.value)))
        return sorted(out)

    def _raw(self) -> dict[str, Any]:
        rec = self.rec()
        snap = rec.snapshot
        stats = rec.health().events
        self.job = (job_metrics(self.job_ports, last=self._scraped)
                    if self.job_ports.strip() else None)
        return {
            "t": time.time(),
            "impressions": dict(rec.impressions), "clicks": dict(rec.clicks),
            "events": stats.accepted, "buckets": self._buckets(),
            "snapshot_age_s": snap.age_s(), "model_version": int(snap.model_version),
            "products_with_params": int((snap.versions > 0).sum()),
            "job_events_in": None if self.job is None else self.job.get("validate.events_in"),
        }

    def _point(self, raw: dict[str, Any], before: dict[str, Any] | None) -> dict[str, Any]:
        """One chart point: cumulative and windowed CTR, rates and freshness quantiles."""
        point: dict[str, Any] = {k: raw[k] for k in ("t", "snapshot_age_s", "model_version",
                                                     "products_with_params")}
        point["ctr_total"] = {p: raw["clicks"].get(p, 0) / n
                              for p, n in raw["impressions"].items() if n}
        point["impressions"] = sum(raw["impressions"].values())
        point["ctr_window"], point["events_per_s"], point["job_events_per_s"] = {}, None, None
        point["param_age_p50_s"] = point["param_age_p99_s"] = None
        if before is not None:
            dt = raw["t"] - before["t"]
            for p, n in raw["impressions"].items():
                dn = n - before["impressions"].get(p, 0)
                if dn > 0:
                    dc = raw["clicks"].get(p, 0) - before["clicks"].get(p, 0)
                    point["ctr_window"][p] = dc / dn
            if dt > 0:
                point["events_per_s"] = (raw["events"] - before["events"]) / dt
                if raw["job_events_in"] is not None and before["job_events_in"] is not None:
                    point["job_events_per_s"] = max(
                        0.0, (raw["job_events_in"] - before["job_events_in"]) / dt)
            old = dict(before["buckets"])
            window = [(le, n - old.get(le, 0.0)) for le, n in raw["buckets"]]
            point["param_age_p50_s"] = _quantile(window, 0.5)
            point["param_age_p99_s"] = _quantile(window, 0.99)
        return point

    def data(self) -> dict[str, Any]:
        """The page's JSON: the history of points, dead letters by reason, top products."""
        with self.lock:
            now = time.time()
            if not self.history or now - self.history[-1]["raw"]["t"] >= MIN_SAMPLE_S:
                raw = self._raw()
                before = next((h["raw"] for h in reversed(self.history)
                               if raw["t"] - h["raw"]["t"] >= WINDOW_S), None)
                if before is None and self.history:
                    before = self.history[0]["raw"]
                self.history.append({"raw": raw, "point": self._point(raw, before)})
            points = [h["point"] for h in self.history]
            job = self.job
        rec = self.rec()
        snap = rec.snapshot
        order = sorted(range(len(snap)), key=lambda i: -int(snap.versions[i]))[:TOP_N]
        observations = getattr(snap, "observations", None)
        top = [{"product_id": snap.product_ids[i], "updates": int(snap.versions[i]),
                "clicks": None if observations is None
                else int(snap.versions[i] - observations[i])}
               for i in order if snap.versions[i] > 0]
        dead = None
        if job is not None:
            dead = {}
            for key, value in job.items():
                _, _, name = key.partition(".")
                if name.startswith("dead_letters_"):
                    reason = name[len("dead_letters_"):]
                    dead[reason] = dead.get(reason, 0.0) + value
            dead = {r: v for r, v in sorted(dead.items()) if v > 0}
        return {"window_s": WINDOW_S, "points": points, "top_products": top,
                "dead_letters": dead, "job": job,
                "policies": sorted({p for pt in points for p in pt["ctr_total"]})}


def _loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _refused() -> Response:
    return JSONResponse({"detail": "the dashboard answers loopback clients only"},
                        status_code=403)


def dashboard_router(dashboard: Dashboard) -> APIRouter:
    """``/dashboard``, ``/dashboard/data`` and ``/dashboard/static/<file>`` (loopback only)."""
    router = APIRouter(include_in_schema=False)
    files = {"dashboard.js": STATIC / "dashboard.js",
             "chart.umd.min.js": STATIC / "vendor" / "chart.umd.min.js"}

    @router.get("/dashboard")
    async def page(request: Request) -> Response:
        if not _loopback(request):
            return _refused()
        return FileResponse(STATIC / "dashboard.html", media_type="text/html")

    @router.get("/dashboard/data")
    def data(request: Request) -> Response:  # sync: reading the job's endpoints blocks
        if not _loopback(request):
            return _refused()
        return JSONResponse(dashboard.data(), headers={"cache-control": "no-store"})

    @router.get("/dashboard/static/{name}")
    async def static(name: str, request: Request) -> Response:
        if not _loopback(request):
            return _refused()
        path = files.get(name)
        if path is None:
            return JSONResponse({"detail": f"no static file {name!r}"}, status_code=404)
        if not path.is_file():
            return JSONResponse({"detail": f"{name} is not installed: run make install "
                                           "(python -m serving.vendor)"}, status_code=404)
        return FileResponse(path, media_type="text/javascript")

    return router
