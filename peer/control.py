"""The ``control`` data channel's messages, read and written as plain data. No I/O.

Everything on the channel comes from another peer and is hostile until checked: a message
is accepted only as a JSON object of a known ``type`` with fields of the right types, within
``MAX_MESSAGE_BYTES``. Anything else is a ``BadControlMessage`` for the call to log and drop
(an exception escaping a channel handler would end the connection inside aiortc).
The wire format is in docs/protocol.md ("What our peer adds on top").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional, Union

PING, PONG, BYE, DATA, MOVED = "ping", "pong", "bye", "data", "moved"
TYPES = (PING, PONG, BYE, DATA, MOVED)

MAX_MESSAGE_BYTES = 64 * 1024
"""The largest message read, in UTF-8: aiortc announces ``a=max-message-size:65536`` and
refuses to send more to a peer of its kind, so nothing honest is larger."""
MAX_ID_CHARS = 64
"""A member id in ``moved``; the signaling server's ids are 20 characters, its ``to`` at most 64."""


class BadControlMessage(ValueError):
    """A control message that breaks the rules; the text says which, for the log."""


@dataclass(frozen=True)
class ControlMessage:
    type: str
    id: Optional[str] = None
    """``moved``: the sender's new member id."""
    data: Any = None
    """``data``: the JSON value sent with the API's ``send_json``."""


def parse(message: Union[str, bytes]) -> ControlMessage:
    """Check one message from the channel; BadControlMessage says what is wrong with it."""
    if not isinstance(message, str):
        raise BadControlMessage("binary message (control carries JSON text)")
    if len(message) > MAX_MESSAGE_BYTES or len(message.encode("utf-8", "surrogatepass")) > MAX_MESSAGE_BYTES:
        raise BadControlMessage(f"larger than {MAX_MESSAGE_BYTES} bytes")
    value = json_object(message, BadControlMessage)
    kind = value.get("type")
    if not isinstance(kind, str) or kind not in TYPES:
        raise BadControlMessage(f"unknown type {kind!r:.40}")
    if kind == MOVED:
        member_id = value.get("id")
        if not isinstance(member_id, str) or not 0 < len(member_id) <= MAX_ID_CHARS or not member_id.isprintable():
            raise BadControlMessage(f"moved without a member id of 1 to {MAX_ID_CHARS} printable characters")
        return ControlMessage(MOVED, id=member_id)
    return ControlMessage(kind, data=value.get("data") if kind == DATA else None)


def encode(kind: str, **fields: Any) -> str:
    """A message to send. ValueError if it is larger than the other side reads, or ``data``
    is not JSON (NaN and infinities are not)."""
    text = json.dumps({"type": kind, **fields}, allow_nan=False)
    if len(text.encode()) > MAX_MESSAGE_BYTES:
        raise ValueError(f"a {kind} message of {len(text.encode())} bytes is larger than the "
                         f"{MAX_MESSAGE_BYTES} bytes a peer reads")
    return text


def json_object(text: str, error: type[ValueError]) -> dict[str, Any]:
    """``text`` read as a JSON object, or ``error`` saying what it is instead. The first check
    of every JSON message from a peer (the files channel's too); NaN and infinities are
    refused, as they are not JSON."""
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as failure:  # RecursionError: nested too deep
        raise error(f"not JSON ({type(failure).__name__})") from None
    if not isinstance(value, dict):
        raise error(f"a JSON {type(value).__name__}, not an object")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
