"""Errors a person can act on. Each carries one line that says what happened and what to do."""

from __future__ import annotations


class PeerError(Exception):
    """Base class: ``str(error)`` is the one-line message the CLI prints."""

    exit_code = 1


class SignalingUnreachable(PeerError):
    """Nothing answered at the signaling server's URL."""


class JoinRefused(PeerError):
    """The server refused ``join``: full room, bad token, bad room name."""

    exit_code = 2

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class MediaError(PeerError):
    """A camera, file or test source could not be opened."""


class DisplayError(PeerError):
    """No display to show the window on."""


class TransferError(PeerError):
    """A file transfer did not complete."""


class WaitTimeout(PeerError, TimeoutError):
    """A wait of the room (``wait_for_peer``, ``wait_for_frames``, ...) ran out of time; the
    message says what it waited for. Also a ``TimeoutError``."""


class RoomClosed(PeerError, ConnectionError):
    """What a wait of the room waited for can no longer come: the room closed, or the track
    ended. Also a ``ConnectionError``."""


class NothingToRecord(PeerError, ValueError):
    """``Room.record`` was asked for a member who sends no media. Also a ``ValueError``."""
