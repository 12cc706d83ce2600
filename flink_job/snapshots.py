"""Model snapshots and rollback on the standalone cluster (``python -m flink_job snapshot NAME``,
``python -m flink_job rollback NAME``; docs/JOB.md "Snapshots and rollback").

A snapshot is ``<RTREC_SNAPSHOT_DIR>/<NAME>/``: a Flink savepoint of the job and the parameters
it had published, equal to the savepoint's state by construction: the job is stopped with the
savepoint (its Redis writer flushes as it closes), Redis is read in one transaction, and the
job is resubmitted from that savepoint (learning pauses for the stop and the restart; serving
keeps answering). ``manifest.json`` holds each product's version, the store's generation and
epoch, the savepoint's path and the parameters file's SHA-256; ``params.json`` the encoded
values (base64 of the codec bytes of docs/PARAMS_FORMAT.md, checked by their CRC when read).

A rollback cancels the running job, reads where both topics end, replaces every value in Redis
by the snapshot's under the next generation and a new epoch (one MULTI/EXEC: serving switches
at once, all products together, and writers of the old generation are refused), then submits
the job from the snapshot's savepoint with that generation and the topics' end offsets: the
restored source re-reads the events after the snapshot and drops them unlearned, so the model
continues from the snapshot with what comes next. ``current.json`` remembers the generation and
the offsets, so a later snapshot's resubmission keeps dropping them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import time
from pathlib import Path

from contract import codec
from contract.config import Settings
from contract.errors import RtrecError
from contract.store import ParamStore
from flink_job import cluster

log = logging.getLogger(__name__)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
CURRENT = "current.json"


class SnapshotError(RtrecError):
    """A snapshot or rollback could not be made (bad name, no job, missing or corrupt files)."""


def _root(settings: Settings) -> Path:
    return Path(settings.job.snapshot_dir).resolve()


def _folder(settings: Settings, name: str) -> Path:
    if not NAME.match(name):
        raise SnapshotError(f"snapshot name {name!r}: use 1-64 of A-Z a-z 0-9 . _ - "
                            "(not starting with . _ -)")
    return _root(settings) / name


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def current(settings: Settings) -> dict:
    """What the last rollback set (generation, skip_before), or {} when none."""
    path = _root(settings) / CURRENT
    return json.loads(path.read_text()) if path.is_file() else {}


def _skip_file(settings: Settings) -> str | None:
    cur = current(settings)
    if not cur.get("skip_before"):
        return None
    path = _root(settings) / "skip_before.json"
    path.write_text(json.dumps(cur["skip_before"], sort_keys=True))
    return str(path)


def snapshot(settings: Settings, name: str, products: str | None = None,
             timeout_s: float = 120.0) -> dict:
    """Take snapshot ``name`` of the running job; returns the manifest."""
    folder = _folder(settings, name)
    if folder.exists():
        raise SnapshotError(f"snapshot {name} exists already ({folder})")
    jid = cluster.active_job(settings)
    if jid is None:
        raise SnapshotError(f"no running job on 127.0.0.1:{settings.stack.flink_rest_port} "
                            "to snapshot")
    folder.mkdir(parents=True)
    t0 = time.monotonic()
    savepoint = cluster.stop_with_savepoint(settings, jid, folder / "savepoint", timeout_s)
    stopped_s = time.monotonic() - t0
    store = ParamStore.from_settings(settings)
    epoch, generation, blobs = store.read_blobs()
    params = json.dumps({p: base64.b64encode(b).decode() for p, b in sorted(blobs.items())},
                        indent=0).encode()
    (folder / "params.json").write_bytes(params)
    at_ms = _now_ms()
    manifest = {
        "name": name, "created_at_ms": at_ms, "job_id": jid, "savepoint": savepoint,
        "redis_prefix": settings.redis.prefix, "generation": generation, "epoch": epoch,
        "versions": {p: codec.peek_version(b) for p, b in sorted(blobs.items())},
        "observations": sum(codec.decode(b).state.n for b in blobs.values()),
        "params_sha256": hashlib.sha256(params).hexdigest(),
        "skip_before": current(settings).get("skip_before") or {},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    rc = cluster.submit(settings, products, restore=savepoint,
                        generation=generation, skip_before=_skip_file(settings))
    if rc != 0:
        raise SnapshotError(f"snapshot {name} taken, but resubmitting the job from it failed "
                            f"(flink run exit {rc}); resubmit with: python -m flink_job cluster "
                            f"submit --restore {savepoint}")
    store.mark_snapshot(name, at_ms)
    log.info("snapshot %s: %d products, savepoint %s (job stopped for %.1fs, resubmitted in "
             "%.1fs)", name, len(blobs), savepoint, stopped_s, time.monotonic() - t0)
    return manifest


def load(settings: Settings, name: str) -> tuple[dict, dict[str, bytes]]:
    """The manifest and the values of snapshot ``name``, checked (SHA-256, codec CRC)."""
    folder = _folder(settings, name)
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        raw = (folder / "params.json").read_bytes()
    except (OSError, ValueError) as exc:
        raise SnapshotError(f"snapshot {name}: cannot read it ({exc})") from exc
    if hashlib.sha256(raw).hexdigest() != manifest.get("params_sha256"):
        raise SnapshotError(f"snapshot {name}: params.json does not match its manifest")
    blobs = {p: base64.b64decode(v) for p, v in json.loads(raw).items()}
    for pid, blob in blobs.items():
        try:
            codec.decode(blob)
        except codec.CodecError as exc:
            raise SnapshotError(f"snapshot {name}: the value of {pid} is corrupt ({exc})") from exc
    if {p: codec.peek_version(b) for p, b in blobs.items()} != manifest["versions"]:
        raise SnapshotError(f"snapshot {name}: versions differ from the manifest's")
    if not Path(manifest["savepoint"].removeprefix("file:"), "_metadata").is_file():
        raise SnapshotError(f"snapshot {name}: savepoint {manifest['savepoint']} is gone")
    return manifest, blobs


def topic_ends(settings: Settings) -> dict[str, int]:
    """``"topic:partition" -> offset`` where the impression and click topics end now."""
    from confluent_kafka import Consumer, TopicPartition

    k = settings.kafka
    consumer = Consumer({"bootstrap.servers": k.bootstrap, "group.id": "rtrec-rollback",
                         "enable.auto.commit": False})
    try:
        ends = {}
        for topic in (k.topic_impressions, k.topic_clicks):
            meta = consumer.list_topics(topic, timeout=10).topics[topic]
            if meta.error is not None:
                raise SnapshotError(f"topic {topic}: {meta.error}")
            for p in sorted(meta.partitions):
                _low, high = consumer.get_watermark_offsets(TopicPartition(topic, p),
                                                            timeout=10)
                ends[f"{topic}:{p}"] = int(high)
        return ends
    finally:
        consumer.close()


def rollback(settings: Settings, name: str, products: str | None = None,
             timeout_s: float = 120.0) -> dict:
    """Roll the model back to snapshot ``name`` and resume learning from it; returns facts
    (generation, seconds to the switch in Redis and to the job running again)."""
    manifest, blobs = load(settings, name)
    if manifest.get("redis_prefix") != settings.redis.prefix:
        raise SnapshotError(f"snapshot {name} is of prefix {manifest.get('redis_prefix')}, "
                            f"not {settings.redis.prefix}")
    t0 = time.monotonic()
    jid = cluster.active_job(settings)
    if jid is not None:
        cluster.cancel(settings, jid, timeout_s)  # it writes nothing more from here
    cancelled_s = time.monotonic() - t0
    skip = topic_ends(settings)
    store = ParamStore.from_settings(settings)
    generation = max(store.current_generation(), int(manifest["generation"])) + 1
    epoch = store.replace_all(blobs, generation)
    switched_s = time.monotonic() - t0
    root = _root(settings)
    (root / CURRENT).write_text(json.dumps({"generation": generation, "skip_before": skip,
                                            "snapshot": name, "at_ms": _now_ms()},
                                           indent=1, sort_keys=True))
    log.info("rollback to %s: Redis holds its %d products under generation %d (epoch %s) "
             "%.2fs after the start (job cancelled in %.2fs)", name, len(blobs), generation,
             epoch, switched_s, cancelled_s)
    rc = cluster.submit(settings, products, restore=manifest["savepoint"],
                        generation=generation, skip_before=_skip_file(settings))
    if rc != 0:
        raise SnapshotError(f"rolled back Redis to {name}, but submitting the job from its "
                            f"savepoint failed (flink run exit {rc})")
    new = cluster.active_job(settings)
    if new is not None:
        cluster.wait_state(settings, new, ("RUNNING",), timeout_s)
    running_s = time.monotonic() - t0
    log.info("rollback to %s: job %s running from the snapshot %.1fs after the start", name,
             new, running_s)
    return {"snapshot": name, "generation": generation, "epoch": epoch, "job_id": new,
            "cancelled_job": jid, "cancel_s": round(cancelled_s, 3),
            "switch_s": round(switched_s, 3), "running_s": round(running_s, 3),
            "skip_before": skip}


def age_s(settings: Settings) -> float | None:
    """Seconds since the newest snapshot in the snapshot folder (None: none)."""
    times = []
    for m in _root(settings).glob("*/manifest.json"):
        try:
            times.append(int(json.loads(m.read_text())["created_at_ms"]))
        except (OSError, ValueError, KeyError):
            continue
    return (_now_ms() - max(times)) / 1000 if times else None
