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
    "PeerJoined", "PeerLeft", "Connected", "CallEnded", "Retrying", "Interrupted", "Resumed", "ChatMessage",
    "DataMessage", "FileReceived", "FileFailed", "FileProgress", "TrackReceived", "SignalingLost", "Rejoined",
    "Event", "Moved", "CallEvent", "NoPath",
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
    path: str = "unknown"
    """"direct" (host candidates), "through NAT" (server or peer reflexive), "relayed" (TURN),
    or "unknown": the ICE candidate pair the connection uses (see ``CallStats.path``)."""


CANDIDATE_TYPES = {"host": "host", "srflx": "STUN", "prflx": "peer reflexive", "relay": "TURN relay"}
"""ICE candidate types in the order of ``NoPath``'s fields, and their names for people."""


@dataclass(frozen=True)
class NoPath:
    """ICE checked every pair of candidates and none answered: no network path to the member.

    ``ours`` and ``theirs`` are the types of the candidates each side offered (``"host"``,
    ``"srflx"``: found with STUN, ``"prflx"``: learned from the other side's checks,
    ``"relay"``: a TURN relay), ``pairs`` how many pairs were checked. Which hint fits follows
    from them: no relay on either side and both behind NATs is the case a TURN server solves;
    a relay that was there and carried nothing is the TURN server's doing. ``lost``: the call
    was connected before (this was one of its new connections), so the path it had is gone."""

    ours: tuple[str, ...]
    theirs: tuple[str, ...]
    pairs: int
    lost: bool = False

    @property
    def hint(self) -> str:
        if self.lost:
            return "the path the call had is gone: the network between you is down or changed"
        if "relay" in self.ours or "relay" in self.theirs:
            whose = "our" if "relay" not in self.theirs else "their" if "relay" not in self.ours else "the"
            return f"{whose} TURN relay did not carry it; check the TURN server"
        if "srflx" in self.ours and "srflx" in self.theirs:
            return "you are both behind NATs that need a TURN server; see --turn"
        return "a NAT or firewall is in the way, which a TURN server gets through; see --turn"

    @property
    def tried(self) -> str:
        """What was tried: ``"2 candidate pairs tried (ours: host, STUN; theirs: host, STUN)"``."""
        def names(types: tuple[str, ...]) -> str:
            return ", ".join(CANDIDATE_TYPES.get(kind, kind) for kind in types) or "none"
        pairs = f"{self.pairs} candidate pair{'s' * (self.pairs != 1)}"
        return f"{pairs} tried (ours: {names(self.ours)}; theirs: {names(self.theirs)})"

    def message(self, name: str) -> str:
        """The line for people: ``could not reach bob: no network path (hint); N candidate pairs tried (...)``."""
        return f"could not reach {name}: no network path ({self.hint}); {self.tried}"


@dataclass(frozen=True)
class CallEnded:
    member: Member
    reason: str
    no_path: Optional[NoPath] = None
    """Set when the call ended for want of a network path (its last try found none)."""


@dataclass(frozen=True)
class Retrying:
    """The connection to ``member`` broke (``reason``), or never came up; a new one is on its
    way: try ``tries`` of ``limit``."""

    member: Member
    reason: str
    tries: int
    limit: Optional[int] = None
    """How many tries the room makes (``join(retries=...)``); None where not said."""
    no_path: Optional[NoPath] = None
    """Set when ICE found no network path (the connection never came up): what was tried."""


@dataclass(frozen=True)
class Interrupted:
    """Nothing heard from ``member`` for ``silent_for`` seconds: its link may be down for a
    moment. The call is kept: ``Resumed`` when it is heard again, ``Retrying`` (a new
    connection) if it stays silent ``peer.LOST_AFTER`` seconds (15)."""

    member: Member
    silent_for: float


@dataclass(frozen=True)
class Resumed:
    """``member`` is heard again after ``Interrupted``: the call goes on as it was."""

    member: Member


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


Event = Union[PeerJoined, PeerLeft, Connected, CallEnded, Retrying, Interrupted, Resumed, ChatMessage,
              DataMessage, FileReceived, FileFailed, FileProgress, TrackReceived, SignalingLost, Rejoined]



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
