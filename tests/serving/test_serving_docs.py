"""Docs cannot drift: serving's doctests and the Python blocks of docs/SERVING.md run."""

from __future__ import annotations

import doctest
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULES = ["serving.snapshot", "serving.policies", "serving.recommender"]


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
