"""Less work per relayed message than python-socketio does by default, with the same wire.

A relayed message costs the server one packet read, decoded, checked and handled, and one
packet encoded and written to each receiver (and an ack to the sender). Profiled under 1,000
clients (py-spy, ``bench/signaling_server.py --profile``; the figures are in docs/benchmarks.md),
much of that time was the library's generality, not the work: a task per event and another
per receiver of an emit, a recursive scan of every payload for binary data with
``functools.reduce``, and the standard library's JSON. What is here does the same with less:

- ``FastJSON``: orjson where it gives what the standard library gives, the standard library
  (as python-engineio configures it) everywhere else, so hostile JSON meets exactly the
  old rules (``loads`` below says which).
- ``holds_binary``: the scan for binary data, one pass without recursion.
- ``DirectManager``: an emit encodes its packet once and queues it for each receiver in
  turn, without a task and a wait per receiver: queuing for a client never waits (its
  queue is a ``limits.ByteQueue``, bounded by dropping the client, not by blocking).

Each piece is used through an interface python-socketio offers for it: the packet class's
``json`` and ``data_is_binary``, and the client manager (the hook Redis and Kafka managers
use).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json as std_json
import logging
import re
from typing import Any, AsyncIterator, Callable, Optional

import socketio
from engineio import exceptions as engineio_exceptions
from engineio import json as engineio_json
from engineio import packet as eio_packet
from engineio.async_socket import AsyncSocket
from socketio import packet as sio_packet

logger = logging.getLogger("signaling")

ORJSON_SINCE = (3, 11, 6)
"""Older orjson reads (before 3.9.15, CVE-2024-27454) and writes (before 3.11.6,
CVE-2025-67221) JSON nested without limit, recursing until the process dies."""

orjson: Any
try:
    import orjson
except ImportError:  # a platform without a wheel: the standard library does it all
    orjson = None
if orjson is not None and tuple(int(part) for part in re.findall(r"\d+", orjson.__version__)[:3]) < ORJSON_SINCE:
    orjson = None


_LONG_NUMBER = re.compile(r"\d{20}|-\d{19}")
"""Integers orjson reads as floats: past 64 bits unsigned (20 digits), or below -2**63 (a
minus and 19 digits; a plain 19-digit run, as in an SDP's session id, fits in 64 bits)."""


class FastJSON:
    """A ``json`` module for python-socketio's packet class (``dumps`` and ``loads``)."""

    @staticmethod
    def loads(text: Any, **kwargs: Any) -> Any:
        """orjson's reading where it is the standard library's, else python-engineio's (the
        standard library, refusing integers of more than 100 digits); JSON nested too deep
        for either is a ValueError, as broken JSON is (the client is dropped).

        Where the two differ, the standard library decides, so hostile JSON meets the rules
        it always met: text with a run of 20 digits or more (orjson reads an integer beyond
        64 bits, or below -2**63, as a float) never reaches orjson, and what orjson refuses (lone surrogates
        such as ``"\\ud800"``, ``NaN``, ``1e400``, nesting past 1024, see ``ORJSON_SINCE``) is read again by the
        standard library, whose answer (a value, or the error that drops the client) is the
        one the server always gave."""
        try:
            if orjson is not None and not kwargs and not _LONG_NUMBER.search(text):
                try:
                    return orjson.loads(text)
                except (orjson.JSONDecodeError, RecursionError):
                    pass
            return engineio_json.loads(text, **kwargs)
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None

    @staticmethod
    def dumps(value: Any, **kwargs: Any) -> str:
        """orjson's compact text; the standard library's for what orjson will not write
        (a string with a lone surrogate, which an SDP may carry, an integer beyond 64 bits).
        Both are JSON for the same value (orjson writes non-ASCII characters as they are), but
        for NaN and the infinities, which orjson writes as null and the standard library as
        the non-JSON ``NaN`` and ``Infinity``."""
        if orjson is not None:
            try:
                return orjson.dumps(value).decode()
            except TypeError:  # orjson.JSONEncodeError
                pass
        return std_json.dumps(value, **{"separators": (",", ":"), **kwargs})


def holds_binary(data: Any) -> bool:
    """Whether ``data`` holds bytes anywhere (which Socket.IO sends as attachments)."""
    pending = [data]
    while pending:
        item = pending.pop()
        if isinstance(item, (bytes, bytearray)):
            return True
        if isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, dict):
            pending.extend(item.values())
    return False


class FastPacket(sio_packet.Packet):
    """python-socketio's packet with ``FastJSON`` and ``holds_binary``."""

    json = FastJSON

    @classmethod
    def data_is_binary(cls, data: Any) -> bool:
        return holds_binary(data)


OWN = contextvars.ContextVar[Optional[str]]("OWN", default=None)
"""The member whose own events are being sent (``DirectManager.holding``)."""


class DirectManager(socketio.AsyncManager):
    """python-socketio's client manager of one process, whose emit queues the packet for
    each receiver in turn instead of a task per receiver and a wait for them all.

    It can also hold back what others send one member while its join is decided
    (``holding``): on several nodes the join of a member seated a moment later can be
    announced (by another node, through Redis) before the first one's own join is answered;
    held, it goes after the first one's own events, as on a server of one process."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._held: dict[str, list[tuple[str, list[eio_packet.Packet]]]] = {}

    @contextlib.asynccontextmanager
    async def holding(self, sid: str) -> AsyncIterator[None]:
        """Hold back events for ``sid`` but its own (sent with ``OWN`` set to it) until the end."""
        if sid in self._held:  # a second join of the same member at once: the first one releases
            yield
            return
        self._held[sid] = []
        try:
            yield
        finally:
            for eio_sid, packets in self._held.pop(sid, []):
                await self._send(sid, eio_sid, packets)

    async def emit(self, event: str, data: Any, namespace: str, room: Optional[Any] = None,
                   skip_sid: Any = None, callback: Any = None, to: Optional[Any] = None, **kwargs: Any) -> None:
        if callback is not None or namespace not in self.rooms:
            await super().emit(event, data, namespace, room=room, skip_sid=skip_sid, callback=callback, to=to, **kwargs)
            return
        skip = skip_sid if isinstance(skip_sid, list) else [skip_sid]
        args = list(data) if isinstance(data, tuple) else [] if data is None else [data]
        encoded = self.server.packet_class(sio_packet.EVENT, namespace=namespace, data=[event, *args]).encode()
        packets = [eio_packet.Packet(eio_packet.MESSAGE, part) for part in (encoded if isinstance(encoded, list) else [encoded])]
        for sid, eio_sid in self.get_participants(namespace, to or room):
            if sid in skip:
                continue
            if sid in self._held and OWN.get() != sid:
                self._held[sid].append((eio_sid, packets))
            else:
                await self._send(sid, eio_sid, packets)

    async def _send(self, sid: str, eio_sid: str, packets: list[eio_packet.Packet]) -> None:
        try:
            for each in packets:
                await self.server._send_eio_packet(eio_sid, each)
        except Exception:  # one receiver's failure (closing it, say) must not cost the others theirs
            logger.exception("could not send a packet to %s", sid)


class Deadline:
    """Calls ``expire`` once nothing has ``touch``-ed it for ``seconds``: one timer per
    connection, moved on only when it fires, where the library made a task and a timeout
    for every frame it read."""

    def __init__(self, seconds: float, expire: Callable[[], None]) -> None:
        self.seconds = seconds
        self._expire = expire
        self._loop = asyncio.get_running_loop()
        self.last = self._loop.time()
        self._timer = self._loop.call_later(seconds, self._check)

    def touch(self) -> None:
        self.last = self._loop.time()

    def cancel(self) -> None:
        self._timer.cancel()

    def _check(self) -> None:
        left = self.last + self.seconds - self._loop.time()
        if left > 0:
            self._timer = self._loop.call_later(left, self._check)
        else:
            self._expire()


class LeanSocket(AsyncSocket):
    """python-engineio's session, reading a websocket opened as one (not upgraded from
    long-polling, which keeps the library's path) in a plain loop.

    What it does is the library's loop (python-engineio 4.x, ``_websocket_handler``): a
    writer task sends what is queued for the client; frames are read one at a time, each
    bounded by the largest packet, and handed to ``receive``; a connection that sends
    nothing for ping interval plus ping timeout is ended. The library wraps every read in
    a task of its own and a timeout (``wait_for``); here one ``Deadline`` per connection
    does the timing, and ending it cuts the TCP connection, which ends the read."""

    async def _websocket_handler(self, ws: Any) -> None:
        if self.connected:  # type: ignore[has-type]  # an upgrade from long-polling
            await super()._websocket_handler(ws)
            return
        self.connected = True
        self.upgraded = True
        writer = asyncio.ensure_future(self._write_to(ws))
        deadline = Deadline(self.server.ping_interval + self.server.ping_timeout, lambda: _abort(ws))
        try:
            await self._read_from(ws, deadline)
        finally:
            deadline.cancel()
            await self.queue.put(None)  # the writer ends with what was queued before
            await writer
            await self.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_CLOSE)

    async def _read_from(self, ws: Any, deadline: Deadline) -> None:
        limit = self.server.max_http_buffer_size
        while not self.closed:  # a session closed (by the client, or at the ping timeout) is over
            try:
                data = await ws.wait()
            except (Exception, asyncio.CancelledError):  # closed, aborted, or the server stopping
                return
            if data is None or len(data) > limit or self.closed:
                return
            deadline.touch()
            try:
                await self.receive(eio_packet.Packet(encoded_packet=data))
            except engineio_exceptions.UnknownPacketError:
                pass
            except engineio_exceptions.SocketIsClosedError:
                return
            except Exception:
                self.server.logger.exception("Unknown receive error")

    async def _write_to(self, ws: Any) -> None:
        """The library's writer: everything queued, in order, until the queue says stop
        (None). It waits on the queue without a timeout of its own, as the library's did
        (ping interval plus ping timeout): the server pings into this queue well within it,
        and a connection gone silent is ended by the reader's ``Deadline``, which stops this."""
        while True:
            packets = await self._queued()
            if not packets:
                break
            try:
                for each in packets:
                    await ws.send(each.encode())
            except Exception:
                break
        await ws.close()

    async def _queued(self) -> list[Any]:
        """What ``poll`` returns (all that is queued; [] once the queue says stop), without
        a timeout and its task for every wait."""
        first = await self.queue.get()
        self.queue.task_done()
        if first is None:
            return []
        packets = [first]
        while not self.queue.empty():
            each = self.queue.get_nowait()
            self.queue.task_done()
            if each is None:
                self.queue.put_nowait(None)  # the next call says stop, as the library's poll does
                break
            packets.append(each)
        return packets


def _abort(ws: Any) -> None:
    """Cut a websocket's TCP connection (its read then ends)."""
    transport = ws.environ["aiohttp.request"].transport
    if transport is not None:
        transport.abort()
