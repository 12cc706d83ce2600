"""What ``GET /metrics`` exposes: request latency by route and code, and the recommender's own
counters read at scrape time (so a request pays nothing for them)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from serving.errors import ServingError, http_answer
from serving.fastpath import FastRecommend, is_json
from serving.health import metric_families
from serving.limits import BodyGuard, replay
from serving.recommender import Recommender

__all__ = ["ROUTES", "Collector", "Timing", "freshness_histogram", "latency_histogram"]

ROUTES = ("/recommend", "/feedback", "/healthz", "/metrics")
"""Label values of the latency histogram's route; any other path is "other" (bounded)."""


def latency_histogram(registry: CollectorRegistry) -> Histogram:
    """Buckets from 0.2 ms: the app's own time is well under a millisecond."""
    return Histogram(
        "rtrec_serving_request_seconds", "HTTP request latency inside the app.",
        ["route", "code"], registry=registry,
        buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0))


def freshness_histogram(registry: CollectorRegistry) -> Histogram:
    """How old the parameters were when serving answered (the snapshot's age): the loop's
    freshness, p50 ~25 ms and p99 ~150 ms in the closed loop (README); alerted on at p99 > 1 s
    (monitoring/rules.yml)."""
    return Histogram(
        "rtrec_serving_param_age_seconds",
        "Age of the parameters a recommendation was scored with (seconds since the snapshot "
        "was last confirmed in sync with Redis).", registry=registry,
        buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0))


class Timing:
    """Pure ASGI middleware timing every HTTP request by route and status code (a
    BaseHTTPMiddleware would cost more than the scoring itself). It also reads the body
    through the ``guard`` (:mod:`serving.limits`: content type, size, deadline) and hands a
    JSON ``POST /recommend`` to the fast path, so neither adds a layer of its own and both the
    fast path and the routes get the same limits."""

    def __init__(self, app: Callable[..., Awaitable[None]], histogram: Histogram,
                 fast: FastRecommend | None = None, guard: BodyGuard | None = None) -> None:
        self.app = app
        self.histogram = histogram
        self.fast = fast
        self.guard = guard

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = [500]

        async def send_status(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            if self.guard is not None:
                try:
                    if self.guard.check(scope):
                        body = await self.guard.read(receive)
                        if body is None:  # the client left: nobody to answer
                            status[0] = 499
                            return
                        receive = replay(body, receive)
                except ServingError as exc:  # 408, 413, 415: the body stays unread
                    code, payload = http_answer(exc)
                    await send_status({"type": "http.response.start", "status": code, "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(payload)).encode()),
                        (b"connection", b"close")]})
                    await send_status({"type": "http.response.body", "body": payload})
                    return
            if (self.fast is not None and scope["path"] == "/recommend"
                    and scope["method"] == "POST" and is_json(scope)):
                await self.fast(scope, receive, send_status, self.app)
            else:
                await self.app(scope, receive, send_status)
        finally:
            route = scope["path"] if scope["path"] in ROUTES else "other"
            self.histogram.labels(route, str(status[0])).observe(time.perf_counter() - t0)


class Collector:
    """Reads the recommender's counters at scrape time: nothing extra per request."""

    def __init__(self, rec: Recommender) -> None:
        self.rec = rec

    def collect(self) -> Any:
        rec = self.rec
        snap = rec.snapshot
        yield GaugeMetricFamily("rtrec_serving_snapshot_age_seconds",
                                "Seconds since the snapshot was last confirmed in sync with Redis.",
                                value=snap.age_s())
        yield GaugeMetricFamily("rtrec_serving_model_version",
                                "Sum of the product versions in the snapshot.",
                                value=snap.model_version)
        yield GaugeMetricFamily("rtrec_serving_products_with_params",
                                "Products scored from learned parameters (the rest: the prior).",
                                value=int((snap.versions > 0).sum()))
        follower = getattr(rec, "catalog_follower", None)
        if follower is not None:  # the live catalog (serving/catalog.py, docs/CATALOG.md)
            ch = follower.health()
            yield GaugeMetricFamily("rtrec_serving_catalog_version",
                                    "Catalog topic records read (its offset): equal versions, "
                                    "equal catalogs.", value=ch.offset)
            products = GaugeMetricFamily("rtrec_serving_catalog_products",
                                         "Products of the live catalog by state (pending: no "
                                         "row here until a restart).", labels=["state"])
            products.add_metric(["active"], ch.products)
            products.add_metric(["retired"], ch.retired)
            products.add_metric(["pending"], len(rec.catalog_pending))
            yield products
        h = rec.health()
        yield GaugeMetricFamily("rtrec_serving_ready", "1 ready, 0 degraded.",
                                value=1 if h.status == "ready" else 0)
        if h.params is not None and h.params.last_snapshot_ms is not None:
            yield GaugeMetricFamily(
                "rtrec_snapshot_age_seconds", "Seconds since the newest model snapshot "
                "(python -m flink_job snapshot; absent: none taken).",
                value=max(0.0, time.time() - h.params.last_snapshot_ms / 1000))
        ev = h.events
        events = CounterMetricFamily("rtrec_serving_events", "Events by outcome.",
                                     labels=["outcome"])
        for outcome in ("accepted", "published", "failed", "dropped"):
            events.add_metric([outcome], getattr(ev, outcome))
        yield events
        yield GaugeMetricFamily("rtrec_serving_events_queued",
                                "Events accepted, not yet acknowledged.", value=ev.queued)
        imps = CounterMetricFamily("rtrec_serving_impressions", "Recommendations by policy.",
                                   labels=["policy"])
        clicks = CounterMetricFamily("rtrec_serving_clicks", "Clicks by the policy that showed "
                                     "them ('unknown': request not remembered).",
                                     labels=["policy"])
        ctr = GaugeMetricFamily("rtrec_serving_ctr", "Clicks per impression by policy.",
                                labels=["policy"])
        for policy, n in rec.impressions.items():
            imps.add_metric([policy], n)
            ctr.add_metric([policy], rec.clicks.get(policy, 0) / n if n else 0.0)
        duplicates = CounterMetricFamily(
            "rtrec_serving_duplicate_clicks", "Clicks on a (request, product) already clicked: "
            "published, not counted in clicks or CTR.", labels=["policy"])
        for policy, n in rec.clicks.items():
            clicks.add_metric([policy], n)
            duplicates.add_metric([policy], rec.duplicate_clicks.get(policy, 0))
        outcomes = CounterMetricFamily(
            "rtrec_serving_outcomes", "Events after a click by kind (POST /feedback with a "
            "kind: add_to_cart, purchase); repeats not counted.", labels=["kind"])
        for kind, n in getattr(rec, "outcomes", {}).items():
            outcomes.add_metric([kind], n)
        yield imps
        yield clicks
        yield duplicates
        yield outcomes
        yield ctr
        yield from metric_families(rec)  # product health (serving.health)
        if rec.experiment is not None:  # per variant (docs/EXPERIMENTS.md)
            yield from rec.experiment.metric_families()
        if getattr(rec, "self_tune", None) is not None:  # docs/EXPLORATION.md section 3
            yield from rec.self_tune.metric_families()
