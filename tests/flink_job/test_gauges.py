"""flink_job.gauges: in thread mode the JVM must never call into Python to read a metric, so
each value is a Flink counter our own thread moves to it; in process mode PyFlink's gauges
stay. The real job under a busy scraper: test_job.py's parity test."""

from __future__ import annotations

import logging
import threading

import pytest

from flink_job import gauges as gauges_mod
from flink_job.catalog import ACTIVE, RETIRED, LiveProducts
from flink_job.gauges import EMBEDDED_MODULE, Gauges, thread_mode
from tests.helpers import FakeMetricGroup, wait_for


@pytest.fixture
def pusher(monkeypatch: pytest.MonkeyPatch) -> gauges_mod._Pusher:
    """A pusher of this test's own, every 10 ms (the shared one lives for the process)."""
    p = gauges_mod._Pusher(0.01)
    monkeypatch.setattr(gauges_mod, "PUSHER", p)
    return p


def test_thread_mode_is_read_from_the_groups_type() -> None:
    """PyFlink's embedded group imports pemja's JVM side, absent here: a class of that
    module's name stands in (the real job's detection: the parity test's scraper)."""
    embedded = type("MetricGroupImpl", (), {"__module__": f"{EMBEDDED_MODULE}.metric_impl"})
    from pyflink.fn_execution.metrics.process.metric_impl import GenericMetricGroup

    process = GenericMetricGroup(None, "g")
    assert thread_mode(embedded())
    assert not thread_mode(process) and not thread_mode(FakeMetricGroup())


def test_process_mode_registers_pyflinks_gauge(pusher: gauges_mod._Pusher) -> None:
    group = FakeMetricGroup()
    value = {"n": 3}
    g = Gauges(group)
    g.add("n", lambda: value["n"])
    value["n"] = 5
    assert group.gauges["n"]() == 5 and not group.counters
    assert not pusher.watched and pusher.thread is None


def test_thread_mode_counters_follow_the_values_up_and_down(pusher: gauges_mod._Pusher
                                                            ) -> None:
    group, sub = FakeMetricGroup(), FakeMetricGroup()
    value = {"level": 0, "count": 0}
    g = Gauges(group, embedded=True)
    g.add("level", lambda: value["level"])
    g.add("count", lambda: value["count"], sub)
    assert not group.gauges and not sub.gauges  # no Python callable handed to the JVM
    for level, count in ((7, 1), (2, 40), (2, 41), (0, 1000)):
        value.update(level=level, count=count)
        wait_for(lambda: (group.counters["level"].count, sub.counters["count"].count)
                 == (value["level"], value["count"]), 2.0, every_s=0.005)
    assert pusher.thread is not None and pusher.thread.name == "metrics-pusher"
    assert pusher.thread is not threading.current_thread()


def test_close_pushes_the_last_value_and_stops_pushing(pusher: gauges_mod._Pusher) -> None:
    group = FakeMetricGroup()
    value = {"n": 0}
    g = Gauges(group, embedded=True)
    g.add("n", lambda: value["n"])
    pusher.forget(g)  # nothing pushes on its own now: only close() can
    value["n"] = 9
    g.close()
    assert group.counters["n"].count == 9
    value["n"] = 10
    pusher.push_all()
    assert group.counters["n"].count == 9 and g not in pusher.watched


def test_a_reader_that_fails_keeps_the_last_value_and_logs_once(
        pusher: gauges_mod._Pusher, caplog: pytest.LogCaptureFixture) -> None:
    group = FakeMetricGroup()
    box: dict[str, int] = {"n": 4}
    g = Gauges(group, embedded=True)
    g.add("n", lambda: box["n"])
    pusher.forget(g)
    g.push()
    del box["n"]
    with caplog.at_level(logging.WARNING, logger="flink_job.gauges"):
        g.push()
        g.push()
    assert group.counters["n"].count == 4
    assert sum("metric n not read" in r.message for r in caplog.records) == 1
    box["n"] = 6
    g.push()
    assert group.counters["n"].count == 6


def test_live_products_count_each_status_as_it_changes() -> None:
    live = LiveProducts(None)
    for pid, status in (("a", ACTIVE), ("b", ACTIVE), ("a", ACTIVE), ("a", RETIRED),
                        ("c", RETIRED), ("b", RETIRED), ("a", ACTIVE)):
        live.apply(pid, status)
        want = {s: sum(1 for v in live.status.values() if v == s) for s in (ACTIVE, RETIRED)}
        assert live.counts == want, (pid, status)
    assert live.counts == {ACTIVE: 1, RETIRED: 2}
