"""Deletion requests ("forget this user"), one way for every component (docs/PRIVACY.md).

A request is a record of the compacted deletions topic (``RTREC_TOPIC_DELETIONS``): key the
user id in decimal, value a small JSON object. Serving (``DELETE /users/{id}``) and the
producer's command line (``python -m producer forget-user ID``) write it with
:func:`request_deletion`; the job reads it with :func:`parse_deletion` and unlearns what it
learned from that user, once (its Kafka offsets live in the checkpoint).

The request carries no user data beyond the id: ``request_id`` (random) names it in logs and
metrics, so the audit trail never has to print the user id.

>>> r = DeletionRequest(user_id=7, requested_at_ms=1700000000000, request_id="d1")
>>> parse_deletion(r.to_json()) == r
True
>>> parse_deletion(b'{"v": 1, "type": "forget_user", "user_id": -1, "requested_at_ms": 5, '
...                b'"request_id": "d2"}')
Traceback (most recent call last):
...
contract.events.EventError: bad_value: user_id: -1 not in 0..2**53-1
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from contract.events import MAX_SAFE_INT, EventError
from contract.features import DATA_DIR
from contract.reasons import BAD_VALUE, MISSING_FIELD, UNPARSEABLE

if TYPE_CHECKING:  # pragma: no cover
    from contract.config import Settings

DELETION_TYPE = "forget_user"
_TABLE_LOCK = threading.Lock()


@dataclass(frozen=True)
class DeletionRequest:
    """One request to forget ``user_id``, made at ``requested_at_ms`` (epoch ms)."""

    user_id: int
    requested_at_ms: int
    request_id: str

    def __post_init__(self) -> None:
        for name in ("user_id", "requested_at_ms"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise EventError(BAD_VALUE, name, f"expected an integer, got {type(v).__name__}")
            if not 0 <= v <= MAX_SAFE_INT:
                raise EventError(BAD_VALUE, name, f"{v} not in 0..2**53-1")
        if not isinstance(self.request_id, str) or not 1 <= len(self.request_id) <= 128:
            raise EventError(BAD_VALUE, "request_id", "expected a string of 1..128 characters")

    @property
    def key(self) -> bytes:
        """The Kafka key: compaction keeps the latest request of each user."""
        return str(self.user_id).encode()

    def to_json(self) -> bytes:
        return json.dumps({"v": 1, "type": DELETION_TYPE, "user_id": self.user_id,
                           "requested_at_ms": self.requested_at_ms,
                           "request_id": self.request_id}, separators=(",", ":")).encode()


def new_request(user_id: int, now_ms: int | None = None) -> DeletionRequest:
    """A request for ``user_id`` now, with a random request id."""
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    return DeletionRequest(user_id, now, uuid.uuid4().hex)


def parse_deletion(raw: bytes | str) -> DeletionRequest:
    """A deletion request from a record value; :class:`EventError` (with its reason) for
    anything else, so the job can dead-letter it."""
    try:
        obj = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EventError(UNPARSEABLE, "$", f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise EventError(UNPARSEABLE, "$", "not a JSON object")
    if obj.get("type") != DELETION_TYPE:
        raise EventError(BAD_VALUE, "type", f"expected {DELETION_TYPE!r}")
    for name in ("user_id", "requested_at_ms", "request_id"):
        if name not in obj:
            raise EventError(MISSING_FIELD, name, "required field is missing")
    return DeletionRequest(obj["user_id"], obj["requested_at_ms"], obj["request_id"])


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def request_deletion(producer, topic: str, request: DeletionRequest,  # type: ignore[no-untyped-def]
                     timeout_s: float = 10.0) -> None:
    """Write ``request`` to the deletions topic and wait for the broker's acknowledgement:
    a caller told "accepted" knows the request is durable."""
    errors: list[object] = []
    producer.produce(topic, key=request.key, value=request.to_json(),
                     on_delivery=lambda err, _msg: errors.append(err))
    producer.flush(timeout_s)
    if not errors:
        raise TimeoutError(f"the deletion request was not acknowledged within {timeout_s:g} s")
    if errors[0] is not None:
        raise OSError(f"the deletion request was refused by Kafka: {errors[0]}")


WORKING_USER_TABLE = Path("var/users.csv")
"""The user table when ``RTREC_USER_TABLE`` is empty: a working copy of the shipped one, made
on first use, so a deletion never rewrites the repository's tracked contract/data/users.csv."""


def user_table_path(settings: Settings) -> Path:
    """The user table of ``settings``: ``RTREC_USER_TABLE``, or (empty) the working copy
    :data:`WORKING_USER_TABLE`, created from the shipped table when it does not exist yet."""
    if settings.serving.user_table:
        return Path(settings.serving.user_table)
    path = WORKING_USER_TABLE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "wb") as f:
            f.write((DATA_DIR / "users.csv").read_bytes())
        try:  # a link, not a rename: a copy made meanwhile by another process is kept
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    return path


def remove_user(path: str | Path, user_id: int) -> bool:
    """Remove ``user_id``'s row from the CSV user table at ``path``; True when it was there.

    The table is rewritten to a temporary file in the same folder and renamed over the old one,
    so a reader sees the old table or the new one, never half of one.
    """
    path = Path(path)
    with _TABLE_LOCK:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader)
            rows = list(reader)
        col = header.index("user_id")
        keep = [r for r in rows if int(r[col]) != user_id]
        if len(keep) == len(rows):
            return False
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
                w = csv.writer(f, lineterminator="\n")
                w.writerow(header)
                w.writerows(keep)
            os.chmod(tmp, path.stat().st_mode & 0o777)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return True


@dataclass(frozen=True)
class ForgetResult:
    """What one deletion did: the request written, and whether a profile was removed (False:
    the table did not know the user; the request is written anyway, since the job may have
    learned from an id the table never held)."""

    request: DeletionRequest
    profile_removed: bool


def forget_user(settings: Settings, user_id: int, producer=None,  # type: ignore[no-untyped-def]
                timeout_s: float = 10.0) -> ForgetResult:
    """Record a deletion request durably (the compacted topic), then remove the profile from
    the user table. In that order: when Kafka refuses, nothing changed and the caller can
    retry; once the request is written, the job will apply it whatever happens next."""
    from contract.kafka import kafka_producer

    request = new_request(user_id)
    own = producer is None
    producer = kafka_producer(settings.kafka, **{"enable.idempotence": True}) if own \
        else producer
    request_deletion(producer, settings.kafka.topic_deletions, request, timeout_s)
    return ForgetResult(request, remove_user(user_table_path(settings), user_id))


DELETIONS_TOPIC_CONFIG = {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"}
"""The deletions topic's configuration: compacted, so the latest request of each user stays
(a job started from nothing still learns who asked to be forgotten); no tombstone is written."""


def ensure_deletions_topic(settings: Settings, timeout_s: float = 30.0) -> bool:
    """Create the deletions topic (compacted) when it is missing; True when this call made it.
    The job calls it at start: its source must find the topic, and a deployment whose topics
    were made by other means (producer load makes only the event topics) has not got it."""
    from contract.kafka import ensure_topic

    k = settings.kafka
    return ensure_topic(k, k.topic_deletions, k.topic_partitions, DELETIONS_TOPIC_CONFIG,
                        timeout_s)
