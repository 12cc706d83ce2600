"""Experiment configuration and assignment (contract/experiments.py): invalid configurations
refused with the field named; assignment stable, and its shares those of the configuration
(chi-square over many users, several salts and splits)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from contract.experiments import Experiment, ExperimentError, Variant, bucket_fraction

BASE = {"name": "e1", "salt": "s1", "variants": [
    {"name": "control", "policy": "linucb", "alpha": 1.0, "share": 0.5},
    {"name": "explore", "policy": "plackett_luce", "temperature": 0.05, "epsilon": 0.1,
     "share": 0.5}],
    "shadows": [{"name": "greedy", "policy": "greedy"}]}


def with_(path: str, value: object) -> dict:
    obj = json.loads(json.dumps(BASE))
    where, _, key = path.rpartition(".")
    target = obj
    for part in where.split(".") if where else []:
        target = target[int(part)] if part.isdigit() else target[part]
    if value is KeyError:
        del target[key]
    else:
        target[key] = value
    return obj


@pytest.mark.parametrize("change, match", [
    (("variants.0.share", 0.6), "shares add up to 1.1, not 1"),
    (("variants.0.policy", "ucb"), "policy 'ucb' is not one of"),
    (("variants.0.name", "explore"), "name 'explore' is used twice"),
    (("shadows.0.name", "control"), "name 'control' is used twice"),
    (("variants.0.name", ""), "name must be"),
    (("variants.0.temperature", 0.1), "policy 'linucb' takes no temperature"),
    (("variants.1.temperature", 0), "needs a temperature > 0"),
    (("variants.1.temperature", KeyError), "needs a temperature > 0"),
    (("variants.1.epsilon", 1.0), r"epsilon 1.0 not in \[0, 1\)"),
    (("variants.0.alpha", -1), "alpha -1.0 must be >= 0"),
    (("variants.0.alpha", "1"), "alpha: expected a number, got str"),
    (("variants.0.alpha", True), "alpha: expected a number, got bool"),
    (("variants.0.share", 0), "share must be > 0"),
    (("variants.0.share", 1.5), r"share 1.5 not in \[0, 1\]"),
    (("variants.0.colour", "red"), "unknown key 'colour'"),
    (("shadows.0.share", 0.1), "a shadow gets no traffic"),
    (("shadows.0.policy", "random"), "a shadow must be deterministic"),
    (("salt", ""), "salt: must be a string"),
    (("variants", []), "at least one is needed"),
    (("variants", {"a": 1}), "variants: expected a list"),
    (("name", KeyError), "missing 'name'"),
    (("extra", 1), "unknown key 'extra'"),
])
def test_invalid_configurations_are_refused_naming_the_field(change, match) -> None:
    with pytest.raises(ExperimentError, match=match):
        Experiment.from_dict(with_(*change))


def test_valid_configuration_round_trips_through_a_file(tmp_path: Path) -> None:
    path = tmp_path / "exp.json"
    path.write_text(json.dumps(BASE))
    exp = Experiment.load(path)
    assert [v.name for v in exp.variants] == ["control", "explore"]
    assert exp.variant("greedy").policy == "greedy"
    assert exp.variant("explore").params == {"temperature": 0.05, "epsilon": 0.1}
    assert Experiment.from_dict(exp.to_dict()) == exp
    path.write_text('{"name": NaN}')
    with pytest.raises(ExperimentError, match="NaN is not a number"):
        Experiment.load(path)
    with pytest.raises(ExperimentError, match="cannot read"):
        Experiment.load(tmp_path / "missing.json")


def test_assignment_is_stable_and_depends_only_on_salt_and_user() -> None:
    a = Experiment.from_dict(BASE)
    b = Experiment.from_dict(BASE)  # another replica
    users = range(0, 5000)
    first = [a.assign(u).name for u in users]
    assert first == [a.assign(u).name for u in users] == [b.assign(u).name for u in users]
    # a different experiment name with the same salt does not change the split
    assert first == [Experiment.from_dict({**BASE, "name": "e2"}).assign(u).name for u in users]
    # a new salt re-draws it: about half the users move (independent halves)
    moved = np.mean([x != y for x, y in zip(
        first, [Experiment.from_dict({**BASE, "salt": "s2"}).assign(u).name for u in users],
        strict=True)])
    assert 0.45 < moved < 0.55


@pytest.mark.parametrize("salt", ["s1", "2026-12", "x" * 40, "ünïcode"])
@pytest.mark.parametrize("shares", [(0.5, 0.5), (0.9, 0.1), (0.2, 0.3, 0.5), (0.05, 0.95)])
def test_assignment_shares_match_the_configuration(salt: str, shares: tuple) -> None:
    exp = Experiment(name="e", salt=salt, variants=tuple(
        Variant(name=f"v{i}", policy="linucb", share=s) for i, s in enumerate(shares)))
    n = 40_000
    counts = np.zeros(len(shares))
    index = {v.name: i for i, v in enumerate(exp.variants)}
    for u in range(n):
        counts[index[exp.assign(u).name]] += 1
    expected = np.asarray(shares) * n
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    p = stats.chi2.sf(chi2, df=len(shares) - 1)
    assert p > 1e-4, (counts, expected, chi2)


def test_the_fraction_is_uniform_and_the_split_would_be_caught_if_skewed() -> None:
    fr = np.array([bucket_fraction("s", u) for u in range(20_000)])
    assert stats.kstest(fr, "uniform").pvalue > 1e-4
    # the chi-square above can fail: a 0.52/0.48 split read as 0.5/0.5 is refused
    counts = np.array([(fr < 0.52).sum(), (fr >= 0.52).sum()])
    chi2 = float(((counts - 10_000) ** 2 / 10_000).sum())
    assert stats.chi2.sf(chi2, df=1) < 1e-4
