"""Serving benchmark: in-process scoring against MABWiser on the same parameters, HTTP over
loopback with a separate load process, and the cost at 10k and 100k products, in one run.

Writes results/bench_serving.json::

    {"inprocess": {"p50_ms", "p99_ms", "mabwiser_p50_ms", "mabwiser_p99_ms", "speedup_p50", ...},
     "http": {"rps", "p50_ms", "p99_ms", ...},
     "scale": [{"products", "p50_ms", "p99_ms"}, ...],
     "scale_with_updates": {"p50_ms", "p99_ms", "rss_over_params", ...,
                            "layout_vs_float64": {"10000": {...}, "100000": {...}}},
     "controls": {"p50_ms", "p99_ms", "plain_p99_ms", "p99_ratio", "at_10000": {...},
                  "http": {"rps_ratio", ...}, ...}}

``--parts controls`` runs the merchandising controls' part alone and merges it into the
existing record (results/bench_serving.json), with a plot in results/bench_serving_controls.png.

It starts its own Kafka + Redis (devstack, free ports, temp folder) so the in-process and HTTP
numbers include logging every impression to a real broker, and ``python -m serving`` as the
HTTP server (the real entry point, uvicorn with what is installed). The load generator is a
separate process (``--load-worker``): a raw asyncio HTTP/1.1 keep-alive client, so the
client's own cost stays small next to the server's on this 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import percentiles_ms, write_result

log = logging.getLogger("bench_serving")
D = 15
K = 5


# --- in-process ------------------------------------------------------------------------------

def _mabwiser_fixture(m: int, n_events: int, seed: int = 0):  # type: ignore[no-untyped-def]
    """MABWiser LinUCB fitted on a synthetic log, and the same parameters as our snapshot."""
    from mabwiser.mab import MAB, LearningPolicy

    from contract import linucb
    from contract.codec import Params
    from serving import Snapshot

    rng = np.random.default_rng(seed)
    arms = [f"p{i:03d}" for i in range(m)]
    decisions = rng.choice(arms, n_events)
    contexts = rng.uniform(0, 1, (n_events, D))
    rewards = (rng.uniform(size=n_events) < 0.15).astype(int)
    mab = MAB(arms, LearningPolicy.LinUCB(alpha=1.0, l2_lambda=1.0), seed=seed)
    mab.fit(decisions, rewards, contexts)
    counts = {a: int(c) for a, c in zip(*np.unique(decisions, return_counts=True), strict=True)}
    params = {}
    for arm, model in mab._imp.arm_to_model.items():
        state = linucb.ArmState(np.asarray(model.A_inv), model.A @ model.beta, counts.get(arm, 0))
        params[arm] = Params(state, 1)
    snap, _ = Snapshot.prior(arms, D).with_params(params)
    return mab, snap, arms


def _time_calls(fn, args: list[Any], warmup: int = 200) -> list[float]:  # type: ignore[no-untyped-def]
    for a in args[:warmup]:
        fn(a)
    gc.collect()
    gc.freeze()  # as the server does after start-up: set-up objects are not re-scanned
    out = []
    perf = time.perf_counter
    for a in args:
        t0 = perf()
        fn(a)
        out.append(perf() - t0)
    return out


def bench_inprocess(settings, n: int = 20_000, n_mab: int = 1_000) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    from contract.features import FeatureSpace, load_users
    from contract.linucb import top_k
    from serving import Recommender
    from serving.eventlog import KafkaEventLog, MemoryEventLog

    mab, snap, arms = _mabwiser_fixture(200, 10_000)
    users = load_users()
    by_id = {u.user_id: u for u in users}
    features = FeatureSpace.load()
    rec = Recommender(settings, snapshot=snap, events=MemoryEventLog(), seed=0, users=by_id,
                      features=features)
    rng = np.random.default_rng(1)
    xs = list(rng.uniform(0, 1, (n, D)))

    # Same answers first: our top-5 equals MABWiser's on these parameters.
    exps = mab.predict_expectations(np.array(xs[:200]))
    agree = all(
        [i.product_id for i in rec.recommend(0, x=x, k=K, policy="linucb").items]
        == sorted(arms, key=lambda a, e=e: -e[a])[:K]
        for x, e in zip(xs[:200], exps, strict=True))

    ours = _time_calls(lambda x: rec.recommend(0, x=x, k=K, policy="linucb"), xs)
    score_only = _time_calls(lambda x: top_k(snap.scores(x, 1.0), K), xs)
    uids = [users[i % len(users)].user_id for i in range(n)]
    with_features = _time_calls(lambda u: rec.recommend(u, k=K), uids)

    def mab_top5(x: np.ndarray) -> list[str]:
        e = mab.predict_expectations(x.reshape(1, -1))
        return sorted(e, key=e.__getitem__, reverse=True)[:K]

    theirs = _time_calls(mab_top5, xs[:n_mab], warmup=20)
    rec.close()

    # The same calls with every impression produced to the real broker on this machine.
    events = KafkaEventLog(settings)
    krec = Recommender(settings, snapshot=snap, events=events, seed=0)
    with_kafka = _time_calls(lambda x: krec.recommend(0, x=x, k=K, policy="linucb"), xs)
    krec.close()
    ev = events.stats()
    p, q = percentiles_ms(ours), percentiles_ms(theirs)
    return {
        "products": 200, "dim": D, "k": K,
        "p50_ms": p["p50_ms"], "p99_ms": p["p99_ms"], "mean_ms": p["mean_ms"], "n": p["n"],
        "mabwiser_p50_ms": q["p50_ms"], "mabwiser_p99_ms": q["p99_ms"], "mabwiser_n": q["n"],
        "speedup_p50": q["p50_ms"] / p["p50_ms"], "speedup_p99": q["p99_ms"] / p["p99_ms"],
        "rankings_agree_with_mabwiser": agree,
        "what": "Recommender.recommend(x given, k=5, linucb): score 200 products, top-5, build "
                "the impression (events to an in-memory sink); MABWiser: predict_expectations "
                "for one context + sort for top-5, on the same fitted parameters",
        "score_topk_only": percentiles_ms(score_only),
        "recommend_with_user_features": percentiles_ms(with_features),
        "recommend_with_kafka_events": {
            **percentiles_ms(with_kafka),
            "note": "each impression serialised and produced to the Kafka broker running on "
                    "the same 2 cores; its CPU use (JVM + librdkafka threads) shows in the p99",
            "published": ev.published, "failed": ev.failed, "dropped": ev.dropped},
    }


def bench_scale(settings, sizes=(200, 10_000, 100_000)) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    from serving import Recommender, Snapshot
    from serving.eventlog import MemoryEventLog

    out = []
    rng = np.random.default_rng(2)
    for m in sizes:
        G = rng.normal(0, 0.3, (m, D, D))
        A = np.eye(D) + G @ G.transpose(0, 2, 1)
        A_invs = np.linalg.inv(A)
        snap = Snapshot(tuple(f"p{i:06d}" for i in range(m)), rng.normal(0, 0.1, (m, D)),
                        A_invs, np.ones(m, dtype=np.int64), np.zeros(m, dtype=np.int64))
        del G, A
        rec = Recommender(settings, snapshot=snap, events=MemoryEventLog())
        n = {200: 5000, 10_000: 1000}.get(m, 100)
        xs = list(rng.uniform(0, 1, (n, D)))
        t = _time_calls(lambda x, r=rec: r.recommend(0, x=x, k=K), xs, warmup=10)
        p = percentiles_ms(t)
        out.append({"products": m, "p50_ms": p["p50_ms"], "p99_ms": p["p99_ms"],
                    "mean_ms": p["mean_ms"], "n": p["n"],
                    "snapshot_mb": snap.nbytes / 2**20})
        log.info("scale %d products: p50 %.3f ms p99 %.3f ms", m, p["p50_ms"], p["p99_ms"])
        del rec, snap, A_invs
        gc.collect()
    base = out[0]["p50_ms"]
    for row in out:
        row["p50_vs_200"] = row["p50_ms"] / base
    return out


# --- a big catalog that learns ----------------------------------------------------------------

def _rss_mb() -> float:
    """This process's resident memory now (Linux /proc), in MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def scale_worker(m: int, rate: float, seconds: float, seed: int = 7) -> dict[str, Any]:
    """In a process of its own (its memory is the serving's alone): a recommender over m
    learned products; requests timed in blocks alternating between no updates (the baseline)
    and ``rate`` product updates/s applied by a thread the way the refresher does (encoded
    values decoded, :meth:`Snapshot.with_params`, one reference swapped, the GIL given up
    as the refresher gives it up), every 10 ms."""
    import threading

    from contract import codec, linucb
    from contract.config import Settings
    from serving import Recommender, Snapshot
    from serving.controls import CatalogIndex
    from serving.eventlog import MemoryEventLog
    from serving.snapshot import APPLY_CHUNK, YIELD_EVERY, yield_gil

    rng = np.random.default_rng(seed)
    ids = tuple(f"p{i:06d}" for i in range(m))
    thetas = rng.normal(0, 0.1, (m, D))
    A_invs = np.empty((m, D, D))
    for lo in range(0, m, 10_000):  # learned-looking A^-1, built in pieces
        G = rng.normal(0, 0.3, (min(10_000, m - lo), D, D))
        A_invs[lo:lo + G.shape[0]] = np.linalg.inv(np.eye(D) + G @ G.transpose(0, 2, 1))
    snap = Snapshot(ids, thetas, A_invs, np.full(m, 9, dtype=np.int64),
                    np.ones(m, dtype=np.int64), observations=np.full(m, 7, dtype=np.int64))
    del thetas, A_invs, G
    gc.collect()
    settings = Settings.from_env({})
    catalog = CatalogIndex(ids, [f"c{i % 8}" for i in range(m)], rng.uniform(5, 40, m))
    rec = Recommender(settings, snapshot=snap, catalog=catalog, events=MemoryEventLog(), seed=0)
    del snap
    pool = [linucb.update_batch(linucb.init_state(D), rng.uniform(0, 1, (20, D)),
                                (rng.uniform(size=20) < 0.3).astype(float)) for _ in range(64)]
    applied = [0]
    apply_cpu = [0.0]  # the updater thread's CPU time decoding and applying (not encoding)
    stores = set()
    on = threading.Event()
    stop = threading.Event()

    failed: list[BaseException] = []

    def updater() -> None:
        try:
            apply_updates()
        except BaseException as exc:  # reported by the main thread
            failed.append(exc)

    def apply_updates() -> None:
        urng = np.random.default_rng(seed + 1)
        t_on = None
        done = 0
        while not stop.is_set():
            if not on.is_set():
                t_on = None
                on.wait(0.05)
                continue
            now = time.perf_counter()
            if t_on is None:
                t_on, done = now, 0
            # a backlog (this thread starved on a loaded machine) goes in swaps of at most
            # 256, as the refresher's successive drains would bring it
            due = min(256, int((now - t_on) * rate) - done)
            if due > 0:
                cur = rec.snapshot
                blobs = {}
                for i in urng.choice(m, due, replace=False).tolist():
                    s = pool[i % len(pool)]
                    v = cur.version_of(ids[i]) + 1  # type: ignore[operator]
                    state = linucb.ArmState(s.A_inv, s.b, min(s.n, v), version=v)
                    blobs[ids[i]] = codec.encode(state, int(time.time() * 1000))
                c0 = time.thread_time()
                # as the refresher decodes and applies (serving/refresher.py _read, _apply):
                # decoded YIELD_EVERY values at a time (codec.decode_many), the GIL given up
                # between those batches and between swaps of at most APPLY_CHUNK products
                found = list(blobs.items())
                parts = []
                for lo in range(0, len(found), YIELD_EVERY):
                    if lo:
                        yield_gil()
                    parts.append(codec.decode_many(found[lo:lo + YIELD_EVERY], D)[0])
                batch = codec.ParamBatch.concat(parts, D)
                del cur
                for lo in range(0, len(batch), APPLY_CHUNK):
                    if lo:
                        yield_gil()
                    new, changed = rec.snapshot.with_params(batch[lo:lo + APPLY_CHUNK])
                    rec.set_snapshot(new, changed)  # as the refresher tells its listeners
                    stores.add(id(new._rows))
                    del new
                    applied[0] += len(changed)
                apply_cpu[0] += time.thread_time() - c0
                done += due
            if due < 256:
                time.sleep(0.01)

    thread = threading.Thread(target=updater, daemon=True)
    thread.start()
    xs = rng.uniform(0, 1, (4096, D))
    for x in xs[:50]:
        rec.recommend(0, x=x, k=K, policy="linucb")
    gc.collect()
    gc.freeze()
    times: dict[str, list[float]] = {"baseline": [], "updates": []}
    rss: list[float] = []
    update_seconds = 0.0
    perf = time.perf_counter
    blocks = 6
    for b in range(blocks):
        phase = "updates" if b % 2 else "baseline"
        if phase == "updates":
            on.set()
        else:
            on.clear()
        time.sleep(0.05)
        t_start = perf()
        end = t_start + seconds / blocks
        next_rss = t_start
        i = 0
        out = times[phase]
        while True:
            t0 = perf()
            if t0 >= end:
                break
            rec.recommend(0, x=xs[i % len(xs)], k=K, policy="linucb")
            out.append(perf() - t0)
            i += 1
            if len(rec.events.events) >= 1000:  # the in-memory log is the harness's, not
                rec.events.events.clear()  # serving's (Kafka): kept out of the RSS
            if phase == "updates" and t0 >= next_rss:
                rss.append(_rss_mb())
                next_rss = t0 + 0.25
        if phase == "updates":
            update_seconds += perf() - t_start
    on.clear()
    stop.set()
    thread.join()
    if failed:
        raise RuntimeError("the updater thread failed") from failed[0]
    base, upd = percentiles_ms(times["baseline"]), percentiles_ms(times["updates"])
    params_mb = m * codec.encoded_size(D) / 2**20
    store_mb = rec.snapshot.nbytes / 2**20
    return {
        "products": m, "updates_per_s": applied[0] / update_seconds, "target_updates_per_s": rate,
        "p50_ms": upd["p50_ms"], "p99_ms": upd["p99_ms"], "n": upd["n"],
        "baseline_p50_ms": base["p50_ms"], "baseline_p99_ms": base["p99_ms"],
        "baseline_n": base["n"], "p50_ratio": upd["p50_ms"] / base["p50_ms"],
        "p99_ratio": upd["p99_ms"] / base["p99_ms"],
        "rss_mb": max(rss), "rss_mb_last": rss[-1], "params_mb": params_mb,
        "rss_over_params": max(rss) / params_mb, "store_mb": store_mb,
        "stores_used": len(stores), "updates_applied": applied[0],
        "apply_cpu_us_per_update": apply_cpu[0] / max(1, applied[0]) * 1e6,
        "what": f"Recommender.recommend(x given, k={K}, linucb, calibrated alpha) over {m:,} "
                f"products, timed in {blocks} blocks of {seconds / blocks:g} s alternating "
                f"between no updates (baseline) and {rate:g} product updates/s applied by a "
                f"thread every 10 ms, a backlog of at most 256 (codec encode+decode, "
                f"Snapshot.with_params in swaps of at most {APPLY_CHUNK}, swap, the GIL "
                f"given up as the refresher does); rss_mb "
                f"is the largest RSS of this process sampled every 0.25 s under updates; "
                f"params_mb is m x the published value's size (codec.encoded_size)",
    }


class _Unpruned:
    """Mixed into a Snapshot class: top_scores never prunes by the variance bound (the
    float32 pass over every row, as before Snapshot._pruned), for a same-run comparison."""

    __slots__ = ()

    def _pruned(self, *args: Any) -> None:
        return None


def layout_worker(m: int, requests: int, seed: int = 7) -> dict[str, Any]:
    """In a process of its own: the same m learned products in the float32 row store (what
    serving uses above EXACT_STORE_ROWS), in the float64 one (the layout before it) and in
    the float32 one without the variance bound's pruning (``float32_full``: every A^-1 row
    read, as before it), ``recommend`` timed request by request on each in turn
    (bench.common.interleaved_request_times, default settings: the decaying rule), and
    whether their top-5 agree."""
    import serving.snapshot as snapshot_mod
    from bench.common import interleaved_request_times
    from contract.config import Settings
    from serving import Recommender, Snapshot
    from serving.eventlog import MemoryEventLog

    rng = np.random.default_rng(seed)
    ids = tuple(f"p{i:06d}" for i in range(m))
    thetas = rng.normal(0, 0.1, (m, D))
    A_invs = np.empty((m, D, D))
    for lo in range(0, m, 10_000):
        G = rng.normal(0, 0.3, (min(10_000, m - lo), D, D))
        A_invs[lo:lo + G.shape[0]] = np.linalg.inv(np.eye(D) + G @ G.transpose(0, 2, 1))
    settings = Settings.from_env({})
    recs = {}
    unpruned = type("UnprunedSnapshot", (_Unpruned, Snapshot), {"__slots__": ()})
    for name, rows_max in (("float64", 10**12), ("float32", 0), ("float32_full", 0)):
        snapshot_mod.EXACT_STORE_ROWS = rows_max
        snap = Snapshot(ids, thetas, A_invs, np.full(m, 9, dtype=np.int64),
                        np.ones(m, dtype=np.int64), observations=np.full(m, 7, dtype=np.int64))
        if name == "float32_full":
            snap.__class__ = unpruned
        recs[name] = Recommender(settings, snapshot=snap, events=MemoryEventLog(), seed=0)
    del thetas, A_invs
    xs = rng.uniform(0, 1, (max(requests, 300) + 50, D))
    same = sum([i.product_id for i in recs["float64"].recommend(0, x=x, k=K).items]
               == [i.product_id for i in recs["float32"].recommend(0, x=x, k=K).items]
               == [i.product_id for i in recs["float32_full"].recommend(0, x=x, k=K).items]
               for x in xs[:300])
    gc.collect()
    gc.freeze()
    out = interleaved_request_times(recs, xs, requests, baseline="float64")
    full = out["float32_full"]
    return {"products": m, "requests": requests, "top5_equal": same, "top5_compared": 300,
            "float64": out["float64"], "float32": out["float32"], "float32_full": full,
            "p50_ratio": out["float32"]["p50_ratio"], "p99_ratio": out["float32"]["p99_ratio"],
            "pruned_vs_full": {"p50_ratio": out["float32"]["p50_ms"] / full["p50_ms"],
                               "p99_ratio": out["float32"]["p99_ms"] / full["p99_ms"]},
            "what": f"recommend(x given, k={K}, default settings) over {m:,} products from the "
                    f"float64 row store (the layout before), the float32 one, and the float32 "
                    f"one never pruning by the variance bound (float32_full), request by "
                    f"request in turn, no updates; top5_equal: answers with the same top-5 "
                    f"(all three) of top5_compared; pruned_vs_full: float32 / float32_full"}


def bench_layouts(m: int, requests: int) -> dict[str, Any]:
    """:func:`layout_worker` in a fresh process (``--layout-worker``)."""
    out = subprocess.run([sys.executable, "-m", "bench.bench_serving", "--layout-worker",
                          str(m), str(requests)], capture_output=True, text=True, check=True)
    row = json.loads(out.stdout)
    log.info("layouts at %d products: float64 p50 %.3f p99 %.3f ms, float32 p50 %.3f p99 "
             "%.3f ms (ratio p50 %.2f p99 %.2f), float32 unpruned p50 %.3f p99 %.3f ms; "
             "top-5 equal %d/%d", m,
             row["float64"]["p50_ms"], row["float64"]["p99_ms"], row["float32"]["p50_ms"],
             row["float32"]["p99_ms"], row["p50_ratio"], row["p99_ratio"],
             row["float32_full"]["p50_ms"], row["float32_full"]["p99_ms"], row["top5_equal"],
             row["top5_compared"])
    return row


def refresher_worker(port: int, m: int) -> dict[str, Any]:
    """In a process of its own: the real :class:`SnapshotRefresher` loading m products from
    the Redis on ``port`` (as a replica starting), its time and this process's RSS after."""
    from contract import codec
    from contract.config import Settings
    from serving.refresher import SnapshotRefresher

    settings = Settings.from_env({"RTREC_REDIS_PORT": port})
    ids = [f"p{i:06d}" for i in range(m)]
    before = _rss_mb()
    ref = SnapshotRefresher(settings, ids, notifications=True)
    t0 = time.perf_counter()
    loaded = ref.start(wait_s=600)
    load_s = time.perf_counter() - t0
    time.sleep(1.0)
    snap = ref.snapshot
    out = {"products": m, "loaded": loaded, "load_s": load_s, "rss_mb": _rss_mb(),
           "rss_before_mb": before, "products_with_params": len(snap) - snap.prior_count,
           "params_mb": m * codec.encoded_size(D) / 2**20, "store_mb": snap.nbytes / 2**20}
    ref.stop()
    out["rss_over_params"] = out["rss_mb"] / out["params_mb"]
    return out


def bench_refresher_load(m: int = 100_000) -> dict[str, Any]:
    """A redis-server of its own holding m learned values, then :func:`refresher_worker`."""
    import shutil

    from contract import codec, linucb
    from contract.config import Settings
    from contract.store import ParamStore, redis_client
    from devstack.stack import free_port

    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-serving-redis-") as root:
        server = subprocess.Popen([shutil.which("redis-server") or "/usr/bin/redis-server",
                                   "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no", "--dir", root],
                                  stdout=subprocess.DEVNULL)
        try:
            # the set-up's writes may wait on a loaded machine: a long timeout for them only
            settings = Settings.from_env({"RTREC_REDIS_PORT": port,
                                          "RTREC_REDIS_TIMEOUT_S": 60})
            client = redis_client(settings.redis)
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.ping()
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            store = ParamStore(client, settings.redis.prefix)
            rng = np.random.default_rng(7)
            pool = [linucb.update_batch(linucb.init_state(D), rng.uniform(0, 1, (20, D)),
                                        (rng.uniform(size=20) < 0.3).astype(float))
                    for _ in range(64)]
            for lo in range(0, m, 1000):
                store.write_many([(f"p{i:06d}", codec.encode(pool[i % 64], 1))
                                  for i in range(lo, min(m, lo + 1000))])
            out = subprocess.run([sys.executable, "-m", "bench.bench_serving",
                                  "--refresher-worker", str(port), str(m)],
                                 capture_output=True, text=True, check=True)
        finally:
            server.terminate()
            server.wait(10)
    row = json.loads(out.stdout)
    log.info("refresher load: %d products in %.1f s, RSS %.0f MiB (%.2fx the parameters)",
             m, row["load_s"], row["rss_mb"], row["rss_over_params"])
    return row


def bench_scale_updates(m: int = 100_000, rate: float = 2000.0, seconds: float = 30.0
                        ) -> dict[str, Any]:
    """:func:`scale_worker` in a fresh process (``--scale-worker``)."""
    out = subprocess.run([sys.executable, "-m", "bench.bench_serving", "--scale-worker",
                          str(m), str(rate), str(seconds)],
                         capture_output=True, text=True, check=True)
    row = json.loads(out.stdout)
    log.info("scale with updates: %d products, %.0f updates/s: p50 %.3f ms p99 %.3f ms "
             "(no updates: p50 %.3f p99 %.3f), RSS %.0f MiB for %.0f MiB of parameters",
             row["products"], row["updates_per_s"], row["p50_ms"], row["p99_ms"],
             row["baseline_p50_ms"], row["baseline_p99_ms"], row["rss_mb"], row["params_mb"])
    return row


# --- merchandising controls -----------------------------------------------------------------

CONTROLS = {"exclude": ["p000", "p013", "p042", "p101", "p177"], "max_per_category": 2,
            "mmr_lambda": 0.3}
"""The benchmark's controls (issue 16): 5 excluded ids, a cap of 2 per category, MMR on."""


def _learned_snapshot(m: int, rng: np.random.Generator):  # type: ignore[no-untyped-def]
    from serving import Snapshot

    G = rng.normal(0, 0.3, (m, D, D))
    A_invs = np.linalg.inv(np.eye(D) + G @ G.transpose(0, 2, 1))
    return Snapshot(tuple(f"p{i:03d}" if m <= 1000 else f"p{i:06d}" for i in range(m)),
                    rng.normal(0, 0.1, (m, D)), A_invs, np.full(m, 9, dtype=np.int64),
                    np.zeros(m, dtype=np.int64), observations=np.full(m, 7, dtype=np.int64))


def _paired(rec, xs: list[np.ndarray], exclude: list[str]) -> tuple[list[float], list[float]]:  # type: ignore[no-untyped-def]
    """Plain and controlled calls alternated on the same contexts, so both see the same
    machine (this one is shared): the ratio compares like with like."""
    plain, ctl = [], []
    perf = time.perf_counter
    kw = {**CONTROLS, "exclude": exclude}
    for x in xs[:200]:
        rec.recommend(0, x=x, k=K, policy="linucb")
        rec.recommend(0, x=x, k=K, policy="linucb", **kw)
    gc.collect()
    gc.freeze()
    for x in xs:
        t0 = perf()
        rec.recommend(0, x=x, k=K, policy="linucb")
        t1 = perf()
        rec.recommend(0, x=x, k=K, policy="linucb", **kw)
        t2 = perf()
        plain.append(t1 - t0)
        ctl.append(t2 - t1)
    return plain, ctl


def bench_controls(settings, n: int, duration_s: float, http: bool = True  # type: ignore[no-untyped-def]
                   ) -> dict[str, Any]:
    from contract.features import load_catalog
    from serving import Recommender
    from serving.controls import CatalogIndex
    from serving.eventlog import MemoryEventLog

    rng = np.random.default_rng(3)
    catalog = load_catalog()
    snap = _learned_snapshot(200, rng)
    rec = Recommender(settings, snapshot=snap, catalog=catalog, events=MemoryEventLog(), seed=0)
    xs = list(rng.uniform(0, 1, (n, D)))
    shown = rec.recommend(0, x=xs[0], k=K, **CONTROLS)
    assert shown.controls[:1] == ("exclude:5",) and "mmr:0.3" in shown.controls
    plain, ctl = _paired(rec, xs, CONTROLS["exclude"])
    p, c = percentiles_ms(plain), percentiles_ms(ctl)
    out: dict[str, Any] = {
        "products": 200, "k": K, "controls": CONTROLS,
        "p50_ms": c["p50_ms"], "p99_ms": c["p99_ms"], "mean_ms": c["mean_ms"], "n": c["n"],
        "plain_p50_ms": p["p50_ms"], "plain_p99_ms": p["p99_ms"],
        "p99_ratio": c["p99_ms"] / p["p99_ms"], "p50_ratio": c["p50_ms"] / p["p50_ms"],
        "what": "Recommender.recommend(x given, k=5, linucb) with the controls, and without "
                "(plain), alternated call by call on the same contexts; events kept in memory",
    }
    m = 10_000
    big = _learned_snapshot(m, rng)
    cats = CatalogIndex(big.product_ids, [f"c{i % 8}" for i in range(m)],
                        rng.uniform(5, 40, m))
    rec_big = Recommender(settings, snapshot=big, catalog=cats, events=MemoryEventLog(), seed=0)
    xs_big = xs[: max(1000, n // 5)]
    exclude_big = [big.product_ids[i] for i in (0, 13, 42, 101, 177)]
    plain_b, ctl_b = _paired(rec_big, xs_big, exclude_big)
    pb, cb = percentiles_ms(plain_b), percentiles_ms(ctl_b)
    out["at_10000"] = {"products": m, "p50_ms": cb["p50_ms"], "p99_ms": cb["p99_ms"],
                       "n": cb["n"], "plain_p50_ms": pb["p50_ms"], "plain_p99_ms": pb["p99_ms"],
                       "p99_ratio": cb["p99_ms"] / pb["p99_ms"], "categories": 8}
    del rec_big, big, cats
    gc.collect()
    if http:
        out["http"] = bench_http_controls(settings, duration_s)
    return out


@contextmanager
def _serving_over_http(settings) -> Iterator[tuple[int, str]]:  # type: ignore[no-untyped-def]
    """``python -m serving`` on a free port, answering /healthz (endtoend's own starter);
    yields (port, base URL) and stops it after."""
    from endtoend.loop import start_http_serving

    log_path = Path(tempfile.mkdtemp(prefix="bench-serving-http-")) / "serving.log"
    server, url = start_http_serving(settings, log_path)
    try:
        yield int(url.rsplit(":", 1)[1]), url
    finally:
        server.stop()


def bench_http_controls(settings, duration_s: float) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """``python -m serving`` under the same closed loop (4 connections) with bodies without
    and with the controls, alternated run by run (plain, controls, plain, controls)."""
    import httpx

    with _serving_over_http(settings) as (port, url):
        check = httpx.post(f"{url}/recommend", json={"user_id": 1, **CONTROLS}).json()
        assert check["controls"][0] == "exclude:5", check
        _run_load(port, 2.0, 4)  # warm-up
        runs: dict[str, list[dict[str, Any]]] = {"plain": [], "controls": []}
        for _ in range(2):
            runs["plain"].append(_run_load(port, duration_s, 4))
            runs["controls"].append(_run_load(port, duration_s, 4, extra=CONTROLS))
    rps = {k: sum(r["rps"] for r in v) / len(v) for k, v in runs.items()}
    return {"rps_plain": rps["plain"], "rps_controls": rps["controls"],
            "rps_ratio": rps["controls"] / rps["plain"],
            "p99_ms_plain": max(r["p99_ms"] for r in runs["plain"]),
            "p99_ms_controls": max(r["p99_ms"] for r in runs["controls"]),
            "errors": sum(r["errors"] for v in runs.values() for r in v),
            "runs": runs, "how": "closed loop, 4 keep-alive connections, POST /recommend "
                                 "{user_id} vs {user_id, exclude 5, max_per_category 2, "
                                 "mmr_lambda 0.3}, runs alternated, separate load process"}


def _plot_controls(ctl: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, row, title in ((axes[0], ctl, "200 products"),
                           (axes[1], ctl["at_10000"], "10,000 products")):
        labels = ["p50", "p99"]
        plain = [row["plain_p50_ms"], row["plain_p99_ms"]]
        withc = [row["p50_ms"], row["p99_ms"]]
        pos = np.arange(2)
        ax.bar(pos - 0.2, plain, 0.4, label="plain ranking")
        ax.bar(pos + 0.2, withc, 0.4, label="exclude 5 + cap 2 + MMR")
        ax.set_xticks(pos, labels)
        ax.set_ylabel("ms per recommend (in-process)")
        ax.set_title(title)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# --- HTTP ------------------------------------------------------------------------------------

async def _load(port: int, duration_s: float, concurrency: int, rate: float,
                extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Closed loop (rate 0: each connection sends as soon as its answer arrives) or open loop
    at ``rate`` requests/s in total, latency measured from the scheduled send time (so a slow
    server cannot hide queueing: no coordinated omission)."""
    users = list(range(1000))
    bodies = [json.dumps({"user_id": u, **(extra or {})}).encode() for u in users]
    reqs = [b"POST /recommend HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            b"content-length: " + str(len(b)).encode() + b"\r\n\r\n" + b for b in bodies]
    lat: list[float] = []
    errors = [0]
    start = time.perf_counter() + 0.2
    stop = start + duration_s
    per_conn_interval = concurrency / rate if rate > 0 else 0.0

    async def conn(c: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = c
        nxt = start + (c * per_conn_interval / concurrency if rate > 0 else 0.0)
        while True:
            now = time.perf_counter()
            if rate > 0:
                if nxt > now:
                    await asyncio.sleep(nxt - now)
                t0 = nxt
                nxt += per_conn_interval
            else:
                t0 = now
            if t0 >= stop:
                break
            writer.write(reqs[i % len(reqs)])
            i += concurrency
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            if head[9:12] != b"200":
                errors[0] += 1
            if t0 >= start:
                lat.append(time.perf_counter() - t0)
        writer.close()

    await asyncio.gather(*(conn(c) for c in range(concurrency)))
    elapsed = time.perf_counter() - start
    p = percentiles_ms(lat) if lat else {"p50_ms": None, "p99_ms": None, "mean_ms": None, "n": 0}
    return {"rps": len(lat) / elapsed, "p50_ms": p["p50_ms"], "p99_ms": p["p99_ms"],
            "mean_ms": p["mean_ms"], "requests": len(lat), "errors": errors[0],
            "concurrency": concurrency, "target_rate": rate or None, "seconds": duration_s}


def _run_load(port: int, duration_s: float, concurrency: int, rate: float = 0.0,
              extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The load generator in its own process (the server gets one core, the client another)."""
    out = subprocess.run([sys.executable, "-m", "bench.bench_serving", "--load-worker",
                          str(port), str(duration_s), str(concurrency), str(rate),
                          "--load-extra", json.dumps(extra or {})],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def bench_http(settings, duration_s: float) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    import httpx

    with _serving_over_http(settings) as (port, url):
        in_kafka_before = _topic_count(settings, settings.kafka.topic_impressions)
        warm = _run_load(port, 2.0, 4)["requests"]  # warm-up (also logs impressions)
        before = httpx.get(f"{url}/healthz").json()["events"]
        runs = {f"closed_c{c}": _run_load(port, duration_s, c) for c in (1, 4, 16)}
        runs["open_1500rps"] = _run_load(port, duration_s, 16, rate=1500.0)
        time.sleep(1.0)  # let the last batch be acknowledged
        in_kafka_after = _topic_count(settings, settings.kafka.topic_impressions)
        health = httpx.get(f"{url}/healthz").json()
        after = health["events"]
        server_hist = _server_latency(httpx.get(f"{url}/metrics").text)
    head = runs["closed_c4"]
    sent = sum(r["requests"] for r in runs.values())
    return {
        "rps": head["rps"], "p50_ms": head["p50_ms"], "p99_ms": head["p99_ms"],
        "headline": "closed loop, 4 keep-alive connections, POST /recommend {user_id} "
                    "(features looked up and built server-side), separate load process",
        "runs": runs,
        "server": f"python -m serving, 1 process (uvicorn {_uvicorn_flavour()})",
        "events_logged_to_kafka": {
            "impressions_in_topic": in_kafka_after - in_kafka_before,
            "requests_timed": sent + warm, "failed_or_dropped_per_healthz": (
                after["failed"] - before["failed"] + after["dropped"] - before["dropped"]),
            "how": "high-watermark offsets of the impressions topic before/after; a bit more "
                   "than requests_timed because each run's first 0.2 s is not timed"},
        "server_side_recommend_seconds_buckets": server_hist,
    }


def _topic_count(settings, topic: str) -> int:  # type: ignore[no-untyped-def]
    """Records in a topic: the sum of its partitions' high watermarks (nothing is deleted)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": settings.kafka.bootstrap, "group.id": "bench-count"})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                   for p in parts)
    finally:
        c.close()


def _uvicorn_flavour() -> str:
    import importlib.util

    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return f"{loop} + {http}"


def _server_latency(metrics: str) -> dict[str, float]:
    out = {}
    for line in metrics.splitlines():
        if (line.startswith("rtrec_serving_request_seconds_bucket")
                and 'route="/recommend"' in line and 'code="200"' in line):
            le = line.split('le="')[1].split('"')[0]
            out[le] = float(line.rsplit(" ", 1)[1])
    return out


# --- main ------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_serving", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="duration of each HTTP run")
    parser.add_argument("--quick", action="store_true", help="fewer samples, short HTTP runs")
    parser.add_argument("--parts", default="inprocess,http,scale,controls",
                        help="comma-separated subset of inprocess,http,scale,controls; "
                             "controls alone is merged into the existing record")
    parser.add_argument("--load-worker", nargs=4, metavar=("PORT", "SECONDS", "CONC", "RATE"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--load-extra", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--scale-worker", nargs=3, metavar=("M", "RATE", "SECONDS"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--refresher-worker", nargs=2, metavar=("PORT", "M"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--layout-worker", nargs=2, metavar=("M", "REQUESTS"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--scale-products", type=int, default=100_000,
                        help="products of the scale part's run with updates arriving")
    parser.add_argument("--updates-per-s", type=float, default=2000.0,
                        help="product updates/s of the scale part's run with updates")
    args = parser.parse_args()
    if args.refresher_worker:
        port, m = args.refresher_worker
        print(json.dumps(refresher_worker(int(port), int(m))))
        return 0
    if args.layout_worker:
        m, n = args.layout_worker
        print(json.dumps(layout_worker(int(m), int(n))))
        return 0
    if args.scale_worker:
        m, rate, secs = args.scale_worker
        print(json.dumps(scale_worker(int(m), float(rate), float(secs))))
        return 0
    if args.load_worker:
        port, secs, conc, rate = args.load_worker
        print(json.dumps(asyncio.run(_load(int(port), float(secs), int(conc), float(rate),
                                           json.loads(args.load_extra)))))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if set(args.parts.split(",")) == {"scale"}:  # no broker needed: none started
        return _write_scale(args)
    from contract.config import Settings
    from devstack.stack import Stack, free_port

    with tempfile.TemporaryDirectory(prefix="bench-serving-") as root:
        settings = Settings.from_env({
            "RTREC_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}", "RTREC_REDIS_PORT": free_port(),
            "RTREC_STACK_DIR": root, "RTREC_CHECKPOINT_DIR": Path(root) / "ck",
            "RTREC_DATA_DIR": Path(root) / "data"})
        stack = Stack(settings, kafka_controller_port=free_port())
        try:
            log.info("starting Kafka + Redis in %s", root)
            stack.up(timeout_s=120)
            parts = set(args.parts.split(","))
            load_before = os.getloadavg()
            inproc = http = scale = controls = None
            if "inprocess" in parts:
                log.info("in-process")
                inproc = bench_inprocess(settings, n=5_000 if args.quick else 20_000,
                                         n_mab=300 if args.quick else 1_000)
                log.info("in-process p50 %.4f ms p99 %.4f ms; MABWiser p50 %.3f ms: x%.0f",
                         inproc["p50_ms"], inproc["p99_ms"], inproc["mabwiser_p50_ms"],
                         inproc["speedup_p50"])
            if "http" in parts:
                log.info("HTTP")
                http = bench_http(settings, 3.0 if args.quick else args.seconds)
                log.info("HTTP %.0f rps p50 %.2f ms p99 %.2f ms", http["rps"], http["p50_ms"],
                         http["p99_ms"])
            scale_updates = refresher_load = None
            if "scale" in parts:
                log.info("scale")
                scale = bench_scale(settings)
                scale_updates = bench_scale_updates(args.scale_products, args.updates_per_s,
                                                    10.0 if args.quick else 30.0)
                refresher_load = bench_refresher_load(args.scale_products)
            if "controls" in parts:
                log.info("merchandising controls")
                controls = bench_controls(settings, 3_000 if args.quick else 20_000,
                                          3.0 if args.quick else args.seconds)
                log.info("controls p99 %.4f ms (plain %.4f ms), at 10k p99 %.3f ms",
                         controls["p99_ms"], controls["plain_p99_ms"],
                         controls["at_10000"]["p99_ms"])
            load_after = os.getloadavg()
        finally:
            stack.down()
    result = {"inprocess": inproc, "http": http, "scale": scale,
              "scale_with_updates": scale_updates, "refresher_load": refresher_load,
              "controls": controls,
              "command": "make bench (python -m bench --only serving)",
              "load_average_1m": {"before": load_before[0], "after": load_after[0]},
              "note": "2-core machine shared with other jobs: a load average above 2 "
                      "means the numbers include waiting for a CPU"}
    if parts == {"controls"} and controls is not None and not args.quick:
        return _write_controls(controls, load_before[0], load_after[0])
    if parts != {"inprocess", "http", "scale", "controls"}:  # partial: the record is kept
        print(json.dumps(result, indent=1))
        return 0
    path = write_result("bench_serving", result)
    assert inproc is not None and http is not None and scale is not None
    print(f"in-process top-{K} of 200: p50 {inproc['p50_ms']:.4f} ms, p99 {inproc['p99_ms']:.4f} "
          f"ms; MABWiser p50 {inproc['mabwiser_p50_ms']:.3f} ms, p99 "
          f"{inproc['mabwiser_p99_ms']:.3f} ms; speedup p50 x{inproc['speedup_p50']:.0f}")
    print(f"HTTP: {http['rps']:.0f} req/s, p50 {http['p50_ms']:.2f} ms, p99 {http['p99_ms']:.2f} "
          f"ms; open loop 1500/s p99 {http['runs']['open_1500rps']['p99_ms']:.2f} ms")
    for row in scale:
        print(f"{row['products']:>7} products: p50 {row['p50_ms']:.3f} ms, p99 "
              f"{row['p99_ms']:.3f} ms")
    assert controls is not None
    _print_controls(controls)
    if _plot_controls(controls, path.with_name("bench_serving_controls.png")):
        print(f"plot {path.with_name('bench_serving_controls.png')}")
    print(f"wrote {path}")
    return 0


def _print_controls(c: dict[str, Any]) -> None:
    big = c["at_10000"]
    print("| controls (exclude 5, cap 2, MMR 0.3) | p50 ms | p99 ms | plain p99 ms | p99 ratio |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| 200 products, top-5, in-process | {c['p50_ms']:.4f} | {c['p99_ms']:.4f} | "
          f"{c['plain_p99_ms']:.4f} | {c['p99_ratio']:.2f} |")
    print(f"| 10,000 products, top-5, in-process | {big['p50_ms']:.3f} | {big['p99_ms']:.3f} | "
          f"{big['plain_p99_ms']:.3f} | {big['p99_ratio']:.2f} |")
    if c.get("http"):
        h = c["http"]
        print(f"HTTP closed loop c4: {h['rps_controls']:.0f} req/s with controls, "
              f"{h['rps_plain']:.0f} without: ratio {h['rps_ratio']:.3f}")


def _write_scale(args: argparse.Namespace) -> int:
    """``--parts scale`` alone: the sizes and the run with updates arriving, merged into
    results/bench_serving.json (the other parts kept), with a plot."""
    from bench.common import RESULTS
    from contract.config import Settings

    load_before = os.getloadavg()[0]
    scale = bench_scale(Settings.from_env({}))
    row = bench_scale_updates(args.scale_products, args.updates_per_s,
                              10.0 if args.quick else 30.0)
    load_layouts = os.getloadavg()[0]
    layouts = {str(m): bench_layouts(m, 100 if args.quick else 400)
               for m in (10_000, args.scale_products)}
    load_mid = os.getloadavg()[0]
    row["layout_vs_float64"] = {**layouts, "load_average_1m": {"before": load_layouts,
                                                               "after": load_mid}}
    start = bench_refresher_load(args.scale_products)
    load_after = os.getloadavg()[0]
    row = {**row, "command": "python -m bench.bench_serving --parts scale",
           "load_average_1m": {"before": load_before, "after": load_mid}}
    start = {**start, "command": "python -m bench.bench_serving --parts scale",
             "load_average_1m": {"before": load_mid, "after": load_after},
             "what": "the real SnapshotRefresher (notifications on) loading every product "
                     "from a redis-server of its own, in a process of its own"}
    for r in scale:
        print(f"{r['products']:>7} products: p50 {r['p50_ms']:.3f} ms, p99 {r['p99_ms']:.3f} ms")
    _print_scale_updates(row)
    print(f"refresher start: {start['products']:,} products loaded from Redis in "
          f"{start['load_s']:.1f} s, RSS {start['rss_mb']:.0f} MiB "
          f"({start['rss_over_params']:.2f}x the parameters)")
    if args.quick:
        return 0
    path = RESULTS / "bench_serving.json"
    record = json.loads(path.read_text()) if path.exists() else {}
    record.pop("machine", None)
    path = write_result("bench_serving", {**record, "scale": scale, "scale_with_updates": row,
                                          "refresher_load": start})
    if _plot_scale_updates(row, path.with_name("bench_serving_scale_updates.png")):
        print(f"plot {path.with_name('bench_serving_scale_updates.png')}")
    print(f"wrote {path}")
    return 0


def _print_scale_updates(r: dict[str, Any]) -> None:
    print(f"| {r['products']:,} products, top-{K} in-process | p50 ms | p99 ms |")
    print("| --- | --- | --- |")
    print(f"| no updates (baseline) | {r['baseline_p50_ms']:.3f} | {r['baseline_p99_ms']:.3f} |")
    print(f"| {r['updates_per_s']:,.0f} product updates/s | {r['p50_ms']:.3f} | "
          f"{r['p99_ms']:.3f} |")
    print(f"| ratio | {r['p50_ratio']:.2f} | {r['p99_ratio']:.2f} |")
    for m, c in r.get("layout_vs_float64", {}).items():
        if m.isdigit():
            print(f"| {int(m):,} products, float64 rows / float32 rows (interleaved) | "
                  f"{c['float64']['p50_ms']:.3f} / {c['float32']['p50_ms']:.3f} | "
                  f"{c['float64']['p99_ms']:.3f} / {c['float32']['p99_ms']:.3f} |")
            print(f"| ratio float32/float64 (top-5 equal {c['top5_equal']}/"
                  f"{c['top5_compared']}) | {c['p50_ratio']:.2f} | {c['p99_ratio']:.2f} |")
            if "float32_full" in c:
                f, q = c["float32_full"], c["pruned_vs_full"]
                print(f"| {int(m):,} products, float32 never pruning (as before) | "
                      f"{f['p50_ms']:.3f} | {f['p99_ms']:.3f} |")
                print(f"| ratio pruned/never pruning | {q['p50_ratio']:.2f} | "
                      f"{q['p99_ratio']:.2f} |")
    print(f"memory: RSS {r['rss_mb']:.0f} MiB (max under updates) for {r['params_mb']:.0f} MiB "
          f"of parameters: {r['rss_over_params']:.2f}x; row store {r['store_mb']:.0f} MiB; "
          f"stores used {r['stores_used']}; applying cost {r['apply_cpu_us_per_update']:.0f} us "
          f"CPU per update (decode + with_params)")


def _plot_scale_updates(r: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    pos = np.arange(2)
    axes[0].bar(pos - 0.2, [r["baseline_p50_ms"], r["baseline_p99_ms"]], 0.4,
                label="no updates")
    axes[0].bar(pos + 0.2, [r["p50_ms"], r["p99_ms"]], 0.4,
                label=f"{r['updates_per_s']:,.0f} updates/s")
    axes[0].set_xticks(pos, ["p50", "p99"])
    axes[0].set_ylabel("ms per recommend (in-process)")
    axes[0].set_title(f"top-{K} of {r['products']:,} products")
    axes[0].legend(fontsize=8)
    axes[1].bar([0, 1], [r["params_mb"], r["rss_mb"]], 0.5)
    axes[1].axhline(1.5 * r["params_mb"], color="grey", linestyle="--", label="1.5x parameters")
    axes[1].set_xticks([0, 1], ["parameters", "process RSS"])
    axes[1].set_ylabel("MiB")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _write_controls(controls: dict[str, Any], load_before: float, load_after: float) -> int:
    """Merge the controls' part into results/bench_serving.json (the other parts kept)."""
    from bench.common import RESULTS

    path = RESULTS / "bench_serving.json"
    record = json.loads(path.read_text()) if path.exists() else {}
    record.pop("machine", None)
    controls = {**controls, "command": "python -m bench.bench_serving --parts controls",
                "load_average_1m": {"before": load_before, "after": load_after}}
    path = write_result("bench_serving", {**record, "controls": controls})
    _print_controls(controls)
    if _plot_controls(controls, path.with_name("bench_serving_controls.png")):
        print(f"plot {path.with_name('bench_serving_controls.png')}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
