"""Spec worlds (issue 13, item 6): what a learner reaches depends on the features it is given.

``python -m endtoend.spec_worlds`` (run by ``make simulate``) writes
``results/simulate_spec.json``, ``.md`` and ``.png``. In each world (a hidden oracle of
producer/oracle.py) and on each seed, LinUCB learners in this process (the contract's maths,
:class:`endtoend.simulation.InstantLinUCB`, the calibrated exploration serving uses by
default) see the same seeded visits and the same click draws; they differ only by the feature
spec that builds their x (contract/context_spec.py):

- ``shipped``: contract/data/context_spec.json, 15 features, linear in time of day and day
  kind and in age;
- ``crosses``: contract/data/context_spec_crosses.json, the same plus an age band (scaled age
  above 0.75) and the cross time of day x day kind (d = 23).

Worlds: ``rules`` (the reference rules, which the shipped features express) and
``rules_cross`` (:class:`producer.oracle.RulesCrossOracle`: which of two categories is best
flips with time of day x weekday, and the oldest users want salads). The figure per learner is
the oracle ratio: the mean attraction P(click) of its first slot over the oracle's best, over
all visits and over the last ``LATE`` (what the model class reaches once it has learned).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from contract.context_spec import SHIPPED_SPEC
from contract.features import DATA_DIR, FeatureSpace, load_catalog, load_users
from endtoend.simulation import (
    InstantLinUCB,
    RandomPolicy,
    SimulatedShop,
    Visit,
    first_click,
    make_visits,
)
from producer.oracle import load_oracle

log = logging.getLogger(__name__)

SPECS: dict[str, Path] = {"shipped": SHIPPED_SPEC,
                          "crosses": DATA_DIR / "context_spec_crosses.json"}
WORLDS = ("rules", "rules_cross")
LATE = 1000  # visits at the end over which the "late" ratio is taken
K = 5
WINDOW = 250  # visits of the rolling mean for "reaches 0.95 of the oracle"
LEVEL = 0.95


def reach(top1: np.ndarray, best: np.ndarray, level: float = LEVEL,
          window: int = WINDOW) -> tuple[int | None, int | None]:
    """(after how many visits the rolling ``window``-visit mean of the first slot's attraction
    first reaches ``level`` of the oracle's, after how many it stays there to the end); None:
    never."""
    if top1.size < window:
        return None, None
    k = np.ones(window)
    above = np.convolve(top1, k, "valid") >= level * np.convolve(best, k, "valid")
    if not above.any():
        return None, None
    below = np.flatnonzero(~above)
    stays = 0 if below.size == 0 else int(below[-1]) + 1
    return int(np.argmax(above)) + window, (stays + window if stays < above.size else None)


def run_world(world: str, visits: Sequence[Visit], seed: int,
              specs: dict[str, Path] | None = None) -> dict[str, dict[str, float]]:
    """Every spec's learner (and a random list) on the same visits and click draws."""
    specs = SPECS if specs is None else specs
    products = load_catalog()
    base = FeatureSpace.load()
    shop = SimulatedShop(products, base, load_oracle(world, base))
    shop.prepare(visits)
    spaces = {name: base.with_spec(path) for name, path in specs.items()}
    xs = {name: fs.context_matrix([v.user for v in visits], [v.at for v in visits])
          for name, fs in spaces.items()}
    learners = {name: InstantLinUCB(len(products), fs.dim, exploration="calibrated")
                for name, fs in spaces.items()}
    random = RandomPolicy(len(products), seed)
    top1: dict[str, list[float]] = {n: [] for n in [*learners, "random"]}
    clicks: dict[str, int] = dict.fromkeys(top1, 0)
    best: list[float] = []
    for v in visits:
        p = shop.probabilities(v)
        best.append(float(p.max()))
        for name, lr in learners.items():
            x = xs[name][v.index]
            shown = lr.recommend(v, x, K)
            clicked = first_click(v.draws, p[shown.items])
            lr.feedback(v, x, shown, clicked)
            top1[name].append(float(p[shown.items[0]]))
            clicks[name] += clicked == 0
        shown = random.recommend(v, xs["shipped" if "shipped" in xs else next(iter(xs))][0], K)
        top1["random"].append(float(p[shown.items[0]]))
        clicks["random"] += first_click(v.draws, p[shown.items]) == 0
    b = np.asarray(best)
    out = {}
    for name, t in top1.items():
        a = np.asarray(t)
        first, stays = reach(a, b)
        out[name] = {"oracle_ratio": float(a.sum() / b.sum()),
                     f"first_reaches_{LEVEL}": first, f"stays_above_{LEVEL}_from": stays,
                     "oracle_ratio_late": float(a[-LATE:].sum() / b[-LATE:].sum()),
                     "top1_ctr": clicks[name] / len(visits),
                     "regret": float((b - a).sum()),
                     "dim": spaces[name].dim if name in spaces else None,
                     "trace": a}  # dropped before writing
    out["oracle"] = {"mean_top1_attraction": float(b.mean())}  # type: ignore[assignment]
    out["_best"] = {"trace": b}  # type: ignore[assignment]
    return out


def run(visits_n: int = 5000, seeds: Sequence[int] = (1, 2, 3, 4),
        results_dir: Path = Path("results")) -> dict:
    """Every world x seed; writes results/simulate_spec.json, .md and .png, returns the JSON."""
    t0 = time.monotonic()
    users = load_users()
    out: dict = {"visits": visits_n, "seeds": list(seeds), "late_visits": LATE,
                 "rolling_window": WINDOW,
                 "exploration": "calibrated",
                 "specs": {n: {"file": str(p.relative_to(DATA_DIR.parent.parent)),
                               "dim": FeatureSpace.load(spec=p).dim,
                               "ref": FeatureSpace.load(spec=p).context.ref}
                           for n, p in SPECS.items()},
                 "worlds": {}}
    curves: dict = {}
    for world in WORLDS:
        per_seed = {}
        for seed in seeds:
            res = run_world(world, make_visits(visits_n, seed, users, K), seed)
            if seed == seeds[0]:
                curves[world] = {n: (r["trace"], res["_best"]["trace"]) for n, r in res.items()
                                 if n not in ("oracle", "_best")}
            per_seed[str(seed)] = {n: {k: v for k, v in r.items() if k != "trace"}
                                   for n, r in res.items() if n != "_best"}
            log.info("%s seed %d: %s", world, seed,
                     {n: round(r["oracle_ratio"], 3) for n, r in res.items()
                      if "oracle_ratio" in r})
        names = [n for n in per_seed[str(seeds[0])] if n != "oracle"]
        summary = {}
        for n in names:
            ratios = [per_seed[str(s)][n]["oracle_ratio"] for s in seeds]
            late = [per_seed[str(s)][n]["oracle_ratio_late"] for s in seeds]
            summary[n] = {"oracle_ratio_mean": float(np.mean(ratios)),
                          "oracle_ratio_min": float(np.min(ratios)),
                          "oracle_ratio_max": float(np.max(ratios)),
                          "oracle_ratio_late_mean": float(np.mean(late))}
        out["worlds"][world] = {
            "per_seed": per_seed, "summary": summary,
            "crosses_above_shipped_every_seed": all(
                per_seed[str(s)]["crosses"]["oracle_ratio"]
                > per_seed[str(s)]["shipped"]["oracle_ratio"] for s in seeds)}
    out["seconds"] = round(time.monotonic() - t0, 1)
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "simulate_spec.json").write_text(json.dumps(out, indent=2) + "\n")
    md = table(out)
    (results_dir / "simulate_spec.md").write_text(md + "\n")
    _plot(curves, results_dir / "simulate_spec.png")
    print(md)
    return out


def table(out: dict) -> str:
    """The results as Markdown (docs/FEATURES.md quotes it)."""
    rows = [f"{out['visits']} visits per run, seeds {out['seeds']}; oracle ratio = mean "
            f"attraction of the first slot / the oracle's best (late: the last "
            f"{out['late_visits']} visits)", "",
            "| world | learner (d) | oracle ratio, mean (min-max) | late, mean | "
            + " | ".join(f"seed {s}" for s in out["seeds"]) + " |",
            "| --- | --- | --- | --- | " + " | ".join("---" for _ in out["seeds"]) + " |"]
    reach_rows = ["", f"Visits after which the {out['rolling_window']}-visit mean of the "
                  f"first slot's attraction first reaches {LEVEL} of the oracle's / stays at or "
                  f"above it to the end (-: never), per seed", "",
                  "| world | learner | " + " | ".join(f"seed {s}" for s in out["seeds"]) + " |",
                  "| --- | --- | " + " | ".join("---" for _ in out["seeds"]) + " |"]
    for world, res in out["worlds"].items():
        for n in ("shipped", "crosses"):
            cells = []
            for sd in out["seeds"]:
                r = res["per_seed"][str(sd)][n]
                cells.append(f"{r[f'first_reaches_{LEVEL}'] or '-'} / "
                             f"{r[f'stays_above_{LEVEL}_from'] or '-'}")
            reach_rows.append(f"| {world} | {n} | " + " | ".join(cells) + " |")
    for world, res in out["worlds"].items():
        for n, s in res["summary"].items():
            d = out["specs"][n]["dim"] if n in out["specs"] else "-"
            per = " | ".join(f"{res['per_seed'][str(sd)][n]['oracle_ratio']:.3f}"
                             for sd in out["seeds"])
            rows.append(f"| {world} | {n} ({d}) | {s['oracle_ratio_mean']:.3f} "
                        f"({s['oracle_ratio_min']:.3f}-{s['oracle_ratio_max']:.3f}) | "
                        f"{s['oracle_ratio_late_mean']:.3f} | {per} |")
    return "\n".join(rows + reach_rows)


def _plot(curves: dict, path: Path, window: int = 250) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(12, 4), squeeze=False)
    kernel = np.ones(window) / window
    for ax, (world, traces) in zip(axes[0], curves.items(), strict=True):
        for n, (top1, best) in traces.items():
            ax.plot(np.convolve(top1, kernel, "valid") / np.convolve(best, kernel, "valid"),
                    label=n)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{world}: first slot's attraction / oracle's ({window}-visit mean)")
        ax.set_xlabel("visit")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m endtoend.spec_worlds", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--visits", type=int, default=5000)
    parser.add_argument("--seeds", default="1,2,3,4", help="comma-separated seeds of the visits")
    parser.add_argument("--results", default="results", help="folder of the results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                                                   "%(message)s")
    run(args.visits, [int(s) for s in args.seeds.split(",") if s.strip()], Path(args.results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
