"""The Redis parameter store on a real Redis: versions only move forward."""

from __future__ import annotations

import numpy as np
import pytest

from contract import codec, linucb
from contract.config import Settings
from contract.store import ParamStore

pytestmark = pytest.mark.integration


def _blob(n: int, d: int = 4) -> bytes:
    s = linucb.init_state(d)
    for i in range(n):
        s = linucb.update(s, np.full(d, 0.1 * (i + 1)), 1.0)
    return codec.encode(s, updated_at_ms=n)


@pytest.fixture
def store(unique_settings: Settings) -> ParamStore:
    s = unique_settings
    return ParamStore.from_settings(s, timeout_s=2)


def test_newer_replaces_older_never_the_reverse(store: ParamStore) -> None:
    assert store.write("p1", _blob(3)) is True
    assert store.write("p1", _blob(2)) is False  # a replay after a restore
    assert store.write("p1", _blob(3)) is False  # the same version again: idempotent
    assert store.read_many(["p1"])["p1"].version == 3
    assert store.write("p1", _blob(5)) is True
    assert store.versions() == {"p1": 5}
    assert store.read_all()["p1"].state.n == 5


def test_pipelined_batch_and_notifications(store: ParamStore) -> None:
    pubsub = store.client.pubsub()
    pubsub.subscribe(store.keys.channel)
    pubsub.get_message(timeout=1)  # the subscribe confirmation
    written = store.write_many([(f"p{i}", _blob(i + 1)) for i in range(50)] + [("p0", _blob(0))])
    assert written == [True] * 50 + [False]
    messages = []
    while (m := pubsub.get_message(timeout=1)) is not None:
        messages.append(m["data"].decode())
    assert messages == [f"p{i}:{i + 1}" for i in range(50)]
    assert len(store.read_all(dim=4)) == 50


def test_missing_products_are_left_out(store: ParamStore) -> None:
    store.write("p1", _blob(1))
    assert set(store.read_many(["p1", "nope"])) == {"p1"}


def test_writes_survive_a_flushed_script_cache(store: ParamStore) -> None:
    """EVALSHA by digest: a Redis that lost its scripts (restart, SCRIPT FLUSH) gets the
    script again and the batch still lands, once."""
    assert store.write_many([("p1", _blob(1))]) == [True]
    store.client.script_flush()
    assert store.write_many([("p1", _blob(2)), ("p2", _blob(1))]) == [True, True]
    assert store.versions() == {"p1": 2, "p2": 1}
