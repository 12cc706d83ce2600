"""The job's graph cut short, for bench_job's stage figures: ``python -m bench.stage_job run
--noop`` (the platform ceiling: source -> one Python call per record -> discard) or ``--stop-after
validate|join`` (the production stages up to there, output discarded; dead letters still go to
their topic). Built from flink_job.job's own stage functions, so the prefix is the real one;
the job package itself builds only the production graph.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Iterable
from typing import Any

from pyflink.datastream import ProcessFunction, RuntimeContext

from contract.config import Settings
from contract.store import redis_client
from flink_job import job
from flink_job.__main__ import load_products

log = logging.getLogger("bench.stage_job")
NOOP_KEY = ("bench", "noop")  # Redis key parts of the no-op job's "first end count" line
END_MARK = "bench-end"  # a record holding this ends the no-op count


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class NoopCount(ProcessFunction):
    """Counts records; on a record holding :data:`END_MARK`, writes ``first_ms end_ms count``
    to Redis for the bench."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def open(self, runtime_context: RuntimeContext) -> None:
        s = self.settings
        self.client = redis_client(s.redis, timeout_s=2.0)
        self.first = 0
        self.count = 0

    def process_element(self, value: str, ctx: ProcessFunction.Context) -> Iterable[Any]:
        self.count += 1
        if self.first == 0:
            self.first = _now_ms()
        if END_MARK in value:
            self.client.set(self.settings.redis.key(*NOOP_KEY),
                            f"{self.first} {_now_ms()} {self.count}")
        return ()


def build(env, settings: Settings, opts: job.JobOptions,  # type: ignore[no-untyped-def]
          stop_after: str) -> None:
    from pyflink.common.typeinfo import Types
    from pyflink.datastream.connectors.base import Sink
    from pyflink.datastream.data_stream import DataStream

    raw = job.kafka_source(env, settings, opts)
    if stop_after == "noop":
        (raw.process(NoopCount(settings), output_type=Types.INT()).name("noop").uid("noop")
         .sink_to(Sink(job.DISCARD)).name("discard"))
        return
    valid, dead = job.validate(raw, settings, opts)
    if stop_after == "validate":
        valid.sink_to(Sink(job.DISCARD)).name("discard")
        job.dead_letter_sink(dead, settings)
        return
    batches, join_dead = job.join_and_batch(valid, settings)
    job.dead_letter_sink(dead.union(join_dead), settings)
    DataStream(batches).sink_to(Sink(job.DISCARD)).name("discard")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stage_job", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run")
    cut = run.add_mutually_exclusive_group(required=True)
    cut.add_argument("--noop", action="store_true", help="the no-op job of the same source")
    cut.add_argument("--stop-after", choices=["validate", "join"])
    run.add_argument("--products", default=None, help="known product ids (CSV or list file)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings.from_env()
    stop_after = "noop" if args.noop else args.stop_after
    opts = job.JobOptions(known_products=load_products(args.products))
    env = job.make_env(settings, opts)
    build(env, settings, opts, stop_after)
    env.execute(f"{job.JOB_NAME}-bench-{stop_after}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
