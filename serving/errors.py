"""The errors serving raises on purpose, each carrying the HTTP status it answers with.

Every refusal is a :class:`ServingError`: a :class:`contract.errors.RtrecError` (our code
refused, with a message) and a ``ValueError`` (library callers catch that). The status lives
on the class, and :func:`http_answer` is the one place that turns an exception into an HTTP
answer, for the routed app and the fast path alike, so the two cannot disagree. Anything that
is not a ServingError is a bug: a logged, generic 500 that does not leak internals.

>>> http_answer(UnknownUserError("user_id: 7 is unknown"))
(404, b'{"detail":"user_id: 7 is unknown"}')
>>> http_answer(UnknownPolicyError("policy: 'x' is not one of linucb, greedy, random"))[0]
422
"""

from __future__ import annotations

import json
import logging
from typing import ClassVar

from contract.errors import RtrecError

log = logging.getLogger(__name__)

__all__ = ["BodyTimeoutError", "BodyTooLargeError", "ControlConflictError",
           "DeletionNotRecordedError", "ForbiddenError", "InvalidRequestError", "NotShownError",
           "NotStartedError", "ServingError", "UnauthorizedError", "UnknownPolicyError",
           "UnknownProductError", "UnknownUserError", "UnsupportedMediaTypeError", "http_answer"]


class ServingError(RtrecError, ValueError):
    """A request the recommender cannot answer; ``status`` is its HTTP code."""

    status: ClassVar[int] = 422


class UnauthorizedError(ServingError):
    """No admin credentials (``Authorization: Bearer ...``) on an admin route."""

    status = 401


class ForbiddenError(ServingError):
    """Wrong admin credentials, or admin routes closed (no ``RTREC_ADMIN_TOKEN``)."""

    status = 403


class DeletionNotRecordedError(ServingError):
    """Kafka did not acknowledge the deletion request: nothing changed, retry."""

    status = 503


class InvalidRequestError(ServingError):
    """Arguments out of range or inconsistent."""

    status = 422


class UnknownUserError(ServingError):
    """No features for this user id and none given."""

    status = 404


class UnknownProductError(ServingError):
    """A product id not in the catalog (GET /products/{id})."""

    status = 404


class ControlConflictError(InvalidRequestError):
    """Merchandising controls that cannot be honoured together or here: a pin beyond k or on
    an excluded product, a boost beyond this instance's bounds, no product left eligible."""

    status = 409


class NotShownError(ServingError):
    """Feedback for a product that the (known) request did not show."""

    status = 422


class UnknownPolicyError(ServingError):
    """A policy name not in ``contract.config.POLICIES``."""

    status = 422


class NotStartedError(ServingError):
    """A request before the app's start-up built the recommender."""

    status = 503


class BodyTooLargeError(ServingError):
    """An HTTP body over ``RTREC_MAX_BODY_BYTES`` (refused before it is read in full)."""

    status = 413


class BodyTimeoutError(ServingError):
    """An HTTP body not complete within ``RTREC_BODY_TIMEOUT_S``."""

    status = 408


class UnsupportedMediaTypeError(ServingError):
    """A body route called with a content type other than JSON."""

    status = 415


_INTERNAL = b'{"detail":"internal error"}'


def http_answer(exc: BaseException) -> tuple[int, bytes]:
    """``(status, JSON body)`` for an exception a handler raised: the class's status and its
    message for a ServingError; a 500 that says nothing more for anything else (logged)."""
    if isinstance(exc, ServingError):
        # Compact and unescaped, as FastAPI's JSONResponse renders it.
        return exc.status, json.dumps({"detail": str(exc)}, ensure_ascii=False,
                                      separators=(",", ":")).encode()
    log.error("unhandled error", exc_info=exc)
    return 500, _INTERNAL
