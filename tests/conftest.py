"""Session fixtures: one real Kafka broker and one real Redis server per pytest process (one
for a plain run; one per worker under ``make test``, which runs two: see
``pytest_collection_modifyitems`` below).

Both come from :mod:`devstack` (the same code as ``make stack-up``) on free ports in a temp
folder, and are stopped at the end of the session whatever happened.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from contract.config import Settings
from devstack.stack import Stack, free_port

# tests/compose/ runs only under `make compose-test` (tests/compose/run.sh builds the images
# first and sets RTREC_COMPOSE_TEST=1): `make test` does not collect it (not skipped: absent).
# Kept here, not in a tests/compose/conftest.py: --doctest-modules imports every conftest as a
# module named "conftest", and two of them clash at collection.
collect_ignore_glob = [] if os.environ.get("RTREC_COMPOSE_TEST") == "1" else ["compose/test_*.py"]

# The JVMs the tests start (Kafka, each job's mini-cluster, the standalone cluster, the demo's)
# compile with C1 only: each lives seconds to a minute, and on 2 cores C2's compiler threads
# take the CPU the work under test needs. Same runtime and semantics; measured here, two job
# tests alternated 3 times each: 53 s with the JVM's default, 44 s with it. The benchmarks
# (make bench) keep the default. A JAVA_TOOL_OPTIONS of the caller's own is left as it is.
os.environ.setdefault("JAVA_TOOL_OPTIONS", "-XX:TieredStopAtLevel=1")


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A running Kafka + Redis; ``stack.settings`` points at them."""
    root: Path = tmp_path_factory.mktemp("stack")
    kafka_port = free_port()
    settings = Settings.from_env({
        "RTREC_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka_port}", "RTREC_REDIS_PORT": free_port(),
        "RTREC_STACK_DIR": root, "RTREC_CHECKPOINT_DIR": root / "checkpoints",
        "RTREC_DATA_DIR": root / "data"})
    s = Stack(settings, kafka_controller_port=free_port())
    try:
        s.up(timeout_s=120)
        yield s
    finally:
        s.down()


@pytest.fixture
def unique_settings(stack: Stack) -> Settings:
    """The stack's settings with topics and a Redis prefix of this test's own (created)."""
    tag = uuid.uuid4().hex[:8]
    settings = stack.settings.isolated(f"t{tag}", Path(stack.settings.stack.dir) / "runs")
    Stack(settings, kafka_controller_port=stack.kafka_controller_port).create_topics()
    return settings


def _set_nodeid(item: pytest.Item, nodeid: str) -> None:
    """pytest 9 keeps a node's id in ``_id`` (a NodeId), pytest 8 in ``_nodeid``; both print
    back the string given."""
    if hasattr(item, "_id"):
        from _pytest.nodeid import NodeId

        item._id = NodeId.parse(nodeid)
    else:
        item._nodeid = nodeid
    assert item.nodeid == nodeid, (item.nodeid, nodeid)


@pytest.hookimpl(tryfirst=True)  # before xdist's own
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``make test`` (pytest-xdist, ``-n 2 --dist loadgroup``) every test that starts a
    Flink job or cluster (marked ``flink``) runs on one worker, one after another, first; the
    other worker takes the rest meanwhile. Two jobs at once on 2 cores would starve each
    other's timing, and the shared standalone cluster (tests.helpers.SharedCluster) is one per
    process. A job test keeps the CPU ~65 % busy (much of it is waiting for a checkpoint or a
    window), so the rest of the suite runs in its gaps. loadgroup reads a group from the
    ``@name`` end of a node id; xdist's own ``xdist_group`` mark writes it where pytest 9 no
    longer reads it, so it is written here.

    xdist tells tests apart by node id, and schemathesis gives every operation of
    ``@schema.parametrize()`` the test function's id (tests/serving/test_serving_api.py): 7 of
    its 8 tests were silently not run. Each such test takes the id its name says
    (``...::test_x[POST /recommend]``), and a duplicate left is an error, not a lost test."""
    seen: set[str] = set()
    for item in items:
        if not item.nodeid.endswith(item.name) and item.parent is not None:
            _set_nodeid(item, f"{item.parent.nodeid}::{item.name}")
        seen.add(item.nodeid)
    if len(seen) < len(items):
        raise pytest.UsageError("tests with the same node id: xdist would run one of them")
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    flink = [item for item in items if item.get_closest_marker("flink")]
    rest = [item for item in items if not item.get_closest_marker("flink")]
    for item in flink:
        _set_nodeid(item, f"{item.nodeid}@flink")
    items[:] = flink + rest
