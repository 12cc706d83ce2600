"""``python -m producer forget-user ID``: an operator's deletion request (docs/PRIVACY.md).

The same request as serving's ``DELETE /users/{id}`` (:func:`contract.forget.forget_user`):
written to the compacted deletions topic, acknowledged by the broker, then the profile leaves
the user table. The job unlearns the user when it reads the request.
"""

from __future__ import annotations

import json
import logging

from contract.config import Settings
from contract.events import MAX_SAFE_INT
from contract.forget import ForgetResult, forget_user

log = logging.getLogger(__name__)


def forget(settings: Settings, user_id: int, timeout_s: float = 10.0) -> ForgetResult:
    """Request the deletion of ``user_id``; raises ValueError for an id outside the domain."""
    if not 0 <= user_id <= MAX_SAFE_INT:
        raise ValueError(f"user_id: {user_id} not in 0..2**53-1")
    return forget_user(settings, user_id, timeout_s=timeout_s)


def summary(result: ForgetResult) -> str:
    """One JSON line for the operator (no profile data: the id they typed and what happened)."""
    return json.dumps({"user_id": result.request.user_id,
                       "deletion_request_id": result.request.request_id,
                       "requested_at_ms": result.request.requested_at_ms,
                       "profile_removed": result.profile_removed})
