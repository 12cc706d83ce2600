"""Fixtures of the job's tests: per-test settings (own topics, Redis prefix, checkpoint folder),
the product list the job checks against, and one standalone Flink cluster shared by the tests
that submit to one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from contract.config import Settings
from devstack.stack import Stack
from tests.helpers import PRODUCTS, SharedCluster

CLUSTER_FIXTURE = "standalone_cluster"


@pytest.fixture
def products_file(tmp_path: Path) -> Path:
    path = tmp_path / "products.txt"
    path.write_text("\n".join(PRODUCTS) + "\n")
    return path


@pytest.fixture
def job_settings(unique_settings: Settings, tmp_path: Path) -> Settings:
    """The stack's settings with this test's topics, prefix and checkpoint folder."""
    return unique_settings.override(RTREC_CHECKPOINT_DIR=tmp_path / "checkpoints",
                                    RTREC_CHECKPOINT_INTERVAL_MS=1000)


@pytest.fixture(scope="session")
def _shared_cluster(stack: Stack, tmp_path_factory: pytest.TempPathFactory
                    ) -> Iterator[SharedCluster]:
    shared = SharedCluster(tmp_path_factory.mktemp("cluster"))
    yield shared
    shared.down(stack)  # a run that stopped early (-x, a failure in between)


@pytest.fixture
def standalone_cluster(request: pytest.FixtureRequest, stack: Stack,
                       _shared_cluster: SharedCluster) -> Iterator[SharedCluster]:
    """The shared standalone cluster. After each test its jobs are cancelled; after the last
    test of the run that uses it, it is stopped, and none of its processes may be left."""
    yield _shared_cluster
    _shared_cluster.stop_jobs(stack)
    items = request.session.items
    later = items[items.index(request.node) + 1:] if request.node in items else []
    if not any(CLUSTER_FIXTURE in getattr(it, "fixturenames", ()) for it in later):
        left = _shared_cluster.down(stack)
        assert not left, f"cluster processes left behind: {left}"
