"""The in-stream evaluator's state (flink_job/evaluate.py) costs what a batch changed: a small
head in the ValueState and one row per product in the MapState, written only for the products
the batch learned; a state of the older one-blob layout restores into the new one with the
same estimates. The job's function on a fake runtime context (tests/helpers.py) that counts
what is written; the real job's restore is in test_ope_stream.py."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from contract.config import Settings
from contract.events import Impression
from flink_job import evaluate as ev_mod
from flink_job.evaluate import ROWS, StreamEvaluator
from tests.flink_job.test_ope_stream import DIM, W_MS, assert_equal, closed_lines, make_log, offline
from tests.helpers import (
    PRODUCTS,
    FakeMetricGroup,
    FakeRuntimeContext,
    flink_rest_port,
    rest_get,
    wait_for,
)

T0 = 1_700_000_000_000


class _Group(FakeMetricGroup):
    def add_group(self, key: str, value: str | None = None) -> _Group:
        return _Group()


class _Redis:
    """A pipeline of SETs that always succeeds."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    def pipeline(self, transaction: bool = False) -> _Redis:
        return self

    def set(self, key: str, value: str) -> None:
        self.data[key] = value

    def execute(self) -> None:
        pass


def _three_product_lines(seed: int, n: int, t0: int, products: list[str]) -> list[str]:
    """``n`` closed impressions of a ``random`` policy that show only ``products``."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        t = t0 + i * 20
        shown = tuple(str(p) for p in rng.permutation(products))
        imp = Impression(request_id=f"t{seed}-{i}", user_id=1, ts_ms=t,
                         x=tuple(float(v) for v in np.round(rng.uniform(0, 1, DIM), 6)),
                         products=shown, scores=(0.0,) * len(shown), policy="random",
                         model_version=0)
        slots = "0" if rng.random() < 0.3 else ""
        out.append(f"{t}|{slots}|{json.dumps(imp.to_dict())}")
    return out


def _fn(ctx: FakeRuntimeContext, products: list[str] = PRODUCTS) -> ev_mod.Evaluate:
    fn = ev_mod.Evaluate(Settings.from_env({"RTREC_REDIS_PREFIX": "t"}), tuple(products))
    fn.open(ctx)  # type: ignore[arg-type]
    return fn


def _ctx() -> FakeRuntimeContext:
    ctx = FakeRuntimeContext()
    ctx.metrics = _Group()
    return ctx


def _rows(ev: StreamEvaluator) -> dict[str, bytes]:
    return {p: ev.encode_row(i) for i, p in enumerate(ev.product_ids)}


@pytest.fixture(autouse=True)
def _redis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ev_mod, "redis_client", lambda *a, **k: _Redis())


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_batch_writes_the_rows_of_the_products_it_learned_only(seed: int) -> None:
    """200 products; after a first batch, one that shows 3 of them writes 3 rows and a head
    of a few hundred bytes (the one blob was ~410 KB); a new instance on that state (a
    restore) continues to the uninterrupted figures and rows, to the bit."""
    ctx = _ctx()
    first = closed_lines(make_log(seed, 120, T0))
    three = [PRODUCTS[100 + seed], PRODUCTS[150], PRODUCTS[199]]
    second = _three_product_lines(seed, 40, T0 + 10_000, three)
    third = closed_lines(make_log(seed + 10, 80, T0 + 20_000))
    fn = _fn(ctx)
    list(fn.process_element("ope\t" + "\t".join(first), None))
    rows = ctx.maps[ROWS]
    shown = {p for line in first for p in json.loads(line.split("|", 2)[2])["products"]}
    assert set(rows.puts) == shown and len(rows.puts) == len(shown) <= 25
    rows.puts.clear()
    list(fn.process_element("ope\t" + "\t".join(second), None))
    assert sorted(rows.puts) == sorted(three)
    head = ctx.state.blob
    assert head is not None and head.startswith(b"RTOPE2") and len(head) < 4000
    again = _fn(ctx)  # restored: the same state, a new instance
    list(again.process_element("ope\t" + "\t".join(third), None))
    whole = StreamEvaluator(PRODUCTS, DIM, 1.0)
    whole.batch(first + second + third)
    assert again.ev is not None and again.ev.summaries() == whole.summaries()
    assert again.ev.status() == whole.status()
    want = _rows(whole)
    assert {p: want[p] for p in rows.data} == rows.data
    assert all(want[p] == StreamEvaluator(PRODUCTS, DIM, 1.0).encode_row(0)
               for p in set(PRODUCTS) - set(rows.data))  # no row: never learned


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_an_old_one_blob_state_restores_into_rows_with_the_same_estimates(seed: int) -> None:
    """The ValueState holds the older layout (StreamEvaluator.encode, every product's arrays):
    the first batch reads it once, writes every product of it as a row and a head in its
    place; later batches write only what they learned; a restore of the new layout goes on
    to the uninterrupted estimates; on a catalogue without one product and with a new one,
    the one missing keeps its row (the list is the products file the job started with; the
    live catalogue may still hold it) and the new one starts fresh."""
    lines = closed_lines(make_log(seed, 300, T0))
    a, b, c = lines[:120], lines[120:200], lines[200:]
    old = StreamEvaluator(PRODUCTS, DIM, 1.0)
    old.batch(a)
    gone = json.loads(a[0].split("|", 2)[2])["products"][0]
    products = [p for p in PRODUCTS if p != gone] + ["p-new"]
    ctx = _ctx()
    ctx.state.values[None] = old.encode()
    fn = _fn(ctx, products)
    list(fn.process_element("ope\t" + "\t".join(b), None))
    rows = ctx.maps[ROWS]
    assert ctx.state.blob is not None and ctx.state.blob.startswith(b"RTOPE2")
    assert set(rows.data) == set(PRODUCTS)  # migrated: every product of the old blob
    rows.puts.clear()
    again = _fn(ctx, products)  # a restore of the new layout
    list(again.process_element("ope\t" + "\t".join(c), None))
    learned = {p for line in c for p in json.loads(line.split("|", 2)[2])["products"]}
    assert set(rows.puts) == learned  # the one missing from the list too, when learned
    whole = StreamEvaluator.decode(old.encode(), products, DIM, 1.0)  # the one-blob path
    whole.batch(b + c)
    assert again.ev is not None and again.ev.summaries() == whole.summaries()
    assert again.ev.status() == whole.status()
    want = _rows(whole)
    assert {p: want[p] for p in rows.data} == rows.data
    assert gone in rows.data and again.ev.product_ids[-1] == gone  # appended after the list
    assert again.ev.encode_row(again.ev.index["p-new"]) == want["p-new"]


def test_rows_of_products_missing_from_the_list_are_kept_and_a_bad_row_starts_again(
        caplog: pytest.LogCaptureFixture) -> None:
    """A restore on a list without a product keeps its row and appends the product (the live
    catalogue added it while the job ran: the list is only the file the job started with);
    a row of the wrong size is refused: logged, the estimates and rows start again."""
    ctx = _ctx()
    lines = closed_lines(make_log(7, 100, T0))
    list(_fn(ctx).process_element("ope\t" + "\t".join(lines[:50]), None))
    rows = ctx.maps[ROWS]
    gone = sorted(rows.data)[0]
    kept = rows.data[gone]
    fn = _fn(ctx, [p for p in PRODUCTS if p != gone])
    list(fn.process_element("ope\t" + "\t".join(lines[50:60]), None))
    assert rows.removes == 0 and fn.ev is not None and gone in fn.ev.index
    assert fn.ev.encode_row(fn.ev.index[gone]) == rows.data[gone]
    if gone not in {p for ln in lines[50:60] for p in json.loads(ln.split("|", 2)[2])["products"]}:
        assert rows.data[gone] == kept
    rows.data[sorted(rows.data)[0]] = b"\0" * 16
    with caplog.at_level(logging.ERROR, logger="flink_job.evaluate"):
        fn = _fn(ctx)
        list(fn.process_element("ope\t" + "\t".join(lines[60:]), None))
    assert "cannot be used" in caplog.text
    assert fn.ev is not None and fn.ev.counts["impressions"] == 40
    fresh = StreamEvaluator(PRODUCTS, DIM, 1.0)
    fresh.batch(lines[60:])
    learned = {p for line in lines[60:] for p in json.loads(line.split("|", 2)[2])["products"]}
    assert rows.data == {p: r for p, r in _rows(fresh).items() if p in learned}
    assert fn.ev.summaries() == fresh.summaries()


@pytest.mark.parametrize("seed", [8, 9, 10])
def test_products_added_while_running_come_back_in_the_order_met(seed: int) -> None:
    """Products met after the list (the live catalogue's) are in the head in the order met and
    their rows beside it: a restore on the same short list rebuilds the same product order,
    so popularity's ties and every estimate go on exactly as without the restore."""
    lines = closed_lines(make_log(seed, 300, T0))
    pool = sorted({p for ln in lines for p in json.loads(ln.split("|", 2)[2])["products"]})
    short = [p for p in PRODUCTS if p not in pool[2:9]]
    whole = StreamEvaluator(short, DIM, 1.0)
    whole.batch(lines)
    first = StreamEvaluator(short, DIM, 1.0)
    first.batch(lines[:150])
    head, rows = first.encode_head(), first.take_rows()
    again = StreamEvaluator.from_rows(head, rows.items(), short, DIM, 1.0)
    assert again.product_ids == first.product_ids and len(again.added) > 0
    again.batch(lines[150:])
    assert again.product_ids == whole.product_ids
    assert again.summaries() == whole.summaries() and again.status() == whole.status()


@pytest.mark.integration
@pytest.mark.flink
@pytest.mark.timeout(900)
def test_the_real_job_restores_the_rows_and_goes_on_to_the_commands_estimates(
        job_settings: Settings, products_file, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Through Kafka, Redis and the job: a first log evaluated and checkpointed (head and
    rows), the job killed and restored with the evaluation on, a second log: Redis holds the
    offline command's estimates on both logs (1e-9), so the restored rows are the model's."""
    from contract.store import redis_client
    from endtoend.harness import JobProcess, now_ms, produce, sentinels
    from flink_job import checkpoints
    from flink_job.evaluate import redis_key, status_key

    s = job_settings
    n = 150
    t0 = now_ms() - 10 * 60_000
    first = make_log(21, n, t0)
    t1 = t0 + n * 20 + W_MS + 3_000
    second = make_log(22, n, t1)
    r = redis_client(s.redis)

    def records(log_):  # type: ignore[no-untyped-def]
        return [(s.kafka.topic_impressions if kind == "i" else s.kafka.topic_clicks, raw, t,
                 None) for raw, t, kind in log_]

    def counted(want: int) -> bool:
        return json.loads(r.get(status_key(s.redis.prefix)) or b"{}").get("impressions") == want

    produce(s, records(first) + sentinels(s, t0 + n * 20 + W_MS + 2_000))
    job = JobProcess(s, tmp_path / "job.log", ["--products", str(products_file)]).start()
    try:
        wait_for(lambda: counted(n), 420, "the first log evaluated", job, every_s=0.5)
        before = {str(p) for p in checkpoints.completed(s.job.checkpoint_dir)}
        wait_for(lambda: any(str(p) not in before
                             for p in checkpoints.completed(s.job.checkpoint_dir)),
                 60, "a checkpoint after the first log", job)
    finally:
        job.kill()
    job = JobProcess(s, tmp_path / "job2.log", ["--products", str(products_file)])
    job.start("--restore", "latest")
    try:
        produce(s, records(second) + sentinels(s, t1 + n * 20 + W_MS + 2_000))
        wait_for(lambda: counted(2 * n), 420, "both logs evaluated", job, every_s=0.5)
        # Flink restored the checkpoint (so the first log was not read again: its count
        # and rows came from the state)
        port = flink_rest_port(job)
        (jid,) = [j["jid"] for j in rest_get(port, "/jobs/overview")["jobs"]]
        assert rest_get(port, f"/jobs/{jid}/checkpoints")["latest"]["restored"] is not None
    finally:
        job.kill()
    off = offline(first + second)
    got = {name: json.loads(r.get(redis_key(s.redis.prefix, name)))
           for name, t in off["targets"].items() if t.get("n")}
    assert_equal(got, off)
    assert "cannot be used" not in (tmp_path / "job2.log").read_text()
