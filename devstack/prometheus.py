"""Debian's Prometheus server on 127.0.0.1 for the local system (``make monitor-up`` /
``monitor-down``; ``python -m devstack.prometheus up|down|status``).

It scrapes serving's ``/metrics`` and the Flink job's reporter endpoints (flink_job/reporter.py,
``RTREC_METRICS_PORTS``) and evaluates ``monitoring/rules.yml``. Its configuration, data and
log live in ``<RTREC_STACK_DIR>/prometheus`` (``var/stack/prometheus``); the configuration is
``monitoring/prometheus.yml`` with the ports of the current settings. Like the rest of the
stack, ``down`` stops only the pid that ``up`` started (pid file with the kernel start time).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from contract.config import Settings, port_range
from devstack.stack import Service, StackError, port_open

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "monitoring"


def config(settings: Settings, rules: Path | str = "rules.yml",
           scrape_interval_s: float | None = None) -> dict[str, Any]:
    """monitoring/prometheus.yml with the settings' ports (and the rules' path)."""
    conf = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    conf["rule_files"] = [str(rules)]
    if scrape_interval_s is not None:  # a scrape may take the whole interval
        for key in ("scrape_interval", "scrape_timeout", "evaluation_interval"):
            conf["global"][key] = f"{scrape_interval_s:g}s"
    targets = {
        "serving": [f"127.0.0.1:{settings.serving.port}"],
        "flink": [f"127.0.0.1:{p}" for p in port_range(settings.job.metrics_ports)],
    }
    for job in conf["scrape_configs"]:
        job["static_configs"] = [{"targets": targets[job["job_name"]]}]
    return conf


class Prometheus:
    """One Prometheus server for ``settings`` (its port: ``RTREC_PROMETHEUS_PORT``)."""

    def __init__(self, settings: Settings, scrape_interval_s: float | None = None) -> None:
        self.settings = settings
        self.root = Path(settings.stack.dir).resolve() / "prometheus"
        self.service = Service("prometheus", self.root)
        self.port = settings.stack.prometheus_port
        self.scrape_interval_s = scrape_interval_s

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_config(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        rules = self.root / "rules.yml"
        shutil.copyfile(MONITORING / "rules.yml", rules)
        path = self.root / "prometheus.yml"
        path.write_text(yaml.safe_dump(config(self.settings, rules.name, self.scrape_interval_s),
                                       sort_keys=False))
        return path

    def alive(self) -> bool:
        return self.service.pid() is not None

    def up(self, timeout_s: float = 30.0) -> None:
        """Start it (a no-op when ours already runs); wait until it is ready."""
        if self.alive():
            log.info("Prometheus already runs: %s", self.url)
            return
        binary = shutil.which("prometheus")
        if binary is None:
            raise StackError("Debian's prometheus is not installed (make install installs it)")
        if port_open(self.port):
            raise StackError(f"127.0.0.1:{self.port} is taken by another process "
                             f"(RTREC_PROMETHEUS_PORT)")
        conf = self.write_config()
        self.service.start([binary, f"--config.file={conf}",
                            f"--storage.tsdb.path={self.root / 'data'}",
                            f"--web.listen-address=127.0.0.1:{self.port}",
                            "--storage.tsdb.retention.time=7d"])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise StackError(f"prometheus exited; log: {self.service.log_file}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        log.info("Prometheus: %s (targets %s/targets, alerts %s/alerts)",
                                 self.url, self.url, self.url)
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise StackError(f"prometheus not ready in {timeout_s:.0f}s; log: {self.service.log_file}")

    def down(self) -> bool:
        """Stop the server ``up`` started (its data stays); True if one was stopped."""
        return self.service.stop()

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's result vector (``[{"metric": ..., "value": [t, "v"]}]``)."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        with urllib.request.urlopen(url, timeout=5) as r:
            body = json.loads(r.read())
        if body.get("status") != "success":
            raise StackError(f"query {promql!r} failed: {body}")
        return body["data"]["result"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.prometheus",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["up", "down", "status"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    server = Prometheus(Settings.from_env())
    try:
        if args.action == "up":
            server.up()
        elif args.action == "down":
            log.info("Prometheus %s", "stopped" if server.down() else "was not running")
        else:
            log.info("Prometheus %s", f"runs: {server.url}" if server.alive() else "is down")
            return 0 if server.alive() else 3
    except StackError as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
