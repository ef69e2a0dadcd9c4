"""What our peers say to each other on the data channels, read and written as plain data. No I/O.

Two channels carry messages of ours (``chat`` carries plain text, read as it comes):

- ``control``: ``ping`` / ``pong`` (the heartbeat), ``bye``, ``data`` (the API's ``send_json``)
  and ``moved`` (a new member id after a rejoin); read by ``parse_control``, written by
  ``encode_control``;
- ``files``: ``start``, ``accept``, ``end``, ``received`` and ``failed`` around the binary
  chunks of a file; read by ``parse_files`` as typed values, written by ``encode_files``.

Everything on a channel comes from another peer and is hostile until checked: a message is
read only as a JSON object of a known ``type`` with fields of the right types, within
``MAX_MESSAGE_BYTES``. Anything else is a ``BadMessage`` (``BadControlMessage`` or
``BadFilesMessage``) for the call to log and drop: an exception escaping a channel handler
would end the connection inside aiortc. The call (``peer.call``) and the file transfer
(``peer.transfer``) do the I/O. The wire format is in docs/protocol.md ("What our peer adds
on top").
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Optional, TypeGuard, Union

from signaling.protocol import MAX_ID_CHARS

MAX_MESSAGE_BYTES = 64 * 1024
"""The largest text message read on either channel, in UTF-8: the 64 KiB every WebRTC stack
accepts (RFC 8841 assumes it of a peer that announces no ``a=max-message-size``); our peers'
text messages are far smaller (file chunks are binary, up to ``transfer.CHUNK``), so nothing
honest is larger."""
MAX_REASON_CHARS = 200
"""A ``failed`` message's reason is cut to this: it is shown to people."""


class BadMessage(ValueError):
    """A data channel message that breaks the rules; the text says which, for the log."""


# The control channel

PING, PONG, BYE, DATA, MOVED = "ping", "pong", "bye", "data", "moved"
CONTROL_TYPES = (PING, PONG, BYE, DATA, MOVED)


class BadControlMessage(BadMessage):
    """A control message that breaks the rules."""


@dataclass(frozen=True)
class ControlMessage:
    type: str
    id: Optional[str] = None
    """``moved``: the sender's new member id."""
    data: Any = None
    """``data``: the JSON value sent with the API's ``send_json``."""


def parse_control(message: Union[str, bytes]) -> ControlMessage:
    """Check one message from the control channel; BadControlMessage says what is wrong with it."""
    value = _json_object(message, BadControlMessage)
    kind = value.get("type")
    if not isinstance(kind, str) or kind not in CONTROL_TYPES:
        raise BadControlMessage(f"unknown type {kind!r:.40}")
    if kind == MOVED:
        member_id = value.get("id")
        if not isinstance(member_id, str) or not 0 < len(member_id) <= MAX_ID_CHARS or not member_id.isprintable():
            raise BadControlMessage(f"moved without a member id of 1 to {MAX_ID_CHARS} printable characters")
        return ControlMessage(MOVED, id=member_id)
    return ControlMessage(kind, data=value.get("data") if kind == DATA else None)


def encode_control(kind: str, **fields: Any) -> str:
    """A control message to send. ValueError if it is larger than the other side reads, or
    ``data`` is not JSON (NaN and infinities are not)."""
    text = json.dumps({"type": kind, **fields}, allow_nan=False)
    if len(text.encode()) > MAX_MESSAGE_BYTES:
        raise ValueError(f"a {kind} message of {len(text.encode())} bytes is larger than the "
                         f"{MAX_MESSAGE_BYTES} bytes a peer reads")
    return text


# The files channel

class BadFilesMessage(BadMessage):
    """A files-channel message that is none of ours: logged and dropped; the call goes on."""


@dataclass(frozen=True)
class Start:
    """The sender offers a file; ``name`` as sent (not yet made safe), ``size`` in bytes."""

    TYPE: ClassVar[str] = "start"
    name: str
    size: int


@dataclass(frozen=True)
class Accept:
    """The receiver takes the file offered: the sender may stream it."""

    TYPE: ClassVar[str] = "accept"


@dataclass(frozen=True)
class End:
    """All chunks are sent; the receiver checks them against ``sha256``."""

    TYPE: ClassVar[str] = "end"
    sha256: str


@dataclass(frozen=True)
class Received:
    """The file is checked and saved."""

    TYPE: ClassVar[str] = "received"
    sha256: str


@dataclass(frozen=True)
class Failed:
    """The receiver refused the file, or it did not arrive whole."""

    TYPE: ClassVar[str] = "failed"
    reason: str


FilesMessage = Union[Start, Accept, End, Received, Failed]
Reply = Union[Accept, Received, Failed]
"""What a receiver answers, read by the sender."""

_SHA256 = re.compile(r"[0-9a-f]{64}")


def encode_files(message: FilesMessage) -> str:
    """A files-channel message to send, as JSON text."""
    return json.dumps({"type": message.TYPE, **asdict(message)})


def parse_files(text: Union[str, bytes]) -> FilesMessage:
    """A text message of the files channel as a typed value; BadFilesMessage says what is
    wrong with it. (Binary messages there are the chunks of a file, not read here.)"""
    value = _json_object(text, BadFilesMessage)
    kind = value.get("type")
    if kind == Start.TYPE:
        name, size = value.get("name"), value.get("size")
        if not isinstance(name, str):
            raise BadFilesMessage("a start without a name")
        if not is_count(size):
            raise BadFilesMessage("a start whose size is no whole number of bytes")
        return Start(name, size)
    if kind in (End.TYPE, Received.TYPE):
        sha256 = value.get("sha256")
        if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
            raise BadFilesMessage(f"an {kind} without a sha256")
        return End(sha256) if kind == End.TYPE else Received(sha256)
    if kind == Accept.TYPE:
        return Accept()
    if kind == Failed.TYPE:
        reason = value.get("reason")
        return Failed(reason[:MAX_REASON_CHARS] if isinstance(reason, str) else "no reason given")
    raise BadFilesMessage("an unknown type" if isinstance(kind, str) else "no type")


def is_count(value: Any) -> TypeGuard[int]:
    """A whole number >= 0: not a bool (True is an int), not a float (1e400 is inf)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


# Both

def _json_object(message: Union[str, bytes], error: type[BadMessage]) -> dict[str, Any]:
    """``message`` read as a JSON object, or ``error`` saying what it is instead: the first check
    of every message of ours. A text message of at most MAX_MESSAGE_BYTES only; NaN and
    infinities are refused, as they are not JSON."""
    if not isinstance(message, str):
        raise error("binary message (this channel carries JSON text)")
    if len(message) > MAX_MESSAGE_BYTES or len(message.encode("utf-8", "surrogatepass")) > MAX_MESSAGE_BYTES:
        raise error(f"larger than {MAX_MESSAGE_BYTES} bytes")
    try:
        value = json.loads(message, parse_constant=_no_constant)
    except (ValueError, RecursionError) as failure:  # RecursionError: nested too deep
        raise error(f"not JSON ({type(failure).__name__})") from None
    if not isinstance(value, dict):
        raise error(f"a JSON {type(value).__name__}, not an object")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
