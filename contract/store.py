"""Where parameters live in Redis, and the only code that reads or writes them.

Layout (prefix ``rtrec`` by default, see :class:`contract.config.Settings`):

- ``<prefix>:arm:<product_id>``: the encoded parameters (:mod:`contract.codec`);
- ``<prefix>:versions``: hash product_id -> version, for cheap polling of what changed;
- ``<prefix>:updates``: pub/sub channel; each message is ``<product_id>:<version>``;
- ``<prefix>:epoch``: the store's generation, a random token. It changes whenever the store
  starts over: the write script sets a new one when it is missing (a wiped Redis), and
  :meth:`ParamStore.new_epoch` sets one for a tool that rolls the values back. Versions only
  compare within one epoch; a reader that sees another epoch reloads everything.
- ``<prefix>:generation``: integer, the writers' generation (absent: the first write sets its
  own). A write carries its writer's generation and is refused unless it is the store's: a
  rollback (:meth:`ParamStore.replace_all`) raises it, so a job from before the rollback can
  never overwrite the rolled-back values; parameters are ordered by (generation, version).
- ``<prefix>:last_snapshot``: JSON ``{"name", "at_ms"}`` of the newest model snapshot
  (``python -m flink_job snapshot``); serving reports its age.

A write goes through one Lua script that compares versions inside Redis, so a replayed older
value (after a Flink restore) can never replace a newer one, and the keys change together.
Writes of many products go in one pipeline.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import redis

from contract.codec import Params, decode, peek_version
from contract.config import RedisSettings, Settings

log = logging.getLogger(__name__)

# KEYS[1] arm key, KEYS[2] versions hash, KEYS[3] epoch, KEYS[4] generation; ARGV[1] product
# id, ARGV[2] version, ARGV[3] value, ARGV[4] channel, ARGV[5] a new epoch token, ARGV[6] the
# writer's generation. Returns 1 when written, 0 when an equal or newer version is there
# already, -1 when the writer's generation is not the store's. The epoch (and a missing
# generation) is set first, in the same atomic step: no reader can see a value of a wiped
# store's next life under the old epoch.
_WRITE_IF_NEWER = """
redis.call('SET', KEYS[3], ARGV[5], 'NX')
redis.call('SET', KEYS[4], ARGV[6], 'NX')
if redis.call('GET', KEYS[4]) ~= ARGV[6] then return -1 end
local cur = redis.call('HGET', KEYS[2], ARGV[1])
if cur and tonumber(cur) >= tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('PUBLISH', ARGV[4], ARGV[1] .. ':' .. ARGV[2])
return 1
"""


@dataclass(frozen=True)
class StoreKeys:
    prefix: str = "rtrec"

    def arm(self, product_id: str) -> str:
        return f"{self.prefix}:arm:{product_id}"

    @property
    def versions(self) -> str:
        return f"{self.prefix}:versions"

    @property
    def channel(self) -> str:
        return f"{self.prefix}:updates"

    @property
    def epoch(self) -> str:
        return f"{self.prefix}:epoch"

    @property
    def generation(self) -> str:
        return f"{self.prefix}:generation"

    @property
    def last_snapshot(self) -> str:
        return f"{self.prefix}:last_snapshot"

    @property
    def spec(self) -> str:
        """The feature spec the parameters were learned under (contract/context_spec.py)."""
        return f"{self.prefix}:spec"


# Published on the channel after a rollback replaced every value (not a product:version pair):
# a reader reloads everything at once instead of at its next probe.
EPOCH_CHANGED = "!epoch"


def new_epoch_token() -> str:
    """64 random bits: two lives of a store never share an epoch."""
    return os.urandom(8).hex()


def redis_client(r: RedisSettings, timeout_s: float | None = None) -> redis.Redis:
    """The one way to reach the system's Redis: host, port, password and db from the settings,
    and timeouts (``timeout_s``, else ``RTREC_REDIS_TIMEOUT_S``) so a call fails fast: redis-py
    waits for minutes on a dead server without them."""
    t = r.timeout_s if timeout_s is None else timeout_s
    return redis.Redis(host=r.host, port=r.port, password=r.password or None, db=r.db,
                       socket_timeout=t, socket_connect_timeout=t, health_check_interval=10)


class ParamStore:
    """Versioned parameter store on one Redis client."""

    @classmethod
    def from_settings(cls, settings: Settings, timeout_s: float | None = None) -> ParamStore:
        """The store of ``settings`` (its Redis, its prefix)."""
        return cls(redis_client(settings.redis, timeout_s), settings.redis.prefix)

    def __init__(self, client: redis.Redis, prefix: str = "rtrec",
                 generation: int | None = None, spec_record: str | None = None) -> None:
        self.client = client
        self.keys = StoreKeys(prefix)
        # the writer's feature-spec record (JSON), put back with a batch if Redis lost it (a
        # wipe): readers then keep telling which spec the values belong to. Never overwrites
        # another record (SET NX): a writer of another spec is refused by its generation.
        self.spec_record = spec_record
        # the writer's generation: given (a rolled-back job), else the store's at the first
        # write, then fixed: a writer never follows a rollback made after it started
        self.generation = generation
        self.refused_generation = 0  # writes refused because of another generation
        # EVALSHA by the script's digest, loaded on NOSCRIPT (first use, or a restarted Redis):
        # redis-py's registered scripts ask SCRIPT EXISTS on every pipeline, a round trip more
        self._sha = hashlib.sha1(_WRITE_IF_NEWER.encode()).hexdigest()

    def write_many(self, items: Iterable[tuple[str, bytes]]) -> list[bool]:
        """Write encoded values in one pipeline; True where written, False where refused
        because Redis already holds an equal or newer version."""
        batch = list(items)
        if not batch:
            return []
        try:
            return self._write(batch)
        except redis.exceptions.NoScriptError:
            # the writes that ran are versioned, so running the whole batch again is safe
            self._sha = self.client.script_load(_WRITE_IF_NEWER)
            return self._write(batch)

    def _write(self, batch: list[tuple[str, bytes]]) -> list[bool]:
        if self.generation is None:
            self.generation = self.current_generation()
        # A token per batch, not per store object: a writer that outlives a wipe must not
        # bring the old epoch back with its next write.
        token = new_epoch_token()
        pipe = self.client.pipeline(transaction=False)
        if self.spec_record is not None:  # before the values: a reader never sees them bare
            pipe.set(self.keys.spec, self.spec_record, nx=True)
        for product_id, blob in batch:
            pipe.evalsha(self._sha, 4, self.keys.arm(product_id), self.keys.versions,
                         self.keys.epoch, self.keys.generation, product_id, peek_version(blob),
                         blob, self.keys.channel, token, str(self.generation))
        results = pipe.execute()
        if self.spec_record is not None:
            results = results[1:]
        stale = sum(1 for r in results if r == -1)
        if stale:
            if not self.refused_generation:
                log.warning("the store's generation is no longer %d (rolled back after this "
                            "writer started): its writes are refused", self.generation)
            self.refused_generation += stale
        return [r == 1 for r in results]

    def current_generation(self) -> int:
        """The store's generation (0 when none was set: never rolled back)."""
        raw = self.client.get(self.keys.generation)
        return 0 if raw is None else int(raw)

    def replace_all(self, values: dict[str, bytes], generation: int) -> str:
        """Replace every product's value by ``values`` in one MULTI/EXEC, under ``generation``
        (higher than the store's) and a new epoch, then announce it (:data:`EPOCH_CHANGED`).
        Products absent from ``values`` are deleted (back to the prior). A rollback: a reader
        sees all of the old values or all of the new ones, never a mix, and writers of an
        older generation are refused from then on. Returns the new epoch."""
        for blob in values.values():
            decode(blob)  # refuse a corrupt value before anything changes
        token = new_epoch_token()
        with self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(self.keys.versions, self.keys.generation)
                    raw = pipe.get(self.keys.generation)
                    held = 0 if raw is None else int(raw)
                    if generation <= held:
                        raise ValueError(f"generation {generation} is not above the store's "
                                         f"({held})")
                    old = [k.decode() for k in pipe.hkeys(self.keys.versions)]
                    pipe.multi()
                    if old:
                        pipe.delete(*[self.keys.arm(p) for p in old])
                    pipe.delete(self.keys.versions)
                    for pid, blob in values.items():
                        pipe.set(self.keys.arm(pid), blob)
                    if values:
                        pipe.hset(self.keys.versions, mapping={
                            pid: peek_version(blob) for pid, blob in values.items()})
                    pipe.set(self.keys.generation, str(generation))
                    pipe.set(self.keys.epoch, token)
                    pipe.publish(self.keys.channel, EPOCH_CHANGED)
                    pipe.execute()
                    break
                except redis.WatchError:  # a write slipped in: read again
                    continue
        self.generation = generation
        return token

    def read_blobs(self) -> tuple[str | None, int, dict[str, bytes]]:
        """(epoch, generation, product -> encoded value) of everything published, read in one
        MULTI/EXEC so they belong together (a snapshot of the store)."""
        while True:
            versions = self.epoch_and_versions()[1]
            pids = sorted(versions)
            pipe = self.client.pipeline(transaction=True)
            pipe.get(self.keys.epoch)
            pipe.get(self.keys.generation)
            pipe.hgetall(self.keys.versions)
            if pids:
                pipe.mget([self.keys.arm(p) for p in pids])
            out = pipe.execute()
            raw_epoch, raw_gen, again = out[0], out[1], out[2]
            if {k.decode(): int(v) for k, v in again.items()} != versions:
                continue  # a write between the two reads: once more
            blobs = out[3] if pids else []
            return (None if raw_epoch is None else raw_epoch.decode(),
                    0 if raw_gen is None else int(raw_gen),
                    {p: b for p, b in zip(pids, blobs, strict=True) if b is not None})

    def mark_snapshot(self, name: str, at_ms: int) -> None:
        """Record the newest model snapshot (serving reports its age)."""
        self.client.set(self.keys.last_snapshot, json.dumps({"name": name, "at_ms": at_ms}))

    def epoch_and_last_snapshot(self) -> tuple[str | None, int | None]:
        """The epoch and the newest snapshot's time (epoch ms; None: none), one MGET."""
        raw, snap = self.client.mget([self.keys.epoch, self.keys.last_snapshot])
        at_ms = None
        if snap is not None:
            try:
                at_ms = int(json.loads(snap)["at_ms"])
            except (ValueError, KeyError, TypeError):
                at_ms = None
        return (None if raw is None else raw.decode()), at_ms

    def write(self, product_id: str, blob: bytes) -> bool:
        return self.write_many([(product_id, blob)])[0]

    def versions(self) -> dict[str, int]:
        """product_id -> version of everything published (one HGETALL)."""
        return {k.decode(): int(v) for k, v in self.client.hgetall(self.keys.versions).items()}

    def epoch(self) -> str | None:
        """The store's generation (None: nothing written since it was created or wiped)."""
        raw = self.client.get(self.keys.epoch)
        return None if raw is None else raw.decode()

    def epoch_and_versions(self) -> tuple[str | None, dict[str, int]]:
        """The epoch and the versions hash read in one transaction, so they belong together."""
        pipe = self.client.pipeline(transaction=True)
        pipe.get(self.keys.epoch)
        pipe.hgetall(self.keys.versions)
        raw, versions = pipe.execute()
        return (None if raw is None else raw.decode(),
                {k.decode(): int(v) for k, v in versions.items()})

    def new_epoch(self) -> str:
        """Start a new generation and return its token. Call it after restoring or rolling
        back values by hand (a backup, an older checkpoint's values): readers then reload
        everything instead of ignoring versions lower than the ones they hold. A wipe needs no
        call: the next write sets a new epoch."""
        token = new_epoch_token()
        self.client.set(self.keys.epoch, token)
        return token

    def read_many(self, product_ids: Sequence[str], dim: int | None = None) -> dict[str, Params]:
        """Decode the values of these products (one MGET); missing ones are left out."""
        if not product_ids:
            return {}
        blobs = self.client.mget([self.keys.arm(p) for p in product_ids])
        return {p: decode(b, dim) for p, b in zip(product_ids, blobs, strict=True) if b is not None}

    def read_all(self, dim: int | None = None) -> dict[str, Params]:
        return self.read_many(sorted(self.versions()), dim)

    def clear(self) -> None:
        """Delete every key of this prefix (tests and `make clean`)."""
        keys = list(self.client.scan_iter(match=f"{self.keys.prefix}:*", count=1000))
        if keys:
            self.client.delete(*keys)
