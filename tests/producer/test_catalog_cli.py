"""``python -m producer catalog|users`` against the real broker of the session stack."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from contract.catalog import read_catalog
from contract.config import Settings
from contract.features import DATA_DIR, load_users
from producer.__main__ import build_parser
from producer.live_catalog import cmd_catalog, cmd_users

ROOT = Path(__file__).resolve().parents[2]


def run(settings: Settings, *argv: str) -> int:
    args = build_parser(settings).parse_args(list(argv))
    return (cmd_catalog if args.command == "catalog" else cmd_users)(args, settings)


def test_a_file_with_bad_rows_changes_nothing(unique_settings: Settings, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    s = unique_settings
    good = tmp_path / "good.csv"
    good.write_text("product_id,category,price\nA,Tea,2\nB,Tea,3\n")
    assert run(s, "catalog", "load", str(good)) == 0
    before = read_catalog(s)
    bad = tmp_path / "bad.csv"
    bad.write_text("product_id,category,price,in_stock\n"
                   "A,Tea,2.5,true\n"     # a change that must not be applied
                   "C,Tea,0,true\n"       # line 3: price
                   "D,Tea,4,sometimes\n"  # line 4: in_stock
                   "E,Coffee,4,false\n")
    capsys.readouterr()
    assert run(s, "catalog", "load", str(bad)) == 1
    err = capsys.readouterr().err
    assert f"{bad}:line 3: price: " in err and f"{bad}:line 4: in_stock: " in err
    assert "2 bad row(s); nothing applied" in err
    after = read_catalog(s)
    assert after.offset == before.offset and after.records == before.records
    # --skip-bad: the good rows only (A changed, E new), the bad ones still reported
    assert run(s, "catalog", "load", str(bad), "--skip-bad") == 0
    out = capsys.readouterr()
    assert json.loads(out.out) == {"written": 2, "unchanged": 0, "retired": 0,
                                   "skipped_bad": 2, "catalog_offset": before.offset + 2}
    assert "line 3: price" in out.err
    cat = read_catalog(s)
    assert cat.active_ids() == ["A", "B", "E"]
    assert cat.records["A"].price == 2.5 and cat.records["A"].version == 2
    assert cat.records["E"].in_stock is False


def test_set_retire_readd_and_list(unique_settings: Settings,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    s = unique_settings
    assert run(s, "catalog", "set", "N1") == 1  # a new product needs category and price
    assert "category: required for a new product" in capsys.readouterr().err
    assert run(s, "catalog", "set", "N1", "--category", "Tea", "--price", "4",
               "--attr", "vegan=true", "--attr", "kcal=80") == 0
    assert run(s, "catalog", "set", "N1", "--out-of-stock", "--attr", "kcal=") == 0
    rec = read_catalog(s).records["N1"]
    assert (rec.in_stock, dict(rec.attributes), rec.version, rec.price) == \
        (False, {"vegan": True}, 2, 4.0)
    assert run(s, "catalog", "retire", "N1", "NOPE") == 1  # unknown id: nothing retired
    assert "'NOPE' is not in the catalog" in capsys.readouterr().err
    assert not read_catalog(s).is_retired("N1")
    assert run(s, "catalog", "retire", "N1") == 0
    cat = read_catalog(s)
    assert cat.is_retired("N1") and cat.active_ids() == []
    assert run(s, "catalog", "retire", "N1") == 1
    assert "already retired" in capsys.readouterr().err
    # re-added with its last fields, the next version
    assert run(s, "catalog", "set", "N1", "--in-stock") == 0
    rec = read_catalog(s).records["N1"]
    assert (rec.in_stock, rec.category, rec.version) == (True, "Tea", 3)
    capsys.readouterr()
    assert run(s, "catalog", "list") == 0
    out = capsys.readouterr()
    assert [json.loads(line)["product_id"] for line in out.out.splitlines()] == ["N1"]
    assert json.loads(out.err)["products"] == 1


def test_shipped_catalog_loads_once_and_a_reload_writes_nothing(
        unique_settings: Settings, tmp_path: Path) -> None:
    s = unique_settings
    env = {**s.to_env(), "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-m", "producer", "-q", "catalog", "load",
           str(DATA_DIR / "catalog.csv")]
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["written"] == 200
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert json.loads(again.stdout) == {"written": 0, "unchanged": 200, "retired": 0,
                                        "skipped_bad": 0, "catalog_offset": 200}
    # a full load of a smaller file retires what it does not list
    part = tmp_path / "part.csv"
    part.write_text("".join((DATA_DIR / "catalog.csv").read_text().splitlines(True)[:11]))
    assert run(s, "catalog", "load", str(part), "--retire-missing") == 0
    cat = read_catalog(s)
    assert len(cat.records) == 10 and len(cat.retired) == 190


def test_users_load_checks_the_file_and_replaces_the_table(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s = Settings.from_env({"RTREC_USER_TABLE": str(tmp_path / "table.csv")})
    table = tmp_path / "table.csv"
    table.write_text((DATA_DIR / "users.csv").read_text())
    bad = tmp_path / "mine.jsonl"
    bad.write_text('{"user_id":5,"age":40,"gender":"F","lat":-33.9,"lon":151.2,"source":"Email"}\n'
                   '{"user_id":6,"age":40,"gender":"F","lat":-33.9,"lon":151.2,"source":"TV"}\n')
    assert run(s, "users", "load", str(bad)) == 1
    assert "line 2: source: 'TV' is not one of" in capsys.readouterr().err
    assert load_users(table) == load_users()  # untouched
    assert run(s, "users", "load", str(bad), "--skip-bad") == 0
    assert [u.user_id for u in load_users(table)] == [5]



def test_without_a_table_set_the_working_copy_changes_never_the_shipped_table(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No RTREC_USER_TABLE: `users load` and a deletion's profile removal write the working
    copy var/users.csv (made from the shipped table on first use), and serving reads that copy;
    the repository's contract/data/users.csv stays as shipped."""
    from contract.forget import WORKING_USER_TABLE, remove_user, user_table_path

    monkeypatch.chdir(tmp_path)
    shipped = (DATA_DIR / "users.csv").read_bytes()
    s = Settings.from_env({})
    path = user_table_path(s)
    assert path == WORKING_USER_TABLE and path.read_bytes() == shipped
    victim = load_users()[3].user_id
    assert remove_user(path, victim) is True
    assert victim not in {u.user_id for u in load_users(user_table_path(s))}
    assert len(load_users(path)) == len(load_users()) - 1  # the copy is kept, not re-made
    mine = tmp_path / "mine.jsonl"
    mine.write_text('{"user_id":5,"age":40,"gender":"F","lat":-33.9,"lon":151.2,'
                    '"source":"Email"}\n')
    assert run(s, "users", "load", str(mine)) == 0
    assert [u.user_id for u in load_users(tmp_path / WORKING_USER_TABLE)] == [5]
    assert (DATA_DIR / "users.csv").read_bytes() == shipped
