"""Old code against new on one host, alternated: the only comparison a shared, noisy machine
allows (docs/SCALING.md). Each code tree is a checkout of the repository (``git archive <commit>
| tar -x -C <dir>``, with ``jvm/lib`` linked to the built jars).

``python -m bench.ab_job flink --trees old=/tmp/old,new=. [--cuts join,job] [--rounds 2]``:
one Kafka + Redis; per round and cut, each tree's job (``--stop-after join`` through
``bench.stage_job``, or the whole job) reads its own copy of bench_job's 100,000-event backlog,
the trees' order reversed every round. Prints (and writes results/ab_job.json) events/s, the
1-minute load before and after, and the CPU seconds of the job's busiest threads
(``bench_job.thread_cpu_s``). A side branch (``ope-evaluate``) is not waited for: its CPU in
the window is what it managed to do in it, not its cost per event.

``python -m bench.ab_job python --trees old=/tmp/old,new=.``: the job's Python per event
outside Flink, each tree in a subprocess of its own (its ``flink_job`` and ``contract``),
alternated: ``Validate.process_element`` per event and ``StreamEvaluator.batch`` per closed
impression on bench_job's seeded traffic (CPU time; min and median of the runs per seed).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import bench_job as bj
from bench.common import write_result

log = logging.getLogger("bench.ab_job")


def _trees(spec: str) -> dict[str, Path]:
    return {name: Path(path).resolve() for name, path in (t.split("=", 1) for t in spec.split(","))}


def _job_eps(base: Any, products: Path, work: Path, n: int, tag: str) -> tuple[float, dict]:
    """bench_job.throughput's job half: first to last Redis update, and the CPU between."""
    from endtoend.harness import JobProcess, now_ms, produce, sentinels, versions, wait_for

    s = bj._fresh(base, f"ab-job-{tag}")
    traffic = bj._backlog(s, n)
    produce(s, [*traffic.records, *sentinels(s, now_ms() + 10 * 60_000)])
    want = versions(traffic.observations)
    store = bj._store(s)
    job = JobProcess(s, work / f"job-{tag}.log", ["--products", str(products)]).start()
    try:
        wait_for(lambda: bool(store.versions()), 180, "a first update", job, every_s=0.02)
        t1, c1 = time.monotonic(), bj.thread_cpu_s(job.proc.pid)
        wait_for(lambda: store.versions() == want, 600, "every update", job, every_s=0.05)
        t2, cpu = time.monotonic(), bj._cpu_between(c1, bj.thread_cpu_s(job.proc.pid))
    finally:
        job.kill()
    return round(n / (t2 - t1), 1), cpu


def flink(trees: dict[str, Path], cuts: list[str], rounds: int, n: int,
          settings: dict[str, str] | None = None) -> list[dict]:
    import endtoend.processes as procs
    from contract.config import Settings
    from devstack.stack import Stack, free_port

    fresh, count = bj._fresh, itertools.count()
    # every run its own topics and Redis prefix (stage_eps names them by the stage only)
    bj._fresh = lambda base, tag, **over: fresh(base, f"{tag}-{next(count)}", **over)
    rows: list[dict] = []
    home = procs.ROOT
    with tempfile.TemporaryDirectory(prefix="ab-job-") as tmp:
        work = Path(os.environ.get("AB_JOB_WORK") or tmp)  # a folder kept, for the logs
        base = Settings.from_env({
            "RTREC_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
            "RTREC_REDIS_PORT": free_port(), "RTREC_STACK_DIR": work / "stack",
            "RTREC_CHECKPOINT_INTERVAL_MS": 5000, "RTREC_PYTHON_MODE": "thread",
            "RTREC_JOB_PARALLELISM": 1, **(settings or {})})
        stack = Stack(base, kafka_controller_port=free_port())
        products = work / "products.txt"
        products.write_text("\n".join(bj.PRODUCTS) + "\n")
        try:
            stack.up(timeout_s=120)
            names = list(trees)
            for r in range(rounds):
                for cut in cuts:
                    for name in names if r % 2 == 0 else names[::-1]:
                        procs.ROOT = trees[name]  # the child's cwd and PYTHONPATH
                        load, start = os.getloadavg()[0], time.strftime("%H:%M:%S")
                        if cut == "job":
                            eps, cpu = _job_eps(base, products, work, n, f"{len(rows)}")
                        else:
                            eps, cpu = bj.stage_eps(base, products, work, n, cut)
                        rows.append({"round": r, "cut": cut, "code": name, "eps": eps,
                                     "start_utc": start, "load_before": round(load, 2),
                                     "load_after": round(os.getloadavg()[0], 2), "cpu_s": cpu})
                        print(json.dumps(rows[-1]), flush=True)
        finally:
            procs.ROOT = home
            stack.down()
    return rows


_PYTHON = r'''
import json, sys, time
import numpy as np
from contract.config import Settings
from endtoend.harness import seeded_traffic
from flink_job import functions as fn
from flink_job.evaluate import StreamEvaluator
from tests.helpers import FakeRuntimeContext

seed, reps = int(sys.argv[1]), int(sys.argv[2])
s = Settings.from_env({})
products = [f"p{i:03d}" for i in range(200)]
now = 1_800_000_000_000  # a fixed clock: every process validates the same lines
t = seeded_traffic(s, 20000, seed=seed, start_ms=now - 3_600_000, products=products[:190])
records = [f"{topic}\t0\t{i}\t{ts}\tu\t{value.decode()}"
           for i, (topic, value, ts, _) in enumerate(t.records)]
batches = [fn.RECORD_SEPARATOR.join(records[i:i + 100]) for i in range(0, len(records), 100)]
v = fn.Validate(s.model.dim, frozenset(products), s.job.max_event_bytes, s.model.max_abs_x,
                round(s.job.max_event_age_s * 1000), round(s.job.max_clock_skew_s * 1000),
                clock=lambda: now)
v.open(FakeRuntimeContext())
clicks = {}
for topic, value, ts, _ in t.records:
    if topic == s.kafka.topic_clicks:
        c = json.loads(value)
        clicks.setdefault(c["request_id"], []).append(c["product_id"])
closed = []
for topic, value, ts, _ in t.records:
    if topic == s.kafka.topic_impressions:
        d = json.loads(value)
        slots = sorted(d["products"].index(p) for p in clicks.get(d["request_id"], []))
        closed.append(f"{ts}|{','.join(map(str, slots))}|{value.decode()}")
out = {"validate_us": [], "ope_us": []}
for _ in range(reps):
    t0 = time.process_time()
    lines = [o for b in batches for o in v.process_element(b, None)]
    out["validate_us"].append((time.process_time() - t0) / len(records) * 1e6)
    ev = StreamEvaluator(products, s.model.dim, s.model.l2)
    t0 = time.process_time()
    for i in range(0, len(closed), 500):
        ev.batch(closed[i:i + 500])
    out["ope_us"].append((time.process_time() - t0) / len(closed) * 1e6)
out["digest"] = hash(("".join(lines), ev.model.A_inv.tobytes(), json.dumps(ev.counts)))
print(json.dumps(out))
'''


def python(trees: dict[str, Path], seeds: list[int], rounds: int, reps: int) -> dict:
    """Per seed: each tree ``rounds`` times in a fresh interpreter, alternated."""
    out: dict[str, Any] = {}
    for seed in seeds:
        got: dict[str, dict[str, list[float]]] = {n: {"validate_us": [], "ope_us": []}
                                                  for n in trees}
        digests: dict[str, set] = {n: set() for n in trees}
        names = list(trees)
        for r in range(rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                env = {**os.environ, "PYTHONPATH": str(trees[name]), "PYTHONHASHSEED": "0"}
                res = json.loads(subprocess.run(
                    [sys.executable, "-c", _PYTHON, str(seed), str(reps)], cwd=trees[name],
                    env=env, check=True, capture_output=True, text=True).stdout)
                for k in ("validate_us", "ope_us"):
                    got[name][k] += res[k]
                digests[name].add(res["digest"])
        out[str(seed)] = {
            name: {k: {"min": round(min(v), 2), "median": round(statistics.median(v), 2)}
                   for k, v in got[name].items()} | {"same_output": len(set().union(
                       *digests.values())) == 1}
            for name in names}
        print(seed, json.dumps(out[str(seed)]), flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab_job", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["flink", "python"])
    parser.add_argument("--trees", required=True, help="name=path,name=path")
    parser.add_argument("--cuts", default="join,job", help="flink: join, validate, job")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--seeds", default="1,2,3", help="python: traffic seeds")
    parser.add_argument("--reps", type=int, default=3, help="python: timings per process")
    parser.add_argument("--out", default="ab_job", help="results/<out>.json")
    parser.add_argument("--set", action="append", default=[], metavar="RTREC_X=value",
                        help="flink: a setting for every run; the children get this tree's "
                             "settings, so a default another tree refuses needs pinning")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    trees = _trees(args.trees)
    load = os.getloadavg()[0]
    if args.what == "flink":
        result: Any = flink(trees, args.cuts.split(","), args.rounds, args.events,
                            dict(kv.split("=", 1) for kv in args.set))
    else:
        result = python(trees, [int(s) for s in args.seeds.split(",")], args.rounds, args.reps)
    write_result(args.out, {"what": args.what, "trees": {k: str(v) for k, v in trees.items()},
                            "loadavg_1m": {"before": round(load, 2),
                                           "after": round(os.getloadavg()[0], 2)},
                            "result": result})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
