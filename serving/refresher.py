"""Keeps the snapshot fresh from Redis in one background thread; requests never wait on it.

Start-up: subscribe to the job's change channel first, then load every product's parameters
(``HGETALL`` of the versions hash, then the values in pipelined ``MGET`` chunks), so a change
published during the load is not missed. Then:

- **notifications** (``<product_id>:<version>`` on ``ParamStore.keys.channel``): collect the
  products whose announced version is newer than the snapshot's, read just those, apply;
- **liveness probe**: every ``probe_interval_s`` a ``GET`` of the store's epoch on the command
  connection, with its socket timeout. A quiet channel proves nothing (a SIGSTOPped Redis is
  quiet too, and the subscription's own PING has no timeout), so only an answered command
  confirms contact: the snapshot's age is the time since the last one, and a probe that times
  out makes :meth:`health` degraded at once;
- **epoch**: the probe (and every versions sync) reads the store's epoch
  (docs/PARAMS_FORMAT.md). When it changes - Redis wiped, or values rolled back - versions
  from the old life mean nothing, so the snapshot is replaced by exactly what Redis holds,
  lower versions included (:meth:`Snapshot.from_params`): the same as a replica starting now.
  A rollback (``python -m flink_job rollback``) changes every value and the epoch in one
  MULTI/EXEC and announces it on the channel, so the reload starts at once; values are always
  read in one transaction with the epoch, and values of another epoch than the one the
  snapshot is being built for are never applied: a snapshot never mixes two lives;
- **polling**: when notifications are off or the subscription is broken, compare the versions
  hash every ``poll_interval_s`` and read what changed; while notifications work, the same
  reconciliation still runs every ``reconcile_every`` polls as a safety net (pub/sub is
  fire-and-forget: a message lost on a reconnect is never re-sent).

Within an epoch every change goes through :meth:`Snapshot.with_params`, which applies a product
only when its version is strictly newer: a late notification or a replayed write never moves
it backwards.

**feature spec**: given ``spec`` (this replica's, contract/context_spec.py), parameters are
applied only while the store's record (``<prefix>:spec``, read with every value read and each
probe) is that spec: under another, the snapshot is the prior and :meth:`health` says why,
until the record is this spec again (then everything is reloaded).

If Redis is unreachable or hung (at start or later) the last snapshot - or the prior - keeps
serving, :meth:`health` says degraded with the reason, and the thread retries with a capped
backoff and re-synchronises by versions when Redis is back, all by itself.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import redis

from contract.codec import ParamBatch, decode_many
from contract.config import Settings
from contract.context_spec import parse_stored, spec_conflict
from contract.store import EPOCH_CHANGED, ParamStore, redis_client
from serving.snapshot import APPLY_CHUNK, YIELD_EVERY, Snapshot, trim_heap, yield_gil

log = logging.getLogger(__name__)

MGET_CHUNK = 1000
TX_PRODUCTS = 2000  # values per MULTI/EXEC: ~4 MB, well within the socket timeout
_UNREAD = object()  # the epoch before the first load (None is a real value: no epoch key)
_MIXED = object()  # values read under two epochs: equal to none, so the caller reads again


@dataclass(frozen=True)
class RefresherHealth:
    """What /healthz reports about parameters."""

    redis_ok: bool
    loaded: bool  # parameters were read from Redis at least once
    notifications: str  # "subscribed", "down" or "off"
    last_error: str | None
    snapshot_age_s: float
    model_version: int
    products_with_params: int
    updates_applied: int
    syncs: int
    epoch: str | None = None  # the store's generation the snapshot belongs to
    epoch_changes: int = 0  # full reloads because the epoch changed after the first load
    probes: int = 0  # liveness probes Redis answered
    last_snapshot_ms: int | None = None  # newest model snapshot's time (python -m flink_job)
    spec_error: str | None = None  # the store's parameters belong to another feature spec


class SnapshotRefresher:
    """Owns the current :class:`Snapshot`; ``snapshot`` is read by requests without a lock."""

    def __init__(self, settings: Settings, product_ids: Sequence[str], *,
                 notifications: bool = True, reconcile_every: int = 10,
                 client_factory: Callable[[], redis.Redis] | None = None,
                 spec: dict | None = None) -> None:
        self.settings = settings
        # this replica's feature spec (ContextSpec.identity()); None: no check
        self.spec = spec
        self._spec_key = settings.redis.key("spec")
        self._spec_error: str | None = None
        self.snapshot = Snapshot.prior(product_ids, settings.model.dim, settings.model.l2)
        self.notifications = notifications
        self.reconcile_every = max(1, reconcile_every)
        self._client_factory = client_factory or (lambda: redis_client(settings.redis))
        self._stop = threading.Event()
        self._loaded = threading.Event()
        self._thread: threading.Thread | None = None
        self._redis_ok = False
        self._subscribed = False
        self._last_error: str | None = "not started"
        self._updates = 0
        self._syncs = 0
        self._probes = 0
        self._epoch: object = _UNREAD
        self._epoch_changes = 0
        self._warned_unknown = False
        self._last_snapshot_ms: int | None = None
        self._reload = False  # a rollback was announced: sync everything at once
        # products added to the live catalog (Recommender.add_products), appended by this
        # thread: the only one that replaces the snapshot while it runs
        self._adding: list[str] = []
        self._adding_lock = threading.Lock()
        self._wake = threading.Event()  # set by add_products and stop: the loop's sleep ends
        # told every replacement of the snapshot just after it is swapped in (old, new, the
        # products whose parameters changed or None when unknown): serving's category pools
        # (serving/category_rates.py) follow it in O(changed)
        self.on_change: Callable[[Snapshot, Snapshot, list[str] | None], None] | None = None

    # --- lifecycle -----------------------------------------------------------------------
    def start(self, wait_s: float = 0.0) -> bool:
        """Start the thread; wait up to ``wait_s`` for the first load. True if loaded."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="rtrec-refresher", daemon=True)
            self._thread.start()
        return self._loaded.wait(wait_s) if wait_s > 0 else self._loaded.is_set()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def add_products(self, product_ids: Sequence[str]) -> None:
        """Append brand-new products (at the prior) at this thread's next round (at most
        0.1 s with notifications, a poll interval without), then read their parameters if
        Redis already has some (a re-added product, or one the job learned first). Before
        the thread runs, or once it is stopped, they are appended at once."""
        with self._adding_lock:
            self._adding.extend(p for p in product_ids if p not in self._adding)
        self._wake.set()
        if self._thread is None or not self._thread.is_alive():
            self._take_added()

    def _take_added(self) -> bool:
        with self._adding_lock:
            ids, self._adding = [p for p in self._adding if self.snapshot.index(p) is None], []
        if ids:
            self._swap(self.snapshot.with_products(ids, self.settings.model.l2), ids)
            log.info("%d product(s) added from the catalog, e.g. %s", len(ids), ids[:3])
        return bool(ids)

    def _swap(self, snap: Snapshot, changed: list[str] | None) -> None:
        """Replace the snapshot (this thread, or a caller before it runs), then tell
        :attr:`on_change` (requests get the new parameters first; a slow listener delays the
        next update, not this one); a failing listener is logged, never stops the
        refresher."""
        old, self.snapshot = self.snapshot, snap
        listener = self.on_change
        if listener is not None:
            try:
                listener(old, snap, changed)
            except Exception:
                log.exception("snapshot listener failed")

    def wait_loaded(self, timeout_s: float) -> bool:
        return self._loaded.wait(timeout_s)

    def health(self) -> RefresherHealth:
        snap = self.snapshot
        notif = "off" if not self.notifications else "subscribed" if self._subscribed else "down"
        return RefresherHealth(
            redis_ok=self._redis_ok, loaded=self._loaded.is_set(), notifications=notif,
            last_error=self._last_error, snapshot_age_s=snap.age_s(),
            model_version=snap.model_version,
            products_with_params=len(snap) - snap.prior_count,  # kept per update: no pass
            updates_applied=self._updates, syncs=self._syncs,
            epoch=None if self._epoch is _UNREAD else self._epoch,  # type: ignore[arg-type]
            epoch_changes=self._epoch_changes, probes=self._probes,
            last_snapshot_ms=self._last_snapshot_ms, spec_error=self._spec_error)

    # --- the thread ----------------------------------------------------------------------
    def _run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            client: redis.Redis | None = None
            pubsub = None
            try:
                client = self._client_factory()
                store = ParamStore(client, self.settings.redis.prefix)
                if self.notifications:
                    pubsub = client.pubsub(ignore_subscribe_messages=True)
                    pubsub.subscribe(store.keys.channel)  # before the load: miss nothing
                    self._subscribed = True
                self._sync_by_versions(store)
                self._redis_ok, self._last_error, backoff = True, None, 0.1
                self._loaded.set()
                self._follow(store, pubsub)
            except (redis.RedisError, OSError) as exc:
                self._fail(f"redis unreachable: {type(exc).__name__}: {exc}")
            except Exception as exc:  # a bug must not kill the refresher: report, retry
                log.exception("snapshot refresher error")
                self._fail(f"refresher error: {type(exc).__name__}: {exc}")
            finally:
                self._subscribed = False
                for closable in (pubsub, client):
                    if closable is not None:
                        with contextlib.suppress(Exception):  # a dead connection may raise
                            closable.close()
            if not self._stop.is_set():
                self._take_added()  # Redis down: still rankable (at the prior) meanwhile
                self._stop.wait(backoff)
                backoff = min(backoff * 2, max(0.5, self.settings.serving.poll_interval_s))

    def _fail(self, reason: str) -> None:
        if self._redis_ok or self._last_error != reason:
            log.warning("%s; serving the last snapshot (model_version %d)", reason,
                        self.snapshot.model_version)
        self._redis_ok, self._last_error = False, reason

    def _follow(self, store: ParamStore, pubsub) -> None:  # type: ignore[no-untyped-def]
        """Apply notifications as they come; probe and poll on schedule. Returns only by
        raising (Redis trouble, a probe timing out) or when stopped."""
        interval = self.settings.serving.poll_interval_s
        probe_every = self.settings.serving.probe_interval_s
        polls = 0
        next_poll = time.monotonic() + interval
        next_probe = time.monotonic() + probe_every
        while not self._stop.is_set():
            if pubsub is not None:
                self._drain(store, pubsub, min(0.1, max(0.0, next_probe - time.monotonic())))
            else:
                self._wake.wait(max(0.0, min(next_poll, next_probe) - time.monotonic()))
                self._wake.clear()
            if self._adding and self._take_added():
                self._sync_by_versions(store)  # their parameters, if Redis has some
            if time.monotonic() >= next_probe:
                self._probe(store, pubsub)
                next_probe = time.monotonic() + probe_every
            if time.monotonic() >= next_poll:
                polls += 1
                if pubsub is None or polls % self.reconcile_every == 0:
                    self._sync_by_versions(store)
                next_poll = time.monotonic() + interval

    def _drain(self, store: ParamStore, pubsub, timeout_s: float) -> None:  # type: ignore[no-untyped-def]
        """Read the notifications waiting (the first up to ``timeout_s``) and apply them."""
        changed: dict[str, int] = {}
        msg = pubsub.get_message(timeout=timeout_s)
        while msg is not None:
            self._note(msg, changed)
            msg = pubsub.get_message(timeout=0.0)
        if self._reload:
            self._reload = False
            self._sync_by_versions(store)
            return
        if changed:
            stamp = time.monotonic()  # before the read that confirms it
            epoch, params = self._read(store, list(changed))
            if epoch != self._epoch:  # a new life since: its values alone, all of them
                self._sync_by_versions(store)
            else:
                self._apply(params, stamp)

    def _probe(self, store: ParamStore, pubsub) -> None:  # type: ignore[no-untyped-def]
        """Confirm contact on the command connection (its socket timeout bounds the wait) and
        compare the epoch. With notifications, an answered probe also confirms the snapshot is
        in sync once the notifications published before it are applied; without, only a poll
        does."""
        stamp = time.monotonic()
        try:
            epoch, self._last_snapshot_ms = store.epoch_and_last_snapshot()
        except redis.TimeoutError as exc:
            raise redis.TimeoutError(
                f"liveness probe not answered within {self.settings.redis.timeout_s}s "
                f"(Redis hung or overloaded)") from exc
        self._probes += 1
        if self.spec is not None:
            pipe = store.client.pipeline(transaction=True)
            pipe.get(self._spec_key)
            pipe.hlen(store.keys.versions)
            raw_spec, n = pipe.execute()
            self._spec_blocks(raw_spec, n > 0)
        if epoch != self._epoch:
            self._sync_by_versions(store)  # sees the new epoch: reloads everything
            return
        if pubsub is not None:
            self._drain(store, pubsub, 0.0)
            self.snapshot = self.snapshot.restamped(stamp)

    def _note(self, msg: dict, changed: dict[str, int]) -> None:  # type: ignore[type-arg]
        if msg.get("type") != "message":
            return
        data = msg.get("data")
        try:
            text = data.decode() if isinstance(data, bytes | bytearray) else str(data)
            if text == EPOCH_CHANGED:
                self._reload = True
                return
            pid, version_text = text.rsplit(":", 1)
            version = int(version_text)
        except (ValueError, UnicodeDecodeError):
            log.warning("ignoring malformed notification %r", data)
            return
        current = self.snapshot.version_of(pid)
        if current is not None and version > current:
            changed[pid] = max(version, changed.get(pid, 0))

    def _sync_by_versions(self, store: ParamStore) -> None:
        """Read every product whose version in Redis is newer than the snapshot's; if the
        store's epoch is not the snapshot's, replace the snapshot with all of Redis."""
        for _ in range(100):  # the epoch changed between the two reads: read both again
            stamp = time.monotonic()  # taken before the reads: the age never understates
            epoch, versions = store.epoch_and_versions()
            stale = self._stale(epoch, versions)
            if not stale:
                params = ParamBatch.empty(self.settings.model.dim)
                break
            read_epoch, params = self._read(store, stale)
            if read_epoch == epoch:
                break
        else:
            raise redis.RedisError("the store's epoch kept changing during 100 syncs")
        if epoch != self._epoch:
            self._replace(params, epoch, stamp)
        else:
            self._apply(params, stamp)
        self._syncs += 1
        if len(params) >= 4096:  # a big load's decoded values: their heap back to the OS
            del params
            trim_heap()

    def _stale(self, epoch: str | None, versions: dict[str, int]) -> list[str]:
        """The products to read: newer in Redis than in the snapshot, or all on a new epoch."""
        snap = self.snapshot
        stale = []
        for pid, v in versions.items():
            current = snap.version_of(pid)
            if current is None:
                if not self._warned_unknown:
                    self._warned_unknown = True
                    log.warning("Redis holds parameters of %r, not in this catalog; ignored", pid)
            elif v > current or epoch != self._epoch:
                stale.append(pid)
        return stale

    def _replace(self, params: ParamBatch, epoch: str | None, stamp: float) -> None:
        """A new epoch: exactly what Redis holds, lower versions included. Should the epoch
        change again during the reads, the next probe sees it and replaces again."""
        old = self._epoch
        snap = self.snapshot
        self._swap(Snapshot.from_params(snap.product_ids, snap.dim, self.settings.model.l2,
                                        params, synced_at=stamp), None)
        self._epoch = epoch
        self._updates += len(params)
        if old is not _UNREAD:
            self._epoch_changes += 1
            log.warning("parameter store epoch changed (%s -> %s: Redis wiped or rolled back); "
                        "reloaded every product: model_version %d -> %d, %d with parameters",
                        old, epoch, snap.model_version, self.snapshot.model_version,
                        len(params))

    def _read(self, store: ParamStore,
              product_ids: list[str]) -> tuple[object, ParamBatch]:
        """The epoch and the values of these products, each ``TX_PRODUCTS`` of them read in
        one MULTI/EXEC with the epoch (MGET chunks), so every value belongs to the epoch
        returned; if two transactions saw different epochs the epoch returned is ``_MIXED``,
        equal to none, and the caller reads again. (One transaction for a whole catalog -
        200 MB at 100,000 products - outlasted the socket timeout: the first load never
        finished.) Decoded in batches (contract.codec.decode_many) of ``YIELD_EVERY`` values,
        the GIL given up between them; a corrupt value is skipped and logged."""
        dim = self.settings.model.dim
        epochs: set[str | None] = set()
        parts: list[ParamBatch] = []
        for lo in range(0, max(1, len(product_ids)), TX_PRODUCTS):
            part = product_ids[lo:lo + TX_PRODUCTS]
            pipe = store.client.pipeline(transaction=True)
            pipe.get(store.keys.epoch)
            chunks = [part[i:i + MGET_CHUNK] for i in range(0, len(part), MGET_CHUNK)]
            for chunk in chunks:
                pipe.mget([store.keys.arm(p) for p in chunk])
            if self.spec is not None:  # the values' spec, read in the same transaction
                pipe.get(self._spec_key)
                raw_epoch, *results, raw_spec = pipe.execute()
                if self._spec_blocks(raw_spec, any(b is not None for r in results for b in r)):
                    return (None if raw_epoch is None else raw_epoch.decode()), \
                        ParamBatch.empty(dim)
            else:
                raw_epoch, *results = pipe.execute()
            epochs.add(None if raw_epoch is None else raw_epoch.decode())
            found = [(pid, blob) for chunk, blobs in zip(chunks, results, strict=True)
                     for pid, blob in zip(chunk, blobs, strict=True) if blob is not None]
            del results
            for at in range(0, len(found), YIELD_EVERY):
                if at or parts:
                    yield_gil()  # requests run between the batches
                batch, errors = decode_many(found[at:at + YIELD_EVERY], dim)
                parts.append(batch)
                for pid, reason in errors:
                    log.error("skipping corrupt parameters of %s: %s", pid, reason)
        return (epochs.pop() if len(epochs) == 1 else _MIXED), ParamBatch.concat(parts, dim)

    def _spec_blocks(self, raw_spec: bytes | None, has_params: bool) -> bool:
        """Whether the store's parameters belong to another feature spec than this replica's
        (contract.context_spec.spec_conflict). Blocking drops the snapshot to the prior;
        unblocking asks for a full reload."""
        assert self.spec is not None
        reason = spec_conflict(parse_stored(raw_spec), self.spec, has_params)
        if reason != self._spec_error:
            if reason is not None:
                log.error("refusing the store's parameters: %s; scoring from the prior",
                          reason)
                snap = self.snapshot
                self._swap(Snapshot.prior(snap.product_ids, snap.dim,
                                          self.settings.model.l2), None)
            else:
                log.warning("the store's feature spec is this replica's again: reloading")
                self._reload = True
            self._spec_error = reason
        return reason is not None

    def _apply(self, params: ParamBatch, stamp: float) -> None:
        """Apply in swaps of at most APPLY_CHUNK products, giving the GIL up between them
        (serving.snapshot.yield_gil): requests see each swap's snapshot, as they would after
        as many smaller notification batches."""
        for lo in range(0, max(1, len(params)), APPLY_CHUNK):
            if lo:
                yield_gil()
            snap, changed = self.snapshot.with_params(params[lo:lo + APPLY_CHUNK],
                                                      synced_at=stamp)
            if changed:
                self._swap(snap, changed)
            else:
                self.snapshot = snap  # re-stamped: the same parameters
            self._updates += len(changed)
            if changed:
                log.debug("applied %d product updates (model_version %d)", len(changed),
                          snap.model_version)
