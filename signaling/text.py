"""Text from strangers made safe to show: on a terminal and in log lines.

Names, chat lines, file names and reasons come from other people's programs. Printed as
they are, an ESC sequence sets the terminal's title, clears the screen or writes the
clipboard (OSC 52), a ``\\r`` overwrites the line, a newline forges a log line, and a bidi
override shows text in another order than it was written. ``printable`` turns each such
character into a visible escape (``\\x1b``, ``\\n``, ``\\u202e``) and leaves everything
else alone, non-ASCII letters and emoji included. Backslashes stay as they are: an escape that a peer
typed looks like one we made, which deceives nobody about what the terminal did.

Both the signaling server and the peer import this module; neither prints or logs remote
text without it.
"""

from __future__ import annotations

import logging
import re
from typing import Union

_UNPRINTABLE = re.compile(
    "["
    "\x00-\x1f\x7f-\x9f"  # C0 controls, DEL, C1 controls (CSI is \x9b, NEL \x85)
    "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"  # bidi controls (Unicode Bidi_Control)
    "\u2028\u2029"  # line and paragraph separators
    "\ud800-\udfff"  # lone surrogates (JSON can carry them; printing one raises)
    "]"
)


def printable(text: str) -> str:
    """``text`` with every control, bidi control, line separator and lone surrogate shown
    as a Python-style escape; any other character is kept."""
    return _UNPRINTABLE.sub(_escape, text)


def is_printable(text: str) -> bool:
    """True when ``printable`` would change nothing."""
    return _UNPRINTABLE.search(text) is None


_SHORT = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(match: re.Match) -> str:
    char = match.group()
    code = ord(char)
    return _SHORT.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


class PrintableFormatter(logging.Formatter):
    """A log line per record, whatever its arguments hold: the line is escaped, and a
    traceback keeps its line breaks but loses its control characters."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return printable(super().formatMessage(record))

    def formatException(self, ei) -> str:
        return _lines(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _lines(super().formatStack(stack_info))


def _lines(text: str) -> str:
    return "\n".join(printable(line) for line in text.split("\n"))


LIBRARY_LOGGERS = ("engineio.server", "engineio.client", "socketio.server", "socketio.client")


def log_to_stderr(level: Union[int, str], fmt: str) -> None:
    """``logging.basicConfig`` with every line escaped by ``PrintableFormatter``.

    python-engineio and python-socketio give their loggers a handler of their own (which
    would print unescaped) when they find them without a level; giving them one here, the
    level they would choose, leaves their records to ours.
    """
    handler = logging.StreamHandler()
    handler.setFormatter(PrintableFormatter(fmt))
    logging.basicConfig(level=level, handlers=[handler])
    for name in LIBRARY_LOGGERS:
        library = logging.getLogger(name)
        if library.level == logging.NOTSET:
            library.setLevel(logging.ERROR)
