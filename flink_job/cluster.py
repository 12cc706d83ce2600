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

import json
import logging
import os
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


def prepare(settings: Settings, taskmanagers: int = 1) -> dict[str, Path]:
    """Write the cluster's config.yaml and mirror lib/ (idempotent); ``taskmanagers`` is how
    many ``start-cluster.sh`` starts on this host (more than the job needs = spares that
    Flink fails over to)."""
    d = _dirs(settings)
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
        "jobmanager.bind-host": "127.0.0.1",
        "taskmanager.bind-host": "127.0.0.1",
        "taskmanager.host": "localhost",
        "rest.address": "127.0.0.1",
        "rest.bind-address": "127.0.0.1",
        "rest.port": str(settings.stack.flink_rest_port),
        "jobmanager.memory.process.size": "1024m",
        "taskmanager.memory.process.size": "2048m",
        "taskmanager.numberOfTaskSlots": str(max(2, settings.job.parallelism)),
        "parallelism.default": str(settings.job.parallelism),
        "classloader.parent-first-patterns.additional": "pemja.",
        # a lost TaskManager is noticed within ~1 s, not the default 20-50 s: the job fails
        # over to a spare at once (bench_recovery measures kill -> first new write)
        "heartbeat.interval": "500",
        "heartbeat.timeout": "3000",
        "env.pid.dir": str(d["pid"]),
        "python.executable": sys.executable,
        "python.client.executable": sys.executable,
    }
    conf.update(_java_opts())
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


def up(settings: Settings, timeout_s: float = 90.0, taskmanagers: int = 1) -> None:
    try:
        rest(settings, "/overview")
        log.info("a Flink cluster already answers on 127.0.0.1:%d", settings.stack.flink_rest_port)
        return
    except OSError:
        pass
    prepare(settings, taskmanagers)
    subprocess.run([str(HOME / "bin" / "start-cluster.sh")], env=_env(settings), check=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            # a task manager registers before it reports its slots: wait for both
            overview = rest(settings, "/overview")
            if overview.get("taskmanagers", 0) >= taskmanagers and \
                    overview.get("slots-total", 0) >= taskmanagers:
                log.info("Flink web UI: http://127.0.0.1:%d", settings.stack.flink_rest_port)
                warm(settings)
                return
        except OSError:
            pass
        time.sleep(1.0)
    raise RuntimeError(f"the cluster did not come up in {timeout_s:.0f}s; logs in "
                       f"{_dirs(settings)['log']}")


def start_taskmanager(settings: Settings, timeout_s: float = 60.0) -> None:
    """One more TaskManager on this host (a spare, or a replacement after a loss), warmed."""
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
    warm(settings)


def warm(settings: Settings) -> int:
    """Run :mod:`flink_job.warmup` in every free slot, so every TaskManager's embedded Python
    has imported the learner before a failover needs it. Returns the client's exit code."""
    slots = int(rest(settings, "/overview").get("slots-available", 0))
    if slots < 1:
        return 0
    cmd = [str(HOME / "bin" / "flink"), "run", "-m", f"127.0.0.1:{settings.stack.flink_rest_port}",
           "-pym", "flink_job.warmup", "-pyexec", sys.executable,
           "-pyclientexec", sys.executable, "--slots", str(slots)]
    log.info("warming the Python of %d free slot(s)", slots)
    return subprocess.run(cmd, env=_env(settings), cwd=jars.ROOT,
                          stdout=subprocess.DEVNULL).returncode


def submit(settings: Settings, products: str | None = None, restore: str | None = None) -> int:
    """``flink run -d`` the job (the client is ``python -m flink_job.submit``)."""
    prepare(settings)
    cmd = [str(HOME / "bin" / "flink"), "run", "-d", "-m",
           f"127.0.0.1:{settings.stack.flink_rest_port}"]
    if restore:
        cmd += ["-s", restore]
    cmd += ["-pym", "flink_job.submit", "-pyexec", sys.executable,
            "-pyclientexec", sys.executable]
    if products:
        cmd += ["--products", products]
    log.info("submitting %s: %s", JOB_NAME, " ".join(cmd))
    return subprocess.run(cmd, env=_env(settings), cwd=jars.ROOT).returncode


def down(settings: Settings) -> None:
    """Stop every TaskManager (spares and replacements too) and the JobManager."""
    prepare(settings)
    env = _env(settings)
    subprocess.run([str(HOME / "bin" / "taskmanager.sh"), "stop-all"], env=env, check=False)
    subprocess.run([str(HOME / "bin" / "jobmanager.sh"), "stop-all"], env=env, check=False)


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
        down(settings)
        return 0
    return status(settings)
