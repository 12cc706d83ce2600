"""The closed loop, end to end: the real job learns from what serving showed and the oracle
clicked, while reference policies run on the same visits.

For each start (``bootstrapped`` from the historical log, or ``cold``) it gives the job a
fresh world of its own (topics and Redis prefix with a run tag, a new checkpoint folder),
starts ``python -m flink_job run`` as a subprocess, waits until the pipeline is live, runs the
visits through serving (in-process library, or ``--via http`` against ``python -m serving``)
and the reference policies, then checks that every click reached the job and stops it.
The producer never imports flink_job: the job is a process, reached through Kafka and Redis.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contract.config import Settings
from contract.features import FeatureSpace, Product, User
from contract.store import ParamStore, connect
from producer.context import REFERENCE, ContextDistribution
from producer.oracle import Oracle
from producer.simulate import (
    HttpStreamLinUCB,
    InstantLinUCB,
    OraclePolicy,
    Outcome,
    RandomPolicy,
    SimPolicy,
    StreamLinUCB,
    World,
    make_visits,
    simulate,
)

log = logging.getLogger(__name__)
# Simulated users click within milliseconds of the answer: a 1 s reward window loses no click.
LOOP_REWARD_WINDOW_S = 1.0
GENDER_COLUMNS = (3, 4)  # x's one-hot gender: exactly one is 1, so b[3] + b[4] counts rewards


class LoopError(RuntimeError):
    """The loop could not run (job did not start, stack missing...)."""


@dataclass(frozen=True)
class LoopOptions:
    visits: int = 5000
    rate: float = 50.0  # visits per second
    seed: int = 1237
    via: str = "inprocess"
    history: Path | None = None  # JSON lines for the bootstrapped start
    work_dir: Path = Path("var/loop")
    dist: ContextDistribution = REFERENCE
    ready_timeout_s: float = 120.0


def run_settings(base: Settings, tag: str, work_dir: Path) -> Settings:
    """The settings of one run: its own topics, Redis prefix and checkpoint folder, and the
    loop's reward window."""
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
    fields.update(reward_window_s=LOOP_REWARD_WINDOW_S,
                  topic_impressions=f"impressions-{tag}", topic_clicks=f"clicks-{tag}",
                  topic_dead_letter=f"dead-letter-{tag}", redis_prefix=f"{base.redis_prefix}-{tag}",
                  checkpoint_dir=str((work_dir / tag / "checkpoints").resolve()))
    return Settings(**fields)


def child_env(settings: Settings) -> dict[str, str]:
    """This process's environment with the run's RTREC_* settings in place of ours."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("RTREC_")},
            **settings.to_env()}


class ChildProcess:
    """``python -m <module> <args>`` with the run's settings, in its own process group, logging
    to a file: how the loop runs the job (``flink_job run``) and, with ``--via http``, serving."""

    def __init__(self, module: str, args: Sequence[str], settings: Settings,
                 log_path: Path) -> None:
        self.cmd = [sys.executable, "-m", module, *args]
        self.settings = settings
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = child_env(self.settings)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(self.cmd, env=env, stdout=logf,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        log.info("%s started (pid %d, log %s)", " ".join(self.cmd[2:4]), self.proc.pid,
                 self.log_path)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def start_http_serving(settings: Settings, log_path: Path,
                       timeout_s: float = 60.0) -> tuple[ChildProcess, str]:
    """``python -m serving`` on a free loopback port; returns it and its base URL once
    /healthz answers."""
    import httpx

    from devstack.stack import free_port

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


def wait_live(settings: Settings, job: ChildProcess, timeout_s: float) -> float:
    """Send one malformed probe record and wait for it in the dead-letter topic: proof that
    the job consumes and produces, without touching any model state. Returns the seconds."""
    from confluent_kafka import Consumer, Producer

    t0 = time.monotonic()
    probe = f"probe-{uuid.uuid4().hex}".encode()
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": probe.decode(),
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([settings.topic_dead_letter])
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    producer.produce(settings.topic_impressions, b'{"liveness-probe": "' + probe + b'"}')
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


def wait_learned(store: ParamStore, dim: int, expected_n: int, timeout_s: float) -> tuple[int, int]:
    """Wait until the job has published ``expected_n`` observations (or the timeout)."""
    deadline = time.monotonic() + timeout_s
    totals = (0, 0)
    while time.monotonic() < deadline:
        totals = learned_totals(store, dim)
        if totals[0] >= expected_n:
            break
        time.sleep(0.5)
    return totals


def train_instant_on_history(policy: InstantLinUCB, path: Path,
                             index: dict[str, int]) -> tuple[int, int]:
    """Give the in-process learner the same history the job bootstraps from (same rewards);
    returns the history's (observations, clicks)."""
    import json

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


def run_start(start: str, base: Settings, users: Sequence[User], products: Sequence[Product],
              features: FeatureSpace, oracle: Oracle, opts: LoopOptions,
              progress: bool = True) -> tuple[dict[str, Outcome], dict[str, object]]:
    """One start (bootstrapped or cold) of the closed loop. Returns outcomes and facts."""
    from serving.recommender import Recommender  # the app side of the loop

    tag = f"{start[:4]}{uuid.uuid4().hex[:6]}"
    settings = run_settings(base, tag, opts.work_dir)
    from devstack.stack import Stack

    Stack(settings).create_topics()
    store = ParamStore(connect(settings.redis_host, settings.redis_port, settings.redis_password,
                               settings.redis_db, timeout_s=2), prefix=settings.redis_prefix)
    product_ids = [p.product_id for p in products]
    index = {p: i for i, p in enumerate(product_ids)}
    instant = InstantLinUCB(len(products), settings.dim, settings.alpha, settings.l2)
    facts: dict[str, object] = {"run_tag": tag}
    job = ChildProcess("flink_job", ["run"], settings, opts.work_dir / tag / "job.log")
    server: ChildProcess | None = None
    t0 = time.monotonic()
    job.start()
    rec = None
    try:
        facts["job_live_s"] = round(wait_live(settings, job, opts.ready_timeout_s), 1)
        hist_n = hist_clicks = 0
        if start == "bootstrapped":
            if opts.history is None or not opts.history.is_file():
                raise LoopError("bootstrapped start needs the historical log: run "
                                "`python -m producer prepare-data` first")
            subprocess.run([sys.executable, "-m", "flink_job", "bootstrap", str(opts.history)],
                           env=child_env(settings), check=True, capture_output=True)
            hist_n, hist_clicks = train_instant_on_history(instant, opts.history, index)
            got = wait_learned(store, settings.dim, hist_n,
                               timeout_s=opts.ready_timeout_s + settings.reward_window_s)
            facts["bootstrap_learned"] = got[0]
            log.info("job learned %d of %d historical impressions", got[0], hist_n)
        stream: StreamLinUCB
        if opts.via == "http":
            server, url = start_http_serving(settings, opts.work_dir / tag / "serving.log")
            stream = HttpStreamLinUCB(url, product_ids)
        else:
            rec = Recommender.from_settings(settings, seed=opts.seed)
            stream = StreamLinUCB(rec, product_ids)
        world = World(products, features, oracle)
        policies: list[SimPolicy] = [stream, instant, RandomPolicy(len(products), opts.seed),
                                     OraclePolicy(world)]
        visits = make_visits(opts.visits, opts.seed, users, settings.top_k, opts.dist)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(visits), desc=f"{start} start", unit="visit")
        outcomes = simulate(visits, policies, world, rate=opts.rate,
                            progress=bar.update if bar else None)
        if bar:
            bar.close()
        if rec is not None:
            rec.events.close(10)  # flush what serving logged before counting what was learned
        if server is not None:
            server.stop()  # its shutdown flushes the event log
        clicks = int(np.sum(np.asarray(outcomes["linucb_stream"].clicked) >= 0))
        expected_n = hist_n + opts.visits * settings.top_k
        n, learned_clicks = wait_learned(store, settings.dim, expected_n,
                                         timeout_s=30 + settings.reward_window_s)
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


def run_loop(base: Settings, opts: LoopOptions, starts: Sequence[str] = ("bootstrapped", "cold"),
             results_dir: Path = Path("results"), oracle_spec: str = "rules",
             progress: bool = True) -> dict[str, object]:
    """Every start, then the report: terminal table, results/simulate.json, results/simulate.png."""
    from contract.features import load_catalog, load_users
    from producer import report
    from producer.oracle import load_oracle

    features = FeatureSpace.load()
    users, products = load_users(), load_catalog()
    oracle = load_oracle(oracle_spec, features)
    runs: dict[str, dict[str, Outcome]] = {}
    facts: dict[str, dict[str, object]] = {}
    for start in starts:
        runs[start], facts[start] = run_start(start, base, users, products, features, oracle,
                                              opts, progress=progress)
        log.info("%s start: %s", start, facts[start])
    summary = report.summarize(runs, len(products))
    for start in summary:
        summary[start]["facts"] = facts[start]
    path_json = report.write_json(summary, results_dir / "simulate.json")
    path_png = report.plot(runs, results_dir / "simulate.png")
    print(report.table(summary))
    print(f"wrote {path_json} and {path_png}")
    return summary
