"""Room membership as plain state, kept apart from Socket.IO so it is tested without sockets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from .protocol import ALREADY_JOINED, ROOM_FULL, Member, ProtocolError


@dataclass
class Rooms:
    """Who is in which room. One connection is in at most one room at a time."""

    capacity: int = 2
    _members: dict[str, dict[str, Member]] = field(default_factory=dict)
    _room_of: dict[str, str] = field(default_factory=dict)

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
        room = self._room_of.pop(member_id, None)
        if room is None:
            return None
        member = self._members[room].pop(member_id)
        if not self._members[room]:
            del self._members[room]
        return room, member

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
