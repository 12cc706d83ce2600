"""The job's side of the live catalog without Flink (flink_job/catalog.py): the catalog source
lines, the decision per product, and the validator with its broadcast input."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from contract import reasons
from contract.catalog import CatalogError, ProductRecord
from contract.config import Settings
from contract.events import Click, EventError, Impression
from flink_job.catalog import (
    ACTIVE,
    RETIRED,
    LiveProducts,
    TopicReader,
    ValidateWithCatalog,
    catalog_update,
)
from flink_job.functions import RECORD_SEPARATOR, Validate
from tests.helpers import FakeRuntimeContext

D = 15
NOW = 1_700_000_000_000


@pytest.fixture(autouse=True)
def _close_readers(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every catalog reader a test makes is closed after it, as the job's close() does (a
    kept consumer would otherwise retry the session's broker after it stops)."""
    made: list[TopicReader] = []
    init = TopicReader.__init__

    def tracked(self: TopicReader, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(TopicReader, "__init__", tracked)
    yield
    for reader in made:
        reader.close()


def test_catalog_lines_the_java_deserializer_writes() -> None:
    rec = ProductRecord("p1", "Tea", 2.0).to_json().decode()
    assert catalog_update(f"0\tu\tp1\tu\t{rec}") == ("p1", ACTIVE)
    b64 = __import__("base64").b64encode(rec.encode()).decode()
    assert catalog_update(f"1\tu\tp1\tb\t{b64}") == ("p1", ACTIVE)
    assert catalog_update("2\tu\tp1\tn\t") == ("p1", RETIRED)
    for bad in ("junk", "3\tn\t\tu\t{}", "4\tb\tYQli\tn\t", "5\tu\tp1\to\t99999",
                f"6\tu\tp2\tu\t{rec}", "7\tu\tp1\tu\t{\"product_id\": \"p1\"}"):
        with pytest.raises(CatalogError):
            catalog_update(bad)


def _imp(products: tuple[str, ...]) -> Impression:
    return Impression(request_id="r", user_id=1, ts_ms=NOW, x=(0.0,) * D, products=products,
                      scores=(0.1,) * len(products), policy="linucb", model_version=0)


@pytest.mark.parametrize("static", [None, frozenset({"s1", "s2"})])
def test_the_topic_decides_over_the_static_list(static: frozenset[str] | None) -> None:
    live = LiveProducts(static)
    live.apply("new", ACTIVE)
    live.apply("s2", RETIRED)  # a retirement wins over the static list
    live.check(_imp(("new",)))
    live.check(Click(request_id="r", product_id="new", ts_ms=NOW))
    with pytest.raises(EventError) as err:
        live.check(_imp(("new", "s2")))
    assert (err.value.reason, err.value.field) == (reasons.RETIRED_PRODUCT, "products[1]")
    with pytest.raises(EventError) as err:
        live.check(Click(request_id="r", product_id="s2", ts_ms=NOW))
    assert (err.value.reason, err.value.field) == (reasons.RETIRED_PRODUCT, "product_id")
    if static is None:  # no static list: an id the topic never named is not checked
        live.check(_imp(("other",)))
    else:
        live.check(_imp(("s1",)))
        with pytest.raises(EventError) as err:
            live.check(_imp(("other",)))
        assert err.value.reason == reasons.UNKNOWN_PRODUCT
    live.apply("s2", ACTIVE)  # re-added
    live.check(_imp(("s2",)))


class _BroadcastCtx:
    """The broadcast state of one validator subtask, as Flink restores it."""

    def __init__(self, state: dict[str, str]) -> None:
        self.state = state

    def get_broadcast_state(self, _descriptor: object) -> _BroadcastCtx:
        return self

    def put(self, k: str, v: str) -> None:
        self.state[k] = v

    def items(self):  # type: ignore[no-untyped-def]
        return list(self.state.items())


def _record(offset: int, event: Impression | Click) -> str:
    topic = "imp" if isinstance(event, Impression) else "clk"
    return f"{topic}\t0\t{offset}\t{NOW}\tu\t{event.to_json().decode()}"


def _validate(fn: ValidateWithCatalog, ctx: _BroadcastCtx, records: list[str]
              ) -> tuple[int, list[str]]:
    kept, dead = 0, []
    for out in fn.process_element(RECORD_SEPARATOR.join(records), ctx):
        if isinstance(out, tuple):
            dead.append(json.loads(out[1])["reason"])
        else:
            kept += len(out.split(RECORD_SEPARATOR))
    return kept, dead


def test_the_validator_follows_its_broadcast_input_and_a_restore_keeps_it() -> None:
    def make() -> ValidateWithCatalog:
        fn = ValidateWithCatalog(Validate(D, None, 65536, clock=lambda: NOW), frozenset())
        fn.open(FakeRuntimeContext())  # type: ignore[arg-type]
        return fn

    fn, state = make(), {}
    ctx = _BroadcastCtx(state)
    new = ProductRecord("new", "Tea", 2.0).to_json().decode()
    events = [_record(0, _imp(("new",))), _record(1, Click(request_id="r", product_id="new",
                                                              ts_ms=NOW))]
    assert _validate(fn, ctx, events) == (0, [reasons.UNKNOWN_PRODUCT] * 2)  # not yet added
    fn.process_broadcast_element(f"0\tu\tnew\tu\t{new}", ctx)
    fn.process_broadcast_element("1\tu\tbroken\tu\t{", ctx)  # counted, changes nothing
    assert _validate(fn, ctx, events) == (2, [])
    fn.process_broadcast_element("2\tu\tnew\tn\t", ctx)
    assert _validate(fn, ctx, events) == (0, [reasons.RETIRED_PRODUCT] * 2)
    assert state == {"new": RETIRED}
    assert fn.validate.dead.by_reason[reasons.RETIRED_PRODUCT] is not None
    # a restart from a checkpoint: new function objects, the broadcast state restored
    again = make()
    assert _validate(again, _BroadcastCtx(dict(state)), events) == \
        (0, [reasons.RETIRED_PRODUCT] * 2)
    again.process_broadcast_element(f"3\tu\tnew\tu\t{new}", ctx)  # re-added
    assert _validate(again, ctx, events) == (2, [])
    assert (again.updates, fn.invalid) == (1, 1)


def _events(pid: str, offset: int) -> list[str]:
    return [_record(offset, _imp((pid,))),
            _record(offset + 1, Click(request_id="r", product_id=pid, ts_ms=NOW))]


def _write(s: Settings, *items: tuple[str, ProductRecord | None]) -> None:
    from contract.catalog import ensure_catalog_topic, write_records
    from contract.kafka import kafka_producer

    ensure_catalog_topic(s)
    write_records(kafka_producer(s.kafka), s.kafka.topic_catalog, items)


def _opened(s: Settings) -> ValidateWithCatalog:
    """A validator subtask opened as the job opens it (settings: it reads the topic)."""
    fn = ValidateWithCatalog(Validate(D, None, 65536, clock=lambda: NOW), frozenset(), s)
    fn.open(FakeRuntimeContext())  # type: ignore[arg-type]
    return fn


def _line(offset: int, pid: str, rec: ProductRecord | None) -> str:
    """The catalog source line CatalogDeserializer writes for a record (None: a tombstone)."""
    return f"{offset}\tu\t{pid}\tn\t" if rec is None else \
        f"{offset}\tu\t{pid}\tu\t{rec.to_json().decode()}"


def test_events_waiting_at_a_start_find_the_products_the_topic_held(
        unique_settings: Settings) -> None:
    """A fresh start: the events in Kafka reach the validator before the catalog source has
    delivered anything; the topic as the validator read it at open decides for them. Records
    the source replays that are older than that read do not undo it; newer ones apply."""
    s = unique_settings
    new, gone = ProductRecord("new", "Tea", 2.0), ProductRecord("gone", "Tea", 2.0)
    _write(s, ("new", new), ("gone", gone), ("gone", None))  # offsets 0, 1, 2
    fn = _opened(s)
    state: dict[str, str] = {}
    ctx = _BroadcastCtx(state)
    assert _validate(fn, ctx, _events("new", 0)) == (2, [])
    assert _validate(fn, ctx, _events("gone", 2)) == (0, [reasons.RETIRED_PRODUCT] * 2)
    assert _validate(fn, ctx, _events("other", 4)) == (0, [reasons.UNKNOWN_PRODUCT] * 2)
    # the source replays the topic: "gone" was added at offset 1, retired at 2 (in the read)
    fn.process_broadcast_element(_line(0, "new", new), ctx)
    fn.process_broadcast_element(_line(1, "gone", gone), ctx)
    assert _validate(fn, ctx, _events("gone", 6)) == (0, [reasons.RETIRED_PRODUCT] * 2)
    fn.process_broadcast_element(_line(2, "gone", None), ctx)
    assert state == {"new": ACTIVE, "gone": RETIRED}
    # after the read's offset: a retirement applies
    fn.process_broadcast_element(_line(3, "new", None), ctx)
    assert _validate(fn, ctx, _events("new", 8)) == (0, [reasons.RETIRED_PRODUCT] * 2)


def test_a_restore_takes_the_read_at_open_over_its_checkpointed_catalog(
        unique_settings: Settings) -> None:
    """The restored subtask reads the topic at open, after its checkpoint: the read wins."""
    s = unique_settings
    _write(s, ("p", ProductRecord("p", "Tea", 1.0)), ("p", None),
           ("q", ProductRecord("q", "Tea", 1.0)))
    fn = _opened(s)
    ctx = _BroadcastCtx({"p": ACTIVE, "r": ACTIVE})  # the checkpoint's
    assert _validate(fn, ctx, _events("p", 0)) == (0, [reasons.RETIRED_PRODUCT] * 2)
    assert _validate(fn, ctx, _events("q", 2)) == (2, [])
    assert _validate(fn, ctx, _events("r", 4)) == (2, [])


def test_open_reads_the_topic_to_its_end(unique_settings: Settings) -> None:
    """Against the real broker: records, a tombstone, and the offset after them, nothing read
    when the function is made (it is pickled into the job graph); only the statuses are kept.
    A topic that cannot be read gives nothing (the job starts as before: the catalog source
    delivers it later)."""
    import pickle

    s = unique_settings
    _write(s, ("a", ProductRecord("a", "Tea", 1.0)), ("b", ProductRecord("b", "Tea", 1.0)),
           ("b", None))
    made = ValidateWithCatalog(Validate(D, None, 65536), frozenset(), s)
    assert b"Tea" not in pickle.dumps(made)
    fn = _opened(s)
    assert fn.reader is not None and fn.reader.catalog.offset == 3
    assert _validate(fn, _BroadcastCtx({}), _events("a", 0)) == (2, [])
    assert fn.live.status == {"a": ACTIVE, "b": RETIRED}
    assert (fn.reader.catalog.records, fn.reader.catalog.retired) == ({}, {})
    down = ValidateWithCatalog(Validate(D, None, 65536, clock=lambda: NOW), frozenset(),
                               s.override(RTREC_KAFKA_BOOTSTRAP="127.0.0.1:1"))
    down.open_timeout_s = 0.5
    down.open(FakeRuntimeContext())  # type: ignore[arg-type]
    assert down.reader is not None and (down.reader.failures, down.reader.catalog.offset) == (1, 0)
    assert _validate(down, _BroadcastCtx({}), _events("a", 0)) == \
        (0, [reasons.UNKNOWN_PRODUCT] * 2)


def _batch(pids: list[str], offset: int) -> list[str]:
    return [r for i, pid in enumerate(pids) for r in _events(pid, offset + 2 * i)]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_product_added_after_the_read_is_found_in_the_topic_before_its_broadcast_record(
        unique_settings: Settings, seed: int) -> None:
    """While the job runs, an event for a product added a moment ago can reach the validator
    before the catalog source delivers the product's record: the validator reads the topic to
    its end again rather than dead-letter a learnable event ``unknown_product``. A flood of
    ids the topic does not hold is still dead-lettered ``unknown_product``, with at most one
    read of the topic per interval; the records the source delivers afterwards (older than
    the read) do not undo what the read found, later ones apply."""
    import random

    s = unique_settings
    rng = random.Random(seed)
    old = [f"old{seed}-{i}" for i in range(rng.randint(1, 5))]
    _write(s, *[(p, ProductRecord(p, "Tea", 1.0)) for p in old])
    fn = ValidateWithCatalog(Validate(D, None, 65536, clock=lambda: NOW), frozenset(), s)
    fn.recheck_interval_s = 600.0  # no second read within the test unless it allows one
    fn.open(FakeRuntimeContext())  # type: ignore[arg-type]
    assert fn.reader is not None
    ctx = _BroadcastCtx({})
    assert _validate(fn, ctx, _batch(old, 0)) == (2 * len(old), [])
    assert fn.reader.reads == 1  # the read at open

    added = [f"added{seed}-{i}" for i in range(rng.randint(2, 6))]
    gone = f"gone{seed}"
    _write(s, *[(p, ProductRecord(p, "Tea", 1.0)) for p in added],
           (gone, ProductRecord(gone, "Tea", 1.0)), (gone, None))
    offsets = {p: len(old) + i for i, p in enumerate(added)}
    assert _validate(fn, ctx, _batch(added, 20)) == (2 * len(added), [])
    assert fn.reader.reads == 2  # one read for the whole batch
    assert _validate(fn, ctx, _events(gone, 40)) == (0, [reasons.RETIRED_PRODUCT] * 2)
    assert fn.reader.reads == 2  # the read found it: no other

    unknown = [f"nowhere{seed}-{i}" for i in range(rng.randint(20, 60))]
    assert _validate(fn, ctx, _batch(unknown, 100)) == \
        (0, [reasons.UNKNOWN_PRODUCT] * 2 * len(unknown))
    assert fn.reader.reads == 2  # within the interval: no read

    # the interval has passed: the next unknown id reads the topic once, which finds a
    # product added since; the ids it does not hold stay unknown_product
    late = f"late{seed}"
    _write(s, (late, ProductRecord(late, "Tea", 1.0)))
    fn.reader.next_at = 0.0
    assert _validate(fn, ctx, _batch([*unknown[:3], late, *unknown[3:6]], 200)) == \
        (2, [reasons.UNKNOWN_PRODUCT] * 12)
    assert fn.reader.reads == 3

    # the catalog source delivers the records now: older than the reads, they do not undo
    # the retirement the read found; a retirement written after the reads applies
    end = len(old) + len(added) + 3
    for p in added:
        fn.process_broadcast_element(_line(offsets[p], p, ProductRecord(p, "Tea", 1.0)), ctx)
    fn.process_broadcast_element(_line(end - 3, gone, ProductRecord(gone, "Tea", 1.0)), ctx)
    assert _validate(fn, ctx, _events(gone, 300)) == (0, [reasons.RETIRED_PRODUCT] * 2)
    fn.process_broadcast_element(_line(end - 2, gone, None), ctx)
    fn.process_broadcast_element(_line(end - 1, late, ProductRecord(late, "Tea", 1.0)), ctx)
    victim = rng.choice(added)
    _write(s, (victim, None))
    fn.process_broadcast_element(_line(end, victim, None), ctx)
    assert _validate(fn, ctx, _batch([*added, late], 400)) == \
        (2 * len(added), [reasons.RETIRED_PRODUCT] * 2)
    assert ctx.state[victim] == RETIRED and ctx.state[gone] == RETIRED
    assert fn.reader.reads == 3


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_product_re_added_is_found_in_the_topic_before_its_broadcast_record(
        unique_settings: Settings, seed: int) -> None:
    """A retired product re-added a moment ago: its events are learned once a read of the
    topic finds the re-add, before the catalog source delivers it; one still retired is
    refused ``retired_product``, with reads limited to one per interval as for unknown ids."""
    import random

    s = unique_settings
    rng = random.Random(seed)
    back = [f"back{seed}-{i}" for i in range(rng.randint(1, 4))]
    still = [f"still{seed}-{i}" for i in range(rng.randint(1, 4))]
    _write(s, *[(p, ProductRecord(p, "Tea", 1.0)) for p in back + still],
           *[(p, None) for p in back + still])
    fn = ValidateWithCatalog(Validate(D, None, 65536, clock=lambda: NOW), frozenset(), s)
    fn.recheck_interval_s = 600.0  # no second read within the test unless it allows one
    fn.open(FakeRuntimeContext())  # type: ignore[arg-type]
    assert fn.reader is not None and fn.reader.reads == 1
    ctx = _BroadcastCtx({})
    assert _validate(fn, ctx, _batch(back + still, 0)) == \
        (0, [reasons.RETIRED_PRODUCT] * 2 * len(back + still))
    assert fn.reader.reads == 2  # the first refusal read once (nothing new), the rest none
    assert fn.found == 0

    _write(s, *[(p, ProductRecord(p, "Tea", 1.0)) for p in back])  # re-added
    fn.reader.next_at = 0.0  # the interval has passed
    assert _validate(fn, ctx, _batch(rng.sample(back + still, len(back + still)), 100)) == \
        (2 * len(back), [reasons.RETIRED_PRODUCT] * 2 * len(still))
    assert fn.reader.reads == 3  # one read for the whole batch
    assert all(fn.live.status[p] == ACTIVE for p in back)
    assert fn.found == len(back)  # the gauge counts the re-adds the read found
    assert _validate(fn, ctx, _batch(still, 200)) == \
        (0, [reasons.RETIRED_PRODUCT] * 2 * len(still))
    assert fn.reader.reads == 3  # within the interval: no read


@pytest.mark.parametrize("interval_s", [0.1, 0.25])
def test_a_flood_of_unknown_ids_reads_the_topic_at_most_once_per_interval(
        unique_settings: Settings, interval_s: float) -> None:
    """Timed: batches of unknown ids for 1.5 s read the topic about once per interval, never
    more (each read is counted), and every such event is dead-lettered unknown_product."""
    import time

    s = unique_settings
    _write(s, ("a", ProductRecord("a", "Tea", 1.0)))
    fn = ValidateWithCatalog(Validate(D, None, 65536, clock=lambda: NOW), frozenset(), s)
    fn.recheck_interval_s = interval_s
    fn.open(FakeRuntimeContext())  # type: ignore[arg-type]
    assert fn.reader is not None
    ctx = _BroadcastCtx({})
    t0, batches = time.monotonic(), 0
    while time.monotonic() - t0 < 1.5:
        ids = [f"unknown{batches}-{i}" for i in range(5)]
        assert _validate(fn, ctx, _batch(ids, 10 * batches)) == \
            (0, [reasons.UNKNOWN_PRODUCT] * 10)
        batches += 1
    elapsed = time.monotonic() - t0
    reads = fn.reader.reads - 1  # the read at open
    assert 2 <= reads <= elapsed / interval_s + 1, (reads, elapsed, batches)
    assert batches > 3 * reads  # most batches did not read


def test_a_failed_read_backs_off(unique_settings: Settings) -> None:
    """Kafka unreachable when an unknown id is met: the event is dead-lettered
    unknown_product after one bounded read, and no other read is tried during the back-off;
    afterwards a read finds what the topic holds."""
    s = unique_settings
    _write(s, ("a", ProductRecord("a", "Tea", 1.0)))
    fn = _opened(s)
    assert fn.reader is not None
    ctx = _BroadcastCtx({})
    _write(s, ("b", ProductRecord("b", "Tea", 1.0)))
    good = fn.reader.settings
    fn.reader.settings = s.override(RTREC_KAFKA_BOOTSTRAP="127.0.0.1:1")  # nothing listens
    fn.reader.close()  # the kept consumer is of the good broker: the next read makes one
    fn.reader.timeout_s = 0.5
    fn.reader.next_at = 0.0
    for i in range(3):
        assert _validate(fn, ctx, _events("b", 2 * i)) == (0, [reasons.UNKNOWN_PRODUCT] * 2)
    assert (fn.reader.reads, fn.reader.failures) == (2, 1)
    assert fn.reader.consumer is None  # a failed read closes its consumer
    fn.reader.settings = good
    fn.reader.next_at = 0.0  # the back-off has passed
    assert _validate(fn, ctx, _events("b", 10)) == (2, [])
    assert (fn.reader.reads, fn.reader.failures) == (3, 1)
    assert fn.reader.consumers_made == 3  # at open, the failed read, the one after it


def test_the_reads_keep_one_consumer(unique_settings: Settings) -> None:
    """Every read after open uses the consumer the first made (a read with nothing new is two
    requests to the broker, not a new client) and still finds what was written since;
    close() closes it and a later read makes a new one."""
    s = unique_settings
    _write(s, ("a", ProductRecord("a", "Tea", 1.0)))
    fn = _opened(s)
    assert fn.reader is not None and fn.reader.consumers_made == 1
    kept = fn.reader.consumer
    ctx = _BroadcastCtx({})
    for i, pid in enumerate(("b", "c", "d")):
        _write(s, (pid, ProductRecord(pid, "Tea", 1.0)))
        fn.reader.next_at = 0.0  # the interval has passed
        assert _validate(fn, ctx, _events(pid, 2 * i)) == (2, [])
    assert fn.reader.reads == 4 and fn.reader.consumer is kept
    assert fn.reader.consumers_made == 1
    fn.close()
    assert fn.reader.consumer is None
    _write(s, ("e", ProductRecord("e", "Tea", 1.0)))
    fn.reader.next_at = 0.0
    assert _validate(fn, ctx, _events("e", 20)) == (2, [])
    assert fn.reader.consumers_made == 2


def test_a_read_behind_the_broadcast_input_does_not_undo_it(unique_settings: Settings) -> None:
    """A read cut short by its timeout can end before the offset the catalog source has
    already delivered: what it read is older than the broadcast input and must not undo it.
    (The source's line is written by hand at an offset past the read's end.)"""
    s = unique_settings
    _write(s, ("a", ProductRecord("a", "Tea", 1.0)))
    fn = _opened(s)
    ctx = _BroadcastCtx({})
    fn.process_broadcast_element(_line(9, "y", None), ctx)  # the source: y retired at 9
    _write(s, ("y", ProductRecord("y", "Tea", 1.0)))  # offset 1: older than 9
    assert fn.reader is not None
    fn.reader.next_at = 0.0
    assert _validate(fn, ctx, _events("z", 0)) == (0, [reasons.UNKNOWN_PRODUCT] * 2)
    assert fn.reader.reads == 2 and fn.reader.catalog.offset == 2  # it read y's record
    assert _validate(fn, ctx, _events("y", 2)) == (0, [reasons.RETIRED_PRODUCT] * 2)
