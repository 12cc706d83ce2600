"""Issue 15 through the real job (Kafka, Redis, a Flink mini-cluster; ``python -m flink_job
run`` as a subprocess): the cascade and position feedback rules, event kinds with their capped
rewards, the maximum lateness and the discount each end at their batch formula
(contract/feedback.py ``batch_state``, 1e-9); late-but-allowed events are learned exactly once
across a SIGKILL and restore, and events past the lateness are dead-lettered with their reason.
"""

from __future__ import annotations

import logging
import signal
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from contract import feedback
from contract.config import Settings
from contract.events import Click
from contract.linucb import discount_factor
from endtoend.harness import JobProcess, Record, now_ms, produce, sentinels
from flink_job import checkpoints
from tests.helpers import (
    PRODUCTS,
    DeadLetters,
    impression_json,
    live_metrics,
    store,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.flink]
log = logging.getLogger(__name__)

W_MS = 1000
PRODS = PRODUCTS[:12]  # few products, so each learns many items of every kind


@dataclass
class Impr:
    t: int
    x: np.ndarray
    shown: tuple[str, ...]
    events: list[tuple[str, str, int]] = field(default_factory=list)  # product, kind, ts


@dataclass
class World:
    """Impressions with their reward events, and what was sent of them."""

    s: Settings
    impressions: list[Impr] = field(default_factory=list)
    beyond: list[bytes] = field(default_factory=list)  # events past the lateness: dead
    duplicates: int = 0  # repeated (product, kind) events: dead (bad_value)

    @property
    def lateness_ms(self) -> int:
        return round(self.s.job.max_lateness_s * 1000)

    def record(self, event: tuple[str, str, int], rid: str) -> Record:
        product, kind, ts = event
        return (self.s.kafka.topic_clicks, Click(rid, product, ts, kind=kind).to_json(), ts, None)

    def expected(self, gamma: float = 1.0) -> dict[str, tuple[int, np.ndarray, np.ndarray]]:
        """Per product, batch_state of the items the rule gives each impression, in the order
        of the impressions (the order their windows close, which the discount depends on)."""
        m = self.s.model
        learned: dict[str, list] = defaultdict(list)
        for imp in sorted(self.impressions, key=lambda i: i.t):
            seen = {(p, k) for p, k, _ in imp.events}
            events = [(p, m.reward_values[k]) for p, k in sorted(seen)]
            for it in feedback.items(m.feedback, imp.shown, events, m.reward_cap,
                                     m.examination_probs):
                learned[it.product].append((imp.x, it.weight, it.reward))
        out = {}
        for pid, items in learned.items():
            A_inv, b, n = feedback.batch_state(m.dim, m.l2, items, gamma)
            out[pid] = (n, A_inv, b)
        return out


def generate(s: Settings, rng: np.random.Generator, t0: int, n: int, step_ms: int,
             late_until: int | None = None) -> World:
    """``n`` impressions ``step_ms`` apart from ``t0``, five of PRODS each; every slot is
    clicked with probability 0.25, a click is followed by an add_to_cart (0.4) and a purchase
    (0.3); with a maximum lateness, 30% of the events come after the window but within it
    (never later than ``late_until``); some duplicates and some events past the lateness."""
    w = World(s)
    lateness = w.lateness_ms
    for i in range(n):
        t = t0 + i * step_ms
        imp = Impr(t, np.round(rng.normal(0.0, 1.0, s.model.dim), 6),
                   tuple(str(p) for p in rng.choice(PRODS, 5, replace=False)))
        for p in imp.shown:
            if rng.random() >= 0.25:
                continue
            for kind, prob in (("click", 1.0), ("add_to_cart", 0.4), ("purchase", 0.3)):
                if rng.random() >= prob:
                    continue
                ts = t + int(rng.integers(10, W_MS - 100))
                hi = t + W_MS + lateness - 600
                if late_until is not None:
                    hi = min(hi, late_until)
                if lateness and rng.random() < 0.3 and hi > t + W_MS + 100:
                    ts = int(rng.integers(t + W_MS + 100, hi))
                imp.events.append((p, kind, ts))
        w.impressions.append(imp)
    return w


def records(w: World, impressions: list[Impr], rng: np.random.Generator,
            extras: bool = True) -> list[Record]:
    """The impressions and their events in timestamp order (so a late event finds the request
    before the watermark passes its lateness), with duplicates and too-late events."""
    out: list[Record] = []
    for imp in impressions:
        rid = f"r{imp.t}"
        out.append((w.s.kafka.topic_impressions, impression_json(rid, imp.t, imp.shown, imp.x),
                    imp.t, None))
        out.extend(w.record(e, rid) for e in imp.events)
        if extras and imp.events and rng.random() < 0.1:  # the same event again, later
            p, kind, ts = imp.events[0]
            out.append(w.record((p, kind, min(ts + 50, imp.t + W_MS - 1)
                                 if ts < imp.t + W_MS else ts + 50), rid))
            w.duplicates += 1
        if extras and w.lateness_ms and rng.random() < 0.1 \
                and (imp.shown[-1], "add_to_cart") not in {(p, k) for p, k, _ in imp.events}:
            # an add_to_cart (held-back events are clicks or purchases): never a repeat,
            # so its reason is late_click, not a duplicate's bad_value
            ts = imp.t + W_MS + w.lateness_ms + int(rng.integers(100, 2000))
            rec = w.record((imp.shown[-1], "add_to_cart", ts), rid)
            out.append(rec)
            w.beyond.append(rec[1])
    return sorted(out, key=lambda r: r[2])


def wait_parity(s: Settings, expected: dict, job: JobProcess, timeout_s: float) -> None:
    """Poll Redis until every product's n, A^-1, b equal ``expected`` (1e-9) and no other
    product is published; on timeout, name the products that differ."""
    st = store(s)
    diff: dict[str, str] = {}

    def equal() -> bool:
        params = st.read_all(s.model.dim)
        diff.clear()
        for pid in set(params) | set(expected):
            if pid not in params or pid not in expected:
                diff[pid] = "missing" if pid not in params else "unexpected"
                continue
            n, A_inv, b = expected[pid]
            got = params[pid].state
            if got.n != n or not np.allclose(got.A_inv, A_inv, rtol=0, atol=1e-9) \
                    or not np.allclose(got.b, b, rtol=0, atol=1e-9):
                diff[pid] = f"n {got.n} vs {n}, |db| {np.abs(got.b - b).max():.3g}"
        return not diff

    try:
        wait_for(equal, timeout_s, "the batch formula in Redis", job, every_s=0.5)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {dict(list(diff.items())[:6])}") from exc


@pytest.mark.timeout(1500)  # two job starts: minutes each on a loaded 2-core host
def test_cascade_kinds_and_lateness_learned_exactly_once_across_a_sigkill(
        job_settings: Settings, products_file: Path, tmp_path: Path) -> None:
    """Cascade feedback, click/add_to_cart/purchase with a cap, a maximum lateness of 5 s.
    The job learns the first part (late events included) and completes a checkpoint; more late
    events of requests whose window has closed are learned; then SIGKILL before the next
    checkpoint and restart from the latest: those events are replayed from Kafka, the
    restored requests still take the rest of their late events, and the final state equals
    the batch formula of every counted event: each learned exactly once. Events past the
    lateness are dead letters (late_click) with their reason; duplicates bad_value."""
    s = job_settings.override(RTREC_FEEDBACK="cascade", RTREC_REWARD_WINDOW_S=W_MS / 1000,
                              RTREC_MAX_LATENESS_S=5, RTREC_REWARD_PURCHASE=2.5,
                              RTREC_REWARD_CAP=3, RTREC_CHECKPOINT_INTERVAL_MS=15_000)
    rng = np.random.default_rng(15)
    t0 = now_ms() - 10 * 60_000
    n, step = 300, 20
    t_last = t0 + (n - 1) * step
    e1 = t_last + W_MS + 1500  # the first part's watermark: every window closed by then
    w = generate(s, rng, t0, n, step, late_until=e1 - 50)
    sent = records(w, w.impressions, rng)
    first = [r for r in sent if r[1] not in w.beyond]
    assert all(r[2] < e1 for r in first)
    # late events held back until after a checkpoint: requests whose window closed before
    # e1 and whose lateness lasts beyond it
    held: list[tuple[Impr, tuple[str, str, int]]] = []
    for imp in w.impressions:
        end = imp.t + W_MS + w.lateness_ms
        if end - 300 > e1 + 200 and rng.random() < 0.7:
            p = imp.shown[int(rng.integers(5))]
            kind = next((k for k in ("click", "purchase")
                         if (p, k) not in {(q, kk) for q, kk, _ in imp.events}), None)
            if kind is not None:
                held.append((imp, (p, kind, int(rng.integers(e1 + 200, end - 300)))))
    held.sort(key=lambda h: h[1][2])
    assert len(held) >= 20, len(held)
    half = len(held) // 2
    expected_first = w.expected()
    for imp, ev in held[:half]:
        imp.events.append(ev)
    expected_mid = w.expected()
    for imp, ev in held[half:]:
        imp.events.append(ev)
    held_records = [w.record(ev, f"r{imp.t}") for imp, ev in held]
    beyond = sorted((r for r in sent if r[1] in w.beyond), key=lambda r: r[2])
    produce(s, first + sentinels(s, e1))

    job = JobProcess(s, tmp_path / "job.log", ["--products", str(products_file)]).start()
    dead = DeadLetters(s)
    try:
        wait_parity(s, expected_first, job, 300)
        before = {str(p) for p in checkpoints.completed(s.job.checkpoint_dir)}
        wait_for(lambda: any(str(p) not in before
                             for p in checkpoints.completed(s.job.checkpoint_dir)),
                 60, "a checkpoint after the first part", job)
        restored = checkpoints.latest(s.job.checkpoint_dir)
        produce(s, held_records[:half])
        wait_parity(s, expected_mid, job, 60)  # learned once, after that checkpoint...
        assert checkpoints.latest(s.job.checkpoint_dir) == restored, \
            "a checkpoint completed before the kill: nothing would be replayed"
        job.kill(signal.SIGKILL)  # ...and lost with the job: replayed after the restore
        job.start("--restore", "latest")
        produce(s, sorted(held_records[half:] + beyond, key=lambda r: r[2]))
        produce(s, sentinels(s, now_ms() + 60_000))
        try:
            wait_parity(s, w.expected(), job, 600)
        except AssertionError as exc:  # say what the job did, to read the failure
            time.sleep(3)
            got = Counter((d["reason"], d["message"][:60]) for d in dead.poll())
            m = {k: v for k, v in live_metrics(job).items()
                 if k.split(".")[0] in ("reward-join", "learn-linucb", "publish-redis",
                                         "validate")}
            raise AssertionError(f"{exc}; dead letters: {dict(got.most_common(8))}; metrics "
                                 f"{m}; log: {job.log_tail()[-3000:]}") from exc
        n_dead = len(w.beyond) + w.duplicates + 4 * s.kafka.topic_partitions
        items = dead.until_quiet(n_dead, 60, job=job)
        # the restored job's operator metrics reach the REST API a fetch interval after it
        # registers them: read until the join's are listed (their values are asserted below)
        got_metrics: dict[str, float] = {}

        def listed() -> bool:
            got_metrics.update(live_metrics(job))
            return {"reward-join.rewards_late",
                    "reward-join.observations_removed"} <= got_metrics.keys()

        wait_for(listed, 60, lambda: f"the join's metrics (listed: {sorted(got_metrics)})",
                 job, every_s=1.0)
        metrics = got_metrics
    finally:
        job.kill()
        dead.close()
    text = job.log_path.read_text(errors="replace")
    assert text.count("restore latest: ") == 1 and "restore latest: no completed" not in text
    reasons_ = Counter(d["reason"] for d in items)
    assert reasons_ == {"late_click": len(w.beyond), "bad_value": w.duplicates,
                        "unparseable": 4 * s.kafka.topic_partitions}, reasons_
    late_dead = [d for d in items if d["reason"] == "late_click"]
    assert sorted(d["value"].encode() for d in late_dead) == sorted(w.beyond)
    assert all("lateness 5000 ms" in d["message"] or "closed" in d["message"]
               for d in late_dead)
    # the restored run learned the replayed and the held-back late events, counted as late
    assert metrics["reward-join.rewards_late"] >= len(held_records), metrics
    assert metrics["reward-join.observations_removed"] > 0  # cascade removed slots


@pytest.mark.parametrize(("mode", "half_life"), [("position", 0.0), ("position", 8.0)])
def test_position_and_discount_equal_their_batch_formulas(
        job_settings: Settings, products_file: Path, tmp_path: Path, mode: str,
        half_life: float) -> None:
    """Position feedback (examination 1, .6, .4, .3) learned at once, and with a half-life of
    8 observations (learned when each window closes): the published state equals batch
    weighted (discounted) ridge in the order the windows close (1e-9)."""
    s = job_settings.override(RTREC_FEEDBACK=mode, RTREC_EXAMINATION="1,0.6,0.4,0.3",
                              RTREC_REWARD_WINDOW_S=W_MS / 1000, RTREC_HALF_LIFE=half_life)
    rng = np.random.default_rng(int(half_life) + 3)
    w = generate(s, rng, now_ms() - 10 * 60_000, 250, 17)
    sent = records(w, w.impressions, rng)
    produce(s, sent + sentinels(s, now_ms() + 60_000))
    expected = w.expected(discount_factor(half_life))
    job = JobProcess(s, tmp_path / "job.log",
                     ["--products", str(products_file), "--max-restarts", "0"]).start()
    try:
        wait_parity(s, expected, job, 150)
        time.sleep(1.0)  # nothing more arrives: still equal
        wait_parity(s, expected, job, 5)
    finally:
        job.kill()
