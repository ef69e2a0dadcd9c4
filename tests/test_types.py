"""The type hints are checked: mypy, with the project's configuration (pyproject.toml's
[tool.mypy]), on ``peer`` and ``signaling``. A test, so that CI's one command runs it too."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, missing


def test_mypy_finds_no_errors(tmp_path: Path) -> None:
    if importlib.util.find_spec("mypy") is None:
        missing("mypy is not installed (pip install -e '.[test]')")
    # A fresh cache (a few seconds): an old one from another mypy or config cannot mislead it.
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
         "--cache-dir", str(tmp_path / "mypy"), "peer", "signaling"],
        cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0 or "Success: no issues found" not in result.stdout:
        pytest.fail(f"mypy reports errors:\n{result.stdout}{result.stderr}", pytrace=False)
