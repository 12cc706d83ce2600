"""A TaskManager's Python workers (process mode) are its child processes and outlive it when it
is killed; ``flink_job.cluster.descendants`` finds them from /proc and ``stop_orphans`` stops
them, as ``cluster.down`` does for what its TaskManagers leave (a real process tree here);
``cluster.down`` itself waits for the cluster's JVMs and kills only its own."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from contract.config import Settings
from devstack.stack import free_port
from flink_job import cluster
from tests.helpers import alive as _alive


def test_the_children_of_a_killed_parent_are_found_first_and_stopped_after() -> None:
    # a parent with two children, one of which has a child of its own
    parent = subprocess.Popen(["bash", "-c", "sleep 60 & bash -c 'sleep 60 & wait' & wait"])
    try:
        deadline = time.monotonic() + 5
        found: list[int] = []
        while len(found) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
            found = cluster.descendants([parent.pid])
        assert len(found) == 3 and parent.pid not in found
        parent.kill()  # as a SIGKILLed TaskManager: its children go on
        parent.wait()
        assert all(_alive(p) for p in found)
        assert cluster.descendants([parent.pid]) == []  # re-parented: no longer findable
        assert cluster.stop_orphans(found, timeout_s=5) == 3
        assert not any(_alive(p) for p in found)
        assert cluster.stop_orphans(found) == 0
    finally:
        parent.kill()


def _stubborn(*args: str) -> subprocess.Popen:
    """A process that ignores SIGTERM, as a JVM stuck in its shutdown would; ``args`` end up
    in its command line."""
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    return subprocess.Popen([sys.executable, "-c", code, *args])


def test_down_waits_for_its_jvms_and_kills_only_its_own(tmp_path: Path) -> None:
    """``cluster.down`` returns when the cluster's JVMs are gone, SIGKILLing one that ignored
    the stop scripts' SIGTERM; a pid-file entry that is not the cluster's (a pid reused since
    its JVM died unannounced) is left alone."""
    s = Settings.from_env({"RTREC_STACK_DIR": tmp_path / "stack",
                           "RTREC_FLINK_REST_PORT": free_port()})
    d = cluster.prepare(s)
    ours = _stubborn(f"-Dlog.file={d['log']}/flink-taskexecutor-0.log")
    other = _stubborn("-Dlog.file=/somewhere/else.log")
    try:
        (d["pid"] / "flink-test-taskexecutor.pid").write_text(f"{other.pid}\n{ours.pid}\n")
        time.sleep(0.5)  # both have their handler
        assert cluster.jvms(s) == [ours.pid]
        t0 = time.monotonic()
        assert cluster.down(s, timeout_s=2.0) == []
        assert 2.0 <= time.monotonic() - t0 < 20
        assert ours.wait(5) == -signal.SIGKILL
        assert other.poll() is None and _alive(other.pid)
        assert cluster.jvms(s) == []
    finally:
        ours.kill()
        other.kill()
        ours.wait()
        other.wait()
