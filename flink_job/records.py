"""Source records and dead letters, without Flink.

The source emits one string per Kafka record (built by ``java/rtrec/MetaDeserializer.java``)::

    topic TAB partition TAB offset TAB timestamp TAB kind TAB body

``kind`` is ``u`` (the value is UTF-8 text, body = the text), ``b`` (not UTF-8, body = base64 of
the value), ``o`` (oversized, body = ``size:base64 of the first 1 KiB``) or ``n`` (null value).
Keeping topic/partition/offset lets a dead letter point at its source record, which PyFlink's
value-only schemas cannot do.

>>> meta, raw = split_record("clicks\\t2\\t17\\t1700000000000\\tu\\t{}")
>>> meta.topic, meta.partition, meta.offset, meta.timestamp, raw
('clicks', 2, 17, 1700000000000, b'{}')
>>> json.loads(dead_letter(meta, "unparseable", "$", "not JSON", "{")).get("reason")
'unparseable'
"""

from __future__ import annotations

import base64
import json
from typing import NamedTuple

from contract.events import OVERSIZED, UNPARSEABLE, EventError


class SourceMeta(NamedTuple):
    """Where a record came from, and its original value as carried to the dead letter."""

    topic: str
    partition: int
    offset: int
    timestamp: int  # Kafka record timestamp (ms); the job's event time
    kind: str  # u | b | o | n, see the module docstring
    body: str


def split_record(line: str) -> tuple[SourceMeta, bytes]:
    """Split a source line into its metadata and the value bytes to parse.

    Raises :class:`EventError` for values that cannot be events at all (oversized, null,
    malformed line); their metadata is then read with :func:`meta_only`.
    """
    meta = meta_only(line)
    if meta.kind == "u":
        return meta, meta.body.encode("utf-8")
    if meta.kind == "b":
        return meta, base64.b64decode(meta.body)
    if meta.kind == "o":
        size = meta.body.split(":", 1)[0]
        raise EventError(OVERSIZED, "$", f"{size} bytes > limit")
    raise EventError(UNPARSEABLE, "$", "null value")


def meta_only(line: str) -> SourceMeta:
    """The metadata of a source line; a malformed line (never expected) keeps all as body."""
    parts = line.split("\t", 5)
    if len(parts) != 6:
        return SourceMeta("?", -1, -1, -1, "u", line)
    try:
        return SourceMeta(parts[0], int(parts[1]), int(parts[2]), int(parts[3]), parts[4], parts[5])
    except ValueError:
        return SourceMeta("?", -1, -1, -1, "u", line)


def dead_letter(meta: SourceMeta, reason: str, field: str, message: str,
                error_class: str = "EventError") -> str:
    """The dead-letter value: the original record plus why it was rejected (JSON text).

    The Kafka Connect convention puts these in headers; PyFlink's KafkaSink cannot set headers,
    so they travel in a JSON envelope. ``value`` is the original text when it was UTF-8,
    otherwise ``value_b64`` holds the original bytes (a 1 KiB prefix for oversized values).
    """
    env = {
        "reason": reason, "field": field, "message": message[:500], "error_class": error_class,
        "topic": meta.topic, "partition": meta.partition, "offset": meta.offset,
        "timestamp": meta.timestamp,
    }
    if meta.kind == "u":
        env["value"] = meta.body
    elif meta.kind == "b":
        env["value_b64"] = meta.body
    elif meta.kind == "o":
        size, _, prefix = meta.body.partition(":")
        env["value_b64"] = prefix
        env["value_size"] = int(size) if size.isdigit() else -1
        env["value_truncated"] = True
    else:
        env["value"] = None
    return json.dumps(env, separators=(",", ":"), ensure_ascii=False)
