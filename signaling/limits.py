"""What one client may take from the server: connections, sessions, memory, time, joins.

python-socketio, python-engineio and aiohttp each bound one thing (a packet's size, a
websocket frame) but not what a client can pile up across packets and connections: the
attachments a packet declares, the packets queued for a client that never reads, the
connections one address holds open, the time a connection may sit without a request.
The classes here add those bounds from outside the libraries (subclasses and a wrapping
protocol), so the relay rules in ``signaling.relay`` stay as they are. Every refusal is one
log line, never a traceback; repeated refusals of one address are logged at 1, 10, 100, ...
so a flood cannot fill the log either. The limits and their figures: ``docs/deploy.md``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import resource
import ssl
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, cast

import engineio
import socketio
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from engineio import packet as eio_packet
from engineio.async_drivers.aiohttp import WebSocket
from socketio import packet as sio_packet

from .fastpath import FastPacket, LeanSocket

logger = logging.getLogger("signaling")

SPARE_DESCRIPTORS = 64
"""File descriptors kept for everything but client connections (listening socket, logs,
the event loop's own), so the connection cap is reached before the descriptor limit."""

PACKET_OVERHEAD = 64
"""What a queued packet costs beyond its payload, so a flood of tiny packets counts too."""


@dataclass
class Limits:
    """What one client may take; ``ServerConfig`` carries these (docs/deploy.md has the
    reasons and the figures)."""

    max_connections: int = 2000
    """TCP connections open at once, and Socket.IO sessions, each counted overall."""
    max_per_address: int = 20
    """The same, from one client address (behind a proxy: the proxy's address)."""
    max_attachments: int = 16
    """Binary attachments one Socket.IO packet may declare (the protocol itself uses none)."""
    max_queue_bytes: int = 2 * 1024 * 1024
    """Bytes waiting for one client; past this the client is dropped, not buffered for."""
    handshake_timeout: float = 10.0
    """Seconds for a connection to send a request, and for a session to connect to Socket.IO."""
    idle_timeout: float = 20.0
    """Seconds a client may leave a ping unanswered, or what we send unread, before it is dropped."""
    join_rate: float = 30.0
    """Joins per second from one address, after a burst of ``join_burst``."""
    join_burst: int = 200
    shutdown_timeout: float = 3.0
    """Seconds ``stop()`` may take, whatever the clients do: half for their goodbyes, half
    for requests in progress to end before they are cut."""


class Refusals:
    """One log line per refused client, and no flood: an address refused the same way again
    and again is logged at its 1st, 10th, 100th, ... refusal, with the count."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def log(self, address: str, what: str) -> None:
        """Log ``what`` (happened to ``address``) unless it is one more of the same:
        the same text up to its first ':'."""
        key = f"{address} {what.split(':')[0]}"
        count = self._counts.get(key, 0) + 1
        if len(self._counts) > 10_000:  # a memory bound for the bookkeeping itself
            self._counts.clear()
        self._counts[key] = count
        if _power_of_ten(count):
            more = "" if count == 1 else f", the {count}th time"
            logger.warning("%s (%s%s)", what, address, more)


def _power_of_ten(count: int) -> bool:
    while count % 10 == 0:
        count //= 10
    return count == 1


class Counter:
    """Open things (connections, sessions) per address and overall, against two caps."""

    def __init__(self, total: int, per_address: int) -> None:
        self.total_cap = total
        self.per_address_cap = per_address
        self.total = 0
        self._by_address: dict[str, int] = {}

    def admit(self, address: str) -> Optional[str]:
        """Count one more for ``address``; or, over a cap, count nothing and say which."""
        if self.total >= self.total_cap:
            return f"server full ({self.total_cap} open)"
        held = self._by_address.get(address, 0)
        if held >= self.per_address_cap:
            return f"{held} open from this address (limit {self.per_address_cap})"
        self.total += 1
        self._by_address[address] = held + 1
        return None

    def release(self, address: str) -> None:
        self.total -= 1
        held = self._by_address.pop(address) - 1
        if held:
            self._by_address[address] = held


# TCP: connections per address and overall, clients that stop reading


REFUSED_RESPONSE = (b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain\r\n"
                    b"Content-Length: 21\r\n\r\ntoo many connections\n")


class GatedProtocol(asyncio.Protocol):
    """aiohttp's protocol for one TCP connection, behind a gate.

    Over a cap, the connection gets a one-line 503 and is closed before aiohttp sees it.
    Admitted, everything is handed to aiohttp's handler; besides, a connection whose peer
    has not read what we sent for ``stall_timeout`` seconds (the transport stays paused
    for writing) is aborted: a client that does not read is dropped, not buffered for.
    """

    def __init__(self, inner: asyncio.Protocol, gate: "ConnectionGate") -> None:
        self.inner = inner
        self.gate = gate
        self.address: Optional[str] = None
        self.transport: Optional[asyncio.Transport] = None
        self._stalled: Optional[asyncio.TimerHandle] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a stream protocol is given a stream transport
        address = _address(transport.get_extra_info("peername"))
        reason = self.gate.counter.admit(address)
        if reason is not None:
            self.gate.refusals.log(address, f"refused a connection: {reason}")
            self.transport.write(REFUSED_RESPONSE)
            self.transport.close()
            return
        self.address = address
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        if self.address is None:
            return
        self.gate.counter.release(self.address)
        self.address = None
        self._cancel_stall()
        self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.address is not None:
            self.inner.data_received(data)

    def eof_received(self) -> Optional[bool]:
        return self.inner.eof_received() if self.address is not None else None

    def pause_writing(self) -> None:
        self.inner.pause_writing()
        if self._stalled is None:
            self._stalled = asyncio.get_running_loop().call_later(self.gate.stall_timeout, self._drop_stalled)

    def resume_writing(self) -> None:
        self._cancel_stall()
        self.inner.resume_writing()

    def _cancel_stall(self) -> None:
        if self._stalled is not None:
            self._stalled.cancel()
            self._stalled = None

    def _drop_stalled(self) -> None:
        self._stalled = None
        if self.transport is not None and self.address is not None:
            self.gate.refusals.log(self.address, f"dropped a connection: read nothing for {self.gate.stall_timeout:g} s")
            self.transport.abort()


class ConnectionGate:
    """Listens like aiohttp's ``TCPSite``, with every connection going through ``GatedProtocol``."""

    def __init__(self, limits: Limits, refusals: Refusals) -> None:
        self.counter = Counter(limits.max_connections, limits.max_per_address)
        self.refusals = refusals
        self.stall_timeout = limits.idle_timeout
        self.handshake_timeout = limits.handshake_timeout
        self._listener: Optional[asyncio.AbstractServer] = None

    async def listen(self, runner: web.AppRunner, host: str, port: int,
                     ssl_context: Optional[ssl.SSLContext]) -> int:
        """Serve ``runner``'s application on ``host:port``; return the port bound."""
        allowed = descriptors_for(self.counter.total_cap) - SPARE_DESCRIPTORS
        self.counter.total_cap = max(1, min(self.counter.total_cap, allowed))
        handler_factory = runner.server
        assert handler_factory is not None, "runner.setup() first"
        self._listener = await asyncio.get_running_loop().create_server(
            lambda: GatedProtocol(handler_factory(), self), host, port, ssl=ssl_context, reuse_address=True,
            # the gate sees a TLS connection once its handshake is done: bound that too
            ssl_handshake_timeout=self.handshake_timeout if ssl_context else None)
        return self._listener.sockets[0].getsockname()[1]

    def close(self) -> None:
        """Accept no more connections (those open are aiohttp's to close)."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None


def descriptors_for(connections: int) -> int:
    """Raise this process's limit of open files to what ``connections`` need, as far as the
    hard limit allows; return the limit. Past it, accept() fails on every try and asyncio
    logs a traceback each time, while every client, bystanders too, is left waiting."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = connections + SPARE_DESCRIPTORS
    if soft != resource.RLIM_INFINITY and soft < need:
        soft = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if soft != resource.RLIM_INFINITY and soft < need:
        logger.warning("only %d open files allowed (ulimit -n): at most %d connections, not %d",
                       soft, soft - SPARE_DESCRIPTORS, connections)
        return soft
    return need


def _address(peername: Any) -> str:
    return client_address(str(peername[0])) if isinstance(peername, tuple) and peername else "unknown"


def client_address(address: str) -> str:
    """What the per-address limits count: the IPv4 address, or the /64 of an IPv6 one
    (one subscriber usually has a whole /64, so counting addresses would not bound them)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return address


def handler_args(limits: Limits, refusals: Refusals) -> dict[str, Any]:
    """aiohttp's own bounds: a connection with no request in progress (a fresh one that
    never sends a complete request head, or an idle keep-alive) is closed after the
    handshake timeout; aiohttp arms this timer when the connection opens. A request it
    cannot parse is logged by ``BadRequestLog``."""
    return {"keepalive_timeout": limits.handshake_timeout, "logger": BadRequestLog(refusals)}


class BadRequestLog(logging.LoggerAdapter):
    """aiohttp's request handler logger. aiohttp logs a request it cannot parse (a malformed
    or oversized header, too many headers) as an error with its traceback, a dozen lines for
    some bytes a client sends as often as it likes; here it is one refusal line instead."""

    def __init__(self, refusals: Refusals) -> None:
        super().__init__(logging.getLogger("aiohttp.server"), {})
        self._refusals = refusals

    def exception(self, msg: Any, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:
        if isinstance(exc_info, HttpProcessingError):
            address = str(args[0]) if args else "unknown address"
            self._refusals.log(address, f"refused a bad HTTP request: {exc_info.message}")
            return
        super().exception(msg, *args, exc_info=exc_info, **kwargs)


# Socket.IO and Engine.IO: attachments, outgoing queues, sessions, handshakes


class TooManyAttachments(ValueError):
    pass


class CappedPacket(FastPacket):
    """A Socket.IO packet that refuses to wait for more binary attachments than a cap, and
    an event or ack that is not a list (an event's starting with its name).

    The library accepts any count of up to ten digits and keeps every attachment that
    arrives until the count is reached: memory without end. It takes an event of any shape
    and fails on it later, with a traceback. ``max_attachments`` is set on a subclass made
    per server (``capped_packet_class``)."""

    max_attachments = 0

    def decode(self, encoded_packet: Any) -> int:
        count = super().decode(encoded_packet)
        if count and count > self.max_attachments:
            raise TooManyAttachments(f"{count} binary attachments declared (limit {self.max_attachments})")
        events = (sio_packet.EVENT, sio_packet.BINARY_EVENT)
        if self.packet_type in events and not (isinstance(self.data, list) and self.data
                                               and isinstance(self.data[0], str)):
            raise ValueError("an event must be a list that starts with its name")
        if self.packet_type in (sio_packet.ACK, sio_packet.BINARY_ACK) and not isinstance(self.data, list):
            raise ValueError("an ack must be a list")
        return count


def capped_packet_class(max_attachments: int) -> type[CappedPacket]:
    return type("CappedPacket", (CappedPacket,), {"max_attachments": max_attachments})


class ByteQueue(asyncio.Queue):
    """Engine.IO's outgoing queue of one client, counting the bytes it holds.

    Past ``cap`` bytes the client is not keeping up (or not reading at all): the packet is
    not queued and ``on_overflow`` is told once, to drop the client."""

    def __init__(self, cap: int, on_overflow: Callable[["ByteQueue"], None]) -> None:
        super().__init__()
        self.cap = cap
        self.bytes = 0
        self.overflowed = False
        self._on_overflow = on_overflow

    def put_nowait(self, item: Any) -> None:  # put() ends here too
        size = _packet_size(item)
        if item is not None and self.bytes + size > self.cap:
            if not self.overflowed:
                self.overflowed = True
                self._on_overflow(self)
            return
        super().put_nowait(item)
        self.bytes += size

    def get_nowait(self) -> Any:  # get() ends here too
        item = super().get_nowait()
        self.bytes -= _packet_size(item)
        return item


def _packet_size(item: Any) -> int:
    if item is None:
        return 0
    data = getattr(item, "data", None)
    return PACKET_OVERHEAD + (len(data) if isinstance(data, (str, bytes)) else 0)


def check_engineio_packet(data: Any) -> None:
    """Raise ValueError for what Engine.IO cannot decode (an empty or non-numeric packet,
    JSON nested too deep for the standard library). Text that starts with an ASCII digit
    and goes on with a digit or nothing (a Socket.IO packet, a pong) always decodes (its
    type; the rest is data, not JSON): no need to decode it twice."""
    if isinstance(data, str) and "0" <= data[:1] <= "9" and (len(data) == 1 or data[1].isnumeric()):
        return
    try:
        eio_packet.Packet(encoded_packet=data)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


class CheckedWebSocket(WebSocket):
    """python-engineio's aiohttp websocket, but a frame that is no Engine.IO packet ends the
    connection in one log line; the library's handler raises on it, and aiohttp logs the
    traceback."""

    async def wait(self) -> Any:
        data = await super().wait()
        try:
            check_engineio_packet(data)
        except ValueError as error:
            self.server.refusals.log(request_address(self.environ), f"dropped a websocket: bad packet ({error})")
            self.environ["aiohttp.request"].transport.abort()  # no closing handshake with it
            raise OSError("not an Engine.IO packet") from None
        return data

    async def send(self, message: Any) -> None:
        """The library's send, without asking at every message whether aiohttp's send
        methods are coroutines (in aiohttp 3 they are)."""
        if isinstance(message, bytes):
            await self._sock.send_bytes(message)
        else:
            await self._sock.send_str(message)


class CheckedSocket(LeanSocket):
    """python-engineio's session, but a long-polling POST it cannot decode drops the
    client in one log line (the library logs a traceback and keeps it), and one cut off
    midway logs nothing more."""

    async def handle_post_request(self, environ: dict) -> None:
        try:
            await super().handle_post_request(environ)
        except (ValueError, RecursionError) as error:  # RecursionError: JSON nested too deep
            self.server.drop(self.sid, f"bad packet ({str(error)[:100]})")
        except ConnectionError:
            pass  # the client went, or was cut off for sending too slowly (logged then)


class GuardedEngineIO(engineio.AsyncServer):
    """Engine.IO with a bounded queue per client, packets checked before the library
    chokes on them, and a disconnect that cannot hang."""

    def __init__(self, *args: Any, limits: Limits, refusals: Refusals, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._async: dict[str, Any] = {**self._async, "websocket": CheckedWebSocket}  # the driver's hook for its websocket class
        self.limits = limits
        self.refusals = refusals
        self.addresses: dict[str, str] = {}  # engine.io sid -> address, for log lines
        self.websockets: dict[str, Optional[asyncio.Transport]] = {}  # engine.io sid -> its websocket's TCP transport
        self._tasks: set[asyncio.Task] = set()

    async def handle_request(self, request: web.Request) -> Any:
        sid = request.query.get("sid", "")  # "" is no session
        if sid in self.sockets and request.headers.get("Upgrade", "").lower() == "websocket":
            self.websockets[sid] = request.transport  # an upgrade from polling
        if sid in self.sockets and request.method == "POST" and (request.content_length or 0) > self.max_http_buffer_size:
            # The library would refuse it too, then wait for the client to collect a goodbye
            # it never asks for, holding this request (and a shutdown) all the while.
            self.drop(sid, f"a POST of {request.content_length} bytes (limit {self.max_http_buffer_size})")
            return web.Response(status=400, text="payload too large")
        if sid in self.sockets and request.method == "POST":
            # aiohttp has no timeout for a request body that never comes; the library would
            # swallow a cancellation (a bare except), so the connection is cut instead.
            late = asyncio.get_running_loop().call_later(self.limits.handshake_timeout, self._body_late,
                                                         sid, request.transport)
            try:
                return await super().handle_request(request)
            finally:
                late.cancel()
        return await super().handle_request(request)

    def _body_late(self, sid: str, transport: Optional[asyncio.Transport]) -> None:
        self.drop(sid, f"a POST body not received within {self.limits.handshake_timeout:g} s")
        if transport is not None:
            transport.abort()

    def drop(self, sid: str, why: str) -> None:
        """Drop a client that misbehaves, now: the library would send it a goodbye and go on
        reading from it until it hangs up, which a hostile client never does."""
        self.refusals.log(self.addresses.get(sid, "unknown"), f"dropped client {sid}: {why}")
        sock = self.sockets.get(sid)
        if sock is not None:
            self.spawn(sock.close(wait=False, abort=True, reason=self.reason.TRANSPORT_ERROR))
            sock.queue.put_nowait(None)  # ends a long-poll or the websocket writer waiting on it
        self._abort_websocket(sid)

    def _abort_websocket(self, sid: str) -> None:
        """Cut ``sid``'s websocket at the TCP level: no closing handshake with it."""
        transport = self.websockets.pop(sid, None)
        if transport is not None:
            transport.abort()

    def create_queue(self, *args: Any, **kwargs: Any) -> asyncio.Queue:
        return ByteQueue(self.limits.max_queue_bytes, self._overflowed)

    def _overflowed(self, queue: ByteQueue) -> None:
        for sid, sock in list(self.sockets.items()):
            if sock.queue is queue:
                self.drop(sid, f"more than {self.limits.max_queue_bytes} bytes waiting for it")
                return

    def spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def disconnect(self, sid: Optional[str] = None) -> None:
        """As the library's, but a client that does not collect its goodbye (a polling client
        that sends no more GET, say) is given up after the handshake timeout; the library
        waits for it forever, holding the request that asked, and shutdown with it."""
        if sid is None:
            await asyncio.gather(*(self.disconnect(each) for each in list(self.sockets)))
            return
        sock = self.sockets.get(sid)
        if sock is None:
            return
        await sock.close(wait=False, reason=self.reason.SERVER_DISCONNECT)
        try:
            await asyncio.wait_for(sock.queue.join(), self.limits.handshake_timeout)
        except asyncio.TimeoutError:
            self._abort_websocket(sid)
        self.sockets.pop(sid, None)


class GuardedSocketIO(socketio.AsyncServer):
    """python-socketio with sessions capped per address and overall, a deadline for the
    Socket.IO handshake, and a client whose packets cannot be decoded dropped in one log
    line (the library logs a traceback and keeps it)."""

    def __init__(self, limits: Limits, refusals: Refusals, **kwargs: Any) -> None:
        self.limits = limits
        self.refusals = refusals
        self.sessions = Counter(limits.max_connections, limits.max_per_address)
        self._handshakes: dict[str, asyncio.TimerHandle] = {}
        # async_handlers=False: a client's events are handled in turn as they are read, as
        # python-engineio already hands them over, without a task for each (our handlers
        # never wait on the network: they queue what they send).
        super().__init__(serializer=capped_packet_class(limits.max_attachments), ping_timeout=limits.idle_timeout,
                         async_handlers=False, limits=limits, refusals=refusals, **kwargs)

    def _engineio_server_class(self) -> type:
        return GuardedEngineIO

    async def _handle_eio_connect(self, eio_sid: str, environ: dict) -> Any:
        address = request_address(environ)
        reason = self.sessions.admit(address)
        if reason is not None:
            self.refusals.log(address, f"refused a session: {reason}")
            return False
        self.eio.addresses[eio_sid] = address
        self.eio.sockets[eio_sid].__class__ = CheckedSocket  # the library makes its sessions itself
        request = environ.get("aiohttp.request")
        if request is not None and environ.get("HTTP_UPGRADE", "").lower() == "websocket":
            self.eio.websockets[eio_sid] = request.transport
        self._handshakes[eio_sid] = asyncio.get_running_loop().call_later(
            self.limits.handshake_timeout, self._handshake_expired, eio_sid)
        return await super()._handle_eio_connect(eio_sid, environ)

    def _handshake_expired(self, eio_sid: str) -> None:
        self._handshakes.pop(eio_sid, None)
        if eio_sid in self.eio.sockets and self.manager.sid_from_eio_sid(eio_sid, "/") is None:
            self.eio.drop(eio_sid, f"no Socket.IO connect within {self.limits.handshake_timeout:g} s")

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        session = self.eio.sockets.get(eio_sid)
        if session is None or session.closed:
            # What a websocket still carries after its session closed (the client's close,
            # the ping timeout): python-engineio's loop goes on reading it a while, and a
            # Socket.IO connect then fails on the session's environ, gone, in a traceback.
            return
        try:
            if not data and eio_sid not in self._binary_packet:  # the library fails on it, later
                raise ValueError("empty packet")
            await super()._handle_eio_message(eio_sid, data)
        # what the library's decoding raises, JSON errors included; RecursionError: what it
        # decoded is nested too deep to walk (binary placeholders, put back recursively)
        except (ValueError, RecursionError) as error:
            self._binary_packet.pop(eio_sid, None)
            self.eio.drop(eio_sid, f"bad packet ({str(error)[:100]})")

    async def _handle_eio_disconnect(self, eio_sid: str, reason: Any) -> None:
        handshake = self._handshakes.pop(eio_sid, None)
        if handshake is not None:
            handshake.cancel()
        self.eio.websockets.pop(eio_sid, None)
        address = self.eio.addresses.pop(eio_sid, None)
        if address is not None:
            self.sessions.release(address)
        self._binary_packet.pop(eio_sid, None)
        await super()._handle_eio_disconnect(eio_sid, reason)


def request_address(environ: dict) -> str:
    """The peer's address. (python-engineio's aiohttp driver puts a fixed 127.0.0.1 in
    REMOTE_ADDR; aiohttp's request knows the real one.)"""
    request = environ.get("aiohttp.request")
    remote = request.remote if request is not None else None
    return client_address(remote) if remote else "unknown"


class JoinRate:
    """Joins per address: a token bucket of ``burst`` joins refilled at ``rate`` a second."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, when)

    def allow(self, address: str) -> bool:
        now = time.monotonic()
        tokens, then = self._buckets.get(address, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.rate)
        if len(self._buckets) > 10_000:  # a memory bound for the bookkeeping itself
            self._forget_full(now)
            if len(self._buckets) > 10_000:
                self._buckets.clear()
        if tokens < 1:
            self._buckets[address] = (tokens, now)
            return False
        self._buckets[address] = (tokens - 1, now)
        return True

    def _forget_full(self, now: float) -> None:
        """Buckets that have refilled say nothing a fresh one would not."""
        full = [address for address, (tokens, then) in self._buckets.items()
                if tokens + (now - then) * self.rate >= self.burst]
        for address in full:
            del self._buckets[address]
