"""Offline policy evaluation on the historical log with Mab2Rec.

Each historical event is its own context: Mab2Rec keys "user features" by ``user_id``, and the
context of a visit includes its time, so the event id stands in for the user id and its row of
user features is the logged x (15 dims). The first 80 % of events train, the last 20 % test,
as in the reference. Mab2Rec's AUC/CTR/Precision/Recall only see test rows whose logged product
is in the policy's top-5 (about 5/200 of 2,000 rows, so ~50 rows): they are noisy by nature
(over history seeds 1-6 LinUCB's logged AUC ranged 0.41-0.63 and it was first in none).
A simulator can do better than a log: :func:`full_feedback` draws, for every test context and
every product, the click the oracle would have given, so the same Mab2Rec/jurity metrics see
all 10,000 recommended pairs (``ff_*`` columns), and ``oracle_ctr`` is the mean true click
probability of the recommended top-5. These rank policies stably.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from contract.features import FeatureSpace, Product, User
from producer.history import History
from producer.oracle import Oracle

log = logging.getLogger(__name__)

MAB2REC_POLICIES = ("Random", "Popularity", "LinGreedy", "LinUCB", "LinTS", "ClustersTS")
TOP_K = 5
TRAIN_FRACTION = 0.8
REFERENCE = {  # the project brief's published table (seed 1237); None where it gives no figure
    "Random": {"auc": 0.55, "ctr": 0.1020}, "Popularity": {"auc": 0.2778, "ctr": None},
    "LinGreedy": {"auc": 0.8472, "ctr": None}, "LinUCB": {"auc": 0.8778, "ctr": 0.2558},
    "LinTS": {"auc": 0.6270, "ctr": None}, "ClustersTS": {"auc": 0.4154, "ctr": None},
}


@dataclass(frozen=True)
class Evaluation:
    table: pd.DataFrame  # index policy; columns auc, ctr, precision, recall, oracle_ctr, n_match

    def to_json_dict(self) -> dict:
        return {
            "top_k": TOP_K,
            "policies": {name: {k: _num(v) for k, v in row.items()}
                         for name, row in self.table.to_dict(orient="index").items()},
            "reference": REFERENCE,
        }


def _num(v: object) -> float | int | None:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return None
    if isinstance(v, int | np.integer):
        return int(v)
    return round(float(v), 4)  # type: ignore[arg-type]


def recommenders(seed: int) -> dict:
    """The six policies with Mab2Rec's default hyper-parameters (as the reference)."""
    from mab2rec import BanditRecommender, LearningPolicy, NeighborhoodPolicy

    made = {
        "Random": BanditRecommender(LearningPolicy.Random(), top_k=TOP_K),
        "Popularity": BanditRecommender(LearningPolicy.Popularity(), top_k=TOP_K),
        "LinGreedy": BanditRecommender(LearningPolicy.LinGreedy(epsilon=0.1), top_k=TOP_K),
        "LinUCB": BanditRecommender(LearningPolicy.LinUCB(alpha=1.0), top_k=TOP_K),
        "LinTS": BanditRecommender(LearningPolicy.LinTS(alpha=1.0), top_k=TOP_K),
        "ClustersTS": BanditRecommender(LearningPolicy.ThompsonSampling(),
                                        NeighborhoodPolicy.Clusters(n_clusters=10),
                                        top_k=TOP_K),
    }
    for rec in made.values():
        rec.seed = seed
    return made


def evaluate(history: History, users: list[User], products: list[Product],
             features: FeatureSpace, oracle: Oracle, seed: int,
             policies: tuple[str, ...] = MAB2REC_POLICIES) -> Evaluation:
    """Train on the first 80 % of the log, score the rest, measure every policy."""
    from jurity.recommenders import BinaryRecoMetrics, CombinedMetrics, RankingRecoMetrics
    from mab2rec.pipeline import benchmark

    n = len(history.clicked)
    data = pd.DataFrame({
        "user_id": np.arange(n),
        "item_id": [products[i].product_id for i in history.product_idx],
        "response": history.clicked.astype(int),
    })
    contexts = pd.DataFrame(history.x, columns=[f"x{i}" for i in range(history.x.shape[1])])
    contexts.insert(0, "user_id", np.arange(n))
    cut = int(n * TRAIN_FRACTION)
    metrics = [
        BinaryRecoMetrics.AUC(click_column="score", k=TOP_K),
        BinaryRecoMetrics.CTR(click_column="score", k=TOP_K),
        RankingRecoMetrics.Precision(click_column="score", k=TOP_K),
        RankingRecoMetrics.Recall(click_column="score", k=TOP_K),
    ]
    chosen = {k: v for k, v in recommenders(seed).items() if k in policies}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas FutureWarnings from inside jurity/mab2rec
        recs, scores = benchmark(chosen, metrics, train_data=data.iloc[:cut],
                                 test_data=data.iloc[cut:], user_features=contexts)
    full = full_feedback(history, users, products, oracle, cut, seed)
    cm = CombinedMetrics(*metrics)
    rows = {}
    for name in chosen:
        s = list(scores[name].values())
        rec = recs[name]
        merged = full.merge(rec, on=["user_id", "item_id"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ff = list(cm.get_score(full[["user_id", "item_id", "score"]], rec).values())
        logged = data.iloc[cut:].merge(rec, on=["user_id", "item_id"])
        rows[name] = {"auc": s[0], "ctr": s[1], "precision": s[2], "recall": s[3],
                      "n_match": len(logged), "ff_auc": ff[0], "ff_ctr": ff[1],
                      "ff_precision": ff[2], "ff_recall": ff[3],
                      "oracle_ctr": float(merged["p"].mean())}
        log.info("%s: %s", name, {k: round(float(v), 4) for k, v in rows[name].items()})
    return Evaluation(pd.DataFrame.from_dict(rows, orient="index"))


def full_feedback(history: History, users: list[User], products: list[Product],
                  oracle: Oracle, cut: int, seed: int) -> pd.DataFrame:
    """Every test context x every product, with the oracle's p and a click drawn from it.

    Only a simulator can have this: what each test visitor would have done with any product.
    Metrics on it see all 5 x 2,000 recommendations instead of the ~50 the log happens to hold.
    """
    n, m = len(history.clicked) - cut, len(products)
    ctx = np.repeat(np.arange(cut, cut + n), m)
    prod = np.tile(np.arange(m), n)
    times = [datetime.fromtimestamp(int(t) / 1000, tz=UTC)
             for t in history.ts_ms[cut:]]
    p = oracle.click_probabilities([users[history.user_idx[c]] for c in ctx],
                                   [products[j] for j in prod],
                                   [times[c - cut] for c in ctx])
    clicks = np.random.default_rng([seed, 5]).random(len(p)) < p  # stream 5: counterfactuals
    return pd.DataFrame({"user_id": ctx, "item_id": [products[j].product_id for j in prod],
                         "score": clicks.astype(int), "p": p})


def format_table(ev: Evaluation) -> str:
    """Logged-data metrics beside the reference, then the full-feedback ones."""
    head = (f"{'policy':<11} {'AUC':>6} {'refAUC':>6} {'CTR@5':>6} {'refCTR':>6} {'P@5':>6} "
            f"{'R@5':>6} {'match':>5} | {'ff AUC':>6} {'ff CTR':>6} {'ff P@5':>6} "
            f"{'ff R@5':>6} {'oracle':>6}")
    lines = [" " * 11 + " logged test events (as the reference)" + " " * 12
             + "| full feedback (simulator)", head]
    for name, r in ev.table.iterrows():
        ref = REFERENCE.get(str(name), {})
        ra = f"{ref['auc']:.4f}" if ref.get("auc") is not None else "-"
        rc = f"{ref['ctr']:.4f}" if ref.get("ctr") is not None else "-"
        lines.append(
            f"{name!s:<11} {r['auc']:>6.4f} {ra:>6} {r['ctr']:>6.4f} {rc:>6} "
            f"{r['precision']:>6.4f} {r['recall']:>6.4f} {int(r['n_match']):>5} | "
            f"{r['ff_auc']:>6.4f} {r['ff_ctr']:>6.4f} {r['ff_precision']:>6.4f} "
            f"{r['ff_recall']:>6.4f} {r['oracle_ctr']:>6.4f}")
    return "\n".join(lines)


def write_results(ev: Evaluation, folder: Path) -> list[Path]:
    """offline_eval.json, .csv and .png in ``folder``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    out_json, out_csv, out_png = (folder / f"offline_eval.{e}" for e in ("json", "csv", "png"))
    out_json.write_text(json.dumps(ev.to_json_dict(), indent=2) + "\n", encoding="utf-8")
    ev.table.rename_axis("policy").to_csv(out_csv, float_format="%.4f")
    cols = ["auc", "ctr", "ff_auc", "ff_ctr", "oracle_ctr"]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ev.table[cols].plot.bar(ax=ax, rot=0)
    ax.set_title(f"Offline evaluation on the historical log (Mab2Rec, top-{TOP_K})")
    ax.set_ylabel("value")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return [out_json, out_csv, out_png]
