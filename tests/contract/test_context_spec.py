"""The feature spec (contract/context_spec.py): the shipped one builds exactly the x the code
built before it, a spec with buckets and crosses builds the x worked out by hand, a bad spec
is refused naming its fault, and d follows the spec everywhere it is read."""

from __future__ import annotations

import copy
import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from contract.config import Settings, SettingsError
from contract.context_spec import SHIPPED_SPEC, SpecError, load_spec, parse_spec, spec_dim
from contract.features import (
    CONTEXT_DIM,
    CONTEXT_NAMES,
    DATA_DIR,
    FITTED_CONTEXT_NAMES,
    GENDERS,
    SOURCES,
    FeatureError,
    FeatureSpace,
    User,
    check_dim,
    is_weekend,
    load_users,
    time_bucket,
    utc,
)

CROSSES = DATA_DIR / "context_spec_crosses.json"


def legacy_context_matrix(fs: FeatureSpace, users: list[User], times: list) -> np.ndarray:
    """contract.features.FeatureSpace.context_matrix as it was before the spec (b0081c3)."""
    n = len(users)
    out = np.zeros((n, 15), dtype=np.float64)
    raw = np.array([(u.age, u.lat, u.lon) for u in users], dtype=np.float64)
    lo, hi = np.asarray(fs.user_min), np.asarray(fs.user_max)
    span = np.where(hi > lo, hi - lo, 1.0)
    out[:, 0:3] = np.clip((raw - lo) / span, 0.0, 1.0)
    rows = np.arange(n)
    out[rows, 3 + np.array([GENDERS.index(u.gender) for u in users])] = 1.0
    out[rows, 5 + np.array([SOURCES.index(u.source) for u in users])] = 1.0
    out[rows, 10 + np.array([time_bucket(t) for t in times])] = 1.0
    out[rows, 13 + np.array([int(is_weekend(t)) for t in times])] = 1.0
    return out


def visits(seed: int, n: int = 3000) -> tuple[list[User], list]:
    """Shipped users and a few invented outside the fitted ranges, at times over every hour
    and weekday (minutes too)."""
    rng = np.random.default_rng(seed)
    users = load_users()
    odd = [User(9_000_001, 5, "F", -50.0, 100.0, "Email"),
           User(9_000_002, 99, "M", 0.0, 170.0, "Search")]
    pool = users + odd
    picked = [pool[int(i)] for i in rng.integers(0, len(pool), n)]
    base = utc(2026, 1, 5)
    times = [base + timedelta(minutes=int(m)) for m in rng.integers(0, 14 * 24 * 60, n)]
    return picked, times


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_the_shipped_spec_builds_exactly_the_x_of_before(seed: int) -> None:
    fs = FeatureSpace.load()
    users, times = visits(seed)
    new = fs.context_matrix(users, times)
    assert np.array_equal(new, legacy_context_matrix(fs, users, times))
    one = fs.context_vector(users[0], times[0])
    assert np.array_equal(one, legacy_context_matrix(fs, users[:1], times[:1])[0])


def test_the_shipped_spec_is_the_default_d_and_names() -> None:
    spec = load_spec()
    assert spec.names == CONTEXT_NAMES == FITTED_CONTEXT_NAMES
    assert spec.dim == CONTEXT_DIM == 15 == Settings.from_env({}).model.dim
    assert FeatureSpace.load().dim == 15 and spec.ref == "shipped@1"


def test_the_cross_spec_builds_the_x_worked_out_by_hand() -> None:
    fs = FeatureSpace.load(spec=CROSSES)
    names = fs.context.names
    assert fs.dim == 23 == spec_dim(CROSSES)
    old = User(1, 62, "M", -37.5, 144.7, "Email")  # scaled age (62-18)/57 = 0.772 > 0.75
    young = User(2, 60, "F", -37.5, 144.7, "Search")  # 0.737: under the threshold
    cases = [(old, utc(2026, 1, 7, 14), {"tod_afternoon", "day_weekday", "age_band_61_plus",
                                         "tod_x_day_afternoon_weekday"}),
             (young, utc(2026, 1, 10, 23), {"tod_evening", "day_weekend", "age_band_under_61",
                                            "tod_x_day_evening_weekend"}),
             (young, utc(2026, 1, 11, 3), {"tod_evening", "day_weekend", "age_band_under_61",
                                           "tod_x_day_evening_weekend"}),
             (old, utc(2026, 1, 9, 6), {"tod_morning", "day_weekday", "age_band_61_plus",
                                        "tod_x_day_morning_weekday"})]
    for user, at, on in cases:
        x = fs.context_vector(user, at)
        binary = {n for n, v in zip(names, x, strict=True) if v == 1.0 and n not in ("age",)}
        on = on | {f"gender_{user.gender}", f"source_{user.source}"}
        assert binary == on, (user, at)
        assert x[0] == pytest.approx((user.age - 18) / 57)
        # the first 15 columns are the shipped spec's x
        assert np.array_equal(x[:15], FeatureSpace.load().context_vector(user, at))


@pytest.mark.parametrize("path", [SHIPPED_SPEC, CROSSES])
def test_equal_time_keys_mean_equal_x(path: Path) -> None:
    """Serving caches x per (user, time key): the key must hold all x takes from the time."""
    fs = FeatureSpace.load(spec=path)
    users = [*load_users()[:5], User(9, 70, "F", -30.0, 150.0, "Organic")]
    base = utc(2026, 1, 5)
    hours = [base + timedelta(hours=h, minutes=17) for h in range(7 * 24)]
    for u in users:
        by_key: dict = {}
        for at in hours:
            x = fs.context_vector(u, at)
            seen = by_key.setdefault(fs.context.time_key(at), x)
            assert np.array_equal(seen, x), (u, at)
    assert len({fs.context.time_key(at) for at in hours}) == 6  # 3 times of day x 2 day kinds


def shipped_dict() -> dict:
    return json.loads(SHIPPED_SPEC.read_text())


def with_feature(*features: dict) -> dict:
    d = shipped_dict()
    d["features"] += list(features)
    return d


TOD = {"name": "tod2", "kind": "buckets", "attribute": "hour"}
BAD = [
    (lambda d: d.update(format="x"), "format: expected"),
    (lambda d: d.update(format_version=2), "format_version: 2 is not supported"),
    (lambda d: d.update(version=0), "version: an integer >= 1"),
    (lambda d: d.update(name="a@b"), "name: a non-empty string"),
    (lambda d: d.update(features=[]), "features: a non-empty list"),
    (lambda d: d.update(extra=1), "unknown key"),
    (lambda d: d["features"].append({"name": "h", "kind": "scale", "attribute": "height",
                                     "min": 0, "max": 1}), "unknown attribute 'height'"),
    (lambda d: d["features"].append({"name": "h", "kind": "wavelet", "attribute": "hour"}),
     "kind 'wavelet' is not one of"),
    (lambda d: d["features"].append({"name": "age", "kind": "scale", "attribute": "age"}),
     "feature 'age': defined twice"),
    (lambda d: d["features"].append({**TOD, "buckets": [{"name": "a", "ranges": []}]}),
     "bucket 'a': empty bucket"),
    (lambda d: d["features"].append({**TOD, "buckets": [{"name": "a", "ranges": [[5, 5]]}]}),
     r"empty bucket: range \[5, 5\) holds nothing"),
    (lambda d: d["features"].append({**TOD, "buckets": [{"name": "a", "ranges": [[0, 12]]},
                                                        {"name": "b", "ranges": [[11, 24]]}]}),
     r"buckets overlap: 'a' \[0, 12\) and 'b' \[11, 24\)"),
    (lambda d: d["features"].append({**TOD, "buckets": [{"name": "a", "rest": True},
                                                        {"name": "b", "rest": True}]}),
     "only one bucket can be the rest"),
    (lambda d: d["features"].append({"name": "s2", "kind": "buckets", "attribute": "source",
                                     "buckets": [{"name": "a", "values": ["Email"]},
                                                 {"name": "b", "values": ["Email", "Search"]}]}),
     "buckets overlap: 'Email' is in 'a' and 'b'"),
    (lambda d: d["features"].append({"name": "s2", "kind": "buckets", "attribute": "source",
                                     "buckets": [{"name": "a", "ranges": [[0, 1]]}]}),
     "source is a category: use values"),
    (lambda d: d["features"].append({"name": "c", "kind": "cross", "of": ["tod", "weather"]}),
     "crosses 'weather', which is not defined before it"),
    (lambda d: d["features"].append({"name": "c", "kind": "cross", "of": ["tod", "age"]}),
     "crosses 'age' of kind scale"),
    (lambda d: d["features"].append({"name": "c", "kind": "cross", "of": ["tod"]}),
     "of must list two or more"),
    (lambda d: d["features"].append({"name": "c", "kind": "cross", "of": ["tod", "day"],
                                     "keep": [["afternoon", "holiday"]]}),
     "keep \\['afternoon', 'holiday'\\] is not a combination"),
    (lambda d: d["features"].append({"name": "g2", "kind": "onehot", "attribute": "gender",
                                     "categories": ["F", "X"]}),
     "category 'X' is not a value of gender"),
    (lambda d: d["features"].append({"name": "g2", "kind": "scale", "attribute": "gender"}),
     "scale needs a number"),
    (lambda d: d["features"].append({"name": "h", "kind": "scale", "attribute": "hour"}),
     "min and max are needed"),
    (lambda d: d["features"].append({"name": "h", "kind": "scale", "attribute": "hour",
                                     "min": 5, "max": 5}), "min 5.0 must be below max 5.0"),
    (lambda d: d["features"].append({"name": "h", "kind": "onehot", "attribute": "hour",
                                     "categories": [1]}), "onehot needs a category"),
    (lambda d: d["features"][0].update(typo=1), "unknown key\\(s\\) typo for kind scale"),
    (lambda d: [f.update(emit=False) for f in d["features"]], "x would be empty"),
    (lambda d: d["features"].append({"name": "gender_F", "kind": "scale", "attribute": "age"}),
     "column name\\(s\\) gender_F appear twice"),
]


@pytest.mark.parametrize("i", range(len(BAD)))
def test_a_bad_spec_is_refused_naming_its_fault(i: int) -> None:
    change, message = BAD[i]
    d = shipped_dict()
    change(d)
    with pytest.raises(SpecError, match=message) as err:
        parse_spec(d)
    assert isinstance(err.value, FeatureError) and isinstance(err.value, ValueError)


def test_a_bad_file_is_refused_with_its_path(tmp_path: Path) -> None:
    broken = tmp_path / "spec.json"
    broken.write_text("{not json")
    with pytest.raises(SpecError, match=f"{broken}: not valid JSON"):
        load_spec(broken)
    d = shipped_dict()
    d["features"].append({"name": "c", "kind": "cross", "of": ["tod", "nope"]})
    broken.write_text(json.dumps(d))
    with pytest.raises(SpecError, match=f"{broken}: feature 'c': crosses 'nope'"):
        load_spec(broken)
    with pytest.raises(SettingsError, match="RTREC_FEATURE_SPEC: .*crosses 'nope'"):
        Settings.from_env({"RTREC_FEATURE_SPEC": str(broken)})


def test_keep_emit_and_category_buckets(tmp_path: Path) -> None:
    """A cross of a hidden block keeping one combination, and a bucket of categories."""
    d = with_feature(
        {"name": "owned", "kind": "buckets", "attribute": "source", "emit": False,
         "buckets": [{"name": "yes", "values": ["Email", "Organic"]}]},
        {"name": "owned_x_tod", "kind": "cross", "of": ["owned", "tod"],
         "keep": [["yes", "morning"]]})
    spec = parse_spec(d)
    assert spec.names[15:] == ("owned_x_tod_yes_morning",)
    users = [User(1, 30, "F", -30.0, 150.0, s) for s in SOURCES]
    for at, want in ((utc(2026, 1, 5, 8), [0, 1, 0, 1, 0]), (utc(2026, 1, 5, 13), [0] * 5)):
        x = spec.matrix(users, [at] * len(users))
        assert x[:, 15].tolist() == want


def test_the_digest_follows_what_decides_x_only() -> None:
    d = shipped_dict()
    same = copy.deepcopy(d)
    same["doc"] = "another text"
    same["features"][0] = dict(reversed(list(same["features"][0].items())))
    moved = copy.deepcopy(d)
    moved["features"][5]["buckets"][0]["ranges"] = [[5, 12]]
    base = parse_spec(d)
    assert parse_spec(same).digest == base.digest
    assert parse_spec(moved).digest != base.digest
    other_fit = parse_spec(d, {"age": (18.0, 80.0), "lat": (-44.0, -27.0), "lon": (115.0, 154.0)})
    assert other_fit.digest != base.digest and other_fit.names == base.names


def test_d_follows_the_configured_spec() -> None:
    s = Settings.from_env({"RTREC_FEATURE_SPEC": str(CROSSES)})
    assert s.model.dim == 23
    check_dim(s.model.dim, s.model.feature_spec)
    assert Settings.from_env({"RTREC_FEATURE_SPEC": str(CROSSES),
                              "RTREC_DIM": "15"}).model.dim == 15  # said explicitly: kept
    with pytest.raises(FeatureError, match="dim 15 != CONTEXT_DIM 23 .*crosses@1.*RTREC_DIM=23"):
        check_dim(15, str(CROSSES))
    with pytest.raises(FeatureError, match="dim 23 != CONTEXT_DIM 15"):
        check_dim(23)
    # an override keeps both; a new spec brings its d, unless RTREC_DIM comes with it
    assert s.override(RTREC_ALPHA=0.5).model.dim == 23
    assert s.override(RTREC_FEATURE_SPEC="").model.dim == 15
    assert Settings.from_env({}).override(RTREC_FEATURE_SPEC=CROSSES).model.dim == 23
    assert Settings.from_env({}).override(RTREC_FEATURE_SPEC=CROSSES, RTREC_DIM=4).model.dim == 4


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_calibrated_rule_reads_counts_under_any_spec(seed: int) -> None:
    """contract.exploration reads (clicks, observations) back from parameters through a block
    every x sets once: the spec in use's (a time block), not only the shipped layout's."""
    from contract import exploration, linucb

    fs = FeatureSpace.load(spec=CROSSES)
    assert fs.context.count_block() == (10, 11, 12)  # tod: a complete time block
    from serving.explain import feature_names

    assert feature_names(23) == fs.context.names and feature_names(15) == CONTEXT_NAMES
    assert feature_names(4) == ("x0", "x1", "x2", "x3")
    rng = np.random.default_rng(seed)
    users, times = visits(seed, 400)
    X = fs.context_matrix(users, times)
    rewards = (rng.random(len(X)) < 0.2).astype(float)
    arm = rng.integers(0, 4, len(X))
    states = [linucb.update_batch(linucb.init_state(23), X[arm == a], rewards[arm == a])
              for a in range(4)]
    thetas = np.stack([s.A_inv @ s.b for s in states])
    A_invs = np.stack([s.A_inv for s in states])
    clicks, obs = exploration.counts_from_params(thetas, A_invs, 1.0)
    assert clicks == pytest.approx(rewards.sum(), abs=1e-6)
    assert obs == pytest.approx(len(X), abs=1e-6)
    terms = exploration.count_terms(thetas, A_invs).sum(axis=0)
    assert exploration.counts_from_terms(terms, 4, 23, 1.0) == pytest.approx((clicks, obs))


def test_count_blocks_of_hand_made_specs() -> None:
    d = shipped_dict()
    d["features"] = [d["features"][0], d["features"][3],  # age, gender (F, M: complete)
                     {"name": "h", "kind": "buckets", "attribute": "hour",
                      "buckets": [{"name": "day", "ranges": [[6, 20]]}]}]  # a gap: not complete
    assert parse_spec(d).count_block() == (1, 2)
    d["features"][1]["categories"] = ["F"]  # no longer every value
    assert parse_spec(d).count_block() is None
    d["features"][2]["buckets"].append({"name": "night", "ranges": [[0, 6], [20, 24]]})
    assert parse_spec(d).count_block() == (2, 3)  # the hour now covered: a time block
