"""What the in-stream off-policy evaluation (flink_job/evaluate.py, ``RTREC_OPE_STREAM``) costs
the job: the same backlog through the real job with it off (the baseline) and on, alternating,
in one run on this machine.

Writes results/bench_ope.json (and .md, .png)::

    {"events", "impressions", "rounds": [{"off_eps", "on_eps", "ratio", "ope_done_s"}...],
     "ratio_p50", "ratio_min", "off_eps_p50", "on_eps_p50", "ope_done_s_p50", "loadavg_1m"}

Throughput as in bench_job: events over the time from the job's first to its last Redis
parameter update (the learner's path; the evaluator shares the join with it, so a slow
evaluator shows as back-pressure there). ``ope_done_s``: from that first update until the
evaluator's estimates in Redis cover every impression. The backlog is bench_job's seeded
traffic (deterministic impressions: the evaluator parses and replays each one; none carries
probabilities, so no target's terms are computed: the per-impression cost that dominates).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.bench_job import PRODUCTS, _backlog, _fresh, _store
from bench.common import write_result
from contract.config import Settings
from contract.store import redis_client
from devstack.stack import Stack, free_port
from endtoend.harness import JobProcess, now_ms, produce, sentinels, versions, wait_for
from flink_job.evaluate import status_key

log = logging.getLogger("bench_ope")


def one(base: Settings, products: Path, work: Path, n_events: int, on: bool,
        tag: str) -> dict[str, Any]:
    """One job run on a fresh backlog; the evaluator on or off."""
    s = _fresh(base, tag, RTREC_OPE_STREAM=on)
    traffic = _backlog(s, n_events)
    produce(s, [*traffic.records, *sentinels(s, now_ms() + 10 * 60_000)])
    n_imp = sum(1 for topic, *_ in traffic.records if topic == s.kafka.topic_impressions)
    want = versions(traffic.observations)
    store = _store(s)
    client = redis_client(s.redis, timeout_s=2.0)
    job = JobProcess(s, work / f"{tag}.log", ["--products", str(products)]).start()
    out: dict[str, Any] = {"on": on, "impressions": n_imp}
    try:
        wait_for(lambda: bool(store.versions()), 180, "a first update", job, every_s=0.02)
        t_first = time.monotonic()
        wait_for(lambda: store.versions() == want, 600, "every update", job, every_s=0.05)
        out["eps"] = round(n_events / (time.monotonic() - t_first), 1)
        if on:
            # deterministic impressions carry no probabilities, so no target is published:
            # wait on the evaluator's own count (its status key)
            wait_for(lambda: _evaluated(client, s) >= n_imp, 600, "the evaluator's count", job,
                     every_s=0.1)
            out["ope_done_s"] = round(time.monotonic() - t_first, 2)
    finally:
        job.kill()
    return out


def _evaluated(client: Any, s: Settings) -> int:
    """Impressions the evaluator has replayed: its status key (written with every batch)."""
    raw = client.get(status_key(s.redis.prefix))
    return int(json.loads(raw)["impressions"]) if raw else 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_ope", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=60_000, help="backlog size per run")
    parser.add_argument("--rounds", type=int, default=3, help="off/on pairs")
    parser.add_argument("--out", default="bench_ope", help="results/<out>.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    load_before = os.getloadavg()
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-ope-") as tmp:
        work = Path(tmp)
        base = Settings.from_env({
            "RTREC_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}", "RTREC_REDIS_PORT": free_port(),
            "RTREC_STACK_DIR": work / "stack", "RTREC_CHECKPOINT_INTERVAL_MS": 5000})
        stack = Stack(base, kafka_controller_port=free_port())
        products = work / "products.txt"
        products.write_text("\n".join(PRODUCTS) + "\n")
        try:
            stack.up(timeout_s=120)
            for r in range(args.rounds):
                off = one(base, products, work, args.events, False, f"off{r}")
                on = one(base, products, work, args.events, True, f"on{r}")
                row = {"off_eps": off["eps"], "on_eps": on["eps"],
                       "ratio": round(on["eps"] / off["eps"], 3),
                       "ope_done_s": on["ope_done_s"], "impressions": on["impressions"]}
                log.info("round %d: %s", r, row)
                rounds.append(row)
        finally:
            stack.down()
    ratios = [r["ratio"] for r in rounds]
    result = {
        "events": args.events, "impressions": rounds[0]["impressions"], "rounds": rounds,
        "ratio_p50": float(np.median(ratios)), "ratio_min": min(ratios),
        "off_eps_p50": float(np.median([r["off_eps"] for r in rounds])),
        "on_eps_p50": float(np.median([r["on_eps"] for r in rounds])),
        "ope_done_s_p50": float(np.median([r["ope_done_s"] for r in rounds])),
        "loadavg_1m": {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)},
    }
    path = write_result(args.out, result)
    table = ["| round | off ev/s | on ev/s | on/off | evaluator done (s after first update) |",
             "| --- | --- | --- | --- | --- |"]
    table += [f"| {i} | {r['off_eps']:.0f} | {r['on_eps']:.0f} | {r['ratio']:.2f} | "
              f"{r['ope_done_s']:.1f} |" for i, r in enumerate(rounds)]
    (path.with_suffix(".md")).write_text("\n".join(table) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        xs = np.arange(len(rounds))
        ax.bar(xs - 0.2, [r["off_eps"] for r in rounds], 0.4, label="evaluation off")
        ax.bar(xs + 0.2, [r["on_eps"] for r in rounds], 0.4, label="evaluation on")
        ax.set_xticks(xs, [f"round {i}" for i in xs])
        ax.set_ylabel("events/s")
        ax.set_title("job throughput on the same backlog")
        ax.legend()
        fig.tight_layout()
        fig.savefig(path.with_suffix(".png"), dpi=110)
        plt.close(fig)
    except Exception as exc:  # the figure is a convenience
        log.warning("no figure: %s", exc)
    print("\n".join(table))
    print(f"on/off throughput ratio p50 {result['ratio_p50']:.2f} (min {result['ratio_min']:.2f});"
          f" load {result['loadavg_1m']}; wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
