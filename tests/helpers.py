"""The helpers every test module shares, in one place so they behave the same everywhere:
the product ids, a parameter store, a settings object for a Redis of the test's own, waiting
for a condition, reading a Kafka topic until it is quiet, the dead-letter topic, whether a
process is alive, the job's metrics (through Flink's REST API, or live from its Prometheus
endpoint), a scraper that keeps that endpoint busy, and where the shared standalone cluster
lives."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from contract.config import Settings
from contract.store import ParamStore

log = logging.getLogger(__name__)

# The catalogue of the job's tests (tests/flink_job/conftest.py writes it to products_file).
PRODUCTS = [f"p{i:03d}" for i in range(200)]


def store(settings: Settings, timeout_s: float = 2.0) -> ParamStore:
    """The parameter store of ``settings`` (its Redis and prefix)."""
    return ParamStore.from_settings(settings, timeout_s=timeout_s)


def redis_settings(port: int, **env: object) -> Settings:
    """Default settings on a Redis of the test's own (prefix ``t``), plus ``env``."""
    return Settings.from_env({"RTREC_REDIS_PORT": port, "RTREC_REDIS_PREFIX": "t", **env})


def wait_for(predicate: Callable[[], object], timeout_s: float = 5.0,
             what: str | Callable[[], object] = "the condition", job: Any = None,
             every_s: float = 0.05) -> bool:
    """Poll until ``predicate()`` is true and return True; on timeout raise AssertionError
    naming ``what`` (a callable: what it returns then, e.g. the state that was wrong). With
    ``job`` (an endtoend ChildProcess), fail at once, with its log tail, if it exits
    meanwhile. A Redis timeout or connection error of one poll is "not yet" (on a loaded
    machine one read of a healthy Redis can exceed its timeout); still failing at the deadline,
    it is named in the AssertionError."""
    import redis

    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while True:
        try:
            if predicate():
                return True
        except (redis.exceptions.TimeoutError, redis.exceptions.ConnectionError) as exc:
            last_error = exc
        if job is not None and not job.alive():
            said = what() if callable(what) else what
            raise AssertionError(f"the job exited while waiting for {said}; log tail:\n"
                                 f"{job.log_tail()}")
        if time.monotonic() >= deadline:
            said = what() if callable(what) else what
            tail = f" (the last poll: {last_error!r})" if last_error is not None else ""
            raise AssertionError(f"timed out after {timeout_s:g}s waiting for {said}{tail}")
        time.sleep(every_s)


def read_topics(settings: Settings, topics: Iterable[str], at_least: int = 0,
                quiet_s: float = 2.0, timeout_s: float = 60.0) -> list:
    """Every message of ``topics`` from the beginning (confluent_kafka Messages): read until
    at least ``at_least`` arrived (or ``timeout_s``), then on until nothing more comes for
    ``quiet_s``, so a test that asserts exactly n also sees an (n+1)th."""
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": settings.kafka.bootstrap,
                         "group.id": f"test-reader-{uuid.uuid4().hex[:8]}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe(list(topics))
    out: list = []
    deadline = time.monotonic() + timeout_s
    last = time.monotonic()
    try:
        while True:
            now = time.monotonic()
            if len(out) >= at_least and now - last >= quiet_s:
                return out
            if len(out) < at_least and now >= deadline:
                return out
            for msg in consumer.consume(1000, timeout=0.2):
                assert msg.error() is None, msg.error()
                out.append(msg)
                last = time.monotonic()
    finally:
        consumer.close()


class DeadLetters:
    """The dead-letter topic as the job writes it: envelopes (dicts) polled from the start."""

    def __init__(self, settings: Settings) -> None:
        from confluent_kafka import Consumer

        self.consumer = Consumer({"bootstrap.servers": settings.kafka.bootstrap,
                                  "group.id": f"dl-reader-{uuid.uuid4().hex[:8]}",
                                  "auto.offset.reset": "earliest"})
        self.consumer.subscribe([settings.kafka.topic_dead_letter])
        self.items: list[dict] = []

    def poll(self) -> list[dict]:
        """Everything so far (what arrived since the last call is appended)."""
        for msg in self.consumer.consume(1000, timeout=0.1):
            assert msg.error() is None, msg.error()
            self.items.append(json.loads(msg.value()))
        return self.items

    def until_quiet(self, at_least: int, timeout_s: float, quiet_s: float = 2.0,
                    job: Any = None) -> list[dict]:
        """Poll until ``at_least`` arrived, then until nothing more comes for ``quiet_s``."""
        wait_for(lambda: len(self.poll()) >= at_least, timeout_s,
                 f"{at_least} dead letters (got {len(self.items)})", job)
        n, last = len(self.items), time.monotonic()
        while time.monotonic() - last < quiet_s:
            if len(self.poll()) != n:
                n, last = len(self.items), time.monotonic()
        return self.items

    def close(self) -> None:
        self.consumer.close()


def impression_json(rid: str, ts: int, products: tuple[str, ...], x: Iterable[float],
                    **over: object) -> bytes:
    """An impression's JSON (``over`` replaces fields, valid or not)."""
    from contract.events import Impression

    d = Impression(request_id=rid, user_id=1, ts_ms=ts, x=tuple(float(v) for v in x),
                   products=products, scores=tuple(0.0 for _ in products), policy="linucb",
                   model_version=0).to_dict()
    d.update(over)
    return json.dumps(d).encode()


def wait_learned(s: Settings, want: dict[str, int], job: Any, timeout_s: float) -> None:
    """Wait until the job published every product at its version in ``want`` (and no other
    product); on timeout, say which products differ."""
    st = store(s)
    try:
        wait_for(lambda: st.versions() == want, timeout_s,
                 "every product at its final version", job, every_s=0.2)
    except AssertionError as exc:  # say which products, so a failure can be read
        got = st.versions()
        diff = {p: (got.get(p), v) for p, v in want.items() if got.get(p) != v}
        extra = sorted(set(got) - set(want))
        raise AssertionError(f"{exc}; (got, want) for {len(diff)} products: "
                             f"{dict(list(diff.items())[:10])}; unexpected: {extra[:10]}") from exc


def assert_parity(s: Settings, expected: dict[str, tuple[int, Any, Any]]) -> dict:
    """Every product's published n, A^-1, b equal ``expected`` (batch ridge) within 1e-9, and
    no other product is published. Returns the published parameters."""
    import numpy as np

    params = store(s).read_all(s.model.dim)
    assert set(params) == set(expected)
    for pid, (n, A_inv, b) in expected.items():
        st = params[pid].state
        assert st.n == n, pid
        np.testing.assert_allclose(st.A_inv, A_inv, rtol=0, atol=1e-9, err_msg=pid)
        np.testing.assert_allclose(st.b, b, rtol=0, atol=1e-9, err_msg=pid)
    return params


def prom_value(text: str, name: str, **labels: str) -> float:
    """The value of sample ``name{labels}`` in a Prometheus text exposition (fails if absent)."""
    import re

    label = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^{re.escape(name)}" + (rf"\{{{re.escape(label)}\}}" if label else "") + r" (\S+)$"
    m = re.search(pattern, text, re.M)
    assert m, f"{name}{{{label}}} not in the metrics"
    return float(m.group(1))


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, exited but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def listening_ports(pids: Iterable[int]) -> set[int]:
    """The TCP ports the processes ``pids`` listen on (from /proc: their socket inodes, and
    the kernel's table of listening sockets)."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:  # state LISTEN, our inode
                ports.add(int(f[1].rsplit(":", 1)[1], 16))
    return ports


def process_group(pgid: int) -> list[int]:
    """Every live pid of process group ``pgid``."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(name))
    return out


def flink_rest_port(job: Any, timeout_s: float = 60.0) -> int:
    """The REST port of the Flink mini-cluster a ``python -m flink_job run`` child started
    (Flink picks a free one): the port of its process group that answers ``/overview``, asked
    again until ``timeout_s`` (on a loaded machine one answer can take over its 1 s; a single
    look failed test_ope_state once in a clean-clone run)."""
    import http.client

    deadline = time.monotonic() + timeout_s
    while True:
        assert job.proc is not None and job.alive(), "the job is not running"
        for port in sorted(listening_ports(process_group(job.proc.pid))):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/overview",
                                            timeout=1) as r:
                    if "flink-version" in json.loads(r.read()):
                        return port
            except (OSError, ValueError, http.client.HTTPException):  # not HTTP (py4j, RPC)
                continue
        if time.monotonic() > deadline:
            raise AssertionError("no Flink REST endpoint among the job's listening ports")
        time.sleep(0.5)


def rest_get(port: int, path: str) -> Any:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return json.loads(r.read())


# the job's own metrics (docs/JOB.md "Metrics"): the operator metric groups and their names
JOB_OPERATORS = ("source-batch", "validate", "reward-join", "micro-batch", "learn-linucb",
                 "publish-redis", "parse-deletions", "user-index", "ope-evaluate")
FLINK_BUILTIN = ("numRecords", "numBytes", "current", "isBackPressured", "Watermark")


def job_metrics(port: int, job_name: str | None = None) -> dict[str, float]:
    """The job's own metrics through Flink's REST API, summed over subtasks, by
    ``<operator>.<metric>`` (``validate.dead_letters_unparseable``, ...). The REST API caches
    values for up to ``metrics.fetcher.update-interval`` (10 s): poll until they settle."""
    from flink_job.job import JOB_NAME

    jobs = [j for j in rest_get(port, "/jobs/overview")["jobs"]
            if j["name"] == (job_name or JOB_NAME) and j["state"] == "RUNNING"]
    assert len(jobs) == 1, jobs
    jid = jobs[0]["jid"]
    out: dict[str, float] = {}
    for vertex in rest_get(port, f"/jobs/{jid}")["vertices"]:
        base = f"/jobs/{jid}/vertices/{vertex['id']}/metrics"
        ids = [m["id"] for m in rest_get(port, base)
               if m["id"].split(".")[1] in JOB_OPERATORS
               and not m["id"].split(".")[-1].startswith(FLINK_BUILTIN)]
        if not ids:
            continue
        for m in rest_get(port, f"{base}?get={','.join(ids)}"):
            name = m["id"].split(".", 1)[1]  # without the subtask index
            out[name] = out.get(name, 0) + float(m["value"])
    return out


def metrics_ports(job: Any) -> list[int]:
    """The ports of ``RTREC_METRICS_PORTS`` the job's process group listens on: its
    Prometheus endpoints."""
    from contract.config import port_range

    ours = listening_ports(process_group(job.proc.pid))
    return [p for p in port_range(job.settings.job.metrics_ports) if p in ours]


def live_metrics(job: Any) -> dict[str, float]:
    """The job's own metrics as ``job_metrics`` names them, read from the Prometheus endpoint
    of the mini-cluster a ``python -m flink_job run`` child started (flink_job/reporter.py):
    the reporter reads each counter when scraped, where the REST API's value may be up to 10 s
    old. In thread mode a Python tally reaches its counter up to ``PUSH_INTERVAL_S`` later
    (flink_job/gauges.py), so one scrape may show a Java counter already past an event and a
    Python one not yet: compare them with :func:`settled_metrics`. Empty while no endpoint of
    the job's process group answers."""
    from serving.dashboard import job_metrics as scrape

    assert job.proc is not None and job.alive(), "the job is not running"
    ports = metrics_ports(job)
    got = scrape(",".join(map(str, ports))) if ports else None
    by_label = {op.replace("-", "_"): op for op in JOB_OPERATORS}
    out: dict[str, float] = {}
    for key, value in (got or {}).items():
        op, _, name = key.partition(".")
        if op in by_label and not name.startswith(FLINK_BUILTIN):
            out[f"{by_label[op]}.{name}"] = value
    return out


def settled_metrics(job: Any, quiet_s: float = 0.5, timeout_s: float = 15.0) -> dict[str, float]:
    """:func:`live_metrics` once two reads ``quiet_s`` apart (several of flink_job/gauges.py's
    push intervals) agree: the values of a job with nothing left to do, each operator's tally
    pushed. Fails after ``timeout_s`` of a job that keeps changing."""
    deadline = time.monotonic() + timeout_s
    last = live_metrics(job)
    while True:
        time.sleep(quiet_s)
        now = live_metrics(job)
        if now == last:
            return now
        assert time.monotonic() < deadline, f"the job's metrics kept changing: {last} -> {now}"
        last = now


class Scraper:
    """Scrape the job's Prometheus endpoint again and again from a thread of its own while a
    test runs, as Prometheus, the dashboard and the web UI would together. In thread mode a
    gauge that ran Python on the reporter's thread crashed the JVM within seconds of this
    (flink_job/gauges.py). ``scrapes`` counts the answers."""

    def __init__(self, job: Any, threads: int = 3, pause_s: float = 0.0) -> None:
        self.job = job
        self.pause_s = pause_s
        self.scrapes = 0
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, name=f"scraper-{i}", daemon=True)
                        for i in range(threads)]

    def _run(self) -> None:
        ports: list[int] = []
        while not self.stopping.is_set():
            if not ports and self.job.alive():
                ports = metrics_ports(self.job)
            for port in ports:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                                timeout=5) as r:
                        r.read()
                    self.scrapes += 1
                except OSError:
                    ports = []  # looked up again
            self.stopping.wait(self.pause_s if ports else 0.5)

    def start(self) -> Scraper:
        for t in self.threads:
            t.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(10)


class SharedCluster:
    """Where one standalone cluster (:mod:`flink_job.cluster`) lives: its REST port and its
    folder (conf, logs, pids). A test puts its own settings on it with :meth:`on` and starts it
    with ``cluster.up`` where it wants the start to overlap its own work (idempotent: the
    second test finds it running). Starting a cluster costs about 40 s here."""

    def __init__(self, root: Path) -> None:
        from devstack.stack import free_port

        self.rest_port = free_port()
        self.dir = root

    def on(self, s: Settings, **over: object) -> Settings:
        """``s`` (a test's topics, prefix, checkpoints), submitted to this cluster."""
        return s.override(RTREC_FLINK_REST_PORT=self.rest_port, RTREC_STACK_DIR=self.dir, **over)

    def settings(self, stack: Any) -> Settings:
        return self.on(stack.settings)

    def stop_jobs(self, stack: Any, timeout_s: float = 60.0) -> None:
        """Cancel every job still running, and wait: the next test finds every slot free."""
        from flink_job import cluster

        s = self.settings(stack)
        try:
            jobs = cluster.rest(s, "/jobs/overview", timeout_s=10)["jobs"]
        except OSError:  # not started, or already down
            return
        for j in jobs:
            if j["state"] in cluster.ACTIVE:
                try:
                    cluster.cancel(s, j["jid"], timeout_s)
                except (OSError, RuntimeError) as exc:
                    log.warning("cancel %s: %s", j["jid"], exc)

    def down(self, stack: Any) -> list[int]:
        """Stop it (``cluster.down``: its JVMs gone, by SIGKILL if need be). Returns the
        processes of its pid files that ran before and still run (none expected): checked
        apart from ``cluster.down``'s own idea of which JVMs are the cluster's."""
        from flink_job import cluster

        s = self.settings(stack)
        running = [p for p in cluster.pids(s) if alive(p)]
        left = cluster.down(s) if running else []
        return sorted({*left, *(p for p in running if alive(p))})


class FakeCounter:
    def __init__(self) -> None:
        self.count = 0

    def inc(self, n: int = 1) -> None:
        self.count += n


class FakeMetricGroup:
    """Enough of a Flink metric group for the job's functions; keeps what they register."""

    def __init__(self) -> None:
        self.counters: dict[str, FakeCounter] = {}
        self.gauges: dict[str, Callable[[], int]] = {}

    def counter(self, name: str) -> FakeCounter:
        return self.counters.setdefault(name, FakeCounter())

    def gauge(self, name: str, fn: Callable[[], int]) -> None:
        self.gauges[name] = fn


class FakeKeyedState:
    """Enough of a Flink ValueState: one value per key, the key set by the test (``key``),
    as Flink sets the current key before each call; reads and writes are counted."""

    def __init__(self) -> None:
        self.key: str | None = None
        self.values: dict[str | None, bytes] = {}
        self.reads = 0
        self.writes = 0

    def value(self) -> bytes | None:
        self.reads += 1
        return self.values.get(self.key)

    def update(self, blob: bytes) -> None:
        self.writes += 1
        self.values[self.key] = blob

    @property
    def blob(self) -> bytes | None:  # the current key's value
        return self.values.get(self.key)


class FakeMapState:
    """Enough of a Flink MapState for one key (the evaluator's); puts and removes counted."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.puts: list[str] = []
        self.removes = 0

    def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    def put(self, key: str, value: bytes) -> None:
        self.puts.append(key)
        self.data[key] = value

    def remove(self, key: str) -> None:
        self.removes += 1
        self.data.pop(key, None)

    def items(self) -> list[tuple[str, bytes]]:
        return list(self.data.items())

    def clear(self) -> None:
        self.data.clear()


class FakeRuntimeContext:
    """Enough of a Flink RuntimeContext for the job's functions' open()."""

    def __init__(self) -> None:
        self.metrics = FakeMetricGroup()
        self.state = FakeKeyedState()
        self.maps: dict[str, FakeMapState] = {}

    def get_metrics_group(self) -> FakeMetricGroup:
        return self.metrics

    def get_state(self, descriptor: object) -> FakeKeyedState:
        return self.state

    def get_map_state(self, descriptor: Any) -> FakeMapState:
        return self.maps.setdefault(descriptor.get_name(), FakeMapState())
