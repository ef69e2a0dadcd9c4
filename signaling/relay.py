"""The signaling server's relay rules without sockets: who may join, who receives what.

What a client does goes in (a connection opens or closes, ``join``, ``message``, ``leave``
with the payload it sent); an ``Outcome`` comes out: the events to send, in order, and
the acknowledgement. ``signaling.server``
applies outcomes to Socket.IO; ``tests/test_relay.py`` reads them with no socket at all.

Why this shape: the rules are written once wherever the room state lives. It sits behind
``signaling.store.RoomStore``, in this process or shared by several nodes; a shared store
answers over the network, so the methods here are async, and only to await the store. An
emit names its receivers, member ids as the store gave them (``Emit``), which python-socketio's
client managers reach on one node or, through a message queue, on many.
Limits on what one client may take (the join rate per address, ``signaling.limits``) stay
with the server, which knows the client's address, and refuse through ``Relay.refuse``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

from . import protocol
from .protocol import Member, ProtocolError
from .store import RoomStore, Seat
from .token import check_token
from .turn import TurnGrant

logger = logging.getLogger("signaling")

GONE = "disconnected before the join was handled"

REFUSALS_LOGGED = 10
REFUSALS_INTERVAL = 10.0
"""One connection's refusals are logged, each in a line, up to ``REFUSALS_LOGGED`` in
``REFUSALS_INTERVAL`` seconds; those past that are counted into the next line logged. One client
sending events it may not send (a message before joining) as fast as it could wrote 23,565 lines
in 4 s, one per refusal: a disk a hostile client fills, and a log nobody can read. The client
itself is told every time."""


@dataclass(frozen=True)
class Emit:
    """One event to send to the connections ``to`` (member ids), in that order.

    Never to "a room": who is in a room is the store's word at the moment it decided (the
    members a join found there, those left after a leave), which on several nodes is the only
    exact one. A member seated on another node a moment ago may not have entered any room of
    the Socket.IO server yet, and would miss the event; one seated a moment later would hear
    of a newcomer it also finds in its own join acknowledgement."""

    event: str
    payload: Union[dict[str, Any], int]
    to: tuple[str, ...]


@dataclass
class Outcome:
    """What one client event comes to: ``emits`` go out, in order, then ``ack`` answers the
    sender (empty where nobody waits for one)."""

    ack: dict[str, Any] = field(default_factory=dict)
    emits: list[Emit] = field(default_factory=list)


class Relay:
    """The rules between connections (Socket.IO sids, which are also member ids) and rooms.

    It knows which connections are open, because a join handled after its connection
    closed must not take a seat (the ghost-join guard in ``join``)."""

    def __init__(self, store: RoomStore, token_secret: Optional[str] = None,
                 clock: Callable[[], float] = time.monotonic, turn: Optional[TurnGrant] = None,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.token_secret = token_secret
        self.turn = turn
        """TURN servers to hand every member that joins, with credentials of its own."""
        self.wall_clock = wall_clock
        """Unix time, for the expiry of those credentials."""
        self.connections: set[str] = set()
        self.clock = clock
        self._refusals: dict[str, tuple[float, int, int]] = {}
        """Per connection: when its interval began, the lines logged in it, and refusals not logged."""

    def connect(self, sid: str) -> None:
        self.connections.add(sid)

    async def disconnect(self, sid: str, announce: bool = True) -> Outcome:
        """A connection closed: its member leaves its room, and the room hears it. With
        ``announce`` False (the server itself is stopping) nobody is told: nobody left the
        room, the server went, and peers rejoin when it is back."""
        self.connections.discard(sid)
        self._refusals.pop(sid, None)
        if not announce:
            await self.store.leave(sid)
            return Outcome()
        return await self._leave(sid) or Outcome()

    async def join(self, sid: str, payload: Any) -> Outcome:
        """``join``: a seat in a room, announced to who was there (``peer-joined``, then the
        classic ``userInRoom`` head count); the ack lists them and any kept offers."""
        try:
            request = protocol.parse_join(payload)
            self._check_token(request)
            me = Member(id=sid, name=request.name or f"guest-{sid[:4]}")
            seat = await self._seat(request.room, me)
        except ProtocolError as error:
            return self.refuse(sid, protocol.JOIN, error)
        # Offers that reached nobody go to a newcomer of ours, who answers them; a classic
        # newcomer offers itself, which makes them moot. Either way they are gone now.
        others, offers = seat.others, seat.offers
        logger.info("%s (%s) joined %s", me.name, sid, request.room)
        classic = isinstance(payload, str)
        there = tuple(member.id for member in others)
        return Outcome(
            ack=protocol.join_ack(me, request.room, others, self.store.capacity, [] if classic else offers,
                                  self.turn.servers_for(sid, self.wall_clock()) if self.turn else None),
            emits=[*_to_any(protocol.PEER_JOINED, me.to_payload(), there),
                   Emit(protocol.USER_IN_ROOM, len(others) + 1, (*there, sid))],
        )

    async def message(self, sid: str, payload: Any) -> Outcome:
        """``message``: stamped with its sender and passed to the member named in ``to``
        (who must share the sender's room), or else to everyone else in the room."""
        try:
            message = protocol.parse_message(payload)
            found = await self.store.find(sid)
            if found is None:
                raise ProtocolError(protocol.NOT_JOINED, "join a room before sending messages")
            room, sender = found
            target = message.get("to")
            if target is not None:
                await self._check_target(sid, room, target)
        except ProtocolError as error:
            return self.refuse(sid, protocol.MESSAGE, error)
        out = protocol.relayed(message, sender)
        if target is not None:
            return Outcome(ack={"ok": True}, emits=[Emit(protocol.MESSAGE, out, (target,))])
        receivers = await self.store.broadcast(sid, out)  # kept if it reaches nobody
        return Outcome(ack={"ok": True}, emits=_to_any(protocol.MESSAGE, out, tuple(receivers)))

    async def leave(self, sid: str) -> Outcome:
        """``leave``: out of the room, which hears it (``peer-left``, then the head count)."""
        return await self._leave(sid) or self.refuse(
            sid, protocol.LEAVE, ProtocolError(protocol.NOT_JOINED, "not in a room"))

    def refuse(self, sid: str, event: str, error: ProtocolError) -> Outcome:
        """Tell the sender what was wrong, both as the ack and as an ``error`` event
        (classic clients never ask for acks)."""
        self._log_refusal(sid, event, error)
        payload = error.to_payload(event)
        return Outcome(ack=payload, emits=[Emit(protocol.ERROR, payload, (sid,))])

    def _log_refusal(self, sid: str, event: str, error: ProtocolError) -> None:
        now = self.clock()
        began, lines, unlogged = self._refusals.get(sid, (now, 0, 0))
        if now - began >= REFUSALS_INTERVAL:
            began, lines = now, 0
        if lines >= REFUSALS_LOGGED:
            self._refusals[sid] = (began, lines, unlogged + 1)
            return
        more = f" ({unlogged} more refused, not logged)" if unlogged else ""
        logger.info("refused %s from %s: %s%s", event, sid, error.reason, more)
        self._refusals[sid] = (began, lines + 1, 0)

    def _check_token(self, request: protocol.JoinRequest) -> None:
        if self.token_secret is not None:
            reason = check_token(self.token_secret, request.room, request.token)
            if reason is not None:
                raise ProtocolError(protocol.BAD_TOKEN, reason)

    async def _seat(self, room: str, me: Member) -> Seat:
        """The store's join, for an open connection only. A polling client can send join
        and disconnect in one request, and the join is then handled after the disconnect:
        joining would leave a ghost member that fills the room forever. A store that
        answers over the network is awaited, and the connection may close meanwhile, its
        disconnect finding no seat to free: the seat is given back here."""
        if me.id not in self.connections:
            raise ProtocolError(protocol.NOT_JOINED, GONE)
        seat = await self.store.join(room, me)
        if me.id not in self.connections:
            await self.store.leave(me.id)
            for message in seat.offers:  # the one who offered is alone again: kept again for the next
                await self.store.broadcast(message["from"], message)
            raise ProtocolError(protocol.NOT_JOINED, GONE)
        return seat

    async def _check_target(self, sid: str, room: str, target: str) -> None:
        """``to`` names another member of the sender's room, or the message goes nowhere."""
        found = None if target == sid else await self.store.find(target)
        if found is None or found[0] != room:
            raise ProtocolError(protocol.UNKNOWN_TARGET, f"no member {target!r} in room {room!r}")

    async def departed(self, room: str, member: Member) -> Outcome:
        """A member the store took out of its room (its server node died): the room hears
        it as it hears a leave."""
        logger.info("%s (%s) left %s: its server node is gone", member.name, member.id, room)
        return await self._told_left(room, member)

    async def _leave(self, sid: str) -> Optional[Outcome]:
        left = await self.store.leave(sid)
        if left is None:
            return None
        room, member = left
        logger.info("%s (%s) left %s", member.name, sid, room)
        outcome = await self._told_left(room, member)
        outcome.ack = {"ok": True}
        return outcome

    async def _told_left(self, room: str, member: Member) -> Outcome:
        """``peer-left``, then the head count, to who is still in the room."""
        there = tuple(each.id for each in await self.store.members(room))
        return Outcome(emits=[*_to_any(protocol.PEER_LEFT, member.to_payload(), there),
                              *_to_any(protocol.USER_IN_ROOM, len(there), there)])


def _to_any(event: str, payload: Union[dict[str, Any], int], to: tuple[str, ...]) -> list[Emit]:
    """The emit of ``event`` to ``to``; none when that is nobody."""
    return [Emit(event, payload, to)] if to else []
