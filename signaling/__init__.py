"""Socket.IO signaling server for WebRTC rooms, wire-compatible with the classic room-relay pattern."""

from .embedded import DEFAULT_PORT, HostedServer, embedded_server, host_server
from .server import ServerConfig, SignalingServer

__all__ = ["ServerConfig", "SignalingServer", "DEFAULT_PORT", "HostedServer", "embedded_server", "host_server"]
