"""Table and plot of the scale keys of results/bench_job.json (``freshness_e2e_ms``,
``products_100k``, ``cluster_parallelism``): ``python -m bench.report_scale`` writes
results/bench_job_scale.md and results/bench_job_scale.png from whatever keys are there."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.common import RESULTS


def table(d: dict[str, Any]) -> str:
    """Markdown rows of the figures present (a missing key is skipped, not invented)."""
    rows = ["| figure | value | load (1 min) |", "| --- | --- | --- |"]
    for rate, fr in d.get("freshness_e2e_ms", {}).items():
        br = fr["breakdown_ms"]
        rows.append(f"| end-to-end freshness at {rate} ev/s asked ({fr.get('achieved_eps')} "
                    f"reached) | p50 {fr['p50']} ms, p99 {fr['p99']} ms; append -> notice p50 "
                    f"{br['append_to_redis_notice']['p50']}, notice -> serving p50 "
                    f"{br['notice_to_serving']['p50']} | {fr.get('loadavg_1m')} |")
    if (p := d.get("products_100k")):
        partial = " (partial)" if p.get("partial") else ""
        rows.append(f"| the job at {p['products']:,} products{partial}"
                    f" | {p['job_eps']} ev/s, state {p['state_mb']} MB "
                    f"({p['state_bytes_per_product']} B/product), checkpoint "
                    f"{p['checkpoint_s']} s, "
                    f"Redis {p['redis_bytes_per_product']} B/product | {p.get('loadavg_1m')} |")
    if (c := d.get("cluster_parallelism")):
        rows.append(f"| parallelism 1 / 2 on the cluster | {c['p1']['job_eps']} / "
                    f"{c['p2']['job_eps']} ev/s (x{c['speedup']}), equal: {c['equal']} "
                    f"(max diff {c['max_abs_diff']:.1e}) | {c['p1'].get('loadavg_1m')} / "
                    f"{c['p2'].get('loadavg_1m')} |")
    return "\n".join(rows) + "\n"


def plot(d: dict[str, Any], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    e2e = d.get("freshness_e2e_ms", {})
    if not e2e:
        return False
    rates = list(e2e)
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (label, get) in enumerate([
            ("end to end p50", lambda f: f["p50"]), ("end to end p99", lambda f: f["p99"]),
            ("append -> notice p50", lambda f: f["breakdown_ms"]["append_to_redis_notice"]["p50"]),
            ("notice -> serving p50", lambda f: f["breakdown_ms"]["notice_to_serving"]["p50"])]):
        ax.bar([j + i * 0.2 for j in range(len(rates))], [get(e2e[r]) or 0 for r in rates],
               width=0.2, label=label)
    ax.axhline(100, ls="--", c="gray", lw=1)
    ax.axhline(300, ls=":", c="gray", lw=1)
    ax.set_xticks([j + 0.3 for j in range(len(rates))],
                  [f"{r} ev/s asked\n(load {e2e[r].get('loadavg_1m')})" for r in rates])
    ax.set_ylabel("ms")
    ax.set_title("click appended -> serving holds it (targets 100 / 300 ms dashed)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main() -> int:
    d = json.loads((RESULTS / "bench_job.json").read_text())
    md = RESULTS / "bench_job_scale.md"
    md.write_text(table(d))
    png = RESULTS / "bench_job_scale.png"
    print(md.read_text() + (f"wrote {md}, {png}" if plot(d, png) else f"wrote {md}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
