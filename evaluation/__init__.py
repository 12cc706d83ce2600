"""Off-policy evaluation from the real log: ``python -m evaluation ope`` (docs/EXPERIMENTS.md).

A package of its own because it is an offline reader of the system's output: it needs only the
contract (the events, the LinUCB maths for the reward model, the estimators), reads Kafka or a
file, and must neither import serving (a service, not a library for tools) nor producer (the
hidden oracle would make the estimates a fraud) nor flink_job.
"""
