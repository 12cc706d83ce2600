"""The job on the standalone Flink cluster, for the demo: the cluster is started and stopped
with ``python -m flink_job cluster up|down``, the job submitted with ``python -m flink_job
cluster submit`` and followed and cancelled through Flink's REST API (the one its web UI
uses). Like :class:`endtoend.processes.ChildProcess` for ``python -m flink_job run``, nothing
here imports flink_job: the job is reached through processes, Kafka, Redis and REST.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from contract.config import Settings
from endtoend.processes import ROOT, child_env

log = logging.getLogger(__name__)
ACTIVE = ("CREATED", "INITIALIZING", "RUNNING", "RESTARTING", "RECONCILING")


def rest(settings: Settings, path: str, method: str = "GET", timeout_s: float = 5.0) -> dict:
    """One call of the cluster's REST API on 127.0.0.1:RTREC_FLINK_REST_PORT."""
    req = urllib.request.Request(f"http://127.0.0.1:{settings.stack.flink_rest_port}{path}",
                                 method=method)
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        raw = resp.read()
    return json.loads(raw) if raw.strip() else {}


def ui_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.stack.flink_rest_port}"


def answers(settings: Settings) -> bool:
    try:
        rest(settings, "/overview", timeout_s=2)
        return True
    except OSError:
        return False


def flink_cli(settings: Settings, *args: str, log_path: Path) -> None:
    """``python -m flink_job <args>`` with these settings; output appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as logf:
        logf.write(f"\n=== python -m flink_job {' '.join(args)}\n".encode())
        logf.flush()
        rc = subprocess.run([sys.executable, "-m", "flink_job", *args], env=child_env(settings),
                            cwd=ROOT, stdout=logf, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL).returncode
    if rc != 0:
        raise RuntimeError(f"python -m flink_job {' '.join(args)} failed (exit {rc}); see "
                           f"{log_path}")


class ClusterJob:
    """The job submitted to the running cluster; the same surface the loop uses of a
    ``python -m flink_job run`` child (start, alive, stop, log_path, log_tail)."""

    def __init__(self, settings: Settings, log_path: Path, products: str | None = None) -> None:
        self.settings = settings
        self.log_path = log_path
        self.products = products
        self.jid: str | None = None

    def _jobs(self) -> dict[str, str]:
        return {j["jid"]: j["state"]
                for j in rest(self.settings, "/jobs/overview", timeout_s=10)["jobs"]}

    def start(self) -> ClusterJob:
        before = set(self._jobs())
        args = ["cluster", "submit"] + (["--products", self.products] if self.products else [])
        flink_cli(self.settings, *args, log_path=self.log_path)
        new = [j for j in rest(self.settings, "/jobs/overview")["jobs"]
               if j["jid"] not in before and j["state"] in ACTIVE]
        if len(new) != 1:
            raise RuntimeError(f"expected one new job on the cluster after submitting, found "
                               f"{[(j['name'], j['state']) for j in new]}")
        self.jid = new[0]["jid"]
        log.info("job %s submitted: %s/#/job/running/%s/overview", self.jid,
                 ui_url(self.settings), self.jid)
        return self

    def alive(self) -> bool:
        if self.jid is None:
            return False
        try:
            return self._jobs().get(self.jid) in ACTIVE
        except OSError as exc:  # no answer in time (a loaded host): not a proof of death
            log.warning("job %s: the cluster did not answer (%s)", self.jid, exc)
            return answers(self.settings) or not self._cluster_gone()

    def _cluster_gone(self) -> bool:
        """No JobManager pid left in the cluster's pid folder."""
        pid_dir = Path(self.settings.stack.dir) / "flink" / "pid"
        return not any(f.read_text().strip() for f in pid_dir.glob("*standalonesession*.pid"))

    def log_tail(self, chars: int = 3000) -> str:
        try:
            text = self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            text = ""
        return f"{text}\n(the cluster's own logs: {self.settings.stack.dir}/flink/log)"

    def stop(self, timeout_s: float = 30.0) -> None:
        """Cancel the job and wait until it is gone from the running jobs."""
        if self.jid is None or not self.alive():
            return
        rest(self.settings, f"/jobs/{self.jid}?mode=cancel", method="PATCH")
        deadline = time.monotonic() + timeout_s
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        if self.alive():
            log.warning("job %s still not cancelled after %.0fs", self.jid, timeout_s)
