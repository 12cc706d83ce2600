"""The historical log: random user, random product, random visit time, click from the oracle.

Two files of the same events, both deterministic in the seed:

- ``history.jsonl``: the shared event schema (:mod:`contract.events`), one impression per event
  (one product shown, ``policy="historical"``, ``propensity=1/200`` since the product was drawn
  uniformly) followed by a click 0.5 s later when the user clicked. This is what the job
  bootstraps from, directly or after ``python -m producer load --replay history.jsonl``.
- ``history.csv``: ``event_id,request_id,user_id,product_id,ts_ms,clicked`` for offline
  evaluation; the context x is recomputed from the user and ts_ms with the same FeatureSpace.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contract.events import Click, Impression
from contract.features import FeatureSpace, Product, User
from producer.context import REFERENCE, ContextDistribution
from producer.oracle import Oracle

N_EVENTS = 10_000
CLICK_DELAY_MS = 500  # within any reward window the job is likely to run with (>= 1 s)
HISTORY_FIELDS = ("event_id", "request_id", "user_id", "product_id", "ts_ms", "clicked")


@dataclass(frozen=True)
class History:
    """The events as aligned arrays plus the x logged with each impression."""

    user_idx: np.ndarray  # (n,) int
    product_idx: np.ndarray  # (n,) int
    ts_ms: np.ndarray  # (n,) int64
    clicked: np.ndarray  # (n,) bool
    x: np.ndarray  # (n, 15)
    seed: int

    @property
    def ctr(self) -> float:
        return float(self.clicked.mean()) if len(self.clicked) else 0.0

    def request_id(self, i: int) -> str:
        return f"h{self.seed}-{i:05d}"


def make_history(users: list[User], products: list[Product], features: FeatureSpace,
                 oracle: Oracle, seed: int, n: int = N_EVENTS,
                 dist: ContextDistribution = REFERENCE) -> History:
    """Draw ``n`` events; one generator seeded from ``seed`` makes every choice, in order."""
    rng = np.random.default_rng([seed, 4])  # stream 4: history (distinct from other uses)
    user_idx = rng.integers(0, len(users), n)
    product_idx = rng.integers(0, len(products), n)
    times = dist.draw(rng, n)
    us = [users[i] for i in user_idx]
    ps = [products[i] for i in product_idx]
    p = oracle.click_probabilities(us, ps, times)
    clicked = rng.random(n) < p
    ts_ms = np.array([int(t.timestamp() * 1000) for t in times], dtype=np.int64)
    x = features.context_matrix(us, times)
    return History(user_idx, product_idx, ts_ms, clicked, x, seed)


def history_jsonl(h: History, users: list[User], products: list[Product]) -> str:
    lines = []
    propensity = 1.0 / len(products)
    # In time order, as a real log is: the job joins on event time, and a click read after a
    # later impression's watermark would be late. (The arrays stay in draw order.)
    for i in np.argsort(h.ts_ms, kind="stable"):
        rid = h.request_id(i)
        pid = products[h.product_idx[i]].product_id
        ts = int(h.ts_ms[i])
        lines.append(Impression(
            request_id=rid, user_id=users[h.user_idx[i]].user_id, ts_ms=ts,
            x=tuple(float(v) for v in h.x[i]), products=(pid,), scores=(0.0,),
            policy="historical", model_version=0, propensity=propensity,
        ).to_json().decode())
        if h.clicked[i]:
            lines.append(Click(request_id=rid, product_id=pid,
                               ts_ms=ts + CLICK_DELAY_MS).to_json().decode())
    return "\n".join(lines) + "\n"


def history_csv(h: History, users: list[User], products: list[Product]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(HISTORY_FIELDS)
    for i in range(len(h.user_idx)):
        writer.writerow([i, h.request_id(i), users[h.user_idx[i]].user_id,
                         products[h.product_idx[i]].product_id, int(h.ts_ms[i]),
                         int(h.clicked[i])])
    return buf.getvalue()


def write_history(h: History, users: list[User], products: list[Product],
                  folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    jsonl, table = folder / "history.jsonl", folder / "history.csv"
    jsonl.write_text(history_jsonl(h, users, products), encoding="utf-8")
    table.write_text(history_csv(h, users, products), encoding="utf-8")
    return jsonl, table
