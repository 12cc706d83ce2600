"""Docs cannot drift: serving's doctests and the Python blocks of docs/SERVING.md run."""

from __future__ import annotations

import doctest
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULES = ["serving.snapshot", "serving.policies", "serving.recommender", "serving.errors"]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_serving_md_python_blocks_run() -> None:
    text = (ROOT / "docs" / "SERVING.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, "docs/SERVING.md", "exec"), {})


def test_serving_never_imports_producer_or_flink_job() -> None:
    """serving meets the job only through Kafka and Redis, and must not see the oracle."""
    import subprocess
    import sys

    code = ("import sys, serving, serving.app, serving.refresher, serving.eventlog, "
            "serving.__main__; from serving import Recommender; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('producer', 'flink_job')); "
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT)
    assert out.stdout.strip() == ""
