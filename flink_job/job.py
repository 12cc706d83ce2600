"""Build the Flink configuration and the job graph from :class:`contract.config.Settings`.

::

    KafkaSource(impressions, clicks)  -- [JVM] MetaDeserializer keeps topic/partition/offset
      -> [JVM] SourceBatcher (<= source_batch_max records / source_batch_ms; flushed before
         each watermark and barrier)
      -> Validate (contract.parse_event, one call per batch) --side output--> dead letters
         <- broadcast: KafkaSource(catalog) [JVM] CatalogDeserializer (key + value; broadcast
            state: which products are live, retired or unknown; flink_job/catalog.py)
      -> [JVM] Unbatch
      -> keyBy(request_id) -> [JVM] RewardJoin (event time) --side output--> dead letters
      -> [JVM] MicroBatcher (per product, one publish interval; flushed before each barrier)
      -> key_by(product_id) -> Learn (RocksDB, one codec blob per product, rank-k update)
         --side output--> dead letters (items it cannot learn)
      -> PublishToRedis (contract.store.ParamStore: write-if-newer + PUBLISH)
    RewardJoin --closed impressions--> [JVM] MicroBatcher -> ope-evaluate (one subtask: SNIPS
      and DR per target, to Redis <prefix>:ope:<target>; flink_job/evaluate.py)
    KafkaSource(user-deletions) -> ParseDeletions --side output--> dead letters
      -> keyBy(user) -> [JVM] UserIndex <- keyBy(user) <- RewardJoin's learned items (user)
      -> the items that undo a forgotten user -> MicroBatcher, with the join's
         (flink_job/unlearn.py, docs/PRIVACY.md)
    dead letters -> KafkaSink(dead-letter topic, at least once)

Every setting the job reads arrives in ``Settings`` (pickled into the functions), so the job
and the process that started it agree; nothing here reads the environment.
"""

from __future__ import annotations

import logging
import os
import shutil
import site
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from contract.config import Settings
from contract.linucb import discount_factor
from flink_job import jars, reporter

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
JOB_NAME = "rtrec-linucb-learner"
# Event-time slack: a record may be this late (ms) relative to the newest of its partition.
OUT_OF_ORDERNESS_MS = 500
# How long a closed request is remembered, so a late click is told apart from an orphan.
RETAIN_MS = 60_000
# Longest micro-batch interval, reached when catching up on a backlog (MicroBatcher.java).
MAX_BATCH_INTERVAL_MS = 1_000
DISCARD = "org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink"


@dataclass(frozen=True)
class JobOptions:
    """What the job needs beyond Settings: products, restore point and run-time knobs."""

    known_products: frozenset[str] | None = None
    restore_path: str | None = None  # a checkpoint (chk-N) or savepoint folder
    group_id: str | None = None
    max_restarts: int = 20
    # 0: every partition holds the watermark back (deterministic joins; see docs/JOB.md).
    # >0: a partition silent this long stops holding it back (liveness over determinism).
    idle_timeout_ms: int = 0
    # after a rollback (flink_job/snapshots.py): the generation the job writes with (None: the
    # store's at the first write), and "topic:partition" -> offset below which records are
    # dropped (the events after the snapshot that the restored source position would replay)
    generation: int | None = None
    skip_before: dict[str, int] | None = None
    # the store holds parameters of another feature spec: drop them and learn under this one
    # (contract.context_spec.claim_store); False: refuse to start
    replace_spec: bool = False

    def group(self, settings: Settings) -> str:
        return self.group_id or f"rtrec-job-{settings.redis.prefix}"


def flink_config(settings: Settings, opts: JobOptions) -> dict[str, str]:
    """Flink configuration (key -> value) for the mini-cluster and for cluster submission."""
    ckpt = Path(settings.job.checkpoint_dir)
    ckpt_uri = settings.job.checkpoint_dir if "://" in settings.job.checkpoint_dir \
        else ckpt.resolve().as_uri()
    pythonpath = [str(ROOT), *site.getsitepackages()]
    conf = {
        "pipeline.name": JOB_NAME,
        "parallelism.default": str(settings.job.parallelism),
        "python.execution-mode": settings.job.python_mode,
        "python.executable": sys.executable,
        "python.client.executable": sys.executable,
        "python.pythonpath": ":".join(pythonpath),
        # latency: the default bundles of 1000 ms / 100k records would delay every output
        "python.fn-execution.bundle.time": "20",
        "python.fn-execution.bundle.size": "100",
        # each network hop between operators waits at most this long (docs/JOB.md)
        "execution.buffer-timeout.interval": f"{settings.job.buffer_timeout_ms} ms",
        # state and checkpoints
        "state.backend.type": "rocksdb",
        # memtables small enough that all the column families' first blocks fit the slot's
        # write-buffer budget (RTREC_ROCKSDB_WRITE_BUFFER_MB; docs/SCALING.md)
        "state.backend.rocksdb.writebuffer.size": f"{settings.job.rocksdb_write_buffer_mb} mb",
        "execution.checkpointing.dir": ckpt_uri,
        "execution.checkpointing.interval": f"{settings.job.checkpoint_interval_ms} ms",
        "execution.checkpointing.incremental": "true",
        "execution.checkpointing.mode": "EXACTLY_ONCE",
        "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
        "execution.checkpointing.num-retained": "3",
        "execution.checkpointing.min-pause": "500 ms",
        # RocksDB's own LOG files would otherwise land in the pip distribution's log/ folder
        "state.backend.rocksdb.log.dir": str(ckpt.resolve().parent / "rocksdb-log")
        if "://" not in settings.job.checkpoint_dir else "/tmp",
        # fast failover, bounded restarts (bench_recovery measures it; docs/JOB.md):
        # the first retry after 100 ms, doubling to 10 s while failures repeat; after
        # max_restarts attempts in a row the job fails for good (Flink's default never stops)
        **_restart_strategy(opts.max_restarts),
        # a TaskManager restarted in place restores from its local copy of the state
        "state.backend.local-recovery": "true",
        "pipeline.jars": ";".join(p.resolve().as_uri() for p in jars.job_jars()),
        "pipeline.auto-watermark-interval": "50 ms",
        "metrics.latency.interval": "0",
        # the job's metrics on a Prometheus endpoint per JVM, 127.0.0.1 (flink_job/reporter.py)
        **reporter.config(settings),
    }
    if opts.restore_path:
        conf["execution.savepoint.path"] = opts.restore_path
    return conf


def _restart_strategy(max_restarts: int) -> dict[str, str]:
    if max_restarts <= 0:
        return {"restart-strategy.type": "none"}
    return {
        "restart-strategy.type": "exponential-delay",
        "restart-strategy.exponential-delay.initial-backoff": "100 ms",
        "restart-strategy.exponential-delay.max-backoff": "10 s",
        "restart-strategy.exponential-delay.backoff-multiplier": "2.0",
        "restart-strategy.exponential-delay.reset-backoff-threshold": "60 s",
        "restart-strategy.exponential-delay.jitter-factor": "0.1",
        "restart-strategy.exponential-delay.attempts-before-reset-backoff": str(max_restarts),
    }


def build(env, settings: Settings, opts: JobOptions) -> None:  # type: ignore[no-untyped-def]
    """Add the job's operators to ``env`` (a StreamExecutionEnvironment): the stages below,
    in order. Each stage is a function so the benchmarks can run a prefix of the same graph."""
    from contract.context_spec import claim_for

    # which feature spec the store's parameters belong to, before anything is learned
    log.info("feature spec: %s in %s", claim_for(settings, opts.replace_spec),
             settings.redis.key("spec"))
    raw = kafka_source(env, settings, opts)
    valid, dead = validate(raw, settings, opts)
    batches, join_dead = join_and_batch(valid, settings, opts)
    learn_dead = learn_and_publish(batches, settings, opts.generation)
    dead_letter_sink(dead.union(join_dead, learn_dead), settings)


def kafka_source(env, settings: Settings, opts: JobOptions):  # type: ignore[no-untyped-def]
    """Both topics, one string per record (docs/JOB_LINES.md), event time from Kafka."""
    from pyflink.common import Duration, WatermarkStrategy
    from pyflink.datastream.connectors.kafka import KafkaSource
    from pyflink.java_gateway import get_gateway

    builder = (
        KafkaSource.builder()
        .set_bootstrap_servers(settings.kafka.bootstrap)
        .set_topics(settings.kafka.topic_impressions, settings.kafka.topic_clicks)
        .set_group_id(opts.group(settings))
        .set_property("fetch.max.wait.ms", "10")
        .set_property("commit.offsets.on.checkpoint", "true")
        .set_property("partition.discovery.interval.ms", "60000")
        .set_property("client.id.prefix", f"rtrec-job-{settings.redis.prefix}")
    )
    jvm = get_gateway().jvm
    # committed offsets when the group has them, else the whole log; after a restore the
    # offsets come from the checkpoint (Flink's exactly-once), not from these. Built in Java:
    # PyFlink's KafkaOffsetResetStrategy names the shaded class of the SQL connector jar.
    builder._j_builder.setStartingOffsets(
        jvm.org.apache.flink.connector.kafka.source.enumerator.initializer.OffsetsInitializer
        .committedOffsets(jvm.org.apache.kafka.clients.consumer.OffsetResetStrategy.EARLIEST))
    builder._j_builder.setDeserializer(jvm.rtrec.MetaDeserializer(
        int(settings.job.max_event_bytes)))
    source = builder.build()
    # Event time = the Kafka record timestamp (the producer's create time), taken by the
    # source itself: no Python timestamp assigner on the hot path, per-partition watermarks.
    watermarks = WatermarkStrategy.for_bounded_out_of_orderness(
        Duration.of_millis(OUT_OF_ORDERNESS_MS))
    if opts.idle_timeout_ms > 0:
        watermarks = watermarks.with_idleness(Duration.of_millis(opts.idle_timeout_ms))
    return env.from_source(source, watermarks, "kafka: impressions+clicks").uid("kafka-source")


def validate(raw, settings: Settings, opts: JobOptions):  # type: ignore[no-untyped-def]
    """Source records -> (valid event lines, dead letters), one Python call per batch."""
    from pyflink.common.typeinfo import Types
    from pyflink.datastream.data_stream import DataStream
    from pyflink.java_gateway import get_gateway

    from flink_job import functions as fn

    # Python is called once per batch of source records (java/rtrec/SourceBatcher.java), not
    # once per record: the bridge costs more per call than parsing an event does (JOB.md)
    source_batches = DataStream(
        raw._j_data_stream
        .transform("source-batch", Types.STRING().get_java_type_info(),
                   get_gateway().jvm.rtrec.SourceBatcher(settings.job.source_batch_max,
                                                         settings.job.source_batch_ms))
        .name("source-batch").uid("source-batch"))
    from flink_job import catalog

    # the catalog topic, broadcast to every validator subtask (broadcast state, checkpointed):
    # products it adds are learned, products it retires dead-lettered (flink_job/catalog.py)
    validator = fn.Validate(settings.model.dim, None,
                            settings.job.max_event_bytes, settings.model.max_abs_x,
                            round(settings.job.max_event_age_s * 1000),
                            round(settings.job.max_clock_skew_s * 1000),
                            skip_before=opts.skip_before)
    updates = catalog.catalog_stream(source_batches.get_execution_environment(), settings) \
        .broadcast(catalog.state_descriptor())
    # with settings, each validator subtask reads the topic to its end at open, so events
    # waiting at the start find the products it holds (nothing of the catalog is pickled)
    valid = (source_batches.connect(updates)
             .process(catalog.ValidateWithCatalog(validator, opts.known_products, settings),
                      output_type=Types.STRING())
             .name("validate").uid("validate"))
    return valid, valid.get_side_output(fn.DEAD_LETTERS)


def join_and_batch(valid, settings: Settings,  # type: ignore[no-untyped-def]
                   opts: JobOptions | None = None):
    """Valid events -> (the JVM's per-product micro-batches, the join's dead letters). With
    ``opts`` (the whole job), deletion requests too: the per-user index's undoing items join
    the micro-batcher's input (flink_job/unlearn.py, docs/PRIVACY.md)."""
    from pyflink.common.typeinfo import Types
    from pyflink.datastream.data_stream import DataStream
    from pyflink.java_gateway import get_gateway

    from flink_job import evaluate
    from flink_job.records import join_spec

    jvm = get_gateway().jvm
    string_info = Types.STRING().get_java_type_info()
    # The reward join and the micro-batcher are JVM operators (java/rtrec/): they touch every
    # event, and keyed state and timers through the Python bridge cost ~100x more (JOB.md).
    window_ms = round(settings.job.reward_window_s * 1000)
    j_joined = (valid._j_data_stream
                .flatMap(jvm.rtrec.Unbatch(), string_info).name("unbatch").uid("unbatch")
                .keyBy(jvm.rtrec.RewardJoin.requestKey(), string_info)
                .process(jvm.rtrec.RewardJoin(window_ms, max(RETAIN_MS, 10 * window_ms),
                                              settings.job.click_skew_ms,
                                              join_spec(settings.model,
                                                        settings.job.max_lateness_s)
                                              + evaluate.join_spec_suffix(settings)),
                         string_info)
                .name("reward-join").uid("reward-join"))
    dead = DataStream(j_joined.getSideOutput(jvm.rtrec.RewardJoin.deadLetters()))
    # off-policy estimates in the stream (flink_job/evaluate.py): always in the graph, fed only
    # when RTREC_OPE_STREAM is on, so switching it across a restore never changes the operators
    evaluate.wire(j_joined, settings, opts.known_products if opts else None)
    j_items = j_joined
    if opts is not None:
        from flink_job import unlearn

        if unlearn.unlearning_enabled(settings):
            j_items, deletion_dead = unlearn.wire(valid._j_data_stream.getExecutionEnvironment(),
                                                  j_joined, settings, opts)
            dead = dead.union(deletion_dead)
        else:
            log.warning("deletion requests are not applied to the model while forgetting "
                        "(RTREC_HALF_LIFE) is on: docs/PRIVACY.md")
    # the batcher emits Row(product, batch), which is what PyFlink's key_by would build with
    # an extra Python operator; keying it on the JVM saves that Python call per batch
    j_batches = (j_items
                 .transform("micro-batch",
                            Types.ROW([Types.STRING(), Types.STRING()]).get_java_type_info(),
                            jvm.rtrec.MicroBatcher(settings.job.publish_interval_ms,
                                                   MAX_BATCH_INTERVAL_MS))
                 .name("micro-batch").uid("micro-batch"))
    return j_batches, dead


def learn_and_publish(j_batches, settings: Settings,  # type: ignore[no-untyped-def]
                      generation: int | None = None):
    """Micro-batches -> LinUCB state per product (RocksDB) -> Redis; returns the learner's
    dead letters (the items it cannot learn)."""
    from pyflink.common.typeinfo import Types
    from pyflink.datastream.connectors.base import Sink
    from pyflink.datastream.data_stream import DataStream, KeyedStream
    from pyflink.java_gateway import get_gateway

    from flink_job import functions as fn

    jvm = get_gateway().jvm
    by_product = KeyedStream(
        j_batches.keyBy(jvm.org.apache.flink.streaming.api.functions.python.KeyByKeySelector(),
                        Types.ROW([Types.STRING()]).get_java_type_info()),
        Types.STRING(), DataStream(j_batches))
    category_prior = settings.model.prior == "category"
    starts = None
    if category_prior:
        from flink_job.prior import PriorStarts

        starts = PriorStarts(settings)
    params = (by_product
              .process(fn.Learn(settings.model.dim, settings.model.l2,
                                discount_factor(settings.model.half_life), starts,
                                feature_spec=settings.model.feature_spec),
                       output_type=Types.PICKLED_BYTE_ARRAY())
              .name("learn-linucb").uid("learn-linucb"))
    if category_prior:
        # each learned batch's delta -> its category's pool -> Redis (flink_job/prior.py)
        from flink_job.prior import POOL_DELTAS, PoolCategory

        (params.get_side_output(POOL_DELTAS)
         .key_by(lambda d: d[0], key_type=Types.STRING())
         .process(PoolCategory(settings), output_type=Types.INT())
         .name("pool-category").uid("pool-category")
         .sink_to(Sink(DISCARD)).name("discard-pools").uid("discard-pools"))
    (params.process(fn.PublishToRedis(settings, generation), output_type=Types.INT())
     .name("publish-redis").uid("publish-redis")
     .sink_to(Sink(DISCARD)).name("discard").uid("discard"))
    return params.get_side_output(fn.DEAD_LETTERS)


def dead_letter_sink(dead, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    """Dead letters -> their Kafka topic (at least once)."""
    from pyflink.common.serialization import SimpleStringSchema
    from pyflink.datastream.connectors.base import DeliveryGuarantee
    from pyflink.datastream.connectors.kafka import KafkaRecordSerializationSchema, KafkaSink

    dl_sink = (KafkaSink.builder()
               .set_bootstrap_servers(settings.kafka.bootstrap)
               .set_record_serializer(KafkaRecordSerializationSchema.builder()
                                      .set_topic(settings.kafka.topic_dead_letter)
                                      .set_value_serialization_schema(SimpleStringSchema())
                                      .build())
               .set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
               .set_property("linger.ms", "5")
               .build())
    dead.sink_to(dl_sink).name("kafka: dead letters").uid("dead-letter-sink")


def make_env(settings: Settings, opts: JobOptions,  # type: ignore[no-untyped-def]
             mini_cluster: bool = False):
    """A StreamExecutionEnvironment configured for this job: a client of a cluster, or with
    ``mini_cluster`` the local one whose folders :func:`local_dirs` keeps."""
    from pyflink.common import Configuration
    from pyflink.datastream import StreamExecutionEnvironment

    reporter.plugins_env(os.environ, mini_cluster=True)  # read as the gateway's JVM starts
    conf = flink_config(settings, opts)
    if mini_cluster:
        conf.update(local_dirs())
    config = Configuration()
    for k, v in conf.items():
        config.set_string(k, v)
    env = StreamExecutionEnvironment.get_execution_environment(config)
    env.add_jars(*[p.resolve().as_uri() for p in jars.job_jars()])
    return env


def local_dirs(root: Path | None = None) -> dict[str, str]:
    """The mini-cluster's working, temp and RocksDB folders: ``<tmp>/rtrec-flink-<uid>/<pid>``.

    Flink would make a ``minicluster_*`` folder in /tmp (blobs, local state, RocksDB: ~50 MB),
    which a killed mini-cluster (the job is unbounded: SIGTERM, SIGKILL) never deletes. Here
    each run's folder is named by its process id and removed by the next run once that
    process is gone. The path stays short on purpose: RocksDB names its LOG file after the
    whole database path, and a name over 255 bytes fails the restore."""
    root = root or Path(tempfile.gettempdir()) / f"rtrec-flink-{os.getuid()}"
    root.mkdir(parents=True, exist_ok=True)
    for old in root.iterdir():
        if old.name.isdigit() and not _alive(int(old.name)):
            shutil.rmtree(old, ignore_errors=True)
    work = root / str(os.getpid())
    work.mkdir(exist_ok=True)
    return {"process.working-dir": str(work), "io.tmp.dirs": str(work),
            "state.backend.rocksdb.localdir": str(work)}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def run(settings: Settings, opts: JobOptions) -> None:
    """Build and execute the job; blocks while it runs (it is unbounded)."""
    env = make_env(settings, opts, mini_cluster=True)
    build(env, settings, opts)
    log.info("starting %s (mode %s, parallelism %d, restore %s)", JOB_NAME,
             settings.job.python_mode, settings.job.parallelism, opts.restore_path or "none")
    env.execute(JOB_NAME)
