"""Fixtures of the job's tests: per-test settings (own topics, Redis prefix, checkpoint folder)
and the product list the job checks against."""

from __future__ import annotations

from pathlib import Path

import pytest

from contract.config import Settings
from tests.helpers import PRODUCTS


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
