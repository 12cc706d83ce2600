"""The architecture's import rule (docs/ARCHITECTURE.md, "Components and boundaries"), checked
on the source of every module, lazy imports inside functions included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = ("contract", "producer", "devstack", "flink_job", "serving", "endtoend", "evaluation",
        "bench", "tests")
# package -> which of our packages it may import (besides itself)
ALLOWED: dict[str, set[str]] = {
    "contract": set(),
    "producer": {"contract"},
    "devstack": {"contract"},
    "flink_job": {"contract"},  # meets serving only through Kafka and Redis
    "serving": {"contract"},  # never producer: the oracle stays hidden
    "endtoend": {"contract", "producer", "serving", "devstack"},  # the job is a process
    "evaluation": {"contract"},  # an offline reader of the log: no service, no oracle
}


def imported_packages(path: Path) -> dict[str, int]:
    """Our top-level packages a module imports -> the first line that does."""
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            top = name.split(".")[0]
            if top in OURS:
                found.setdefault(top, node.lineno)
    return found


def test_the_checker_sees_lazy_imports(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text("import numpy\ndef f():\n    from producer.oracle import x\n"
                   "    import serving.api as a\n")
    assert imported_packages(src) == {"producer": 3, "serving": 4}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_it_may(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no modules found in {package}/"
    bad = [f"{f.relative_to(ROOT)}:{line} imports {top}"
           for f in files for top, line in imported_packages(f).items()
           if top != package and top not in ALLOWED[package]]
    assert not bad, "\n".join(bad)
