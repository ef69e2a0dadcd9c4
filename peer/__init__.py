"""The native Python WebRTC peer: join a room, call everyone in it, exchange media, chat and files.

``python -m peer --room demo`` is the terminal front end; ``peer.join()`` is the API for bots
and test scripts (see docs/api.md).
"""

from .api import (AudioFrame, CallEnded, ChatMessage, Connected, DataMessage, Event, FileFailed, FileOffer,
                  FileProgress, FileReceived, Interrupted, Member, PeerJoined, PeerLeft, Recorder, Rejoined, Resumed,
                  Retrying, Room, SignalingLost, NoPath, Speaker, TrackReceived, join)
from .errors import (DisplayError, JoinRefused, MediaError, NothingToRecord, PeerError, RoomClosed, SignalingUnreachable,
                     TransferError, WaitTimeout)
from .api import DEFAULT_SERVER
from .call import LOST_AFTER, MAX_TRIES
from .ice import IceConfigError, IceSettings
from .media.audio_source import AudioSource
from .media.devices import Device, list_devices
from .media.codecs import CODECS as VIDEO_CODECS
from .media.codecs import parse_bitrate
from .media.frames import FrameSource
from .media.sources import LocalMedia, check_fps, parse_video_size
from .memory import return_big_buffers
from .stats import CallStats
from .transfer import ASK_TIMEOUT, DEFAULT_MAX_PER_PEER, DEFAULT_MAX_TOTAL, human_size, parse_size

__all__ = [
    "join", "Room", "FrameSource", "Member", "Event", "PeerJoined", "PeerLeft", "Connected", "CallEnded",
    "Retrying", "Interrupted", "Resumed", "ChatMessage", "DataMessage", "FileReceived", "FileFailed", "FileProgress", "FileOffer",
    "TrackReceived", "SignalingLost", "Rejoined", "Recorder", "AudioFrame", "Speaker", "CallStats", "NoPath",
    "PeerError", "SignalingUnreachable", "JoinRefused", "MediaError", "DisplayError", "TransferError",
    "WaitTimeout", "RoomClosed", "NothingToRecord",
    "DEFAULT_SERVER", "IceSettings", "IceConfigError", "LocalMedia", "MAX_TRIES", "LOST_AFTER", "ASK_TIMEOUT", "DEFAULT_MAX_PER_PEER",
    "DEFAULT_MAX_TOTAL", "parse_size", "human_size", "Device", "list_devices", "AudioSource", "VIDEO_CODECS", "parse_bitrate",
    "parse_video_size", "check_fps", "return_big_buffers",
]
