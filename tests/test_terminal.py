"""``python -m peer`` in a terminal, as a person uses it: a pseudo-terminal whose screen is
modelled by pyte (a VT100 emulator, answering the cursor position requests real terminals
answer), keys typed into it, the screen read back. And without one: lines from a pipe or a
file, progress as plain lines."""

import asyncio
import fcntl
import os
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path
from typing import IO, Optional

import pyte
import pytest

import peer
from conftest import LOCAL, ROOT, child_env
from test_api import MB, join, random_file, sha256
from test_attack_files import so_far
from test_cli_headless import CLI as SENDING_VIDEO, leaves_on_sigint, still_in_the_call

ROWS, COLUMNS = 40, 200
CLI = ["--video", "none", "--ice-host", LOCAL, "--no-window"]
ENTER, CTRL_C, CTRL_D = "\r", "\x03", "\x04"


class Screen(pyte.Screen):
    """pyte's screen, answering what the program asks the terminal (the cursor position)."""

    def __init__(self, columns: int, rows: int, answer) -> None:
        super().__init__(columns, rows)
        self._answer = answer

    def write_process_input(self, data: str) -> None:
        self._answer(data.encode())


class TerminalPeer:
    """A CLI peer whose stdin, stdout and stderr are a terminal; ``lines`` is the screen now,
    ``shown`` every line the screen has held (a toolbar redrawn in place is in it too)."""

    def __init__(self, *flags: str, name: str, cwd: Optional[Path] = None, term: str = "xterm",
                 stderr: Optional[IO] = None) -> None:
        self.name = name
        self.master, its_end = os.openpty()
        fcntl.ioctl(its_end, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
        self.settings = termios.tcgetattr(self.master)
        """The terminal as the program found it."""
        self.screen = Screen(COLUMNS, ROWS, lambda data: os.write(self.master, data))
        self._stream = pyte.ByteStream(self.screen)
        self.shown: set[str] = set()
        self._changed = threading.Condition()
        self._ended = False
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "peer", "--name", name, *flags], cwd=cwd or ROOT,
                                         env=child_env(TERM=term), stdin=its_end, stdout=its_end,
                                         stderr=its_end if stderr is None else stderr)
        finally:
            os.close(its_end)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: the process and every copy of its end are gone
                data = b""
            with self._changed:
                if data:
                    self._stream.feed(data)
                    self.shown.update(self.lines)
                else:
                    self._ended = True
                self._changed.notify_all()
            if not data:
                return

    @property
    def lines(self) -> list[str]:
        with self._changed:
            return [line.rstrip() for line in self.screen.display]

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def expect(self, pattern: str, timeout: float = 20, ever: bool = False) -> re.Match:
        """The first line on the screen (or, with ``ever``, shown at some time) matching ``pattern``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [match for line in (self.shown if ever else self.lines) if (match := regex.search(line))]
                if found:
                    return found[0]
                if self._ended or time.monotonic() > deadline:
                    raise AssertionError(f"{self.name}: no line matching {pattern!r} within {timeout} s; "
                                         "screen:\n" + "\n".join(self.lines).rstrip())
                self._changed.wait(0.5)

    def wait(self, timeout: float = 15) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with self._changed:
            self._changed.wait_for(lambda: self._ended, 5)
        os.close(self.master)


@pytest.fixture
def terminals():
    """Start CLI peers in terminals with ``terminals(*flags, name=...)``; all stopped at the end."""
    started: list[TerminalPeer] = []

    def start(*flags: str, name: str, **options) -> TerminalPeer:
        started.append(TerminalPeer(*flags, name=name, **options))
        return started[-1]

    yield start
    for terminal in started:
        terminal.stop()


async def test_a_line_arriving_while_one_is_typed_goes_above_it_and_the_typed_line_is_sent_whole(server, terminals):
    bob = terminals("--room", "typing", "--server", server.url, *CLI, name="bob")
    async with join("typing", server, "alice") as alice:
        await alice.wait_for_peer()
        await asyncio.to_thread(bob.expect, "^connected to alice")
        bob.type("hello wor")
        await asyncio.to_thread(bob.expect, "^> hello wor$")
        assert alice.send_text("a line from alice\x1b]0;owned\x07")
        shown = await asyncio.to_thread(bob.expect, r"^\[alice\] a line from alice")
        assert shown.string == r"[alice] a line from alice\x1b]0;owned\x07", "not escaped as before"
        lines = bob.lines
        typed = lines.index("> hello wor")  # still whole, below what arrived
        assert typed > lines.index(shown.string), "\n".join(lines)
        bob.type("ld" + ENTER)
        await alice.wait_for_message(lambda text: text == "hello world")
        assert [event.text for event in so_far(alice, peer.ChatMessage)] == ["hello world"]
        await asyncio.to_thread(bob.expect, "^> hello world$")  # what was sent stays on the screen


LEAVING = {"ctrl-d": lambda bob: bob.type(CTRL_D), "ctrl-c": lambda bob: bob.type(CTRL_C),
           "sigterm": lambda bob: bob.proc.send_signal(signal.SIGTERM)}


@pytest.mark.parametrize("leave", LEAVING.values(), ids=LEAVING.keys())
async def test_ctrl_d_ctrl_c_or_a_signal_at_the_prompt_leaves_and_gives_the_terminal_back(server, terminals, leave):
    bob = terminals("--room", "keys", "--server", server.url, *CLI, name="bob")
    async with join("keys", server, "alice") as alice:
        await alice.wait_for_peer()
        await asyncio.to_thread(bob.expect, "^connected to alice")
        await asyncio.to_thread(bob.expect, "^>$")  # the prompt
        assert not termios.tcgetattr(bob.master)[3] & termios.ICANON, "the terminal is still read line by line"
        leave(bob)
        await alice.wait_for(peer.CallEnded)
        assert await asyncio.to_thread(bob.wait) == 0
    bob.expect("^left room keys$")
    assert termios.tcgetattr(bob.master) == bob.settings, "the terminal was not given back as it was"
    assert not [line for line in bob.shown if "Traceback" in line]


async def test_a_file_shows_its_rate_and_time_left_on_both_sides_and_arrives_whole(server, processes, terminals,
                                                                                  tmp_path):
    """alice sends from a script (a pipe: a line a quarter); bob, at a terminal, is asked,
    answers at the prompt, and sees the file come in the prompt's toolbar, then a line."""
    source = random_file(tmp_path / "out" / "report.bin", 8 * MB)
    bob = terminals("--room", "files", "--server", server.url, *CLI, name="bob", cwd=tmp_path)
    await asyncio.to_thread(bob.expect, "^joined room files")
    alice = processes.peer("--room", "files", "--server", server.url, *CLI, "--send", str(source), name="alice")
    await asyncio.to_thread(bob.expect, r"^alice wants to send you report\.bin \(8\.4 MB\): accept\? \[y/N\]$")
    bob.type("y" + ENTER)
    await asyncio.to_thread(alice.expect, rf"^sent report\.bin to bob \(sha256 {sha256(source)[:16]}…\)$", 40)
    rate = r"[\d.]+[kMG]?B/s"
    running = rf"\[[# ]{{20}}\] +(\d+)% [\d.]+[kMG]?B/8\.39MB, {rate}, (\d\d:\d\d) left$"
    done = rf"\[#{{20}}\] 100% 8\.39MB/8\.39MB in \d\d:\d\d, {rate}$"

    quarters = [re.search(running, line) for line in alice.lines if line.startswith("sending report.bin to bob: ")]
    assert [int(match.group(1)) // 25 for match in quarters if match] == [1, 2, 3], alice.output
    assert re.search(f"^sending report\\.bin to bob: {done}", alice.output, re.MULTILINE), alice.output

    saved = await asyncio.to_thread(bob.expect, r"^received report\.bin from alice: saved to (\S+) \(sha256 (\w{16})…\)$")
    assert saved.group(1, 2) == (str(tmp_path / "downloads" / "report.bin"), sha256(source)[:16])
    assert sha256(tmp_path / "downloads" / "report.bin") == sha256(source)
    bob.expect("^accepted report\\.bin from alice$")
    bob.expect(f"^receiving report\\.bin from alice: {done}")
    under_way = bob.expect(f"^receiving report\\.bin from alice: {running}", ever=True)  # in the toolbar
    assert int(under_way.group(1)) < 100
    assert not [line for line in bob.lines if re.search(running, line)], "the toolbar stayed after the file came"


async def test_a_pasted_block_goes_as_its_lines(server, terminals):
    bob = terminals("--room", "paste", "--server", server.url, *CLI, name="bob")
    async with join("paste", server, "alice") as alice:
        await alice.wait_for_peer()
        await asyncio.to_thread(bob.expect, "^connected to alice")
        bob.type("\x1b[200~first line\nsecond line\x1b[201~" + ENTER)  # a terminal's bracketed paste
        await alice.wait_for_message(lambda text: text == "second line")
        assert [event.text for event in so_far(alice, peer.ChatMessage)] == ["first line", "second line"]


# Without a terminal: lines read from a pipe or a file, no prompt

TOO_LONG = "x" * (100 * 1024)


async def test_a_piped_line_over_64_kib_is_dropped_whole_and_the_next_goes(server, processes):
    robot = processes.peer("--room", "long", "--server", server.url, *CLI, name="robot")
    async with join("long", server, "alice") as alice:
        await alice.wait_for_peer()
        await asyncio.to_thread(robot.expect, "^connected to alice")
        robot.send(TOO_LONG)
        robot.send("after it")
        await alice.wait_for_message(lambda text: text == "after it")
        assert [event.text for event in so_far(alice, peer.ChatMessage)] == ["after it"], "a piece of it was sent"
        robot.expect(r"^\(a line over 64 KiB was dropped, not sent\)$")


async def test_a_file_as_stdin_is_read_to_its_end_and_the_peer_stays(server, processes, tmp_path):
    """``python -m peer ... < lines.txt``: a file cannot be waited on like a pipe, yet is read."""
    script = tmp_path / "lines.txt"
    script.write_text(f"{TOO_LONG}\nhello\nno newline at the end")
    with script.open() as stdin:
        robot = processes.peer("--room", "script", "--server", server.url, *SENDING_VIDEO, name="robot", stdin=stdin)
    await asyncio.to_thread(robot.expect, r"^\(nobody is connected yet; message not sent\)$", times=2)
    robot.expect(r"^\(a line over 64 KiB was dropped, not sent\)$")
    async with join("script", server, "alice") as alice:
        await still_in_the_call(alice, robot)
        await leaves_on_sigint(alice, robot, "script")
