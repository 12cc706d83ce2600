"""Are the off-policy estimates believable? The simulator's answer (docs/EXPERIMENTS.md).

The exploring logging policy (Plackett-Luce over LinUCB's UCB scores with a uniform share,
contract/slates.py) runs online for N seeded visits with an in-process LinUCB learner (the
contract's maths, the job's rule: the clicked product reward 1, the other shown 0) and the
simulator's cascade clicks (endtoend/simulation.py: the hidden oracle, one uniform draw per
slot). Its log - impressions with their list, prefix and slot probabilities and the shadow
lists, and clicks, as JSON lines - is then read by the very command a user runs,
``python -m evaluation ope --file``.

What "the target's CTR" is here. A target is a *shadow*: at each visit it ranks with the
parameters the logging policy's learner had at that visit (LinUCB with alpha 0.5 or 2,
greedy), or from the log so far (popularity: the most clicked products), or at random. That is
a fixed policy given the history, which is what off-policy evaluation can estimate; a target
that learned from its own choices would have another history, which no log of another policy
shows. Its online CTR comes from showing its list on the same visit to the same simulated user
(same draws): the clicks it would have had. ``expected_ctr`` is the same without the draws'
noise (the oracle's probabilities).

``run`` writes results/ope.json, ope.md (the table) and ope.png; ``python -m endtoend ope``
runs it, and ``make simulate`` too. With ``--in-stream`` the same log also goes through the
real job (Kafka, Redis, a Flink mini-cluster: the stack is started if it is not running): the
job's running estimates (flink_job/evaluate.py, Redis ``<prefix>:ope:<target>``) once every
window has closed go beside the command's in results/ope.json (``in_stream``,
``in_stream_abs_diff``; the target: within 0.01). ``--in-stream-only`` does that for the log and
results/ope.json an earlier run left (the logging takes ~20 minutes on this machine).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from contract import linucb
from contract.events import Click, Impression
from contract.features import CONTEXT_DIM
from contract.slates import PlackettLuce
from endtoend.loop import LiveWorld
from endtoend.simulation import InstantLinUCB, first_click, make_visits

log = logging.getLogger(__name__)

TARGETS: dict[str, float] = {"linucb_a0.5": 0.5, "linucb_a2": 2.0, "greedy": 0.0}
"""Shadow targets ranked by the live learner: name -> alpha."""
EVALUATED = ("linucb_a0.5", "linucb_a2", "greedy", "popularity", "random")
ESTIMATORS = ("ips", "snips", "dr", "slate")
ROOT = Path(__file__).resolve().parent.parent
T0_MS = 1_767_225_600_000  # 2026-01-01: the log's clock, one visit every 20 ms


@dataclass(frozen=True)
class OpeOptions:
    visits: int = 20_000
    seed: int = 1237
    oracle: str = "rules"
    k: int = 5
    alpha: float = 1.0  # the logging policy's UCB alpha
    temperature: float = 0.1
    epsilon: float = 0.2
    n_boot: int = 500
    results_dir: Path = Path("results")
    work_dir: Path = Path("var/ope")
    progress: bool = True


@dataclass
class _Online:
    top1: list[int]
    any_click: list[int]
    expected_top1: list[float]
    expected_list: list[float]

    @classmethod
    def empty(cls) -> _Online:
        return cls([], [], [], [])

    def add(self, clicked: int | None, probs: np.ndarray) -> None:
        self.top1.append(int(clicked == 0))
        self.any_click.append(int(clicked is not None))
        self.expected_top1.append(float(probs[0]))
        self.expected_list.append(float(1.0 - np.prod(1.0 - probs)))


def write_log(opts: OpeOptions, path: Path) -> dict[str, Any]:
    """Run the logging policy and the targets online; write the log; return the targets'
    online CTRs and the logging policy's own."""
    from tqdm import tqdm

    world = LiveWorld.load(opts.oracle)
    shop = world.shop
    ids = [p.product_id for p in shop.products]
    m, k = len(ids), opts.k
    visits = make_visits(opts.visits, opts.seed, world.users, k)
    shop.prepare(visits)
    learner = InstantLinUCB(m, CONTEXT_DIM, alpha=opts.alpha)
    rng = np.random.default_rng([opts.seed, 31])  # the logging policy's draws
    rng_random = np.random.default_rng([opts.seed, 37])  # the random target's lists
    online = {name: _Online.empty() for name in (*EVALUATED, "logging")}
    clicks_so_far = np.zeros(m)
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with path.open("w", encoding="utf-8") as out, \
            tqdm(total=len(visits), unit="visit", disable=None if opts.progress else True) as bar:
        for v in visits:
            x = shop.features.context_vector(v.user, v.at)
            probs = shop.probabilities(v)
            scores = linucb.ucb_scores(learner.theta, learner.A_inv, x, opts.alpha)
            pl = PlackettLuce(scores, opts.temperature, opts.epsilon)
            shown = [int(i) for i in pl.sample(k, rng)]
            clicked = first_click(v.draws, probs[shown])
            online["logging"].add(clicked, probs[shown])
            shadows: dict[str, list[int]] = {}
            for name, alpha in TARGETS.items():
                s = linucb.ucb_scores(learner.theta, learner.A_inv, x, alpha)
                shadows[name] = [int(i) for i in linucb.top_k(s, k)]
            lists = {**shadows, "popularity": [int(i) for i in linucb.top_k(clicks_so_far, k)],
                     "random": [int(i) for i in rng_random.choice(m, size=k, replace=False)]}
            for name in EVALUATED:
                lst = lists[name]
                online[name].add(first_click(v.draws, probs[lst]), probs[lst])
            ts = T0_MS + 20 * v.index
            request_id = f"ope-{opts.seed}-{v.index}"
            imp = Impression(request_id=request_id, user_id=v.user.user_id, ts_ms=ts,
                             x=tuple(float(a) for a in x), products=tuple(ids[i] for i in shown),
                             scores=tuple(float(scores[i]) for i in shown),
                             policy="plackett_luce", model_version=int(learner.n.sum()),
                             propensity=pl.list_probability(shown),
                             prefix_propensities=tuple(pl.prefix_probabilities(shown)),
                             slot_propensities=tuple(pl.slot_marginals(shown)),
                             shadows={n: [ids[i] for i in lst] for n, lst in shadows.items()},
                             experiment="ope-validation", variant="explore")
            out.write(imp.to_json().decode() + "\n")
            if clicked is not None:
                out.write(Click(request_id=request_id, product_id=ids[shown[clicked]],
                                ts_ms=ts + 5).to_json().decode() + "\n")
                clicks_so_far[shown[clicked]] += 1
            for pos, item in enumerate(shown):
                learner.learn(item, x, 1.0 if pos == clicked else 0.0)
            bar.update(1)
    log.info("logged %d visits in %.1f s", len(visits), time.monotonic() - started)
    return {name: {"online_ctr": float(np.mean(o.top1)),
                   "online_list_ctr": float(np.mean(o.any_click)),
                   "expected_ctr": float(np.mean(o.expected_top1)),
                   "expected_list_ctr": float(np.mean(o.expected_list))}
            for name, o in online.items()}


def run_command(log_path: Path, json_path: Path, opts: OpeOptions) -> dict[str, Any]:
    """``python -m evaluation ope --file`` on the log: the command a user runs."""
    cmd = [sys.executable, "-m", "evaluation", "ope", "--file", str(log_path),
           "--json", str(json_path), "--targets", ",".join(EVALUATED),
           "--n-boot", str(opts.n_boot), "--seed", str(opts.seed)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(json_path.read_text())


def in_stream(log_path: Path, work_dir: Path, timeout_s: float = 900.0) -> dict[str, Any]:
    """Feed the log through the real job and return its in-stream estimates per target once
    every impression has closed. The log's clock is moved so its newest event is a minute old
    (the job refuses events older than RTREC_MAX_EVENT_AGE_S); the events keep their order
    and gaps, so every click stays inside its window, and the job orders by that time as the
    command orders by ts_ms."""
    import uuid

    from contract.config import Settings
    from contract.store import redis_client
    from devstack.stack import Stack
    from endtoend.harness import JobProcess, now_ms, produce, sentinels

    lines = [ln for ln in log_path.read_bytes().splitlines() if ln.strip()]
    events = [(ln, json.loads(ln)) for ln in lines]
    n_imp = sum(1 for _, d in events if d.get("type") == "impression")
    newest = max(d["ts_ms"] for _, d in events)
    shift = now_ms() - 60_000 - newest
    base = Settings.from_env()
    stack = Stack(base)
    already = {name for name, st in stack.status().items() if st["running"]}
    stack.up(timeout_s=120)
    tag = f"ope{uuid.uuid4().hex[:6]}"
    settings = base.isolated(tag, work_dir)
    Stack(settings).create_topics()
    k = settings.kafka
    records = sorted(((k.topic_impressions if d.get("type") == "impression" else k.topic_clicks,
                       raw, d["ts_ms"] + shift, None) for raw, d in events), key=lambda r: r[2])
    produce(settings, records + sentinels(settings, now_ms() + 30_000))
    job = JobProcess(settings, work_dir / tag / "job.log").start()
    r = redis_client(settings.redis)
    got: dict[str, Any] = {}
    t0 = time.monotonic()
    try:
        while True:
            if not job.alive():
                raise RuntimeError(f"the job exited; see {job.log_path}")
            got = {key.decode().rsplit(":", 1)[1]: json.loads(r.get(key) or b"{}")
                   for key in r.scan_iter(f"{settings.redis.prefix}:ope:*")}
            if got and all(g.get("impressions") == n_imp for g in got.values()):
                break
            if time.monotonic() - t0 > timeout_s:
                raise RuntimeError(f"the job's estimates did not cover the {n_imp} impressions "
                                   f"within {timeout_s:.0f}s; see {job.log_path}")
            time.sleep(1.0)
        log.info("in-stream estimates of %d impressions after %.0f s", n_imp,
                 time.monotonic() - t0)
    finally:
        job.kill()
        if not already:
            stack.down()
    return got


def add_in_stream(res: dict[str, Any], stream: dict[str, Any]) -> dict[str, Any]:
    """``in_stream`` (the job's estimates) and ``in_stream_abs_diff`` (|job - command|) per
    target, and whether every difference is within 0.01 (the acceptance)."""
    res["in_stream"] = {name: {e: stream[name][e] for e in ("ips", "snips", "dr", "ess", "n")}
                        | {"logged_top1_ctr": stream[name]["logged_top1_ctr"]}
                        for name in res["targets"] if name in stream}
    diffs = {name: {e: abs(stream[name][e] - res["targets"][name]["estimators"][e]["estimate"])
                    for e in ("ips", "snips", "dr")}
             for name in res["in_stream"]}
    res["in_stream_abs_diff"] = diffs
    worst = max((d for t in diffs.values() for d in t.values()), default=float("nan"))
    res["checks"]["in_stream"] = {"max_abs_diff": worst,
                                  "targets": len(diffs), "of": len(res["targets"]),
                                  "within_0.01": len(diffs) == len(res["targets"])
                                  and worst <= 0.01}
    return res


def assemble(online: dict[str, Any], estimates: dict[str, Any], opts: OpeOptions
             ) -> dict[str, Any]:
    """results/ope.json: per target its online CTR and each estimator's estimate, interval
    and ESS; ips/snips/dr of the top-1 CTR (``online_ctr``), slate of the list CTR
    (``online_list_ctr``), as each entry's ``metric`` says; and the acceptance checks."""
    targets: dict[str, Any] = {}
    for name in EVALUATED:
        est = estimates["targets"][name]
        entry = {**online[name], "n": est["n"], "estimators": {}, "list_estimators": {}}
        for e in ("ips", "snips", "dr"):
            entry["estimators"][e] = {**est["top1"][e], "metric": "top1"}
        entry["estimators"]["slate"] = {**est["list"]["slate"], "metric": "list"}
        for e, val in est["list"].items():
            entry["list_estimators"][e] = {**val, "metric": "list"}
        targets[name] = entry
    checks = {}
    mean_online = float(np.mean([t["online_ctr"] for t in targets.values()]))
    for e in ("ips", "snips", "dr", "slate"):
        truth_key = "online_list_ctr" if e == "slate" else "online_ctr"
        errs = [abs(t["estimators"][e]["estimate"] - t[truth_key]) for t in targets.values()]
        cover = [t["estimators"][e]["ci_low"] <= t[truth_key] <= t["estimators"][e]["ci_high"]
                 for t in targets.values()]
        mean_truth = float(np.mean([t[truth_key] for t in targets.values()]))
        checks[e] = {"metric": "list" if e == "slate" else "top1",
                     "coverage": float(np.mean(cover)), "mae": float(np.mean(errs)),
                     "mae_over_mean_online": float(np.mean(errs) / mean_truth)}
    passed = all(checks[e]["coverage"] >= 0.8 and checks[e]["mae_over_mean_online"] <= 0.15
                 for e in ("snips", "dr"))
    return {"visits": opts.visits, "seed": opts.seed, "oracle": opts.oracle,
            "logging_policy": {"policy": "plackett_luce", "alpha": opts.alpha,
                               "temperature": opts.temperature, "epsilon": opts.epsilon,
                               "k": opts.k, **online["logging"]},
            "targets": targets, "checks": checks, "mean_online_ctr": mean_online,
            "passed": passed,
            "acceptance": "SNIPS and DR (top-1): interval covers online_ctr for >= 80% of "
                          "targets and MAE <= 15% of the mean online CTR"}


def markdown(res: dict[str, Any]) -> str:
    lines = [f"Off-policy estimates from {res['visits']} visits of the Plackett-Luce logging "
             f"policy (seed {res['seed']}); top-1 CTR for ips/snips/dr, list CTR for slate.", "",
             "| target | online top-1 | ips | snips | dr | online list | slate |",
             "| --- | --- | --- | --- | --- | --- | --- |"]

    def cell(e: dict[str, Any]) -> str:
        return f"{e['estimate']:.3f} [{e['ci_low']:.3f}, {e['ci_high']:.3f}] ESS {e['ess']:.0f}"

    for name, t in res["targets"].items():
        es = t["estimators"]
        lines.append(f"| {name} | {t['online_ctr']:.3f} | {cell(es['ips'])} | "
                     f"{cell(es['snips'])} | {cell(es['dr'])} | {t['online_list_ctr']:.3f} | "
                     f"{cell(es['slate'])} |")
    lines.append("")
    for e, c in res["checks"].items():
        if e == "in_stream":  # below
            continue
        lines.append(f"- {e} ({c['metric']}): covers {c['coverage']:.0%} of targets, MAE "
                     f"{c['mae']:.4f} = {c['mae_over_mean_online']:.1%} of the mean online CTR")
    lines.append(f"- acceptance ({res['acceptance']}): {'met' if res['passed'] else 'NOT met'}")
    if "in_stream" in res:
        c = res["checks"]["in_stream"]
        lines.append(f"- in the stream (the real job on the same log): largest |job - command| "
                     f"{c['max_abs_diff']:.2e} over {c['targets']} of {c['of']} targets "
                     f"(target <= 0.01: {'met' if c['within_0.01'] else 'NOT met'})")
    return "\n".join(lines) + "\n"


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(res["targets"])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, (metric, ests, truth) in zip(axes, [
            ("top-1 CTR", ("ips", "snips", "dr"), "online_ctr"),
            ("list CTR", ("ips", "snips", "dr", "slate", "position"), "online_list_ctr")],
            strict=True):
        for j, e in enumerate(ests):
            for i, n in enumerate(names):
                src = res["targets"][n]["list_estimators" if metric == "list CTR"
                                        else "estimators"][e]
                xpos = i + (j - len(ests) / 2) * 0.12
                ax.errorbar(xpos, src["estimate"], yerr=[[src["estimate"] - src["ci_low"]],
                                                         [src["ci_high"] - src["estimate"]]],
                            fmt="o", color=f"C{j}", label=e if i == 0 else None, ms=4)
        ax.scatter(range(len(names)), [res["targets"][n][truth] for n in names], marker="_",
                   s=600, color="k", label="online", zorder=3)
        ax.set_xticks(range(len(names)), names, rotation=20)
        ax.set_title(f"{metric}: estimates (95% CI) vs online")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(opts: OpeOptions, stream: bool = False, stream_only: bool = False) -> dict[str, Any]:
    """The whole validation; writes results/ope.{json,md,png} and returns the JSON. ``stream``:
    the log through the real job too; ``stream_only``: only that, on the log and
    results/ope.json of an earlier run."""
    opts.work_dir.mkdir(parents=True, exist_ok=True)
    opts.results_dir.mkdir(parents=True, exist_ok=True)
    log_path = opts.work_dir / "log.jsonl"
    if stream_only:
        res = json.loads((opts.results_dir / "ope.json").read_text())
    else:
        online = write_log(opts, log_path)
        estimates = run_command(log_path, opts.work_dir / "estimates.json", opts)
        res = assemble(online, estimates, opts)
    if stream or stream_only:
        got = in_stream(log_path, opts.work_dir)
        (opts.work_dir / "in_stream.json").write_text(json.dumps(got, indent=2) + "\n")
        res = add_in_stream(res, got)
    (opts.results_dir / "ope.json").write_text(json.dumps(res, indent=2) + "\n")
    (opts.results_dir / "ope.md").write_text(markdown(res))
    try:
        plot(res, opts.results_dir / "ope.png")
    except Exception as exc:  # the figure is a convenience; the JSON is the result
        log.warning("ope.png not drawn: %s", exc)
    return res



def main(argv: list[str] | None = None) -> int:
    """``python -m endtoend.ope_validation`` (``make simulate`` runs it after the loop)."""
    import argparse

    d = OpeOptions()
    parser = argparse.ArgumentParser(prog="python -m endtoend.ope_validation",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--visits", type=int, default=d.visits, help="default %(default)s")
    parser.add_argument("--seed", type=int, default=d.seed, help="default %(default)s")
    parser.add_argument("--oracle", default=d.oracle, help="hidden click oracle (rules, flat)")
    parser.add_argument("--temperature", type=float, default=d.temperature,
                        help="softmax temperature of the logging policy (default %(default)s)")
    parser.add_argument("--epsilon", type=float, default=d.epsilon,
                        help="its share of uniformly random lists (default %(default)s)")
    parser.add_argument("--alpha", type=float, default=d.alpha,
                        help="its UCB alpha (default %(default)s)")
    parser.add_argument("--n-boot", type=int, default=d.n_boot, help="bootstrap resamples")
    parser.add_argument("--results-dir", type=Path, default=d.results_dir)
    parser.add_argument("--work-dir", type=Path, default=d.work_dir)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--in-stream", action="store_true",
                        help="also run the log through the real job and compare its in-stream "
                             "estimates (starts the stack when it is not running)")
    parser.add_argument("--in-stream-only", action="store_true",
                        help="only that, on the log and results/ope.json of an earlier run")
    args = parser.parse_args(argv)
    if args.visits < 1 or not args.temperature > 0 or not 0 <= args.epsilon < 1:
        parser.error("--visits >= 1, --temperature > 0 and 0 <= --epsilon < 1")
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    opts = OpeOptions(visits=args.visits, seed=args.seed, oracle=args.oracle,
                      temperature=args.temperature, epsilon=args.epsilon, alpha=args.alpha,
                      n_boot=args.n_boot, results_dir=args.results_dir, work_dir=args.work_dir,
                      progress=not args.no_progress)
    try:
        res = run(opts, stream=args.in_stream, stream_only=args.in_stream_only)
    except (RuntimeError, OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
