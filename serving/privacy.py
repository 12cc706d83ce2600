"""``DELETE /users/{id}``: forget a user (docs/PRIVACY.md).

Admin-only: the caller sends ``Authorization: Bearer <RTREC_ADMIN_TOKEN>``. No header (or
not a bearer token) is 401; a wrong token, or no token configured on this instance (the
route is then closed), is 403. The token is compared in constant time and never logged.

An accepted request is durable before the answer (the compacted deletions topic acknowledged
it, :func:`contract.forget.forget_user`); then the profile leaves the user table file and
this instance's memory, so the id is unknown to ``/recommend`` at once. The model forgets
when the job applies the request; serving then picks up the new parameters like any update.
"""

from __future__ import annotations

import hmac
import logging
import threading
from typing import Any

from contract.config import Settings
from contract.events import MAX_SAFE_INT
from contract.forget import ForgetResult, forget_user
from serving.errors import (
    DeletionNotRecordedError,
    ForbiddenError,
    InvalidRequestError,
    UnauthorizedError,
)

log = logging.getLogger(__name__)

__all__ = ["AdminAuth", "Forgetter"]


class AdminAuth:
    """Checks an ``Authorization`` header against the configured admin token."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    def check(self, authorization: str | None) -> None:
        """Return when the header carries the token; raise 401/403 otherwise."""
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise UnauthorizedError("admin route: send Authorization: Bearer <admin token>")
        if not self._token:
            raise ForbiddenError("admin routes are closed on this instance "
                                 "(RTREC_ADMIN_TOKEN is not set)")
        if not hmac.compare_digest(given.strip().encode(), self._token):
            raise ForbiddenError("admin route: wrong admin token")


class Forgetter:
    """Performs deletions for one app: one Kafka producer of its own (created on first use),
    so waiting for a deletion's acknowledgement never waits on the event log's queue."""

    def __init__(self, settings: Settings, producer: Any = None) -> None:
        self.settings = settings
        self._producer = producer
        self._lock = threading.Lock()
        self.requested = 0
        self.closed = False

    def close(self) -> None:
        """Release the producer (the app's shutdown calls this). Every request it recorded
        was acknowledged before its answer, so there is nothing to flush; without this a
        client of an app that shut down kept reconnecting to its broker for the life of the
        process (an app is frozen out of the collector's sight at start-up, serving/app.py).
        A deletion asked after it is refused (503), never recorded by a new producer."""
        with self._lock:
            self.closed = True
            producer, self._producer = self._producer, None
        if producer is not None:
            producer.close()

    def forget(self, user_id: int, users: dict[int, Any] | None,
               x_cache: dict[tuple[int, int, bool], Any] | None) -> ForgetResult:
        """Record the request, remove the profile from the table and from ``users`` (and the
        cached contexts in ``x_cache``, which were computed from the profile)."""
        if not 0 <= user_id <= MAX_SAFE_INT:
            raise InvalidRequestError(f"user_id: must be in 0..2**53-1, got {user_id}")
        with self._lock:
            if self.closed:
                raise DeletionNotRecordedError("deletion request not recorded: this app is "
                                               "shutting down")
            if self._producer is None:
                from contract.kafka import kafka_producer

                self._producer = kafka_producer(self.settings.kafka,
                                                **{"enable.idempotence": True})
            try:
                result = forget_user(self.settings, user_id, self._producer)
            except (OSError, TimeoutError) as exc:
                raise DeletionNotRecordedError(f"deletion request not recorded: {exc}") from exc
        in_memory = users.pop(user_id, None) is not None if users is not None else False
        if x_cache is not None:
            for key in [k for k in list(x_cache) if k[0] == user_id]:
                x_cache.pop(key, None)
        self.requested += 1
        log.info("deletion request %s recorded (profile removed: %s)",
                 result.request.request_id, result.profile_removed or in_memory)
        return ForgetResult(result.request, result.profile_removed or in_memory)
