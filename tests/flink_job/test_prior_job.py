"""The category prior through the real job (Kafka, Redis, a Flink mini-cluster; ``python -m
flink_job run`` as a subprocess; issue 13 item 4): the pool the job publishes equals the
category's pooled sums, a product added to the live catalog topic in that category starts
from it (weighted ridge, 1e-9),
a product of a category with no pool starts from the identity, and a product started from the
pool never feeds its pseudo-observations back into it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from contract.catalog import ProductRecord, ensure_catalog_topic, write_records
from contract.config import Settings
from contract.events import Click
from contract.features import load_catalog
from contract.kafka import kafka_producer
from contract.prior import CategoryPool
from endtoend.harness import JobProcess, Record, now_ms, produce
from tests.flink_job.test_feedback_job import wait_parity
from tests.helpers import impression_json, store, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.flink]

M = 6.0  # pseudo-observations: fewer than phase 1 observes, so the shrinkage s < 1 is tested


def _phase(s: Settings, rng: np.random.Generator, t0: int, n: int, products: list[str],
           rows: dict[str, list[tuple[np.ndarray, float]]]) -> list[Record]:
    """``n`` impressions 20 ms apart from ``t0`` showing up to 3 of ``products``, each slot
    clicked with probability 0.3; every shown product's (x, reward) goes to ``rows``."""
    out: list[Record] = []
    for i in range(n):
        t = t0 + 20 * i
        x = np.round(rng.random(s.model.dim), 6)
        shown = tuple(str(p) for p in rng.choice(products, min(3, len(products)),
                                                  replace=False))
        rid = f"r{t}"
        out.append((s.kafka.topic_impressions, impression_json(rid, t, shown, x), t, None))
        for p in shown:
            clicked = rng.random() < 0.3
            rows.setdefault(p, []).append((x, 1.0 if clicked else 0.0))
            if clicked:
                out.append((s.kafka.topic_clicks, Click(rid, p, t + 50).to_json(), t + 50,
                            None))
    return sorted(out, key=lambda r: r[2])


def _sums(rows: list[tuple[np.ndarray, float]], dim: int) -> tuple[np.ndarray, np.ndarray]:
    X = np.array([x for x, _ in rows]).reshape(-1, dim)
    r = np.array([v for _, v in rows])
    return X.T @ X, X.T @ r


def _pool(s: Settings, category: str) -> CategoryPool | None:
    text = store(s).client.get(s.redis.key("prior", category))
    return None if text is None else CategoryPool.from_json(text, s.model.dim)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("seed", [1, 2])
def test_a_new_product_starts_from_its_categorys_pool(
        job_settings: Settings, products_file: Path, tmp_path: Path, seed: int) -> None:
    s = job_settings.override(RTREC_PRIOR="category", RTREC_PRIOR_PSEUDO_OBS=M,
                              RTREC_REWARD_WINDOW_S=1.0)
    d, l2 = s.model.dim, s.model.l2
    by_cat: dict[str, list[str]] = {}
    for p in load_catalog():
        by_cat.setdefault(p.category, []).append(p.product_id)
    cats = sorted(by_cat)
    rng = np.random.default_rng(seed)
    cat, other = cats[seed], cats[seed + 3]
    olds, lone = by_cat[cat][:5], by_cat[other][0]
    new = f"new{seed}"  # not in the shipped catalog: its category comes from the topic
    ensure_catalog_topic(s)

    rows: dict[str, list[tuple[np.ndarray, float]]] = {}
    t0 = now_ms() - 10 * 60_000
    produce(s, _phase(s, rng, t0, 40, olds, rows))
    n1 = sum(len(rows[p]) for p in olds)
    S1, t1 = _sums([r for p in olds for r in rows[p]], d)
    job = JobProcess(s, tmp_path / "job.log",
                     ["--products", str(products_file), "--max-restarts", "0"]).start()
    try:
        wait_for(lambda: (p := _pool(s, cat)) is not None and p.n == n1, 240,
                 lambda: f"the category's pool in Redis with n = {n1} (pool {_pool(s, cat)}; "
                         f"published: {sorted(store(s).read_all(d))})", job, every_s=0.5)
        pool = _pool(s, cat)
        assert pool is not None
        np.testing.assert_allclose(pool.S, S1, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(pool.t, t1, rtol=1e-9, atol=1e-9)

        # phase 2: a product added to the live catalog in the category, and one of a
        # category nobody learned yet
        write_records(kafka_producer(s.kafka), s.kafka.topic_catalog,
                      [(new, ProductRecord(new, cat, 9.5))])
        later: dict[str, list[tuple[np.ndarray, float]]] = {}
        produce(s, _phase(s, rng, t0 + 60_000, 15, [new], later)
                + _phase(s, rng, t0 + 61_000, 10, [lone], later))
        sc = min(1.0, M / n1)
        expected = {}
        for pid, start_A, start_b in ((new, l2 * np.eye(d) + sc * S1, sc * t1),
                                      (lone, l2 * np.eye(d), np.zeros(d))):
            S, t = _sums(later[pid], d)
            expected[pid] = (len(later[pid]), np.linalg.inv(start_A + S), start_b + t)
        old_params = {p: v for p, v in store(s).read_all(d).items() if p in olds}
        for p, params in old_params.items():
            expected[p] = (params.state.n, params.state.A_inv, params.state.b)
        wait_parity(s, expected, job, 120)

        # the new product's own rows joined the pool, its pseudo-observations did not
        S2, t2 = _sums(later[new], d)
        wait_for(lambda: (p := _pool(s, cat)) is not None and p.n == n1 + len(later[new]),
                 60, "the pool with the new product's rows", job, every_s=0.5)
        pool = _pool(s, cat)
        assert pool is not None
        np.testing.assert_allclose(pool.S, S1 + S2, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(pool.t, t1 + t2, rtol=1e-9, atol=1e-9)
    finally:
        job.kill()
