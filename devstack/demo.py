"""``make demo``: the whole system learning live, end to end, then stopped.

Starts what is not running (Kafka, Redis), writes the historical log if missing, and runs the
closed loop (producer/closed_loop.py): for each start the real Flink job, serving and the
simulated visitors, against random, the oracle and an instant in-process LinUCB. Prints the
report and where the plot is, then stops what it started.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from contract.config import Settings
from devstack.smoke import smoke
from devstack.stack import Stack

log = logging.getLogger(__name__)


def run_demo(settings: Settings, quick: bool = False, visits: int | None = None,
             rate: float = 50.0) -> int:
    from producer.closed_loop import LoopOptions, run_loop

    visits = visits or (600 if quick else 2000)
    stack = Stack(settings)
    already = {n for n, s in stack.status().items() if s["running"]}
    t0 = time.monotonic()
    stack.up(timeout_s=120)
    print(f"stack up in {time.monotonic() - t0:.1f}s: Kafka {settings.kafka_bootstrap}, "
          f"Redis 127.0.0.1:{settings.redis_port} (logs in {stack.root})")
    try:
        for line in smoke(settings):
            print(f"ok  {line}")
        history = Path(settings.data_dir) / "history.jsonl"
        if not history.is_file():
            from producer.__main__ import main as producer_cli

            if producer_cli(["prepare-data", "--data-dir", str(history.parent)]) != 0:
                return 1
        print(f"closed loop: {visits} visits per start at {rate:.0f}/s, bootstrapped then cold.\n"
              "  While it runs: the job's log is under var/loop/<run>/job.log; Redis holds the\n"
              f"  parameters (redis-cli -p {settings.redis_port} --scan --pattern "
              f"'{settings.redis_prefix}-*'); for the Flink web UI run the job on a cluster\n"
              "  (make cluster-up job-submit, then http://127.0.0.1:"
              f"{settings.flink_rest_port}); the HTTP API is `python -m serving` "
              f"(http://{settings.serving_host}:{settings.serving_port}/docs).")
        opts = LoopOptions(visits=visits, rate=rate, seed=settings.seed, history=history)
        run_loop(settings, opts, ("bootstrapped", "cold"))
        print(f"demo took {time.monotonic() - t0:.0f}s")
    finally:
        if not already:
            stack.down()
            print("stopped the stack this demo started")
        else:
            print(f"left running what was already running: {', '.join(sorted(already))}")
    return 0

