"""The catalog's record, codec, reader and file checks (contract/catalog.py), without Kafka."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contract.catalog import (
    Catalog,
    CatalogError,
    ProductRecord,
    parse_record,
    read_product_file,
    read_user_file,
    users_csv,
)
from contract.features import DATA_DIR, load_catalog, load_users


def test_record_round_trips_through_json() -> None:
    r = ProductRecord("p9", "Tea", 3, in_stock=False, attributes={"vegan": True, "kcal": 120.5},
                      version=4, name="Green tea", description="Loose leaf")
    back = parse_record(r.to_json(), key=b"p9")
    assert back == r and back.price == 3.0 and isinstance(back.price, float)
    assert json.loads(r.to_json())["v"] == 1


@pytest.mark.parametrize("kwargs, field", [
    ({"product_id": ""}, "product_id"),
    ({"product_id": " p1"}, "product_id"),
    ({"product_id": "p\n1"}, "product_id"),
    ({"category": ""}, "category"),
    ({"price": 0}, "price"),
    ({"price": float("nan")}, "price"),
    ({"price": True}, "price"),
    ({"in_stock": "yes"}, "in_stock"),
    ({"version": 0}, "version"),
    ({"attributes": {"a": [1]}}, "attributes.a"),
    ({"attributes": {"a": float("inf")}}, "attributes.a"),
    ({"attributes": {f"a{i}": 1 for i in range(33)}}, "attributes"),
    ({"name": "x" * 2001}, "name"),
])
def test_invalid_record_names_its_field(kwargs: dict, field: str) -> None:
    base = {"product_id": "p1", "category": "Pizzas", "price": 10.0}
    with pytest.raises(CatalogError) as err:
        ProductRecord(**{**base, **kwargs})
    assert err.value.field == field


@pytest.mark.parametrize("raw, key, field", [
    (b"{", None, "$"),
    (b'{"product_id":"p1","category":"c","price":1,"price":2}', None, "$"),
    (b'{"product_id":"p1","category":"c","price":NaN}', None, "$"),
    (b'{"product_id":"p1","category":"c"}', None, "price"),
    (b'{"product_id":"p1","category":"c","price":1,"colour":"red"}', None, "colour"),
    (b'{"v":2,"product_id":"p1","category":"c","price":1}', None, "v"),
    (b'{"product_id":"p1","category":"c","price":1}', b"p2", "product_id"),
    (b"[1]", None, "$"),
])
def test_parse_refuses_what_is_not_a_record(raw: bytes, key: bytes | None, field: str) -> None:
    with pytest.raises(CatalogError) as err:
        parse_record(raw, key)
    assert err.value.field == field


def test_reader_keeps_the_latest_record_and_tells_retired_from_unknown() -> None:
    a1 = ProductRecord("a", "c", 1.0)
    a2 = a1.with_changes(price=2.0)
    b = ProductRecord("b", "c", 5.0)
    cat = Catalog()
    for off, (k, v) in enumerate([(b"a", a1.to_json()), (b"b", b.to_json()),
                                  (b"a", a2.to_json()), (b"b", None), (b"a", b"junk")]):
        cat.apply(k, v, off)
    assert cat.records == {"a": a2} and a2.version == 2
    assert cat.is_retired("b") and not cat.is_retired("zzz") and cat.invalid == 1
    assert cat.offset == 5 and cat.last_version("b") == 1  # a retired product keeps its version
    # re-added: active again, no longer retired
    cat.apply(b"b", b.with_changes().to_json(), 5)
    assert cat.active_ids() == ["a", "b"] and not cat.is_retired("b")


def test_digest_is_the_content_not_the_order() -> None:
    recs = [ProductRecord(f"p{i}", "c", 1.0 + i) for i in range(5)]
    one, two = Catalog(), Catalog()
    for i, r in enumerate(recs):
        one.apply(r.key, r.to_json(), i)
    for i, r in enumerate(reversed(recs)):
        two.apply(r.key, r.to_json(), i)
    assert one.digest() == two.digest()
    two.apply(b"p0", None, 9)
    assert one.digest() != two.digest()


def test_shipped_catalog_file_reads_clean_and_matches_the_features_loader() -> None:
    records, errors = read_product_file(DATA_DIR / "catalog.csv")
    assert errors == []
    shipped = load_catalog()
    assert [(r.product_id, r.category, r.price, r.name) for r in records] == \
        [(p.product_id, p.category, p.price, p.name) for p in shipped]


def test_every_bad_csv_row_is_reported_with_its_line(tmp_path: Path) -> None:
    f = tmp_path / "cat.csv"
    f.write_text("product_id,category,price,in_stock,colour\n"
                 "p1,Pizzas,10,true,red\n"      # 2 good (colour an attribute)
                 "p2,Pizzas,-3,true,\n"         # 3 price
                 "p3,,4,true,\n"                # 4 category missing
                 "p4,Pizzas,4,maybe,\n"         # 5 in_stock
                 "p1,Pizzas,11,true,\n"         # 6 duplicate id
                 "p5,Pizzas,abc,false,\n"       # 7 price not a number
                 "p6,Pizzas,5\n"                # 8 wrong field count
                 "\n"
                 '"p7","Pizzas","6","false",""\n')  # 10 good
    records, errors = read_product_file(f)
    assert [r.product_id for r in records] == ["p1", "p7"]
    assert records[0].attributes == {"colour": "red"} and records[1].in_stock is False
    assert [(e.line, e.field) for e in errors] == [
        (3, "price"), (4, "category"), (5, "in_stock"), (6, "product_id"), (7, "price"),
        (8, "$")]
    assert "already on line 2" in str(errors[3]) and str(errors[0]).startswith("line 3: price")


def test_jsonl_rows_are_checked_the_same_way(tmp_path: Path) -> None:
    f = tmp_path / "cat.jsonl"
    f.write_text('{"product_id":"p1","category":"Tea","price":2.5,"attributes":{"hot":true}}\n'
                 '{"product_id":"p2","category":"Tea","price":"2"}\n'
                 "not json\n"
                 '{"product_id":"p3","category":"Tea","price":1,"extra":1}\n'
                 "[]\n")
    records, errors = read_product_file(f)
    assert [r.product_id for r in records] == ["p1"]
    assert [(e.line, e.field) for e in errors] == [(2, "price"), (3, "$"), (4, "extra"), (5, "$")]


def test_user_file_checks_every_row(tmp_path: Path) -> None:
    f = tmp_path / "users.csv"
    f.write_text("user_id,age,gender,lat,lon,source\n"
                 "1,30,F,-37.8,144.9,Email\n"
                 "2,30,X,-37.8,144.9,Email\n"
                 "3,300,F,-37.8,144.9,Email\n"
                 "4,30,F,-97.8,144.9,Email\n"
                 "5,30,F,-37.8,144.9,Radio\n"
                 "1,31,M,-37.8,144.9,Organic\n"
                 "x,31,M,-37.8,144.9,Organic\n")
    users, errors = read_user_file(f)
    assert [u.user_id for u in users] == [1]
    assert [(e.line, e.field) for e in errors] == [
        (3, "gender"), (4, "age"), (5, "lat"), (6, "source"), (7, "user_id"), (8, "user_id")]


def test_shipped_user_table_round_trips(tmp_path: Path) -> None:
    users, errors = read_user_file(DATA_DIR / "users.csv")
    assert errors == [] and users == load_users()
    out = tmp_path / "u.csv"
    out.write_text(users_csv(users))
    assert load_users(out) == users
