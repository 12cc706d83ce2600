"""The whole system learning live, end to end, then stopped (``make demo``, ``make simulate``).

Starts what is not running (Kafka, Redis), writes the historical log if missing (with the
run's oracle), and runs the closed loop (:mod:`endtoend.loop`): for each start the real Flink
job, serving and the simulated visitors, against random, the oracle and an instant in-process
LinUCB. Prints the report and where the plot is, then stops what it started.
"""

from __future__ import annotations

import logging
import time

from contract.config import Settings
from devstack.smoke import smoke
from devstack.stack import Stack
from endtoend.loop import LiveWorld, LoopOptions, run_loop
from producer.history import make_history, write_history
from producer.oracle import load_oracle

log = logging.getLogger(__name__)
HISTORY_EVENTS = 10_000


def ensure_history(opts: LoopOptions, world: LiveWorld) -> None:
    """Write the historical log of the bootstrapped start when it is missing, from the same
    users, catalog, seed and oracle as the live visits."""
    if "bootstrapped" not in opts.starts or opts.history is None or opts.history.is_file():
        return
    shop = world.shop
    oracle = load_oracle(opts.oracle, shop.features)
    h = make_history(world.users, shop.products, shop.features, oracle, opts.seed,
                     HISTORY_EVENTS, opts.dist)
    write_history(h, world.users, shop.products, opts.history.parent)
    log.info("wrote the historical log %s (%d events, oracle %s)", opts.history,
             HISTORY_EVENTS, opts.oracle)


def run_demo(settings: Settings, opts: LoopOptions) -> int:
    """Stack up (what is missing), smoke round trip, the closed loop, stack down (what this
    run started). Returns the exit code."""
    stack = Stack(settings)
    already = {n for n, s in stack.status().items() if s["running"]}
    t0 = time.monotonic()
    stack.up(timeout_s=120)
    print(f"stack up in {time.monotonic() - t0:.1f}s: Kafka {settings.kafka.bootstrap}, "
          f"Redis 127.0.0.1:{settings.redis.port} (logs in {stack.root})")
    try:
        for line in smoke(settings):
            print(f"ok  {line}")
        ensure_history(opts, LiveWorld.load(opts.oracle))
        print(f"closed loop: {opts.visits} visits per start at {opts.rate:.0f}/s, "
              f"{' then '.join(opts.starts)}, oracle {opts.oracle}.\n"
              f"  While it runs: the job's log is under {opts.work_dir}/<run>/job.log; Redis "
              f"holds the\n  parameters (redis-cli -p {settings.redis.port} --scan --pattern "
              f"'{settings.redis.prefix}-*'); for the Flink web UI run the job on a cluster\n"
              "  (make cluster-up job-submit, then http://127.0.0.1:"
              f"{settings.stack.flink_rest_port}); the HTTP API is `python -m serving` "
              f"(http://{settings.serving.host}:{settings.serving.port}/docs).")
        result = run_loop(settings, opts)
        print(result["table"])
        print("wrote " + " and ".join(str(p) for p in result["paths"]))  # type: ignore[union-attr]
        print(f"demo took {time.monotonic() - t0:.0f}s")
    finally:
        if not already:
            stack.down()
            print("stopped the stack this demo started")
        else:
            print(f"left running what was already running: {', '.join(sorted(already))}")
    return 0
