"""The room state of several server nodes, in one Redis: ``RedisStore``.

Every rule that must hold for the whole service, whatever node a member came through, runs
inside Redis as a Lua script, so it is atomic: a join checks the member's seat and the room's
size and takes the seat in one step (two joins at the same instant on two nodes cannot both
take the last seat); a leave frees the seat, the member's kept offer and its entry in its
node's set together. The order of a room's members (who came first, for the offerer rule)
is the order of a Redis list.

Nodes die without saying so. Each renews a key of its own that expires after ``NODE_TTL``
seconds (``renew``); each sweeps (``sweep``) the members of nodes whose key expired out of
their rooms, in one script, so two sweeping nodes never announce the same departure twice.

Keys (``PREFIX`` first): ``room:R`` (list of member ids, in the order they joined), ``member:ID`` (hash: room, member
JSON, node), ``node:N`` (set of the node's member ids), ``alive:N`` (expiring), ``nodes``,
``rooms``, ``members`` (sets, for the health check), ``kept:ID`` (list: an offer that reached
nobody, then its candidates; see ``signaling.rooms.Rooms.keep``).
"""

from __future__ import annotations

import json
import secrets
from typing import Any, Awaitable, Optional, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from . import protocol
from .protocol import ALREADY_JOINED, ROOM_FULL, Member, ProtocolError
from .store import Seat, StoreUnavailable

PREFIX = "signaling:"
NODE_TTL = 3.0
"""Seconds a node's liveness key lives unless renewed: a node dead this long loses its members."""
RENEW_EVERY = 1.0
"""Seconds between a node's renewals of its key, and between its sweeps."""
TIMEOUT = 2.0
"""Seconds a Redis command (or connecting) may take before the store counts Redis as gone."""

MAX_CONNECTIONS = 32
"""Connections to Redis a node holds at most; commands beyond wait for one (``TIMEOUT`` at most)."""

T = TypeVar("T")

_LEAVE = """
local function leave(p, sid)
  redis.call('DEL', p .. 'kept:' .. sid)
  local key = p .. 'member:' .. sid
  local room, member, node = unpack(redis.call('HMGET', key, 'room', 'member', 'node'))
  if not room then return nil end
  redis.call('DEL', key)
  redis.call('LREM', p .. 'room:' .. room, 0, sid)
  redis.call('SREM', p .. 'node:' .. node, sid)
  redis.call('SREM', p .. 'members', sid)
  if redis.call('LLEN', p .. 'room:' .. room) == 0 then redis.call('SREM', p .. 'rooms', room) end
  return {room, member}
end
"""

_MEMBERS = """
local function members(p, room)
  local found = {}
  for _, sid in ipairs(redis.call('LRANGE', p .. 'room:' .. room, 0, -1)) do
    local member = redis.call('HGET', p .. 'member:' .. sid, 'member')
    if member then found[#found + 1] = member end
  end
  return found
end
"""

_TAKE = """
local function take(p, room)
  local taken = {}
  for _, sid in ipairs(redis.call('LRANGE', p .. 'room:' .. room, 0, -1)) do
    local key = p .. 'kept:' .. sid
    for _, message in ipairs(redis.call('LRANGE', key, 0, -1)) do taken[#taken + 1] = message end
    redis.call('DEL', key)
  end
  return taken
end
"""

JOIN = _MEMBERS + _TAKE + """
local p, room, sid, member, node, capacity = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
if redis.call('GET', p .. 'epoch') ~= ARGV[8] then return {'stale'} end
local current = redis.call('HGET', p .. 'member:' .. sid, 'room')
if current then return {'already', current} end
local others = members(p, room)
if #others >= capacity then return {'full'} end
local offers = {}
if ARGV[7] == 'take' then offers = take(p, room) end
redis.call('RPUSH', p .. 'room:' .. room, sid)
redis.call('HSET', p .. 'member:' .. sid, 'room', room, 'member', member, 'node', node)
redis.call('SADD', p .. 'node:' .. node, sid)
redis.call('SADD', p .. 'members', sid)
redis.call('SADD', p .. 'rooms', room)
local answer = {'ok', #others}
for _, each in ipairs(others) do answer[#answer + 1] = each end
for _, each in ipairs(offers) do answer[#answer + 1] = each end
return answer
"""
"""Seat ``sid`` in ``room``, taking what its members kept if ARGV[7] is ``take``:
``{'ok', N, N member JSON of those already there..., kept message JSON...}``, or
``{'already', room}``, or ``{'full'}``, or ``{'stale'}`` when Redis is not the one of the
node's last renewal (ARGV[8], its epoch: it lost its data, and a seat taken now could be one
a node is about to put back) (nothing changed)."""

LEAVE = _LEAVE + "return leave(ARGV[1], ARGV[2])"
"""Take ``sid`` out of its room: ``{room, member JSON}``, or nil when it was in none."""

MEMBERS = _MEMBERS + "return members(ARGV[1], ARGV[2])"

BROADCAST = """
local p, sid, kind, message, most = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local room = redis.call('HGET', p .. 'member:' .. sid, 'room')
if not room then return {} end
local others = {}
for _, each in ipairs(redis.call('LRANGE', p .. 'room:' .. room, 0, -1)) do
  if each ~= sid then others[#others + 1] = each end
end
if #others > 0 then return others end
local key = p .. 'kept:' .. sid
if kind == 'offer' then
  redis.call('DEL', key)
  redis.call('RPUSH', key, message)
elseif kind == 'candidate' and redis.call('LLEN', key) >= 1 and redis.call('LLEN', key) <= most then
  redis.call('RPUSH', key, message)
end
return others
"""
"""Who else is in the sender's room; when nobody, ``Rooms.keep``'s rule: an offer replaces the
kept one, candidates follow a kept offer, at most ``most`` of them."""

SWEEP = _LEAVE + """
local p, me, fresh = ARGV[1], ARGV[2], tonumber(ARGV[3])
if redis.call('PTTL', p .. 'alive:' .. me) < fresh then return {} end
local gone = {}
for _, node in ipairs(redis.call('SMEMBERS', p .. 'nodes')) do
  if redis.call('EXISTS', p .. 'alive:' .. node) == 0 then
    for _, sid in ipairs(redis.call('SMEMBERS', p .. 'node:' .. node)) do
      local left = leave(p, sid)
      if left then gone[#gone + 1] = left[1]; gone[#gone + 1] = left[2] end
    end
    redis.call('DEL', p .. 'node:' .. node)
    redis.call('SREM', p .. 'nodes', node)
  end
end
return gone
"""
"""Every member of every node whose liveness key expired, out of its room: ``{room, member
JSON, room, member JSON, ...}``. Only by a node (``me``) whose own key was renewed less than
``fresh`` ms ago: a sweep held up (Redis frozen, its sender frozen between renewal and sweep)
finds every key expired, its sender's too, though nobody died; it takes no one out."""

RECONCILE = """
local p, node = ARGV[1], ARGV[2]
local stale = {}
local connected = {}
for i = 3, #ARGV do connected[ARGV[i]] = true end
for _, sid in ipairs(redis.call('SMEMBERS', p .. 'node:' .. node)) do
  if not connected[sid] then stale[#stale + 1] = sid end
end
return stale
"""
"""Which of ``node``'s members in Redis are not among the ids given (those still connected,
or joining)."""


class RedisStore:
    """``signaling.store.RoomStore`` in Redis, for one node among several.

    Members of this node are also known here (``local``): a message's sender is always one of
    them, so finding it costs no round trip, and after an outage the node can put them back
    (``restore``). While Redis cannot be reached every question raises ``StoreUnavailable``,
    and ``healthy`` is False until ``check`` finds it answering again."""

    def __init__(self, url: str, node: str, capacity: int, prefix: str = PREFIX) -> None:
        self.url = url
        self.node = f"{node}#{secrets.token_hex(4)}"
        """This run of the node: a node restarted under its name at once is another one, and
        the members of the run that died are swept all the same."""
        self._epoch: Optional[str] = None
        """The Redis we renewed in last: a random mark it keeps until it loses its data."""
        self._capacity = capacity
        self._prefix = prefix
        self.healthy = False
        self.lapsed = False
        """Our key had expired at the last ``renew``: this node was frozen (or cut off from
        Redis) longer than ``NODE_TTL`` without a command failing here, and the other nodes
        may have swept its members; ``restore`` finds out which."""
        self.local: dict[str, tuple[str, Member]] = {}
        """This node's members: id to (room, member)."""
        self._joining: set[str] = set()
        """Ids whose join is on its way: Redis may seat them before their answer comes back
        (``restore`` must not count them as gone)."""
        self.redis = connect(url)
        self._join = self.redis.register_script(JOIN)
        self._leave = self.redis.register_script(LEAVE)
        self._members = self.redis.register_script(MEMBERS)
        self._broadcast = self.redis.register_script(BROADCAST)
        self._sweep = self.redis.register_script(SWEEP)
        self._reconcile = self.redis.register_script(RECONCILE)

    @property
    def capacity(self) -> int:
        return self._capacity

    # The room store (signaling.store.RoomStore)

    async def join(self, room: str, member: Member) -> Seat:
        if not self.healthy:
            raise StoreUnavailable()
        self._joining.add(member.id)
        try:
            answer = await self._seat(room, member, take="take")
        finally:
            self._joining.discard(member.id)
        if answer[0] == "already":
            raise ProtocolError(ALREADY_JOINED, f"already in room {answer[1]!r}; leave it first")
        if answer[0] == "full":
            raise ProtocolError(ROOM_FULL, f"room {room!r} is full ({self._capacity} members)")
        self.local[member.id] = (room, member)
        count = int(answer[1])
        return Seat([_member(each) for each in answer[2:2 + count]], [json.loads(each) for each in answer[2 + count:]])

    async def leave(self, member_id: str) -> Optional[tuple[str, Member]]:
        """Also while Redis is gone, this node forgets the member; Redis forgets it when back
        (``reconcile``), and the room hears it then."""
        mine = self.local.pop(member_id, None)
        answer = await self._ask(self._leave(args=[self._prefix, member_id]))
        if answer is None:
            return mine  # swept already, or not yet put back: here it was still in its room
        return answer[0], _member(answer[1])

    async def find(self, member_id: str) -> Optional[tuple[str, Member]]:
        if member_id in self.local:
            return self.local[member_id]
        room, document = await self._ask(self.redis.hmget(self._key("member", member_id), "room", "member"))
        if not isinstance(room, str) or not isinstance(document, str):
            return None
        return room, _member(document)

    async def members(self, room: str) -> list[Member]:
        return [_member(each) for each in await self._ask(self._members(args=[self._prefix, room]))]

    async def broadcast(self, member_id: str, message: dict[str, Any]) -> list[str]:
        kept = json.dumps(message) if message.get("type") in (protocol.OFFER, protocol.CANDIDATE) else ""
        return list(await self._ask(self._broadcast(args=[self._prefix, member_id, message.get("type", ""), kept,
                                                          protocol.MAX_KEPT_CANDIDATES])))

    async def count(self) -> int:
        return int(await self._ask(self.redis.scard(self._key("rooms"))))

    async def member_count(self) -> int:
        return int(await self._ask(self.redis.scard(self._key("members"))))

    # The node among others

    async def renew(self) -> bool:
        """This node is alive for ``NODE_TTL`` seconds more. True when Redis is the one of the
        last renewal, False when it lost its data since (restarted without persistence).
        ``lapsed`` tells whether our key had expired before (see there)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.exists(self._key("alive", self.node))
            pipe.set(self._key("alive", self.node), "1", px=int(NODE_TTL * 1000))
            pipe.sadd(self._key("nodes"), self.node)
            pipe.set(self._key("epoch"), secrets.token_hex(8), nx=True)
            pipe.get(self._key("epoch"))
            answers = await self._ask(pipe.execute())
        self.lapsed, epoch = not answers[0], answers[-1]
        same, self._epoch = epoch == self._epoch, epoch
        return same

    async def retire(self) -> None:
        """This node stops (its members were let go): no key of it stays for the others to sweep."""
        await self._ask(self.redis.delete(self._key("alive", self.node), self._key("node", self.node)))
        await self._ask(self.redis.srem(self._key("nodes"), self.node))

    async def sweep(self) -> list[tuple[str, Member]]:
        """Take the members of dead nodes out of their rooms; return (room, member) of each."""
        fresh = int((NODE_TTL - RENEW_EVERY) * 1000)  # our renewal, just before, less than a turn ago
        flat = await self._ask(self._sweep(args=[self._prefix, self.node, fresh]))
        return [(flat[i], _member(flat[i + 1])) for i in range(0, len(flat), 2)]

    async def restore(self, emptied: bool) -> tuple[list[tuple[str, Member]], list[str]]:
        """After an outage, make Redis agree with this node again. Those Redis still seats for
        this node but who left meanwhile are taken out. Members Redis lost are put back if it
        was ``emptied`` (restarted without its data: nobody was told anything); otherwise they
        were swept, their rooms told they left, and they must join again. Returns (room,
        member) of each taken out, for the room to hear, and the ids of members not put back
        (swept, or their room filled meanwhile), to disconnect: they come back and join."""
        stale = await self._ask(self._reconcile(args=[self._prefix, self.node, *self.local, *self._joining]))
        gone = []
        for member_id in stale:
            left = await self._ask(self._leave(args=[self._prefix, member_id]))
            if left is not None:
                gone.append((left[0], _member(left[1])))
        lost = []
        for member_id, (room, member) in list(self.local.items()):
            if emptied:
                seated = (await self._seat(room, member, take="keep"))[0] != "full"
            else:
                seated = bool(await self._ask(self.redis.exists(self._key("member", member_id))))
                if not seated:  # swept: its room heard it leave, and must not hear it twice
                    del self.local[member_id]
            if not seated:
                lost.append(member_id)
        return gone, lost

    async def ping(self) -> None:
        await self._ask(self.redis.ping())

    async def close(self) -> None:
        await self.redis.aclose(close_connection_pool=True)

    async def _seat(self, room: str, member: Member, take: str) -> list[Any]:
        """The JOIN script's answer; with ``take`` "take", the room's kept offers go to ``member``.
        ``StoreUnavailable`` (and unhealthy) when Redis lost its data since our last renewal:
        the node puts its members back first."""
        document = json.dumps(member.to_payload())
        answer = await self._ask(self._join(args=[self._prefix, room, member.id, document, self.node, self._capacity,
                                                  take, self._epoch or ""]))
        if answer[0] == "stale":
            self.healthy = False
            raise StoreUnavailable("Redis lost its data")
        return list(answer)

    def _key(self, *parts: str) -> str:
        return self._prefix + ":".join(parts)

    async def _ask(self, request: Awaitable[T]) -> T:
        """Redis's answer, or ``StoreUnavailable`` (and unhealthy) when it gave none."""
        try:
            return await request
        except (RedisError, OSError) as error:
            self.healthy = False
            raise StoreUnavailable(str(error) or type(error).__name__) from error


def connect(url: str, subscriber: bool = False) -> aioredis.Redis:
    """A client of the Redis at ``url`` as a node needs it. A command may take ``TIMEOUT``
    seconds (a ``subscriber``'s waits for events as long as none come, and reads bytes, as
    python-socketio's Redis manager does), and one that
    failed on a connection Redis dropped (it restarted) is sent once more, on a new one, at
    once. A burst of commands (the joins of a dead node's members, coming back) asks more at
    once than the pool holds: they wait their turn, where redis-py's default pool refused
    them ("too many connections", which read as Redis gone)."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=MAX_CONNECTIONS, timeout=TIMEOUT, decode_responses=not subscriber,
        socket_timeout=None if subscriber else TIMEOUT, socket_connect_timeout=TIMEOUT, retry=Retry(NoBackoff(), 1))
    return aioredis.Redis(connection_pool=pool)


def _member(document: str) -> Member:
    return Member.from_payload(json.loads(document))
