"""Bootstrap appends history to the job's topics: routed by type, relative timing kept, the
whole log shifted to end at "now" (a simulated calendar ahead of the clock would push the
watermark past live traffic), bad lines passed on for the job to dead-letter. A log spanning
more than the job's max event age has its long gaps cut, so the job does not refuse it as too
old (issue 20), while every click stays inside or outside its window."""

from __future__ import annotations

import itertools
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contract.config import Settings
from contract.events import Click, EventError, Impression, check_event_time
from flink_job.bootstrap import append_events, event_times
from tests.helpers import read_topics


def _read_all(s: Settings, topic: str, n: int) -> list[tuple[bytes, int]]:
    """(value, timestamp) of every record of ``topic``: exactly ``n``, none more."""
    out = [(m.value(), m.timestamp()[1]) for m in read_topics(s, [topic], at_least=n)]
    assert len(out) == n, f"{topic}: {len(out)} records, expected {n}"
    return out


@pytest.mark.integration
def test_history_is_routed_and_shifted_to_now(unique_settings: Settings) -> None:
    s = unique_settings
    future = int(time.time() * 1000) + 30 * 24 * 3_600_000  # a calendar a month ahead
    imp = Impression("h1", 1, future, (0.0,) * s.model.dim, ("p001",), (0.0,), "historical", 0)
    lines = [imp.to_json(), Click("h1", "p001", future + 1000).to_json(), b"not json"]
    before = int(time.time() * 1000)
    assert append_events(s, lines) == 3
    imps = _read_all(s, s.kafka.topic_impressions, 2)
    clicks = _read_all(s, s.kafka.topic_clicks, 1)
    assert sorted(v for v, _ in imps) == sorted([imp.to_json(), b"not json"])
    (click_ts,) = [ts for _, ts in clicks]
    imp_ts = next(ts for v, ts in imps if v == imp.to_json())
    assert click_ts - imp_ts == 1000  # relative timing kept
    assert before <= click_ts <= int(time.time() * 1000)  # the newest event lands at "now"


DAY = 86_400_000


@given(st.lists(st.integers(0, 2 * 365 * DAY) | st.none(), min_size=1, max_size=300),
       st.integers(7 * DAY, 30 * DAY), st.integers(1000, 10_000))
def test_event_times_keep_short_distances_and_fit_the_age_limit(
        times: list[int | None], max_age: int, gap: int) -> None:
    now = 1_800_000_000_000
    out = event_times(times, now, max_age, gap)
    assert max(out) == now and len(out) == len(times)
    known = [(t, o) for t, o in zip(times, out, strict=True) if t is not None]
    for (a, oa), (b, ob) in itertools.combinations(known, 2):
        if abs(b - a) <= gap:  # inside or outside a window of up to gap: kept exactly
            assert ob - oa == b - a
        else:  # order kept, and never closer than gap
            assert (ob - oa) * (b - a) > 0 and abs(ob - oa) >= gap
    assert min(out) >= now - max_age // 2  # 300 times * 10 s: always fits
    newest = max((t for t, _ in known), default=0)
    if known and newest - min(t for t, _ in known) <= max_age // 2:  # short: only shifted
        assert [o - now for _, o in known] == [t - newest for t, _ in known]


@pytest.mark.integration
def test_a_year_of_history_lands_within_the_jobs_max_event_age(
        unique_settings: Settings) -> None:
    """The shipped history spans 52 weeks: shifted to end at now, all but its last week used
    to be older than RTREC_MAX_EVENT_AGE_S, and the job would dead-letter it (bad_event_time).
    Cut gaps keep an in-window click in (500 ms, exactly) and a late one late (window + 2 s:
    cut to window + skew + 1 s at most, still past the window)."""
    s = unique_settings
    window = round(s.job.reward_window_s * 1000)
    start = int(time.time() * 1000) - 2 * 365 * DAY
    lines = []
    for week in range(52):
        t = start + week * 7 * DAY
        imp = Impression(f"h{week}", 1, t, (0.0,) * s.model.dim, ("p001",), (0.0,),
                         "historical", 0)
        lines += [imp.to_json(), Click(f"h{week}", "p001",
                                       t + (500 if week % 2 else window + 2000)).to_json()]
    assert append_events(s, lines) == 104
    imps = {v: ts for v, ts in _read_all(s, s.kafka.topic_impressions, 52)}
    clicks = {v: ts for v, ts in _read_all(s, s.kafka.topic_clicks, 52)}
    now = int(time.time() * 1000)
    for v, ts in [*imps.items(), *clicks.items()]:
        try:
            check_event_time(ts, now, round(s.job.max_event_age_s * 1000),
                             round(s.job.max_clock_skew_s * 1000), "$timestamp")
        except EventError as exc:
            raise AssertionError(f"the job would refuse {v!r}: {exc}") from None
    for week in range(52):
        imp_ts = next(ts for v, ts in imps.items() if f'"h{week}"'.encode() in v)
        click_ts = next(ts for v, ts in clicks.items() if f'"h{week}"'.encode() in v)
        if week % 2:
            assert click_ts - imp_ts == 500
        else:
            assert window < click_ts - imp_ts <= window + 2000
