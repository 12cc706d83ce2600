"""Serving's side of exploration that tunes itself (docs/EXPLORATION.md section 3).

The job's controller (flink_job/evaluate.py) decides which candidate rule of ``RTREC_SELF_TUNE``
is live and writes the decision to Redis ``<prefix>:tuner``. :class:`SelfTuneRouter` reads it
every ``RTREC_SELF_TUNE_POLL_S`` on a thread of its own (a request never waits on Redis) and
routes: each request draws one candidate, the live one with probability
``1 - RTREC_SELF_TUNE_MIN_SHARE``, each other one with an equal part of the rest. The recommender
ranks every candidate (their lists are logged as shadows) and logs the drawn list with the
mixture's probabilities (``contract.exploration.mixture_probabilities``) and the candidate that
served it (``variant``), which is what keeps the job's off-policy estimates valid.

What it does when the decision is missing or bad: no key in Redis, or a value that is not the
controller's JSON (or names a candidate this process does not have), routes by the configured
default (the first candidate); Redis unreachable keeps the last decision read. Each of these is
logged once when it begins and once when it ends. Every change of the live candidate is one log
line and counted (``rtrec_selftune_switches_total``).

>>> from contract.config import Settings
>>> r = SelfTuneRouter(Settings.from_env({"RTREC_SELF_TUNE": "calibrated,alpha=0.1"}))
>>> r.live, r.shares()
('calibrated', {'calibrated': 0.95, 'alpha_0.1': 0.05})
>>> r.apply(b'{"live": "alpha_0.1", "generation": 1}'), r.live, r.switch_count
(True, 'alpha_0.1', 1)
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from contract.config import Settings
from contract.exploration import SELF_TUNE_KEY, Candidate, parse_candidates

log = logging.getLogger(__name__)

EXPERIMENT = "self-tune"
"""The ``experiment`` an impression served by the live loop records (its ``variant``: the
candidate that served it)."""


class SelfTuneRouter:
    """The live candidate as the job decided it, the traffic split, and serving's counters."""

    def __init__(self, settings: Settings) -> None:
        m = settings.model
        self.candidates: tuple[Candidate, ...] = parse_candidates(m.self_tune)
        if not self.candidates:
            raise ValueError("RTREC_SELF_TUNE is empty: no self-tuning to route")
        self.by_name = {c.name: c for c in self.candidates}
        self.default = self.candidates[0].name
        self.min_share = m.self_tune_min_share
        self.key = f"{settings.redis.prefix}:{SELF_TUNE_KEY}"
        self.poll_s = settings.serving.self_tune_poll_s
        self.redis_settings = settings.redis
        self._lock = threading.Lock()
        self.live = self.default
        self.generation: int | None = None  # the decision's, once one was read
        self.source = ""  # then default | decision | unreadable | redis_error (said once each)
        self.switch_count = 0
        self.served = dict.fromkeys(self.by_name, 0)
        self._shares = self._split(self.live)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: Any = None

    # --- the split ------------------------------------------------------------------------
    def _split(self, live: str) -> dict[str, float]:
        others = [c.name for c in self.candidates if c.name != live]
        each = self.min_share / len(others)
        return {c.name: (1.0 - self.min_share) if c.name == live else each
                for c in self.candidates}

    def shares(self) -> dict[str, float]:
        """Each candidate's share of the traffic now (the live one ``1 - min share``)."""
        return dict(self._shares)

    def draw(self, rng: np.random.Generator) -> tuple[Candidate, dict[str, float]]:
        """The candidate that serves one request, and the split it was drawn from (the
        probabilities the impression must log are of that split)."""
        shares = self._shares  # one read: a concurrent switch swaps the whole dict
        names = list(shares)
        u = float(rng.random())
        acc = 0.0
        chosen = names[-1]
        for name in names:
            acc += shares[name]
            if u < acc:
                chosen = name
                break
        return self.by_name[chosen], shares

    def count(self, name: str) -> None:
        with self._lock:
            self.served[name] += 1

    # --- the decision ---------------------------------------------------------------------
    def _route(self, live: str, why: str) -> bool:
        """Route by ``live`` from now on; a change is logged (one line) and counted."""
        if live == self.live:
            return False
        old = self.live
        self.live, self._shares = live, self._split(live)
        self.switch_count += 1
        log.info("self-tune: live exploration %s -> %s (%s; switch #%d seen by serving; "
                 "shares %s)", old, live, why, self.switch_count,
                 ", ".join(f"{n} {s:.3g}" for n, s in self._shares.items()))
        return True

    def _enter(self, source: str, message: str) -> None:
        """Say it once when the decision's source changes (not on every poll)."""
        if source != self.source:
            (log.info if source == "decision" else log.warning)("self-tune: %s", message)
            self.source = source

    def apply(self, raw: bytes | str | None) -> bool:
        """The value of ``<prefix>:tuner`` (None: no key); returns whether the live one changed."""
        with self._lock:
            if raw is None:
                self._enter("default", f"no decision in Redis ({self.key}): routing by the "
                                       f"configured default {self.default!r}")
                self.generation = None
                return self._route(self.default, "no decision in Redis")
            try:
                obj = json.loads(raw)
                live = obj["live"]
                if live not in self.by_name:
                    raise ValueError(f"live {live!r} is not one of this process's candidates "
                                     f"({', '.join(self.by_name)})")
                generation = obj.get("generation")
                generation = int(generation) if generation is not None else None
            except (ValueError, TypeError, KeyError) as exc:
                self._enter("unreadable", f"the decision in Redis ({self.key}) is unreadable "
                                          f"({type(exc).__name__}: {str(exc)[:200]}): routing "
                                          f"by the configured default {self.default!r}")
                self.generation = None
                return self._route(self.default, "the decision is unreadable")
            self._enter("decision", f"following the controller's decision in {self.key} "
                                    f"(live {live!r}, generation {generation})")
            self.generation = generation
            return self._route(live, f"the controller's decision, generation {generation}")

    def poll_once(self) -> bool:
        """Read the decision once (Redis unreachable: keep the last one, said once)."""
        from contract.store import redis_client

        try:
            if self._client is None:
                self._client = redis_client(self.redis_settings)
            raw = self._client.get(self.key)
        except Exception as exc:  # Redis down: degrade to the last decision, retry later
            self._client = None
            with self._lock:
                self._enter("redis_error", f"Redis unreachable ({type(exc).__name__}: "
                                           f"{str(exc)[:200]}): keeping live {self.live!r}")
            return False
        return self.apply(raw)

    def start(self) -> None:
        """Read now, then every ``poll_s`` on a daemon thread until :meth:`stop`."""
        self.poll_once()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="rtrec-selftune",
                                            daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.poll_once()
            except Exception:  # never let the thread die: the next poll tries again
                log.exception("self-tune: reading the decision failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    # --- metrics --------------------------------------------------------------------------
    def metric_families(self) -> Iterator[object]:
        """Prometheus families for serving's collector (read at scrape time)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        with self._lock:
            live, source, switches = self.live, self.source or "default", self.switch_count
            served, shares = dict(self.served), dict(self._shares)
            generation = self.generation
        sw = CounterMetricFamily("rtrec_selftune_switches", "Changes of the live exploration "
                                 "candidate serving routes by (each also one log line).")
        sw.add_metric([], switches)
        lv = GaugeMetricFamily("rtrec_selftune_live", "1 for the live exploration candidate, "
                               "0 for the others.", labels=["candidate"])
        sh = GaugeMetricFamily("rtrec_selftune_share", "Traffic share of each candidate now.",
                               labels=["candidate"])
        sv = CounterMetricFamily("rtrec_selftune_served", "Requests each candidate served.",
                                 labels=["candidate"])
        for c in self.candidates:
            lv.add_metric([c.name], 1.0 if c.name == live else 0.0)
            sh.add_metric([c.name], shares[c.name])
            sv.add_metric([c.name], served[c.name])
        src = GaugeMetricFamily("rtrec_selftune_decision", "Where the live candidate comes "
                                "from: 1 for the current source (decision, default, unreadable, "
                                "redis_error).", labels=["source"])
        for s in ("decision", "default", "unreadable", "redis_error"):
            src.add_metric([s], 1.0 if s == source else 0.0)
        gen = GaugeMetricFamily("rtrec_selftune_generation", "The decision's generation (the "
                                "controller's switch count; -1 without a decision).")
        gen.add_metric([], -1 if generation is None else generation)
        yield from (sw, lv, sh, sv, src, gen)
