"""Continuous off-policy evaluation in the job (docs/EXPERIMENTS.md section 5).

::

    RewardJoin --closed side output (one line per impression, once its window has closed for
    good: its clicked slots and JSON; docs/JOB_LINES.md format 7)-->
      [JVM] MicroBatcher (key "ope", one publish interval) -> keyBy -> ope-evaluate (this)
      -> Redis <prefix>:ope:<target> (JSON) and operator metrics

``ope-evaluate`` replays the closed impressions in event-time order exactly as the offline
command does (``python -m evaluation ope``, evaluation/offline.py): the same fields read
from the same JSON (:func:`read_closed`: what ``contract.events.parse_event`` reads, without
re-running the checks ``validate`` ran on those bytes), the same reward model
(``contract.ope.ReplayModel``: LinUCB learned from the impressions *before* this one, the
job's rule, so DR's model never saw the outcome it is scored on), the same targets (every
shadow an impression carries, ``random``, ``popularity``) and the same per-impression terms
(``contract.ope.top1_terms``), summed per target (``contract.ope.Top1Sums``). So at any time
its estimates are the offline command's on the log of the impressions closed so far
(tests/flink_job/test_ope_stream.py, 1e-9).

What it keeps: the sums are cumulative since the job's state began (a sliding window is not
built: docs/EXPERIMENTS.md says why and how). It runs at parallelism 1 (one key): the reward
model needs every impression, in order. Its state costs what a batch changed, not the catalogue:
a small head (counts, sums, newest time, tuner: JSON in the ValueState ``ope``) and one row per
product in the MapState ``ope-rows`` (A_inv, b, theta, clicks as little-endian float64, our own
bytes, never a pickle of objects; Flink stores each as its pickle of one bytes object, as the
head; 2 KB at d = 15), written only for the products the batch learned. The
numpy model in memory is filled from the rows once, at the first batch after a (re)start. A
state of the older layout (one blob of every product in ``ope``) is read once and moved to
this one (docs/EXPERIMENTS.md section 5).

The Redis write is best effort: a failure is logged and counted (``ope_redis_errors``) and the
next batch writes the newest sums; the estimates live in the checkpointed state, not in Redis.

Self-tuning (``RTREC_SELF_TUNE``, docs/EXPLORATION.md section 3): after every batch the
controller (:class:`LiveTuner`, ``contract.exploration.SelfTuner``) reads the candidates'
running SNIPS and decides the live one; its state rides in the same blob (so a restore
continues it), its decision goes to Redis ``<prefix>:tuner`` beside the estimates, and serving
routes the traffic by it. Its clock is the impressions' event time, so a replay decides the same.
"""

from __future__ import annotations

import json
import logging
import struct
import time
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np
import orjson
from pyflink.common.typeinfo import Types
from pyflink.datastream import KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor

from contract import SCHEMA_VERSION, exploration, ope
from contract.config import Settings
from contract.events import MAX_EVENT_BYTES, Impression, parse_event
from contract.store import redis_client
from flink_job.gauges import Gauges

log = logging.getLogger(__name__)

OPE_KEY = "ope"  # the closed lines' key (RewardJoin.CLOSED_KEY): one evaluator
UID = "ope-evaluate"
_MAGIC = b"RTOPE1"  # the older layout: one blob of the head and every product's arrays
_HEAD_MAGIC = b"RTOPE2"  # the head alone; the products' rows are in the MapState ROWS
ROWS = "ope-rows"


def enabled(settings: Settings) -> bool:
    return bool(settings.job.ope_stream)


def join_spec_suffix(settings: Settings) -> str:
    """What the reward join's spec gains when the evaluation runs: its closed lines."""
    return ";closed=true" if enabled(settings) else ""


def redis_key(prefix: str, target: str) -> str:
    """``<prefix>:ope:<target>``: one target's running estimates (JSON)."""
    return f"{prefix}:ope:{target}"


def status_key(prefix: str) -> str:
    """``<prefix>:ope``: the evaluator's counts and its targets (JSON)."""
    return f"{prefix}:ope"


def tuner_key(prefix: str) -> str:
    """``<prefix>:tuner``: the self-tuning controller's decision (JSON), which serving reads."""
    return f"{prefix}:{exploration.SELF_TUNE_KEY}"


class ClosedImpression(NamedTuple):
    """The fields of an impression the replay reads (:meth:`StreamEvaluator.step`), as
    :func:`contract.events.parse_event` would give them."""

    request_id: str
    x: list[float]
    products: tuple[str, ...]
    policy: str
    eligible_n: int | None
    prefix_propensities: list[float] | None
    slot_propensities: list[float] | None
    shadows: tuple[tuple[str, tuple[str, ...]], ...] | None


def read_closed(body: str, dim: int) -> ClosedImpression | Impression:
    """A closed impression's JSON as the replay needs it, without the contract's checks.

    The checks are what cost (half of ``ope-evaluate``'s time per impression, docs/JOB.md),
    and they already ran: the join only carries JSON that ``validate`` accepted with
    ``parse_event`` (the same dim, stricter options). JSON values are read as the contract's
    reader reads them (orjson, whose numbers and strings equal the strict reader's), so the
    replay and the offline command (``parse_event`` on the log) see the same numbers. Whatever
    is not plainly an impression of ``dim`` values under the contract's size limit (an empty
    body from an older state, or a limit raised by RTREC_MAX_EVENT_BYTES) takes
    ``parse_event`` itself, which refuses it as the offline command would
    (tests/flink_job/test_ope_reader.py). One case differs: an impression an older version's
    validator accepted and a newer contract refuses, still open in the join's state when the
    job is restored across that upgrade, is evaluated here (the learner learned it too) where
    the offline command on the log counts it unreadable."""
    if len(body) > MAX_EVENT_BYTES // 4 \
            and len(body.encode("utf-8", errors="surrogatepass")) > MAX_EVENT_BYTES:
        return parse_event(body, dim=dim)
    try:
        d = orjson.loads(body)
        if type(d) is not dict or d.get("type") != "impression" or d.get("v") != SCHEMA_VERSION \
                or len(d["x"]) != dim:
            raise ValueError
        shadows = d.get("shadows")
        return ClosedImpression(
            d["request_id"], d["x"], tuple(d["products"]), d["policy"], d.get("eligible_n"),
            d.get("prefix_propensities"), d.get("slot_propensities"),
            None if shadows is None else tuple((n, tuple(lst)) for n, lst in shadows.items()))
    except (orjson.JSONDecodeError, ValueError, KeyError, TypeError, AttributeError):
        return parse_event(body, dim=dim)  # refuses it, naming why


class LiveTuner:
    """The controller of the live loop, fed the evaluator's running estimates after each batch.

    ``now`` is the newest impression time the estimates include (seconds of event time), so
    ``RTREC_SELF_TUNE_INTERVAL_S`` counts the traffic's time and a replay decides the same."""

    def __init__(self, settings: Settings, state: dict[str, Any] | None = None) -> None:
        m = settings.model
        self.candidates = exploration.parse_candidates(m.self_tune)
        names = [c.name for c in self.candidates]
        self.tuner = exploration.tuner_from_state(
            state or {}, names, names[0], m.self_tune_min_share, m.self_tune_margin,
            m.self_tune_interval_s, m.self_tune_min_matched)

    def step(self, ev: StreamEvaluator) -> bool:
        """One round of estimates (the candidates the evaluator has sums of); True on a switch."""
        before = self.tuner.switch_count
        estimates = {name: ope.tuner_estimate(ev.sums[name].summary())
                     for name in self.tuner.candidates if name in ev.sums}
        if estimates and ev.through_ts >= 0:
            self.tuner.observe(ev.through_ts / 1000.0, estimates)
        return self.tuner.switch_count > before

    def state(self) -> dict[str, Any]:
        return exploration.tuner_state(self.tuner)


class StreamEvaluator:
    """The replay and the per-target sums, without Flink (the job's function wraps it)."""

    def __init__(self, product_ids: Sequence[str], dim: int, l2: float) -> None:
        self.product_ids = list(product_ids)
        self.index = {p: i for i, p in enumerate(self.product_ids)}
        self.dim, self.l2 = dim, l2
        self.model = ope.ReplayModel(len(self.product_ids), dim, l2)
        self.clicks = np.zeros(len(self.product_ids))
        self.sums: dict[str, ope.Top1Sums] = {}
        self.counts = {"impressions": 0, "usable": 0, "logged_clicks": 0, "shown_clicks": 0,
                       "unreadable": 0, "products_added": 0}
        self.through_ts = -1
        self.tuner: dict[str, Any] | None = None  # the live controller's state (LiveTuner)
        self.dirty: set[int] = set()  # products learned since the rows were last taken
        self.added: list[str] = []  # products appended after the list, in the order met

    # -- one closed impression ------------------------------------------------------------

    def step(self, imp: Impression | ClosedImpression, slots: Sequence[int]) -> None:
        """Add one impression (clicked ``slots``) to the sums, then learn it."""
        shadows = dict(imp.shadows or ())
        self._add(ope.new_products(imp.products, shadows, self.index))
        m = len(self.product_ids)
        items = [self.index[p] for p in imp.products]
        self.counts["impressions"] += 1
        x = np.asarray(imp.x, dtype=np.float64)
        r = 1.0 if 0 in slots else 0.0
        self.counts["shown_clicks"] += int(r)
        k = len(items)
        prefix, _ = ope.logging_probabilities(imp.prefix_propensities, imp.slot_propensities,
                                              imp.policy, imp.eligible_n, k, m)
        if prefix is not None:
            self.counts["usable"] += 1
            self.counts["logged_clicks"] += int(r)
            q = self.model.predict(x)
            q_logged = float(q[items[0]])
            names = set(shadows) | {ope.RANDOM, ope.POPULARITY}
            for name in names:
                tgt = ope.target_list(name, shadows, self.index, self.clicks, k)
                if tgt is None and name != ope.RANDOM:
                    continue
                w, q_target = ope.top1_terms(tgt, items, float(prefix[0]), q)
                self.sums.setdefault(name, ope.Top1Sums()).add(w, r, q_logged, q_target)
        self.model.learn(items, x, slots)
        self.dirty.update(items)
        for s in slots:
            self.clicks[items[s]] += 1

    def _add(self, new: Sequence[str]) -> None:
        """Products met for the first time (added to the live catalogue since the job
        started, or since the list it was given): appended at the prior and counted."""
        if not new:
            return
        for p in new:
            self.index[p] = len(self.product_ids)
            self.product_ids.append(p)
            self.added.append(p)
        self.model.grow(len(new), self.l2)
        self.clicks = np.concatenate([self.clicks, np.zeros(len(new))])
        self.counts["products_added"] += len(new)

    def batch(self, lines: Iterable[str]) -> int:
        """Closed lines (``t|slots|json``) in event-time order (stable); returns how many."""
        parsed = []
        for i, line in enumerate(lines):
            try:
                t, slots, body = line.split("|", 2)
                parsed.append((int(t), i, [int(s) for s in slots.split(",")] if slots else [],
                               body))
            except ValueError:  # never written by the join: counted, never fatal
                self.counts["unreadable"] += 1
                log.warning("ope: not a closed-impression line: %.200s", line)
        parsed.sort(key=lambda p: (p[0], p[1]))
        for t, _, slots, body in parsed:
            try:
                imp = read_closed(body, self.dim)
                if not isinstance(imp, ClosedImpression | Impression):
                    raise ValueError("not an impression")
            except Exception as exc:  # never expected: the validator passed it
                self.counts["unreadable"] += 1
                log.warning("ope: closed impression not readable (%s): %.200s", exc, body)
                continue
            try:
                self.step(imp, slots)
            except Exception:  # a bug must not fail the job (nor restart it forever)
                self.counts["unreadable"] += 1
                log.exception("ope: impression %s not evaluated", imp.request_id)
                continue
            self.through_ts = max(self.through_ts, t)
        return len(parsed)

    # -- what is published ----------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """What the evaluator has seen: its counts, the newest time, the targets."""
        return {**self.counts, "through_ts_ms": self.through_ts, "targets": sorted(self.sums)}

    def summaries(self) -> dict[str, dict[str, Any]]:
        """Per target: the estimates, and beside them the live CTR of what was shown."""
        c = self.counts
        shown = {"impressions": c["impressions"], "usable": c["usable"],
                 "logged_top1_ctr": c["logged_clicks"] / c["usable"] if c["usable"] else None,
                 "shown_top1_ctr": c["shown_clicks"] / c["impressions"]
                 if c["impressions"] else None,
                 "through_ts_ms": self.through_ts, "window": "cumulative"}
        return {name: {"target": name, **s.summary(), **shown}
                for name, s in sorted(self.sums.items())}

    # -- state: our own bytes, never a pickle ---------------------------------------------

    def encode(self) -> bytes:
        head = json.dumps({"products": self.product_ids, "dim": self.dim, "l2": self.l2,
                           "counts": self.counts, "through_ts": self.through_ts,
                           "sums": {k: vars(v) for k, v in self.sums.items()},
                           **({"tuner": self.tuner} if self.tuner is not None else {})}).encode()
        arrays = [self.model.A_inv, self.model.b, self.model.theta, self.clicks]
        return b"".join([_MAGIC, struct.pack("<I", len(head)), head,
                         *(np.ascontiguousarray(a, dtype="<f8").tobytes() for a in arrays)])

    def encode_head(self) -> bytes:
        """Everything but the products' rows (small: the counts, the sums, the tuner)."""
        head = json.dumps({"dim": self.dim, "l2": self.l2, "counts": self.counts,
                           "through_ts": self.through_ts, "added": self.added,
                           "sums": {k: vars(v) for k, v in self.sums.items()},
                           **({"tuner": self.tuner} if self.tuner is not None else {})})
        return _HEAD_MAGIC + head.encode()

    def encode_row(self, i: int) -> bytes:
        """Product ``i``'s replay row: A_inv, b, theta, clicks as little-endian float64."""
        m = self.model
        return b"".join([np.ascontiguousarray(m.A_inv[i], dtype="<f8").tobytes(),
                         np.ascontiguousarray(m.b[i], dtype="<f8").tobytes(),
                         np.ascontiguousarray(m.theta[i], dtype="<f8").tobytes(),
                         np.float64(self.clicks[i]).astype("<f8").tobytes()])

    def take_rows(self) -> dict[str, bytes]:
        """The rows of the products learned since the last call (what the state must write)."""
        rows = {self.product_ids[i]: self.encode_row(i) for i in sorted(self.dirty)}
        self.dirty.clear()
        return rows

    @classmethod
    def from_rows(cls, head_blob: bytes, rows: Iterable[tuple[str, bytes]],
                  product_ids: Sequence[str], dim: int, l2: float) -> StreamEvaluator:
        """The state of a head (:meth:`encode_head`) and the rows stored beside it, on today's
        products (one without a row, or new, starts fresh; a row of a product not in the list,
        one the live catalogue added while the job ran, is read and its product appended);
        another d or l2, or a row of the wrong size, is refused (ValueError)."""
        if head_blob[:len(_HEAD_MAGIC)] != _HEAD_MAGIC:
            raise ValueError("not an ope-evaluate head")
        head = json.loads(head_blob[len(_HEAD_MAGIC):])
        if head["dim"] != dim or head["l2"] != l2:
            raise ValueError(f"ope state of d={head['dim']}, l2={head['l2']}")
        rows = list(rows)
        ev = cls(product_ids, dim, l2)
        ev._add([p for p in head.get("added", []) if p not in ev.index])  # the order met
        ev._add(sorted({pid for pid, _ in rows} - set(ev.index)))
        d = dim
        size = (d * d + 2 * d + 1) * 8
        for pid, row in rows:
            j = ev.index[pid]
            if len(row) != size:
                raise ValueError(f"ope row of {pid!r}: {len(row)} bytes, not {size}")
            a = np.frombuffer(row, dtype="<f8")
            ev.model.A_inv[j] = a[:d * d].reshape(d, d)
            ev.model.b[j] = a[d * d:d * d + d]
            ev.model.theta[j] = a[d * d + d:d * d + 2 * d]
            ev.clicks[j] = a[-1]
        ev._head(head)
        return ev

    def _head(self, head: dict[str, Any]) -> None:
        self.counts.update((k, v) for k, v in head["counts"].items() if k in self.counts)
        self.through_ts = head["through_ts"]
        self.sums = {k: ope.Top1Sums(**v) for k, v in head["sums"].items()}
        self.tuner = head.get("tuner")  # a state from before self-tuning has none

    @classmethod
    def decode(cls, blob: bytes, product_ids: Sequence[str], dim: int,
               l2: float) -> StreamEvaluator:
        """The state of ``blob``, on today's products (a product new since starts fresh; one
        of the blob not in the list is appended, as :meth:`from_rows` does); a blob of another
        d or l2 is refused (ValueError)."""
        if blob[:len(_MAGIC)] != _MAGIC:
            raise ValueError("not an ope-evaluate state")
        (n,) = struct.unpack_from("<I", blob, len(_MAGIC))
        off = len(_MAGIC) + 4
        head = json.loads(blob[off:off + n])
        off += n
        if head["dim"] != dim or head["l2"] != l2:
            raise ValueError(f"ope state of d={head['dim']}, l2={head['l2']}")
        old = head["products"]
        mo, d = len(old), dim
        shapes = [(mo, d, d), (mo, d), (mo, d), (mo,)]
        arrays = []
        for shape in shapes:
            size = int(np.prod(shape)) * 8
            arrays.append(np.frombuffer(blob, dtype="<f8", count=size // 8,
                                        offset=off).reshape(shape))
            off += size
        ev = cls(product_ids, dim, l2)
        ev._add([p for p in old if p not in ev.index])
        for i, pid in enumerate(old):
            j = ev.index[pid]
            ev.model.A_inv[j], ev.model.b[j] = arrays[0][i], arrays[1][i]
            ev.model.theta[j], ev.clicks[j] = arrays[2][i], arrays[3][i]
            ev.dirty.add(j)  # a migration writes it as a row once
        ev._head(head)
        return ev


def catalog_order(known: frozenset[str] | None) -> tuple[str, ...]:
    """The products in the shipped catalogue's order (the offline command's: popularity's
    ties and random's mean over the products), then any other known product sorted."""
    from contract.features import load_catalog

    try:
        ids = [p.product_id for p in load_catalog()]
    except Exception:  # no catalogue shipped: the known products, sorted
        ids = []
    if known is None:
        return tuple(ids)
    return tuple([p for p in ids if p in known] + sorted(known - set(ids)))


class Evaluate(KeyedProcessFunction):
    """Keyed by "ope" (one subtask): one batch of closed lines is replayed, the head and the
    rows of the products it learned written, and every target's estimates published to Redis
    and to the metrics."""

    def __init__(self, settings: Settings, product_ids: tuple[str, ...]) -> None:
        self.settings = settings
        self.product_ids = product_ids

    def open(self, runtime_context: RuntimeContext) -> None:
        self.state = runtime_context.get_state(
            ValueStateDescriptor("ope", Types.PICKLED_BYTE_ARRAY()))  # the head (or old blob)
        self.rows = runtime_context.get_map_state(
            MapStateDescriptor(ROWS, Types.STRING(), Types.PICKLED_BYTE_ARRAY()))
        # PICKLED_BYTE_ARRAY as the head's: Flink's pickle of one bytes object (our row), read
        # back only from this job's own state; PRIMITIVE_ARRAY(BYTE) fails in thread mode
        # (PyFlink converts bytes to an Object[], not a byte[]).
        self.group = runtime_context.get_metrics_group()
        self.gauges = Gauges(self.group)
        self.ev: StreamEvaluator | None = None
        # each batch's estimates, replaced whole: the gauges read them (flink_job/gauges.py)
        self.latest: dict[str, dict[str, Any]] = {}
        self.redis: Any = None
        self.redis_errors = 0
        self.gauged: set[str] = set()
        self.live: LiveTuner | None = None
        self.gauges.add("ope_impressions", lambda: self._count("impressions"))
        self.gauges.add("ope_usable", lambda: self._count("usable"))
        self.gauges.add("ope_redis_errors", lambda: self.redis_errors)

    def close(self) -> None:
        self.gauges.close()

    def _count(self, name: str) -> int:
        ev = self.ev
        return int(ev.counts[name]) if ev is not None else 0

    def _gauge_target(self, name: str) -> None:
        """Per target (label ``target``); gauges are integers in PyFlink: estimates in ppm."""
        g = self.group.add_group("target", name)

        def read(field: str, scale: float) -> Any:
            def value() -> int:
                v = self.latest.get(name, {}).get(field)
                return round(v * scale) if v is not None else -1
            return value

        for field in ("snips", "dr", "ips"):
            self.gauges.add(f"ope_{field}_ppm", read(field, 1e6), g)
        self.gauges.add("ope_ess", read("ess", 1.0), g)
        self.gauges.add("ope_n", read("n", 1.0), g)
        self.gauged.add(name)

    def process_element(self, value: Any, ctx: KeyedProcessFunction.Context) -> Iterable[Any]:
        if self.ev is None:
            self.ev = self._restore()
            if self.settings.model.self_tune:
                self._open_tuner(self.ev.tuner)
        batch = value if isinstance(value, str) else value[1]
        self.ev.batch(batch.split("\t")[1:])
        if self.live is not None:
            self.live.step(self.ev)
            self.ev.tuner = self.live.state()
        for pid, row in self.ev.take_rows().items():
            self.rows.put(pid, row)
        self.state.update(self.ev.encode_head())
        self.latest = self.ev.summaries()
        for name in self.latest.keys() - self.gauged:
            self._gauge_target(name)
        self._publish()
        return iter(())

    def _restore(self) -> StreamEvaluator:
        """The evaluator of the state (once, at the first batch after open): a head and its
        rows; an older one-blob state, moved to rows by the next write (its every product is
        dirty); nothing usable, a fresh one and no rows. Rows are never dropped for a product
        missing from the list: the list is the products file the job was started with, and a
        product the live catalogue added since has rows that must come back."""
        s = self.settings
        fresh = StreamEvaluator(self.product_ids, s.model.dim, s.model.l2)
        blob = self.state.value()
        if blob is None:
            return fresh
        try:
            if blob[:len(_MAGIC)] == _MAGIC:
                ev = StreamEvaluator.decode(blob, self.product_ids, s.model.dim, s.model.l2)
                log.info("ope: the state of the one-blob layout is moved to rows (%d products)",
                         len(ev.dirty))
                self.rows.clear()
                return ev
            return StreamEvaluator.from_rows(blob, self.rows.items(), self.product_ids,
                                             s.model.dim, s.model.l2)
        except (ValueError, KeyError, TypeError, struct.error) as exc:  # d, l2, damage
            log.error("ope: the restored evaluator state cannot be used (%s): the "
                      "estimates start again from nothing", exc)
            self.rows.clear()
            return fresh

    def _open_tuner(self, state: dict[str, Any] | None) -> None:
        """The controller, continuing the restored state; gauges ``tuner_switches`` and per
        candidate (label ``candidate``) ``tuner_live`` (1 for the live one, else 0)."""
        try:
            self.live = LiveTuner(self.settings, state)
        except (ValueError, KeyError, TypeError) as exc:  # a damaged state: start afresh
            log.error("self-tune: the restored controller state cannot be used (%s): it "
                      "starts again on the first candidate", exc)
            self.live = LiveTuner(self.settings)
        live = self.live
        self.gauges.add("tuner_switches", lambda: live.tuner.switch_count)
        for name in live.tuner.candidates:
            self.gauges.add("tuner_live", lambda name=name: int(live.tuner.live == name),
                            self.group.add_group("candidate", name))
        log.info("self-tune: candidates %s, live %s (%d switch(es) so far)",
                 ", ".join(live.tuner.candidates), live.tuner.live, live.tuner.switch_count)

    def _publish(self) -> None:
        assert self.ev is not None
        now = int(time.time() * 1000)
        try:
            if self.redis is None:
                self.redis = redis_client(self.settings.redis)
            pipe = self.redis.pipeline(transaction=False)
            pipe.set(status_key(self.settings.redis.prefix),
                     json.dumps({**self.ev.status(), "updated_ms": now}))
            for name, summary in self.latest.items():
                pipe.set(redis_key(self.settings.redis.prefix, name),
                         json.dumps({**summary, "updated_ms": now}))
            if self.live is not None:
                pipe.set(tuner_key(self.settings.redis.prefix),
                         json.dumps({**self.live.state(), "through_ts_ms": self.ev.through_ts,
                                     "updated_ms": now}))
            pipe.execute()
        except Exception as exc:  # Redis down: the next batch writes the newest sums
            self.redis_errors += 1
            self.redis = None
            log.warning("ope: Redis write failed (%s: %s); the next batch retries",
                        type(exc).__name__, exc)


def wire(j_joined, settings: Settings, known: frozenset[str] | None) -> None:  # type: ignore[no-untyped-def]
    """The join's closed lines -> [JVM] batches keyed "ope" -> ``ope-evaluate`` (one
    subtask) -> Redis. Nothing downstream: a discarding sink ends it. Built whether or not
    ``RTREC_OPE_STREAM`` is on (off, the join writes no closed lines and it idles): a restore
    must find the same operators as the checkpoint, or Flink refuses the evaluator's state."""
    from pyflink.datastream.connectors.base import Sink
    from pyflink.datastream.data_stream import DataStream, KeyedStream
    from pyflink.java_gateway import get_gateway

    from flink_job.job import DISCARD, MAX_BATCH_INTERVAL_MS

    jvm = get_gateway().jvm
    j_closed = j_joined.getSideOutput(jvm.rtrec.RewardJoin.closed())
    j_batches = (j_closed
                 .transform("ope-batch",
                            Types.ROW([Types.STRING(), Types.STRING()]).get_java_type_info(),
                            jvm.rtrec.MicroBatcher(settings.job.publish_interval_ms,
                                                   MAX_BATCH_INTERVAL_MS))
                 .name("ope-batch").uid("ope-batch"))
    keyed = KeyedStream(
        j_batches.keyBy(jvm.org.apache.flink.streaming.api.functions.python.KeyByKeySelector(),
                        Types.ROW([Types.STRING()]).get_java_type_info()),
        Types.STRING(), DataStream(j_batches))
    (keyed.process(Evaluate(settings, catalog_order(known)), output_type=Types.INT())
     .name(UID).uid(UID).set_parallelism(1)
     .sink_to(Sink(DISCARD)).name("ope-discard").uid("ope-discard").set_parallelism(1))
