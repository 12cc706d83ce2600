"""The job's side of a rollback, as units (docs/JOB.md "Snapshots and rollback"): Validate drops
the records below their partition's skip offset, unparsed and not dead-lettered, counts them,
and keeps everything else (other partitions, later offsets, malformed lines) as before."""

from __future__ import annotations

import json

import pytest

from contract.events import Impression
from flink_job.functions import RECORD_SEPARATOR, Validate
from tests.helpers import PRODUCTS, FakeRuntimeContext

D = 15


def _record(topic: str, partition: int, offset: int, rid: str) -> str:
    imp = Impression(rid, 1, 1_700_000_000_000, tuple([0.1] * D), (PRODUCTS[0],), (0.0,),
                     "linucb", 0, 1.0)
    return f"{topic}\t{partition}\t{offset}\t1700000000000\tu\t{imp.to_json().decode()}"


def _run(skip: dict[str, int] | None, records: list[str]) -> tuple[list[str], list[str], dict]:
    fn = Validate(D, frozenset(PRODUCTS), 65536, skip_before=skip,
                  clock=lambda: 1_700_000_000_000)
    ctx = FakeRuntimeContext()
    fn.open(ctx)
    kept, dead = [], []
    for out in fn.process_element(RECORD_SEPARATOR.join(records), None):
        if isinstance(out, tuple):
            dead.append(out[1])
        else:
            kept += out.split(RECORD_SEPARATOR)
    return kept, dead, dict(fn.counts)


@pytest.mark.parametrize("cut", [0, 3, 7, 10])
def test_records_below_the_skip_offset_are_dropped_the_rest_learned(cut: int) -> None:
    records = ([_record("imp", 0, o, f"a{o}") for o in range(10)]
               + [_record("imp", 1, o, f"b{o}") for o in range(4)]
               + ["malformed line"])
    kept, dead, counts = _run({"imp:0": cut, "clk:0": 100}, records)
    assert len(kept) == (10 - cut) + 4  # partition 1 has no skip offset: all kept
    assert all(f'"a{o}"' not in " ".join(kept) for o in range(cut))
    assert all(f'"a{o}"' in " ".join(kept) for o in range(cut, 10))
    assert counts["events_skipped_rollback"] == cut
    assert counts["events_in"] == len(records) - cut
    # the malformed line is not skipped: it is dead-lettered as before
    assert [json.loads(d)["reason"] for d in dead] == ["unparseable"]


def test_without_skip_offsets_nothing_is_dropped() -> None:
    records = [_record("imp", 0, o, f"a{o}") for o in range(5)]
    kept, dead, counts = _run(None, records)
    assert len(kept) == 5 and not dead and counts["events_skipped_rollback"] == 0
    kept, dead, counts = _run({"imp:0": 5}, records)
    assert kept == [] and not dead and counts["events_skipped_rollback"] == 5
