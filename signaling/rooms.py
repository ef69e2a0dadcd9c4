"""Room membership as plain state, kept apart from Socket.IO so it is tested without sockets.

The room state of one process: ``signaling.store.MemoryStore`` puts it behind the store
interface the relay rules use."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Optional

from .protocol import ALREADY_JOINED, CANDIDATE, MAX_KEPT_CANDIDATES, OFFER, ROOM_FULL, Member, ProtocolError

logger = logging.getLogger("signaling")


@dataclass
class KeptOffer:
    """An offer that reached nobody (its sender was alone), and the candidates after it."""

    offer: dict[str, Any]
    candidates: list[dict[str, Any]] = field(default_factory=list)
    overflowed: bool = False


@dataclass
class Rooms:
    """Who is in which room. One connection is in at most one room at a time."""

    capacity: int = 2
    _members: dict[str, dict[str, Member]] = field(default_factory=dict)
    _room_of: dict[str, str] = field(default_factory=dict)
    _pending: dict[str, KeptOffer] = field(default_factory=dict)

    def join(self, room: str, member: Member) -> list[Member]:
        """Add ``member`` to ``room`` and return who was already there.

        Raises ProtocolError for a second join or a full room, changing nothing.
        """
        if member.id in self._room_of:
            raise ProtocolError(ALREADY_JOINED, f"already in room {self._room_of[member.id]!r}; leave it first")
        members = self._members.get(room, {})
        if len(members) >= self.capacity:
            raise ProtocolError(ROOM_FULL, f"room {room!r} is full ({self.capacity} members)")
        others = list(members.values())
        self._members.setdefault(room, {})[member.id] = member
        self._room_of[member.id] = room
        return others

    def leave(self, member_id: str) -> Optional[tuple[str, Member]]:
        """Remove a member wherever it is; return (room, member), or None if it was in none."""
        self._pending.pop(member_id, None)
        room = self._room_of.pop(member_id, None)
        if room is None:
            return None
        member = self._members[room].pop(member_id)
        if not self._members[room]:
            del self._members[room]
        return room, member

    def keep(self, member_id: str, message: dict[str, Any]) -> None:
        """Keep a message a member broadcast (``relayed`` form) if it reached nobody: an
        offer, replacing an older one, or a candidate that follows a kept offer (at most
        ``MAX_KEPT_CANDIDATES``). A classic client offers on joining, into an empty room,
        and waits for an answer; the next member to join gets it (``take_offers``).

        So a member has a kept offer only while it is alone, and it goes when the member
        leaves: one offer per connection at most, and none once anyone has joined."""
        room = self._room_of.get(member_id)
        if room is None or len(self._members[room]) != 1:
            return
        kept = self._pending.get(member_id)
        if message["type"] == OFFER:
            self._pending[member_id] = KeptOffer(message)
        elif message["type"] == CANDIDATE and kept is not None:
            if len(kept.candidates) < MAX_KEPT_CANDIDATES:
                kept.candidates.append(message)
            elif not kept.overflowed:
                kept.overflowed = True
                logger.debug("%s sent more than %d candidates with an offer that reached nobody; "
                             "the rest are dropped", member_id, MAX_KEPT_CANDIDATES)

    def take_offers(self, room: str) -> list[dict[str, Any]]:
        """The kept messages of every member of ``room``, offer then candidates, in the
        order they joined and sent them; they are forgotten (an offer is answered once)."""
        taken = []
        for member_id in self._members.get(room, {}):
            kept = self._pending.pop(member_id, None)
            if kept is not None:
                taken += [kept.offer, *kept.candidates]
        return taken

    def room_of(self, member_id: str) -> Optional[str]:
        return self._room_of.get(member_id)

    def member(self, member_id: str) -> Optional[Member]:
        room = self._room_of.get(member_id)
        return None if room is None else self._members[room][member_id]

    def members(self, room: str) -> list[Member]:
        return list(self._members.get(room, {}).values())

    def __len__(self) -> int:
        """The number of rooms with at least one member."""
        return len(self._members)

    def member_count(self) -> int:
        return len(self._room_of)
