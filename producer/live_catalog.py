"""``python -m producer catalog|users``: a team's own catalog and user table (docs/CATALOG.md).

The catalog goes to the compacted catalog topic (``RTREC_CATALOG_TOPIC``), read by the job
and serving; the user table is the CSV serving looks users up in (``RTREC_USER_TABLE``). A
file is checked whole before anything is written: every bad row is reported with its line
number and reason, and a file with errors changes nothing unless ``--skip-bad`` is given
(then only its good rows are applied).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contract.catalog import (
    Catalog,
    CatalogError,
    ProductRecord,
    RowError,
    ensure_catalog_topic,
    read_catalog,
    read_product_file,
    read_user_file,
    users_csv,
    write_records,
)
from contract.config import Settings
from contract.errors import RtrecError
from contract.forget import user_table_path


class LoadRefusedError(RtrecError):
    """A file with bad rows and no ``--skip-bad``: nothing was applied; ``errors`` says why."""

    def __init__(self, path: Path, errors: list[RowError]) -> None:
        super().__init__(f"{path}: {len(errors)} bad row(s); nothing applied "
                         "(fix them, or --skip-bad to apply the good rows)")
        self.errors = errors


@dataclass(frozen=True)
class LoadResult:
    """What a catalog load did: records written (new or changed), rows already current,
    products retired (``retire_missing``), bad rows skipped, and the catalog's offset after."""

    written: int
    unchanged: int
    retired: int
    skipped_bad: int
    offset: int

    def to_dict(self) -> dict[str, int]:
        return {"written": self.written, "unchanged": self.unchanged, "retired": self.retired,
                "skipped_bad": self.skipped_bad, "catalog_offset": self.offset}


def _producer(settings: Settings):  # type: ignore[no-untyped-def]
    from contract.kafka import kafka_producer

    return kafka_producer(settings.kafka, **{"enable.idempotence": True, "linger.ms": 5})


def current(settings: Settings, timeout_s: float = 10.0) -> Catalog:
    """The catalog as the topic holds it (the topic is created when missing)."""
    ensure_catalog_topic(settings, timeout_s)
    return read_catalog(settings, timeout_s)


def load_records(settings: Settings, records: Sequence[ProductRecord], *,
                 retire_missing: bool = False, skipped_bad: int = 0,
                 timeout_s: float = 30.0) -> LoadResult:
    """Apply ``records`` to the catalog topic: a record equal to the current one (all but its
    version) is not rewritten; a new or changed one is written with the product's next
    version. ``retire_missing``: every active product not in ``records`` is retired."""
    cat = current(settings, timeout_s)
    out: list[tuple[str, ProductRecord | None]] = []
    unchanged = 0
    for rec in records:
        old = cat.records.get(rec.product_id)
        if old is not None and _same(old, rec):
            unchanged += 1
            continue
        version = max(rec.version, cat.last_version(rec.product_id) + 1)
        out.append((rec.product_id, ProductRecord(**{**_fields(rec), "version": version})))
    ids = {r.product_id for r in records}
    gone = [pid for pid in cat.active_ids() if pid not in ids] if retire_missing else []
    out.extend((pid, None) for pid in gone)
    if out:
        write_records(_producer(settings), settings.kafka.topic_catalog, out, timeout_s)
    return LoadResult(len(out) - len(gone), unchanged, len(gone), skipped_bad,
                      cat.offset + len(out))


def load_file(settings: Settings, path: str | Path, *, skip_bad: bool = False,
              retire_missing: bool = False, timeout_s: float = 30.0
              ) -> tuple[LoadResult, list[RowError]]:
    """Check the whole file, then apply it (:func:`load_records`); :class:`LoadRefusedError` when
    it has bad rows and not ``skip_bad`` (nothing is written). ``retire_missing`` with bad
    rows skipped would retire products whose row was bad: refused too."""
    path = Path(path)
    records, errors = read_product_file(path)
    if errors and (not skip_bad or retire_missing):
        raise LoadRefusedError(path, errors)
    return load_records(settings, records, retire_missing=retire_missing,
                        skipped_bad=len(errors), timeout_s=timeout_s), errors


def set_product(settings: Settings, product_id: str, changes: dict[str, Any],
                timeout_s: float = 30.0) -> ProductRecord:
    """Create or change one product (``changes``: record fields; ``attributes`` merged, a
    None value removes an attribute); returns the record written."""
    cat = current(settings, timeout_s)
    old = cat.records.get(product_id) or cat.retired.get(product_id)
    attrs = dict(old.attributes) if old is not None else {}
    for k, v in (changes.pop("attributes", None) or {}).items():
        if v is None:
            attrs.pop(k, None)
        else:
            attrs[k] = v
    if old is None:
        missing = [f for f in ("category", "price") if changes.get(f) is None]
        if missing:
            raise CatalogError(missing[0], f"required for a new product ({product_id!r} is not "
                                           "in the catalog)")
        base: dict[str, Any] = {"product_id": product_id}
    else:
        base = _fields(old)
    given = {k: v for k, v in changes.items() if v is not None}
    rec = ProductRecord(**{**base, **given, "attributes": attrs,
                           "version": cat.last_version(product_id) + 1})
    write_records(_producer(settings), settings.kafka.topic_catalog, [(product_id, rec)],
                  timeout_s)
    return rec


def retire(settings: Settings, product_ids: Sequence[str], timeout_s: float = 30.0) -> int:
    """Retire products (a tombstone each); an id not in the catalog is an error and nothing
    is written."""
    cat = current(settings, timeout_s)
    unknown = [p for p in product_ids if p not in cat.records]
    if unknown:
        why = "already retired" if cat.is_retired(unknown[0]) else "not in the catalog"
        raise CatalogError("product_id", f"{unknown[0]!r} is {why}; nothing retired")
    return write_records(_producer(settings), settings.kafka.topic_catalog,
                         [(p, None) for p in product_ids], timeout_s)


def load_users_file(path: str | Path, table: str | Path, *, skip_bad: bool = False
                    ) -> tuple[int, list[RowError]]:
    """Replace the user table at ``table`` with the users of ``path`` (checked whole first:
    :class:`LoadRefusedError` when it has bad rows and not ``skip_bad``). The new table is written
    beside the old one and renamed over it, so a reader sees one table or the other."""
    path, table = Path(path), Path(table)
    users, errors = read_user_file(path)
    if errors and not skip_bad:
        raise LoadRefusedError(path, errors)
    table.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=table.parent, prefix=f".{table.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(users_csv(users))
        os.replace(tmp, table)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(users), errors


def _fields(rec: ProductRecord) -> dict[str, Any]:
    d = rec.to_dict()
    del d["v"]
    return d


def _same(a: ProductRecord, b: ProductRecord) -> bool:
    """Equal but for the version."""
    fa, fb = _fields(a), _fields(b)
    fa.pop("version"), fb.pop("version")
    return fa == fb


# --- the command line -------------------------------------------------------------------------
def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``catalog`` and ``users`` under ``python -m producer``."""
    p = sub.add_parser("catalog", help="the live catalog: load, set, retire, list",
                       description="Read and change the product catalog on its compacted "
                                   "topic (RTREC_CATALOG_TOPIC); the job and serving follow "
                                   "it (docs/CATALOG.md).")
    csub = p.add_subparsers(dest="catalog_command", required=True)
    ld = csub.add_parser("load", help="load a CSV or JSON-lines catalog file",
                         description="Check every row (errors: line number and reason); "
                                     "a file with errors changes nothing unless --skip-bad.")
    ld.add_argument("file", type=Path)
    ld.add_argument("--skip-bad", action="store_true",
                    help="apply the good rows of a file that has bad ones")
    ld.add_argument("--retire-missing", action="store_true",
                    help="retire every product the file does not list (a full catalog)")
    st = csub.add_parser("set", help="create or change one product")
    st.add_argument("product_id")
    st.add_argument("--category")
    st.add_argument("--price", type=float)
    stock = st.add_mutually_exclusive_group()
    stock.add_argument("--in-stock", dest="in_stock", action="store_true", default=None)
    stock.add_argument("--out-of-stock", dest="in_stock", action="store_false")
    st.add_argument("--name")
    st.add_argument("--description")
    st.add_argument("--attr", action="append", default=[], metavar="NAME=VALUE",
                    help="set an attribute (a number when it parses as one; NAME= removes it)")
    rt = csub.add_parser("retire", help="retire products (a tombstone each)")
    rt.add_argument("product_id", nargs="+")
    ls = csub.add_parser("list", help="the catalog as JSON lines")
    ls.add_argument("--retired", action="store_true", help="list the retired ids too")
    for q in (ld, st, rt, ls):
        q.add_argument("--timeout", type=float, default=30.0,
                       help="seconds to wait for Kafka (default %(default)s)")

    u = sub.add_parser("users", help="the user table: load a team's own",
                       description="Replace the user table (RTREC_USER_TABLE, or --table) "
                                   "with a CSV or JSON-lines file of user_id, age, gender, "
                                   "lat, lon, source; every row checked first.")
    usub = u.add_subparsers(dest="users_command", required=True)
    ul = usub.add_parser("load", help="load a CSV or JSON-lines user file")
    ul.add_argument("file", type=Path)
    ul.add_argument("--skip-bad", action="store_true",
                    help="write the good rows of a file that has bad ones")
    ul.add_argument("--table", type=Path, default=None,
                    help="the table to write (default RTREC_USER_TABLE)")


def _attr(text: str) -> tuple[str, Any]:
    name, eq, value = text.partition("=")
    if not eq or not name:
        raise CatalogError("attributes", f"expected NAME=VALUE, got {text!r}")
    if value == "":
        return name, None
    if value.lower() in ("true", "false"):
        return name, value.lower() == "true"
    try:
        return name, int(value)
    except ValueError:
        pass
    try:
        return name, float(value)
    except ValueError:
        return name, value


def _report(errors: list[RowError], path: Path) -> None:
    for e in errors:
        print(f"{path}:{e}", file=sys.stderr)


def cmd_catalog(args: argparse.Namespace, settings: Settings) -> int:
    """Run one ``catalog`` command; 1 with the reasons on stderr when refused."""
    try:
        if args.catalog_command == "load":
            try:
                result, errors = load_file(settings, args.file, skip_bad=args.skip_bad,
                                           retire_missing=args.retire_missing,
                                           timeout_s=args.timeout)
            except LoadRefusedError as exc:
                _report(exc.errors, args.file)
                print(f"error: {exc}", file=sys.stderr)
                return 1
            _report(errors, args.file)
            print(json.dumps(result.to_dict()))
            return 0
        if args.catalog_command == "set":
            attrs = dict(_attr(a) for a in args.attr)
            rec = set_product(settings, args.product_id,
                              {"category": args.category, "price": args.price,
                               "in_stock": args.in_stock, "name": args.name,
                               "description": args.description, "attributes": attrs},
                              args.timeout)
            print(rec.to_json().decode())
            return 0
        if args.catalog_command == "retire":
            n = retire(settings, args.product_id, args.timeout)
            print(json.dumps({"retired": n}))
            return 0
        cat = current(settings, args.timeout)
        for pid in cat.active_ids():
            print(cat.records[pid].to_json().decode())
        if args.retired:
            for pid in sorted(cat.retired):
                print(json.dumps({"product_id": pid, "retired": True}))
        print(json.dumps({"products": len(cat.records), "retired": len(cat.retired),
                          "catalog_offset": cat.offset, "digest": cat.digest()}),
              file=sys.stderr)
        return 0
    except (CatalogError, OSError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def cmd_users(args: argparse.Namespace, settings: Settings) -> int:
    """Run ``users load``; the table is --table, RTREC_USER_TABLE or the working copy
    (contract.forget.user_table_path), never the shipped one."""
    try:
        table = args.table or user_table_path(settings)
        n, errors = load_users_file(args.file, table, skip_bad=args.skip_bad)
    except LoadRefusedError as exc:
        _report(exc.errors, args.file)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    _report(errors, args.file)
    print(json.dumps({"users": n, "skipped_bad": len(errors), "table": str(table)}))
    return 0
