"""The feature space is the one source of the bandit's dimension: a configured d that differs
fails at start, with both numbers in the message."""

from __future__ import annotations

import importlib.util

import pytest

from contract.config import Settings
from contract.errors import RtrecError
from contract.features import CONTEXT_DIM, CONTEXT_NAMES, FeatureError, FeatureSpace, check_dim


def test_the_shipped_settings_and_feature_space_agree() -> None:
    assert Settings.from_env({}).model.dim == CONTEXT_DIM == len(CONTEXT_NAMES)
    check_dim(Settings.from_env({}).model.dim)
    assert FeatureSpace.load().to_dict()["context"]["names"] == list(CONTEXT_NAMES)


@pytest.mark.parametrize("dim", [1, CONTEXT_DIM - 1, CONTEXT_DIM + 1, 40])
def test_a_mismatched_dim_is_refused_naming_both_numbers(dim: int) -> None:
    with pytest.raises(FeatureError, match=f"dim {dim} != CONTEXT_DIM {CONTEXT_DIM}") as err:
        check_dim(Settings.from_env({"RTREC_DIM": str(dim)}).model.dim)
    assert isinstance(err.value, RtrecError) and isinstance(err.value, ValueError)


@pytest.mark.skipif(importlib.util.find_spec("pyflink") is None, reason="no PyFlink")
def test_the_job_refuses_a_mismatched_dim_when_its_graph_is_built() -> None:
    from flink_job import functions

    functions.Learn(CONTEXT_DIM, 1.0)
    with pytest.raises(FeatureError, match=f"dim 16 != CONTEXT_DIM {CONTEXT_DIM}"):
        functions.Learn(16, 1.0)
