"""The streaming LinUCB learner: Kafka -> validate -> reward join -> keyed RocksDB state -> Redis.

Entry point: ``python -m flink_job run|bootstrap|cluster`` (see :mod:`flink_job.__main__` and
docs/JOB.md). The Flink functions are thin shells over pure logic that imports only the shared
contract package, so the job and serving cannot disagree about events, math or bytes:

- :mod:`flink_job.records` parses the source's records, builds dead letters and the text lines
  exchanged with the JVM operators of ``java/rtrec/`` (the reward join and the micro-batcher,
  which run on the JVM because they touch every event);
- :mod:`flink_job.publish` writes parameters to Redis with retry (a real and an in-memory store);
- :mod:`flink_job.functions` wraps those in PyFlink functions;
- :mod:`flink_job.job` builds the Flink configuration and the graph and runs it.
"""
