"""The room store in Redis (signaling.redis_store) against a real redis-server: the same
answers as the store of one process for the same questions, joins that cannot overfill a room
whichever node they come through, the members of a dead node swept out, and a Redis that goes
and comes back empty. Nodes here are ``RedisStore``s in one process, each with its own
connections to Redis; ``tests/test_nodes.py`` runs real server processes."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from signaling.protocol import ALREADY_JOINED, CANDIDATE, MAX_KEPT_CANDIDATES, OFFER, ROOM_FULL, UNAVAILABLE, Member, ProtocolError
from signaling.redis_store import NODE_TTL, RedisStore
from signaling.rooms import Rooms
from signaling.store import MemoryStore, Seat, StoreUnavailable, redacted

ALICE, BOB, CAROL = Member("alice-id", "alice"), Member("bob-id", "bob"), Member("carol-id", "carol")


def offer(sender: Member, n: int = 0) -> dict[str, Any]:
    return {"type": OFFER, "sdp": f"v=0\r\n{n}", "from": sender.id, "name": sender.name}


def candidate(sender: Member, n: int) -> dict[str, Any]:
    return {"type": CANDIDATE, "candidate": {"candidate": f"candidate:{n}"}, "from": sender.id, "name": sender.name}


@pytest.fixture(params=["memory", "redis"])
async def store(request):
    """Each store of the two, with rooms of two."""
    if request.param == "memory":
        yield MemoryStore(Rooms(capacity=2))
        return
    node = await started(request.getfixturevalue("redis_server").url, "n1")
    yield node
    await node.close()


async def started(url: str, name: str, capacity: int = 2) -> RedisStore:
    node = RedisStore(url, name, capacity)
    await node.renew()
    node.healthy = True
    return node


async def test_a_join_answers_who_was_there_in_order_and_refuses_what_it_must(store):
    assert await store.join("r", ALICE) == Seat([], [])
    assert await store.join("r", BOB) == Seat([ALICE], [])
    with pytest.raises(ProtocolError) as full:
        await store.join("r", CAROL)
    assert full.value.code == ROOM_FULL
    with pytest.raises(ProtocolError) as again:
        await store.join("s", ALICE)
    assert again.value.code == ALREADY_JOINED and "'r'" in again.value.reason
    assert await store.members("r") == [ALICE, BOB]
    assert await store.find(BOB.id) == ("r", BOB) and await store.find(CAROL.id) is None
    assert (await store.count(), await store.member_count()) == (1, 2)


async def test_a_leave_frees_the_seat_and_an_empty_room_is_gone(store):
    await store.join("r", ALICE)
    await store.join("r", BOB)
    assert await store.leave(ALICE.id) == ("r", ALICE)
    assert await store.leave(ALICE.id) is None
    assert await store.members("r") == [BOB]
    assert (await store.join("r", CAROL)).others == [BOB]
    await store.leave(BOB.id)
    await store.leave(CAROL.id)
    assert (await store.count(), await store.member_count()) == (0, 0)


async def test_an_offer_of_a_member_alone_is_kept_for_the_next_one_once(store):
    await store.join("r", ALICE)
    assert await store.broadcast(ALICE.id, offer(ALICE, 1)) == []
    await store.broadcast(ALICE.id, offer(ALICE, 2))  # replaces the first
    for n in range(MAX_KEPT_CANDIDATES + 3):
        await store.broadcast(ALICE.id, candidate(ALICE, n))
    taken = (await store.join("r", BOB)).offers
    assert taken[0] == offer(ALICE, 2)
    assert taken[1:] == [candidate(ALICE, n) for n in range(MAX_KEPT_CANDIDATES)]
    assert await store.broadcast(BOB.id, offer(BOB)) == [ALICE.id]  # not alone: nothing kept
    await store.leave(BOB.id)
    assert (await store.join("r", CAROL)).offers == [], "an offer is handed out once"


async def test_a_broadcast_reaches_everyone_else_in_the_room_in_join_order(redis_server):
    node = await started(redis_server.url, "n1", capacity=3)
    for member in (ALICE, BOB, CAROL):
        await node.join("r", member)
    assert await node.broadcast(BOB.id, {"type": "bye"}) == [ALICE.id, CAROL.id]
    assert await node.broadcast("nobody", {"type": "bye"}) == []
    await node.close()


async def test_candidates_without_a_kept_offer_and_a_leaver_s_offer_are_not_kept(store):
    await store.join("r", ALICE)
    await store.broadcast(ALICE.id, candidate(ALICE, 1))
    await store.broadcast(CAROL.id, offer(CAROL))  # in no room
    assert (await store.join("r", BOB)).offers == []
    await store.leave(BOB.id)
    await store.broadcast(ALICE.id, offer(ALICE))
    await store.leave(ALICE.id)
    assert (await store.join("r", BOB)).offers == []


async def test_fifty_joins_at_once_through_three_nodes_never_overfill_a_room(redis_server):
    nodes = [await started(redis_server.url, f"n{k}") for k in range(3)]
    members = [Member(f"member-{k:02d}", f"m{k}") for k in range(50)]

    async def join(k: int) -> str:
        try:
            await nodes[k % 3].join(f"room-{k % 20}", members[k])
            return "seated"
        except ProtocolError as error:
            return error.code

    results = await asyncio.gather(*(join(k) for k in range(50)))
    assert results.count("seated") == 40 and results.count(ROOM_FULL) == 10
    for room in range(20):
        assert len(await nodes[0].members(f"room-{room}")) == 2
    for node in nodes:
        await node.close()


async def test_a_burst_of_joins_waits_for_connections_rather_than_failing(redis_server):
    """More joins at once than the node holds connections (the members of a dead node, coming
    back): they wait their turn, and the node stays healthy."""
    node = await started(redis_server.url, "n1")
    await asyncio.gather(*(node.join(f"burst-{k // 2}", Member(f"id-{k}", f"m{k}")) for k in range(300)))
    assert node.healthy and await node.member_count() == 300
    await node.close()


async def test_a_dead_node_s_members_are_swept_once_and_a_live_one_s_stay(redis_server):
    live, dead = await started(redis_server.url, "live"), await started(redis_server.url, "dead")
    await live.join("r", ALICE)
    await dead.join("r", BOB)
    await dead.join("s", CAROL)
    await dead.close()  # no more renewals: its key expires
    assert await live.sweep() == []  # alive for NODE_TTL yet
    began = time.monotonic()
    while not (swept := await live.sweep()):
        await live.renew()
        await asyncio.sleep(0.2)
    assert NODE_TTL - 1 < time.monotonic() - began < NODE_TTL + 1
    assert sorted(swept, key=lambda left: left[0]) == [("r", BOB), ("s", CAROL)]
    assert await live.sweep() == []
    assert await live.members("r") == [ALICE] and await live.count() == 1
    await live.close()


async def test_redis_gone_refuses_then_the_node_puts_its_members_back(redis_server):
    node = await started(redis_server.url, "n1")
    other = await started(redis_server.url, "n2")
    await node.join("r", ALICE)
    await node.join("s", BOB)
    redis_server.stop()
    with pytest.raises(StoreUnavailable) as gone:
        await node.members("r")
    assert gone.value.code == UNAVAILABLE and not node.healthy
    with pytest.raises(StoreUnavailable):
        await node.join("t", CAROL)  # refused at once while unhealthy
    assert await node.find(ALICE.id) == ("r", ALICE)  # its own members: known without Redis
    with pytest.raises(StoreUnavailable):
        await node.leave(BOB.id)  # BOB leaves meanwhile: this node forgets it at once
    redis_server.start()  # empty
    assert await node.renew() is False  # not the Redis of before: nobody was told anything
    gone_meanwhile, not_back = await node.restore(emptied=True)
    assert (gone_meanwhile, not_back) == ([], [])
    assert await other.members("r") == [ALICE] and await other.members("s") == []
    await node.close()
    await other.close()


async def test_a_member_that_left_while_redis_was_away_is_taken_out_when_it_is_back(redis_server):
    node = await started(redis_server.url, "n1")
    await node.join("r", ALICE)
    await node.join("r", BOB)
    node.local.pop(BOB.id)  # BOB disconnected while Redis could not hear it (Redis kept its state)
    assert await node.renew() is True
    gone, not_back = await node.restore(emptied=False)
    assert gone == [("r", BOB)] and not_back == []
    assert await node.members("r") == [ALICE]
    await node.close()


async def test_members_swept_while_their_node_was_cut_off_must_join_again(redis_server):
    """Their rooms were told they left: put back silently, they would be members nobody calls."""
    node, other = await started(redis_server.url, "n1"), await started(redis_server.url, "n2")
    await node.join("r", ALICE)
    await other.join("r", BOB)
    await expire(node)
    assert await other.sweep() == [("r", ALICE)]
    assert await node.renew() is True
    assert await node.restore(emptied=False) == ([], [ALICE.id])
    assert await other.members("r") == [BOB]
    await node.close()
    await other.close()


async def expire(node: RedisStore) -> None:
    """``node``'s liveness key gone, as after NODE_TTL seconds without renewal."""
    await node.redis.delete(f"signaling:alive:{node.node}")


def test_a_redis_password_is_never_shown():
    assert redacted("redis://:hunter2@db.example:6379/0") == "redis://:***@db.example:6379/0"
    assert redacted("rediss://app:hunter2@db.example/1") == "rediss://app:***@db.example/1"
    assert redacted("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


async def test_what_a_member_sent_is_stored_as_json_not_code(redis_server):
    """Room names and member names are the clients': they go to Redis as arguments, never as script text."""
    node = await started(redis_server.url, "n1")
    await node.join("r", ALICE)
    hostile = Member("x') redis.call('FLUSHALL') --", "'); redis.call('FLUSHALL')")
    await node.join("r') redis.call('FLUSHALL", hostile)
    assert await node.members("r') redis.call('FLUSHALL") == [hostile]
    assert await node.members("r") == [ALICE] and await node.member_count() == 2
    await node.close()
