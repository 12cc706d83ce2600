"""The command line: help, clear one-line errors, prepare-data figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from producer.__main__ import main


@pytest.mark.parametrize("command", ["world", "prepare-data", "evaluate", "load"])
def test_every_command_has_help_with_a_seed(command: str) -> None:
    out = subprocess.run([sys.executable, "-m", "producer", command, "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "--seed" in out


@pytest.mark.parametrize("argv, message", [
    (["prepare-data", "--oracle", "nope"], "error: unknown oracle 'nope'"),
    (["prepare-data", "--world-dir", "/no/such/dir"], "error: world folder not found"),
    (["prepare-data", "--p-morning", "2"], "error: p_morning: 2.0 is not in [0, 1]"),
    (["load", "--replay", "/no/such/file.jsonl"], "error: replay file not found"),
    (["load"], "error: give --count N or --duration"),
])
def test_errors_are_one_line_with_non_zero_exit(argv: list[str], message: str,
                                                 capsys: pytest.CaptureFixture) -> None:
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and "\n" not in err


def test_prepare_data_writes_the_log_and_the_figures(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    code = main(["prepare-data", "--data-dir", str(tmp_path / "data"), "--results-dir",
                 str(tmp_path / "results")])
    assert code == 0
    figures = json.loads((tmp_path / "results" / "prepare_data.json").read_text())
    assert figures["events"] == 10_000 and figures["users"] == 1000
    assert figures["products"] == 200 and 0.13 <= figures["ctr"] <= 0.16
    lines = (tmp_path / "data" / "history.csv").read_text().splitlines()
    assert len(lines) == 10_001
    assert "click rate" in capsys.readouterr().out


def test_another_seed_builds_its_own_world(tmp_path: Path) -> None:
    code = main(["prepare-data", "--seed", "7", "--events", "500", "--data-dir",
                 str(tmp_path / "data"), "--results-dir", str(tmp_path / "results")])
    assert code == 0
    shipped = main(["prepare-data", "--events", "500", "--data-dir", str(tmp_path / "d2"),
                    "--results-dir", str(tmp_path / "r2")])
    assert shipped == 0
    assert (tmp_path / "data" / "history.csv").read_text() != (
        tmp_path / "d2" / "history.csv").read_text()
