"""Client entry for ``flink run -pym flink_job.submit`` (see :mod:`flink_job.cluster`): builds
the same graph as ``python -m flink_job run`` and submits it to the cluster the CLI points at.
A restore point comes from ``flink run -s``; ``--generation`` and ``--skip-before`` (a JSON
file of ``"topic:partition" -> offset``) come from a rollback (:mod:`flink_job.snapshots`)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from contract.config import Settings
from flink_job.__main__ import load_products
from flink_job.job import JOB_NAME, JobOptions, build, make_env


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="flink_job.submit")
    parser.add_argument("--products", default=None)
    parser.add_argument("--generation", type=int, default=None)
    parser.add_argument("--skip-before", default=None)
    args, _ = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO)
    settings = Settings.from_env()
    skip = json.loads(Path(args.skip_before).read_text()) if args.skip_before else None
    opts = JobOptions(known_products=load_products(args.products), generation=args.generation,
                      skip_before=skip)
    env = make_env(settings, opts)
    build(env, settings, opts)
    env.execute_async(JOB_NAME)


if __name__ == "__main__":
    main()
