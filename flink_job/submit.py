"""Client entry for ``flink run -pym flink_job.submit`` (see :mod:`flink_job.cluster`): builds
the same graph as ``python -m flink_job run`` and submits it to the cluster the CLI points at.
A restore point comes from ``flink run -s``."""

from __future__ import annotations

import argparse
import logging

from contract.config import Settings
from flink_job.__main__ import load_products
from flink_job.job import JOB_NAME, JobOptions, build, make_env


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="flink_job.submit")
    parser.add_argument("--products", default=None)
    args, _ = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO)
    settings = Settings.from_env()
    opts = JobOptions(known_products=load_products(args.products))
    env = make_env(settings, opts)
    build(env, settings, opts)
    env.execute_async(JOB_NAME)


if __name__ == "__main__":
    main()
