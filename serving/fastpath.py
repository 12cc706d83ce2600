"""``POST /recommend`` without FastAPI's routing and dependency machinery.

The route costs more than the scoring: measured in-process, answering a valid JSON body here
takes ~0.1 ms (a third of the app's time) off each request. A body that validates (the same
pydantic model, JSON mode) is answered by the same handler as the route; errors it raises are
answered by :func:`serving.errors.http_answer`, as the route's are. Anything else - a body
that does not validate, an ``application/*+json`` type - is replayed to the FastAPI route, so
every validation answer is the route's own. The body arrives already read, whole and within
the limits (:mod:`serving.limits`, checked by the timing middleware before either path).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from pydantic import BaseModel

from serving.errors import http_answer
from serving.limits import replay

__all__ = ["FastRecommend", "is_json"]


class FastRecommend:
    """Called by the timing middleware for ``POST /recommend`` with a JSON content type;
    ``app`` is the FastAPI app to replay to."""

    def __init__(self, model: type[BaseModel], handler: Callable[[Any], bytes]) -> None:
        self.model = model
        self.handler = handler

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any,
                       app: Callable[..., Awaitable[None]]) -> None:
        chunks = []
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # disconnected: nothing to answer
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        raw = b"".join(chunks)
        try:
            body = self.model.model_validate_json(raw)
        except ValueError:  # pydantic's ValidationError: let the route say what is wrong
            await app(scope, replay(raw, receive), send)
            return
        try:
            payload, code = self.handler(body), 200
        except Exception as exc:  # the route's exception handlers answer with the same call
            code, payload = http_answer(exc)
        await send({"type": "http.response.start", "status": code,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})


def is_json(scope: MutableMapping[str, Any]) -> bool:
    """Whether the request says ``Content-Type: application/json`` (parameters ignored)."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value.split(b";")[0].strip().lower() == b"application/json"
    return False
