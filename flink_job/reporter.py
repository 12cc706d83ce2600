"""The job's Prometheus endpoint: Flink's Prometheus reporter bound to 127.0.0.1.

The pip distribution ships ``plugins/metrics-prometheus`` (flink-metrics-prometheus), whose
reporter binds every interface and has no host option. ``monitoring/reporter/`` holds a
two-class variant that binds one address (default 127.0.0.1); :func:`build` compiles it
against the distribution's jars and puts it, with the stock jar it extends, in one plugin
folder under ``jvm/lib/plugins`` (``make install`` runs ``python -m flink_job.reporter``).

Each Flink JVM (the mini-cluster of ``python -m flink_job run``, or the standalone cluster's
JobManager and each TaskManager) takes the first free port of ``RTREC_METRICS_PORTS`` and
serves ``/metrics`` there; docs/OPERATIONS.md lists what it exposes.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from contract.config import Settings
from flink_job.jars import PYFLINK_HOME, ROOT

log = logging.getLogger(__name__)

SOURCE = ROOT / "monitoring" / "reporter"
PLUGINS_DIR = ROOT / "jvm" / "lib" / "plugins"
PLUGIN = PLUGINS_DIR / "metrics-prometheus-loopback"
JAR = PLUGIN / "rtrec-prometheus-loopback.jar"
FACTORY = "org.apache.flink.metrics.prometheus.LoopbackPrometheusReporterFactory"
REPORTER = "prom"
"""The reporter's name in Flink's configuration (``metrics.reporter.prom.*``)."""


def stock_jar() -> Path:
    """flink-metrics-prometheus from the pip distribution's plugins folder."""
    found = sorted((PYFLINK_HOME / "plugins" / "metrics-prometheus").glob(
        "flink-metrics-prometheus-*.jar"))
    if not found:
        raise FileNotFoundError(f"no flink-metrics-prometheus jar under {PYFLINK_HOME}/plugins")
    return found[-1]


def available() -> bool:
    """Whether the plugin is built (the job runs without a reporter when it is not)."""
    return JAR.is_file() and any(PLUGIN.glob("flink-metrics-prometheus-*.jar"))


def config(settings: Settings) -> dict[str, str]:
    """Flink configuration of the reporter: empty when ``RTREC_METRICS_PORTS`` is empty or the
    plugin is not built (logged: the job still runs, without a Prometheus endpoint)."""
    ports = settings.job.metrics_ports.strip()
    if not ports:
        return {}
    if not available():
        log.warning("the job's Prometheus reporter is not built (python -m flink_job.reporter; "
                    "make install): no /metrics endpoint for this run")
        return {}
    prefix = f"metrics.reporter.{REPORTER}"
    return {f"{prefix}.factory.class": FACTORY, f"{prefix}.host": "127.0.0.1",
            f"{prefix}.port": ports}


def plugins_env(env: dict[str, str] | os._Environ[str], mini_cluster: bool) -> None:
    """Make the reporter loadable by the Flink JVMs started with ``env``.

    The standalone cluster's JobManager and TaskManagers load reporters as plugins, from
    ``FLINK_PLUGINS_DIR`` (our plugin folder). The mini-cluster that PyFlink's gateway runs
    (``mini_cluster``) has no plugin manager and finds reporters on its class path only,
    which the gateway extends with ``HADOOP_CLASSPATH`` (pyflink_gateway_server.py): both
    jars go there instead (not for the cluster: the factory would be found twice).
    """
    if not available():
        return
    if not mini_cluster:
        env["FLINK_PLUGINS_DIR"] = str(PLUGINS_DIR)
        return
    jars = [str(p) for p in sorted(PLUGIN.glob("*.jar"))]
    extra = [p for p in env.get("HADOOP_CLASSPATH", "").split(os.pathsep) if p and p not in jars]
    env["HADOOP_CLASSPATH"] = os.pathsep.join([*jars, *extra])


def build() -> Path:
    """Compile ``monitoring/reporter`` against the distribution's jars (javac, release 11 as
    Flink's own classes) and write the plugin folder; returns the jar."""
    stock = stock_jar()
    dist = sorted((PYFLINK_HOME / "lib").glob("flink-dist-*.jar"))
    sources = sorted(str(p) for p in SOURCE.rglob("*.java"))
    with tempfile.TemporaryDirectory() as tmp:
        cp = os.pathsep.join([str(stock), *map(str, dist)])
        subprocess.run(["javac", "--release", "11", "-nowarn", "-cp", cp, "-d", tmp, *sources],
                       check=True)
        PLUGIN.mkdir(parents=True, exist_ok=True)
        for old in PLUGIN.glob("*.jar"):
            old.unlink()
        shutil.copy2(stock, PLUGIN / stock.name)
        part = JAR.with_suffix(".part")
        with zipfile.ZipFile(part, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\n")
            services = SOURCE / "META-INF" / "services"
            for f in sorted(services.iterdir()):
                z.write(f, f"META-INF/services/{f.name}")
            for f in sorted(Path(tmp).rglob("*.class")):
                z.write(f, str(f.relative_to(tmp)))
        part.replace(JAR)
    log.info("built %s (with %s)", JAR, stock.name)
    return JAR


if __name__ == "__main__":  # pragma: no cover
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    build()
    sys.exit(0)
