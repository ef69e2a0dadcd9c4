"""The signaling server as a real process on 127.0.0.1, driven by real Socket.IO clients.

Every wait is bounded: acks time out after 5 s, expected events after 5 s.
Servers are started once per module (one per configuration); each test uses its own room
names, and tests that count members on /healthz first wait for the server to be empty.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import itertools
import json
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import aiohttp
import pytest
import socketio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import LOCAL, ROOT, Process, Server, child_env, free_port
from signaling.token import make_token

TIMEOUT = 5.0
SECRET = "test-secret"
CODES = {"bad-payload", "bad-room", "bad-name", "unknown-type", "too-large", "not-joined", "already-joined",
         "room-full", "bad-token", "unknown-target"}
_rooms = itertools.count()


def unique(prefix: str) -> str:
    """A room name no other test uses on the same server."""
    return f"{prefix}-{next(_rooms)}"


def sdp(tag: str) -> str:
    return f"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns={tag}\r\nt=0 0\r\n"


CANDIDATE = {"candidate": "candidate:1 1 udp 2130706431 192.0.2.7 50000 typ host",
             "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": "ufrg"}


# Servers


def health(url: str) -> dict:
    context = ssl._create_unverified_context() if url.startswith("https") else None
    with urllib.request.urlopen(f"{url}/healthz", timeout=TIMEOUT, context=context) as response:
        return json.load(response)


async def settle(server: Any, **expected: int) -> dict:
    """Wait (bounded) until /healthz shows ``expected`` (the server handles disconnects a
    moment after the client has gone); fail with what it shows otherwise."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        now = await asyncio.to_thread(health, server.url)
        if all(now[key] == value for key, value in expected.items()) or time.monotonic() > deadline:
            assert {key: now[key] for key in expected} == expected
            return now
        await asyncio.sleep(0.05)


def assert_clean(server: Process) -> None:
    """No handler of the server raised: a refusal is an answer, never a traceback."""
    output = server.output
    for marker in ("Traceback", "Task exception"):
        where = output.find(marker)
        assert where < 0, f"the server logged {marker}:\n{output[max(0, where - 500):where + 3000]}"


@contextmanager
def serving(server: Process, url: str = "", ready: str = ""):
    """A started server (``ready``: a log line to wait for first), stopped afterwards, and
    its log checked."""
    if url:
        server.url = url
    try:
        if ready:
            server.expect(ready, timeout=15)
        yield server
    finally:
        server.stop()
    assert_clean(server)


@pytest.fixture(scope="module")
def plain():
    """The default server: rooms of 2, no token, any origin."""
    with serving(Server()) as started:
        yield started


@pytest.fixture(scope="module")
def unthrottled():
    """The default server but for its join rate: a fuzzer joins faster than the limit per
    address allows (the limit has its own tests, in test_attack_server.py)."""
    with serving(Server("--join-rate", "100000", "--join-burst", "100000")) as started:
        yield started


@pytest.fixture(scope="module")
def trio():
    with serving(Server("--room-size", "3")) as started:
        yield started


@pytest.fixture(scope="module")
def tokens():
    with serving(Server("--token-secret", SECRET)) as started:
        yield started


@pytest.fixture(scope="module")
def origins():
    with serving(Server("--allowed-origins", "http://good.example, https://also.example:8443")) as started:
        yield started


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    """A server on https with a self-signed certificate for 127.0.0.1."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, LOCAL)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(LOCAL))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    port = free_port()
    url = f"https://{LOCAL}:{port}"
    with serving(Process([sys.executable, "-m", "signaling", "--host", LOCAL, "--port", str(port),
                          "--cert", str(cert_file), "--key", str(key_file)], name="signaling-tls"),
                 url, f"listening: peers use --server {url}") as started:
        yield started


# Clients


@dataclass
class Seen:
    event: str
    payload: Any
    read: bool = False


@dataclass
class Client:
    """A Socket.IO client that records every event it receives, to be awaited in order."""

    url: str
    ssl_verify: bool = True
    id: Optional[str] = None
    name: Optional[str] = None
    events: list[Seen] = field(default_factory=list)
    headers: Optional[dict] = None
    """Sent with the handshake when connected as ``async with Client(...)``."""

    def __post_init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False, ssl_verify=self.ssl_verify)
        self._arrived = asyncio.Event()
        self.sio.on("*", self._record)

    async def _record(self, event: str, *args: Any) -> None:
        self.events.append(Seen(event, args[0] if len(args) == 1 else list(args)))
        self._arrived.set()

    async def connect(self, transports: tuple[str, ...] = ("websocket",), headers: Optional[dict] = None) -> None:
        await asyncio.wait_for(self.sio.connect(self.url, transports=list(transports), headers=headers or {},
                                                wait_timeout=TIMEOUT), TIMEOUT * 2)

    async def call(self, event: str, *args: Any) -> Any:
        """Emit ``event`` with ``args`` as its arguments (none: no payload at all) and return the ack."""
        return await self.sio.call(event, tuple(args), timeout=TIMEOUT)

    async def join(self, room: str, name: str = "", **extra: Any) -> dict:
        ack = await self.call("join", {"room": room, "name": name, **extra})
        assert ack["ok"] is True, ack
        self.id, self.name = ack["id"], ack["name"]
        return ack

    async def refused(self, event: str, *args: Any) -> str:
        """Send what the server must refuse: the ack and the ``error`` event agree; the code."""
        ack = await self.call(event, *args)
        assert ack["ok"] is False and ack["event"] == event and ack["code"] in CODES, ack
        assert isinstance(ack["error"], str) and ack["error"], ack
        assert await self.expect("error") == ack
        return ack["code"]

    async def expect(self, event: str, where: Callable[[Any], bool] = lambda payload: True,
                     timeout: float = TIMEOUT) -> Any:
        """The first unread ``event`` that matches ``where``, waiting for it if need be."""
        deadline = time.monotonic() + timeout
        while True:
            for seen in self.events:
                if not seen.read and seen.event == event and where(seen.payload):
                    seen.read = True
                    return seen.payload
            self._arrived.clear()
            left = deadline - time.monotonic()
            try:
                await asyncio.wait_for(self._arrived.wait(), max(left, 0))
            except asyncio.TimeoutError:
                raise AssertionError(f"no {event!r} within {timeout} s; got {self.events}") from None

    def unread(self, event: str) -> list[Any]:
        return [seen.payload for seen in self.events if seen.event == event and not seen.read]

    def seen(self, event: str) -> list[Any]:
        return [seen.payload for seen in self.events if seen.event == event]

    async def sync(self) -> None:
        """A round trip through the server: whatever it sent us before now has arrived.
        (It answers on one ordered connection, so anything queued for us comes first.)"""
        ack = await self.call("message", {"type": "sync"})
        assert ack["code"] == "unknown-type", ack
        await self.expect("error", lambda payload: payload == ack)
        self.events = [seen for seen in self.events if not (seen.event == "error" and seen.payload == ack)]

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.sio.disconnect(), TIMEOUT)
        except (asyncio.TimeoutError, OSError):
            pass

    async def __aenter__(self) -> "Client":
        await self.connect(headers=self.headers)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


@pytest.fixture
async def connect():
    """``await connect(server)``: a connected Client, disconnected at the end of the test."""
    made: list[Client] = []

    async def make(server: Any, **options: Any) -> Client:
        client = Client(server.url, ssl_verify=not server.url.startswith("https"))
        made.append(client)
        await client.connect(**options)
        return client

    yield make
    await asyncio.gather(*(client.close() for client in made))


async def relay(sender: Client, receiver: Client, kind: str = "offer", **extra: Any) -> dict:
    """``sender`` sends a message of ``kind``; ``receiver`` gets it stamped with the sender."""
    body = {"type": kind, "sdp": sdp(unique(kind))} if kind in ("offer", "answer") else {"type": kind}
    assert await sender.call("message", {**body, **extra}) == {"ok": True}
    got = await receiver.expect("message", lambda m: m.get("type") == kind and m.get("sdp") == body.get("sdp"))
    assert got == {**body, "from": sender.id, "name": sender.name}
    return got


async def call_in(server: Any, connect: Any, room: str, names: tuple[str, str] = ("alice", "bob")) -> tuple[Client, Client]:
    """Two members of ``room``, the first already there when the second joins; the
    presence events of their joining are read."""
    a, b = await connect(server), await connect(server)
    await a.join(room, names[0])
    await b.join(room, names[1])
    assert await a.expect("peer-joined") == {"id": b.id, "name": names[1]}
    assert [await a.expect("userInRoom"), await a.expect("userInRoom"), await b.expect("userInRoom")] == [1, 2, 2]
    return a, b


async def nothing_crossed(*clients: Client) -> None:
    """After a round trip each, no client holds a message, presence event or error it was
    not expecting."""
    await asyncio.gather(*(client.sync() for client in clients))
    for client in clients:
        for event in ("message", "peer-joined", "peer-left", "error"):
            assert client.unread(event) == [], f"{client.name or client.id} got unexpected {event}"


# Two members, offers and answers


async def test_join_acks_and_offer_answer_relay(plain, connect):
    room = unique("call")
    a, b = await connect(plain), await connect(plain)
    ack_a = await a.join(room, "alice")
    assert ack_a == {"ok": True, "id": a.id, "name": "alice", "room": room, "members": [], "capacity": 2,
                     "offers": []}
    assert isinstance(a.id, str) and a.id
    assert await a.expect("userInRoom") == 1

    ack_b = await b.join(room, "  bob ")
    assert ack_b == {"ok": True, "id": b.id, "name": "bob", "room": room,
                     "members": [{"id": a.id, "name": "alice"}], "capacity": 2, "offers": []}
    assert b.id != a.id
    assert await a.expect("peer-joined") == {"id": b.id, "name": "bob"}
    assert await a.expect("userInRoom") == 2
    assert await b.expect("userInRoom") == 2

    # The offerer rule: the newcomer offers to those listed in its ack.
    offer = await relay(b, a, "offer", to=a.id)
    assert "to" not in offer
    await relay(a, b, "answer", to=b.id)
    await relay(a, b, "answer")  # without `to`: everyone else in the room

    # Trickled candidates, then the end of candidates both ways it can be written.
    assert await b.call("message", {"type": "candidate", "candidate": CANDIDATE, "to": a.id}) == {"ok": True}
    assert await a.expect("message") == {"type": "candidate", "candidate": CANDIDATE, "from": b.id, "name": "bob"}
    assert await b.call("message", {"type": "candidate", "candidate": {**CANDIDATE, "candidate": ""}}) == {"ok": True}
    assert (await a.expect("message"))["candidate"]["candidate"] == ""
    assert await b.call("message", {"type": "candidate", "candidate": None}) == {"ok": True}
    assert await a.expect("message") == {"type": "candidate", "candidate": None, "from": b.id, "name": "bob"}

    # A forged sender and unknown fields do not survive the relay.
    assert await b.call("message", {"type": "bye", "from": a.id, "name": "mallory", "extra": [1]}) == {"ok": True}
    assert await a.expect("message") == {"type": "bye", "from": b.id, "name": "bob"}

    await nothing_crossed(a, b)
    assert b.seen("peer-joined") == [] and a.seen("peer-left") == []
    assert a.seen("userInRoom") == [1, 2] and b.seen("userInRoom") == [2]


async def test_to_reaches_exactly_one_member(trio, connect):
    room = unique("trio")
    a, b, c = await connect(trio), await connect(trio), await connect(trio)
    assert (await a.join(room, "alice"))["capacity"] == 3
    await b.join(room, "bob")
    assert (await c.join(room, "carol"))["members"] == [{"id": a.id, "name": "alice"}, {"id": b.id, "name": "bob"}]
    assert [(await a.expect("peer-joined"))["id"], (await a.expect("peer-joined"))["id"]] == [b.id, c.id]
    assert (await b.expect("peer-joined"))["id"] == c.id

    # Carol offers to each member of her ack, one by one.
    await relay(c, a, "offer", to=a.id)
    await relay(c, b, "offer", to=b.id)
    await relay(b, c, "answer", to=c.id)
    await nothing_crossed(a, b, c)

    # Without `to`, everyone else gets it once; the sender does not.
    await relay(a, b, "bye")
    assert await c.expect("message") == {"type": "bye", "from": a.id, "name": "alice"}
    await nothing_crossed(a, b, c)


# Classic clients


async def test_classic_client_bare_join_counts_and_relay(plain, connect):
    room, elsewhere = unique("classic"), unique("elsewhere")
    outsider = await connect(plain)
    await outsider.join(elsewhere, "outsider")
    assert await outsider.expect("userInRoom") == 1

    first, second = await connect(plain), await connect(plain)
    await first.sio.emit("join", room)  # no ack asked, as classic clients do
    assert await first.expect("userInRoom") == 1
    await second.sio.emit("join", room)
    assert await first.expect("userInRoom") == 2
    assert await second.expect("userInRoom") == 2
    second_id = second.sio.get_sid()
    joined = await first.expect("peer-joined")  # an addition a classic client just ignores
    assert joined["id"] == second_id and joined["name"].startswith("guest-")

    # The second member's offer reaches the first, who answers; candidates follow.
    offer = {"type": "offer", "sdp": sdp("classic-offer")}
    await second.sio.emit("message", offer)
    got = await first.expect("message")
    assert {key: got[key] for key in offer} == offer
    assert got["from"] == second_id and got["name"] == joined["name"]
    await first.sio.emit("message", {"type": "answer", "sdp": sdp("classic-answer")})
    assert (await second.expect("message"))["sdp"] == sdp("classic-answer")
    for candidate in (CANDIDATE, {"candidate": "", "sdpMid": "0", "sdpMLineIndex": 0}):
        await second.sio.emit("message", {"type": "candidate", "candidate": candidate})
        assert (await first.expect("message"))["candidate"]["candidate"] == candidate["candidate"]

    await second.close()
    assert await first.expect("userInRoom") == 1
    assert (await first.expect("peer-left"))["id"] == second_id

    await nothing_crossed(outsider, first)
    assert outsider.seen("userInRoom") == [1], "head counts of another room leaked"
    assert outsider.seen("message") == []


async def offer_alone(server: Any, connect: Any, room: str, candidates: int = 3) -> tuple[Client, list[dict]]:
    """A classic client alone in ``room`` that offers on joining, into the empty room, and
    trickles ``candidates``; the messages as the server stamps them, once it has them all."""
    classic = await connect(server)
    await classic.sio.emit("join", room)
    assert await classic.expect("userInRoom") == 1
    sent = [{"type": "offer", "sdp": sdp(unique("alone"))}] + [
        {"type": "candidate", "candidate": {**CANDIDATE, "candidate": f"candidate:{n} 1 udp 1 192.0.2.7 {n} typ host"}}
        for n in range(candidates)]
    for message in sent:
        await classic.sio.emit("message", message)  # no acks, as classic clients do
    await classic.sync()
    classic.id = classic.sio.get_sid()
    classic.name = f"guest-{classic.id[:4]}"
    return classic, [{**message, "from": classic.id, "name": classic.name} for message in sent]


async def test_an_offer_that_reached_nobody_goes_to_the_next_member(trio, connect):
    room = unique("waiting")
    classic, kept = await offer_alone(trio, connect, room)
    newcomer, later = await connect(trio), await connect(trio)
    ack = await newcomer.join(room, "alice")
    assert ack["members"] == [{"id": classic.id, "name": classic.name}]
    assert ack["offers"] == kept
    assert await classic.expect("peer-joined") == {"id": newcomer.id, "name": "alice"}

    # The newcomer answers it; what the classic client sends now is relayed, as ever.
    await relay(newcomer, classic, "answer", to=classic.id)
    await classic.sio.emit("message", {"type": "candidate", "candidate": None})
    assert await newcomer.expect("message") == {"type": "candidate", "candidate": None,
                                                "from": classic.id, "name": classic.name}
    await relay(classic, newcomer, "offer")  # with someone to hear it, an offer is not kept

    # An offer is answered once.
    assert (await later.join(room, "bob"))["offers"] == []
    assert (await newcomer.expect("peer-joined"))["id"] == later.id
    assert (await classic.expect("peer-joined"))["id"] == later.id
    await nothing_crossed(newcomer, later)
    assert later.seen("message") == []


async def test_any_join_makes_a_kept_offer_moot(plain, connect):
    """A classic newcomer offers itself; the kept offer is dropped, not handed to whoever
    comes after it."""
    room = unique("moot")
    first, _ = await offer_alone(plain, connect, room)
    second = await connect(plain)
    assert (await second.call("join", room))["offers"] == []  # a bare-string join that asks for an ack
    assert await second.call("leave") == {"ok": True}
    newcomer = await connect(plain)
    assert (await newcomer.join(room, "alice"))["offers"] == []


async def test_an_offer_that_reached_someone_is_not_kept(plain, connect):
    room = unique("heard")
    a, b = await call_in(plain, connect, room)
    await relay(a, b, "offer")  # no `to`: Bob hears it
    await b.close()
    assert await a.expect("peer-left") == {"id": b.id, "name": "bob"}
    carol = await connect(plain)
    assert (await carol.join(room, "carol"))["offers"] == []


async def test_a_member_takes_its_kept_offer_along(plain, connect):
    room = unique("gone")
    a, b = await connect(plain), await connect(plain)
    await a.join(room, "alice")
    assert await a.call("message", {"type": "offer", "sdp": sdp("alone")}) == {"ok": True}
    assert await a.call("leave") == {"ok": True}
    assert (await a.join(room, "alice"))["offers"] == []  # the same connection, back in the room
    assert (await b.join(room, "bob"))["offers"] == []


async def test_kept_candidates_are_capped_and_rooms_keep_their_own(plain, connect):
    mine, theirs = unique("flood"), unique("next-door")
    bystanders = await call_in(plain, connect, unique("bystanders"))
    flooder, flood = await offer_alone(plain, connect, mine, candidates=40)
    other, kept = await offer_alone(plain, connect, theirs, candidates=1)
    newcomer = await connect(plain)
    assert (await newcomer.join(mine, "alice"))["offers"] == flood[:1 + 32]
    neighbour = await connect(plain)
    assert (await neighbour.join(theirs, "bob"))["offers"] == kept
    await relay(*bystanders, "offer")
    await nothing_crossed(*bystanders, newcomer, neighbour)
    assert newcomer.seen("message") == [] and neighbour.seen("message") == []


# Full rooms


async def test_third_member_refused_while_the_call_goes_on(plain, connect):
    room = unique("full")
    a, b = await call_in(plain, connect, room)
    carol = await connect(plain)
    assert await carol.refused("join", {"room": room, "name": "carol"}) == "room-full"

    classic = await connect(plain)
    await classic.sio.emit("join", room)
    assert (await classic.expect("error"))["code"] == "room-full"

    await relay(b, a, "offer", to=a.id)
    await relay(a, b, "answer", to=b.id)
    await nothing_crossed(a, b, carol, classic)
    assert a.seen("userInRoom") == [1, 2] and b.seen("userInRoom") == [2]
    assert carol.seen("userInRoom") == [] and classic.seen("userInRoom") == []
    assert carol.seen("message") == [] and classic.seen("message") == []

    # The refusal left no trace: once Bob leaves, Carol takes his place.
    await b.close()
    assert await a.expect("peer-left") == {"id": b.id, "name": "bob"}
    assert (await carol.join(room, "carol"))["members"] == [{"id": a.id, "name": "alice"}]


# Bad input


OTHER_ROOM_MEMBER, SELF = "<a member of another room>", "<the sender itself>"
BIG_SDP = "v=0\r\n" + "a" * (64 * 1024)
BAD_BEFORE_JOIN = [
    ("join-nothing", "join", (), "bad-payload"),
    ("join-null", "join", (None,), "bad-payload"),
    ("join-number", "join", (42,), "bad-payload"),
    ("join-list", "join", (["demo"],), "bad-payload"),
    ("join-bool", "join", (True,), "bad-payload"),
    ("join-no-room", "join", ({"name": "x"},), "bad-room"),
    ("join-room-number", "join", ({"room": 5},), "bad-room"),
    ("join-empty-room", "join", ("",), "bad-room"),
    ("join-room-space", "join", ("no spaces",), "bad-room"),
    ("join-room-newline", "join", ("room\n",), "bad-room"),
    ("join-room-long", "join", ("r" * 65,), "bad-room"),
    ("join-name-number", "join", ({"room": "ok", "name": 5},), "bad-name"),
    ("join-name-long", "join", ({"room": "ok", "name": "n" * 65},), "bad-name"),
    ("join-token-number", "join", ({"room": "ok", "token": 5},), "bad-token"),
    ("message-before-join", "message", ({"type": "offer", "sdp": sdp("early")},), "not-joined"),
    ("bye-before-join", "message", ({"type": "bye", "to": OTHER_ROOM_MEMBER},), "not-joined"),
    ("leave-before-join", "leave", (), "not-joined"),
    ("message-nothing", "message", (), "bad-payload"),
    ("message-string", "message", ("offer",), "bad-payload"),
    ("message-list", "message", ([{"type": "bye"}],), "bad-payload"),
]
BAD_AFTER_JOIN = [
    ("second-join-same-room", "join", ({"room": "<own room>"},), "already-joined"),
    ("second-join-bare", "join", ("some-other-room",), "already-joined"),
    ("message-no-type", "message", ({"sdp": sdp("x")},), "unknown-type"),
    ("message-unknown-type", "message", ({"type": "hello"},), "unknown-type"),
    ("message-type-number", "message", ({"type": 5},), "unknown-type"),
    ("offer-no-sdp", "message", ({"type": "offer"},), "bad-payload"),
    ("offer-sdp-number", "message", ({"type": "offer", "sdp": 5},), "bad-payload"),
    ("answer-not-sdp", "message", ({"type": "answer", "sdp": "hello"},), "bad-payload"),
    ("offer-too-large", "message", ({"type": "offer", "sdp": BIG_SDP},), "too-large"),
    ("candidate-string", "message", ({"type": "candidate", "candidate": CANDIDATE["candidate"]},), "bad-payload"),
    ("candidate-text-number", "message", ({"type": "candidate", "candidate": {**CANDIDATE, "candidate": 5}},),
     "bad-payload"),
    ("candidate-index-string", "message", ({"type": "candidate", "candidate": {**CANDIDATE, "sdpMLineIndex": "0"}},),
     "bad-payload"),
    ("candidate-mid-number", "message", ({"type": "candidate", "candidate": {**CANDIDATE, "sdpMid": 0}},),
     "bad-payload"),
    ("candidate-too-large", "message", ({"type": "candidate", "candidate": {**CANDIDATE, "candidate": "c" * 1025}},),
     "too-large"),
    ("to-number", "message", ({"type": "bye", "to": 5},), "bad-payload"),
    ("to-empty", "message", ({"type": "bye", "to": ""},), "bad-payload"),
    ("to-other-room", "message", ({"type": "offer", "sdp": sdp("cross"), "to": OTHER_ROOM_MEMBER},), "unknown-target"),
    ("to-self", "message", ({"type": "bye", "to": SELF},), "unknown-target"),
    ("to-nobody", "message", ({"type": "bye", "to": "nobody"},), "unknown-target"),
]


def _fill(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, str):
        return names.get(value, value)
    if isinstance(value, dict):
        return {key: _fill(item, names) for key, item in value.items()}
    return value


@pytest.mark.parametrize("joined, event, args, code", [
    pytest.param(False, *case[1:], id=case[0]) for case in BAD_BEFORE_JOIN
] + [
    pytest.param(True, *case[1:], id=case[0]) for case in BAD_AFTER_JOIN
])
async def test_bad_input_gets_its_error_code(plain, connect, joined, event, args, code):
    a, b = await call_in(plain, connect, unique("busy"))
    mine = unique("mine")
    if joined:
        sender, partner = await call_in(plain, connect, mine, ("sender", "partner"))
    else:
        sender, partner = await connect(plain), await connect(plain)
    names = {OTHER_ROOM_MEMBER: a.id, SELF: sender.id or "", "<own room>": mine}

    assert await sender.refused(event, *(_fill(arg, names) for arg in args)) == code

    # The call next door goes on, and nothing crossed between the rooms.
    await relay(b, a, "offer", to=a.id)
    await relay(a, b, "answer")
    await nothing_crossed(a, b, sender, partner)
    assert sender.seen("message") == [] and partner.seen("message") == []
    # The refusal changed nothing: the sender is where it was.
    if joined:
        await relay(sender, partner, "bye", to=partner.id)
    else:
        assert await sender.refused("leave") == "not-joined"


# Leaving and disconnecting


async def test_connect_and_disconnect_without_join_leaves_nothing(plain, connect):
    await settle(plain, rooms=0, connections=0)
    lurker = await connect(plain)
    await settle(plain, rooms=0, connections=1)
    await lurker.close()
    await settle(plain, rooms=0, connections=0)


async def test_join_and_disconnect_in_one_poll_leave_no_ghost(plain):
    """A polling client can send join and disconnect in one request: the join must not
    outlive the connection. Raw Engine.IO v4 polling, so both packets share one POST."""
    await settle(plain, rooms=0, connections=0)
    base = f"{plain.url}/socket.io/?EIO=4&transport=polling"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as http:

        async def session() -> str:
            async with http.get(base) as response:
                opened = await response.text()
            query = f"{base}&sid={json.loads(opened[1:])['sid']}"
            async with http.post(query, data="40") as response:
                assert await response.text() == "OK"
            async with http.get(query) as response:
                assert (await response.text()).startswith("40")
            return query

        # Control: a join alone holds a place until its disconnect comes.
        query = await session()
        async with http.post(query, data=f'42["join","{unique("poll")}"]') as response:
            assert await response.text() == "OK"
        await settle(plain, rooms=1, connections=1)
        async with http.post(query, data="41") as response:
            assert await response.text() == "OK"
        await settle(plain, rooms=0, connections=0)

        for _ in range(3):
            query = await session()
            async with http.post(query, data=f'42["join","{unique("ghost")}"]\x1e41') as response:
                assert await response.text() == "OK"
        await asyncio.sleep(0.2)
        await settle(plain, rooms=0, connections=0)


async def test_disconnect_mid_negotiation_leaves_no_ghost(plain, connect):
    await settle(plain, rooms=0, connections=0)
    room = unique("mid")
    a, b = await call_in(plain, connect, room)
    await relay(b, a, "offer", to=a.id)
    await b.close()  # before the answer
    assert await a.expect("peer-left") == {"id": b.id, "name": "bob"}
    assert await a.expect("userInRoom") == 1
    await settle(plain, rooms=1, connections=1)
    assert await a.refused("message", {"type": "answer", "sdp": sdp("late"), "to": b.id}) == "unknown-target"

    carol = await connect(plain)
    assert (await carol.join(room, "carol"))["members"] == [{"id": a.id, "name": "alice"}]
    await relay(carol, a, "offer", to=a.id)


CRASHER = """
import asyncio, sys, socketio
async def main():
    sio = socketio.AsyncClient(reconnection=False)
    await sio.connect(sys.argv[1], transports=["websocket"])
    ack = await sio.call("join", {"room": sys.argv[2], "name": "crasher"}, timeout=5)
    await sio.call("message", {"type": "offer", "sdp": "v=0\\r\\ns=crash\\r\\n"}, timeout=5)
    print("joined", ack["id"], flush=True)
    await asyncio.sleep(60)
asyncio.run(main())
"""


async def test_killed_peer_is_announced_at_once(plain, connect):
    await settle(plain, rooms=0, connections=0)
    room = unique("crash")
    a = await connect(plain)
    await a.join(room, "alice")
    assert await a.expect("userInRoom") == 1
    crasher = Process([sys.executable, "-c", CRASHER, plain.url, room], name="crasher")
    try:
        crasher_id = (await asyncio.to_thread(crasher.expect, r"joined (\S+)", 15)).group(1)
        assert await a.expect("peer-joined") == {"id": crasher_id, "name": "crasher"}
        assert (await a.expect("message"))["from"] == crasher_id
        crasher.proc.send_signal(signal.SIGKILL)  # no disconnect packet: the socket just closes
        assert await a.expect("peer-left") == {"id": crasher_id, "name": "crasher"}
    finally:
        crasher.stop()
    assert [await a.expect("userInRoom"), await a.expect("userInRoom")] == [2, 1]
    await settle(plain, rooms=1, connections=1)


async def test_a_stopped_server_tells_nobody_that_anyone_left(connect):
    """Stopped (Ctrl-C, SIGTERM), the server says goodbye to each client but announces no
    departures: nobody left, and peers keep their calls while they reconnect."""
    with serving(Server()) as server:
        a, b = await call_in(server, connect, unique("stop"))
        server.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(server.wait, 10) == 0
        deadline = time.monotonic() + TIMEOUT
        while a.sio.connected or b.sio.connected:
            assert time.monotonic() < deadline, "the clients were not disconnected"
            await asyncio.sleep(0.05)
    for client in (a, b):
        assert client.unread("peer-left") == [] and client.unread("userInRoom") == [], client.events


async def test_leave(plain, connect):
    room = unique("leave")
    a, b = await call_in(plain, connect, room)
    assert await b.call("leave") == {"ok": True}
    assert await a.expect("peer-left") == {"id": b.id, "name": "bob"}
    assert await a.expect("userInRoom") == 1
    assert await b.refused("leave") == "not-joined"
    assert await b.refused("message", {"type": "bye"}) == "not-joined"
    assert await a.call("message", {"type": "bye"}) == {"ok": True}  # to nobody now

    # Free to join elsewhere, and to come back.
    assert (await b.join(unique("elsewhere"), "bob"))["members"] == []
    assert await b.call("leave", {}) == {"ok": True}
    assert (await b.join(room, "bob"))["members"] == [{"id": a.id, "name": "alice"}]
    assert await a.expect("peer-joined") == {"id": b.id, "name": "bob"}
    await relay(b, a, "offer", to=a.id)
    await nothing_crossed(a, b)
    assert b.seen("peer-left") == [], "the one who leaves is not told about itself"


async def test_event_named_disconnect_is_not_a_disconnect(plain, connect):
    await settle(plain, rooms=0, connections=0)
    a, b = await call_in(plain, connect, unique("fake"))
    for args in ({"reason": "fake"}, ("client namespace disconnect", 1, 2), ()):
        await b.sio.emit("disconnect", args)
        await b.sio.emit("connect", args)
    await relay(b, a, "offer", to=a.id)
    await nothing_crossed(a, b)
    await settle(plain, rooms=1, connections=2)
    assert_clean(plain)


async def test_healthz(plain):
    answer = await asyncio.to_thread(health, plain.url)
    assert answer["status"] == "ok" and answer["redis"] == "none" and answer["node"].endswith(f":{plain.port}")
    assert all(isinstance(answer[count], int) for count in ("rooms", "members", "connections"))


# Tokens


async def test_tokens(tokens, connect):
    room = unique("secret")
    made = subprocess.run([sys.executable, "-m", "signaling.token", "--secret", SECRET, "--room", room],
                          cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=30, check=True)
    from_env = subprocess.run([sys.executable, "-m", "signaling.token", "--room", room, "--ttl", "60"],
                              cwd=ROOT, env=child_env(SIGNALING_TOKEN_SECRET=SECRET),
                              capture_output=True, text=True, timeout=30, check=True)
    stranger = await connect(tokens)
    refused = [
        {"room": room},
        {"room": room, "token": None},
        {"room": room, "token": ""},
        {"room": room, "token": "12345.abcdef"},
        {"room": room, "token": make_token(SECRET, room, ttl=-10)},
        {"room": room, "token": make_token(SECRET, "another-room")},
        {"room": room, "token": make_token("another secret", room)},
        {"room": room, "token": "1.\u00e9"},
        {"room": room, "token": "\u00b2." + "a" * 64},
        room,  # a classic bare-string join has no token
    ]
    for payload in refused:
        assert await stranger.refused("join", payload) == "bad-token", payload

    a, b = await connect(tokens), await connect(tokens)
    await a.join(room, "alice", token=made.stdout.strip())
    await b.join(room, "bob", token=from_env.stdout.strip())
    assert (await a.expect("peer-joined"))["id"] == b.id
    await relay(b, a, "offer", to=a.id)
    await nothing_crossed(a, b, stranger)
    assert stranger.seen("userInRoom") == []


# TLS, origins, environment


async def test_tls(tls, connect):
    a, b = await call_in(tls, connect, unique("tls"))
    await relay(b, a, "offer", to=a.id)
    await relay(a, b, "answer", to=b.id)
    checking = Client(tls.url, ssl_verify=True)  # the certificate is self-signed
    with pytest.raises(socketio.exceptions.ConnectionError):
        await checking.connect()
    await checking.close()
    plain_http = Client(tls.url.replace("https://", "http://"))
    with pytest.raises(socketio.exceptions.ConnectionError):
        await plain_http.connect()
    await plain_http.close()


# Polling then the upgrade, as browsers connect. (Polling alone is only used to be refused:
# python-engineio's polling client hangs in disconnect() until the next ping, whatever the server.)
@pytest.mark.parametrize("transports", [("websocket",), ("polling", "websocket")], ids=["websocket", "polling"])
async def test_allowed_origins(origins, connect, transports):
    for origin in ("http://good.example", "https://also.example:8443"):
        client = await connect(origins, transports=transports, headers={"Origin": origin})
        assert client.sio.transport() == "websocket"
        await client.join(unique("origin"))
        await client.close()
    for origin in ("http://evil.example", "http://good.example:8080", "https://good.example", "null"):
        refused = Client(origins.url)
        with pytest.raises(socketio.exceptions.ConnectionError):
            await refused.connect(transports=transports[:1], headers={"Origin": origin})
        await refused.close()
    # Not a browser, no Origin header: nothing to check.
    await (await connect(origins, transports=transports)).join(unique("origin"))
    assert "http://evil.example is not an accepted origin" in origins.output  # operators see why


async def test_environment_configures_the_server(connect):
    port = free_port()
    url = f"http://{LOCAL}:{port}"
    env = child_env(SIGNALING_HOST=LOCAL, SIGNALING_PORT=str(port), SIGNALING_ROOM_SIZE="1",
                    SIGNALING_LOG_LEVEL="debug")
    with serving(Process([sys.executable, "-m", "signaling"], env=env, name="signaling-env"),
                 url, f"listening: peers use --server {url}") as started:
        room = unique("solo")
        a, b = await connect(started), await connect(started)
        assert (await a.join(room, "alice"))["capacity"] == 1
        assert await b.refused("join", {"room": room, "name": "bob"}) == "room-full"
        await nothing_crossed(a, b)
        await asyncio.to_thread(started.expect, r"signaling DEBUG connect", 5)  # the log level, too
        await asyncio.gather(a.close(), b.close())


# Random input


NO_PAYLOAD = object()
WATCH, WATCHER = "<the watched room>", "<a watcher's id>"
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=16),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
ROOMISH = st.sampled_from([WATCH, "fuzz", "fuzz-2", "F" * 64, "f" * 65, "bad room", "room\n", ""])
# Around the 64 KiB SDP limit, below the 256 KiB packet limit even JSON-escaped ("\\u00e9").
HUGE = st.one_of(st.integers(60_000, 70_000).map(lambda n: "v=0" + "a" * n),
                 st.integers(30_000, 36_000).map(lambda n: "v=0" + "\u00e9" * n))
SHAPED = st.fixed_dictionaries({}, optional={
    "type": st.sampled_from(["offer", "answer", "candidate", "bye", "hello"]) | JSON,
    "room": ROOMISH | JSON,
    "name": st.text(max_size=70) | JSON,
    "token": st.text(max_size=300) | JSON,
    "sdp": st.just(sdp("fuzz")) | HUGE | JSON,
    "to": st.sampled_from([WATCHER, "nobody"]) | JSON,
    "from": st.sampled_from([WATCHER]) | JSON,
    "candidate": st.fixed_dictionaries({}, optional={
        "candidate": st.text(max_size=1100) | JSON, "sdpMid": JSON, "sdpMLineIndex": JSON,
        "usernameFragment": JSON}) | JSON,
})
PAYLOAD = st.just(NO_PAYLOAD) | JSON | ROOMISH | st.text(max_size=100) | HUGE | SHAPED
EVENT = st.sampled_from(["join", "leave", "message"]) | st.sampled_from(
    ["Join", "msg", "offer", "userInRoom", "peer-joined", "error", "connect", "disconnect", "*", ""])
ACTIONS = st.lists(st.tuples(EVENT, PAYLOAD), min_size=1, max_size=6)


def _fill_deep(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, str):
        return names.get(value, value)
    if isinstance(value, dict):
        return {key: _fill_deep(item, names) for key, item in value.items()}
    if isinstance(value, list):
        return [_fill_deep(item, names) for item in value]
    return value


async def _throw(url: str, actions: list[tuple[str, Any]], start_joined: bool) -> None:
    """Two watchers hold a full room; a thrower (alone, or in a room with a partner) throws
    ``actions``. Every known event is answered with a well-formed ack, the thrower is never
    dropped, the partner only ever receives well-formed messages from it, the watchers hear
    nothing of it and can still call each other."""
    watch = unique("watch")
    watchers = [Client(url), Client(url)]
    thrower, partner = Client(url), Client(url)
    everyone = (*watchers, thrower, partner)
    try:
        await asyncio.gather(*(client.connect() for client in everyone))
        await watchers[0].join(watch, "w0")
        await watchers[1].join(watch, "w1")
        await watchers[0].expect("peer-joined")
        if start_joined:
            mine = unique("fuzz")
            await thrower.join(mine, "thrower")
            await partner.join(mine, "partner")
        names = {WATCH: watch, WATCHER: watchers[0].id}
        for event, payload in actions:
            args = () if payload is NO_PAYLOAD else (_fill_deep(payload, names),)
            if event in ("join", "leave", "message"):
                ack = await thrower.call(event, *args)
                assert isinstance(ack, dict) and isinstance(ack.get("ok"), bool), ack
                if not ack["ok"]:
                    assert ack["event"] == event and ack["code"] in CODES and isinstance(ack["error"], str), ack
            else:
                await thrower.sio.emit(event, args)
        await asyncio.gather(thrower.sync(), partner.sync())
        assert thrower.sio.connected
        for message in partner.seen("message"):
            assert message["from"] == thrower.sio.get_sid() and message["type"] in ("offer", "answer", "candidate", "bye")
            assert set(message) <= {"type", "sdp", "candidate", "from", "name"}, message
            if "sdp" in message:
                assert message["sdp"].startswith("v=0") and len(message["sdp"].encode()) <= 64 * 1024
        await nothing_crossed(*watchers)
        assert watchers[0].seen("userInRoom") == [1, 2] and watchers[1].seen("userInRoom") == [2]
        await relay(watchers[1], watchers[0], "offer", to=watchers[0].id)
        await relay(watchers[0], watchers[1], "answer", to=watchers[1].id)
    finally:
        await asyncio.gather(*(client.close() for client in everyone))


def test_random_input_never_breaks_the_server(unthrottled):
    @settings(max_examples=60, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
    @given(actions=ACTIONS, start_joined=st.booleans())
    def throw(actions, start_joined):
        asyncio.run(_throw(unthrottled.url, actions, start_joined))

    throw()

    async def afterwards() -> None:
        a, b = Client(unthrottled.url), Client(unthrottled.url)
        try:
            await asyncio.gather(a.connect(), b.connect())
            room = unique("after")
            await a.join(room, "alice")
            assert (await b.join(room, "bob"))["members"] == [{"id": a.id, "name": "alice"}]
            await relay(b, a, "offer", to=a.id)
            await relay(a, b, "answer", to=b.id)
        finally:
            await asyncio.gather(a.close(), b.close())
        await settle(unthrottled, rooms=0, connections=0)

    asyncio.run(afterwards())
    assert_clean(unthrottled)
