"""Socket.IO signaling server for WebRTC rooms, wire-compatible with the classic room-relay pattern.

The names below are imported when first used (PEP 562): a peer imports ``signaling.protocol``
for its messages and ``DEFAULT_PORT``, and pays for the server (aiohttp's web server, the
limits, the rooms: some 50 ms of a cold start) only when it hosts one.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["ServerConfig", "SignalingServer", "DEFAULT_PORT", "HostedServer", "embedded_server", "host_server"]

_MODULES = {"ServerConfig": ".server", "SignalingServer": ".server", "DEFAULT_PORT": ".embedded",
            "HostedServer": ".embedded", "embedded_server": ".embedded", "host_server": ".embedded"}

if TYPE_CHECKING:
    from .embedded import DEFAULT_PORT, HostedServer, embedded_server, host_server
    from .server import ServerConfig, SignalingServer


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULES[name], __name__), name)
    globals()[name] = value
    return value
