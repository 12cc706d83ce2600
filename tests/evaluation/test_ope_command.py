"""``python -m evaluation ope`` over a log file and over the real Kafka topics: the estimates
are contract/ope.py's on the log's own arrays, near the known truth on several seeds; bad
lines are counted by reason and nothing else is lost; the topics give what the file gives."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from contract import linucb, ope
from contract.events import Click, Impression
from contract.features import CONTEXT_DIM
from contract.slates import PlackettLuce
from evaluation.__main__ import main

M, K, C = 8, 3, 3
IDS = [f"q{i}" for i in range(M)]


def write_catalog(path: Path) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["product_id", "name", "description", "price", "category"])
        for pid in IDS:
            w.writerow([pid, pid, "a product", "10.00", "Pizzas"])
    return path


def make_log(seed: int, n: int) -> tuple[list[str], dict]:
    """A Plackett-Luce log over C contexts with known click probabilities and a shadow
    ``best`` (the true top K); returns the JSON lines and what the test knows."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.05, 0.6, size=(C, M))
    xs = np.eye(C, CONTEXT_DIM)
    logging_pl = [PlackettLuce(rng.normal(size=M), 0.7, 0.1) for _ in range(C)]
    best = [linucb.top_k(p[c], K) for c in range(C)]
    lines, w, r = [], [], []
    for t in range(n):
        c = int(rng.integers(C))
        shown = [int(i) for i in logging_pl[c].sample(K, rng)]
        prefix = logging_pl[c].prefix_probabilities(shown)
        imp = Impression(request_id=f"r{t}", user_id=t, ts_ms=1_700_000_000_000 + 10 * t,
                         x=tuple(xs[c]), products=tuple(IDS[i] for i in shown),
                         scores=(0.0,) * K, policy="plackett_luce", model_version=0,
                         propensity=float(prefix[-1]), prefix_propensities=tuple(prefix),
                         slot_propensities=tuple(logging_pl[c].slot_marginals(shown)),
                         shadows={"best": [IDS[i] for i in best[c]]}, experiment="e",
                         variant="x")
        lines.append(imp.to_json().decode())
        clicked = None
        for j, i in enumerate(shown):  # a cascade
            if rng.random() < p[c, i]:
                clicked = j
                break
        if clicked is not None:
            lines.append(Click(request_id=f"r{t}", product_id=IDS[shown[clicked]],
                               ts_ms=1_700_000_000_005 + 10 * t).to_json().decode())
        w.append(float(shown[0] == best[c][0]) / prefix[0])
        r.append(float(clicked == 0))
    truth = float(np.mean([p[c, best[c][0]] for c in range(C)]))
    return lines, {"w": np.array(w), "r": np.array(r), "truth": truth,
                   "truth_random": float(p.mean())}


def run(tmp_path: Path, lines: list[str], *extra: str) -> dict:
    log = tmp_path / "log.jsonl"
    log.write_text("\n".join(lines) + "\n")
    out = tmp_path / "est.json"
    catalog = write_catalog(tmp_path / "catalog.csv")
    assert main(["ope", "--file", str(log), "--products", str(catalog), "--json", str(out),
                 "--n-boot", "300", *extra]) == 0
    return json.loads(out.read_text())


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_command_estimates_each_target_from_a_file(seed: int, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    lines, known = make_log(seed, 3000)
    res = run(tmp_path, lines)
    assert res["usable"] == res["impressions"] == 3000
    assert set(res["targets"]) == {"best", "random", "popularity"}
    best = res["targets"]["best"]
    # exactly the estimators on the log's own arrays
    assert best["top1"]["ips"]["estimate"] == pytest.approx(
        ope.ips(known["w"], known["r"]).estimate, rel=1e-12)
    assert best["top1"]["snips"]["estimate"] == pytest.approx(
        ope.snips(known["w"], known["r"]).estimate, rel=1e-12)
    assert best["top1"]["ips"]["ess"] == pytest.approx(ope.kish_ess(known["w"]), rel=1e-12)
    # near the truth: within 4 bootstrap standard errors (the 95% half-width is 1.96 SE)
    for target, truth in (("best", known["truth"]), ("random", known["truth_random"])):
        for est in ("ips", "snips", "dr"):
            e = res["targets"][target]["top1"][est]
            half = (e["ci_high"] - e["ci_low"]) / 2
            assert abs(e["estimate"] - truth) <= 4 * half / 1.96, (target, est, e, truth)
    for est in ("ips", "snips", "dr", "slate", "position"):
        assert set(best["list"][est]) >= {"estimate", "ci_low", "ci_high", "ess"}
    printed = capsys.readouterr().out
    assert "best" in printed and "snips" in printed and "ESS" in printed


def test_bad_lines_are_counted_by_reason_and_the_rest_is_used(tmp_path: Path) -> None:
    lines, _ = make_log(4, 200)
    good = json.loads(lines[0])
    increasing = {**good, "request_id": "bad1", "prefix_propensities": [0.1, 0.2, 0.3]}
    wrong_len = {**good, "request_id": "bad2", "slot_propensities": [0.5]}
    deterministic = {**good, "request_id": "det", "policy": "linucb", "propensity": 1.0}
    for key in ("prefix_propensities", "slot_propensities"):
        deterministic.pop(key)
    random_policy = {**deterministic, "request_id": "rnd", "policy": "random"}
    extra = ["not json", json.dumps(increasing), json.dumps(wrong_len),
             json.dumps({**good, "request_id": "bad3", "colour": 1}),
             json.dumps(deterministic), json.dumps(random_policy),
             Click(request_id="nobody", product_id="q1", ts_ms=5).to_json().decode()]
    res = run(tmp_path, lines + extra)
    # by the contract's reasons: a decreasing prefix and an unknown field are bad values
    assert res["log"]["refused"] == {"unparseable": 1, "bad_value": 2, "wrong_dimension": 1}
    assert res["log"]["orphan_clicks"] == 1
    assert res["impressions"] == 202  # 200 + the deterministic + the random one
    assert res["usable"] == 201  # the random policy's probabilities follow from m
    assert res["skipped"] == {"no logging probabilities": 1}


def test_a_missing_file_and_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture
                                          ) -> None:
    assert main(["ope", "--file", str(tmp_path / "none.jsonl")]) == 1
    assert "cannot read" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["ope"])
    assert exc.value.code == 2


@pytest.mark.integration
def test_from_topics_equals_from_file(unique_settings, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from contract.kafka import kafka_producer

    lines, _ = make_log(5, 400)
    producer = kafka_producer(unique_settings.kafka)
    k = unique_settings.kafka
    for line in lines:
        topic = k.topic_clicks if '"type": "click"' in line or '"type":"click"' in line \
            else k.topic_impressions
        producer.produce(topic, line.encode())
    assert producer.flush(30) == 0
    for name, value in unique_settings.to_env().items():
        monkeypatch.setenv(name, value)
    catalog = write_catalog(tmp_path / "catalog.csv")
    out = tmp_path / "topics.json"
    assert main(["ope", "--from-topics", "--products", str(catalog), "--json", str(out),
                 "--n-boot", "300", "--timeout", "60"]) == 0
    from_topics = json.loads(out.read_text())
    from_file = run(tmp_path, lines)
    assert from_topics["impressions"] == 400
    assert from_topics["targets"] == from_file["targets"]


@pytest.mark.integration
def test_what_serving_logs_under_an_experiment_is_what_the_command_reads(
        unique_settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Serving with an experiment (a LinUCB and an exploring variant, two shadows) publishes
    to the real topics; the command reads them: every impression, the exploring variant's as
    usable, the shadows as targets, the clicks joined."""
    from contract.experiments import Experiment
    from serving.recommender import Recommender

    exp = Experiment.from_dict({"name": "it", "salt": "s", "variants": [
        {"name": "control", "policy": "linucb", "share": 0.5},
        {"name": "explore", "policy": "plackett_luce", "temperature": 0.2, "epsilon": 0.2,
         "share": 0.5}],
        "shadows": [{"name": "greedy", "policy": "greedy"},
                    {"name": "a2", "policy": "linucb", "alpha": 2.0}]})
    path = tmp_path / "exp.json"
    path.write_text(json.dumps(exp.to_dict()))
    settings = unique_settings.override(RTREC_EXPERIMENTS=str(path))
    rec = Recommender.from_settings(settings, wait_s=0, seed=3)
    rng = np.random.default_rng(3)
    explore = clicks = 0
    try:
        for user in range(120):
            r = rec.recommend(user, x=rng.random(CONTEXT_DIM), k=5)
            explore += r.variant == "explore"
            if user % 4 == 0:
                rec.feedback(r.request_id, r.items[user % 5].product_id)
                clicks += 1
    finally:
        rec.close(10)
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "est.json"
    assert main(["ope", "--from-topics", "--json", str(out), "--n-boot", "50",
                 "--timeout", "60"]) == 0
    res = json.loads(out.read_text())
    assert res["log"]["impressions"] == 120 and res["log"]["clicks"] == clicks
    assert res["log"]["refused"] == {} and res["log"]["orphan_clicks"] == 0
    assert 0 < explore < 120 and res["usable"] == explore
    assert res["skipped"] == {"no logging probabilities": 120 - explore}
    assert {"greedy", "a2", "random", "popularity"} <= set(res["targets"])
    assert res["targets"]["greedy"]["n"] == explore
