"""Hostile clients against a real signaling server: each tries to exhaust it, each fails.

The attackers speak raw Engine.IO/Socket.IO over hand-made websocket frames or raw TCP,
so they can do what no library client does: declare attachments without end, never read,
hold connections open without a word, stop halfway through a request. Each test asserts
that the attack fails, that a bystander from another address (127.0.0.2, still loopback)
joins another room and relays an offer promptly, that the server's memory stays under a
stated ceiling, and that its log has no traceback and stays short. Limits are set small
by flags so each attack is over in seconds; docs/deploy.md has the defaults.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass
from typing import Any, Union

import aiohttp
import pytest

from conftest import LOCAL, Process, Server, child_env, free_port, rss_kib
from signaling.limits import client_address
from test_signaling_server import TIMEOUT, Client, assert_clean, relay, sdp, unique

BYSTANDER = "127.0.0.2"
"""Another loopback address: per-address limits that stop the attacker must not stop it."""

GROWTH_CEILING_MB = 40
"""How much the server may grow under an attack; the attacks measured grew it by 1.2 GB
(attachments) and 250 MB (a client not reading) before the limits."""


# The server


def rss_mb(server: Server) -> float:
    return rss_kib(server.proc.pid) / 1024


def open_files(server: Server) -> int:
    return len(os.listdir(f"/proc/{server.proc.pid}/fd"))


async def lets_go(server: Server, files: int, timeout: float = TIMEOUT) -> bool:
    """Whether the server is back to ``files`` open files within ``timeout``: it closed the
    connections of clients it dropped, without waiting for them to read anything."""
    deadline = time.monotonic() + timeout
    while open_files(server) > files:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def assert_log_short(server: Server, most: int = 200) -> None:
    """No traceback, and a flood is not a flood of log lines."""
    assert_clean(server)
    assert len(server.lines) <= most, f"{len(server.lines)} log lines:\n" + "\n".join(server.lines[-50:])


@pytest.fixture
def servers():
    """``servers(*flags)``: a server with those flags, stopped at the end of the test."""
    started: list[Server] = []

    def start(*flags: str) -> Server:
        started.append(Server(*flags))
        return started[-1]

    yield start
    for server in started:
        server.stop()


# The bystander


@dataclass
class Bystander(Client):
    """A well-behaved Socket.IO client that connects from ``source``."""

    source: str = BYSTANDER

    def __post_init__(self) -> None:
        super().__post_init__()
        self.sio.eio.http_factory = lambda: aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(local_addr=(self.source, 0)))


async def bystanders_call(server: Server) -> float:
    """Two bystanders join a room of their own and relay an offer and an answer; the seconds it took."""
    start = time.monotonic()
    a, b = Bystander(server.url), Bystander(server.url)
    try:
        await asyncio.gather(a.connect(), b.connect())
        room = unique("bystanders")
        await a.join(room, "alice")
        await b.join(room, "bob")
        await relay(b, a, "offer", to=a.id)
        await relay(a, b, "answer", to=b.id)
    finally:
        await asyncio.gather(a.close(), b.close())
    took = time.monotonic() - start
    assert took < TIMEOUT, f"the bystanders' call took {took:.1f} s"
    return took


# The attacker's tools


class RawSocket:
    """Engine.IO v4 over a websocket made by hand on asyncio streams: it sends whatever it is
    told, and reads only when told to."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def tcp(cls, port: int, source: str = LOCAL, receive_buffer: int = 0) -> "RawSocket":
        """A bare TCP connection; ``receive_buffer`` shrinks the kernel's buffer for it."""
        sock = socket.socket()
        if receive_buffer:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.bind((source, 0))
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (LOCAL, port))
        return cls(*await asyncio.open_connection(sock=sock, limit=4096))

    @classmethod
    async def websocket(cls, port: int, sid: str = "", **options: Any) -> "RawSocket":
        raw = await cls.tcp(port, **options)
        query = f"&sid={sid}" if sid else ""
        raw.writer.write(f"GET /socket.io/?EIO=4&transport=websocket{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode() +
                         b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                         b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        head = await asyncio.wait_for(raw.reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        assert head.startswith(b"HTTP/1.1 101"), head
        return raw

    @classmethod
    async def upgraded(cls, port: int, **options: Any) -> "RawSocket":
        """Socket.IO connected over long-polling, then upgraded to a websocket, as browsers do."""
        base = f"http://{LOCAL}:{port}/socket.io/?EIO=4&transport=polling"
        async with aiohttp.ClientSession() as http:
            async with http.get(base) as response:
                sid = json.loads((await response.text())[1:])["sid"]
            async with http.post(f"{base}&sid={sid}", data="40") as response:
                assert await response.text() == "OK"
            async with http.get(f"{base}&sid={sid}") as response:
                assert (await response.text()).startswith("40")
        raw = await cls.websocket(port, sid=sid, **options)
        await raw.send("2probe")
        assert await raw.receive() == "3probe"
        await raw.send("5")
        return raw

    async def socketio(self) -> str:
        """Engine.IO open, Socket.IO connect; the Socket.IO sid."""
        assert (await self.receive()).startswith("0{")
        await self.send("40")
        connected = await self.receive()
        assert connected.startswith("40{"), connected
        return json.loads(connected[2:])["sid"]

    async def send(self, data: Union[str, bytes]) -> None:
        """One websocket frame, masked with a zero key (as valid as any)."""
        opcode, body = (1, data.encode()) if isinstance(data, str) else (2, data)
        size = len(body)
        if size < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
        elif size < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
        self.writer.write(head + b"\0\0\0\0" + body)
        await self.writer.drain()

    async def receive(self, timeout: float = TIMEOUT) -> Any:
        """The next Engine.IO message (pings answered); None once the server closed."""
        while True:
            try:
                first, second = await asyncio.wait_for(self.reader.readexactly(2), timeout)
                size = second & 0x7F
                if size == 126:
                    size = struct.unpack("!H", await self.reader.readexactly(2))[0]
                elif size == 127:
                    size = struct.unpack("!Q", await self.reader.readexactly(8))[0]
                body = await self.reader.readexactly(size)
            except (asyncio.IncompleteReadError, ConnectionError):
                return None
            opcode = first & 0x0F
            if opcode == 8:
                return None
            message = body.decode() if opcode == 1 else body
            if message == "2":
                await self.send("3")
            elif opcode in (1, 2):
                return message

    async def call(self, number: int, event: str, payload: Any) -> Any:
        """Emit ``event`` asking for ack ``number``; the ack's payload."""
        await self.send(f"42{number}{json.dumps([event, payload])}")
        return await self.ack(number, event)

    async def ack(self, number: int, event: str) -> Any:
        """The payload of ack ``number``, whatever comes before it."""
        while (message := await self.receive()) is not None:
            if isinstance(message, str) and message.startswith(f"43{number}["):
                return json.loads(message[2 + len(str(number)):])[0]
        raise AssertionError(f"no ack for {event}: the server closed")

    async def closed(self, timeout: float = TIMEOUT) -> bool:
        """Whether the server ends the connection within ``timeout`` (everything it sent is read)."""
        try:
            async with asyncio.timeout(timeout):
                while await self.reader.read(65536):
                    pass
            return True
        except ConnectionError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.writer.transport.abort()


async def send_until_closed(raw: RawSocket, frame: bytes, seconds: float) -> int:
    """Send ``frame`` again and again until the server drops us or ``seconds`` pass; how many went."""
    sent = 0
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline and not raw.reader.at_eof():
            await asyncio.wait_for(raw.send(frame), 1)
            sent += 1
    except (ConnectionError, asyncio.TimeoutError):
        pass
    return sent


# The attacks


async def attachments_attack(server: Server, seconds: float = 3) -> int:
    """A binary event declaring a billion attachments, then 250 KiB binary frames; frames sent."""
    raw = await RawSocket.websocket(server.port)
    try:
        await raw.socketio()
        await raw.send('451000000000-["message",{"_placeholder":true,"num":0}]')
        return await send_until_closed(raw, b"\x04" + bytes(250 * 1024), seconds)
    finally:
        raw.close()


async def test_a_packet_declaring_endless_attachments_is_dropped(servers):
    server = servers("--max-attachments", "4")
    await bystanders_call(server)
    before = rss_mb(server)
    started = time.monotonic()
    sent = await attachments_attack(server, seconds=10)
    dropped_after = time.monotonic() - started
    after = rss_mb(server)
    assert dropped_after < 3, f"the attacker was still connected after {dropped_after:.1f} s ({sent} frames sent)"
    assert after - before < GROWTH_CEILING_MB, f"the server grew from {before:.0f} to {after:.0f} MB"
    server.expect(r"dropped client .*: bad packet \(1000000000 binary attachments declared \(limit 4\)\) \(127.0.0.1\)")
    # Within the limit, attachments still reach the handler (which refuses binary as any bad payload).
    raw = await RawSocket.websocket(server.port)
    try:
        await raw.socketio()
        await raw.send('452-1["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]')
        await raw.send(b"\x04one")
        await raw.send(b"\x04two")
        assert (await raw.ack(1, "message"))["code"] == "bad-payload"
    finally:
        raw.close()
    await bystanders_call(server)
    print(f"attachments: {sent} frames of 250 KiB sent before the drop ({dropped_after:.2f} s); "
          f"server {before:.0f} -> {after:.0f} MB")
    assert_log_short(server)


async def non_reader_attack(server: Server, sender: Client, seconds: float = 10,
                            upgraded: bool = False) -> tuple[RawSocket, str, int]:
    """A member that stops reading while ``sender``, in its room, sends it 60 KiB offers
    until the server says it left; (the non-reader, its id, offers sent)."""
    room = unique("deaf")
    if upgraded:
        deaf = await RawSocket.upgraded(server.port, receive_buffer=4096)
    else:
        deaf = await RawSocket.websocket(server.port, receive_buffer=4096)
        await deaf.socketio()
    joined = await deaf.call(1, "join", {"room": room, "name": "deaf"})
    assert joined["ok"], joined
    await sender.join(room, "sender")
    offer = sdp("x" * 60 * 1024)
    sent = 0
    deadline = time.monotonic() + seconds
    while not sender.unread("peer-left") and time.monotonic() < deadline:
        assert await sender.call("message", {"type": "offer", "sdp": offer, "to": joined["id"]}) in (
            {"ok": True}, {"ok": False, "event": "message", "code": "unknown-target",
                           "error": f"no member {joined['id']!r} in room {room!r}"})
        sent += 1
    return deaf, joined["id"], sent


QUEUE_FULL = rf"dropped client .*: more than {256 * 1024} bytes waiting for it"


@pytest.mark.parametrize("flags, upgraded, dropped, ceiling", [
    (("--max-queue-bytes", str(256 * 1024)), False, QUEUE_FULL, GROWTH_CEILING_MB),
    (("--max-queue-bytes", str(256 * 1024)), True, QUEUE_FULL, GROWTH_CEILING_MB),
    # However large the queue may grow, a connection that reads nothing for the idle timeout
    # goes; memory is the queue cap's to bound, and here there is none (the sender can queue
    # some 70 MB in that second).
    (("--max-queue-bytes", str(1 << 40), "--idle-timeout", "1"), False, r"dropped a connection: read nothing for 1 s",
     None),
], ids=["queue", "queue-upgraded-from-polling", "stall"])
async def test_a_member_that_does_not_read_is_dropped(servers, flags, upgraded, dropped, ceiling):
    server = servers(*flags)
    sender = Client(server.url)
    await sender.connect()
    before, files = rss_mb(server), open_files(server)
    started = time.monotonic()
    try:
        deaf, deaf_id, sent = await non_reader_attack(server, sender, upgraded=upgraded)
        dropped_after = time.monotonic() - started
        after = rss_mb(server)
        assert await sender.expect("peer-left") == {"id": deaf_id, "name": "deaf"}
        assert ceiling is None or after - before < ceiling, f"the server grew from {before:.0f} to {after:.0f} MB"
        server.expect(dropped)
        assert await lets_go(server, files)  # its connection too, not only its session
        deaf.close()
        await bystanders_call(server)
        # The sender, in the same room, goes on.
        assert (await sender.call("message", {"type": "bye"})) == {"ok": True}
    finally:
        await sender.close()
    print(f"non-reader ({' '.join(flags)}): dropped after {sent} offers of 60 KiB ({dropped_after:.2f} s); "
          f"server {before:.0f} -> {after:.0f} MB")
    assert_log_short(server)


async def test_idle_and_half_open_connections_are_capped_and_timed_out(servers):
    server = servers("--max-per-address", "5", "--handshake-timeout", "1")
    held = [await RawSocket.tcp(server.port) for _ in range(5)]
    # Over the per-address cap: a one-line 503 and the connection closed, at once.
    extra = [await RawSocket.tcp(server.port) for _ in range(50)]
    for raw in extra:
        refused = await asyncio.wait_for(raw.reader.read(), TIMEOUT)
        assert refused.startswith(b"HTTP/1.1 503") and refused.endswith(b"too many connections\n"), refused
    # Another address is served meanwhile.
    await bystanders_call(server)
    # The idle ones, a slow request head, and a websocket that never connects to Socket.IO
    # are all closed after the handshake timeout.
    started = time.monotonic()
    assert all(await asyncio.gather(*(raw.closed() for raw in held)))
    slow = await RawSocket.tcp(server.port)
    slow.writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    mute = await RawSocket.websocket(server.port)
    assert (await mute.receive()).startswith("0{")
    assert await slow.closed() and await mute.closed()
    took = time.monotonic() - started
    assert took < 4, f"idle connections closed after {took:.1f} s"
    server.expect(r"dropped client .*: no Socket.IO connect within 1 s")
    # The address is served again once its connections are gone.
    again = Client(server.url)
    try:
        await again.connect()
        await again.join(unique("again"), "again")
    finally:
        await again.close()
    # A polling POST whose body never comes is given up on, and its session dropped.
    # (A body that comes in part is read in part: the library reads what is there.)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/socket.io/?EIO=4&transport=polling") as response:
            sid = json.loads((await response.text())[1:])["sid"]
        async with http.post(f"{server.url}/socket.io/?EIO=4&transport=polling&sid={sid}", data="40") as response:
            assert response.status == 200  # connected: no handshake deadline any more
    trickle = await RawSocket.tcp(server.port)
    trickle.writer.write(f"POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         f"Content-Length: 1000\r\n\r\n".encode())
    assert await trickle.closed(timeout=3)
    server.expect(rf"dropped client {sid}: a POST body not received within 1 s")
    for raw in held + extra + [slow, mute, trickle]:
        raw.close()
    print(f"idle connections: 50 refused, 5 held closed within {took:.2f} s")
    server.expect(r"refused a connection: 5 open from this address \(limit 5\) \(127.0.0.1, the 10th time\)")
    assert_log_short(server, most=40)


async def test_polling_sessions_and_all_connections_are_capped(servers):
    """Sessions count apart from connections: many polling handshakes over one keep-alive
    connection are capped too; and the overall cap holds whatever the addresses."""
    server = servers("--max-per-address", "3", "--max-connections", "6", "--handshake-timeout", "2")
    base = f"{server.url}/socket.io/?EIO=4&transport=polling"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as http:
        answers = []
        for _ in range(6):
            async with http.get(base) as response:
                answers.append(response.status)
    assert answers == [200, 200, 200, 401, 401, 401], answers
    server.expect(r"refused a session: 3 open from this address \(limit 3\) \(127.0.0.1\)")
    held = [await RawSocket.tcp(server.port, source=f"127.0.0.{3 + n % 3}") for n in range(6)]
    late = await RawSocket.tcp(server.port, source="127.0.0.9")
    assert (await asyncio.wait_for(late.reader.read(), TIMEOUT)).startswith(b"HTTP/1.1 503")
    server.expect(r"refused a connection: server full \(6 open\) \(127.0.0.9\)")
    assert all(await asyncio.gather(*(raw.closed() for raw in held)))
    await bystanders_call(server)
    for raw in held + [late]:
        raw.close()
    assert_log_short(server, most=40)


async def test_joins_faster_than_the_rate_are_refused(servers):
    server = servers("--join-rate", "2", "--join-burst", "3")
    attacker = Client(server.url)
    await attacker.connect()
    try:
        for _ in range(3):
            await attacker.join(unique("churn"), "churn")
            assert (await attacker.call("leave")) == {"ok": True}
        for _ in range(20):
            ack = await attacker.call("join", {"room": unique("churn"), "name": "churn"})
            assert ack["ok"] is False and ack["code"] == "rate-limited", ack
            assert "at most 2 a second after 3" in ack["error"]
        assert (await attacker.expect("error"))["code"] == "rate-limited"
        await bystanders_call(server)
        await asyncio.sleep(0.6)  # one join's worth of refill at 2 a second
        await attacker.join(unique("churn"), "churn")
    finally:
        await attacker.close()
    assert_log_short(server, most=60)


BAD_PACKETS = {
    "not engine.io": "x", "empty socket.io": "4", "event not a list": "42{}",
    "event without a name": "42[]", "event named by an object": '42[{"a":1}]', "ack not a list": "431",
    "broken json": '42["join"', "unknown socket.io type": "49", "connect error from a client": "44",
    "binary not a socket.io packet": b"\x01\x02",
}


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_packets_that_cannot_be_decoded_drop_the_client_in_one_line(servers, transport):
    """The libraries raise on each of these (a traceback in the log, the client kept, or the
    whole request failed); every one is one log line and the client dropped."""
    server = servers()
    base = f"{server.url}/socket.io/?EIO=4&transport=polling"
    async with aiohttp.ClientSession() as http:
        for name, bad in BAD_PACKETS.items():
            if transport == "websocket":
                raw = await RawSocket.websocket(server.port)
                await raw.socketio()
                await raw.send(bad)
                assert await raw.closed(), name
                raw.close()
            elif isinstance(bad, str):  # polling carries text
                async with http.get(base) as response:
                    sid = json.loads((await response.text())[1:])["sid"]
                async with http.post(f"{base}&sid={sid}", data="40") as response:
                    assert response.status == 200
                async with http.post(f"{base}&sid={sid}", data=bad) as response:
                    pass
                server.expect(rf"dropped client {sid}: bad packet", timeout=TIMEOUT)
                for _ in range(3):  # a poll already under way may still be answered, empty
                    async with http.get(f"{base}&sid={sid}") as response:
                        if response.status == 400:
                            break
                assert response.status == 400, name  # the session is gone
    await bystanders_call(server)
    assert_log_short(server, most=len(BAD_PACKETS) + 10)


async def oversized_post(server: Server) -> tuple[aiohttp.ClientSession, RawSocket]:
    """A polling session whose POST declares 10 MB and sends 100 KB of it, then stalls. It
    is refused at once, and its session dropped."""
    base = f"{server.url}/socket.io/?EIO=4&transport=polling"
    http = aiohttp.ClientSession()
    async with http.get(base) as response:
        sid = json.loads((await response.text())[1:])["sid"]
    raw = await RawSocket.tcp(server.port)
    raw.writer.write(f"POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     f"Content-Type: text/plain\r\nContent-Length: {10 * 1024 * 1024}\r\n\r\n".encode()
                     + b"4" * 100_000)
    await raw.writer.drain()
    refused = await asyncio.wait_for(raw.reader.readuntil(b"\r\n"), TIMEOUT)
    assert refused.startswith(b"HTTP/1.1 400"), refused
    server.expect(rf"dropped client {sid}: a POST of {10 * 1024 * 1024} bytes \(limit 262144\)")
    return http, raw


async def test_sigterm_ends_the_server_promptly_whatever_the_clients_do(servers):
    server = servers()
    http, stalled = await oversized_post(server)
    try:
        deaf_sender = Client(server.url)
        await deaf_sender.connect()
        deaf, _, _ = await non_reader_attack(server, deaf_sender, seconds=1)
        idle = [await RawSocket.tcp(server.port) for _ in range(5)]
        await bystanders_call(server)
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        code = server.wait(timeout=15)
        took = time.monotonic() - started
    finally:
        await http.close()
    assert code == 0 and took < 5, f"exit {code} after {took:.1f} s"
    print(f"SIGTERM with a stalled 10 MB POST, a non-reader and idle connections: exit {code} in {took:.2f} s")
    assert_log_short(server)
    for raw in idle + [deaf, stalled]:
        raw.close()


async def test_memory_stays_bounded_while_one_client_misbehaves_in_every_way(servers):
    server = servers("--max-per-address", "10", "--max-queue-bytes", str(512 * 1024), "--idle-timeout", "2",
                     "--handshake-timeout", "2", "--join-rate", "5", "--join-burst", "5")
    await bystanders_call(server)
    before = rss_mb(server)
    peak = before
    sender = Client(server.url)
    await sender.connect()

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, rss_mb(server))
            await asyncio.sleep(0.05)

    async def churn() -> None:
        churner = Client(server.url)
        await churner.connect()
        try:
            for _ in range(40):
                await churner.call("join", {"room": unique("churn"), "name": "churn"})
                await churner.call("leave")
        finally:
            await churner.close()

    async def flood() -> None:
        # From a second address of the attacker's: from its first, the cap would refuse the
        # other attacks before they began.
        raws = [await RawSocket.tcp(server.port, source="127.0.0.3") for _ in range(200)]
        await asyncio.sleep(1)
        for raw in raws:
            raw.close()

    watcher = asyncio.ensure_future(watch())
    started = time.monotonic()
    try:
        results = await asyncio.gather(attachments_attack(server), non_reader_attack(server, sender, seconds=5),
                                       churn(), flood(), oversized_post(server))
        took = await bystanders_call(server)
        await results[4][0].close()
        results[4][1].close()
        results[1][0].close()
    finally:
        watcher.cancel()
        await sender.close()
    after = rss_mb(server)
    elapsed = time.monotonic() - started
    assert peak - before < GROWTH_CEILING_MB, f"the server grew from {before:.0f} to a peak of {peak:.0f} MB"
    print(f"all at once for {elapsed:.1f} s: server {before:.0f} MB, peak {peak:.0f} MB, after {after:.0f} MB; "
          f"bystanders' call {took:.2f} s")
    assert_log_short(server)


def test_the_environment_sets_the_limits():
    server = Server(env=child_env(SIGNALING_MAX_PER_ADDRESS="2"))
    try:
        held = [socket.create_connection((LOCAL, server.port)) for _ in range(2)]
        with socket.create_connection((LOCAL, server.port), timeout=TIMEOUT) as third:
            assert third.recv(100).startswith(b"HTTP/1.1 503")
        for sock in held:
            sock.close()
    finally:
        server.stop()
    assert_log_short(server, most=10)


async def test_connections_stop_short_of_the_descriptor_limit():
    """With 'ulimit -n 200' and the default cap of 2000, the server caps connections below
    200 instead of failing accept() (a traceback per try, connections left unanswered)."""
    port = free_port()
    server = Process(["bash", "-c", f"ulimit -n 200 && exec {sys.executable} -m signaling --host {LOCAL} --port {port}"],
                     name="signaling")
    server.port, server.url = port, f"http://{LOCAL}:{port}"
    try:
        server.expect(r"only 200 open files allowed \(ulimit -n\): at most 136 connections, not 2000")
        server.expect(r"listening: ")
        held = [await RawSocket.tcp(port, source=f"127.0.1.{n % 100}") for n in range(300)]
        refused = sum(await asyncio.gather(*(raw.closed(timeout=1) for raw in held)))
        assert refused == 300 - 136, f"{refused} of {len(held)} refused"
        for raw in held:
            raw.close()
        await bystanders_call(server)
    finally:
        server.stop()
    server.expect(r"refused a connection: server full \(136 open\)")
    assert_log_short(server)


def test_ipv6_clients_are_counted_by_their_64():
    """One subscriber usually holds a whole /64: counted by address, it would have no limit."""
    assert client_address("2001:db8:1:2::5") == client_address("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert client_address("2001:db8:1:3::5") != client_address("2001:db8:1:2::5")
    assert client_address("::ffff:192.0.2.7") == client_address("192.0.2.7") == "192.0.2.7"
