"""``python -m producer``: the simulated world's command line.

Commands: ``world`` (regenerate contract/data), ``prepare-data`` (the historical log),
``evaluate`` (offline evaluation with Mab2Rec), ``load`` (events into Kafka at a rate),
``forget-user`` (a deletion request, docs/PRIVACY.md), ``catalog load|set|retire|list`` and
``users load`` (a team's own catalog and user table, docs/CATALOG.md).
Defaults come from ``Settings.from_env()`` (RTREC_* variables); flags override them. Errors are
one line on stderr and a non-zero exit: 2 for bad arguments, 1 when the work cannot run.
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
from contract.features import DATA_DIR, FeatureSpace, load_catalog, load_users

log = logging.getLogger("producer")


class CliError(RtrecError):
    """A failure to report as one line with exit code 1."""


def _world(seed: int, world_dir: Path | None, spec: str = ""):
    """(users, products, features) of ``seed``: the shipped files when they match the seed;
    x built by the feature spec ``spec`` (RTREC_FEATURE_SPEC; "": the shipped one)."""
    from producer.world import World

    folder = world_dir or DATA_DIR
    if world_dir is not None and not folder.is_dir():
        raise CliError(f"world folder not found: {folder}")
    feats = folder / "features.json"
    if feats.is_file():
        try:
            fs = FeatureSpace.load(feats)
        except (ValueError, KeyError, json.JSONDecodeError) as exc:
            raise CliError(f"{feats}: not a features file: {exc}") from exc
        if fs.seed == seed:
            return (load_users(folder / "users.csv"), load_catalog(folder / "catalog.csv"),
                    fs.with_spec(spec) if spec else fs)
    elif world_dir is not None:
        raise CliError(f"{feats} not found")
    log.info("building the world of seed %d (the shipped data is seed %s)", seed,
             FeatureSpace.load().seed if (DATA_DIR / "features.json").is_file() else "-")
    w = World.build(seed)
    return w.users, w.products, w.features.with_spec(spec) if spec else w.features


def _oracle(spec: str, fs: FeatureSpace):
    from producer.oracle import OracleError, load_oracle

    try:
        return load_oracle(spec, fs)
    except OracleError as exc:
        raise CliError(str(exc)) from exc


def _dist(args: argparse.Namespace):
    from producer.context import ContextDistribution

    try:
        return ContextDistribution(args.p_morning, args.p_weekend)
    except (TypeError, ValueError) as exc:
        raise CliError(str(exc)) from exc


def _history(args: argparse.Namespace):
    from producer.history import make_history

    users, products, fs = _world(args.seed, args.world_dir, args.feature_spec)
    oracle = _oracle(args.oracle, fs)
    h = make_history(users, products, fs, oracle, args.seed, args.events, _dist(args))
    return users, products, fs, oracle, h


def cmd_world(args: argparse.Namespace) -> int:
    from producer.world import World

    World.build(args.seed).write(args.out)
    return 0


def cmd_prepare_data(args: argparse.Namespace) -> int:
    from producer.history import write_history

    users, products, _, _, h = _history(args)
    jsonl, table = write_history(h, users, products, args.data_dir)
    figures = {"events": len(h.clicked), "users": len(users), "products": len(products),
               "ctr": round(h.ctr, 4)}
    args.results_dir.mkdir(parents=True, exist_ok=True)
    out = args.results_dir / "prepare_data.json"
    out.write_text(json.dumps(figures) + "\n", encoding="utf-8")
    log.info("wrote %s, %s and %s", jsonl, table, out)
    print(f"events {figures['events']}  users {figures['users']}  products "
          f"{figures['products']}  click rate {figures['ctr']:.2%}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from producer.evaluate import evaluate, format_table, write_results

    users, products, fs, oracle, h = _history(args)
    log.info("historical log: %d events, click rate %.2f%%", len(h.clicked), 100 * h.ctr)
    ev = evaluate(h, users, products, fs, oracle, args.seed)
    paths = write_results(ev, args.results_dir)
    log.info("wrote %s", ", ".join(map(str, paths)))
    print(format_table(ev))
    return 0


def cmd_load(args: argparse.Namespace, settings: Settings) -> int:
    from producer.load import LoadError, make_pool, open_producer, read_replay, run_load

    if args.count is None and args.duration is None and args.replay is None:
        raise CliError("give --count N or --duration SECONDS (or --replay FILE)")
    try:
        replay = read_replay(args.replay, settings) if args.replay else None
        pool = None
        if replay is None:
            users, products, fs = _world(args.seed, args.world_dir, args.feature_spec)
            pool = make_pool(users, products, fs, _oracle(args.oracle, fs), args.seed,
                             dist=_dist(args))
        producer = open_producer(settings)
        log.info("sending to %s (topics %s, %s) at %.0f events/s", settings.kafka.bootstrap,
                 settings.kafka.topic_impressions, settings.kafka.topic_clicks, args.rate)
        stats = run_load(producer, settings, args.rate, count=args.count,
                         duration_s=args.duration, pool=pool, replay=replay,
                         bad_fraction=args.bad_fraction, seed=args.seed,
                         progress=not args.no_progress)
    except LoadError as exc:
        raise CliError(str(exc)) from exc
    summary = stats.summary()
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / "load.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"sent {stats.sent}  acked {stats.acked}  failed {stats.failed}  bad {stats.bad}  "
          f"rate {stats.rate:,.0f} ev/s acked ({stats.send_rate:,.0f} sent)  "
          f"send latency p50 {summary['latency_p50_ms']} ms  p99 {summary['latency_p99_ms']} ms")
    return 0 if stats.failed == 0 and stats.acked == stats.sent else 1


def cmd_forget(args: argparse.Namespace, settings: Settings) -> int:
    from producer.forget import forget, summary

    try:
        result = forget(settings, args.user_id, args.timeout)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (OSError, TimeoutError) as exc:
        raise CliError(f"deletion request not recorded: {exc}") from exc
    print(summary(result))
    return 0


def build_parser(settings: Settings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m producer",
        description="The simulated world: data, historical log, offline evaluation, load.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings only")
    # x of the history and the load follows the feature spec serving and the job use
    parser.set_defaults(feature_spec=settings.model.feature_spec)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser, world: bool = True) -> None:
        p.add_argument("--seed", type=int, default=settings.world.seed,
                       help="seed of every random choice (default %(default)s, RTREC_SEED)")
        if world:
            p.add_argument("--world-dir", type=Path, default=None,
                           help="folder with catalog.csv, users.csv, features.json "
                                "(default: the shipped contract/data when the seed matches)")
            p.add_argument("--oracle", default=settings.world.oracle,
                           help="click oracle: a name (rules, flat) or a dotted path "
                                "pkg.module:Class (default %(default)s, RTREC_ORACLE)")
            p.add_argument("--p-morning", type=float, default=0.5,
                           help="probability a visit is in the morning, 6-12 h (default 0.5; "
                                "uniform clock time is 0.25)")
            p.add_argument("--p-weekend", type=float, default=0.5,
                           help="probability a visit is on a weekend (default 0.5; uniform "
                                "calendar is 2/7)")
        p.add_argument("--results-dir", type=Path, default=Path("results"),
                       help="where figures are written (default %(default)s)")

    p = sub.add_parser("world", help="regenerate catalog.csv, users.csv, features.json",
                       description="Make the catalog, the Faker users and fit the feature "
                                   "transforms from the seed; write them to --out.")
    common(p, world=False)
    p.add_argument("--out", type=Path, default=DATA_DIR, help="output folder (default: "
                   "contract/data, the shipped files)")
    p.set_defaults(func=cmd_world)

    p = sub.add_parser("prepare-data", help="write the historical log (10,000 events)",
                       description="Random user, random product, visit time from the context "
                                   "distribution, click from the oracle. Writes history.jsonl "
                                   "(event schema) and history.csv to --data-dir and "
                                   "results/prepare_data.json.")
    common(p)
    p.add_argument("--events", type=int, default=10_000, help="number of events")
    p.add_argument("--data-dir", type=Path, default=Path(settings.world.data_dir),
                   help="output folder of the log (default %(default)s, RTREC_DATA_DIR)")
    p.set_defaults(func=cmd_prepare_data)

    p = sub.add_parser("evaluate", help="offline evaluation of six policies with Mab2Rec",
                       description="Random, Popularity, LinGreedy, LinUCB, LinTS, ClustersTS "
                                   "at top-5 on the historical log of the seed (80/20 split): "
                                   "AUC, CTR, Precision@5, Recall@5 and the oracle's CTR@5. "
                                   "Writes results/offline_eval.{json,csv,png}.")
    common(p)
    p.add_argument("--events", type=int, default=10_000, help="events in the log")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("load", help="publish synthetic events to Kafka at a rate",
                       description="Impressions (5 random products, x of a simulated visit) "
                                   "and clicks (oracle, first click in reading order) to the "
                                   "impressions/clicks topics at --rate events/s.")
    common(p)
    p.add_argument("--rate", type=float, default=20_000, help="events per second "
                   "(default %(default)s)")
    p.add_argument("--duration", type=float, default=None, help="seconds to run")
    p.add_argument("--count", type=int, default=None, help="events to send")
    p.add_argument("--bad-fraction", type=float, default=0.0,
                   help="share of impressions replaced by malformed events (header rtrec-bad)")
    p.add_argument("--replay", type=Path, default=None,
                   help="send the events of a JSON-lines file instead (e.g. history.jsonl)")
    p.add_argument("--bootstrap", default=None,
                   help=f"Kafka bootstrap servers (default {settings.kafka.bootstrap}, "
                        "RTREC_KAFKA_BOOTSTRAP)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_load)

    p = sub.add_parser("forget-user", help="request the deletion of a user (docs/PRIVACY.md)",
                       description="Write a deletion request to the compacted deletions topic "
                                   "(RTREC_TOPIC_DELETIONS), wait for Kafka's acknowledgement, "
                                   "then remove the profile from the user table "
                                   "(RTREC_USER_TABLE). The job unlearns the user exactly once. "
                                   "An unknown id is still recorded (the job may have learned "
                                   "from it) and reported with profile_removed false.")
    p.add_argument("user_id", type=int, help="the user's id")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="seconds to wait for Kafka's acknowledgement (default %(default)s)")
    p.set_defaults(func=None)

    from producer.live_catalog import add_parsers

    add_parsers(sub)  # catalog load|set|retire|list, users load (docs/CATALOG.md)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args = build_parser(settings).parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "load":
            if args.bootstrap:
                settings = settings.override(RTREC_KAFKA_BOOTSTRAP=args.bootstrap)
            return cmd_load(args, settings)
        if args.command == "forget-user":
            return cmd_forget(args, settings)
        if args.command in ("catalog", "users"):
            from producer.live_catalog import cmd_catalog, cmd_users

            return (cmd_catalog if args.command == "catalog" else cmd_users)(args, settings)
        return int(args.func(args))
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
