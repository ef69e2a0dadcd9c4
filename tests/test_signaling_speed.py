"""What the signaling server's speed-ups (signaling/fastpath.py, uvloop in ``python -m signaling``)
could break, checked against real servers: every transport still works, a client's events are
still handled in the order sent, hostile JSON meets the rules it always met, the server a peer
hosts in-process still relays. How fast it is lives in bench/signaling_server.py, not here."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import aiohttp
import pytest
from engineio import json as engineio_json

from conftest import Server
from signaling import SignalingServer
from signaling.server import ServerConfig
from signaling.fastpath import Deadline, FastJSON, holds_binary
from test_attack_server import RawSocket, assert_log_short
from test_signaling_server import CANDIDATE, TIMEOUT, Client, assert_clean, relay, sdp, unique


@pytest.fixture
def plain():
    started = Server()
    yield started
    started.stop()


@pytest.mark.parametrize("transports", [("websocket",), ("polling", "websocket")], ids=["websocket", "upgraded"])
async def test_python_m_signaling_runs_on_uvloop_and_relays_over_every_transport(plain, transports):
    """As a user starts it: on uvloop, and a python-socketio client relays both ways, over a
    websocket from the start (our own read loop) and over long-polling upgraded to one (the
    library's, as browsers connect)."""
    maps = Path(f"/proc/{plain.proc.pid}/maps").read_text()
    assert "uvloop" in maps, "python -m signaling is not running on uvloop"
    a, b = Client(plain.url), Client(plain.url)
    await a.connect(transports)
    await b.connect(transports)
    try:
        room = unique("transports")
        await a.join(room, "alice")
        await b.join(room, "bob")
        await relay(b, a, "offer", to=a.id)
        await relay(a, b, "answer", to=b.id)
        await relay(a, b, "offer")  # to the room, no ``to``
    finally:
        await asyncio.gather(a.close(), b.close())
    assert_clean(plain)


async def test_a_clients_events_are_handled_in_the_order_sent(plain):
    """Events are handled as they are read, one after another: an offer and the candidates
    sent right behind it, without waiting for any ack, arrive in that order."""
    receiver = Client(plain.url)
    await receiver.connect()
    sender = await RawSocket.websocket(plain.port)
    try:
        await sender.socketio()
        room = unique("order")
        await receiver.join(room, "receiver")
        assert (await sender.call(0, "join", {"room": room, "name": "sender"}))["ok"]
        await sender.send("42" + json.dumps(["message", {"type": "offer", "sdp": sdp("order")}]))
        for index in range(30):
            await sender.send("42" + json.dumps(["message", {"type": "candidate",
                                                              "candidate": dict(CANDIDATE, sdpMid=str(index))}]))
        assert (await receiver.expect("message"))["type"] == "offer"
        for index in range(30):
            assert (await receiver.expect("message"))["candidate"]["sdpMid"] == str(index)
    finally:
        sender.close()
        await receiver.close()
    assert_clean(plain)


HOSTILE_JSON = [
    "1" * 30, "1" * 101, "-" + "9" * 25, "18446744073709551616", "1e400", "-1e400", "NaN", "Infinity",
    '"\\ud800"', '"\\udc00x"', '["\\ud83d\\ude00"]', '{"a":1,"a":2}', "[" * 400 + "]" * 400,
    "[" * 5000 + "]" * 5000, '{"a":' * 3000 + "1" + "}" * 3000, '"\u2028"', "[1,]", "", "  ", '["x"', "0.1e1", "-0",
    # 19 digits below -2**63: orjson reads them as floats
    "-9223372036854775809", "[-9999999999999999999]",
]


@pytest.mark.parametrize("text", HOSTILE_JSON, ids=range(len(HOSTILE_JSON)))
def test_hostile_json_is_read_as_the_standard_library_reads_it(text):
    """Same value, or the same refusal (a ValueError, which drops the client), as python-engineio's
    JSON; nesting too deep is a ValueError too, not a RecursionError. (Too deep: past 1024 for
    orjson; for the standard library, past what is left of Python's recursion limit, so some
    hundreds of levels less, depending on where it is called.)"""
    try:
        expected = engineio_json.loads(text)
    except (ValueError, RecursionError):
        with pytest.raises(ValueError):
            FastJSON.loads(text)
        return
    got = FastJSON.loads(text)
    assert json.dumps(got) == json.dumps(expected) and type(got) is type(expected)


@pytest.mark.parametrize("value", ["\ud800 lone", 2 ** 70, {"sdp": "v=0 é \u2028"}, [None, True, 1.5]],
                         ids=["lone surrogate", "big integer", "non-ascii", "plain"])
def test_what_orjson_will_not_write_is_written_by_the_standard_library(value):
    assert json.loads(FastJSON.dumps(value)) == value


def test_binary_is_found_at_any_depth():
    assert holds_binary([{"a": [1, {"b": b"x"}]}]) and holds_binary(bytearray(b"x"))
    assert not holds_binary([{"a": [1, {"b": "x"}]}, None, 2.5])
    deep: list = []
    for _ in range(10_000):  # deeper than recursion could go
        deep = [deep]
    assert not holds_binary(deep)


async def test_hostile_json_through_the_server(plain):
    """Through a real server: a name with an escaped lone surrogate is refused as a bad name
    (not read as broken JSON); an SDP carrying one is relayed as it came; integers beyond
    64 bits are refused as before (a field out of range, or more than 100 digits: a
    packet that cannot be decoded); JSON nested too deep drops the client in one line."""
    receiver = Client(plain.url)
    await receiver.connect()
    raw = await RawSocket.websocket(plain.port)
    try:
        await raw.socketio()
        await raw.send('420["join",{"room":"x","name":"\\ud800"}]')
        assert (await raw.ack(0, "join"))["code"] == "bad-name"
        room = unique("hostile")
        await receiver.join(room, "receiver")
        assert (await raw.call(1, "join", {"room": room, "name": "sender"}))["ok"]
        await raw.send('422["message",{"type":"offer","sdp":"v=0\\r\\ns=\\ud800\\r\\n"}]')
        assert await raw.ack(2, "message") == {"ok": True}
        assert (await receiver.expect("message"))["sdp"] == "v=0\r\ns=\ud800\r\n"
        await raw.send('423["message",{"type":"candidate","candidate":{"candidate":"","sdpMLineIndex":'
                       + "1" * 30 + "}}]")
        assert (await raw.ack(3, "message"))["code"] == "bad-payload"
        await raw.send('424["message",{"type":"candidate","candidate":{"sdpMLineIndex":' + "1" * 101 + "}}]")
        assert await raw.closed()
    finally:
        raw.close()
        await receiver.close()
    nested = await RawSocket.websocket(plain.port)
    try:
        await nested.socketio()
        await nested.send('42["message",' + "[" * 5000 + "]" * 5000 + "]")
        assert await nested.closed()
    finally:
        nested.close()
    plain.expect(r"dropped client .*: bad packet \(JSON nested too deeply\)", timeout=TIMEOUT)
    assert_log_short(plain, most=20)


async def test_the_server_a_peer_hosts_relays_on_asyncio():
    """The embedded server runs on the peer's own loop (asyncio's here), with the same fast path."""
    server = SignalingServer()
    port = await server.start("127.0.0.1", 0)
    a, b = Client(f"http://127.0.0.1:{port}"), Client(f"http://127.0.0.1:{port}")
    try:
        await asyncio.gather(a.connect(), b.connect(("polling", "websocket")))
        room = unique("embedded")
        await a.join(room, "alice")
        await b.join(room, "bob")
        await relay(b, a, "offer", to=a.id)
        await relay(a, b, "answer")
    finally:
        await asyncio.gather(a.close(), b.close())
        await server.stop()


async def test_a_deadline_expires_only_when_nothing_touched_it():
    expired = asyncio.Event()
    deadline = Deadline(0.2, expired.set)
    for _ in range(6):  # 0.3 s of touches, each well within the deadline
        await asyncio.sleep(0.05)
        deadline.touch()
    assert not expired.is_set()
    await asyncio.wait_for(expired.wait(), 2)
    deadline.cancel()


CLOSING = TIMEOUT + 15
"""aiohttp waits up to 10 s for a client to answer a websocket close, then cuts it."""


async def chatter(raw: RawSocket) -> None:
    """Engine.IO noops, again and again: frames that keep a connection busy, not alive."""
    with contextlib.suppress(ConnectionError):
        while True:
            await raw.send("6")
            await asyncio.sleep(0.1)


async def test_a_websocket_whose_session_ended_is_closed_however_it_chatters(plain):
    """A client that closed its Engine.IO session ("1") but goes on sending frames: the
    connection ends (python-engineio's loop ended it once nothing was queued for ping
    interval plus ping timeout; a loop that only watches reads would keep it for ever), and
    what it sends after is not handled (a Socket.IO connect on the closed session)."""
    raw = await RawSocket.websocket(plain.port)
    busy = None
    try:
        await raw.socketio()
        await raw.send("1")
        await raw.send("40")
        busy = asyncio.ensure_future(chatter(raw))
        assert await raw.closed(timeout=CLOSING)
    finally:
        if busy is not None:
            busy.cancel()
        raw.close()
    assert_log_short(plain, most=20)


async def test_a_websocket_client_that_stops_answering_pings_is_closed_however_it_chatters():
    """A client that never answers a ping but keeps sending frames: its session ends at the
    ping timeout, and its connection with it."""
    server = SignalingServer(ServerConfig(idle_timeout=0.5))
    port = await server.start("127.0.0.1", 0)
    server.sio.eio.ping_interval = 0.5
    raw = await RawSocket.websocket(port)
    busy = None
    try:
        assert (await raw.receive()).startswith("0{")
        await raw.send("40")
        busy = asyncio.ensure_future(chatter(raw))
        assert await raw.closed(timeout=CLOSING)  # reads, and answers no ping
        assert not server.connections
    finally:
        if busy is not None:
            busy.cancel()
        raw.close()
        await server.stop()


DEEP = "[" * 5000


@pytest.mark.parametrize("frames", [
    ["4" + DEEP] * 3,  # an Engine.IO message whose data is JSON nested too deep
    ['451-["message",' + "[" * 900 + '{"_placeholder":true,"num":0}' + "]" * 900 + "]", b"\x04attachment"],
], ids=["engineio-message", "attachment-placeholder"])
async def test_json_nested_too_deep_anywhere_drops_the_client_in_one_line(plain, frames):
    raw = await RawSocket.websocket(plain.port)
    try:
        await raw.socketio()
        with contextlib.suppress(ConnectionError):  # cut off at the first
            for frame in frames:
                await raw.send(frame)
        assert await raw.closed()
    finally:
        raw.close()
    await asyncio.sleep(0.2)
    assert_log_short(plain, most=20)


async def test_json_nested_too_deep_in_a_polling_post_drops_the_client_in_one_line(plain):
    base = f"{plain.url}/socket.io/?EIO=4&transport=polling"
    async with aiohttp.ClientSession() as http:
        async with http.get(base) as response:
            sid = json.loads((await response.text())[1:])["sid"]
        async with http.post(f"{base}&sid={sid}", data="40") as response:
            assert response.status == 200
        async with http.post(f"{base}&sid={sid}", data="4" + DEEP) as response:
            await response.read()
        async with http.get(f"{base}&sid={sid}") as response:
            assert response.status == 400  # the session is gone
    plain.expect(rf"dropped client {sid}: bad packet", timeout=TIMEOUT)
    assert_log_short(plain, most=20)


@pytest.mark.parametrize("transports", [("websocket",), ("polling", "websocket")], ids=["websocket", "upgraded"])
async def test_what_a_client_sends_after_closing_its_session_is_not_handled(plain, transports):
    """After its Engine.IO close ("1"), a Socket.IO connect on the same websocket is not
    handled (the library fails on it with a traceback: the session's environ is gone)."""
    raw = await (RawSocket.upgraded(plain.port) if "polling" in transports else RawSocket.websocket(plain.port))
    try:
        if "polling" not in transports:
            await raw.socketio()
        await raw.send("1")
        with contextlib.suppress(ConnectionError):
            for _ in range(3):
                await raw.send("40")
                await raw.send('42["join",{"room":"after","name":"zombie"}]')
        await asyncio.sleep(0.5)
    finally:
        raw.close()
    assert_log_short(plain, most=20)
