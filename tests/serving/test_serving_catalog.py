"""Serving follows the live catalog (serving/catalog.py, docs/CATALOG.md): the catalog's flags
become the eligibility mask (several seeds, every policy, controls that would show the product
otherwise); through the real broker a retired or out-of-stock product stops being returned
within 1 s of its record and a product added while serving runs becomes rankable within 1 s
(p50 and p99 of both measured here), and a restart rebuilds the same catalog; requests racing
the additions never see an index past what they read."""

from __future__ import annotations

import logging
import statistics
import time

import numpy as np
import pytest

from contract.catalog import Catalog, ProductRecord, read_catalog, write_records
from contract.config import Settings
from contract.features import CONTEXT_DIM, load_catalog
from contract.kafka import kafka_producer
from serving.controls import Pin
from serving.eventlog import MemoryEventLog
from serving.recommender import Recommender

log = logging.getLogger(__name__)
SHIPPED = load_catalog()
IDS = [p.product_id for p in SHIPPED]


def _catalog(*items: tuple[str, ProductRecord | None]) -> Catalog:
    cat = Catalog()
    for off, (pid, rec) in enumerate(items):
        cat.apply(pid.encode(), None if rec is None else rec.to_json(), off)
    return cat


def _rec(seed: int) -> Recommender:
    return Recommender(Settings.from_env({}), product_ids=IDS, catalog=SHIPPED, seed=seed,
                       events=MemoryEventLog())


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_retired_never_shown_out_of_stock_only_on_request(seed: int) -> None:
    rng = np.random.default_rng(seed)
    rec = _rec(seed)
    retired = {str(p) for p in rng.choice(IDS, 40, replace=False)}
    rest = [p for p in IDS if p not in retired]
    out = {str(p) for p in rng.choice(rest, 40, replace=False)}
    by_id = {p.product_id: p for p in SHIPPED}
    rec.apply_catalog(_catalog(
        *((p, ProductRecord(p, by_id[p].category, by_id[p].price)) for p in IDS),
        *((p, ProductRecord(p, by_id[p].category, by_id[p].price, in_stock=False))
          for p in out),
        *((p, None) for p in retired)))
    pinned = sorted(retired)[0]
    seen: set[str] = set()
    for i in range(300):
        policy = ("linucb", "greedy", "random")[i % 3]
        x = rng.uniform(0, 1, CONTEXT_DIM)
        r = rec.recommend(1, x=x, k=10, policy=policy)
        shown = {it.product_id for it in r.items}
        assert not shown & (retired | out)
        # asking for out-of-stock products, and pinning a retired one: still never retired
        r2 = rec.recommend(1, x=x, k=10, policy=policy, in_stock_only=False,
                           pins=[Pin(pinned, 0)])
        shown2 = {it.product_id for it in r2.items}
        assert not shown2 & retired and pinned not in shown2
        seen |= shown2
    assert seen & out  # out of stock is only a default: a request may ask for them
    # re-added and back in stock: shown again
    rec.apply_catalog(_catalog(*((p, ProductRecord(p, by_id[p].category, by_id[p].price))
                                 for p in IDS)))
    back: set[str] = set()
    for _ in range(200):
        back |= {it.product_id for it in rec.recommend(
            1, x=rng.uniform(0, 1, CONTEXT_DIM), k=10, policy="random").items}
    assert back & retired and back & out


def _write(s: Settings, *items: tuple[str, ProductRecord | None], producer=None) -> None:  # type: ignore[no-untyped-def]
    write_records(producer or kafka_producer(s.kafka), s.kafka.topic_catalog, items)


def test_a_record_hides_a_product_within_a_second_and_a_restart_rebuilds_the_catalog(
        unique_settings: Settings) -> None:
    s = unique_settings
    by_id = {p.product_id: p for p in SHIPPED}
    rec = Recommender.from_settings(s, notifications=False, wait_s=2.0, seed=5)
    try:
        assert rec.catalog_follower is not None and rec.catalog_follower.health().loaded
        rng = np.random.default_rng(7)
        hide_ms: list[float] = []
        producer = kafka_producer(s.kafka)  # connected once: its start is not the catalog's
        _write(s, ("warm-up", None), producer=producer)
        for n, pid in enumerate(rng.choice(IDS, 20, replace=False)):
            pid = str(pid)
            # make pid the top answer (exclude all but 3 products), then retire it or mark it
            # out of stock, and time until it is no longer returned
            others = [p for p in IDS if p != pid][:197]
            x = rng.uniform(0, 1, CONTEXT_DIM)

            def shown(pid: str = pid, x: np.ndarray = x, others: list[str] = others) -> bool:
                return pid in {it.product_id for it in rec.recommend(
                    1, x=x, k=3, policy="greedy", exclude=others).items}

            assert shown()
            value = None if n % 2 else ProductRecord(pid, by_id[pid].category,
                                                     by_id[pid].price, in_stock=False)
            t0 = time.perf_counter()
            _write(s, (pid, value), producer=producer)  # returns once acknowledged
            while shown():
                assert time.perf_counter() - t0 < 5, f"{pid} still shown after 5 s"
                time.sleep(0.002)
            hide_ms.append((time.perf_counter() - t0) * 1000)
        q = statistics.quantiles(hide_ms, n=100, method="inclusive")
        p50, p99 = statistics.median(hide_ms), q[98]
        log.info("hidden after the record: p50 %.1f ms, p99 %.1f ms (n=%d)", p50, p99,
                 len(hide_ms))
        print(f"catalog record -> hidden: p50 {p50:.1f} ms, p99 {p99:.1f} ms, n {len(hide_ms)}")
        assert p99 <= 1000
        # products added now are rankable within a second, without a restart (one new
        # category among them), and learned parameters already in Redis are picked up
        add_ms: list[float] = []
        for n in range(10):
            pid = f"team-{n}"
            t0 = time.perf_counter()
            _write(s, (pid, ProductRecord(pid, "Specials" if n == 0 else "Pizzas", 9.5)),
                   producer=producer)

            def servable(pid: str = pid) -> bool:
                if pid not in rec.catalog.index:
                    return False
                only = [p for p in rec.catalog.product_ids if p != pid]
                return [it.product_id for it in rec.recommend(
                    1, x=np.full(CONTEXT_DIM, 0.5), k=1, exclude=only).items] == [pid]

            while not servable():
                assert time.perf_counter() - t0 < 5, f"{pid} not rankable after 5 s"
                time.sleep(0.002)
            add_ms.append((time.perf_counter() - t0) * 1000)
        a50 = statistics.median(add_ms)
        a99 = statistics.quantiles(add_ms, n=100, method="inclusive")[98]
        print(f"catalog record -> rankable: p50 {a50:.1f} ms, p99 {a99:.1f} ms, n {len(add_ms)}")
        assert a99 <= 1000
        assert rec.catalog_pending == frozenset()
        assert rec.catalog.category_name(rec.catalog.index["team-0"]) == "Specials"
        assert len(rec.snapshot) == len(rec.catalog) == len(IDS) + 10
        health = rec.catalog_follower.health()
    finally:
        rec.close()
    again = Recommender.from_settings(s, notifications=False, wait_s=2.0, seed=5)
    try:
        h2 = again.catalog_follower.health()
        assert (h2.offset, h2.digest) == (health.offset, health.digest)
        assert h2.digest == read_catalog(s).digest()
        assert again.catalog_pending == frozenset()
        assert again.catalog.hidden_ids == rec.catalog.hidden_ids
        assert again.catalog.out_of_stock == rec.catalog.out_of_stock
        only = [p for p in again.catalog.product_ids if p != "team-1"]
        r = again.recommend(1, x=np.full(CONTEXT_DIM, 0.5), k=1, exclude=only)
        assert [it.product_id for it in r.items] == ["team-1"]
        assert again.catalog.category_name(again.catalog.index["team-0"]) == "Specials"
    finally:
        again.close()


def test_catalog_flags_and_the_admins_out_of_stock_list_both_apply() -> None:
    rec = _rec(4)
    a, b, c = IDS[:3]
    by_id = {p.product_id: p for p in SHIPPED}
    rec.set_out_of_stock([a])
    rec.apply_catalog(_catalog((b, ProductRecord(b, by_id[b].category, 1.0, in_stock=False)),
                               (c, None)))
    assert rec.catalog.out_of_stock == {a, b} and rec.catalog.hidden_ids == {c}
    rec.set_out_of_stock([])  # the admin's list emptied: the catalog's flag stays
    assert rec.catalog.out_of_stock == {b} and rec.catalog.hidden_ids == {c}
    rec.apply_catalog(_catalog((b, ProductRecord(b, by_id[b].category, 1.0)),
                               (c, ProductRecord(c, by_id[c].category, 1.0))))
    assert rec.catalog.out_of_stock == frozenset() and rec.catalog.hidden_ids == frozenset()


def test_healthz_and_metrics_carry_the_catalog_version() -> None:
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from serving.catalog import CatalogHealth

    class Follower:  # what serving.catalog.CatalogFollower reports, without a broker
        def health(self) -> CatalogHealth:
            return CatalogHealth(offset=42, digest="abc", products=199, retired=1, invalid=0,
                                 loaded=True, last_error=None, applied_at_ms=1)

        def stop(self) -> None:
            pass

    rec = _rec(5)
    rec.catalog_follower = Follower()
    rec.catalog_pending = frozenset({"new-1", "new-2"})
    with TestClient(create_app(recommender=rec)) as client:
        body = client.get("/healthz").json()
        assert body["catalog"] == {"version": 42, "digest": "abc", "products": 199,
                                   "retired": 1, "pending": 2, "loaded": True}
        text = client.get("/metrics").text
    assert "rtrec_serving_catalog_version 42.0" in text
    assert 'rtrec_serving_catalog_products{state="pending"} 2.0' in text
    assert 'rtrec_serving_catalog_products{state="retired"} 1.0' in text


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_requests_racing_products_being_added_never_fail(seed: int) -> None:
    """Every policy, with and without controls, in threads while 60 products join the live
    catalog one at a time (the snapshot and the catalog index grow in their order): no error,
    never a product outside the catalog the request could read, and every new one shown."""
    import threading

    rec = _rec(seed)
    rng = np.random.default_rng(seed)
    errors: list[BaseException] = []
    seen: set[str] = set()
    stop = threading.Event()

    def hammer(k: int) -> None:
        r = np.random.default_rng([seed, k])
        try:
            while not stop.is_set():
                policy = ("linucb", "greedy", "random")[int(r.integers(3))]
                ctl = {} if r.random() < 0.5 else {"max_per_category": 2, "exclude": ["p000"]}
                out = rec.recommend(1, x=r.uniform(0, 1, CONTEXT_DIM), k=8, policy=policy,
                                    **ctl)
                ids = [it.product_id for it in out.items]
                assert len(ids) == len(set(ids)) == 8
                assert all(p in rec.catalog.index for p in ids)
                seen.update(ids)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    try:
        added = [ProductRecord(f"n{seed}-{i}", str(rng.choice(["Pizzas", "Tapas"])), 5.0)
                 for i in range(60)]
        for i in range(len(added)):
            rec.apply_catalog(_catalog(*((r.product_id, r) for r in added[:i + 1])))
            time.sleep(0.002)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert not errors, errors[:3]
    assert len(rec.snapshot) == len(rec.catalog) == len(IDS) + 60
    assert rec.catalog_pending == frozenset()
    rest = [p for p in IDS]
    for r in added:  # each is rankable (alone, all else excluded)
        only = rest + [a.product_id for a in added if a is not r]
        got = rec.recommend(1, x=np.full(CONTEXT_DIM, 0.5), k=1, exclude=only).items
        assert [it.product_id for it in got] == [r.product_id]
