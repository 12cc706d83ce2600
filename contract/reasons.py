"""Why a record was dead-lettered: the one list of reasons, stable strings.

Every dead letter carries one of these in its ``reason`` field and every job metric
``dead_letters_<reason>`` is named after one. The validator (Python, :mod:`contract.events`)
raises the first group; the reward join (JVM, ``flink_job/java/rtrec/RewardJoin.java``) emits
the second; a test fails when the Java list differs from :data:`JOIN`.
"""

from __future__ import annotations

UNPARSEABLE = "unparseable"
OVERSIZED = "oversized"
MISSING_FIELD = "missing_field"
WRONG_TYPE = "wrong_type"
NOT_FINITE = "not_finite"
WRONG_DIMENSION = "wrong_dimension"
BAD_VALUE = "bad_value"
UNKNOWN_PRODUCT = "unknown_product"
UNSUPPORTED_VERSION = "unsupported_version"
DUPLICATE_IMPRESSION = "duplicate_impression"
LATE_CLICK = "late_click"
ORPHAN_CLICK = "orphan_click"

VALIDATION: tuple[str, ...] = (UNPARSEABLE, OVERSIZED, MISSING_FIELD, WRONG_TYPE, NOT_FINITE,
                               WRONG_DIMENSION, BAD_VALUE, UNKNOWN_PRODUCT, UNSUPPORTED_VERSION)
"""What the validator rejects (:class:`contract.events.EventError` ``.reason``)."""

JOIN: tuple[str, ...] = (DUPLICATE_IMPRESSION, LATE_CLICK, ORPHAN_CLICK, BAD_VALUE)
"""What the reward join rejects (a duplicate click is a ``bad_value``)."""

ALL: tuple[str, ...] = tuple(dict.fromkeys(VALIDATION + JOIN))
"""Every reason, each once."""
