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


def test_wait_for_returns_the_type_it_waits_for(tmp_path: Path) -> None:
    """``room.wait_for(peer.ChatMessage)`` is typed to return a ``ChatMessage``: a bot's
    ``.text`` on it checks, and ``.value`` (a DataMessage's) does not."""
    if importlib.util.find_spec("mypy") is None:
        missing("mypy is not installed (pip install -e '.[test]')")
    bot = tmp_path / "bot.py"
    bot.write_text("import peer\n\n\n"
                   "async def greet(room: peer.Room) -> None:\n"
                   "    message = await room.wait_for(peer.ChatMessage, lambda event: event.text == 'hi')\n"
                   "    reveal_type(message)\n"
                   "    print(message.value)\n")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
         "--cache-dir", str(tmp_path / "mypy"), str(bot)],
        cwd=ROOT, capture_output=True, text=True)
    assert 'Revealed type is "peer.events.ChatMessage"' in result.stdout, result.stdout
    assert '"ChatMessage" has no attribute "value"' in result.stdout, result.stdout
    assert result.stdout.count(": error:") == 1, result.stdout  # that one, and no other
