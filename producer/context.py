"""When visits happen: an explicit, configurable distribution of contexts.

The click rate of the world depends on how often the rewarded contexts occur. Uniform clock
time (P(morning) = 6/24, P(weekend) = 2/7) gives the default oracle about 11 %; the
reference log's ~14.5 % needs morning and weekend each about half the time. So the two
probabilities are parameters, and the default is :data:`REFERENCE` (0.5, 0.5).

A visit time is drawn in three independent steps: the week (uniform over ``weeks`` weeks from
``start``), the day (weekend with ``p_weekend``, the day uniform within weekend or weekdays),
the time of day (morning [6, 12) with ``p_morning``, else uniform over the other 18 hours),
then a uniform minute and second.

>>> import numpy as np
>>> times = REFERENCE.draw(np.random.default_rng(0), 4000)
>>> from contract.features import is_morning, is_weekend
>>> round(sum(map(is_morning, times)) / 4000, 1), round(sum(map(is_weekend, times)) / 4000, 1)
(0.5, 0.5)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

_NON_MORNING_HOURS = np.array([*range(0, 6), *range(12, 24)])


@dataclass(frozen=True)
class ContextDistribution:
    """P(morning) and P(weekend) of a visit, and the calendar span visits fall in."""

    p_morning: float = 0.5
    p_weekend: float = 0.5
    # A Monday a year before the live system's clock: history must lie in the past, because
    # the job runs on event time and a future timestamp would push its watermark past every
    # live event.
    start: datetime = datetime(2025, 1, 6, tzinfo=UTC)
    weeks: int = 52

    def __post_init__(self) -> None:
        for name in ("p_morning", "p_weekend"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise TypeError(f"{name}: expected a number, got {type(value).__name__}")
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}: {value} is not in [0, 1]")
        if self.start.weekday() != 0 or self.start.tzinfo is None:
            raise ValueError(f"start: must be a timezone-aware Monday, got {self.start}")
        if self.weeks < 1:
            raise ValueError(f"weeks: must be >= 1, got {self.weeks}")

    def draw(self, rng: np.random.Generator, n: int) -> list[datetime]:
        """``n`` visit times (UTC datetimes) drawn with ``rng``."""
        week = rng.integers(0, self.weeks, n)
        weekend = rng.random(n) < self.p_weekend
        day = np.where(weekend, 5 + rng.integers(0, 2, n), rng.integers(0, 5, n))
        morning = rng.random(n) < self.p_morning
        hour = np.where(morning, 6 + rng.integers(0, 6, n),
                        _NON_MORNING_HOURS[rng.integers(0, len(_NON_MORNING_HOURS), n)])
        seconds = rng.integers(0, 3600, n)
        offsets = ((week * 7 + day) * 24 + hour) * 3600 + seconds
        return [self.start + timedelta(seconds=int(s)) for s in offsets]


REFERENCE = ContextDistribution(0.5, 0.5)
"""The default: morning and weekend each half the time (gives the reference ~14.5 % CTR)."""

UNIFORM_CLOCK = ContextDistribution(6 / 24, 2 / 7)
"""Uniform clock time: the default oracle gives about 11 % here."""


def draw_visit_times(rng: np.random.Generator, n: int,
                     dist: ContextDistribution = REFERENCE) -> list[datetime]:
    """Visit times from ``dist`` (the closed-loop simulator reuses this)."""
    return dist.draw(rng, n)
