"""Socket.IO signaling server for WebRTC rooms, wire-compatible with the classic room-relay pattern."""

from .server import ServerConfig, SignalingServer

__all__ = ["ServerConfig", "SignalingServer"]
