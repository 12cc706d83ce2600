"""The simulator validation (endtoend/ope_validation.py) on a short run: the log it writes is
what the evaluation command reads (every impression with its probabilities and shadow
lists, clicks joined), and results/ope.json has the documented shape, its checks recomputed
from its own entries. (The 20,000-visit run itself is `make simulate`'s, not a test's.)"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from endtoend.ope_validation import ESTIMATORS, EVALUATED, TARGETS, OpeOptions, run


@pytest.mark.parametrize("seed", [3, 4])
def test_a_short_validation_run(seed: int, tmp_path: Path) -> None:
    opts = OpeOptions(visits=150, seed=seed, n_boot=50, results_dir=tmp_path / "results",
                      work_dir=tmp_path / "work", progress=False)
    res = run(opts)
    saved = json.loads((tmp_path / "results" / "ope.json").read_text())
    assert saved == json.loads(json.dumps(res))
    assert (tmp_path / "results" / "ope.md").read_text().startswith("Off-policy estimates")
    assert saved["visits"] == 150 and set(saved["targets"]) == set(EVALUATED)
    for t in saved["targets"].values():
        assert 0 <= t["online_ctr"] <= 1 and 0 <= t["online_list_ctr"] <= 1
        assert t["online_ctr"] <= t["online_list_ctr"]
        assert t["n"] == 150
        assert set(t["estimators"]) == set(ESTIMATORS)
        for e in t["estimators"].values():
            assert set(e) >= {"estimate", "ci_low", "ci_high", "ess", "metric"}
    for name, c in saved["checks"].items():
        truth = "online_list_ctr" if name == "slate" else "online_ctr"
        cover = np.mean([t["estimators"][name]["ci_low"] <= t[truth]
                         <= t["estimators"][name]["ci_high"] for t in saved["targets"].values()])
        assert c["coverage"] == pytest.approx(cover)
    lines = [json.loads(x) for x in (tmp_path / "work" / "log.jsonl").read_text().splitlines()]
    imps = [x for x in lines if x["type"] == "impression"]
    clicks = [x for x in lines if x["type"] == "click"]
    assert len(imps) == 150
    assert len(clicks) == round(saved["logging_policy"]["online_list_ctr"] * 150)
    for imp in imps:
        assert set(imp["shadows"]) == set(TARGETS)
        assert imp["prefix_propensities"][-1] == pytest.approx(imp["propensity"])
        assert all(0 < p <= 1 for p in imp["slot_propensities"])
    # the first visit: nothing learned, every UCB score equal: the list is uniform
    first = imps[0]
    assert first["propensity"] == pytest.approx(1 / (200 * 199 * 198 * 197 * 196))
