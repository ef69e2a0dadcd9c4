"""The native Python WebRTC peer: join a room, call everyone in it, exchange media, chat and files.

``python -m peer --room demo`` is the terminal front end; ``peer.join()`` is the API for bots
and test scripts (see docs/api.md).
"""

from .api import (CallEnded, ChatMessage, Connected, DataMessage, Event, FileFailed, FileOffer, FileProgress,
                  FileReceived, Member, PeerJoined, PeerLeft, Recorder, Rejoined, Retrying, Room, SignalingLost,
                  TrackReceived, join)
from .errors import (DisplayError, JoinRefused, MediaError, NothingToRecord, PeerError, RoomClosed, SignalingUnreachable,
                     TransferError, WaitTimeout)
from .media.frames import FrameSource

__all__ = [
    "join", "Room", "FrameSource", "Member", "Event", "PeerJoined", "PeerLeft", "Connected", "CallEnded",
    "Retrying", "ChatMessage", "DataMessage", "FileReceived", "FileFailed", "FileProgress", "FileOffer",
    "TrackReceived", "SignalingLost", "Rejoined", "Recorder",
    "PeerError", "SignalingUnreachable", "JoinRefused", "MediaError", "DisplayError", "TransferError",
    "WaitTimeout", "RoomClosed", "NothingToRecord",
]
