"""Where the room state lives, as one small interface the relay rules (``signaling.relay``) use.

The state is who is in which room and the offers kept for the next member (see
``Rooms.keep``). It lives in this process (``MemoryStore``, over ``signaling.rooms``), or in a Redis
shared by several server nodes (``signaling.redis_store.RedisStore``), which does network
I/O for every question, so the interface is async: the rules await it and do not care which
one answers. One that cannot answer raises ``StoreUnavailable``.

A store owns the room-level rules that must hold atomically wherever the state lives: one
room per member, the size limit. Everything else (tokens, names, who may be addressed) is
the relay's and is written once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional, Protocol

from .protocol import UNAVAILABLE, Member, ProtocolError
from .rooms import Rooms


class StoreUnavailable(ProtocolError):
    """The store cannot answer (a node whose Redis is gone): the event is refused, and
    nothing is decided on half the state; the client may try again in a moment."""

    def __init__(self, cause: str = "") -> None:
        super().__init__(UNAVAILABLE, "the server cannot reach its room store; try again in a moment")
        self.cause = cause


@dataclass(frozen=True)
class Seat:
    """What a join found: who was already in the room, in the order they joined, and the
    messages they kept for the next member (``Rooms.keep``: an offer and its candidates),
    handed to this one and forgotten. One answer, so that nothing happens between the two:
    on several nodes the newcomer's own events could otherwise come after those of a member
    who joined a moment later."""

    others: list[Member]
    offers: list[dict[str, Any]]


class RoomStore(Protocol):
    """The room state the relay reads and changes. Member ids are Socket.IO sids."""

    @property
    def capacity(self) -> int:
        """The most members a room holds (told to joiners in the join acknowledgement)."""

    async def join(self, room: str, member: Member) -> Seat:
        """Add ``member`` to ``room``; who was already there, and what they kept for it. Raises
        ProtocolError (``ALREADY_JOINED``, ``ROOM_FULL``), changing nothing."""

    async def leave(self, member_id: str) -> Optional[tuple[str, Member]]:
        """Remove a member (and what was kept of it) wherever it is; return (room, member),
        or None if it was in none."""

    async def find(self, member_id: str) -> Optional[tuple[str, Member]]:
        """Where a member is: (room, member), or None if it is in no room. One question,
        not two (room, then member), so the answer cannot change halfway."""

    async def members(self, room: str) -> list[Member]:
        """Who is in ``room`` now, in the order they joined."""

    async def broadcast(self, member_id: str, message: dict[str, Any]) -> list[str]:
        """Who receives ``message`` (``relayed`` form), sent by a member to its room: the ids of
        everyone else there, in the order they joined. When that is nobody, the message is
        kept for the next member (``Rooms.keep``). One question: who is there and whether
        to keep it cannot disagree."""

    async def count(self) -> int:
        """The number of rooms with at least one member (for the health check)."""

    async def member_count(self) -> int:
        """The number of members in rooms (for the health check)."""


QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)
"""redis-py also takes the password in the query: ``redis://host/0?password=PW``."""


def redacted(url: str) -> str:
    """``url`` without its password (``redis://:***@host``, ``?password=***``): URLs go to logs
    and the health check."""
    url = QUERY_PASSWORD.sub(r"\1***", url)
    head, at, tail = url.rpartition("@")
    if not at:
        return url
    scheme, _, credentials = head.partition("://")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{tail}"


class MemoryStore:
    """The room state of one process: ``Rooms``, whose answers need no waiting."""

    def __init__(self, rooms: Rooms) -> None:
        self.rooms = rooms

    @property
    def capacity(self) -> int:
        return self.rooms.capacity

    async def join(self, room: str, member: Member) -> Seat:
        return Seat(self.rooms.join(room, member), self.rooms.take_offers(room))

    async def leave(self, member_id: str) -> Optional[tuple[str, Member]]:
        return self.rooms.leave(member_id)

    async def find(self, member_id: str) -> Optional[tuple[str, Member]]:
        room, member = self.rooms.room_of(member_id), self.rooms.member(member_id)
        return None if room is None or member is None else (room, member)

    async def members(self, room: str) -> list[Member]:
        return self.rooms.members(room)

    async def broadcast(self, member_id: str, message: dict[str, Any]) -> list[str]:
        room = self.rooms.room_of(member_id)
        self.rooms.keep(member_id, message)  # only when alone
        return [] if room is None else [each.id for each in self.rooms.members(room) if each.id != member_id]

    async def count(self) -> int:
        return len(self.rooms)

    async def member_count(self) -> int:
        return self.rooms.member_count()
