"""The HTTP API: FastAPI app built by :func:`create_app` (``python -m serving`` runs it).

- ``POST /recommend``: top-k for a user (by id, by raw features, or an explicit x);
- ``POST /feedback``: a click on a shown product (or an add to cart or purchase: ``kind``);
- ``DELETE /users/{id}``: forget a user (admin token; :mod:`serving.privacy`);
- ``GET /healthz``: ``ready`` or ``degraded`` with reasons (200 either way: a degraded
  instance still answers from its last snapshot; 503 only before the recommender exists);
- ``GET /metrics``: Prometheus text; OpenAPI at ``/docs`` and ``/openapi.json``.
- ``GET /dashboard``: the live dashboard, loopback clients only (:mod:`serving.dashboard`).

Bodies are validated by :mod:`serving.schemas` (422 with a message); errors the recommender
raises are answered by :func:`serving.errors.http_answer` (each error class carries its
status; anything else is a generic 500). A valid JSON ``POST /recommend`` is answered by
:mod:`serving.fastpath` before FastAPI's routing. Handlers are ``async``: the work is ~50 µs
of numpy, cheaper to run on the event loop than to hand to a thread pool.
"""

import asyncio
import gc
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from contract.config import Settings
from contract.features import User, check_dim
from serving.dashboard import Dashboard, dashboard_router
from serving.errors import (
    InvalidRequestError,
    NotStartedError,
    ServingError,
    UnknownProductError,
    http_answer,
)
from serving.fastpath import FastRecommend
from serving.limits import BodyGuard
from serving.metrics import Collector, Timing, freshness_histogram, latency_histogram
from serving.privacy import AdminAuth, Forgetter
from serving.recommender import Boost, Pin, Recommender
from serving.schemas import (
    CatalogOut,
    ErrorResponse,
    EventsOut,
    FeedbackRequest,
    FeedbackResponse,
    HealthResponse,
    OutOfStockIn,
    OutOfStockOut,
    ProductOut,
    RecommendRequest,
    RecommendResponse,
    recommend_request_model,
)

__all__ = ["create_app"]


def _catalog_out(r: Recommender) -> CatalogOut | None:
    """The live catalog's version and counts for /healthz (None: not followed)."""
    follower = r.catalog_follower
    if follower is None:
        return None
    h = follower.health()
    return CatalogOut(version=h.offset, digest=h.digest, products=h.products, retired=h.retired,
                      pending=len(r.catalog_pending), loaded=h.loaded)


def create_app(settings: Settings | None = None, recommender: Recommender | None = None, *,
               notifications: bool = True, kafka: bool = True) -> FastAPI:
    """The app. With ``recommender`` it serves that one (the caller closes it); otherwise it
    builds one from ``settings`` (default ``Settings.from_env()``) at start-up and closes it
    (flushing events) at shutdown."""
    settings = settings or (recommender.settings if recommender else Settings.from_env())
    if recommender is None:
        # before the server binds, not at the first request
        check_dim(settings.model.dim, settings.model.feature_spec)
    registry = CollectorRegistry()
    latency = latency_histogram(registry)
    freshness = freshness_histogram(registry)
    holder: dict[str, Recommender] = {}
    if recommender is not None:  # usable without the lifespan too (test clients, schemathesis)
        holder["rec"] = recommender
        registry.register(Collector(recommender))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            if recommender is not None:
                yield
                return
            holder["rec"] = Recommender.from_settings(settings, notifications=notifications,
                                                      kafka=kafka)
            collector = Collector(holder["rec"])
            registry.register(collector)
            # Start-up objects (catalog, users, features, arrays) never die: move them out of
            # the collector's sight so a full collection during a request has less to walk.
            gc.collect()
            gc.freeze()
            try:
                yield
            finally:
                registry.unregister(collector)
                holder.pop("rec").close()
        finally:
            forgetter.close()  # the app's own, whoever made the recommender

    app = FastAPI(title="rtrec serving", version="1.0",
                  description="Real-time LinUCB product recommendations.", lifespan=lifespan)

    def rec() -> Recommender:
        try:
            return holder["rec"]
        except KeyError:
            raise NotStartedError("starting: the recommender is not built yet") from None

    errors: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorResponse} for code in (400, 404, 408, 409, 413, 415, 422, 503)}
    body_model = recommend_request_model(settings.model.dim, settings.model.max_abs_x)

    def recommend_json(body: RecommendRequest) -> bytes:
        user = None
        if body.user is not None:
            try:
                user = User(user_id=body.user_id, **body.user.model_dump())
            except ValueError as exc:  # the feature module's own checks
                raise InvalidRequestError(f"user: {exc}") from exc
        r = rec().recommend(
            body.user_id, user=user, x=body.x, at=body.at, k=body.k, policy=body.policy,
            alpha=body.alpha, exclude=body.exclude, in_stock_only=body.in_stock_only,
            include_categories=body.include_categories,
            exclude_categories=body.exclude_categories,
            pins=None if body.pins is None else [Pin(p.product_id, p.slot) for p in body.pins],
            boosts=None if body.boosts is None else [
                Boost(b.product_id, b.category, b.add, b.multiply) for b in body.boosts],
            max_per_category=body.max_per_category, mmr_lambda=body.mmr_lambda,
            explain=body.explain)
        freshness.observe(r.snapshot_age_s)
        # Serialised directly (the shape is RecommendResponse, as documented): re-validating
        # our own output through the response model cost more than the scoring.
        out = {
            "request_id": r.request_id, "user_id": r.user_id, "ts_ms": r.ts_ms,
            "items": [{"product_id": i.product_id, "score": i.score} for i in r.items],
            "policy": r.policy, "model_version": r.model_version, "propensity": r.propensity,
            "snapshot_age_s": r.snapshot_age_s}
        if r.eligible_n is not None:  # merchandising controls applied
            out["controls"], out["eligible_n"] = list(r.controls), r.eligible_n
        if r.explanations is not None:
            out["explanations"] = list(r.explanations)
        return json.dumps(out, allow_nan=False).encode()

    app.add_middleware(Timing, histogram=latency, fast=FastRecommend(body_model, recommend_json),
                       guard=BodyGuard(settings.serving.max_body_bytes,
                                       settings.serving.body_timeout_s))

    # No `from __future__ import annotations` in this module: FastAPI reads the body_model
    # annotation below as an object (a string would be looked up in the module's globals).
    @app.post("/recommend", response_model=RecommendResponse, responses=errors)
    async def recommend(body: body_model) -> Response:  # type: ignore[valid-type]
        """Rank products for a user now and log the impression."""
        return Response(recommend_json(body), media_type="application/json")

    @app.post("/feedback", response_model=FeedbackResponse, responses=errors)
    async def feedback(body: FeedbackRequest) -> FeedbackResponse:
        """A click on ``product_id`` shown by ``request_id`` (or, with ``kind``, an add to cart
        or a purchase of it); published to Kafka."""
        rec().feedback(body.request_id, body.product_id, at=body.at, kind=body.kind)
        return FeedbackResponse(accepted=True, request_id=body.request_id,
                                product_id=body.product_id, kind=body.kind)

    auth = AdminAuth(settings.serving.admin_token)
    forgetter = Forgetter(settings)
    app.state.forgetter = forgetter  # closed with the app (its own Kafka producer)

    @app.delete("/users/{user_id}", status_code=202,
                responses={c: {"model": ErrorResponse} for c in (401, 403, 422, 503)})
    async def delete_user(user_id: int, authorization: str | None = Header(None)
                          ) -> dict[str, Any]:
        """Forget a user (admin; docs/PRIVACY.md): the deletion request is durable when this
        answers; the profile is gone at once, the model's contribution once the job applies
        it. An unknown id is still recorded (``profile_removed`` false)."""
        auth.check(authorization)
        r = rec()
        # the recommender's own user map and context cache (this module's to edit)
        result = await asyncio.to_thread(forgetter.forget, user_id, r._users, r._x_cache)
        return {"user_id": user_id, "deletion_request_id": result.request.request_id,
                "requested_at_ms": result.request.requested_at_ms,
                "profile_removed": result.profile_removed}

    @app.get("/healthz", response_model=HealthResponse)
    async def healthz() -> HealthResponse:
        """ready, or degraded with the reasons (still serving from the last snapshot)."""
        r = rec()
        h = r.health()
        snap = r.snapshot
        ev = h.events
        return HealthResponse(
            status=h.status, reasons=list(h.reasons), model_version=snap.model_version,
            snapshot_age_s=snap.age_s(), products=len(snap),
            products_with_params=int((snap.versions > 0).sum()),
            notifications=h.params.notifications if h.params else "off",
            epoch=h.params.epoch if h.params else None,
            events=EventsOut(accepted=ev.accepted, published=ev.published, failed=ev.failed,
                             dropped=ev.dropped, queued=ev.queued),
            catalog=_catalog_out(r))

    @app.get("/products/{product_id}", response_model=ProductOut, responses=errors)
    async def product(product_id: str) -> dict[str, Any]:
        """One product's model: observations, clicks, CTR, last update, top weights by
        feature name (serving.explain); 404 for a product not in the catalog."""
        summary = rec().product_summary(product_id)
        if summary is None:
            raise UnknownProductError(f"product_id: {product_id!r} is not in the catalog")
        return summary

    @app.get("/health/products")
    async def product_health() -> dict[str, Any]:
        """Products never shown in RTREC_HEALTH_WINDOW_S, stale parameters, the exploration
        share and per-product CTR of this replica (serving.health; python -m serving health)."""
        return rec().health_report()

    @app.put("/admin/out-of-stock", response_model=OutOfStockOut,
             responses={**errors, 401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}})
    async def out_of_stock(body: OutOfStockIn, authorization: str | None = Header(None)
                           ) -> OutOfStockOut:
        """Replace the set of out-of-stock product ids (admin token, as DELETE /users)."""
        auth.check(authorization)
        return OutOfStockOut(out_of_stock=sorted(rec().set_out_of_stock(body.product_ids)))

    @app.get("/metrics", response_class=Response)
    async def metrics() -> Response:
        """Prometheus metrics (text exposition format)."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    # the live dashboard (loopback clients only): /dashboard polls /dashboard/data
    app.include_router(dashboard_router(Dashboard(settings, rec, freshness)))

    async def answer_error(_request: Request, exc: Exception) -> Response:
        code, payload = http_answer(exc)
        return Response(payload, status_code=code, media_type="application/json")

    # Two registrations, one answer: Starlette handles ServingError (and subclasses) in its
    # exception middleware and Exception in its outermost error middleware.
    app.add_exception_handler(ServingError, answer_error)
    app.add_exception_handler(Exception, answer_error)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _describe(exc)}, status_code=422)

    return app


def _describe(exc: RequestValidationError) -> str:
    """One readable line per problem: ``body.k: Input should be greater than or equal to 1``;
    what pydantic says about the body as a whole is said plainly (not JSON, not an object,
    empty)."""
    parts = []
    for err in exc.errors()[:10]:
        loc = tuple(err.get("loc", ()))
        kind = err.get("type")
        if kind == "json_invalid":
            where = f" at character {loc[1]}" if len(loc) > 1 else ""
            reason = (err.get("ctx") or {}).get("error", "")
            parts.append(f"body: not valid JSON{where}: {reason}".rstrip(": "))
        elif loc == ("body",) and kind == "missing":
            parts.append("body: empty; expected a JSON object")
        elif loc == ("body",) and kind in ("model_attributes_type", "dict_type", "model_type"):
            parts.append(f"body: expected a JSON object, got {_json_kind(err.get('input'))}")
        else:
            where = ".".join(str(p) for p in loc)
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def _json_kind(value: Any) -> str:
    """The JSON name of a parsed value's type (for "expected an object, got an array")."""
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    names = {list: "an array", str: "a string", int: "a number", float: "a number",
             bytes: "raw bytes"}
    return names.get(type(value), type(value).__name__)
