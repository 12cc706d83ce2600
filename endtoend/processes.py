"""Child processes of a run: ``python -m <module> ...`` with the run's settings, in a process
group of its own, logging to a file.

The group matters: ``python -m flink_job run`` starts a JVM of its own, and a signal to the
leader alone would leave it running. :meth:`ChildProcess.kill` signals the whole group and
waits until every member is gone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from contract.config import Settings

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent.parent


def child_env(settings: Settings) -> dict[str, str]:
    """This process's environment with the run's ``RTREC_*`` settings in place of ours, and
    the repository on ``PYTHONPATH`` (a child started elsewhere still finds the packages)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTREC_")}
    env.update(settings.to_env())
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


class ChildProcess:
    """``python -m <module> <args>`` in its own process group (a leader and, for the job, its
    JVM); output appended to ``log_path``."""

    def __init__(self, module: str, args: Sequence[str], settings: Settings,
                 log_path: Path) -> None:
        self.module = module
        self.args = list(args)
        self.settings = settings
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *extra: str) -> ChildProcess:
        """Start it (again, after a kill) with ``extra`` arguments appended to ``args``."""
        cmd = [sys.executable, "-m", self.module, *self.args, *extra]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as logf:
            logf.write(f"\n=== start {' '.join(cmd[2:])}\n".encode())
            self.proc = subprocess.Popen(cmd, env=child_env(self.settings), cwd=ROOT,
                                         stdout=logf, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        log.info("%s started (pid %d, log %s)", " ".join(cmd[2:4]), self.proc.pid,
                 self.log_path)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        """The end of its log, for an error message."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def kill(self, sig: int = signal.SIGKILL, timeout_s: float = 30.0) -> None:
        """Signal the whole group, reap the leader, and wait until no member is left
        (SIGKILL for whatever outlives ``timeout_s``)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        # the group's other members (the JVM) may outlive the leader by a moment
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                return
            if sig != signal.SIGKILL:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
            time.sleep(0.1)

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM (a clean shutdown flushes what it holds), SIGKILL after ``timeout_s``."""
        if self.proc is not None:  # even when the leader is gone: its JVM may not be
            self.kill(signal.SIGTERM, timeout_s=timeout_s)
