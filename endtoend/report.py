"""The closed-loop report: a terminal table, results/simulate.json and a PNG of the learning
curves (moving-average top-1 CTR per policy) and of parameter freshness at serving time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from endtoend.simulation import Outcome

ORDER = ("linucb_stream", "linucb_instant", "random", "oracle")


def summarize(runs: dict[str, dict[str, Outcome]], n_products: int) -> dict[str, Any]:
    """{"bootstrapped": {"visits": N, "policies": {name: {top1_ctr, any5_ctr, regret}}}, ...}"""
    out: dict[str, Any] = {}
    for start, outcomes in runs.items():
        policies = {name: outcomes[name].summary() for name in ORDER if name in outcomes}
        visits = next(iter(policies.values()))["visits"] if policies else 0
        for s in policies.values():
            s.pop("visits")
        out[start] = {"visits": visits, "policies": policies}
        if "random" in outcomes:
            out[start]["off_policy"] = off_policy(outcomes, n_products)
        if "linucb_stream" in outcomes:
            age = np.asarray(outcomes["linucb_stream"].param_age_ms, dtype=float)
            age = age[np.isfinite(age)]
            if age.size:
                out[start]["param_age_ms"] = {"p50": float(np.percentile(age, 50)),
                                              "p99": float(np.percentile(age, 99))}
    return out


def off_policy(outcomes: dict[str, Outcome], n_products: int,
               logging_policy: str = "random") -> dict[str, Any]:
    """Top-1 CTR of each other policy estimated from the random policy's log by IPS and SNIPS.

    The logging policy put each product first with probability 1/m (its propensity); a target
    policy's estimate reweights the visits where it would have put the same product first:
    IPS = mean(w r), SNIPS = sum(w r) / sum(w), with w = 1[same first item] / propensity.
    Compared with the CTR the target actually got on the same visits.
    """
    log_ = outcomes[logging_policy]
    logged = np.array([items[0] for items in log_.items])
    reward = (np.asarray(log_.clicked) == 0).astype(float)
    propensity = 1.0 / n_products
    out: dict[str, Any] = {"logging": logging_policy, "propensity": propensity, "targets": {}}
    for name, o in outcomes.items():
        if name == logging_policy:
            continue
        w = (np.array([items[0] for items in o.items]) == logged) / propensity
        out["targets"][name] = {
            "ips": float(np.mean(w * reward)),
            "snips": float(np.sum(w * reward) / np.sum(w)) if w.sum() else float("nan"),
            "online": float(np.mean(np.asarray(o.clicked) == 0)),
            "matches": int(np.count_nonzero(w)),
        }
    return out


def ratios(summary: dict[str, Any]) -> dict[str, float]:
    """The acceptance ratios of issue 7, where both starts are present."""
    r: dict[str, float] = {}
    boot = summary.get("bootstrapped", {}).get("policies", {})
    if {"linucb_stream", "oracle", "linucb_instant"} <= set(boot):
        stream = boot["linucb_stream"]["top1_ctr"]
        r["bootstrapped_stream_over_oracle_top1"] = stream / max(boot["oracle"]["top1_ctr"], 1e-12)
        r["bootstrapped_stream_over_instant_top1"] = stream / max(
            boot["linucb_instant"]["top1_ctr"], 1e-12)
    cold = summary.get("cold", {}).get("policies", {})
    if {"linucb_stream", "linucb_instant"} <= set(cold):
        r["cold_regret_stream_over_instant"] = cold["linucb_stream"]["regret"] / max(
            cold["linucb_instant"]["regret"], 1e-12)
    return r


def table(summary: dict[str, Any]) -> str:
    lines = []
    for start, s in summary.items():
        lines.append(f"{start} start, {s['visits']} visits")
        lines.append(f"  {'policy':16} {'top-1 CTR':>10} {'any-of-5 CTR':>13} {'regret':>9}")
        for name, m in s["policies"].items():
            lines.append(f"  {name:16} {m['top1_ctr']:10.4f} {m['any5_ctr']:13.4f} "
                         f"{m['regret']:9.1f}")
        if "param_age_ms" in s:
            lines.append(f"  parameter age at serving time: p50 {s['param_age_ms']['p50']:.0f} ms,"
                         f" p99 {s['param_age_ms']['p99']:.0f} ms")
        if "off_policy" in s:
            lines.append(f"  off-policy top-1 CTR from the {s['off_policy']['logging']} log: "
                         "policy: IPS / SNIPS / online (visits matched)")
            for name, t in s["off_policy"]["targets"].items():
                lines.append(f"    {name:16} {t['ips']:.3f} / {t['snips']:.3f} / "
                             f"{t['online']:.3f} ({t['matches']})")
    for name, value in ratios(summary).items():
        lines.append(f"{name}: {value:.3f}")
    return "\n".join(lines)


def write_json(summary: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**summary, "ratios": ratios(summary)}, indent=2) + "\n")
    return path


def plot(runs: dict[str, dict[str, Outcome]], path: Path, window: int = 250) -> Path:
    """Learning curves (moving-average top-1 CTR) per start, and stream parameter age."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    starts = list(runs)
    fig, axes = plt.subplots(2, len(starts), figsize=(6.5 * len(starts), 7.5), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1.4]})
    for col, start in enumerate(starts):
        ax = axes[0][col]
        for name in ORDER:
            if name not in runs[start]:
                continue
            top1 = (np.asarray(runs[start][name].clicked) == 0).astype(float)
            w = max(1, min(window, top1.size // 4 or 1))
            curve = np.convolve(top1, np.ones(w) / w, mode="valid")
            ax.plot(np.arange(w, top1.size + 1), curve, label=name, lw=1.4)
        ax.set_title(f"{start} start: top-1 CTR, moving average of {window} visits")
        ax.set_xlabel("visit")
        ax.set_ylabel("top-1 CTR")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
        ax2 = axes[1][col]
        if "linucb_stream" in runs[start]:
            age = np.asarray(runs[start]["linucb_stream"].param_age_ms, dtype=float)
            ax2.plot(np.arange(age.size), age, lw=0.6, color="tab:purple")
        ax2.set_ylabel("snapshot age (ms)")
        ax2.set_xlabel("visit")
        ax2.set_title("freshness: age of serving's parameters when it answered", fontsize=9)
        ax2.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
