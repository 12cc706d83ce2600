"""Why a record was dead-lettered: the one list of reasons, stable strings.

Every dead letter carries one of these in its ``reason`` field and every job metric
``dead_letters_<reason>`` is named after one. The validator (Python, :mod:`contract.events`)
raises the first group; the reward join (JVM, ``flink_job/java/rtrec/RewardJoin.java``) emits
the second; the learner (``flink_job/functions.py`` ``Learn``, by
:func:`contract.linucb.learn_checked`) the third. A test fails when the Java list differs from
:data:`JOIN`, and the golden file (docs/JOB_LINES.md) lists all three.
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
RETIRED_PRODUCT = "retired_product"
UNSUPPORTED_VERSION = "unsupported_version"
BAD_EVENT_TIME = "bad_event_time"
DUPLICATE_IMPRESSION = "duplicate_impression"
LATE_CLICK = "late_click"
ORPHAN_CLICK = "orphan_click"
EARLY_CLICK = "early_click"
NOT_LEARNABLE = "not_learnable"

VALIDATION: tuple[str, ...] = (UNPARSEABLE, OVERSIZED, MISSING_FIELD, WRONG_TYPE, NOT_FINITE,
                               WRONG_DIMENSION, BAD_VALUE, UNKNOWN_PRODUCT, UNSUPPORTED_VERSION,
                               BAD_EVENT_TIME, RETIRED_PRODUCT)
"""What the validator rejects (:class:`contract.events.EventError` ``.reason``); an x entry
beyond ``RTREC_MAX_ABS_X`` or an id out of its domain is a ``bad_value``, an event time too far
from the clock a ``bad_event_time``, a product whose latest catalog record is a tombstone a
``retired_product`` (flink_job/catalog.py)."""

JOIN: tuple[str, ...] = (DUPLICATE_IMPRESSION, LATE_CLICK, ORPHAN_CLICK, BAD_VALUE, EARLY_CLICK)
"""What the reward join rejects (a duplicate click is a ``bad_value``; a click stamped more than
``RTREC_CLICK_SKEW_MS`` before its impression an ``early_click``)."""

LEARN: tuple[str, ...] = (NOT_LEARNABLE,)
"""What the learner refuses: an item whose update float64 cannot hold (docs/JOB.md)."""

ALL: tuple[str, ...] = tuple(dict.fromkeys(VALIDATION + JOIN + LEARN))
"""Every reason, each once."""
