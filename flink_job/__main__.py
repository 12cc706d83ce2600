"""``python -m flink_job``: run the learner, warm it from history, or drive a local cluster.

  run        the job on a local Flink mini-cluster (blocks; Ctrl-C or SIGTERM stops it)
             --restore latest|PATH  start from the newest checkpoint or a given savepoint
  bootstrap  append a historical log (JSON lines of contract events) to the job's topics, with
             the events' own timestamps, so the job learns history before live traffic
  cluster    up|submit|down|status: a standalone cluster from the pip distribution (web UI on
             127.0.0.1:<RTREC_FLINK_REST_PORT>)
  snapshot   NAME: savepoint of the cluster's job + the parameters it published, under
             RTREC_SNAPSHOT_DIR/NAME (the job is stopped with the savepoint and resubmitted)
  rollback   NAME: Redis back to the snapshot's parameters under a higher generation (serving
             switches at once), the job restored from its savepoint, learning from now on

Settings come from RTREC_* variables (docs/CONFIG.md); the job reads nothing else.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from pathlib import Path

from contract.config import Settings

log = logging.getLogger("flink_job")


def load_products(path: str | None) -> frozenset[str] | None:
    """Known product ids besides the catalog topic's (flink_job/catalog.py): from a file (CSV
    with product_id, or one id per line); ``topic``: none, only the catalog topic's records
    count; else the shipped catalog when present, else None (no check, with a warning)."""
    if path == "topic":
        return frozenset()
    if path:
        text = Path(path).read_text()
        if text.startswith("product_id"):
            return frozenset(r["product_id"] for r in csv.DictReader(text.splitlines()))
        return frozenset(line.strip() for line in text.splitlines() if line.strip())
    try:
        from contract.features import load_catalog

        return frozenset(p.product_id for p in load_catalog())
    except Exception as exc:  # catalog not shipped yet
        log.warning("no product catalog (%s): unknown products are not checked", exc)
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flink_job", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the job on a local mini-cluster")
    run.add_argument("--restore", default=None,
                     help="'latest' (newest completed checkpoint, if any) or a checkpoint/"
                          "savepoint path")
    run.add_argument("--products", default=None,
                     help="known product ids besides the catalog topic's (CSV or list file; "
                          "'topic': only the catalog topic's; default the shipped catalog)")
    run.add_argument("--group-id", default=None, help="Kafka consumer group (default derived)")
    run.add_argument("--max-restarts", type=int, default=20,
                     help="restart attempts in a row (100 ms doubling to 10 s) before the job "
                          "fails for good; 0: any failure ends it")
    run.add_argument("--idle-timeout-ms", type=int, default=0,
                     help="mark a silent partition idle after this long (0: never; keeps the "
                          "reward join deterministic under replay)")
    run.add_argument("--replace-spec", action="store_true",
                     help="the store holds parameters learned under another feature spec "
                          "(RTREC_FEATURE_SPEC): drop them and learn under this one (default: "
                          "refuse to start; docs/FEATURES.md)")
    boot = sub.add_parser("bootstrap", help="append a historical JSONL log to the topics")
    boot.add_argument("log", help="JSON lines of impression/click events")
    cl = sub.add_parser("cluster", help="standalone cluster from the pip distribution")
    cl.add_argument("action", choices=["up", "submit", "down", "status"])
    cl.add_argument("--products", default=None)
    cl.add_argument("--restore", default=None, help="savepoint/checkpoint for submit (-s)")
    for name, text in (("snapshot", "snapshot the cluster's job: savepoint + parameters"),
                       ("rollback", "roll the model back to a snapshot and learn on from it")):
        sp = sub.add_parser(name, help=text)
        sp.add_argument("name", help="the snapshot's name (a folder under RTREC_SNAPSHOT_DIR)")
        sp.add_argument("--products", default=None,
                        help="known product ids of the resubmitted job (as for cluster submit)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings.from_env()

    if args.command == "run":
        from flink_job import checkpoints
        from flink_job.job import JobOptions
        from flink_job.job import run as run_job

        restore = args.restore
        if restore == "latest":
            found = checkpoints.latest(settings.job.checkpoint_dir)
            restore = str(found) if found else None
            log.info("restore latest: %s", restore or "no completed checkpoint, fresh start")
        opts = JobOptions(known_products=load_products(args.products), restore_path=restore,
                          group_id=args.group_id,
                          max_restarts=args.max_restarts,
                          idle_timeout_ms=args.idle_timeout_ms,
                          replace_spec=args.replace_spec)
        from contract.features import FeatureError

        try:
            run_job(settings, opts)
        except FeatureError as exc:  # another spec's parameters, a d that is not the spec's
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    if args.command == "bootstrap":
        from flink_job.bootstrap import append_log

        n = append_log(settings, Path(args.log))
        log.info("appended %d events", n)
        return 0
    if args.command in ("snapshot", "rollback"):
        import json

        from flink_job import snapshots

        try:
            if args.command == "snapshot":
                facts = snapshots.snapshot(settings, args.name, args.products)
                facts = {k: facts[k] for k in ("name", "savepoint", "generation",
                                               "observations", "created_at_ms")}
            else:
                facts = snapshots.rollback(settings, args.name, args.products)
                facts.pop("skip_before")
        except (snapshots.SnapshotError, RuntimeError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(json.dumps(facts))
        return 0
    from flink_job import cluster

    return cluster.main(settings, args.action, products=args.products, restore=args.restore)


if __name__ == "__main__":
    sys.exit(main())
