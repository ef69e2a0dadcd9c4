"""The person at the terminal: the lines they type, the lines the peer says, files' progress.

At a terminal (stdin and stdout both one, not TERM=dumb) lines are typed at a prompt-toolkit prompt. What
the peer says meanwhile (chat from others, joins, questions, logs) is printed above the line
being typed, which stays whole where it is, and files under way are shown below it, in the
prompt's bottom toolbar, redrawn in place. Ctrl-D on an empty line or Ctrl-C ends input there
(and so leaves the room). Elsewhere (stdin a pipe, a file or /dev/null; output to a log or a
pipe) lines are read as they come, without prompt-toolkit, and progress is a few plain lines,
one a quarter, rather than a bar redrawn with carriage returns into a log. Output that is not
the terminal typed on gets no prompt either: it would be drawn into the log, and lines going
there cannot break what is typed (the kernel's line editing serves, Ctrl-D still leaves).

Progress is measured by tqdm: its smoothed rate, time left and sizes. Its own drawing is not
used (``Meter.display`` is its documented hook): it writes carriage returns to a stream, which
would break the line being typed and fill a log. rich's live display takes over the cursor
the same way, and prompt-toolkit's progress bar is an application of its own that cannot run
beside the prompt; its toolbar can show tqdm's line instead.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import stat
import sys
from contextlib import ExitStack, contextmanager
from typing import IO, TYPE_CHECKING, Any, Callable, Iterator, Optional

from tqdm import tqdm

if TYPE_CHECKING:
    from prompt_toolkit import PromptSession

# prompt-toolkit is imported where a prompt is drawn, never at import: a peer with no person at
# a terminal (a bot, a service, the cold start bench/cold_start.py times) never needs it.

from signaling.text import printable

logger = logging.getLogger("peer")

MAX_LINE_BYTES = 64 * 1024
"""The longest line sent as chat: what a peer reads of one message. A longer one is dropped
whole (and said), never cut into pieces that would go as lines of their own."""

CHUNK_BYTES = 4096
REDRAW_EVERY = 0.2
"""Seconds between two redraws of the toolbar, and the least time over which a rate is
measured: the sender queues chunks by bursts, which measured one by one give GB/s."""
PROMPT = "> "

RUNNING = "{desc}: [{bar:20}] {percentage:3.0f}% {n_fmt}B/{total_fmt}B, {rate_fmt}, {remaining} left"
DONE = "{desc}: [{bar:20}] {percentage:3.0f}% {n_fmt}B/{total_fmt}B in {elapsed}, {rate_fmt}"


def say(text: str) -> None:
    """Output for people, as opposed to logging. Names, chat lines, file names and reasons
    come from others: escaped, they cannot drive the terminal (title, screen, clipboard).
    While the prompt is up, stdout is prompt-toolkit's, which prints above the line being typed."""
    print(printable(text), flush=True)


def stdin_is_terminal() -> bool:
    """Whether a person types on stdin. A peer started by ``docker run`` without ``-i``, by
    systemd or from a script has stdin at /dev/null, a pipe or closed (``sys.stdin`` is then None)."""
    return sys.stdin is not None and sys.stdin.isatty()


def _stdout_is_terminal() -> bool:
    return sys.stdout is not None and sys.stdout.isatty()


def _can_prompt() -> bool:
    """A terminal that can draw the prompt: at TERM=dumb (Emacs' shell, some IDE consoles)
    prompt-toolkit's prompt has no toolbar (a file would show no progress) and prints lines
    arriving after the line being typed."""
    from prompt_toolkit.utils import is_dumb_terminal
    return _stdout_is_terminal() and not is_dumb_terminal()


class Meter(tqdm):
    """One file's progress as tqdm measures it; ``shown`` is called when tqdm would redraw
    (at most every ``REDRAW_EVERY`` seconds), and the owner of the screen draws ``line()``."""

    monitor_interval = 0  # tqdm draws nothing here, so it needs no monitor thread

    def __init__(self, what: str, size: int, shown: Callable[[], None]) -> None:
        self._shown = shown  # before tqdm's __init__, which draws once
        self.quarters_said = 0
        """Plain lines said so far: the first at a quarter, when the rate means something."""
        super().__init__(total=size, desc=what, unit="B", unit_scale=True, unit_divisor=1000, ascii=" #",
                         bar_format=RUNNING, file=io.StringIO(), mininterval=REDRAW_EVERY, miniters=1, leave=False)

    def display(self, msg: Optional[str] = None, pos: Optional[int] = None) -> bool:
        self._shown()
        return True

    def line(self, width: Optional[int] = None) -> str:
        """Done so far, the rate and the time left; the name is escaped (it comes from others),
        and cut to keep the line within ``width`` columns (a toolbar's end is out of view)."""
        text = printable(str(self))
        if width is None:
            return text
        from prompt_toolkit.utils import get_cwidth
        if get_cwidth(text) <= width:
            return text
        name = printable(self.desc)  # what the line begins with
        rest = text[len(name):]
        room = width - get_cwidth(rest) - 1
        kept = ""
        for char in name:
            room -= get_cwidth(char)
            if room < 0:
                break
            kept += char
        return kept + "…" + rest

    def final_line(self) -> str:
        """The size, the time it took and the average rate (not the last moment's)."""
        return printable(self.format_meter(**{**self.format_dict, "rate": None, "bar_format": DONE}))


class Terminal:
    """Lines typed (or piped) on stdin, and the progress of files. ``interactive`` says whether
    the end of input is a person's Ctrl-D (a leave) or the end of a pipe or /dev/null (no
    more chat, no leave)."""

    def __init__(self) -> None:
        self.interactive = stdin_is_terminal()
        self._prompting = self.interactive and _can_prompt()
        self._session: Optional[PromptSession[str]] = None
        self._meters: dict[str, Meter] = {}

    async def read(self, take: Callable[[str], None]) -> None:
        """Call ``take`` with each line until the end of input: Ctrl-D or Ctrl-C at the
        prompt, the end of a pipe or file; at once for /dev/null or no stdin."""
        if self._prompting:
            await self._prompt(take)
        else:
            await self._read_stream(take)

    async def _prompt(self, take: Callable[[str], None]) -> None:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.patch_stdout import patch_stdout
        self._session = PromptSession(PROMPT)
        self._show_meters()
        stderr = sys.stderr
        try:
            with patch_stdout(), _logs_above_the_prompt(stderr):
                while True:
                    try:
                        # Signals stay ours (SIGINT leaves); an error elsewhere in the loop is
                        # logged, never a "press ENTER" of prompt-toolkit's.
                        text = await self._session.prompt_async(handle_sigint=False, set_exception_handler=False)
                    except (EOFError, KeyboardInterrupt):
                        return
                    for line in text.splitlines() or [""]:  # a paste may hold several; Enter alone is a line
                        # prompt-toolkit keeps bytes that are not UTF-8 (a Latin-1 terminal's é) as
                        # lone surrogates, which no encoder takes: back to those bytes, replaced as a pipe's.
                        _take_bounded(line.encode(errors="surrogateescape"), take)
        finally:
            self._session = None

    async def _read_stream(self, take: Callable[[str], None]) -> None:
        if sys.stdin is None:
            return
        try:
            fd = sys.stdin.fileno()
            regular = stat.S_ISREG(os.fstat(fd).st_mode)
        except (OSError, ValueError) as error:
            logger.debug("no stdin to read: %s", error)
            return
        lines = Lines(take)
        while True:
            try:
                chunk = await (asyncio.to_thread(os.read, fd, CHUNK_BYTES) if regular else _read_when_ready(fd))
            except OSError as error:  # e.g. nohup's stdin, opened for writing only
                logger.debug("stdin ended: %s", error)
                chunk = b""
            if not chunk:
                lines.end()
                return
            lines.feed(chunk)

    def progress(self, what: str, done: int, size: int) -> None:
        """``done`` bytes of ``size`` of the transfer ``what``: in the toolbar at the prompt,
        else a line a quarter; its final line once done."""
        meter = self._meters.get(what)
        if meter is None or done < meter.n:  # a new transfer of the same name
            self.progress_ended(what)
            meter = self._meters[what] = Meter(what, size, self._show_meters)
            self._show_meters()
        meter.update(done - meter.n)
        if done >= size:
            line = meter.final_line()
            self.progress_ended(what)
            say(line)
        elif not self._in_toolbar() and (quarter := done * 4 // size) > meter.quarters_said:
            meter.quarters_said = quarter
            say(meter.line())

    def progress_ended(self, what: str) -> None:
        """The transfer ``what`` is over (done, failed or abandoned): off the screen."""
        meter = self._meters.pop(what, None)
        if meter is not None:
            meter.close()
            self._show_meters()

    def _in_toolbar(self) -> bool:
        """Whether the prompt's toolbar shows: prompt-toolkit draws it only once the terminal
        has said where its cursor is, which some never do (PROMPT_TOOLKIT_NO_CPR=1 for them)."""
        if self._session is None:
            return False
        from prompt_toolkit.renderer import CPR_Support
        return self._session.app.renderer.cpr_support != CPR_Support.NOT_SUPPORTED

    def _show_meters(self) -> None:
        if self._session is None:
            return
        self._session.bottom_toolbar = self._toolbar if self._meters else None
        self._session.app.invalidate()  # nothing while no prompt is up

    def _toolbar(self) -> str:
        from prompt_toolkit.application import get_app
        width = get_app().output.get_size().columns  # called as the prompt draws it
        return "\n".join(meter.line(width) for meter in self._meters.values())


class Lines:
    """Bytes read into lines for ``take``: a line over MAX_LINE_BYTES is dropped whole."""

    def __init__(self, take: Callable[[str], None]) -> None:
        self._take = take
        self._pending = bytearray()
        self._dropping = False

    def feed(self, data: bytes) -> None:
        self._pending += data
        while (end := self._pending.find(b"\n")) >= 0:
            line = bytes(self._pending[:end])
            del self._pending[:end + 1]
            if self._dropping:  # the end of a line already dropped
                self._dropping = False
            else:
                _take_bounded(line, self._take)
        if len(self._pending) > MAX_LINE_BYTES:
            if not self._dropping:
                _too_long()
            self._dropping = True
            self._pending.clear()

    def end(self) -> None:
        """The end of input: a last line without its newline still counts."""
        if self._pending and not self._dropping:
            _take_bounded(bytes(self._pending), self._take)
        self._pending.clear()


def _take_bounded(line: bytes, take: Callable[[str], None]) -> None:
    text = line.decode("utf-8", errors="replace").removesuffix("\r")
    if len(text.encode()) > MAX_LINE_BYTES:  # as sent: a byte that is not UTF-8 goes as three
        _too_long()
        return
    take(text)


def _too_long() -> None:
    say(f"(a line over {MAX_LINE_BYTES // 1024} KiB was dropped, not sent)")


async def _read_when_ready(fd: int) -> bytes:
    """What a pipe, terminal or socket holds once it holds something: the loop waits, never a
    thread (which a pipe left open would keep from ending), and the descriptor stays blocking
    (O_NONBLOCK would reach the stdout that shares a terminal's open file)."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    def readable() -> None:  # called again and again until removed
        if not ready.done():
            ready.set_result(None)

    try:
        loop.add_reader(fd, readable)
    except PermissionError:  # no polling for it (a device without poll): it does not block long
        return await asyncio.to_thread(os.read, fd, CHUNK_BYTES)
    try:
        await ready
    finally:
        loop.remove_reader(fd)
    return os.read(fd, CHUNK_BYTES)


@contextmanager
def _logs_above_the_prompt(stderr: Optional[IO[str]]) -> Iterator[None]:
    """Log lines to stderr go through prompt-toolkit's stderr too, above the line being typed:
    logging's handlers keep the stream they were made with. A stderr that is no terminal
    (``2>peer.log``) keeps them: patch_stdout would send it to the screen."""
    if stderr is None or not stderr.isatty():
        sys.stderr = stderr  # patch_stdout puts back what it found as it ends
        yield
        return
    handlers = [handler for handler in logging.getLogger().handlers
                if isinstance(handler, logging.StreamHandler) and handler.stream is sys.__stderr__]
    with ExitStack() as stack:
        for handler in handlers:
            previous: Any = handler.setStream(sys.stderr)
            stack.callback(handler.setStream, previous)
        yield
