"""``python -m evaluation ope``: off-policy estimates of each target policy's top-1 and list
CTR from the log of impressions and clicks (docs/EXPERIMENTS.md).

  --file PATH      JSON lines as the topics carry them (impressions and clicks, any order)
  --from-topics    the impressions and clicks topics of RTREC_KAFKA_BOOTSTRAP, from the
                   beginning to their end when the reading starts

Prints a table per target (IPS, SNIPS, DR, the slate estimators; bootstrap 95% intervals and
effective sample sizes); ``--json PATH`` also writes them. Exit 2 for bad arguments, 1 when
the log cannot be read.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from contract.config import Settings
from contract.errors import RtrecError
from contract.ope import N_BOOT


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m evaluation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("ope", help="off-policy estimates from the log")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--file", type=Path, help="JSON lines of impressions and clicks")
    src.add_argument("--from-topics", action="store_true",
                     help="read the impressions and clicks topics (RTREC_KAFKA_*)")
    p.add_argument("--targets", default=None,
                   help="comma-separated target names (default: every shadow in the log, "
                        "random, popularity)")
    p.add_argument("--products", type=Path, default=None,
                   help="catalog CSV (default: the shipped catalog)")
    p.add_argument("--n-boot", type=int, default=N_BOOT, help="bootstrap resamples")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    p.add_argument("--timeout", type=float, default=60.0, help="--from-topics: read timeout")
    p.add_argument("--json", type=Path, default=None, help="also write the estimates here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.n_boot < 1:
        print("error: --n-boot must be >= 1", file=sys.stderr)
        return 2
    from contract.features import load_catalog
    from evaluation.log import LogStats, read_file, read_lines, topic_lines
    from evaluation.offline import evaluate, table

    stats = LogStats()
    try:
        product_ids = [p.product_id for p in load_catalog(args.products)]
        if args.file is not None:
            records = read_file(args.file, settings.model.dim, stats)
        else:
            records = read_lines(topic_lines(settings, args.timeout), settings.model.dim, stats)
        targets = [t.strip() for t in args.targets.split(",") if t.strip()] \
            if args.targets else None
        result = evaluate(records, product_ids, settings.model.dim, l2=settings.model.l2,
                          targets=targets, n_boot=args.n_boot, seed=args.seed)
    except (RtrecError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    result["log"] = {"lines": stats.lines, "impressions": stats.impressions,
                     "clicks": stats.clicks, "orphan_clicks": stats.orphan_clicks,
                     "refused": stats.refused}
    print(table(result))
    if stats.refused:
        print(f"refused lines by reason: {stats.refused}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
