"""The job's side of the live catalog without Flink (flink_job/catalog.py): the catalog source
lines, the decision per product, and the validator with its broadcast input."""

from __future__ import annotations

import json

import pytest

from contract import reasons
from contract.catalog import CatalogError, ProductRecord
from contract.events import Click, EventError, Impression
from flink_job.catalog import (
    ACTIVE,
    RETIRED,
    CatalogSeed,
    LiveProducts,
    ValidateWithCatalog,
    catalog_seed,
    catalog_update,
)
from flink_job.functions import RECORD_SEPARATOR, Validate
from tests.helpers import FakeRuntimeContext

D = 15
NOW = 1_700_000_000_000


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


def test_events_waiting_at_a_start_find_the_products_the_topic_held() -> None:
    """A fresh start: the events in Kafka reach the validator before the catalog source has
    delivered anything; the seed (the topic read at build) decides for them. Records the
    source replays that are older than the seed do not undo it; newer ones apply."""
    new = ProductRecord("new", "Tea", 2.0).to_json().decode()
    seed = CatalogSeed({"new": ACTIVE, "gone": RETIRED}, offset=10)
    fn = ValidateWithCatalog(Validate(D, None, 65536, clock=lambda: NOW), frozenset(), seed)
    fn.open(FakeRuntimeContext())  # type: ignore[arg-type]
    state: dict[str, str] = {}
    ctx = _BroadcastCtx(state)
    assert _validate(fn, ctx, _events("new", 0)) == (2, [])
    assert _validate(fn, ctx, _events("gone", 2)) == (0, [reasons.RETIRED_PRODUCT] * 2)
    assert _validate(fn, ctx, _events("other", 4)) == (0, [reasons.UNKNOWN_PRODUCT] * 2)
    # the source replays the topic: "gone" was added at offset 3, retired at 7 (in the seed)
    fn.process_broadcast_element(f"0\tu\tnew\tu\t{new}", ctx)
    fn.process_broadcast_element(f"3\tu\tgone\tu\t{new.replace('new', 'gone')}", ctx)
    assert _validate(fn, ctx, _events("gone", 6)) == (0, [reasons.RETIRED_PRODUCT] * 2)
    fn.process_broadcast_element("7\tu\tgone\tn\t", ctx)
    assert state == {"new": ACTIVE, "gone": RETIRED}
    # after the seed: a retirement applies
    fn.process_broadcast_element("12\tu\tnew\tn\t", ctx)
    assert _validate(fn, ctx, _events("new", 8)) == (0, [reasons.RETIRED_PRODUCT] * 2)


def test_a_restore_takes_the_seed_over_its_checkpointed_catalog() -> None:
    """The seed is read when the restored job is built, after its checkpoint: it wins."""
    seed = CatalogSeed({"p": RETIRED, "q": ACTIVE}, offset=20)
    fn = ValidateWithCatalog(Validate(D, None, 65536, clock=lambda: NOW), frozenset(), seed)
    fn.open(FakeRuntimeContext())  # type: ignore[arg-type]
    ctx = _BroadcastCtx({"p": ACTIVE, "r": ACTIVE})  # the checkpoint's
    assert _validate(fn, ctx, _events("p", 0)) == (0, [reasons.RETIRED_PRODUCT] * 2)
    assert _validate(fn, ctx, _events("q", 2)) == (2, [])
    assert _validate(fn, ctx, _events("r", 4)) == (2, [])


def test_the_seed_is_the_topic_read_to_its_end(unique_settings) -> None:  # type: ignore[no-untyped-def]
    """Against the real broker: records, a tombstone, and the offset after them; a topic
    that cannot be read gives an empty seed (the job starts as before)."""
    from contract.catalog import ensure_catalog_topic, write_records
    from contract.kafka import kafka_producer

    s = unique_settings
    ensure_catalog_topic(s)
    write_records(kafka_producer(s.kafka), s.kafka.topic_catalog,
                  [("a", ProductRecord("a", "Tea", 1.0)), ("b", ProductRecord("b", "Tea", 1.0)),
                   ("b", None)])
    seed = catalog_seed(s)
    assert seed.status == {"a": ACTIVE, "b": RETIRED}
    assert seed.offset == 3
    down = catalog_seed(s.override(RTREC_KAFKA_BOOTSTRAP="127.0.0.1:1"), timeout_s=0.5)
    assert down == CatalogSeed({}, 0)
