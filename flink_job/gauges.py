"""Operator metrics the JVM may read from any of its threads (docs/JOB.md "Metrics").

An operator keeps its tallies as plain Python ints: a Flink counter's ``inc()`` from Python
is a call into the JVM, too dear to make per event. PyFlink's way to show such a value is
``MetricGroup.gauge(name, callable)``, and in process mode that is what :class:`Gauges` uses
(the Python worker reads it). In thread mode it is not safe: the JVM reads a gauge on the
thread that asks (the Prometheus reporter's HTTP threads, the web UI's metric queries), and
pemja runs the callable there on the *task thread's* interpreter state, while the task
thread may be inside a call into Java (state access, emitting: pemja releases the GIL there
with the task's Python frames live). Two OS threads then run Python on one thread state.
Scraping a learning job's endpoint from three threads crashed its JVM within seconds
(SIGSEGV in ``_PyFrame_Clear`` / ``_PyTraceBack_FromFrame`` on a ``prometheus-http`` thread;
tests/flink_job/test_job.py's parity test scrapes it so all along).

So in thread mode each value is a Flink counter, and one Python thread of ours moves every
counter to its value every :data:`PUSH_INTERVAL_S`: a call from Python into Java, which is
safe from any Python thread (pemja attaches it). The JVM then reads a Java number and never
calls into Python. A value is at most that interval old. A reader runs on that thread,
beside the task thread: it must be a plain read of ints (or of a reference the task thread
replaces whole), not a walk over a structure the task thread changes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

PUSH_INTERVAL_S = 0.1
"""How often the pusher thread moves each thread-mode value into its Flink counter."""

EMBEDDED_MODULE = "pyflink.fn_execution.metrics.embedded"
"""Where PyFlink's thread-mode (embedded) metric groups live."""


def thread_mode(group: Any) -> bool:
    """Whether ``group`` is a thread-mode (embedded) PyFlink metric group."""
    return type(group).__module__.startswith(EMBEDDED_MODULE)


class _Pushed:
    """One value shown through a Flink counter: ``push`` adds what changed since the last."""

    def __init__(self, counter: Any, read: Callable[[], int], name: str) -> None:
        self.counter = counter
        self.read = read
        self.name = name
        self.sent = 0
        self.failing = False

    def push(self) -> None:
        try:
            value = int(self.read())
        except Exception as exc:  # a reader that cannot answer now: the next round asks again
            if not self.failing:
                log.warning("metric %s not read (%s: %s); kept at %d", self.name,
                            type(exc).__name__, exc, self.sent)
            self.failing = True
            return
        self.failing = False
        if value != self.sent:
            self.counter.inc(value - self.sent)
            self.sent = value


class Gauges:
    """The gauges of one operator instance: ``add`` them in ``open``, ``close`` in its close.

    ``embedded`` None: decided from the metric group's type (:func:`thread_mode`)."""

    def __init__(self, group: Any, embedded: bool | None = None) -> None:
        self.group = group
        self.embedded = thread_mode(group) if embedded is None else embedded
        self.values: list[_Pushed] = []
        self.lock = threading.Lock()  # the pusher thread and close() may push at once

    def add(self, name: str, read: Callable[[], int], group: Any = None) -> None:
        """Show ``read()`` as metric ``name`` of ``group`` (default: this operator's)."""
        g = self.group if group is None else group
        if not self.embedded:
            g.gauge(name, read)
            return
        with self.lock:
            self.values.append(_Pushed(g.counter(name), read, name))
        PUSHER.watch(self)

    def push(self) -> None:
        """Move every value into its counter now (the pusher thread calls it)."""
        with self.lock:
            for v in self.values:
                v.push()

    def close(self) -> None:
        """A last push, then no more."""
        PUSHER.forget(self)
        self.push()


class _Pusher:
    """The one thread per Python interpreter that pushes every open :class:`Gauges`."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.lock = threading.Lock()
        self.watched: set[Gauges] = set()
        self.thread: threading.Thread | None = None

    def watch(self, gauges: Gauges) -> None:
        with self.lock:
            self.watched.add(gauges)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="metrics-pusher",
                                               daemon=True)
                self.thread.start()

    def forget(self, gauges: Gauges) -> None:
        with self.lock:
            self.watched.discard(gauges)

    def push_all(self) -> None:
        with self.lock:
            watched = list(self.watched)
        for g in watched:
            g.push()

    def _run(self) -> None:
        while True:
            time.sleep(self.interval_s)
            try:
                self.push_all()
            except Exception:  # never let the pusher die: log and go on
                log.exception("metrics push failed")


PUSHER = _Pusher(PUSH_INTERVAL_S)
