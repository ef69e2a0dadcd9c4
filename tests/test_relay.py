"""Unit tests of the relay rules (signaling.relay) over the in-memory room store, without
sockets: what each client event comes to (acknowledgement, rooms entered and left, events
sent, in order)."""

from __future__ import annotations

import asyncio
from typing import Optional

from signaling.protocol import (
    ALREADY_JOINED, BAD_PAYLOAD, BAD_ROOM, BAD_TOKEN, ERROR, MESSAGE, NOT_JOINED, PEER_JOINED, PEER_LEFT,
    ROOM_FULL, UNKNOWN_TARGET, UNKNOWN_TYPE, USER_IN_ROOM, Member,
)
from signaling.relay import Emit, Outcome, Relay
from signaling.rooms import Rooms
from signaling.store import MemoryStore, Seat
from signaling.token import make_token

SDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
CANDIDATE = {"candidate": "candidate:1 1 udp 2130706431 192.0.2.1 50000 typ host",
             "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": "abcd"}
A, B, C, D = "alice-sid", "bob-sid", "carol-sid", "dave-sid"
ALICE, BOB = {"id": A, "name": "alice"}, {"id": B, "name": "bob"}
OK = {"ok": True}


def relay_of(rooms: Rooms, secret: Optional[str] = None) -> Relay:
    """A relay over ``rooms`` with the connections A, B, C and D open."""
    relay = Relay(MemoryStore(rooms), secret)
    for sid in (A, B, C, D):
        relay.connect(sid)
    return relay


async def seated(rooms: Rooms, *joins: tuple[str, str, str]) -> Relay:
    """A relay where each (sid, room, name) of ``joins`` has joined."""
    relay = relay_of(rooms)
    for sid, room, name in joins:
        assert (await relay.join(sid, {"room": room, "name": name})).ack["ok"] is True
    return relay


def assert_refused(outcome: Outcome, sid: str, event: str, code: str, error: str = "") -> None:
    """A refusal: the same payload as the ack and as an ``error`` event to the sender alone."""
    assert outcome.ack["ok"] is False and outcome.ack["event"] == event and outcome.ack["code"] == code
    assert error in outcome.ack["error"]
    assert outcome.emits == [Emit(ERROR, outcome.ack, (sid,))]


# join


async def test_join_announces_the_joiner_to_who_was_there_then_counts_to_all(caplog):
    caplog.set_level("INFO", logger="signaling")
    rooms = Rooms(capacity=3)
    relay = relay_of(rooms)
    first = await relay.join(A, {"room": "r", "name": "alice"})
    assert first == Outcome(
        ack={"ok": True, "id": A, "name": "alice", "room": "r", "members": [], "capacity": 3, "offers": []},
        emits=[Emit(USER_IN_ROOM, 1, (A,))],
    )
    second = await relay.join(B, {"room": "r", "name": "bob"})
    assert second.ack["members"] == [ALICE]
    assert second.emits == [Emit(PEER_JOINED, BOB, (A,)), Emit(USER_IN_ROOM, 2, (A, B))]
    third = await relay.join(C, {"room": "r", "name": "carol"})
    assert third.emits[0].to == (A, B) and third.emits[1] == Emit(USER_IN_ROOM, 3, (A, B, C))
    assert rooms.members("r") == [Member(A, "alice"), Member(B, "bob"), Member(C, "carol")]
    assert "alice (alice-sid) joined r" in caplog.messages and "bob (bob-sid) joined r" in caplog.messages


async def test_a_joiner_without_a_name_is_a_guest_named_after_its_id():
    relay = relay_of(Rooms(capacity=3))
    assert (await relay.join(A, "r")).ack["name"] == "guest-alic"
    assert (await relay.join(B, {"room": "r", "name": "   "})).ack["name"] == "guest-bob-"
    assert (await relay.join(C, {"room": "r", "name": None})).emits[0] == \
        Emit(PEER_JOINED, {"id": C, "name": "guest-caro"}, (A, B))


async def test_a_bad_join_is_refused_to_its_sender_alone(caplog):
    caplog.set_level("INFO", logger="signaling")
    rooms = Rooms()
    relay = relay_of(rooms)
    assert_refused(await relay.join(A, {"room": "no spaces"}), A, "join", BAD_ROOM, "room name must be")
    assert_refused(await relay.join(A, None), A, "join", BAD_PAYLOAD)
    assert_refused(await relay.join(A, ["r"]), A, "join", BAD_PAYLOAD)
    assert len(rooms) == 0
    assert any(line.startswith("refused join from alice-sid: room name must be") for line in caplog.messages)


async def test_a_room_token_admits_to_its_room_only():
    rooms = Rooms()
    relay = relay_of(rooms, secret="s3cret")
    assert_refused(await relay.join(A, "demo"), A, "join", BAD_TOKEN)
    assert_refused(await relay.join(A, {"room": "demo", "token": "123.abc"}), A, "join", BAD_TOKEN)
    elsewhere = make_token("s3cret", "other", ttl=60)
    assert_refused(await relay.join(A, {"room": "demo", "token": elsewhere}), A, "join", BAD_TOKEN)
    assert_refused(await relay.join(A, {"room": "demo", "token": make_token("guess", "demo", ttl=60)}),
                   A, "join", BAD_TOKEN)
    assert len(rooms) == 0
    joined = await relay.join(A, {"room": "demo", "token": make_token("s3cret", "demo", ttl=60)})
    assert joined.ack["ok"] is True and rooms.members("demo") == [Member(A, "guest-alic")]


async def test_the_store_refuses_a_full_room_and_a_second_join():
    rooms = Rooms(capacity=2)
    relay = await seated(rooms, (A, "r", "alice"), (B, "r", "bob"))
    assert_refused(await relay.join(C, "r"), C, "join", ROOM_FULL, "room 'r' is full (2 members)")
    assert_refused(await relay.join(A, "s"), A, "join", ALREADY_JOINED)
    assert rooms.members("r") == [Member(A, "alice"), Member(B, "bob")] and rooms.members("s") == []


async def test_no_seat_for_a_join_handled_after_its_disconnect():
    """A polling client can send join and disconnect in one request; the join is then
    handled after the disconnect and must not leave a ghost that fills the room."""
    rooms = Rooms()
    relay = relay_of(rooms)
    assert await relay.disconnect(A) == Outcome()
    assert_refused(await relay.join(A, "r"), A, "join", NOT_JOINED, "disconnected before the join was handled")
    assert_refused(await relay.join("never-connected", "r"), "never-connected", "join", NOT_JOINED)
    assert len(rooms) == 0 and relay.connections == {B, C, D}


class SlowStore(MemoryStore):
    """A store that answers a join when told to, as one across a network takes its time."""

    def __init__(self, rooms: Rooms) -> None:
        super().__init__(rooms)
        self.asked = asyncio.Event()
        self.answer = asyncio.Event()

    async def join(self, room: str, member: Member) -> Seat:
        self.asked.set()
        await self.answer.wait()
        return await super().join(room, member)


async def test_a_connection_that_closes_while_the_store_seats_it_leaves_no_ghost():
    rooms = Rooms()
    store = SlowStore(rooms)
    relay = Relay(store)
    relay.connect(A)
    joining = asyncio.ensure_future(relay.join(A, "r"))
    await store.asked.wait()
    assert await relay.disconnect(A) == Outcome(), "not seated yet: nothing to announce"
    store.answer.set()
    assert_refused(await joining, A, "join", NOT_JOINED, "disconnected before the join was handled")
    assert len(rooms) == 0 and rooms.room_of(A) is None


async def test_offers_handed_to_a_joiner_that_closed_meanwhile_are_kept_again():
    """The seat it took came with the offer kept in the room: the one who offered is alone
    again, and the next member gets it."""
    rooms = Rooms()
    store = SlowStore(rooms)
    store.answer.set()
    relay = relay_of(rooms)
    relay.store = store
    await relay.join(A, {"room": "r", "name": "alice"})
    await relay.message(A, {"type": "offer", "sdp": SDP})
    store.answer.clear()
    store.asked.clear()
    joining = asyncio.ensure_future(relay.join(B, {"room": "r", "name": "bob"}))
    await store.asked.wait()
    await relay.disconnect(B)
    store.answer.set()
    assert_refused(await joining, B, "join", NOT_JOINED)
    assert (await relay.join(C, {"room": "r"})).ack["offers"] == [{"type": "offer", "sdp": SDP, "from": A, "name": "alice"}]


# offers kept for the next member


async def test_an_offer_sent_alone_goes_to_the_next_joiner_in_its_ack():
    rooms = Rooms(capacity=3)
    relay = await seated(rooms, (A, "r", "alice"))
    offer = await relay.message(A, {"type": "offer", "sdp": SDP})
    candidate = await relay.message(A, {"type": "candidate", "candidate": CANDIDATE})
    assert offer == candidate == Outcome(ack=OK), "nobody to send them to"
    kept = [{"type": "offer", "sdp": SDP, "from": A, "name": "alice"},
            {"type": "candidate", "candidate": CANDIDATE, "from": A, "name": "alice"}]
    assert (await relay.join(B, {"room": "r", "name": "bob"})).ack["offers"] == kept
    assert (await relay.join(C, {"room": "r"})).ack["offers"] == [], "an offer is answered once"


async def test_a_classic_joiner_gets_no_offers_and_they_are_gone():
    """A classic client (a bare room string) offers itself on joining, which makes the
    kept offer moot."""
    rooms = Rooms(capacity=3)
    relay = await seated(rooms, (A, "r", "alice"))
    await relay.message(A, {"type": "offer", "sdp": SDP})
    classic = await relay.join(B, "r")
    assert classic.ack["offers"] == [] and classic.ack["members"] == [ALICE]
    await relay.leave(B)
    assert (await relay.join(C, {"room": "r"})).ack["offers"] == []


# message


async def test_a_message_goes_to_the_rest_of_the_room_stamped_with_its_sender():
    rooms = Rooms(capacity=3)
    relay = await seated(rooms, (A, "r", "alice"), (B, "r", "bob"), (C, "s", "carol"))
    sent = await relay.message(A, {"type": "answer", "sdp": SDP, "from": B, "name": "bob", "extra": 1})
    assert sent == Outcome(ack=OK, emits=[
        Emit(MESSAGE, {"type": "answer", "sdp": SDP, "from": A, "name": "alice"}, (B,))])
    bye = await relay.message(B, {"type": "bye"})
    assert bye.emits == [Emit(MESSAGE, {"type": "bye", "from": B, "name": "bob"}, (A,))]
    assert (await relay.message(C, {"type": "bye"})) == Outcome(ack=OK), "alone: nobody to send it to"


async def test_to_reaches_another_member_of_the_senders_room_only():
    rooms = Rooms(capacity=3)
    relay = await seated(rooms, (A, "r", "alice"), (B, "r", "bob"), (C, "r", "carol"), (D, "s", "dave"))
    direct = await relay.message(A, {"type": "offer", "sdp": SDP, "to": C})
    assert direct == Outcome(ack=OK, emits=[
        Emit(MESSAGE, {"type": "offer", "sdp": SDP, "from": A, "name": "alice"}, (C,))])
    for target in (A, D, "nobody"):  # oneself, another room, no one
        assert_refused(await relay.message(A, {"type": "offer", "sdp": SDP, "to": target}),
                       A, "message", UNKNOWN_TARGET, f"no member {target!r} in room 'r'")


async def test_a_message_before_joining_or_malformed_is_refused():
    rooms = Rooms()
    relay = await seated(rooms, (A, "r", "alice"))
    assert_refused(await relay.message(B, {"type": "bye"}), B, "message", NOT_JOINED,
                   "join a room before sending messages")
    assert_refused(await relay.message(A, {"type": "hello"}), A, "message", UNKNOWN_TYPE)
    assert_refused(await relay.message(A, None), A, "message", BAD_PAYLOAD)
    assert_refused(await relay.message(A, {"type": "offer", "sdp": "x"}), A, "message", BAD_PAYLOAD)


# leave and disconnect


async def test_leave_goes_out_of_the_room_then_tells_it_and_counts(caplog):
    caplog.set_level("INFO", logger="signaling")
    rooms = Rooms()
    relay = await seated(rooms, (A, "r", "alice"), (B, "r", "bob"))
    assert await relay.leave(A) == Outcome(
        ack=OK, emits=[Emit(PEER_LEFT, ALICE, (B,)), Emit(USER_IN_ROOM, 1, (B,))])
    assert "alice (alice-sid) left r" in caplog.messages
    assert_refused(await relay.leave(A), A, "leave", NOT_JOINED, "not in a room")
    assert (await relay.join(A, {"room": "s"})).ack["ok"] is True, "a member that left may join again"
    assert await relay.leave(B) == Outcome(ack=OK), "the last one: nobody to tell"
    assert rooms.members("r") == []


async def test_a_disconnect_leaves_as_leave_does_unless_the_server_is_going():
    rooms = Rooms(capacity=3)
    relay = await seated(rooms, (A, "r", "alice"), (B, "r", "bob"), (C, "r", "carol"))
    assert await relay.disconnect(B) == Outcome(
        ack=OK, emits=[Emit(PEER_LEFT, BOB, (A, C)), Emit(USER_IN_ROOM, 2, (A, C))])
    assert await relay.disconnect(A, announce=False) == Outcome(), "nobody left: the server went"
    assert rooms.members("r") == [Member(C, "carol")]
    assert await relay.disconnect(D) == Outcome(), "never joined: nothing to tell"
    assert relay.connections == {C}


async def test_a_client_refused_again_and_again_is_logged_a_few_lines_an_interval(caplog):
    """Every refusal is answered, but one client's refusals fill at most REFUSALS_LOGGED log
    lines per REFUSALS_INTERVAL seconds, the count of those left out in the next line."""
    from signaling.relay import REFUSALS_INTERVAL, REFUSALS_LOGGED
    now = [0.0]
    relay = Relay(MemoryStore(Rooms()), clock=lambda: now[0])
    relay.connect(A)
    relay.connect(B)
    caplog.set_level("INFO", logger="signaling")
    outcomes = [await relay.message(A, {"type": "offer", "sdp": SDP}) for _ in range(1000)]
    assert all(outcome.ack["code"] == NOT_JOINED for outcome in outcomes)
    await relay.message(B, {"type": "offer", "sdp": SDP})
    refused = [record.getMessage() for record in caplog.records if record.getMessage().startswith("refused")]
    assert len(refused) == REFUSALS_LOGGED + 1
    assert all(A in line for line in refused[:-1]) and B in refused[-1]  # another client still gets its line
    now[0] += REFUSALS_INTERVAL
    await relay.message(A, {"type": "offer", "sdp": SDP})
    last = caplog.records[-1].getMessage()
    assert A in last and f"({1000 - REFUSALS_LOGGED} more refused, not logged)" in last
    await relay.disconnect(A)
    assert A not in relay._refusals
