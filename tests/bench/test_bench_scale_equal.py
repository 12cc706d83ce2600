"""bench_scale's equality check of parallelism 2 against 1 (fast, no services): it passes on
the same learning done twice in different orders and refuses a difference in b, n or
version (3 seeds)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bench.bench_scale import check_equal
from contract.codec import Params
from contract.linucb import ArmState, update
from endtoend.harness import ridge, versions

D, L2 = 4, 1.0


def _learn(observations: dict[str, list[tuple[np.ndarray, float]]], order: list[int] | None
           ) -> dict[str, Params]:
    out = {}
    for pid, obs in observations.items():
        s = ArmState(np.eye(D) / L2, np.zeros(D), 0, 0)
        seq = obs if order is None else [obs[i] for i in order if i < len(obs)]
        for x, r in seq:
            s = update(s, x, 0.0)  # learned at once with reward 0 (the job's rule)
            if r:
                s = dataclasses.replace(s, b=s.b + r * x, version=s.version + 1)
        out[pid] = Params(s, 0)
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_equal_learning_passes_and_a_difference_is_refused(seed: int) -> None:
    rng = np.random.default_rng(seed)
    obs = {f"p{i}": [(rng.normal(size=D), float(rng.random() < 0.3)) for _ in range(12)]
           for i in range(5)}
    expected, want = ridge(obs, D, L2), versions(obs)
    a = _learn(obs, None)
    c = _learn(obs, list(rng.permutation(12)))  # another interleaving, same sums
    assert check_equal(a, c, expected, want) < 1e-9
    bad = dict(c)
    s = bad["p0"].state
    bad["p0"] = Params(dataclasses.replace(s, b=s.b + 1e-6), 0)
    with pytest.raises(AssertionError, match="differ by"):
        check_equal(a, bad, expected, want)
    bad = dict(c)
    bad["p1"] = Params(dataclasses.replace(bad["p1"].state,
                                           version=bad["p1"].state.version + 1), 0)
    with pytest.raises(AssertionError, match="n or version"):
        check_equal(a, bad, expected, want)
    with pytest.raises(AssertionError, match="product sets"):
        check_equal(a, {k: v for k, v in c.items() if k != "p2"}, expected, want)
