"""The feedback worlds of issue 15: which feedback rule and which forgetting fit which users.

``python -m endtoend feedback`` (run by ``make simulate``) writes
``results/simulate_feedback.json`` and ``.png``. Every learner is LinUCB in this process with
the contract's maths (:mod:`contract.feedback` rules, :func:`contract.linucb.
weighted_sherman_morrison`, the discount of docs/LEARNING.md), and all learners of a world
see the same seeded visits and the same uniform draws, so they differ only by what they
learn (docs/LEARNING.md gives the figures and the command).

Worlds (the hidden oracle gives the attraction P(click | seen) of each product):

- ``cascade``: the user reads top-down and clicks the first attractive product, then stops;
- ``position``: slot i is seen with probability ``EXAMINATION[i]``, independently, and each
  seen product is clicked when attractive (several clicks possible);
- both: a click is followed by a purchase with probability ``P_PURCHASE`` (reward: click 1,
  purchase 2, capped at 4, as the job's defaults);
- ``drift``: the cascade world whose oracle changes at visit ``shift_at`` (``rules`` ->
  ``rules_drifted``, producer/oracle.py), abruptly or linearly over ``ramp`` visits.

Metrics per learner: top-1 CTR (a click on the first slot), regret = sum over visits of
``P(best attraction) - P(attraction of the first slot)`` (expected, no click noise), and in the
drift world the visits after the shift until the mean attraction of its first slot over
``WINDOW`` visits reaches 90% of the new oracle's best.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from contract import feedback, linucb
from contract.features import CONTEXT_DIM, FeatureSpace, load_catalog, load_users
from endtoend.simulation import SimulatedShop, Visit, make_visits
from producer.oracle import load_oracle

log = logging.getLogger(__name__)

EXAMINATION = (1.0, 0.6, 0.45, 0.35, 0.3)
P_PURCHASE = 0.3
REWARDS = {"click": 1.0, "purchase": 2.0}
CAP = 4.0
WINDOW = 200  # visits of the rolling top-1 mean in the drift world
K = 5


@dataclass
class Learner:
    """Disjoint LinUCB over m products with a feedback rule and a discount (gamma = 1: none)."""

    name: str
    m: int
    dim: int
    mode: str = "all"
    gamma: float = 1.0
    alpha: float = 1.0
    l2: float = 1.0
    A_inv: np.ndarray = field(init=False)
    b: np.ndarray = field(init=False)
    theta: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.A_inv = np.repeat((np.eye(self.dim) / self.l2)[None], self.m, axis=0)
        self.b = np.zeros((self.m, self.dim))
        self.theta = np.zeros((self.m, self.dim))

    def recommend(self, x: np.ndarray, k: int = K) -> list[int]:
        scores = linucb.ucb_scores(self.theta, self.A_inv, x, self.alpha)
        return [int(i) for i in linucb.top_k(scores, k)]

    def learn(self, x: np.ndarray, shown: Sequence[int],
              events: Sequence[tuple[int, float]]) -> None:
        """One impression: the rule's items, each ``A <- gamma A + w x x^T``,
        ``b <- gamma b + r x`` (the job's maths, docs/LEARNING.md)."""
        items = feedback.items(self.mode, [str(i) for i in shown],
                               [(str(i), v) for i, v in events], CAP, EXAMINATION)
        for product, w, r in items:
            i = int(product)
            if self.gamma != 1.0 and w > 0:
                self.A_inv[i] /= self.gamma
                self.b[i] *= self.gamma
            if w != 0:
                self.A_inv[i] = linucb.weighted_sherman_morrison(self.A_inv[i], x, w)
            self.b[i] += r * x
            self.theta[i] = self.A_inv[i] @ self.b[i]


@dataclass
class Draws:
    """The uniforms of one visit, shared by every learner: click, examination, purchase."""

    click: np.ndarray
    exam: np.ndarray
    buy: np.ndarray


def make_draws(n: int, seed: int, k: int = K) -> list[Draws]:
    rng = np.random.default_rng([seed, 15])
    exam, buy = rng.random((n, k)), rng.random((n, k))
    return [Draws(np.zeros(k), exam[i], buy[i]) for i in range(n)]


def outcome(world: str, probs: np.ndarray, d: Draws) -> list[tuple[int, float]]:
    """(slot, value) of the reward events of one shown list: clicks, and purchases after
    them (one event per kind; the learner sums them up to the cap)."""
    slots: list[int] = []
    if world == "position":
        slots = [i for i, p in enumerate(probs)
                 if d.exam[i] < EXAMINATION[min(i, len(EXAMINATION) - 1)] and d.click[i] < p]
    else:
        for i, p in enumerate(probs):
            if d.click[i] < p:
                slots = [i]
                break
    events = [(i, REWARDS["click"]) for i in slots]
    events += [(i, REWARDS["purchase"]) for i in slots if d.buy[i] < P_PURCHASE]
    return events


def list_value(world: str, probs: np.ndarray) -> float:
    """Expected clicks of a shown list under the world's click model: P(any click) =
    ``1 - prod(1 - a_i)`` in the cascade world, ``sum e_i a_i`` in the position world."""
    probs = np.asarray(probs, dtype=np.float64)
    if world == "position":
        exam = np.array([EXAMINATION[min(i, len(EXAMINATION) - 1)] for i in range(probs.size)])
        return float(exam @ probs)
    return float(1.0 - np.prod(1.0 - probs))


def best_list_value(world: str, attractions: np.ndarray, k: int = K) -> float:
    """The oracle's best list: the k most attractive products, most attractive first (with
    decreasing examination that order is the best, by the rearrangement inequality)."""
    top = np.sort(np.asarray(attractions, dtype=np.float64))[::-1][:k]
    return list_value(world, top)


@dataclass
class Trace:
    top1_prob: list[float] = field(default_factory=list)
    best_prob: list[float] = field(default_factory=list)
    top1_click: list[bool] = field(default_factory=list)
    list_value: list[float] = field(default_factory=list)
    best_list_value: list[float] = field(default_factory=list)
    purchases: int = 0

    def summary(self) -> dict[str, float]:
        """``regret``: expected clicks of the whole list lost against the oracle's best list
        under the world's click model (what a list of five earns); ``top1_regret``: the first
        slot's attraction lost against the best product's."""
        top1, best = np.asarray(self.top1_prob), np.asarray(self.best_prob)
        lv, bv = np.asarray(self.list_value), np.asarray(self.best_list_value)
        return {"top1_ctr": float(np.mean(self.top1_click)), "regret": float((bv - lv).sum()),
                "top1_regret": float((best - top1).sum()),
                "list_clicks": float(lv.sum()), "oracle_list_clicks": float(bv.sum()),
                "mean_top1_attraction": float(top1.mean()),
                "oracle_top1_attraction": float(best.mean()), "purchases": self.purchases}


def run_world(world: str, visits: Sequence[Visit], probs: Sequence[np.ndarray],
              learners: Sequence[Learner], features: FeatureSpace, seed: int
              ) -> dict[str, Trace]:
    """Every learner on every visit, in order; ``probs[v]`` the attraction of every product."""
    draws = make_draws(len(visits), seed)
    traces = {lr.name: Trace() for lr in learners}
    for v, d in zip(visits, draws, strict=True):
        d.click = np.asarray(v.draws)
        x = features.context_vector(v.user, v.at)
        p = probs[v.index]
        best = float(p.max())
        best_list = best_list_value(world, p)
        for lr in learners:
            shown = lr.recommend(x)
            events = outcome(world, p[shown], d)
            lr.learn(x, shown, [(shown[i], val) for i, val in events])
            tr = traces[lr.name]
            tr.top1_prob.append(float(p[shown[0]]))
            tr.best_prob.append(best)
            tr.list_value.append(list_value(world, p[shown]))
            tr.best_list_value.append(best_list)
            tr.top1_click.append(any(i == 0 and val == REWARDS["click"] for i, val in events))
            tr.purchases += sum(1 for _, val in events if val == REWARDS["purchase"])
    return traces


def visits_to_fraction(trace: Trace, start: int, fraction: float = 0.9,
                       window: int = WINDOW) -> int | None:
    """Visits after ``start`` until the mean attraction of the first slot over the last
    ``window`` visits (all after ``start``) reaches ``fraction`` of the oracle's best."""
    top1 = np.asarray(trace.top1_prob[start:])
    best = np.asarray(trace.best_prob[start:])
    if top1.size < window:
        return None
    c1, cb = np.cumsum(top1), np.cumsum(best)
    mean1 = (c1[window - 1:] - np.concatenate([[0.0], c1[:-window]])) / window
    meanb = (cb[window - 1:] - np.concatenate([[0.0], cb[:-window]])) / window
    hit = np.flatnonzero(mean1 >= fraction * meanb)
    return int(hit[0] + window) if hit.size else None


def _fraction(trace: Trace, lo: int, hi: int) -> float:
    """Mean attraction of the first slot over visits lo..hi-1 / the oracle's best."""
    return float(np.sum(trace.top1_prob[lo:hi]) / np.sum(trace.best_prob[lo:hi]))


def drift_probs(shop_old: SimulatedShop, shop_new: SimulatedShop, visits: Sequence[Visit],
                shift_at: int, ramp: int) -> list[np.ndarray]:
    """Attractions per visit: the old oracle's before ``shift_at``, then moving linearly to
    the new one's over ``ramp`` visits (0: at once)."""
    out = []
    for v in visits:
        a = 0.0 if v.index < shift_at else 1.0 if ramp <= 0 else \
            min(1.0, (v.index - shift_at + 1) / ramp)
        out.append((1 - a) * shop_old.probabilities(v) + a * shop_new.probabilities(v))
    return out


def run(visits_n: int = 5000, seed: int = 1237, shift_at: int = 2500, ramp: int = 1000,
        half_life: float = 300.0, results_dir: Path = Path("results"),
        seeds: Sequence[int] = (1, 2, 3)) -> dict:
    """All worlds; writes ``results/simulate_feedback.json`` (and a plot) and returns it."""
    products = load_catalog()
    features = FeatureSpace.load()
    users = load_users()
    m, dim = len(products), CONTEXT_DIM
    visits = make_visits(visits_n, seed, users, K)
    shop = SimulatedShop(products, features, load_oracle("rules", features))
    shop.prepare(visits)
    probs = [shop.probabilities(v) for v in visits]
    gamma = linucb.discount_factor(half_life)
    out: dict = {"visits": visits_n, "seed": seed, "examination": list(EXAMINATION),
                 "p_purchase": P_PURCHASE, "half_life": half_life, "worlds": {}}
    for world in ("cascade", "position"):
        learners = [Learner(mode, m, dim, mode) for mode in feedback.FEEDBACK_MODES]
        traces = run_world(world, visits, probs, learners, features, seed)
        out["worlds"][world] = {"learners": {n: t.summary() for n, t in traces.items()}}
        log.info("%s world: %s", world, {n: round(t.summary()["regret"], 1)
                                         for n, t in traces.items()})
    # not one lucky seed: each rule against `all` in its own world on more seeds of visits
    out["seeds"] = {}
    for world, rule in (("cascade", "cascade"), ("position", "position")):
        per_seed = {}
        for extra in seeds:
            vs = make_visits(visits_n, extra, users, K)
            # a shop of its own: a shop caches probabilities by visit index
            shop_s = SimulatedShop(products, features, load_oracle("rules", features))
            shop_s.prepare(vs)
            learners = [Learner(mode, m, dim, mode) for mode in ("all", rule)]
            traces = run_world(world, vs, [shop_s.probabilities(v) for v in vs], learners,
                               features, extra)
            per_seed[str(extra)] = {n: {k: t.summary()[k] for k in ("regret", "top1_regret")}
                                    for n, t in traces.items()}
        out["seeds"][world] = {
            "rule": rule, "learners": per_seed,
            "rule_below_all_every_seed": all(v[rule]["regret"] < v["all"]["regret"]
                                             for v in per_seed.values())}
        log.info("%s world, seeds %s: %s", world, list(seeds), per_seed)
    # less exploration: alpha trades the cost of exploring against the rules' fewer,
    # unbiased observations (docs/LEARNING.md discusses the result)
    out["alpha_sweep"] = {}
    for alpha in (0.25, 0.5):
        learners = [Learner(mode, m, dim, mode, alpha=alpha) for mode in ("all", "cascade")]
        traces = run_world("cascade", visits, probs, learners, features, seed)
        out["alpha_sweep"][str(alpha)] = {"world": "cascade", "learners": {
            n: t.summary() for n, t in traces.items()}}
    # stationary: does forgetting cost top-1 when nothing changes?
    learners = [Learner("static", m, dim, "cascade"),
                Learner("decay", m, dim, "cascade", gamma)]
    traces = run_world("cascade", visits, probs, learners, features, seed)
    out["stationary"] = {"learners": {n: t.summary() for n, t in traces.items()}}
    shop_new = SimulatedShop(products, features, load_oracle("rules_drifted", features))
    shop_new.prepare(visits)
    plots = {}
    for name, r in (("drift", 0), ("drift_gradual", ramp)):
        learners = [Learner("static", m, dim, "cascade"),
                    Learner("decay", m, dim, "cascade", gamma)]
        traces = run_world("cascade", visits, drift_probs(shop, shop_new, visits, shift_at, r),
                           learners, features, seed)
        res: dict = {"shift_at": shift_at, "ramp": r, "learners": {}}
        for n, t in traces.items():
            clicks = np.asarray(t.top1_click)
            res["learners"][n] = {
                "top1_ctr_before": float(clicks[:shift_at].mean()),
                "top1_ctr_after": float(clicks[shift_at:].mean()),
                "visits_to_90pct_of_oracle": visits_to_fraction(t, shift_at + r),
                "fraction_of_oracle_before_shift": _fraction(t, shift_at - WINDOW, shift_at),
                "fraction_of_oracle_at_end": _fraction(t, len(visits) - WINDOW, len(visits)),
                **t.summary()}
        out[name] = res
        plots[name] = traces
        log.info("%s: %s", name, {n: v["visits_to_90pct_of_oracle"]
                                  for n, v in res["learners"].items()})
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "simulate_feedback.json").write_text(json.dumps(out, indent=2) + "\n")
    _plot(plots, shift_at, results_dir / "simulate_feedback.png")
    print(table(out))
    return out


def table(out: dict) -> str:
    """The results as Markdown tables (docs/LEARNING.md quotes them)."""
    rows = ["| world | learner | top-1 CTR | regret (list) | top-1 regret |",
            "| --- | --- | --- | --- | --- |"]

    def row(label: str, n: str, v: dict) -> str:
        return (f"| {label} | {n} | {v['top1_ctr']:.4f} | {v['regret']:.1f} | "
                f"{v['top1_regret']:.1f} |")

    for world, res in out["worlds"].items():
        rows += [row(world, n, v) for n, v in res["learners"].items()]
    rows += [row("stationary cascade", n, v) for n, v in out["stationary"]["learners"].items()]
    for alpha, res in out.get("alpha_sweep", {}).items():
        rows += [row(f"cascade, alpha {alpha}", n, v) for n, v in res["learners"].items()]
    if out.get("seeds"):
        rows += ["", "| world | seed | learner | regret (list) | top-1 regret |",
                 "| --- | --- | --- | --- | --- |"]
        for world, res in out["seeds"].items():
            for sd, learners in res["learners"].items():
                rows += [f"| {world} | {sd} | {n} | {v['regret']:.1f} | {v['top1_regret']:.1f} |"
                         for n, v in learners.items()]
    rows += ["", "| world | learner | top-1 CTR before | after | visits to 90% of oracle |",
             "| --- | --- | --- | --- | --- |"]
    for name in ("drift", "drift_gradual"):
        for n, v in out[name]["learners"].items():
            rows.append(f"| {name} (shift at {out[name]['shift_at']}, ramp "
                        f"{out[name]['ramp']}) | {n} | {v['top1_ctr_before']:.4f} | "
                        f"{v['top1_ctr_after']:.4f} | {v['visits_to_90pct_of_oracle']} |")
    return "\n".join(rows)


def _plot(plots: dict, shift_at: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(plots), figsize=(12, 4), squeeze=False)
    for ax, (name, traces) in zip(axes[0], plots.items(), strict=True):
        for n, t in traces.items():
            top1, best = np.asarray(t.top1_prob), np.asarray(t.best_prob)
            kernel = np.ones(WINDOW) / WINDOW
            ax.plot(np.convolve(top1, kernel, "valid") / np.convolve(best, kernel, "valid"),
                    label=n)
        ax.axvline(shift_at - WINDOW, color="grey", ls=":")
        ax.axhline(0.9, color="grey", ls="--")
        ax.set_title(f"{name}: first slot's attraction / oracle's ({WINDOW}-visit mean)")
        ax.set_xlabel("visit")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
