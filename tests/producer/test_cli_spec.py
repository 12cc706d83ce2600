"""The offline tools build x with the feature spec serving and the job use (RTREC_FEATURE_SPEC,
docs/FEATURES.md): the historical log written by ``python -m producer prepare-data`` carries
the spec's x, equal to what serving's FeatureSpace builds for the same user and time."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from contract.features import DATA_DIR, FeatureSpace, load_users
from producer.__main__ import main

CROSSES = DATA_DIR / "context_spec_crosses.json"


@pytest.mark.parametrize("spec, dim", [("", 15), (str(CROSSES), 23)])
def test_prepare_data_writes_the_spec_s_x(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          spec: str, dim: int) -> None:
    monkeypatch.setenv("RTREC_FEATURE_SPEC", spec)
    assert main(["prepare-data", "--events", "300", "--data-dir", str(tmp_path),
                 "--results-dir", str(tmp_path)]) == 0
    events = [json.loads(line) for line in (tmp_path / "history.jsonl").open()]
    shown = [e for e in events if e["type"] == "impression"]
    assert shown and {len(e["x"]) for e in shown} == {dim}
    fs = FeatureSpace.load(spec=spec or None)
    users = {u.user_id: u for u in load_users()}
    for e in shown[:50]:
        at = datetime.fromtimestamp(e["ts_ms"] / 1000, UTC)
        np.testing.assert_array_equal(e["x"], fs.context_vector(users[e["user_id"]], at))
