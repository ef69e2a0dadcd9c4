"""Unit tests of the wire rules (signaling.protocol), room state (signaling.rooms) and room
tokens (signaling.token), without sockets."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signaling import protocol
from signaling.protocol import (
    ALREADY_JOINED, BAD_NAME, BAD_PAYLOAD, BAD_ROOM, BAD_TOKEN, MAX_CANDIDATE_BYTES, MAX_KEPT_CANDIDATES,
    MAX_NAME_CHARS, MAX_PENDING_MESSAGES, MAX_SDP_BYTES, MAX_TOKEN_CHARS, NOT_JOINED, ROOM_FULL, TOO_LARGE,
    UNKNOWN_TYPE, JoinRequest, Member, ProtocolError, join_ack, parse_join, parse_message, parse_pending_offers,
    relayed,
)
from signaling.rooms import Rooms
from signaling.token import check_token, main as token_main, make_token

SDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
CANDIDATE = {
    "candidate": "candidate:1 1 udp 2130706431 192.0.2.1 50000 typ host",
    "sdpMid": "0",
    "sdpMLineIndex": 0,
    "usernameFragment": "abcd",
}


def code_of(call, *args) -> str:
    with pytest.raises(ProtocolError) as caught:
        call(*args)
    return caught.value.code


# join


def test_join_bare_string_is_the_classic_form():
    assert parse_join("demo") == JoinRequest(room="demo", name="", token=None)


def test_join_object_with_room_name_and_token():
    request = parse_join({"room": "room_1.a-b", "name": "  alice  ", "token": "123.abc"})
    assert request == JoinRequest(room="room_1.a-b", name="alice", token="123.abc")
    assert request.to_payload() == {"room": "room_1.a-b", "name": "alice", "token": "123.abc"}


def test_join_object_name_and_token_are_optional():
    assert parse_join({"room": "demo"}) == JoinRequest(room="demo")
    assert parse_join({"room": "demo", "name": None, "token": None}) == JoinRequest(room="demo")
    assert parse_join({"room": "demo", "extra": [1, 2]}).room == "demo"
    assert JoinRequest(room="demo", name="bob").to_payload() == {"room": "demo", "name": "bob"}


@pytest.mark.parametrize("room", ["a", "A", "0", "a" * 64, "Room-1_x.y", "9.9"])
def test_good_room_names(room):
    assert parse_join(room).room == room
    assert parse_join({"room": room}).room == room


@pytest.mark.parametrize("room", [
    "", " ", "a" * 65, "-a", "_a", ".a", "a b", "a/b", "a:b", "room:x", "é", "a\n", "a\x00",
    None, 5, 1.5, True, [], ["demo"], {"room": "demo"},
])
def test_bad_room_names(room):
    assert code_of(parse_join, {"room": room}) == BAD_ROOM
    if isinstance(room, str):
        assert code_of(parse_join, room) == BAD_ROOM


@pytest.mark.parametrize("payload", [None, 5, 1.5, True, [], ["demo"], b"demo"])
def test_join_payload_must_be_a_string_or_an_object(payload):
    assert code_of(parse_join, payload) == BAD_PAYLOAD


def test_join_object_without_room():
    assert code_of(parse_join, {}) == BAD_ROOM
    assert code_of(parse_join, {"name": "alice"}) == BAD_ROOM


def test_join_name_limits():
    assert parse_join({"room": "r", "name": "n" * MAX_NAME_CHARS}).name == "n" * MAX_NAME_CHARS
    assert code_of(parse_join, {"room": "r", "name": "n" * (MAX_NAME_CHARS + 1)}) == BAD_NAME
    for bad in (5, [], {}, True):
        assert code_of(parse_join, {"room": "r", "name": bad}) == BAD_NAME


def test_join_token_must_be_a_short_string():
    assert parse_join({"room": "r", "token": "t" * MAX_TOKEN_CHARS}).token == "t" * MAX_TOKEN_CHARS
    assert code_of(parse_join, {"room": "r", "token": "t" * (MAX_TOKEN_CHARS + 1)}) == BAD_TOKEN
    for bad in (5, [], {}, True):
        assert code_of(parse_join, {"room": "r", "token": bad}) == BAD_TOKEN


# message


def test_offer_and_answer_keep_only_type_sdp_and_to():
    for kind in ("offer", "answer"):
        assert parse_message({"type": kind, "sdp": SDP}) == {"type": kind, "sdp": SDP}
        forged = {"type": kind, "sdp": SDP, "from": "someone", "name": "x", "extra": {"a": 1}, "to": "abc"}
        assert parse_message(forged) == {"type": kind, "sdp": SDP, "to": "abc"}


@pytest.mark.parametrize("sdp", [None, 5, [], {}, "", "hello", " v=0", "V=0"])
def test_offer_and_answer_need_an_sdp_string(sdp):
    for kind in ("offer", "answer"):
        assert code_of(parse_message, {"type": kind, "sdp": sdp}) == BAD_PAYLOAD
        assert code_of(parse_message, {"type": kind}) == BAD_PAYLOAD


def test_sdp_size_limit_counts_utf8_bytes():
    at_limit = "v=0" + "a" * (MAX_SDP_BYTES - 3)
    assert parse_message({"type": "offer", "sdp": at_limit})["sdp"] == at_limit
    assert code_of(parse_message, {"type": "offer", "sdp": at_limit + "a"}) == TOO_LARGE
    # 'é' is two bytes: fewer characters than the limit, more bytes.
    wide = "v=0" + "é" * (MAX_SDP_BYTES // 2)
    assert len(wide) < MAX_SDP_BYTES
    assert code_of(parse_message, {"type": "answer", "sdp": wide}) == TOO_LARGE
    # A lone surrogate (legal in JSON) is measured, not an exception.
    assert parse_message({"type": "offer", "sdp": "v=0\ud800"})["sdp"] == "v=0\ud800"


def test_candidate_forms():
    assert parse_message({"type": "candidate", "candidate": CANDIDATE}) == {"type": "candidate", "candidate": CANDIDATE}
    # null is the end of candidates, as is an empty candidate string.
    assert parse_message({"type": "candidate", "candidate": None}) == {"type": "candidate", "candidate": None}
    assert parse_message({"type": "candidate"}) == {"type": "candidate", "candidate": None}
    end = parse_message({"type": "candidate", "candidate": {"candidate": "", "sdpMid": "0", "sdpMLineIndex": 0}})
    assert end["candidate"] == {"candidate": "", "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": None}
    # Missing fields come out as None / "", unknown ones are dropped.
    assert parse_message({"type": "candidate", "candidate": {"foo": 1}})["candidate"] == {
        "candidate": "", "sdpMid": None, "sdpMLineIndex": None, "usernameFragment": None}
    assert parse_message({"type": "candidate", "candidate": {**CANDIDATE, "sdpMLineIndex": 1023}})
    assert parse_message({"type": "candidate", "candidate": {**CANDIDATE, "candidate": "c" * MAX_CANDIDATE_BYTES}})


@pytest.mark.parametrize("candidate, code", [
    ("candidate:1 1 udp 1 192.0.2.1 1 typ host", BAD_PAYLOAD),
    ("", BAD_PAYLOAD),
    (5, BAD_PAYLOAD),
    ([CANDIDATE], BAD_PAYLOAD),
    ({**CANDIDATE, "candidate": 5}, BAD_PAYLOAD),
    ({**CANDIDATE, "candidate": None}, BAD_PAYLOAD),
    ({**CANDIDATE, "candidate": "c" * (MAX_CANDIDATE_BYTES + 1)}, TOO_LARGE),
    ({**CANDIDATE, "sdpMid": 0}, BAD_PAYLOAD),
    ({**CANDIDATE, "sdpMid": "m" * 65}, BAD_PAYLOAD),
    ({**CANDIDATE, "sdpMLineIndex": "0"}, BAD_PAYLOAD),
    ({**CANDIDATE, "sdpMLineIndex": True}, BAD_PAYLOAD),
    ({**CANDIDATE, "sdpMLineIndex": -1}, BAD_PAYLOAD),
    ({**CANDIDATE, "sdpMLineIndex": 1024}, BAD_PAYLOAD),
    ({**CANDIDATE, "sdpMLineIndex": 0.5}, BAD_PAYLOAD),
    ({**CANDIDATE, "usernameFragment": 7}, BAD_PAYLOAD),
    ({**CANDIDATE, "usernameFragment": "u" * 257}, BAD_PAYLOAD),
])
def test_bad_candidates(candidate, code):
    assert code_of(parse_message, {"type": "candidate", "candidate": candidate}) == code


def test_bye_carries_nothing_but_to():
    assert parse_message({"type": "bye"}) == {"type": "bye"}
    assert parse_message({"type": "bye", "sdp": SDP, "reason": "x", "to": "abc"}) == {"type": "bye", "to": "abc"}


@pytest.mark.parametrize("payload", [None, "offer", 5, [], [{"type": "bye"}], True])
def test_message_must_be_an_object(payload):
    assert code_of(parse_message, payload) == BAD_PAYLOAD


@pytest.mark.parametrize("kind", [None, "", "Offer", "hello", "pranswer", "rollback", 5, ["offer"], {"type": "offer"}])
def test_unknown_message_types(kind):
    payload = {"sdp": SDP} if kind is None else {"type": kind, "sdp": SDP}
    assert code_of(parse_message, payload) == UNKNOWN_TYPE


def test_unknown_type_reason_stays_short():
    with pytest.raises(ProtocolError) as caught:
        parse_message({"type": "x" * 10_000})
    assert len(caught.value.reason) <= 200


@pytest.mark.parametrize("to", ["", 5, [], {}, True, "x" * 65])
def test_bad_to(to):
    assert code_of(parse_message, {"type": "bye", "to": to}) == BAD_PAYLOAD


def test_to_is_kept_for_every_type():
    for message in ({"type": "offer", "sdp": SDP}, {"type": "answer", "sdp": SDP},
                    {"type": "candidate", "candidate": CANDIDATE}, {"type": "bye"}):
        assert parse_message({**message, "to": "x" * 64})["to"] == "x" * 64
        assert "to" not in parse_message({**message, "to": None})


def test_relayed_stamps_sender_and_drops_to():
    sender = Member(id="sid-a", name="alice")
    message = {"type": "offer", "sdp": SDP, "to": "sid-b"}
    out = relayed(message, sender)
    assert out == {"type": "offer", "sdp": SDP, "from": "sid-a", "name": "alice"}
    assert message == {"type": "offer", "sdp": SDP, "to": "sid-b"}, "the input must not change"
    # Even a message that reached relayed() with a forged sender gets the real one.
    assert relayed({"type": "bye", "from": "forged", "name": "forged"}, sender) == {
        "type": "bye", "from": "sid-a", "name": "alice"}


def test_join_ack_and_error_payloads():
    me, other = Member("b", "bob"), Member("a", "alice")
    assert join_ack(me, "demo", [other], 2) == {
        "ok": True, "id": "b", "name": "bob", "room": "demo",
        "members": [{"id": "a", "name": "alice"}], "capacity": 2, "offers": [],
    }
    offer = relayed({"type": "offer", "sdp": SDP}, other)
    assert join_ack(me, "demo", [other], 2, [offer])["offers"] == [offer]
    error = ProtocolError(ROOM_FULL, "full")
    assert str(error) == "full"
    assert error.to_payload("join") == {"ok": False, "event": "join", "code": "room-full", "error": "full"}


def test_member_from_payload():
    assert Member.from_payload({"id": "a", "name": "alice"}) == Member("a", "alice")
    assert Member.from_payload({"id": "a"}) == Member("a", "")
    assert Member.from_payload({"id": "a", "name": None}) == Member("a", "")
    assert Member("a", "alice").to_payload() == {"id": "a", "name": "alice"}
    for bad in (None, "a", {"name": "x"}, {"id": ""}, {"id": 5}):
        assert code_of(Member.from_payload, bad) == BAD_PAYLOAD


# offers kept for the next member (the join ack's "offers")

ALICE, BOB = Member("a", "alice"), Member("b", "bob")


def test_pending_offers_are_read_as_messages_of_members():
    offer = {"type": "offer", "sdp": SDP, "from": "a", "name": "alice"}
    candidate = {"type": "candidate", "candidate": CANDIDATE, "from": "a", "name": "alice"}
    end = {"type": "candidate", "candidate": None, "from": "a", "name": "alice"}
    ack = join_ack(BOB, "demo", [ALICE], 2, [offer, candidate, end])
    assert parse_pending_offers(ack, [ALICE]) == [offer, candidate, end]
    # The name is the member's as the ack lists it; fields the protocol does not define go.
    forged = {**offer, "name": "mallory", "to": "b", "extra": [1], "candidate": CANDIDATE}
    assert parse_pending_offers({"offers": [forged]}, [ALICE]) == [offer]
    short = {"type": "candidate", "candidate": {"candidate": "", "sdpMid": "0"}, "from": "a"}
    assert parse_pending_offers({"offers": [offer, short]}, [ALICE]) == [offer, {
        "type": "candidate", "from": "a", "name": "alice",
        "candidate": {"candidate": "", "sdpMid": "0", "sdpMLineIndex": None, "usernameFragment": None}}]


def test_pending_candidates_count_only_after_their_members_offer():
    """A member with candidates and no offer would be left unanswered and not offered to."""
    offer = {"type": "offer", "sdp": SDP, "from": "a", "name": "alice"}
    candidate = {"type": "candidate", "candidate": CANDIDATE, "from": "a", "name": "alice"}
    assert parse_pending_offers({"offers": [candidate]}, [ALICE]) == []
    assert parse_pending_offers({"offers": [candidate, offer, candidate]}, [ALICE]) == [offer, candidate]


@pytest.mark.parametrize("ack", [None, 5, "offers", [], {}, {"offers": None}, {"offers": {"0": {}}},
                                 {"offers": "v=0"}, {"ok": True, "id": "b", "members": []}])
def test_no_pending_offers_without_a_list(ack):
    assert parse_pending_offers(ack, [ALICE]) == []


@pytest.mark.parametrize("item", [
    None, 5, "offer", [], {},
    {"type": "offer", "sdp": SDP},  # from nobody
    {"type": "offer", "sdp": SDP, "from": "c"},  # not a member
    {"type": "offer", "sdp": SDP, "from": "b"},  # a member, but not listed
    {"type": "offer", "sdp": SDP, "from": ["a"]},
    {"type": "offer", "sdp": SDP, "from": {"a": 1}},
    {"type": "answer", "sdp": SDP, "from": "a"},
    {"type": "bye", "from": "a"},
    {"type": "Offer", "sdp": SDP, "from": "a"},
    {"type": ["offer"], "sdp": SDP, "from": "a"},
    {"type": "offer", "from": "a"},
    {"type": "offer", "sdp": "hello", "from": "a"},
    {"type": "offer", "sdp": 5, "from": "a"},
    {"type": "offer", "sdp": "v=0" + "a" * MAX_SDP_BYTES, "from": "a"},
    {"type": "candidate", "from": "a"},  # an end of candidates is written out as null
    {"type": "candidate", "candidate": "candidate:1 1 udp 1 192.0.2.1 1 typ host", "from": "a"},
    {"type": "candidate", "candidate": {**CANDIDATE, "sdpMLineIndex": -1}, "from": "a"},
    {"type": "candidate", "candidate": {**CANDIDATE, "candidate": "c" * (MAX_CANDIDATE_BYTES + 1)}, "from": "a"},
])
def test_bad_pending_offers_are_dropped(item):
    good = {"type": "offer", "sdp": SDP, "from": "a", "name": "alice"}
    assert parse_pending_offers({"offers": [item, good, item]}, [ALICE]) == [good]


def test_pending_offers_are_bounded():
    offer = {"type": "offer", "sdp": SDP, "from": "a", "name": "alice"}
    assert parse_pending_offers({"offers": [offer] * 10_000}, [ALICE]) == [offer] * MAX_PENDING_MESSAGES
    assert MAX_PENDING_MESSAGES >= 1 + MAX_KEPT_CANDIDATES


@settings(max_examples=200, deadline=None)
@given(offers=st.lists(st.fixed_dictionaries({}, optional={
    "type": st.sampled_from(["offer", "candidate", "answer"]) | st.none(), "from": st.sampled_from(["a", "b"]),
    "sdp": st.just(SDP) | st.text(max_size=8), "name": st.text(max_size=8),
    "candidate": st.none() | st.just(CANDIDATE) | st.text(max_size=8)}) | st.none() | st.integers(), max_size=8))
def test_pending_offers_only_ever_give_checked_messages(offers):
    messages = parse_pending_offers({"offers": offers}, [ALICE])
    assert not messages or messages[0]["type"] == "offer"
    for message in messages:
        assert message["from"] == "a" and message["name"] == "alice"
        sent = {key: value for key, value in message.items() if key not in ("from", "name")}
        assert relayed(parse_message(sent), ALICE) == message


# the peer's half: what it sends, and what it reads from the server


def test_what_the_peer_sends_keeps_the_documented_shape_and_passes_the_server_unchanged():
    sent = [
        (protocol.offer_message(SDP, "b"), [("type", "offer"), ("sdp", SDP), ("to", "b")]),
        (protocol.answer_message(SDP, "b"), [("type", "answer"), ("sdp", SDP), ("to", "b")]),
        (protocol.candidate_message(CANDIDATE), [("type", "candidate"), ("candidate", CANDIDATE)]),
        (protocol.candidate_message(None, "b"), [("type", "candidate"), ("candidate", None), ("to", "b")]),
        (protocol.bye_message("b"), [("type", "bye"), ("to", "b")]),
    ]
    for message, items in sent:
        assert list(message.items()) == items  # the same JSON text as before, key order included
        assert parse_message(message) == message
    request = JoinRequest("demo", "alice", "t")
    assert parse_join(request.to_payload()) == request
    assert request.to_classic_payload() == "demo" and parse_join("demo") == JoinRequest("demo")


def test_a_classic_server_gets_no_addresses_and_no_bye():
    assert protocol.for_classic_server(protocol.offer_message(SDP, "b")) == {"type": "offer", "sdp": SDP}
    assert protocol.for_classic_server(protocol.candidate_message(None)) == {"type": "candidate", "candidate": None}
    assert protocol.for_classic_server(protocol.bye_message("b")) is None


def test_relayed_messages_are_read_as_the_server_relays_them():
    for sent in ({"type": "offer", "sdp": SDP}, {"type": "answer", "sdp": SDP}, {"type": "bye"},
                 {"type": "candidate", "candidate": CANDIDATE}, {"type": "candidate", "candidate": None}):
        message = relayed(parse_message(sent), ALICE)
        assert protocol.parse_relayed(message) == message
        assert protocol.parse_relayed(sent) == sent  # a classic server stamps no from or name
    forged = {"type": "offer", "sdp": SDP, "from": "a", "name": "alice", "to": "b", "extra": [1]}
    assert protocol.parse_relayed(forged) == {"type": "offer", "sdp": SDP, "from": "a", "name": "alice"}
    stamped = {"type": "bye", "from": "a", "name": "\x1b[2Jmallory"}  # names are escaped where shown
    assert protocol.parse_relayed(stamped) == stamped


@pytest.mark.parametrize("payload, code", [
    (None, BAD_PAYLOAD), ("got user media", BAD_PAYLOAD), ([], BAD_PAYLOAD),
    ({"type": "_start-offer"}, UNKNOWN_TYPE), ({"type": "offer", "sdp": "hello"}, BAD_PAYLOAD),
    ({"type": "offer", "sdp": "v=0" + "a" * MAX_SDP_BYTES}, TOO_LARGE),
    ({"type": "candidate", "candidate": "candidate:1 1 udp 1 192.0.2.1 1 typ host"}, BAD_PAYLOAD),
    ({"type": "bye", "from": 5}, BAD_PAYLOAD), ({"type": "bye", "from": ""}, BAD_PAYLOAD),
    ({"type": "bye", "from": "x" * 65}, BAD_PAYLOAD), ({"type": "bye", "from": "a", "name": ["x"]}, BAD_NAME),
    ({"type": "bye", "from": "a", "name": "x" * (MAX_NAME_CHARS + 1)}, BAD_NAME),
])
def test_bad_relayed_messages_are_refused(payload, code):
    assert code_of(protocol.parse_relayed, payload) == code


def test_the_join_ack_is_read_whole_once():
    offer = {"type": "offer", "sdp": SDP, "from": "a", "name": "alice"}
    candidate = {"type": "candidate", "candidate": CANDIDATE, "from": "a", "name": "alice"}
    ack = protocol.parse_join_ack(join_ack(Member("c", "carol"), "demo", [ALICE, BOB], 3, [offer, candidate]))
    assert ack == protocol.JoinAck(Member("c", "carol"), [ALICE, BOB], [offer, candidate])
    assert ack.offerers == {"a"}
    unnamed = protocol.parse_join_ack({"ok": True, "id": "c"}, "carol")  # an older server: no members, no offers
    assert unnamed == protocol.JoinAck(Member("c", "carol"), [], [])


@pytest.mark.parametrize("payload", [{"ok": True}, {"ok": True, "id": 5}, {"ok": True, "id": "c", "members": {}},
                                     {"ok": True, "id": "c", "members": [{"name": "x"}]}])
def test_a_join_ack_no_server_of_ours_would_send_is_refused(payload):
    with pytest.raises(ProtocolError) as caught:
        protocol.parse_join_ack(payload)
    assert not isinstance(caught.value, protocol.Refusal) and caught.value.code == BAD_PAYLOAD


@pytest.mark.parametrize("payload", [
    {"ok": True, "id": "c" * 65}, {"ok": True, "id": "c", "name": "n" * 65}, {"ok": True, "id": "c", "name": 5},
    {"ok": True, "id": "c", "members": [{"id": "a" * 65, "name": "alice"}]},
    {"ok": True, "id": "c", "members": [{"id": "a", "name": "n" * 100_000}]},
    {"ok": True, "id": "c", "members": [{"id": "a", "name": "alice"}, {"id": "a", "name": "alice"}]},
])
def test_members_in_a_join_ack_are_bounded_and_listed_once_as_the_server_lists_them(payload):
    with pytest.raises(ProtocolError) as caught:
        protocol.parse_join_ack(payload)
    assert not isinstance(caught.value, protocol.Refusal)


def test_a_member_is_read_bounded():
    assert Member.from_payload({"id": "a" * 64, "name": "n" * 64}) == Member("a" * 64, "n" * 64)
    assert Member.from_payload({"id": "a", "name": None}) == Member("a", "")
    for payload in ({"id": "a" * 65}, {"id": "a", "name": "n" * 65}, {"id": "a", "name": ["n"]}):
        with pytest.raises(ProtocolError):
            Member.from_payload(payload)


@pytest.mark.parametrize("payload, code, reason", [
    (ProtocolError(ROOM_FULL, "room 'demo' is full").to_payload("join"), ROOM_FULL, "room 'demo' is full"),
    ({"ok": False}, "", "join refused"), (None, "", "join refused"), ("no", "", "join refused"),
    ({"ok": False, "code": ["x"], "error": {"a": 1}}, "", "join refused"),
    ({"ok": False, "code": "x" * 65, "error": "y" * 5000}, "", "y" * 200),
])
def test_a_refused_join_is_read_bounded(payload, code, reason):
    with pytest.raises(protocol.Refusal) as caught:
        protocol.parse_join_ack(payload)
    assert (caught.value.code, caught.value.reason) == (code, reason)


@settings(max_examples=200, deadline=None)
@given(payload=st.none() | st.fixed_dictionaries({}, optional={
    "type": st.sampled_from(protocol.MESSAGE_TYPES) | st.text(max_size=8), "sdp": st.just(SDP) | st.integers(),
    "candidate": st.none() | st.just(CANDIDATE) | st.text(max_size=8), "to": st.text(max_size=4) | st.none(),
    "from": st.text(max_size=70) | st.integers() | st.none(), "name": st.text(max_size=70) | st.integers() | st.none(),
    "ok": st.booleans(), "id": st.text(max_size=4) | st.integers(), "members": st.lists(st.just({"id": "a"}), max_size=2),
    "offers": st.lists(st.just({"type": "offer", "sdp": SDP, "from": "a"}), max_size=2),
    "code": st.text(max_size=4) | st.integers(), "error": st.text(max_size=4) | st.integers()}))
def test_what_the_peer_reads_only_ever_raises_protocol_errors(payload):
    for parse in (protocol.parse_relayed, protocol.parse_join_ack):
        try:
            result = parse(payload)
        except ProtocolError as error:
            assert isinstance(error.code, str) and isinstance(error.reason, str)
            continue
        if parse is protocol.parse_relayed:
            assert set(result) <= {"type", "sdp", "candidate", "from", "name"}
            json.dumps(result)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
KEYED = st.fixed_dictionaries({}, optional={
    "type": st.sampled_from(protocol.MESSAGE_TYPES) | JSON,
    "room": st.sampled_from(["demo", "a" * 64]) | JSON,
    "name": JSON, "token": JSON, "sdp": st.just(SDP) | JSON, "to": JSON,
    "candidate": st.fixed_dictionaries({}, optional={
        "candidate": JSON, "sdpMid": JSON, "sdpMLineIndex": JSON, "usernameFragment": JSON}) | JSON,
})


@settings(max_examples=300, deadline=None)
@given(payload=JSON | KEYED)
def test_validation_only_ever_raises_protocol_errors(payload):
    """Whatever arrives, the parsers either accept it or raise ProtocolError with a known code,
    and what they accept is plain JSON with only the keys the protocol defines."""
    codes = {BAD_PAYLOAD, BAD_ROOM, BAD_NAME, BAD_TOKEN, UNKNOWN_TYPE, TOO_LARGE}
    for parse in (parse_join, parse_message):
        try:
            result = parse(payload)
        except ProtocolError as error:
            assert error.code in codes
            json.dumps(error.to_payload("x"))
            continue
        if parse is parse_message:
            assert set(result) <= {"type", "sdp", "candidate", "to"}
            json.dumps(relayed(result, Member("a", "b")))


# rooms


def test_rooms_join_returns_who_was_there():
    rooms = Rooms(capacity=3)
    a, b, c = Member("a", "alice"), Member("b", "bob"), Member("c", "carol")
    assert rooms.join("r", a) == []
    assert rooms.join("r", b) == [a]
    assert rooms.join("r", c) == [a, b]
    assert rooms.members("r") == [a, b, c]
    assert rooms.room_of("b") == "r"
    assert rooms.member("c") == c
    assert len(rooms) == 1


def test_full_room_refuses_and_changes_nothing():
    rooms = Rooms(capacity=2)
    a, b, c = Member("a", ""), Member("b", ""), Member("c", "")
    rooms.join("r", a)
    rooms.join("r", b)
    assert code_of(rooms.join, "r", c) == ROOM_FULL
    assert rooms.members("r") == [a, b]
    assert rooms.room_of("c") is None and rooms.member("c") is None
    assert rooms.join("other", c) == []  # other rooms are not affected


def test_capacity_one():
    rooms = Rooms(capacity=1)
    rooms.join("r", Member("a", ""))
    assert code_of(rooms.join, "r", Member("b", "")) == ROOM_FULL


def test_second_join_refused_even_to_the_same_room():
    rooms = Rooms()
    a = Member("a", "")
    rooms.join("r", a)
    assert code_of(rooms.join, "r", a) == ALREADY_JOINED
    assert code_of(rooms.join, "s", Member("a", "renamed")) == ALREADY_JOINED
    assert rooms.members("r") == [a] and rooms.members("s") == []
    assert len(rooms) == 1


def test_leave_frees_the_place_and_forgets_empty_rooms():
    rooms = Rooms(capacity=2)
    a, b, c = Member("a", "alice"), Member("b", "bob"), Member("c", "carol")
    rooms.join("r", a)
    rooms.join("r", b)
    assert rooms.leave("a") == ("r", a)
    assert rooms.leave("a") is None
    assert rooms.room_of("a") is None
    assert rooms.join("r", c) == [b]
    assert rooms.leave("b") == ("r", b)
    assert rooms.leave("c") == ("r", c)
    assert len(rooms) == 0 and rooms.members("r") == []
    assert rooms.leave("nobody") is None
    # After leaving, the same id may join again anywhere.
    assert rooms.join("s", a) == []
    assert rooms.room_of("a") == "s"


def test_rooms_are_independent():
    rooms = Rooms(capacity=2)
    rooms.join("x", Member("a", ""))
    rooms.join("y", Member("b", ""))
    assert [m.id for m in rooms.members("x")] == ["a"]
    assert [m.id for m in rooms.members("y")] == ["b"]
    assert len(rooms) == 2


def test_an_offer_to_nobody_is_kept_for_the_next_member(caplog):
    caplog.set_level("DEBUG", logger="signaling")
    rooms = Rooms(capacity=3)
    rooms.join("r", ALICE)
    offer = relayed({"type": "offer", "sdp": SDP}, ALICE)
    candidates = [relayed({"type": "candidate", "candidate": {**CANDIDATE, "candidate": f"c{n}"}}, ALICE)
                  for n in range(MAX_KEPT_CANDIDATES + 5)]
    rooms.keep("a", relayed({"type": "candidate", "candidate": CANDIDATE}, ALICE))  # no offer yet: not kept
    rooms.keep("a", relayed({"type": "offer", "sdp": SDP.replace("s=-", "s=old")}, ALICE))
    rooms.keep("a", candidates[0])
    rooms.keep("a", offer)  # a newer offer replaces the old one and its candidates
    for candidate in candidates:
        rooms.keep("a", candidate)
    rooms.keep("a", relayed({"type": "answer", "sdp": SDP}, ALICE))
    rooms.keep("a", relayed({"type": "bye"}, ALICE))
    rooms.keep("nobody", offer)
    assert rooms.take_offers("elsewhere") == []
    rooms.join("r", BOB)
    assert rooms.take_offers("r") == [offer, *candidates[:MAX_KEPT_CANDIDATES]]
    assert len([line for line in caplog.messages if "candidates" in line]) == 1, "one line for the drop"
    assert rooms.take_offers("r") == [], "an offer is handed out once"
    rooms.keep("a", offer)  # someone is there to receive it now
    assert rooms.take_offers("r") == []


def test_a_kept_offer_goes_with_its_member():
    rooms = Rooms(capacity=2)
    rooms.join("r", ALICE)
    rooms.join("s", BOB)
    for member in (ALICE, BOB):
        rooms.keep(member.id, relayed({"type": "offer", "sdp": SDP}, member))
    rooms.leave("a")
    rooms.leave("b")
    assert rooms._pending == {}, "nothing is held for members that left"
    rooms.join("s", BOB)
    rooms.join("r", ALICE)
    rooms.join("r", Member("c", "carol"))
    rooms.join("s", Member("d", "dave"))
    assert rooms.take_offers("s") == [] and rooms.take_offers("r") == []


# tokens

SECRET = "s3cret"


def test_token_admits_to_its_room_until_it_expires():
    token = make_token(SECRET, "demo", ttl=60, now=1000)
    expiry, mac = token.split(".")
    assert expiry == "1060" and len(mac) == 64 and int(mac, 16) >= 0
    assert check_token(SECRET, "demo", token, now=1000) is None
    assert check_token(SECRET, "demo", token, now=1060) is None
    assert "expired" in check_token(SECRET, "demo", token, now=1061)


def test_token_with_default_clock():
    assert check_token(SECRET, "demo", make_token(SECRET, "demo")) is None
    assert "expired" in check_token(SECRET, "demo", make_token(SECRET, "demo", ttl=-5))


def test_token_matches_the_documented_formula():
    import hashlib
    import hmac
    expected = hmac.new(SECRET.encode(), b"demo\n1060", hashlib.sha256).hexdigest()
    assert make_token(SECRET, "demo", ttl=60, now=1000) == f"1060.{expected}"


def test_token_refused_for_another_room_secret_or_expiry():
    token = make_token(SECRET, "demo", ttl=60, now=1000)
    assert "not valid" in check_token(SECRET, "other", token, now=1000)
    assert "not valid" in check_token("another secret", "demo", token, now=1000)
    tampered = "9999" + token[4:]
    assert "not valid" in check_token(SECRET, "demo", tampered, now=1000)


@pytest.mark.parametrize("token", [
    None, "", ".", "1060", "1060.", ".abc", "abc.def", "-1.abc", "1e3.abc", " 1.abc",
    "1.é", "²." + "a" * 64, "١٢." + "a" * 64, "1." + "\udcff" * 64, "1.a.b",
])
def test_malformed_tokens_are_refused_not_raised(token):
    reason = check_token(SECRET, "demo", token, now=0)
    assert isinstance(reason, str) and reason


@settings(max_examples=200, deadline=None)
@given(token=st.text(max_size=80) | st.from_regex(r"\A[0-9]{1,12}\.[0-9a-f]{0,64}\Z"))
def test_any_token_text_gets_an_answer(token):
    reason = check_token(SECRET, "demo", token, now=0)
    assert reason is None or isinstance(reason, str)
    assert reason is not None  # guessing a valid MAC is not possible


def test_token_command_prints_a_token(capsys, monkeypatch):
    monkeypatch.delenv("SIGNALING_TOKEN_SECRET", raising=False)
    token_main(["--secret", SECRET, "--room", "demo", "--ttl", "30"])
    token = capsys.readouterr().out.strip()
    assert check_token(SECRET, "demo", token) is None
    assert check_token(SECRET, "other", token) is not None


def test_token_command_reads_the_secret_from_the_environment(capsys, monkeypatch):
    monkeypatch.setenv("SIGNALING_TOKEN_SECRET", SECRET)
    token_main(["--room", "demo"])
    assert check_token(SECRET, "demo", capsys.readouterr().out.strip()) is None


def test_token_command_needs_a_secret(capsys, monkeypatch):
    monkeypatch.delenv("SIGNALING_TOKEN_SECRET", raising=False)
    with pytest.raises(SystemExit) as exited:
        token_main(["--room", "demo"])
    assert exited.value.code == 2
    assert "secret" in capsys.readouterr().err


def test_error_codes_are_distinct():
    codes = [protocol.BAD_PAYLOAD, protocol.BAD_ROOM, protocol.BAD_NAME, protocol.UNKNOWN_TYPE, protocol.TOO_LARGE,
             protocol.NOT_JOINED, protocol.ALREADY_JOINED, protocol.ROOM_FULL, protocol.BAD_TOKEN,
             protocol.UNKNOWN_TARGET]
    assert len(set(codes)) == len(codes)
    assert NOT_JOINED == "not-joined"
