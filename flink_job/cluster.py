"""A standalone Flink cluster from the pip distribution (``make cluster-up|job-submit|
cluster-down``): web UI and REST on 127.0.0.1:<flink_rest_port>.

Everything the cluster writes (config, logs, pid files) lives under
``<stack_dir>/flink``; the pip distribution is only read. Its lib/ is mirrored by symlinks
plus flink-python from opt/ (a second thread-mode job on a session cluster fails without it,
and without ``classloader.parent-first-patterns.additional: pemja.``: tests/flink_job/
test_parallelism.py resubmits one). The Kafka
connector and our deserializer are shipped with each job (pipeline.jars), not put in lib/.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from contract.config import Settings
from flink_job import jars, reporter
from flink_job.job import JOB_NAME

log = logging.getLogger(__name__)
HOME = jars.PYFLINK_HOME


def _dirs(settings: Settings) -> dict[str, Path]:
    root = Path(settings.stack.dir).resolve() / "flink"
    return {"root": root, "conf": root / "conf", "lib": root / "lib", "log": root / "log",
            "pid": root / "pid"}


def pids(settings: Settings) -> list[int]:
    """The process ids in the cluster's pid files (JobManager and TaskManagers this stack
    directory started; some may have exited since)."""
    out: list[int] = []
    for f in _dirs(settings)["pid"].glob("*.pid"):
        out += [int(x) for x in f.read_text().split() if x.strip().isdigit()]
    return out


def descendants(roots: list[int]) -> list[int]:
    """Every live process below ``roots`` (children, theirs, ...), read from /proc: a
    TaskManager's Python workers (process mode: ``pyflink-udf-runner.sh`` and its
    interpreter) are its children, and outlive it when it dies by a signal it cannot catch."""
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:  # gone meanwhile
                continue
            parent[int(d.name)] = int(stat[stat.rindex(")") + 2:].split()[1])
    out: list[int] = []
    frontier = set(roots)
    while frontier:
        kids = [p for p, pp in parent.items() if pp in frontier and p not in out]
        out += kids
        frontier = set(kids)
    return out


def stop_orphans(pids_: list[int], timeout_s: float = 10.0) -> int:
    """SIGTERM ``pids_`` still alive (a dead TaskManager's Python workers), SIGKILL what is
    left after ``timeout_s``; returns how many were alive."""
    def alive(p: int) -> bool:
        try:
            os.kill(p, 0)
        except OSError:
            return False
        return True

    live = [p for p in pids_ if alive(p)]
    for p in live:
        with contextlib.suppress(OSError):
            os.kill(p, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while any(alive(p) for p in live) and time.monotonic() < deadline:
        time.sleep(0.1)
    for p in live:
        with contextlib.suppress(OSError):
            os.kill(p, signal.SIGKILL)
    return len(live)


def _env(settings: Settings) -> dict[str, str]:
    d = _dirs(settings)
    env = dict(os.environ)
    env.update(settings.to_env())
    env.update({"FLINK_HOME": str(HOME), "FLINK_CONF_DIR": str(d["conf"]),
                "FLINK_LIB_DIR": str(d["lib"]), "FLINK_LOG_DIR": str(d["log"]),
                "PYFLINK_CLIENT_EXECUTABLE": sys.executable,
                "PYTHONPATH": str(jars.ROOT)})
    reporter.plugins_env(env, mini_cluster=False)  # the job's Prometheus reporter
    return env


def _rpc_port(conf_file: Path) -> int:
    """The JobManager's RPC port: the one this folder's cluster already uses, else a free one
    (Flink's fixed default, 6123, would collide with any other cluster on this host)."""
    if conf_file.is_file():
        for line in conf_file.read_text().splitlines():
            if line.startswith("jobmanager.rpc.port:"):
                return int(json.loads(line.split(":", 1)[1].strip()))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prepare(settings: Settings, taskmanagers: int = 1, slots: int | None = None
            ) -> dict[str, Path]:
    """Write the cluster's config.yaml and mirror lib/ (idempotent); ``taskmanagers`` is how
    many ``start-cluster.sh`` starts on this host (more than the job needs = spares that
    Flink fails over to); ``slots`` per TaskManager (default: max(2, parallelism); 1 puts
    each subtask of a parallel job in a TaskManager of its own, bench/bench_scale.py)."""
    d = _dirs(settings)
    rpc_port = _rpc_port(d["conf"] / "config.yaml")
    for p in d.values():
        p.mkdir(parents=True, exist_ok=True)
    wanted = [*sorted((HOME / "lib").glob("*.jar")),
              *sorted((HOME / "opt").glob("flink-python-*.jar"))]
    for jar in wanted:
        link = d["lib"] / jar.name
        if not link.exists():
            link.symlink_to(jar)
    for name in ("log4j.properties", "log4j-cli.properties", "log4j-console.properties",
                 "logback.xml"):
        src = HOME / "conf" / name
        if src.exists():
            (d["conf"] / name).write_bytes(src.read_bytes())
    (d["conf"] / "workers").write_text("localhost\n" * max(1, taskmanagers))
    (d["conf"] / "masters").write_text(f"localhost:{settings.stack.flink_rest_port}\n")
    conf = {
        "jobmanager.rpc.address": "localhost",
        "jobmanager.rpc.port": str(rpc_port),
        "jobmanager.bind-host": "127.0.0.1",
        "taskmanager.bind-host": "127.0.0.1",
        "taskmanager.host": "localhost",
        "rest.address": "127.0.0.1",
        "rest.bind-address": "127.0.0.1",
        "rest.port": str(settings.stack.flink_rest_port),
        "jobmanager.memory.process.size": "1024m",
        "taskmanager.memory.process.size": "2048m",
        "taskmanager.numberOfTaskSlots": str(slots or max(2, settings.job.parallelism)),
        "parallelism.default": str(settings.job.parallelism),
        "classloader.parent-first-patterns.additional": "pemja.",
        # a lost TaskManager is noticed within ~1 s, not the default 20-50 s: the job fails
        # over to a spare at once (bench_recovery measures kill -> first new write)
        "heartbeat.interval": "500",
        "heartbeat.timeout": "3000",
        # a loaded host (load 50 on 2 cores, seen here) starts the RPC system in more than
        # Pekko's 10 s: the JVMs then exit with "Could not create actor system"; Flink's own
        # option, and Pekko's classic-remoting key as a JVM property (env.java.opts.all below)
        "pekko.startup-timeout": "180 s",
        # the web UI's metrics are at most 2 s old, not 10 s (the fetcher's default)
        "metrics.fetcher.update-interval": "2 s",
        "env.pid.dir": str(d["pid"]),
        "python.executable": sys.executable,
        "python.client.executable": sys.executable,
    }
    conf.update(_java_opts())
    conf["env.java.opts.all"] = (conf.get("env.java.opts.all", "") +
                                 " -Dpekko.remote.classic.startup-timeout=180s").strip()
    conf.update(reporter.config(settings))  # a /metrics endpoint per JVM on 127.0.0.1
    (d["conf"] / "config.yaml").write_text(
        "".join(f"{k}: {json.dumps(v)}\n" for k, v in conf.items()))
    return d


def _java_opts() -> dict[str, str]:
    """The distribution's JVM options (JDK 17 needs its --add-opens), flattened."""
    import yaml

    def flat(node: object, prefix: str = "") -> dict[str, str]:
        if isinstance(node, dict):
            out: dict[str, str] = {}
            for k, v in node.items():
                out.update(flat(v, f"{prefix}{k}."))
            return out
        return {prefix[:-1]: str(node)}

    dist = flat(yaml.safe_load((HOME / "conf" / "config.yaml").read_text()) or {})
    return {k: v for k, v in dist.items() if k.startswith("env.java.")}


def rest(settings: Settings, path: str, timeout_s: float = 2.0) -> dict:
    url = f"http://127.0.0.1:{settings.stack.flink_rest_port}{path}"
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:
        return json.loads(resp.read())


def up(settings: Settings, timeout_s: float = 300.0, taskmanagers: int = 1,
       slots: int | None = None) -> None:
    try:
        rest(settings, "/overview")
        log.info("a Flink cluster already answers on 127.0.0.1:%d", settings.stack.flink_rest_port)
        return
    except OSError:
        pass
    prepare(settings, taskmanagers, slots)
    subprocess.run([str(HOME / "bin" / "start-cluster.sh")], env=_env(settings), check=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            # a task manager registers before it reports its slots: wait for both
            overview = rest(settings, "/overview")
            if overview.get("taskmanagers", 0) >= taskmanagers and \
                    overview.get("slots-total", 0) >= taskmanagers:
                log.info("Flink web UI: http://127.0.0.1:%d", settings.stack.flink_rest_port)
                return
        except OSError:
            pass
        time.sleep(1.0)
    raise RuntimeError(f"the cluster did not come up in {timeout_s:.0f}s; logs in "
                       f"{_dirs(settings)['log']}")


def start_taskmanager(settings: Settings, timeout_s: float = 60.0) -> None:
    """One more TaskManager on this host (a spare, or a replacement after a loss)."""
    def ids() -> set[str]:
        return {tm["id"] for tm in rest(settings, "/taskmanagers")["taskmanagers"]}

    before = ids()
    subprocess.run([str(HOME / "bin" / "taskmanager.sh"), "start"], env=_env(settings),
                   check=True)
    deadline = time.monotonic() + timeout_s
    while not ids() - before:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no new TaskManager registered in {timeout_s:.0f}s")
        time.sleep(0.5)


def submit(settings: Settings, products: str | None = None, restore: str | None = None,
           generation: int | None = None, skip_before: str | None = None) -> int:
    """``flink run -d`` the job (the client is ``python -m flink_job.submit``); ``generation``
    and ``skip_before`` (a JSON file) after a rollback (:mod:`flink_job.snapshots`).

    Always in process mode: a TaskManager lives longer than a job, and a second job (a
    snapshot's resubmission, a rollback, the demo's next start) deployed in thread mode into a
    TaskManager whose embedded interpreter ran the first one crashed the JVM (SIGSEGV in
    libpython's take_gil, seen in tests/flink_job/test_rollback.py). docs/JOB.md."""
    if settings.job.python_mode != "process":
        log.info("the cluster runs the job's Python in process mode (thread mode cannot be "
                 "redeployed into a running TaskManager)")
        settings = settings.override(RTREC_PYTHON_MODE="process")
    prepare(settings)
    cmd = [str(HOME / "bin" / "flink"), "run", "-d", "-m",
           f"127.0.0.1:{settings.stack.flink_rest_port}"]
    if restore:
        cmd += ["-s", restore]
    cmd += ["-pym", "flink_job.submit", "-pyexec", sys.executable,
            "-pyclientexec", sys.executable]
    if products:
        cmd += ["--products", products]
    if generation is not None:
        cmd += ["--generation", str(generation)]
    if skip_before:
        cmd += ["--skip-before", skip_before]
    log.info("submitting %s: %s", JOB_NAME, " ".join(cmd))
    return subprocess.run(cmd, env=_env(settings), cwd=jars.ROOT).returncode


def _send(settings: Settings, method: str, path: str, body: dict | None = None,
          timeout_s: float = 10.0) -> dict:
    url = f"http://127.0.0.1:{settings.stack.flink_rest_port}{path}"
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        raw = resp.read()
    return json.loads(raw) if raw.strip() else {}


ACTIVE = ("CREATED", "INITIALIZING", "RUNNING", "RESTARTING", "RECONCILING")


def active_job(settings: Settings, name: str = JOB_NAME) -> str | None:
    """The id of the one job named ``name`` that is not finished, failed or cancelled (None:
    no such job); more than one is an error (say which with --job)."""
    jobs = [j for j in rest(settings, "/jobs/overview", timeout_s=10)["jobs"]
            if j["name"] == name and j["state"] in ACTIVE]
    if len(jobs) > 1:
        raise RuntimeError(f"{len(jobs)} jobs named {name} run on 127.0.0.1:"
                           f"{settings.stack.flink_rest_port}: "
                           f"{', '.join(j['jid'] for j in jobs)}")
    return jobs[0]["jid"] if jobs else None


def wait_state(settings: Settings, jid: str, states: tuple[str, ...],
               timeout_s: float = 60.0) -> str:
    """Wait until the job is in one of ``states``; returns it."""
    deadline = time.monotonic() + timeout_s
    state = "unknown"
    while True:
        try:
            state = rest(settings, f"/jobs/{jid}", timeout_s=10)["state"]
        except OSError as exc:  # a slow answer on a loaded host: ask again until the deadline
            log.warning("job %s state: %s", jid, exc)
        if state in states:
            return state
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {jid} is {state}, not {'/'.join(states)}, after "
                               f"{timeout_s:.0f}s")
        time.sleep(0.1)


def cancel(settings: Settings, jid: str, timeout_s: float = 60.0) -> None:
    """Cancel the job and wait until it is CANCELED (its tasks write nothing more)."""
    _send(settings, "PATCH", f"/jobs/{jid}?mode=cancel")
    wait_state(settings, jid, ("CANCELED", "FAILED", "FINISHED"), timeout_s)


def stop_with_savepoint(settings: Settings, jid: str, target: Path,
                        timeout_s: float = 120.0) -> str:
    """Stop the job with a savepoint in ``target`` (no drain: no end-of-time watermark, so
    open reward windows stay open in the savepoint) and wait until it is FINISHED: every
    operator closed, the Redis writer flushed. Returns the savepoint's path."""
    trigger = _send(settings, "POST", f"/jobs/{jid}/stop",
                    {"targetDirectory": str(target.resolve()), "drain": False})["request-id"]
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            status = rest(settings, f"/jobs/{jid}/savepoints/{trigger}", timeout_s=10)
        except OSError as exc:  # a slow answer on a loaded host: ask again until the deadline
            log.warning("savepoint of %s: %s", jid, exc)
            status = {"status": {"id": "IN_PROGRESS"}}
        if status["status"]["id"] == "COMPLETED":
            op = status.get("operation") or {}
            if "failure-cause" in op:
                raise RuntimeError(f"stop-with-savepoint of {jid} failed: "
                                   f"{op['failure-cause'].get('stack-trace', '')[:2000]}")
            location = str(op["location"])
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"no savepoint of {jid} within {timeout_s:.0f}s")
        time.sleep(0.2)
    wait_state(settings, jid, ("FINISHED",), timeout_s)
    return location.removeprefix("file:")


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, exited but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def jvms(settings: Settings) -> list[int]:
    """This cluster's running JVMs: the pid files' entries whose command line names its log
    folder. An entry of a JVM that died unannounced (SIGKILL) stays in its pid file, and that
    pid may be another process's by now."""
    marker = str(_dirs(settings)["log"]).encode()
    out = []
    for p in pids(settings):
        try:
            cmdline = Path(f"/proc/{p}/cmdline").read_bytes()
        except OSError:
            continue
        if marker in cmdline and _running(p):
            out.append(p)
    return out


def _still_running(pids_: list[int], timeout_s: float) -> list[int]:
    """``pids_`` still running once all have exited or ``timeout_s`` has passed."""
    deadline = time.monotonic() + timeout_s
    while (left := [p for p in pids_ if _running(p)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def down(settings: Settings, timeout_s: float = 30.0) -> list[int]:
    """Stop every TaskManager (spares and replacements too) and the JobManager, and return
    when they are gone: the stop scripts only send SIGTERM, so this waits up to
    ``timeout_s`` for the JVMs to exit and SIGKILLs the ones still there (a ``cluster up``
    right after would otherwise meet them on its ports). Then the Python workers a
    TaskManager left are stopped. Returns the JVMs still running after all that (none
    expected)."""
    prepare(settings)
    env = _env(settings)
    ours = jvms(settings)
    workers = descendants(ours)
    subprocess.run([str(HOME / "bin" / "taskmanager.sh"), "stop-all"], env=env, check=False)
    subprocess.run([str(HOME / "bin" / "jobmanager.sh"), "stop-all"], env=env, check=False)
    for p in _still_running(ours, timeout_s):
        log.warning("Flink JVM %d still running %g s after the stop: killed", p, timeout_s)
        with contextlib.suppress(OSError):
            os.kill(p, signal.SIGKILL)
    left = stop_orphans(workers)
    if left:
        log.info("stopped %d Python worker process(es) the cluster left behind", left)
    return _still_running(ours, 5.0)


def status(settings: Settings) -> int:
    try:
        overview = rest(settings, "/overview")
        jobs = rest(settings, "/jobs/overview").get("jobs", [])
    except OSError as exc:
        log.info("no cluster on 127.0.0.1:%d (%s)", settings.stack.flink_rest_port, exc)
        return 3
    log.info("cluster: %s", json.dumps(overview))
    for j in jobs:
        log.info("job %s %s %s", j.get("jid"), j.get("name"), j.get("state"))
    return 0


def main(settings: Settings, action: str, products: str | None = None,
         restore: str | None = None) -> int:
    if action == "up":
        up(settings)
        return 0
    if action == "submit":
        return submit(settings, products, restore)
    if action == "down":
        left = down(settings)
        if left:
            log.error("Flink JVM(s) %s still running after SIGKILL", left)
        return 1 if left else 0
    return status(settings)
