"""A TaskManager's Python workers (process mode) are its child processes and outlive it when it
is killed; ``flink_job.cluster.descendants`` finds them from /proc and ``stop_orphans`` stops
them, as ``cluster.down`` does for what its TaskManagers leave (a real process tree here)."""

from __future__ import annotations

import subprocess
import time

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
