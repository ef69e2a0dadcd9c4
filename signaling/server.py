"""The Socket.IO signaling server: python-socketio on aiohttp, the adapter around the relay.

The wire format is ``signaling.protocol``'s, the relay rules (who may join, who receives
what) are ``signaling.relay``'s, and the room state is a ``signaling.store``; this module
serves HTTP, keeps the limits on clients, hands each Socket.IO event to the relay and
applies what comes out (events sent, the acknowledgement).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Optional, Sequence, Union

import ifaddr
from aiohttp import web

from . import protocol
from .fastpath import OWN, DirectManager
from .limits import ConnectionGate, GuardedSocketIO, JoinRate, Limits, Refusals, handler_args, request_address
from .protocol import Member, ProtocolError
from .relay import Outcome, Relay
from .rooms import Rooms
from .store import MemoryStore, RoomStore, StoreUnavailable
from .turn import TurnGrant

if TYPE_CHECKING:
    from .cluster import Node

logger = logging.getLogger("signaling")

WEB_ROOT = Path(__file__).parent / "web"


@dataclass
class ServerConfig(Limits):
    """Everything the server can be told; ``python -m signaling`` fills it from flags and env.
    The limits on what one client may take are the fields of ``Limits``."""

    room_size: int = 2
    allowed_origins: Union[str, Sequence[str], None] = "*"
    """Browser origins that may connect: ``"*"`` any (without credentials), a list, or None
    for the page's own origin only (the server a peer hosts in-process)."""
    token_secret: Optional[str] = field(default=None, repr=False)
    turn: Optional[TurnGrant] = None
    """TURN servers with credentials of their own for every member that joins (``--turn-server``)."""
    redis: Optional[str] = field(default=None, repr=False)
    """A Redis URL: this server is one node of several sharing rooms there (``--redis``)."""
    node_name: str = field(default_factory=socket.gethostname)
    """This node's name, in the health check and among the nodes (``--node-name``)."""


class SignalingServer:
    """Rooms on a python-socketio ``AsyncServer``, served by aiohttp."""

    def __init__(self, config: Optional[ServerConfig] = None) -> None:
        self.config = config or ServerConfig()
        self.node: Optional[Node] = None
        """With ``config.redis``: this node's duties among the others (``signaling.cluster``)."""
        store: RoomStore
        if self.config.redis is None:
            store, manager = MemoryStore(Rooms(capacity=self.config.room_size)), DirectManager()
        else:
            store, manager = self._join_nodes(self.config.redis)
        self.relay = Relay(store, self.config.token_secret, turn=self.config.turn)
        refusals = Refusals()
        self._gate = ConnectionGate(self.config, refusals)
        self._join_rate = JoinRate(self.config.join_rate, self.config.join_burst)
        self.sio = GuardedSocketIO(
            self.config, refusals,
            async_mode="aiohttp",
            client_manager=manager,
            cors_allowed_origins=self.config.allowed_origins,
            # Credentials only for origins the operator named: with "*" python-engineio echoes
            # any Origin back, and with credentials any page could then act as its visitor.
            cors_credentials=_names_origins(self.config.allowed_origins),
            # Big enough for an SDP at protocol.MAX_SDP_BYTES, small enough to refuse floods.
            max_http_buffer_size=4 * protocol.MAX_SDP_BYTES,
        )
        self.app = web.Application(handler_args=handler_args(self.config, refusals))
        self.app.on_response_prepare.append(_security_headers)
        self.sio.attach(self.app)
        self.app.router.add_get("/healthz", self._healthz)
        if (WEB_ROOT / "index.html").exists():
            self.app.router.add_get("/", self._index)
            self.app.router.add_static("/web/", WEB_ROOT)
        self._runner: Optional[web.AppRunner] = None
        self._stopping = False
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)
        self.sio.on(protocol.JOIN, self._on_join)
        self.sio.on(protocol.LEAVE, self._on_leave)
        self.sio.on(protocol.MESSAGE, self._on_message)

    def _join_nodes(self, url: str) -> tuple[RoomStore, DirectManager]:
        """The Redis store and client manager of a node among several (imported only here:
        a server of one process needs neither Redis nor its client)."""
        from .cluster import Node, RedisManager
        from .redis_store import RedisStore
        store = RedisStore(url, self.config.node_name, self.config.room_size)
        manager = RedisManager(url)
        self.node = Node(store, manager, self._departed, self._drop)
        return store, manager

    async def start(self, host: str = "127.0.0.1", port: int = 8080,
                    ssl_context: Optional[ssl.SSLContext] = None) -> int:
        """Listen on ``host:port`` (port 0 picks a free one); return the port bound. A node of
        several first checks its Redis: ``StoreUnavailable`` when it does not answer."""
        if self.node is not None:
            await self.node.start()
            self.sio.manager_initialized = True  # now, not at the first client: others' events reach us
            self.sio.manager.initialize()
        # aiohttp waits this long for requests to end, then as long again once it cancelled them
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=self.config.shutdown_timeout / 4)
        await self._runner.setup()
        return await self._gate.listen(self._runner, host, port, ssl_context)

    async def stop(self) -> None:
        """Say goodbye to every client and stop listening. Nobody is told that anyone left
        the room: nobody did, the server went (peers rejoin when it is back)."""
        if self._runner is not None:
            self._stopping = True
            self._gate.close()
            await self._goodbye()
            await self._runner.cleanup()
            self._runner = None
            self._stopping = False
        if self.node is not None:
            await self.node.stop(self.config.shutdown_timeout / 4)

    async def _goodbye(self) -> None:
        """Disconnect every client, giving up on those that do not take it in time: a
        client that does not read must not hold the server up."""
        async def each() -> None:
            for sid in list(self.connections):
                await self.sio.disconnect(sid)

        try:
            await asyncio.wait_for(each(), self.config.shutdown_timeout / 2)
        except asyncio.TimeoutError:
            logger.warning("stopping: %d clients did not take their goodbye in time", len(self.connections))
        await self.sio.shutdown()

    @property
    def connections(self) -> set[str]:
        """The sids of the Socket.IO sessions open now."""
        return self.relay.connections

    def _check_join_rate(self, sid: str) -> None:
        address = request_address(self.sio.get_environ(sid) or {})
        if not self._join_rate.allow(address):
            raise ProtocolError(protocol.RATE_LIMITED, f"too many joins from your address; at most "
                                f"{self.config.join_rate:g} a second after {self.config.join_burst}")

    # HTTP

    async def _healthz(self, request: web.Request) -> web.Response:
        """200 and the counts (rooms and members of the whole service, this node's
        connections); 503 while the room store cannot answer, so a balancer sends no one here."""
        health: dict[str, Any] = {"status": "ok", "node": self.config.node_name,
                                  "redis": "none" if self.node is None else "up"}
        try:
            if self.node is not None and not self.node.store.healthy:
                raise StoreUnavailable()
            health.update(rooms=await self.relay.store.count(), members=await self.relay.store.member_count())
        except StoreUnavailable:
            health.update(status="unavailable", redis="down", connections=len(self.connections))
            return web.json_response(health, status=503)
        health["connections"] = len(self.connections)
        return web.json_response(health)

    async def _index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(WEB_ROOT / "index.html")

    # Socket.IO events

    async def _on_connect(self, sid: str, *environ_and_auth: Any) -> None:
        # *args: a client can also emit an event named "connect", with any arguments.
        self.relay.connect(sid)
        logger.debug("connect %s", sid)

    async def _on_disconnect(self, sid: str, *reason: Any) -> None:
        if self.sio.manager.is_connected(sid, "/"):
            # python-socketio also calls this for an *event* named "disconnect" (with any
            # arguments) sent by a client that is still connected; on a real disconnect the
            # sid is already marked as leaving.
            return
        try:
            # A node of several that stops tells the rooms: their members on other nodes stay.
            announce = not self._stopping or self.node is not None
            await self._apply(await self.relay.disconnect(sid, announce=announce))
        except StoreUnavailable:  # this node forgot it; Redis does when back (``Node``)
            logger.debug("disconnect %s while the room store is gone", sid)
        logger.debug("disconnect %s", sid)

    async def _on_join(self, sid: str, *args: Any) -> dict[str, Any]:
        try:
            self._check_join_rate(sid)
        except ProtocolError as error:
            return await self._apply(self.relay.refuse(sid, protocol.JOIN, error))
        manager: DirectManager = self.sio.manager
        async with manager.holding(sid):  # a later joiner's presence comes after our own head count
            own = OWN.set(sid)
            try:
                return await self._handle(sid, protocol.JOIN, self.relay.join(sid, args[0] if args else None))
            finally:
                OWN.reset(own)

    async def _on_leave(self, sid: str, *args: Any) -> dict[str, Any]:
        return await self._handle(sid, protocol.LEAVE, self.relay.leave(sid))

    async def _on_message(self, sid: str, *args: Any) -> dict[str, Any]:
        return await self._handle(sid, protocol.MESSAGE, self.relay.message(sid, args[0] if args else None))

    async def _handle(self, sid: str, event: str, outcome: Awaitable[Outcome]) -> dict[str, Any]:
        """Apply the relay's outcome; an event the room store could not answer is refused."""
        try:
            decided = await outcome
        except StoreUnavailable as error:
            decided = self.relay.refuse(sid, event, error)
        return await self._apply(decided)

    async def _departed(self, departures: list[tuple[str, Member]]) -> None:
        """Members the store took out of their rooms (their node died): the rooms hear it."""
        for room, member in departures:
            await self._apply(await self.relay.departed(room, member))

    async def _drop(self, sids: list[str]) -> None:
        for sid in sids:
            await self.sio.disconnect(sid)

    async def _apply(self, outcome: Outcome) -> dict[str, Any]:
        """Send the events the relay decided, in its order; return the acknowledgement."""
        for emit in outcome.emits:
            await self.sio.emit(emit.event, emit.payload, to=emit.to[0] if len(emit.to) == 1 else list(emit.to))
        return outcome.ack


SECURITY_HEADERS = {
    # The page loads its scripts and style from /web/, talks only to this server (websocket
    # and polling), shows camera streams (srcObject needs no source) and a data: favicon.
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every response (the page, /web/ files, Socket.IO, errors) just before it is sent."""
    response.headers.update(SECURITY_HEADERS)


def _names_origins(origins: Union[str, Sequence[str], None]) -> bool:
    """True for an explicit list of origins; False for any ("*", also inside a list) or same-origin."""
    if origins is None or origins == "*":
        return False
    return "*" not in ([origins] if isinstance(origins, str) else origins)


def advertised_urls(host: str, port: int, scheme: str = "http") -> list[str]:
    """The URLs other machines can use to reach a server listening on ``host``."""
    if host not in ("0.0.0.0", "", "::"):
        return [f"{scheme}://{host}:{port}"]
    addresses = [
        ip.ip for adapter in ifaddr.get_adapters() for ip in adapter.ips
        if isinstance(ip.ip, str) and not ip.ip.startswith("127.")
    ]
    return [f"{scheme}://{address}:{port}" for address in addresses] or [f"{scheme}://127.0.0.1:{port}"]
