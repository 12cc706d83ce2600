"""The closed loop, end to end: the real job learns from what serving showed and the oracle
clicked, while reference policies run on the same visits.

For each start (``bootstrapped`` from the historical log, or ``cold``) it gives the job a
fresh world of its own (topics and Redis prefix with a run tag, a new checkpoint folder),
starts ``python -m flink_job run`` as a subprocess, waits until the pipeline is live, runs the
visits through serving (in-process library, or ``--via http`` against ``python -m serving``)
and the reference policies, then checks that every click reached the job and stops it.
The job is a process reached through Kafka and Redis, as in production: nothing here imports
flink_job.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from tqdm import tqdm

from contract.catalog import product_record
from contract.config import Settings
from contract.errors import RtrecError
from contract.features import FeatureSpace, Product, User, load_catalog, load_users
from contract.kafka import kafka_producer
from contract.store import ParamStore
from devstack.stack import Stack, free_port
from endtoend import report
from endtoend.flinkcluster import ClusterJob
from endtoend.processes import ChildProcess, child_env
from endtoend.simulation import (
    HttpStreamLinUCB,
    InstantLinUCB,
    OraclePolicy,
    Outcome,
    RandomPolicy,
    SimPolicy,
    SimulatedShop,
    StreamLinUCB,
    make_visits,
    simulate,
)
from producer.context import REFERENCE, ContextDistribution
from producer.live_catalog import load_records
from producer.oracle import Oracle, load_oracle
from serving.recommender import Recommender

log = logging.getLogger(__name__)
# Simulated users click within milliseconds of the answer: a 1 s reward window loses no click.
LOOP_REWARD_WINDOW_S = 1.0
GENDER_COLUMNS = (3, 4)  # x's one-hot gender: exactly one is 1, so b[3] + b[4] counts rewards


class LoopError(RtrecError):
    """The loop could not run (job did not start, stack missing...)."""


STARTS = ("bootstrapped", "cold")


@dataclass(frozen=True)
class LoopOptions:
    """One closed-loop run. ``oracle`` is the hidden oracle of the live visits; it should be
    the one that wrote the historical log (the demo passes both the same setting)."""

    visits: int = 5000
    rate: float = 50.0  # visits per second
    seed: int = 1237
    oracle: str = "rules"
    starts: tuple[str, ...] = STARTS
    via: str = "inprocess"
    history: Path | None = None  # JSON lines for the bootstrapped start
    work_dir: Path = Path("var/loop")
    results_dir: Path = Path("results")
    dist: ContextDistribution = REFERENCE
    ready_timeout_s: float = 120.0
    progress: bool = True  # a bar on a terminal (never in a log)
    # "mini": python -m flink_job run (a local mini-cluster per start); "cluster": submitted
    # to the standalone cluster on RTREC_FLINK_REST_PORT (running: endtoend.demo starts it)
    flink: str = "mini"

    def __post_init__(self) -> None:
        bad = sorted(set(self.starts) - set(STARTS))
        if bad or not self.starts:
            raise LoopError(f"starts: unknown start(s) {', '.join(bad) or '(none)'}; "
                            f"use {' and/or '.join(STARTS)}")
        if self.flink not in ("mini", "cluster"):
            raise LoopError(f"flink: {self.flink!r} is not mini or cluster")
        if self.via not in ("inprocess", "http"):
            raise LoopError(f"via: {self.via!r} is not inprocess or http")
        if self.visits < 1 or self.rate <= 0:
            raise LoopError("visits must be >= 1 and rate > 0")

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: object) -> LoopOptions:
        """Seed, oracle and the historical log's place from the settings; the rest given."""
        base: dict[str, object] = {"seed": settings.world.seed, "oracle": settings.world.oracle,
                                   "history": Path(settings.world.data_dir) / "history.jsonl"}
        return cls(**{**base, **overrides})  # type: ignore[arg-type]


@dataclass(frozen=True)
class LiveWorld:
    """What the live visits are made of: the shipped users and catalog, and the shop that
    knows every product's click probability under the run's hidden oracle."""

    users: list[User]
    shop: SimulatedShop

    @classmethod
    def load(cls, oracle_spec: str) -> LiveWorld:
        features = FeatureSpace.load()
        oracle: Oracle = load_oracle(oracle_spec, features)
        return cls(load_users(), SimulatedShop(load_catalog(), features, oracle))


def run_settings(base: Settings, tag: str, work_dir: Path) -> Settings:
    """The settings of one run: isolated (its own topics, Redis prefix and checkpoint
    folder), with the loop's reward window."""
    return base.isolated(tag, work_dir).override(RTREC_REWARD_WINDOW_S=LOOP_REWARD_WINDOW_S)


def start_http_serving(settings: Settings, log_path: Path,
                       timeout_s: float = 60.0) -> tuple[ChildProcess, str]:
    """``python -m serving`` on a free loopback port; returns it and its base URL once
    /healthz answers."""
    port = free_port()
    proc = ChildProcess("serving", ["--port", str(port), "--log-level", "warning"], settings,
                        log_path)
    proc.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not proc.alive():
            raise LoopError(f"serving exited during start-up; see {log_path}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.stop()
    raise LoopError(f"serving did not answer /healthz within {timeout_s:.0f}s; see {log_path}")


def learned_totals(store: ParamStore, dim: int) -> tuple[int, int]:
    """(observations, positive rewards) the job has published, summed over products."""
    params = store.read_all(dim=dim)
    n = sum(p.state.n for p in params.values())
    clicks = sum(p.state.b[list(GENDER_COLUMNS)].sum() for p in params.values())
    return n, int(np.rint(clicks))


def wait_live(settings: Settings, job: ChildProcess | ClusterJob, timeout_s: float) -> float:
    """Send one malformed probe record and wait for it in the dead-letter topic: proof that
    the job consumes and produces, without touching any model state. Returns the seconds."""
    from confluent_kafka import Consumer

    t0 = time.monotonic()
    probe = f"probe-{uuid.uuid4().hex}".encode()
    consumer = Consumer({"bootstrap.servers": settings.kafka.bootstrap, "group.id": probe.decode(),
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([settings.kafka.topic_dead_letter])
    producer = kafka_producer(settings.kafka)
    producer.produce(settings.kafka.topic_impressions, b'{"liveness-probe": "' + probe + b'"}')
    producer.flush(10)
    try:
        while time.monotonic() - t0 < timeout_s:
            if not job.alive():
                raise LoopError(f"the job exited during start-up; see {job.log_path}")
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None and probe in (msg.value() or b""):
                return time.monotonic() - t0
        raise LoopError(f"the job did not dead-letter a probe within {timeout_s:.0f}s; "
                        f"see {job.log_path}")
    finally:
        consumer.close()


def wait_learned(store: ParamStore, dim: int, expected_n: int, timeout_s: float,
                 expected_clicks: int = 0) -> tuple[int, int]:
    """Wait until the job has published ``expected_n`` observations and ``expected_clicks``
    positive rewards (or the timeout); returns what it has published."""
    deadline = time.monotonic() + timeout_s
    totals = (0, 0)
    while time.monotonic() < deadline:
        totals = learned_totals(store, dim)
        if totals[0] >= expected_n and totals[1] >= expected_clicks:
            break
        time.sleep(0.5)
    return totals


def train_instant_on_history(policy: InstantLinUCB, path: Path,
                             index: dict[str, int]) -> tuple[int, int]:
    """Give the in-process learner the same history the job bootstraps from (same rewards);
    returns the history's (observations, clicks)."""
    shown: dict[str, tuple[np.ndarray, list[str]]] = {}
    clicked: set[tuple[str, str]] = set()
    with open(path, "rb") as f:
        for line in f:
            if not line.strip():
                continue
            e = json.loads(line)
            if e["type"] == "impression":
                shown[e["request_id"]] = (np.asarray(e["x"], dtype=float), e["products"])
            else:
                clicked.add((e["request_id"], e["product_id"]))
    for rid, (x, products) in shown.items():
        for pid in products:
            policy.learn(index[pid], x, 1.0 if (rid, pid) in clicked else 0.0)
    return sum(len(products) for _, products in shown.values()), len(clicked)


def run_start(start: str, base: Settings, world: LiveWorld,
              opts: LoopOptions) -> tuple[dict[str, Outcome], dict[str, object]]:
    """One start (bootstrapped or cold) of the closed loop. Returns outcomes and facts."""
    products: Sequence[Product] = world.shop.products
    tag = f"{start[:4]}{uuid.uuid4().hex[:6]}"
    settings = run_settings(base, tag, opts.work_dir)
    Stack(settings).create_topics()
    # the world's catalog onto the catalog topic, the way a team loads its own (docs/CATALOG.md)
    loaded = load_records(settings, [product_record(p) for p in products])
    log.info("catalog topic %s: %d products loaded", settings.kafka.topic_catalog,
             loaded.written)
    store = ParamStore.from_settings(settings, timeout_s=2)
    product_ids = [p.product_id for p in products]
    index = {p: i for i, p in enumerate(product_ids)}
    m = settings.model
    instant = InstantLinUCB(len(products), m.dim, m.alpha, m.l2, m.exploration,
                            [p.category for p in products])
    facts: dict[str, object] = {"run_tag": tag}
    job: ChildProcess | ClusterJob
    if opts.flink == "cluster":
        job = ClusterJob(settings, opts.work_dir / tag / "job.log")
    else:
        job = ChildProcess("flink_job", ["run"], settings, opts.work_dir / tag / "job.log")
    server: ChildProcess | None = None
    t0 = time.monotonic()
    job.start()
    rec = None
    try:
        facts["job_live_s"] = round(wait_live(settings, job, opts.ready_timeout_s), 1)
        if isinstance(job, ClusterJob):
            facts["flink_job_id"] = job.jid
        hist_n = hist_clicks = 0
        if start == "bootstrapped":
            if opts.history is None or not opts.history.is_file():
                raise LoopError("bootstrapped start needs the historical log: run "
                                "`python -m producer prepare-data` first")
            subprocess.run([sys.executable, "-m", "flink_job", "bootstrap", str(opts.history)],
                           env=child_env(settings), check=True, capture_output=True)
            hist_n, hist_clicks = train_instant_on_history(instant, opts.history, index)
            timeout_s = opts.ready_timeout_s + settings.job.reward_window_s
            got = wait_learned(store, settings.model.dim, hist_n, timeout_s, hist_clicks)
            facts["bootstrap_learned"], facts["bootstrap_clicks"] = got
            log.info("job learned %d of %d historical observations, %d of %d clicks", got[0],
                     hist_n, got[1], hist_clicks)
            if got != (hist_n, hist_clicks):  # the comparison with the instant learner needs it
                raise LoopError(
                    f"the job learned {got[0]} of the history's {hist_n} observations and "
                    f"{got[1]} of its {hist_clicks} clicks within {timeout_s:.0f}s: the "
                    f"bootstrapped start needs all of it; see {job.log_path}")
        stream: StreamLinUCB
        if opts.via == "http":
            server, url = start_http_serving(settings, opts.work_dir / tag / "serving.log")
            print(f"  {start} start: serving on {url}, its live dashboard (CTR per policy, "
                  f"the learning curve, freshness, the job's events/s and dead letters) on "
                  f"{url}/dashboard", flush=True)
            stream = HttpStreamLinUCB(url, product_ids)
        else:
            rec = Recommender.from_settings(settings, seed=opts.seed)
            stream = StreamLinUCB(rec, product_ids)
        policies: list[SimPolicy] = [stream, instant, RandomPolicy(len(products), opts.seed),
                                     OraclePolicy(world.shop)]
        visits = make_visits(opts.visits, opts.seed, world.users, settings.model.top_k, opts.dist)
        # disable=None: a bar on a terminal, nothing in a CI log
        with tqdm(total=len(visits), desc=f"{start} start", unit="visit",
                  disable=None if opts.progress else True) as bar:
            outcomes = simulate(visits, policies, world.shop, rate=opts.rate,
                                progress=bar.update)
        if rec is not None:
            rec.events.close(10)  # flush what serving logged before counting what was learned
        if server is not None:
            server.stop()  # its shutdown flushes the event log
        clicks = int(np.sum(np.asarray(outcomes["linucb_stream"].clicked) >= 0))
        expected_n = hist_n + opts.visits * settings.model.top_k
        n, learned_clicks = wait_learned(store, settings.model.dim, expected_n,
                                         timeout_s=30 + settings.job.reward_window_s)
        facts.update(stream_clicks=clicks, expected_observations=expected_n,
                     learned_observations=n, learned_clicks=learned_clicks - hist_clicks,
                     seconds=round(time.monotonic() - t0, 1))
        return outcomes, facts
    finally:
        if rec is not None:
            rec.close(5)
        if server is not None:
            server.stop()
        job.stop()


def run_loop(base: Settings, opts: LoopOptions) -> dict[str, object]:
    """Every start, then the report: results/simulate.json, results/simulate.png and the
    table (returned under ``"table"``, for the caller to show)."""
    world = LiveWorld.load(opts.oracle)
    runs: dict[str, dict[str, Outcome]] = {}
    facts: dict[str, dict[str, object]] = {}
    for start in opts.starts:
        runs[start], facts[start] = run_start(start, base, world, opts)
        log.info("%s start: %s", start, facts[start])
    summary = report.summarize(runs, len(world.shop.products))
    for start in summary:
        summary[start]["facts"] = facts[start]
    paths = [report.write_json(summary, opts.results_dir / "simulate.json"),
             report.plot(runs, opts.results_dir / "simulate.png")]
    return {"summary": summary, "table": report.table(summary), "paths": paths}
