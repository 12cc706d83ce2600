"""The streaming LinUCB learner: Kafka -> validate -> reward join -> keyed RocksDB state -> Redis.

Entry point: ``python -m flink_job run|bootstrap|cluster`` (see :mod:`flink_job.__main__` and
docs/JOB.md). The Flink functions are thin shells over pure logic that imports only the shared
contract package, so the job and serving cannot disagree about events, math or bytes:

- :mod:`flink_job.records` parses the source's records and builds dead letters;
- :mod:`flink_job.join` is the reward join (pure state machine, unit-tested without Flink);
- :mod:`flink_job.publish` writes parameters to Redis with retry (a real and an in-memory store);
- :mod:`flink_job.functions` wraps those in PyFlink functions;
- :mod:`flink_job.job` builds the Flink configuration and the graph and runs it.
"""
