"""The events of a room, one vocabulary from where they happen to ``Room.events()``.

Each is made once, where it happens (a call's connection, the call, the session), and passed
up unchanged: the session books what concerns it (a call ended, a member moved) and hands the
rest on; the ``Room`` stores and fans them out. ``Event`` is the public union, re-exported by
``peer.api`` and ``peer``; ``Moved`` is the one event that stays between a call and its
session.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

from aiortc import MediaStreamTrack

from signaling.protocol import Member

__all__ = [
    "PeerJoined", "PeerLeft", "Connected", "CallEnded", "Retrying", "ChatMessage", "DataMessage", "FileReceived",
    "FileFailed", "FileProgress", "TrackReceived", "SignalingLost", "Rejoined", "Event", "Moved", "CallEvent",
]


@dataclass(frozen=True)
class PeerJoined:
    member: Member


@dataclass(frozen=True)
class PeerLeft:
    member: Member


@dataclass(frozen=True)
class Connected:
    member: Member
    verification_code: Optional[str]


@dataclass(frozen=True)
class CallEnded:
    member: Member
    reason: str


@dataclass(frozen=True)
class Retrying:
    """The connection to ``member`` broke (``reason``); a new one is on its way."""

    member: Member
    reason: str
    tries: int


@dataclass(frozen=True)
class SignalingLost:
    """The signaling server went away; calls in progress go on while the room reconnects."""


@dataclass(frozen=True)
class Rejoined:
    """Back in the room after ``SignalingLost``."""


@dataclass(frozen=True)
class ChatMessage:
    sender: Member
    text: str


@dataclass(frozen=True)
class DataMessage:
    """A JSON value sent with ``send_json``."""

    sender: Member
    value: Any


@dataclass(frozen=True)
class FileReceived:
    sender: Member
    path: Path
    sha256: str


@dataclass(frozen=True)
class FileFailed:
    sender: Member
    name: str
    reason: str


@dataclass(frozen=True)
class FileProgress:
    sender: Member
    name: str
    done: int
    size: int


@dataclass(frozen=True)
class TrackReceived:
    sender: Member
    kind: str
    track: Optional[MediaStreamTrack] = field(default=None, compare=False, repr=False)
    """The track itself, for the room (``Room.frames`` reads it)."""


Event = Union[PeerJoined, PeerLeft, Connected, CallEnded, Retrying, ChatMessage, DataMessage,
              FileReceived, FileFailed, FileProgress, TrackReceived, SignalingLost, Rejoined]



@dataclass(frozen=True)
class Moved:
    """The member of a call says (``moved`` on the control channel) it rejoined the room under
    ``id``. Not an ``Event``: the session believes it only when the server's presence bears it
    out, and the call then goes on under the new id without a word."""

    member: Member
    id: str


CallEvent = Union[Event, Moved]
"""What a call reports to its session."""

Publish = Callable[[CallEvent], None]
