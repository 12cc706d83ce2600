"""What an HTTP request must be before its body is read: JSON where a route takes JSON, at
most ``RTREC_MAX_BODY_BYTES``, whole within ``RTREC_BODY_TIMEOUT_S``.

uvicorn (h11) hands the app a body as fast as the client sends it, with no limit on its size
and no deadline (``timeout_keep_alive`` only runs between requests): a 10 MB body was read in
full, and a client that sent half a body held its connection and its task forever. The timing
middleware (:class:`serving.metrics.Timing`), in front of both the ASGI fast path and the
FastAPI routes, calls :meth:`BodyGuard.read` first, so both are covered by one check:

- a content type that is not JSON on a JSON route: 415, the body not read;
- a ``Content-Length`` over the limit: 413 from the headers alone, the body not read (nor
  asked for: a client waiting on ``Expect: 100-continue`` never sends it);
- a chunked body: read up to the limit, 413 as soon as it is passed;
- a body not complete within the timeout: 408.

Each answer is :func:`serving.errors.http_answer`'s, with ``Connection: close`` (what is left
of the body is never read, so the connection cannot carry another request). A body that
passes is handed on whole, as one ``http.request`` message.

>>> guard = BodyGuard(max_bytes=10, timeout_s=1.0)
>>> guard.check({"method": "POST", "path": "/recommend",
...              "headers": [(b"content-type", b"text/plain"), (b"content-length", b"2")]})
Traceback (most recent call last):
...
serving.errors.UnsupportedMediaTypeError: content-type: expected application/json, got 'text/plain'
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from serving.errors import BodyTimeoutError, BodyTooLargeError, UnsupportedMediaTypeError

__all__ = ["JSON_ROUTES", "BodyGuard", "accepts_json"]

JSON_ROUTES = frozenset({"/recommend", "/feedback"})
"""The POST routes whose body is JSON (the content type is checked on these only)."""

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


def accepts_json(content_type: bytes | None) -> bool:
    """``application/json`` or ``application/<anything>+json``, parameters ignored: what
    FastAPI parses as JSON."""
    if content_type is None:
        return False
    kind = content_type.split(b";")[0].strip().lower()
    return kind == b"application/json" or (kind.startswith(b"application/")
                                            and kind.endswith(b"+json"))


class BodyGuard:
    """Checks a request's headers and reads its body within the limits."""

    def __init__(self, max_bytes: int, timeout_s: float) -> None:
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    def check(self, scope: MutableMapping[str, Any]) -> bool:
        """Refuse from the headers alone what can be refused (415, 413); True if the request
        has a body to read."""
        content_type = length = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
            elif name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                chunked = True
        if scope["method"] == "POST" and scope["path"] in JSON_ROUTES \
                and not accepts_json(content_type):
            got = "none" if content_type is None else repr(content_type.decode("latin-1"))
            raise UnsupportedMediaTypeError(
                f"content-type: expected application/json, got {got}")
        if length is not None:
            n = int(length)  # h11 has checked it is a number
            if n > self.max_bytes:
                raise BodyTooLargeError(f"body: {n} bytes is more than the {self.max_bytes} "
                                        f"accepted (RTREC_MAX_BODY_BYTES)")
            return n > 0
        return chunked

    async def read(self, receive: Receive) -> bytes | None:
        """The whole body, or None if the client went away first. Raises
        :class:`BodyTooLargeError` once past the limit, :class:`BodyTimeoutError` if it is
        not complete in time."""
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.timeout_s):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":  # http.disconnect
                        return None
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise BodyTooLargeError(f"body: more than the {self.max_bytes} bytes "
                                                f"accepted (RTREC_MAX_BODY_BYTES)")
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks)
        except TimeoutError:
            raise BodyTimeoutError(f"body: incomplete after {self.timeout_s:g}s "
                                   f"({size} bytes received; RTREC_BODY_TIMEOUT_S)") from None


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` as one message, then waits on the real one (for the
    disconnect a streaming response listens for)."""
    given = False

    async def replayed() -> MutableMapping[str, Any]:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed
