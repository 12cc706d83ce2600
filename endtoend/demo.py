"""The whole system learning live, end to end, then stopped (``make demo``, ``make simulate``).

Starts what is not running (Kafka, Redis and, by default, the standalone Flink cluster with
its web UI), writes the historical log if missing (with the run's oracle), and runs the closed
loop (:mod:`endtoend.loop`): for each start the real Flink job (submitted to the cluster, or
a mini-cluster per start with ``--flink mini``), serving and the simulated visitors, against
random, the oracle and an instant in-process LinUCB. Prints the report and where the plot is,
then stops what it started.
"""

from __future__ import annotations

import logging
import time

from contract.config import Settings
from devstack.smoke import smoke
from devstack.stack import Stack
from endtoend import flinkcluster
from endtoend.loop import LiveWorld, LoopOptions, run_loop
from producer.history import make_history, write_history
from producer.oracle import load_oracle

log = logging.getLogger(__name__)
HISTORY_EVENTS = 10_000
JOB_NAME = "rtrec-linucb-learner"  # flink_job.job.JOB_NAME (not imported: the job is a process)


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
    started_cluster = False
    try:
        for line in smoke(settings):
            print(f"ok  {line}")
        ensure_history(opts, LiveWorld.load(opts.oracle))
        ui = flinkcluster.ui_url(settings)
        if opts.flink == "cluster":
            if flinkcluster.answers(settings):
                print(f"a Flink cluster already answers on {ui}: the demo submits to it")
            else:
                t1 = time.monotonic()
                started_cluster = True
                flinkcluster.flink_cli(settings, "cluster", "up",
                                       log_path=opts.work_dir / "cluster.log")
                print(f"Flink cluster up in {time.monotonic() - t1:.1f}s "
                      f"(logs in {settings.stack.dir}/flink/log)")
            where = (f"the Flink web UI: {ui} (job {JOB_NAME}: its vertices, checkpoints and "
                     "metrics\n  such as validate.events_in, validate.dead_letters_<reason>, "
                     "publish-redis.updates_published,\n  publish-redis.publish_lag_ms)")
        else:
            where = (f"the job's log under {opts.work_dir}/<run>/job.log (mini-cluster: no "
                     f"web UI; drop --flink mini for it)")
        print(f"closed loop: {opts.visits} visits per start at {opts.rate:.0f}/s, "
              f"{' then '.join(opts.starts)}, oracle {opts.oracle}.\n"
              f"  While it runs: {where}; Redis holds the\n  parameters (redis-cli -p "
              f"{settings.redis.port} --scan --pattern '{settings.redis.prefix}-*'); the HTTP "
              f"API is `python -m serving`\n  (http://{settings.serving.host}:"
              f"{settings.serving.port}/docs).", flush=True)
        result = run_loop(settings, opts)
        print(result["table"])
        print("wrote " + " and ".join(str(p) for p in result["paths"]))  # type: ignore[union-attr]
        print(f"demo took {time.monotonic() - t0:.0f}s")
    finally:
        if started_cluster:
            flinkcluster.flink_cli(settings, "cluster", "down",
                                   log_path=opts.work_dir / "cluster.log")
            print("stopped the Flink cluster this demo started")
        if not already:
            stack.down()
            print("stopped the stack this demo started")
        else:
            print(f"left running what was already running: {', '.join(sorted(already))}")
    return 0
