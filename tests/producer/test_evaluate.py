"""``evaluate`` on the default seed: the ordering of the reference, not its exact figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contract.features import FeatureSpace, load_catalog, load_users
from producer.evaluate import MAB2REC_POLICIES, Evaluation, evaluate, format_table, write_results
from producer.history import make_history
from producer.oracle import load_oracle

SEED = 1237


@pytest.fixture(scope="module")
def evaluation() -> Evaluation:
    users, products, fs = load_users(), load_catalog(), FeatureSpace.load()
    oracle = load_oracle("rules", fs)
    history = make_history(users, products, fs, oracle, SEED)
    return evaluate(history, users, products, fs, oracle, SEED)


def test_linucb_is_first_by_auc_and_beats_random_and_popularity_in_ctr(
        evaluation: Evaluation) -> None:
    t = evaluation.table
    assert list(t.index) == list(MAB2REC_POLICIES)
    assert t["auc"].idxmax() == "LinUCB"
    assert t.loc["LinUCB", "ctr"] > max(t.loc["Random", "ctr"], t.loc["Popularity", "ctr"])


def test_with_full_feedback_learned_policies_beat_random_and_popularity(
        evaluation: Evaluation) -> None:
    t = evaluation.table
    for name in ("LinUCB", "LinGreedy", "LinTS"):
        assert t.loc[name, "oracle_ctr"] > 1.5 * t.loc["Popularity", "oracle_ctr"]
    assert t.loc["Random", "oracle_ctr"] == pytest.approx(0.145, abs=0.01)
    assert t.loc["LinUCB", "ff_auc"] > t.loc["Random", "ff_auc"] + 0.03


def test_results_files(evaluation: Evaluation, tmp_path: Path) -> None:
    paths = write_results(evaluation, tmp_path)
    assert [p.name for p in paths] == ["offline_eval.json", "offline_eval.csv",
                                       "offline_eval.png"]
    doc = json.loads(paths[0].read_text())
    assert set(doc["policies"]) == set(MAB2REC_POLICIES)
    assert {"auc", "ctr", "precision", "recall"} <= set(doc["policies"]["LinUCB"])
    assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "LinUCB" in format_table(evaluation)
