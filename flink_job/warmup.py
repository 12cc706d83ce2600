"""Client entry for ``flink run -pym flink_job.warmup`` (see :func:`flink_job.cluster.warm`):
a bounded job with one subtask in every free slot whose Python function imports what the
learner imports, then ends.

Why: in thread mode each TaskManager embeds one Python interpreter, and the first Python
operator it opens pays for starting it and importing PyFlink, Beam and numpy (about 3 s here,
measured by bench/bench_recovery.py). A spare TaskManager that has never run Python would
pay that in the middle of a failover; warmed, it only deploys the tasks.
"""

from __future__ import annotations

import argparse
import logging

from contract.config import Settings


def _import_the_learner(value: int) -> int:
    """Runs on the TaskManager: leaves the learner's modules imported there."""
    import flink_job.functions  # noqa: F401  (PyFlink, numpy, redis, the contract)

    return value


def main(argv: list[str] | None = None) -> None:
    from pyflink.common.typeinfo import Types
    from pyflink.datastream.connectors.base import Sink

    from flink_job.job import DISCARD, JOB_NAME, JobOptions, make_env

    parser = argparse.ArgumentParser(prog="flink_job.warmup")
    parser.add_argument("--slots", type=int, required=True)
    args, _ = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO)
    env = make_env(Settings.from_env(), JobOptions(max_restarts=0))
    env.set_parallelism(max(1, args.slots))
    (env.from_collection(list(range(max(1, args.slots))), type_info=Types.INT())
     .map(_import_the_learner, output_type=Types.INT())
     .sink_to(Sink(DISCARD)))
    env.execute(f"{JOB_NAME}-warmup")


if __name__ == "__main__":
    main()
