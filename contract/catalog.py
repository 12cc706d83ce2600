"""The catalog as live data: product records on a compacted Kafka topic (docs/CATALOG.md).

One record per product, keyed by ``product_id`` on the topic ``RTREC_CATALOG_TOPIC`` (one
partition, compacted): the value is a :class:`ProductRecord` as JSON, a tombstone (no value)
retires the product. Whoever needs the catalog (the job, serving, the producer's command line)
rebuilds it the same way, with :class:`Catalog`: the latest record per key in topic order, a
tombstone marking the product retired (kept apart from "never known", so a retired product's
events can be told apart). One partition gives the topic one order, so the offset read up to
is the catalog's version: two readers at the same offset hold the same catalog.

Files a team brings (its own catalog, its own user table) are read with
:func:`read_product_file` and :func:`read_user_file`: CSV or JSON lines, every row checked,
each bad row reported with its line number and reason (:class:`RowError`).

>>> r = ProductRecord("p1", "Pizzas", 12.5, attributes={"vegan": True})
>>> parse_record(r.to_json(), key=b"p1") == r
True
>>> ProductRecord("p1", "Pizzas", -1.0)
Traceback (most recent call last):
...
contract.catalog.CatalogError: price: must be a positive finite number, got -1.0
>>> cat = Catalog()
>>> cat.apply(b"p1", r.to_json(), 0); cat.apply(b"p1", None, 1)
>>> cat.is_retired("p1"), cat.active_ids(), cat.offset
(True, [], 2)
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from contract.errors import RtrecError
from contract.events import MAX_ID_LEN, MAX_SAFE_INT
from contract.features import GENDERS, SOURCES, Product, User

if TYPE_CHECKING:  # pragma: no cover
    from contract.config import Settings

CATALOG_FORMAT_VERSION = 1
"""``"v"`` of a product record's JSON; a reader refuses another."""
MAX_ATTRIBUTES = 32
MAX_TEXT_LEN = 2000
MAX_RECORD_BYTES = 16_384
CATALOG_TOPIC_CONFIG = {
    "cleanup.policy": "compact",
    "min.compaction.lag.ms": "0",
    # a tombstone is what says "retired": compaction would drop it after delete.retention.ms
    # (default 24 h), and a reader rebuilding later would see "never known" instead; keep it
    "delete.retention.ms": str(MAX_SAFE_INT),
}
"""The catalog topic's configuration (one partition: :data:`CATALOG_PARTITIONS`)."""
CATALOG_PARTITIONS = 1
PRODUCT_COLUMNS = ("product_id", "category", "price", "in_stock", "name", "description",
                   "version")
"""Columns of a catalog CSV with a meaning; any other non-empty column is an attribute."""
USER_COLUMNS = ("user_id", "age", "gender", "lat", "lon", "source")


class CatalogError(RtrecError, ValueError):
    """A product record, user row or catalog file that is not valid; ``field`` names where."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


@dataclass(frozen=True)
class RowError:
    """One bad row of a file: its line number (1 = the first line of the file), the field
    and the reason."""

    line: int
    field: str
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.field}: {self.reason}"


@dataclass(frozen=True)
class ProductRecord:
    """One product of the catalog; valid by construction (:class:`CatalogError` otherwise).

    ``version`` is the record's own counter (1, 2, ...: the command line writes the previous
    version + 1); readers apply records in topic order, the version tells an operator which
    edit they are looking at. ``attributes``: up to 32 names -> string, number or boolean.
    """

    product_id: str
    category: str
    price: float
    in_stock: bool = True
    attributes: Mapping[str, Any] = field(default_factory=dict)
    version: int = 1
    name: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        _check_id(self.product_id)
        if not isinstance(self.category, str) or not 0 < len(self.category) <= MAX_ID_LEN:
            raise CatalogError("category", f"expected a string of 1..{MAX_ID_LEN} characters")
        if isinstance(self.price, bool) or not isinstance(self.price, int | float) \
                or not (math.isfinite(self.price) and self.price > 0):
            raise CatalogError("price", f"must be a positive finite number, got {self.price!r}")
        object.__setattr__(self, "price", float(self.price))
        if not isinstance(self.in_stock, bool):
            raise CatalogError("in_stock", f"expected true or false, got {self.in_stock!r}")
        if isinstance(self.version, bool) or not isinstance(self.version, int) \
                or not 1 <= self.version <= MAX_SAFE_INT:
            raise CatalogError("version", f"expected an integer in 1..2**53-1, got "
                                          f"{self.version!r}")
        for name in ("name", "description"):
            v = getattr(self, name)
            if not isinstance(v, str) or len(v) > MAX_TEXT_LEN:
                raise CatalogError(name, f"expected a string of at most {MAX_TEXT_LEN} "
                                         "characters")
        attrs = self.attributes
        if not isinstance(attrs, Mapping):
            raise CatalogError("attributes", "expected an object")
        if len(attrs) > MAX_ATTRIBUTES:
            raise CatalogError("attributes", f"{len(attrs)} > {MAX_ATTRIBUTES} attributes")
        for k, v in attrs.items():
            if not isinstance(k, str) or not 0 < len(k) <= MAX_ID_LEN:
                raise CatalogError("attributes", f"name {k!r}: expected 1..{MAX_ID_LEN} "
                                                 "characters")
            if isinstance(v, float) and not math.isfinite(v):
                raise CatalogError(f"attributes.{k}", "not a finite number")
            if not isinstance(v, str | int | float | bool) or (
                    isinstance(v, str) and len(v) > MAX_TEXT_LEN):
                raise CatalogError(f"attributes.{k}", "expected a string, number or boolean")
        object.__setattr__(self, "attributes", dict(sorted(attrs.items())))

    @property
    def key(self) -> bytes:
        """The Kafka key: compaction keeps the latest record of each product."""
        return self.product_id.encode()

    def to_dict(self) -> dict[str, Any]:
        return {"v": CATALOG_FORMAT_VERSION, "product_id": self.product_id,
                "category": self.category, "price": self.price, "in_stock": self.in_stock,
                "attributes": dict(self.attributes), "version": self.version,
                "name": self.name, "description": self.description}

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True,
                          ensure_ascii=False).encode()

    def with_changes(self, **changes: Any) -> ProductRecord:
        """A copy with ``changes`` and the next version."""
        return ProductRecord(**{**self._fields(), **changes, "version": self.version + 1})

    def _fields(self) -> dict[str, Any]:
        d = self.to_dict()
        del d["v"]
        return d


def product_record(p: Product, version: int = 1) -> ProductRecord:
    """The record of a product of the simulated world (contract/data/catalog.csv), as the
    demo loads it: what a team's own file would give for the same product."""
    return ProductRecord(p.product_id, p.category, p.price, version=version, name=p.name,
                         description=p.description)


def _check_id(pid: Any) -> None:
    if not isinstance(pid, str) or not 0 < len(pid) <= MAX_ID_LEN:
        raise CatalogError("product_id", f"expected a string of 1..{MAX_ID_LEN} characters")
    if pid != pid.strip() or any(ord(c) < 32 for c in pid):
        raise CatalogError("product_id", "no leading/trailing spaces or control characters")


_RECORD_FIELDS = frozenset(("v", "product_id", "category", "price", "in_stock", "attributes",
                            "version", "name", "description"))
_REQUIRED = ("product_id", "category", "price")


def record_from_dict(obj: Any) -> ProductRecord:
    """A record from a decoded JSON object (a topic value or a JSON-lines row)."""
    if not isinstance(obj, dict):
        raise CatalogError("$", f"expected an object, got {type(obj).__name__}")
    if "v" in obj and obj["v"] != CATALOG_FORMAT_VERSION:
        raise CatalogError("v", f"format version {obj['v']!r} != {CATALOG_FORMAT_VERSION}")
    extra = sorted(set(obj) - _RECORD_FIELDS)
    if extra:
        raise CatalogError(extra[0], "unknown field (attributes go in \"attributes\")")
    for name in _REQUIRED:
        if name not in obj:
            raise CatalogError(name, "required field is missing")
    return ProductRecord(**{k: v for k, v in obj.items() if k != "v"})


def parse_record(raw: bytes | str, key: bytes | str | None = None) -> ProductRecord:
    """A record from a topic value (strict JSON); with ``key``, the key must be its id."""
    if len(raw) > MAX_RECORD_BYTES:
        raise CatalogError("$", f"{len(raw)} bytes > {MAX_RECORD_BYTES}")
    try:
        obj = json.loads(raw, parse_constant=_no_constant, object_pairs_hook=_no_dup_keys)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CatalogError("$", f"not JSON: {exc}") from None
    record = record_from_dict(obj)
    if key is not None:
        k = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
        if k != record.product_id:
            raise CatalogError("product_id", f"{record.product_id!r} != the record's key {k!r}")
    return record


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _no_dup_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate key")
    return out


# --- the catalog a reader rebuilds ------------------------------------------------------------
class Catalog:
    """The catalog as read from the topic: the latest record per product, the retired ids
    (a tombstone was the latest), and ``offset``, the next offset to read (the version of
    the catalog: one partition, so equal offsets mean equal catalogs). A record that is not
    valid is counted in ``invalid`` and changes nothing (the previous record stays)."""

    def __init__(self) -> None:
        self.records: dict[str, ProductRecord] = {}
        self.retired: dict[str, ProductRecord | None] = {}  # id -> its last record
        self.offset = 0
        self.invalid = 0

    def apply(self, key: bytes | str | None, value: bytes | str | None, offset: int) -> None:
        """One topic record (``value`` None: a tombstone) at ``offset``."""
        self.offset = max(self.offset, offset + 1)
        pid = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
        if value is None:
            if pid:
                self.retired[pid] = self.records.pop(pid, self.retired.get(pid))
            else:
                self.invalid += 1
            return
        try:
            record = parse_record(value, key)
        except CatalogError:
            self.invalid += 1
            return
        self.retired.pop(record.product_id, None)
        self.records[record.product_id] = record

    def is_retired(self, pid: str) -> bool:
        return pid in self.retired

    def active_ids(self) -> list[str]:
        """Products with a record (in stock or not), sorted."""
        return sorted(self.records)

    def last_version(self, pid: str) -> int:
        """The version of ``pid``'s last record (0: never had one); a retired product keeps
        its last version, so a re-added one continues from it."""
        r = self.records.get(pid) or self.retired.get(pid)
        return r.version if r is not None else 0

    def digest(self) -> str:
        """A short hash of the content (records and retired ids): equal catalogs, equal
        digests, whatever order they were read in."""
        h = hashlib.sha256()
        for pid in sorted(self.records):
            h.update(self.records[pid].to_json() + b"\n")
        for pid in sorted(self.retired):
            h.update(b"-" + pid.encode() + b"\n")
        return h.hexdigest()[:16]


# --- files a team brings ----------------------------------------------------------------------
def _rows(path: Path) -> tuple[bool, Iterator[tuple[int, dict[str, Any] | None, str | None]]]:
    """(is CSV, the rows as (line number, row, error)) of a CSV (header line first) or a
    JSON-lines file; the kind is the suffix (.csv; .jsonl/.json/.ndjson), else the first
    character ('{' = JSON lines)."""
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    jsonl = suffix in (".jsonl", ".ndjson", ".json") or (
        suffix != ".csv" and text.lstrip()[:1] == "{")
    return (not jsonl), (_jsonl_rows(text) if jsonl else _csv_rows(text))


def _jsonl_rows(text: str) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line, parse_constant=_no_constant, object_pairs_hook=_no_dup_keys)
        except ValueError as exc:
            yield n, None, f"not JSON: {exc}"
            continue
        if not isinstance(obj, dict):
            yield n, None, f"expected an object, got {type(obj).__name__}"
            continue
        yield n, obj, None


def _csv_rows(text: str) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        return
    except csv.Error as exc:
        yield 1, None, f"not CSV: {exc}"
        return
    if len(set(header)) != len(header):
        yield 1, None, "header: a column name repeats"
        return
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield reader.line_num, None, f"not CSV: {exc}"
            return
        n = reader.line_num  # the last physical line of the row
        if not any(c.strip() for c in row):
            continue
        if len(row) != len(header):
            yield n, None, f"{len(row)} fields, the header has {len(header)}"
            continue
        yield n, dict(zip(header, row, strict=True)), None


_TRUE = {"true", "1", "yes", "y"}
_FALSE = {"false", "0", "no", "n"}


def _csv_product(row: dict[str, str]) -> dict[str, Any]:
    """A CSV row's strings -> the record's types (a bad value raises CatalogError)."""
    obj: dict[str, Any] = {}
    attrs: dict[str, Any] = {}
    for k, v in row.items():
        v = v.strip()
        if k in PRODUCT_COLUMNS:
            if v != "":
                obj[k] = v
        elif v != "":
            attrs[k] = v
    if "price" in obj:
        try:
            obj["price"] = float(obj["price"])
        except ValueError:
            raise CatalogError("price", f"not a number: {obj['price']!r}") from None
    if "in_stock" in obj:
        s = obj["in_stock"].lower()
        if s not in _TRUE | _FALSE:
            raise CatalogError("in_stock", f"expected true/false, got {obj['in_stock']!r}")
        obj["in_stock"] = s in _TRUE
    if "version" in obj:
        try:
            obj["version"] = int(obj["version"])
        except ValueError:
            raise CatalogError("version", f"not an integer: {obj['version']!r}") from None
    if attrs:
        obj["attributes"] = attrs
    return obj


def read_product_file(path: str | Path) -> tuple[list[ProductRecord], list[RowError]]:
    """Every valid record of a catalog file and every bad row (line number and reason); a
    product id given twice is an error on its second line."""
    path = Path(path)
    records: list[ProductRecord] = []
    errors: list[RowError] = []
    seen: dict[str, int] = {}
    is_csv, rows = _rows(path)
    for n, row, err in rows:
        if err is not None or row is None:
            errors.append(RowError(n, "$", err or "unreadable"))
            continue
        try:
            rec = record_from_dict(_csv_product(row) if is_csv else row)
        except CatalogError as exc:
            errors.append(RowError(n, exc.field, exc.message))
            continue
        except TypeError as exc:  # an unexpected keyword from a malformed row
            errors.append(RowError(n, "$", str(exc)))
            continue
        if rec.product_id in seen:
            errors.append(RowError(n, "product_id", f"{rec.product_id!r} already on line "
                                                    f"{seen[rec.product_id]}"))
            continue
        seen[rec.product_id] = n
        records.append(rec)
    if not records and not errors:
        errors.append(RowError(1, "$", "no rows"))
    return records, errors


def user_from_dict(row: Mapping[str, Any]) -> User:
    """A user row (CSV strings or JSON values) -> :class:`contract.features.User`, checked:
    ``user_id`` an integer in 0..2**53-1, ``age`` 0..130, ``lat`` -90..90, ``lon`` -180..180,
    ``gender`` one of GENDERS, ``source`` one of SOURCES."""
    missing = [c for c in USER_COLUMNS if c not in row or str(row[c]).strip() == ""]
    if missing:
        raise CatalogError(missing[0], "required field is missing")
    extra = sorted(set(row) - set(USER_COLUMNS))
    if extra:
        raise CatalogError(extra[0], f"unknown column (the table has {', '.join(USER_COLUMNS)})")

    def integer(name: str, lo: int, hi: int) -> int:
        v = row[name]
        try:
            i = int(v) if isinstance(v, str) else v
        except ValueError:
            raise CatalogError(name, f"not an integer: {v!r}") from None
        if isinstance(i, bool) or not isinstance(i, int) or not lo <= i <= hi:
            raise CatalogError(name, f"expected an integer in {lo}..{hi}, got {v!r}")
        return i

    def number(name: str, lo: float, hi: float) -> float:
        v = row[name]
        try:
            f = float(v) if isinstance(v, str) else v
        except ValueError:
            raise CatalogError(name, f"not a number: {v!r}") from None
        if isinstance(f, bool) or not isinstance(f, int | float) or not (
                math.isfinite(f) and lo <= f <= hi):
            raise CatalogError(name, f"expected a number in {lo:g}..{hi:g}, got {v!r}")
        return float(f)

    gender, source = str(row["gender"]).strip(), str(row["source"]).strip()
    if gender not in GENDERS:
        raise CatalogError("gender", f"{gender!r} is not one of {', '.join(GENDERS)}")
    if source not in SOURCES:
        raise CatalogError("source", f"{source!r} is not one of {', '.join(SOURCES)}")
    return User(integer("user_id", 0, MAX_SAFE_INT), integer("age", 0, 130), gender,
                number("lat", -90, 90), number("lon", -180, 180), source)


def read_user_file(path: str | Path) -> tuple[list[User], list[RowError]]:
    """Every valid user of a user-table file (CSV or JSON lines) and every bad row; a user id
    given twice is an error on its second line."""
    users: list[User] = []
    errors: list[RowError] = []
    seen: dict[int, int] = {}
    _, rows = _rows(Path(path))
    for n, row, err in rows:
        if err is not None or row is None:
            errors.append(RowError(n, "$", err or "unreadable"))
            continue
        try:
            user = user_from_dict(row)
        except CatalogError as exc:
            errors.append(RowError(n, exc.field, exc.message))
            continue
        if user.user_id in seen:
            errors.append(RowError(n, "user_id", f"{user.user_id} already on line "
                                                 f"{seen[user.user_id]}"))
            continue
        seen[user.user_id] = n
        users.append(user)
    if not users and not errors:
        errors.append(RowError(1, "$", "no rows"))
    return users, errors


def users_csv(users: Iterable[User]) -> str:
    """The user table's CSV text (the shipped table's columns and number formats)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(USER_COLUMNS)
    for u in users:
        w.writerow([u.user_id, u.age, u.gender, f"{u.lat:.5f}", f"{u.lon:.5f}", u.source])
    return buf.getvalue()


# --- the topic --------------------------------------------------------------------------------
def ensure_catalog_topic(settings: Settings, timeout_s: float = 30.0) -> bool:
    """Create the catalog topic (compacted, one partition) when it is missing; True when this
    call made it. The job, serving and the command line call it before they read or write."""
    from contract.kafka import ensure_topic

    return ensure_topic(settings.kafka, settings.kafka.topic_catalog, CATALOG_PARTITIONS,
                        CATALOG_TOPIC_CONFIG, timeout_s)


def catalog_consumer(settings: Settings):  # type: ignore[no-untyped-def]
    """A Kafka consumer for :func:`read_catalog` (assigned, never subscribed: no group
    membership, nothing committed). A caller that reads the topic again and again keeps one:
    making it, connecting and closing it is most of a read of a topic with nothing new."""
    from confluent_kafka import Consumer

    # a short fetch wait: a long-polling fetch holds the broker connection, and the next
    # read's metadata and offset requests would queue behind it
    return Consumer({"bootstrap.servers": settings.kafka.bootstrap,
                     "group.id": "rtrec-catalog-reader", "enable.auto.commit": False,
                     "enable.partition.eof": True, "auto.offset.reset": "earliest",
                     "fetch.wait.max.ms": 10})


def read_catalog(settings: Settings, timeout_s: float = 10.0,
                 into: Catalog | None = None, consumer: Any = None) -> Catalog:
    """The catalog as the topic holds it now: every record up to the end offsets taken at
    the call (a :class:`TimeoutError` if they cannot be read within ``timeout_s``).
    ``into``: a catalog read before, read on from its offset; ``consumer``: one of
    :func:`catalog_consumer` kept by the caller (left open), else one made and closed here."""
    from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

    cat = into if into is not None else Catalog()
    topic = settings.kafka.topic_catalog
    own = consumer is None
    if own:
        consumer = catalog_consumer(settings)
    try:
        deadline = time.monotonic() + timeout_s
        while True:  # a topic just created takes a moment to show in the metadata
            md = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
            if md is not None and md.error is None and md.partitions:
                break
            if time.monotonic() > deadline:
                raise CatalogError("topic", f"catalog topic {topic!r} not found")
            time.sleep(0.1)
        ends: dict[int, int] = {}
        for p in md.partitions:
            while p not in ends:
                try:
                    ends[p] = consumer.get_watermark_offsets(TopicPartition(topic, p),
                                                             timeout=timeout_s)[1]
                except KafkaException:  # no leader yet (a topic just made): try again
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
        todo = {p for p, high in ends.items() if high > cat.offset}
        if not todo:
            return cat
        start = cat.offset
        consumer.assign([TopicPartition(topic, p, start if start else OFFSET_BEGINNING)
                         for p in todo])
        while todo:
            if time.monotonic() > deadline:
                raise TimeoutError(f"catalog topic {topic!r} not read to its end within "
                                   f"{timeout_s:g} s")
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == -191:  # _PARTITION_EOF
                    if msg.offset() >= ends.get(msg.partition(), 0):
                        todo.discard(msg.partition())
                    continue
                raise OSError(f"reading the catalog: {msg.error()}")
            if msg.offset() < start:  # read before (a kept consumer's leftover): not again,
                continue  # or an old record would undo its product's later tombstone
            cat.apply(msg.key(), msg.value(), msg.offset())
            if msg.offset() + 1 >= ends[msg.partition()]:
                todo.discard(msg.partition())
        return cat
    finally:
        if own:
            consumer.close()
        else:  # kept for the next read: no fetching in between
            with contextlib.suppress(Exception):
                consumer.unassign()


def write_records(producer, topic: str,  # type: ignore[no-untyped-def]
                  items: Iterable[tuple[str, ProductRecord | None]],
                  timeout_s: float = 30.0) -> int:
    """Write ``(product_id, record or None = retire)`` to the catalog topic and wait for every
    acknowledgement; an :class:`OSError` names the first refusal. Returns the count written."""
    errors: list[object] = []
    acked = [0]

    def done(err: object, _msg: object) -> None:
        acked[0] += 1
        if err is not None:
            errors.append(err)

    n = 0
    for pid, record in items:
        _check_id(pid)
        producer.produce(topic, key=pid.encode(),
                         value=None if record is None else record.to_json(), on_delivery=done)
        producer.poll(0)
        n += 1
    producer.flush(timeout_s)
    if acked[0] < n:
        raise TimeoutError(f"{n - acked[0]} of {n} catalog record(s) not acknowledged within "
                           f"{timeout_s:g} s")
    if errors:
        raise OSError(f"{len(errors)} catalog record(s) refused by Kafka: {errors[0]}")
    return n
