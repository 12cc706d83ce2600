"""Benchmarks, run on demand (``make bench``), never in the test run: each compares against a
baseline measured in the same run and writes results/<name>.json."""
