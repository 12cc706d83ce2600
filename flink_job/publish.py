"""Publishing parameters: versioned writes with retry, behind a tiny store interface.

:class:`Publisher` keeps the latest blob per product until the store accepted it, so a Redis
outage delays publication but never loses the newest state nor fails the job: it retries with
capped exponential backoff. The store is anything with ``write_many([(product_id, blob)])``:
:class:`contract.store.ParamStore` in the job, :class:`MemoryStore` in unit tests (same
version rule: an equal or newer version is never replaced).

>>> store = MemoryStore()
>>> from contract.codec import encode
>>> from contract.linucb import init_state, update
>>> import numpy as np
>>> s1 = update(init_state(2), np.ones(2), 1.0)
>>> pub = Publisher(store)
>>> pub.publish([("p1", encode(s1)), ("p1", encode(init_state(2)))])
1
>>> store.versions
{'p1': 1}
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from contract.codec import peek_version

log = logging.getLogger(__name__)


class Store(Protocol):
    def write_many(self, items: Iterable[tuple[str, bytes]]) -> list[bool]: ...


class MemoryStore:
    """In-memory store with the Redis store's version rule (tests, and the no-op bench)."""

    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}
        self.versions: dict[str, int] = {}
        self.fail_next = 0  # make the next N calls raise ConnectionError (outage drills)

    def write_many(self, items: Iterable[tuple[str, bytes]]) -> list[bool]:
        if self.fail_next > 0:
            self.fail_next -= 1
            raise ConnectionError("simulated outage")
        out = []
        for pid, blob in items:
            v = peek_version(blob)
            held = self.versions.get(pid)  # None: never published
            ok = held is None or held < v
            if ok:
                self.values[pid], self.versions[pid] = blob, v
            out.append(ok)
        return out


class Publisher:
    """Write blobs, newest per product, retrying until the store takes them."""

    def __init__(self, store: Store, backoff_s: float = 0.05, max_backoff_s: float = 2.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.store = store
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.sleep = sleep
        self.retries = 0
        self.refused = 0

    def publish(self, items: Iterable[tuple[str, bytes]]) -> int:
        """Write these (newest version per product wins); return how many were written.

        Blocks while the store is down (back-pressure keeps Flink from running ahead; the job
        does not fail), logging each failure with the backoff.
        """
        pending: dict[str, bytes] = {}
        for pid, blob in items:
            old = pending.get(pid)
            if old is None or peek_version(blob) > peek_version(old):
                pending[pid] = blob
        if not pending:
            return 0
        delay = self.backoff_s
        while True:
            try:
                results = self.store.write_many(pending.items())
                break
            except Exception as exc:  # redis errors, timeouts, connection refused
                self.retries += 1
                log.warning("parameter store write failed (%s: %s); retrying %d product(s) in "
                            "%.2fs", type(exc).__name__, exc, len(pending), delay)
                self.sleep(delay)
                delay = min(delay * 2, self.max_backoff_s)
        written = sum(results)
        self.refused += len(results) - written
        return written
