"""``python -m endtoend``: the whole system end to end.

  demo      ``make demo``, ``make simulate``: starts Kafka and Redis when they are not running
            (and stops what it started), writes the historical log when missing, then runs the
            closed loop: the real Flink job learns from what serving showed and the hidden
            oracle clicked, while random, the oracle's own best list and an instant in-process
            LinUCB run on the same visits. Writes results/simulate.json and simulate.png.
  visitors  simulated users against a running serving's HTTP API (the containers' simulator):
            recommend, read the list, click as the hidden oracle says.
  feedback  the feedback worlds of docs/LEARNING.md (cascade and position click models,
            purchases, a drifting oracle), in-process learners on the same seeded visits;
            writes results/simulate_feedback.json and .png (``make simulate`` runs it).
  churn     catalog churn: products added and retired mid-run, new products started from the
            identity or from their category's prior (docs/LEARNING.md); in-process learners on
            the same seeded visits; writes results/simulate_churn.json and .png.
  spec-worlds  the shipped feature spec against one with buckets and crosses, in a world
            with rules the shipped one cannot express (docs/FEATURES.md); in-process learners
            on the same seeded visits; writes results/simulate_spec.json, .md and .png.

Settings come from RTREC_* variables (docs/CONFIG.md); flags override them. Errors are one
line on stderr: exit 2 for bad arguments, 1 when the run fails.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from contract.config import Settings
from contract.errors import RtrecError
from endtoend.loop import STARTS, LoopOptions
from producer.context import ContextDistribution

QUICK_VISITS = 600
DEFAULT_VISITS = 2000


def build_parser(settings: Settings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m endtoend", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("demo", help="run the whole system end to end, then stop it")
    p.add_argument("--visits", type=int, default=None,
                   help=f"visits per start (default {DEFAULT_VISITS}; {QUICK_VISITS} "
                        "with --quick)")
    p.add_argument("--quick", action="store_true", help="a short run")
    p.add_argument("--rate", type=float, default=50.0, help="visits per second")
    p.add_argument("--starts", default=",".join(STARTS),
                   help="comma-separated: bootstrapped (from the historical log), cold")
    p.add_argument("--via", choices=["inprocess", "http"], default="inprocess",
                   help="how visits reach serving: the library in this process, or HTTP to "
                        "`python -m serving` started on a free loopback port")
    p.add_argument("--oracle", default=settings.world.oracle,
                   help="hidden click oracle of the visits and of the historical log: a name "
                        "(rules, flat) or pkg.module:Class (default %(default)s, RTREC_ORACLE)")
    p.add_argument("--seed", type=int, default=settings.world.seed,
                   help="seed of the visits (default %(default)s, RTREC_SEED)")
    p.add_argument("--p-morning", type=float, default=0.5,
                   help="probability a visit is in the morning, 6-12 h (default 0.5)")
    p.add_argument("--p-weekend", type=float, default=0.5,
                   help="probability a visit is on a weekend (default 0.5)")
    p.add_argument("--history", type=Path, default=Path(settings.world.data_dir) / "history.jsonl",
                   help="historical log of the bootstrapped start (written when missing)")
    p.add_argument("--flink", choices=["cluster", "mini"], default="cluster",
                   help="where the job runs: the standalone cluster with its web UI on "
                        "127.0.0.1:RTREC_FLINK_REST_PORT (started when none answers, stopped "
                        "after), or a local mini-cluster per start (no UI)")
    p.add_argument("--work-dir", type=Path, default=Path("var/loop"),
                   help="the runs' logs and checkpoints (default %(default)s)")
    p.add_argument("--results-dir", type=Path, default=Path("results"))
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    f = sub.add_parser("feedback", help="the feedback and drift worlds (docs/LEARNING.md)")
    f.add_argument("--visits", type=int, default=5000, help="visits per world")
    f.add_argument("--seed", type=int, default=settings.world.seed, help="seed of the visits")
    f.add_argument("--shift-at", type=int, default=2500, help="visit of the drift")
    f.add_argument("--ramp", type=int, default=1000, help="visits of the gradual drift")
    f.add_argument("--half-life", type=float, default=300.0,
                   help="the decaying learner's half-life in observations per product")
    f.add_argument("--results-dir", type=Path, default=Path("results"))
    f.add_argument("--seeds", default="1,2,3",
                   help="more seeds of visits for each rule against `all` in its own world")

    c = sub.add_parser("churn", help="catalog churn and the category prior (docs/LEARNING.md)")
    c.add_argument("--visits", type=int, default=4000, help="visits per seed")
    c.add_argument("--seeds", default="1,2,3,4,5,6,7,8,9,10,11,12",
                   help="seeds of the visits, comma-separated")
    c.add_argument("--add", type=int, default=40, help="products added at --add-at")
    c.add_argument("--retire", type=int, default=8, help="products retired at --retire-at")
    c.add_argument("--add-at", type=int, default=1500, help="visit of the additions")
    c.add_argument("--retire-at", type=int, default=2500, help="visit of the retirements")
    c.add_argument("--pseudo-obs", type=float, default=settings.model.prior_pseudo_obs,
                   help="m of the category prior (RTREC_PRIOR_PSEUDO_OBS)")
    c.add_argument("--live", action="store_true",
                   help="also time catalog records -> serving with the real Kafka and Redis "
                        "(started when not running, and stopped after)")
    c.add_argument("--min-obs", type=int, default=settings.model.prior_min_obs,
                   help="observations a category's pool needs to inform (RTREC_PRIOR_MIN_OBS)")
    c.add_argument("--results-dir", type=Path, default=Path("results"))

    w = sub.add_parser("spec-worlds", help="feature specs in the rules and rules_cross "
                                           "worlds (docs/FEATURES.md)")
    w.add_argument("--visits", type=int, default=5000, help="visits per seed")
    w.add_argument("--seeds", default="1,2,3,4", help="seeds of the visits, comma-separated")
    w.add_argument("--results-dir", type=Path, default=Path("results"))

    v = sub.add_parser("visitors", help="simulated users against a running serving (HTTP)")
    v.add_argument("--url", default=f"http://{settings.serving.host}:{settings.serving.port}",
                   help="serving's base URL (default %(default)s, RTREC_SERVING_HOST/PORT)")
    v.add_argument("--visits", type=int, default=5000, help="visits to make")
    v.add_argument("--rate", type=float, default=20.0, help="visits per second")
    v.add_argument("--oracle", default=settings.world.oracle,
                   help="hidden click oracle (RTREC_ORACLE)")
    v.add_argument("--seed", type=int, default=settings.world.seed, help="seed of the visits")
    v.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def loop_options(args: argparse.Namespace, settings: Settings) -> LoopOptions:
    """The run the arguments ask for (every choice in one place: nothing is dropped between
    the command line and the loop)."""
    try:
        dist = ContextDistribution(args.p_morning, args.p_weekend)
    except (TypeError, ValueError) as exc:
        raise RtrecError(f"--p-morning/--p-weekend: {exc}") from exc
    visits = args.visits or (QUICK_VISITS if args.quick else DEFAULT_VISITS)
    starts = tuple(s.strip() for s in args.starts.split(",") if s.strip())
    return LoopOptions.from_settings(
        settings, visits=visits, rate=args.rate, seed=args.seed, oracle=args.oracle,
        starts=starts, via=args.via, history=args.history, results_dir=args.results_dir,
        dist=dist, progress=not args.no_progress, flink=args.flink, work_dir=args.work_dir)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args = build_parser(settings).parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request over HTTP
    if args.command == "feedback":
        from endtoend.feedback_worlds import run

        if not 0 < args.shift_at < args.visits or args.ramp < 0 or args.half_life <= 0:
            print("error: need 0 < --shift-at < --visits, --ramp >= 0, --half-life > 0",
                  file=sys.stderr)
            return 2
        run(args.visits, args.seed, args.shift_at, args.ramp, args.half_life, args.results_dir,
            [int(x) for x in args.seeds.split(",") if x.strip()])
        return 0
    if args.command == "churn":
        from endtoend.churn import run as run_churn

        if not 0 < args.add_at < args.retire_at < args.visits or args.add < 1 \
                or not 0 <= args.retire <= 200 or args.pseudo_obs < 0:
            print("error: need 0 < --add-at < --retire-at < --visits, --add >= 1, "
                  "0 <= --retire <= 200, --pseudo-obs >= 0", file=sys.stderr)
            return 2
        live = None
        if args.live:
            from devstack.stack import Stack
            from endtoend.churn import live_catalog_latency

            stack = Stack(settings)
            already = {n for n, st in stack.status().items() if st["running"]}
            stack.up(timeout_s=120)
            try:
                ls = settings.isolated(f"churn{os.getpid()}", Path(settings.stack.dir) / "churn")
                Stack(ls).create_topics()
                live = live_catalog_latency(ls)
                print(f"live catalog: record -> rankable {live['servable_after_add_ms']}, "
                      f"record -> hidden {live['hidden_after_retire_ms']}")
            finally:
                if not already:
                    stack.down()
        run_churn(args.visits, [int(x) for x in args.seeds.split(",") if x.strip()], args.add,
                  args.retire, args.add_at, args.retire_at, args.pseudo_obs, args.results_dir,
                  args.min_obs, live)
        return 0
    if args.command == "spec-worlds":
        from endtoend.spec_worlds import run as run_spec

        run_spec(args.visits, [int(x) for x in args.seeds.split(",") if x.strip()],
                 args.results_dir)
        return 0
    if args.command == "visitors":
        from endtoend.visitors import run_visitors

        try:
            print(run_visitors(args.url, args.visits, args.rate, args.oracle, args.seed,
                               settings.model.top_k, progress=not args.no_progress))
        except (RtrecError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0
    try:
        opts = loop_options(args, settings)
    except RtrecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from endtoend.demo import run_demo

    try:
        return run_demo(settings, opts)
    except RtrecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
