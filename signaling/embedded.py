"""The signaling server a peer hosts in its own process, when none answers where peers look first.

``python -m peer`` without ``--server`` tries ``http://localhost:DEFAULT_PORT``; when nothing
answers there it hosts a server here and tells the person the URL the other machine uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the server is imported when one is hosted: a peer that joins one elsewhere never needs it
    from .server import SignalingServer

DEFAULT_PORT = 8080
"""Where peers look for a signaling server unless told otherwise, and where one hosts its own."""


def embedded_server() -> SignalingServer:
    """The server a peer hosts in-process. It listens on every interface, since the other
    machine connects to it, but admits browser pages only from its own origin: a web page
    the user visits must not join rooms through it."""
    from .server import ServerConfig, SignalingServer
    return SignalingServer(ServerConfig(allowed_origins=None))


@dataclass(frozen=True)
class HostedServer:
    """An embedded server, started: where this process and the other machine reach it."""

    server: SignalingServer
    port: int

    @property
    def url(self) -> str:
        """The URL another machine connects to (the first address of this one that is not loopback)."""
        from .server import advertised_urls
        return advertised_urls("0.0.0.0", self.port)[0]

    @property
    def local_url(self) -> str:
        """The URL for this process: the loopback address, whatever the network does."""
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        await self.server.stop()


async def host_server(port: int = DEFAULT_PORT) -> HostedServer:
    """Start an embedded server on every interface at ``port`` (0: any free one). OSError
    when the port is taken: someone may have started hosting there a moment before."""
    server = embedded_server()
    try:
        return HostedServer(server, await server.start("0.0.0.0", port))
    except BaseException:
        await server.stop()  # what the attempt set up, before the port was refused
        raise
