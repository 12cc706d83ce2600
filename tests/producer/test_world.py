"""Determinism of the shipped world and of the historical log; the feature file format."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from contract.features import (
    CATEGORIES,
    CONTEXT_DIM,
    DATA_DIR,
    FeatureSpace,
    load_catalog,
    load_users,
    utc,
)
from producer.history import history_csv, history_jsonl, make_history
from producer.oracle import load_oracle
from producer.world import World, make_users

SEED = 1237


@pytest.fixture(scope="module")
def world() -> World:
    return World.build(SEED)


def _close(a: object, b: object, where: str = "$") -> None:
    """Equal structures; numbers equal to 1e-9 relative (fitted by BLAS, whose summation
    order, hence the last digits, depends on the CPU it runs on)."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _close(x, y, f"{where}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), (where, a, b)
    else:
        assert a == b, where


def test_same_seed_rebuilds_the_shipped_files(world: World) -> None:
    """CSV files byte for byte; the fitted features.json to 1e-9 (see _close)."""
    for name, text in world.files().items():
        shipped = (DATA_DIR / name).read_text(encoding="utf-8")
        if name.endswith(".json"):
            _close(json.loads(shipped), json.loads(text), name)
        else:
            assert shipped == text, name


def test_a_different_seed_gives_different_users() -> None:
    assert make_users(SEED, 50) == make_users(SEED, 50)
    assert make_users(SEED + 1, 50) != make_users(SEED, 50)


def test_catalog_has_200_products_25_per_category_with_real_descriptions() -> None:
    products = load_catalog()
    assert [p.product_id for p in products] == [f"p{i:03d}" for i in range(200)]
    for category in CATEGORIES:
        assert sum(p.category == category for p in products) == 25
    assert len({p.name for p in products}) == 200
    assert all(len(p.description.split()) >= 6 and p.price > 0 for p in products)


def test_users_are_plausible() -> None:
    users = load_users()
    assert len(users) == 1000 and [u.user_id for u in users] == list(range(1000))
    assert all(18 <= u.age <= 75 and -44 < u.lat < -26 and 114 < u.lon < 154 for u in users)
    assert {u.source for u in users} == {"Display", "Email", "Facebook", "Organic", "Search"}


def test_historical_log_is_deterministic_and_in_the_event_schema() -> None:
    from contract.events import parse_event

    users, products, fs = load_users(), load_catalog(), FeatureSpace.load()
    oracle = load_oracle("rules", fs)
    a = make_history(users, products, fs, oracle, SEED, n=2000)
    b = make_history(users, products, fs, oracle, SEED, n=2000)
    assert history_jsonl(a, users, products) == history_jsonl(b, users, products)
    assert history_csv(a, users, products) == history_csv(b, users, products)
    c = make_history(users, products, fs, oracle, SEED + 1, n=2000)
    assert history_csv(c, users, products) != history_csv(a, users, products)
    known = {p.product_id for p in products}
    events = [parse_event(line, dim=CONTEXT_DIM, known_products=known)
              for line in history_jsonl(a, users, products).splitlines()]
    assert sum(e.type == "click" for e in events) == int(a.clicked.sum())


def test_default_log_click_rate_is_13_to_16_percent() -> None:
    users, products, fs = load_users(), load_catalog(), FeatureSpace.load()
    h = make_history(users, products, fs, load_oracle("rules", fs), SEED)
    assert len(h.clicked) == 10_000
    assert 0.13 <= h.ctr <= 0.16


def test_feature_file_round_trips_exactly_and_holds_no_pickle(tmp_path: Path) -> None:
    raw = (DATA_DIR / "features.json").read_bytes()
    # Plain UTF-8 JSON (a pickle starts with b"\x80"; jsonpickle tags objects "py/..."):
    # loading it cannot run code.
    assert raw.startswith(b"{") and b"\x80" not in raw and b'"py/' not in raw
    doc = json.loads(raw.decode("utf-8"))
    assert doc["format"] == "rtrec.features" and doc["version"] == 1
    fs = FeatureSpace.load()
    fs.save(tmp_path / "f.json")
    assert (tmp_path / "f.json").read_bytes() == raw
    assert FeatureSpace.load(tmp_path / "f.json") == fs


def test_numpy_transforms_equal_the_rebuilt_sklearn_ones() -> None:
    fs = FeatureSpace.load()
    sk = fs.to_sklearn()
    users, products = load_users(), load_catalog()
    raw = np.array([(u.age, u.lat, u.lon) for u in users], dtype=float)
    x = fs.context_matrix(users, [utc(2026, 1, 5, 8)] * len(users))
    np.testing.assert_allclose(x[:, :3], sk["user_scaler"].transform(raw), atol=1e-12)
    emb = sk["svd"].transform(sk["tfidf"].transform([p.description for p in products]))
    np.testing.assert_allclose(fs.text_embedding([p.description for p in products]), emb,
                               atol=1e-12)
    prices = sk["price_scaler"].transform([[p.price] for p in products])[:, 0]
    np.testing.assert_allclose([fs.normalized_price(p) for p in products], prices, atol=1e-12)


def test_context_vector_layout() -> None:
    fs = FeatureSpace.load()
    user = load_users()[0]
    saturday_evening = fs.context_vector(user, utc(2026, 1, 10, 20))
    assert saturday_evening.shape == (15,) and saturday_evening.dtype == np.float64
    assert list(saturday_evening[10:]) == [0, 0, 1, 0, 1]
    assert saturday_evening[3:5].sum() == 1 and saturday_evening[5:10].sum() == 1
    assert ((saturday_evening[:3] >= 0) & (saturday_evening[:3] <= 1)).all()
    np.testing.assert_array_equal(
        fs.context_matrix([user, user], [utc(2026, 1, 10, 20), utc(2026, 1, 5, 13)])[0],
        saturday_evening)


def test_feature_file_of_another_version_is_refused() -> None:
    doc = json.loads((DATA_DIR / "features.json").read_text())
    doc["version"] = 99
    with pytest.raises(ValueError, match="version"):
        FeatureSpace.from_dict(doc)
