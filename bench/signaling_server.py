"""The signaling server under 1,000 clients in 500 rooms, ours beside a bare python-socketio relay;
then ours on Redis with 1, 2 and 3 nodes beside ours alone.

    python bench/signaling_server.py [--rounds 3] [--seconds 3] [--clients 1000] [--rate 2000]
                                     [--nodes 1,2,3|none] [--node-rate 500] [--quick]

Ours is ``python -m signaling --host 127.0.0.1 --port P``, started as a user starts it (its
own process, default settings and limits). The baseline is a bare python-socketio relay done
the simplest correct way (``bare_server`` below, its own process, default settings): ``join``
enters a room and answers with an acknowledgement, ``message`` goes to the other members of
the sender's room: the classic tutorial pattern (docs/protocol.md, "Classic clients").

The load comes from two generator processes (``--child load``), each holding half the rooms,
both members of a room in the same process so that one clock times a message from its
sender to its receiver. A client is a raw websocket (aiohttp's client) speaking Engine.IO 4
and Socket.IO 5 by hand: python-socketio's ``AsyncClient`` took about twice the CPU per message
(docs/benchmarks.md), and the generators share the machine's two cores with the server they measure.
Clients connect from many loopback addresses (127.1.G.K, ten clients each) so that our
server's per-address limits (docs/deploy.md) stay at their defaults.

Per round, for each server in turn (ours, then the baseline):

1. every client connects (``40``), then joins its room with an acknowledgement, paced at
   ``JOIN_RATE`` joins a second overall: **join latency** is ``join`` sent to its ack read;
2. every client sends ``message`` candidates to its room's other member (as our peer does,
   with ``to``), ``--rate`` messages a second overall, for ``--seconds``: **relay latency**
   is a message written by its sender to it read by its receiver;
3. the offered rate climbs by ``STEP`` from half ``--rate`` until two steps in a row fail
   (median latency over ``SATURATED_MEDIAN_MS``, or more than 1 % of the messages missing a
   second after the step): **relays per second at saturation** is the most messages a
   second delivered in a step that passed. The server's CPU time per message at the fixed
   rate is a row too: on a shared machine it is the steadiest figure of efficiency.

Then everyone disconnects. ``--profile DIR`` records each server with py-spy during its first
climb (``DIR/ours.txt``, ``DIR/bare.txt``: collapsed stacks, and the same as ``.svg``).

**Several nodes on Redis** (``--nodes``, default 1, 2 and 3; 1 and 2 with ``--quick``; ``none``
leaves them out; they need ``redis-server``, which the bench starts on a free port of 127.0.0.1
with nothing on disk). In each round, after the rows above, the same clients are spread over
the servers of one set in turn: ours alone without Redis (the reference, the baseline column of
these rows), then ``k`` nodes, each ``python -m signaling --redis URL --node-name nK`` in its own
process, started afresh for the set and stopped after it (an idle node on the same Redis would
still read every message published). Client ``i`` of a generator talks to server ``i % k``, so
the two members of a room are on different nodes when there are two or more: every relay then
crosses Redis. For each set:

1. **joins per second**: every client joins its room at once, each generator keeping
   ``JOIN_WINDOW`` joins awaiting their ack (the next sent as soon as one is answered); the
   joins over the time from the first join sent to the last ack read, in either generator (a
   join refused because the node cannot reach Redis is asked again a second later, as ``python
   -m peer`` does, and counted on stderr);
   and the **CPU time of every node and of Redis per join**, until a second after the last ack
   (what a join sends to its room goes on after the ack);
2. **relay latency**, median and p99, at ``--node-rate`` messages a second for ``--seconds``,
   as in step 2 above; and the **CPU time of every node and of Redis per message** relayed.

``--profile DIR`` also records each node of the first round during the relay at the fixed rate
(``DIR/2-nodes-n1.txt``...) and during the joins (``DIR/2-nodes-n1-joins.txt``...).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]

import harness  # noqa: E402

HERE = Path(__file__).resolve()
LOCAL = harness.LOCAL
GENERATORS = 2
PER_ADDRESS = 10
"""Clients per source address: under our server's default of 20 per address."""
JOIN_RATE = 500.0
"""Joins a second, overall: a busy server's steady arrival, not one thundering herd."""
JOIN_WINDOW = 50
"""Joins awaiting their ack in each generator when every client joins at once (the rows on Redis)."""
UNAVAILABLE_FOR = 60.0
"""Seconds a join refused with ``unavailable`` is asked again (each second), as ``python -m peer`` does."""
NODE_RATE = 500.0
"""The fixed offered rate of the rows on Redis, messages a second (``--node-rate``)."""
STOP_WITHIN = 10.0
"""Seconds a server has to stop after SIGTERM (ours takes at most its --shutdown-timeout, 3 s)."""
STEP = 1.25
"""Each climb step offers this many times the last step's rate."""
SATURATED_MEDIAN_MS = 50.0
"""A step whose median relay latency passes this has a queue growing: saturated. (Not the
p99: on a shared 2-core machine another job's stall puts any step's p99 there now and then.)"""
MAX_LOSS = 0.01
GRACE = 1.0
"""Seconds after a step for its last messages to arrive."""
TICK = 0.005
"""The generators' pacing interval, in seconds."""
CANDIDATE = ("candidate:842163049 1 udp 1677729535 192.0.2.7 50000 typ srflx raddr 0.0.0.0 rport 0 "
             "generation 0 ufrag abcd network-cost 999")
"""What a browser trickles (Chrome's shape): the message relayed is one of these."""
SEQ_KEY = '"usernameFragment":"'
"""The sequence number of a message rides in its candidate's usernameFragment."""


# The baseline: a bare python-socketio relay -----------------------------------------------

async def bare_server(link: harness.Link, options: argparse.Namespace, rest: list[str]) -> None:
    """The classic room relay, written plainly on python-socketio's defaults."""
    import socketio
    from aiohttp import web

    sio = socketio.AsyncServer(async_mode="aiohttp")
    app = web.Application()
    sio.attach(app)
    room_of: dict[str, str] = {}

    @sio.event
    async def join(sid: str, data: Any) -> dict[str, Any]:
        room = data["room"] if isinstance(data, dict) else data
        await sio.enter_room(sid, room)
        room_of[sid] = room
        await sio.emit("userInRoom", len(sio.manager.rooms["/"].get(room, {})), room=room)
        return {"ok": True, "id": sid}

    @sio.event
    async def message(sid: str, data: Any) -> None:
        if sid in room_of:
            await sio.emit("message", data, room=room_of[sid], skip_sid=sid)

    @sio.event
    async def disconnect(sid: str, *reason: Any) -> None:
        room_of.pop(sid, None)

    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, LOCAL, 0)
    await site.start()
    link.send("ready", port=site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
    await link.receive()  # until the parent says stop (or goes)


# The load generator ----------------------------------------------------------------------

@dataclass
class Client:
    """One raw Engine.IO/Socket.IO websocket client: a member of one room."""

    ws: Any
    sid: str = ""
    partner: Optional["Client"] = None
    acks: dict[int, asyncio.Future] = field(default_factory=dict)
    next_ack: int = 0
    message_head: str = ""
    """A ``message`` event to the partner, up to its sequence number, and after it."""
    message_tail: str = ""

    async def call(self, event: str, payload: Any) -> Any:
        """An event with an acknowledgement, as ``sio.call`` sends it; its answer."""
        ack_id, self.next_ack = self.next_ack, self.next_ack + 1
        future = asyncio.get_running_loop().create_future()
        self.acks[ack_id] = future
        await self.ws.send_str(f"42{ack_id}" + json.dumps([event, payload], separators=(",", ":")))
        return await asyncio.wait_for(future, 30)


@dataclass
class Load:
    """A generator's clients, and the messages in flight: sequence number to the time sent."""

    clients: list[Client] = field(default_factory=list)
    sessions: list[Any] = field(default_factory=list)
    readers: list[asyncio.Task] = field(default_factory=list)
    sent_at: dict[int, float] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    seq: int = 0


def read(load: Load, client: Client, text: str, now: float) -> None:
    """One Engine.IO packet from the server, for ``client``."""
    if text.startswith("42"):  # an event: a relayed message carries a sequence number
        at = text.find(SEQ_KEY)
        if at >= 0:
            start = at + len(SEQ_KEY)
            sent = load.sent_at.pop(int(text[start:text.index('"', start)]), None)
            if sent is not None:
                load.latencies.append(now - sent)
    elif text.startswith("43"):  # an ack: 43<id>[...]
        bracket = text.index("[")
        future = client.acks.pop(int(text[2:bracket]), None)
        if future is not None and not future.done():
            future.set_result(json.loads(text[bracket:]))
    elif text == "2":
        asyncio.ensure_future(client.ws.send_str("3"))
    elif text.startswith("40"):
        client.sid = json.loads(text[2:])["sid"]
        future = client.acks.pop(-1, None)
        if future is not None:
            future.set_result(None)


async def reader(load: Load, client: Client) -> None:
    from aiohttp import WSMsgType
    async for frame in client.ws:
        if frame.type == WSMsgType.TEXT:
            read(load, client, frame.data, time.monotonic())


async def connect(load: Load, url: str, session: Any) -> Client:
    """A client through Engine.IO's open and Socket.IO's connect, reading in its own task."""
    ws = await session.ws_connect(f"{url}/socket.io/?EIO=4&transport=websocket", autoping=False,
                                  compress=0, max_msg_size=0)
    opened = await ws.receive_str()
    assert opened.startswith("0"), opened
    client = Client(ws)
    client.acks[-1] = asyncio.get_running_loop().create_future()  # -1: the namespace connect
    load.readers.append(asyncio.ensure_future(reader(load, client)))
    await ws.send_str("40")
    await asyncio.wait_for(client.acks[-1], 30)
    return client


async def open_clients(load: Load, urls: list[str], count: int, generator: int) -> None:
    """``count`` clients, client ``i`` on server ``urls[i % len(urls)]``: with two servers or
    more, the two members of a room (clients ``2j`` and ``2j + 1``) are on different ones."""
    import aiohttp
    addresses = range((count + PER_ADDRESS - 1) // PER_ADDRESS)
    load.sessions = [aiohttp.ClientSession(connector=aiohttp.TCPConnector(
        local_addr=(f"127.1.{generator}.{1 + k}", 0), limit=0)) for k in addresses]
    gate = asyncio.Semaphore(50)

    async def one(index: int) -> Client:
        async with gate:
            return await connect(load, urls[index % len(urls)], load.sessions[index // PER_ADDRESS])

    load.clients = list(await asyncio.gather(*(one(i) for i in range(count))))
    for a, b in zip(load.clients[0::2], load.clients[1::2]):
        a.partner, b.partner = b, a


async def join(client: Client, room: str, name: str) -> int:
    """``join`` with an acknowledgement; an error if the server refuses it, except when it
    cannot reach its room store (a node on Redis): then asked again each second, as ``python -m
    peer`` does, up to ``UNAVAILABLE_FOR`` seconds. How many times it was refused so."""
    for refused in range(int(UNAVAILABLE_FOR) + 1):
        ack = await client.call("join", {"room": room, "name": name})
        answer = ack[0] if isinstance(ack, list) and ack and isinstance(ack[0], dict) else {}
        if answer.get("ok"):
            return refused
        if answer.get("code") != "unavailable":
            break
        await asyncio.sleep(1)
    raise RuntimeError(f"join refused: {ack}")


def room_of(prefix: str, generator: int, index: int) -> str:
    """Client ``index``'s room: two clients a room, its partner's."""
    return f"{prefix}-{generator}-{index // 2}"


async def join_all(load: Load, generator: int, rate: float, prefix: str) -> list[float]:
    """Each client joins its room (two a room), ``rate`` joins a second; the latencies, s."""
    latencies: list[float] = []

    async def one(index: int, client: Client) -> None:
        await asyncio.sleep(index / rate)
        start = time.monotonic()
        await join(client, room_of(prefix, generator, index), f"c{index}")
        latencies.append(time.monotonic() - start)

    await asyncio.gather(*(one(i, c) for i, c in enumerate(load.clients)))
    address_partners(load)
    return latencies


async def join_burst(load: Load, generator: int, window: int, prefix: str) -> dict[str, float]:
    """Every client joins its room at once, at most ``window`` joins awaiting their ack (the
    next sent as soon as one is answered): when the first was sent and the last answered, and
    how many times a join was refused because the server could not reach its room store."""
    gate = asyncio.Semaphore(window)

    async def one(index: int, client: Client) -> int:
        async with gate:
            return await join(client, room_of(prefix, generator, index), f"c{index}")

    start = time.monotonic()
    refused = sum(await asyncio.gather(*(one(i, c) for i, c in enumerate(load.clients))))
    end = time.monotonic()
    address_partners(load)
    return {"start": start, "end": end, "joins": len(load.clients), "unavailable": refused}


def address_partners(load: Load) -> None:
    """Each client's ``message`` to its partner, which needs the partner's sid (known once joined)."""
    for client in load.clients:
        assert client.partner is not None
        client.message_head = ('42["message",{"type":"candidate","candidate":{"candidate":"' + CANDIDATE
                               + '","sdpMid":"0","sdpMLineIndex":0,' + SEQ_KEY)
        client.message_tail = '"},"to":"' + client.partner.sid + '"}]'


async def relay(load: Load, rate: float, seconds: float) -> dict[str, Any]:
    """Send ``rate`` messages a second for ``seconds``, each client in turn to its partner;
    what arrived within ``GRACE`` seconds after."""
    load.sent_at.clear()
    load.latencies = []
    clients = load.clients
    start = time.monotonic()
    sent = 0
    while (now := time.monotonic()) - start < seconds:
        due = int((now - start) * rate) - sent
        for _ in range(due):
            client = clients[sent % len(clients)]
            load.seq += 1
            load.sent_at[load.seq] = time.monotonic()
            await client.ws.send_str(client.message_head + str(load.seq) + client.message_tail)
            sent += 1
        await asyncio.sleep(TICK)
    deadline = time.monotonic() + GRACE
    while load.sent_at and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return {"sent": sent, "received": len(load.latencies), "latencies": [x * 1000 for x in load.latencies]}


async def close_all(load: Load) -> None:
    for client in load.clients:
        await client.ws.close()
    for task in load.readers:
        task.cancel()
    await asyncio.gather(*load.readers, return_exceptions=True)
    for session in load.sessions:
        await session.close()
    load.clients, load.readers, load.sessions = [], [], []


async def generator(link: harness.Link, options: argparse.Namespace, rest: list[str]) -> None:
    """A load generator: does what the parent asks, one command at a time."""
    _raise_descriptor_limit()
    load = Load()
    while True:
        try:
            command = await link.receive()
        except EOFError:
            return
        do = command["do"]
        if do == "open":
            await open_clients(load, command["urls"], command["clients"], command["generator"])
            link.send("opened")
        elif do == "join":
            latencies = await join_all(load, command["generator"], command["rate"], command["prefix"])
            link.send("joined", latencies=[x * 1000 for x in latencies])
        elif do == "burst":
            link.send("burst", **await join_burst(load, command["generator"], command["window"], command["prefix"]))
        elif do == "relay":
            link.send("relayed", **await relay(load, command["rate"], command["seconds"]))
        elif do == "close":
            await close_all(load)
            link.send("closed")


def _raise_descriptor_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))


# The parent --------------------------------------------------------------------------------

@dataclass
class Step:
    """What the generators made of one offered rate."""

    rate: float
    seconds: float
    sent: int
    received: int
    latencies: list[float]

    @property
    def loss(self) -> float:
        return 1 - self.received / self.sent if self.sent else 0.0

    @property
    def delivered_per_second(self) -> float:
        return self.received / self.seconds

    @property
    def passed(self) -> bool:
        return self.loss <= MAX_LOSS and percentile(self.latencies, 50) <= SATURATED_MEDIAN_MS


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))]


class Generators:
    """The load generator processes, commanded together."""

    def __init__(self, children: list[harness.Child]) -> None:
        self.children = children

    @property
    def pids(self) -> list[int]:
        return [child.pid for child in self.children]

    @classmethod
    async def start(cls) -> "Generators":
        return cls([await harness.Child.start(HERE, "load") for _ in range(GENERATORS)])

    async def ask(self, kind: str, timeout: float, **commands: Any) -> list[dict[str, Any]]:
        for index, child in enumerate(self.children):
            child.send({**commands, "generator": index})
        waits = [asyncio.ensure_future(child.expect(kind, timeout)) for child in self.children]
        try:
            return list(await asyncio.gather(*waits))
        except BaseException:
            for wait in waits:
                wait.cancel()
            raise

    async def open(self, urls: list[str], clients: int) -> None:
        await self.ask("opened", 120, do="open", urls=urls, clients=clients // (2 * GENERATORS) * 2)

    async def join(self, prefix: str = "bench") -> list[float]:
        answers = await self.ask("joined", 120, do="join", rate=JOIN_RATE / GENERATORS, prefix=prefix)
        return [x for answer in answers for x in answer["latencies"]]

    async def burst(self, prefix: str) -> tuple[int, float, int]:
        """Every client joins at once (``JOIN_WINDOW`` awaiting their ack in each generator):
        the joins, the seconds from the first sent to the last ack read in either generator, and
        the refusals of a server that could not reach its room store (each asked again)."""
        answers = await self.ask("burst", 120 + UNAVAILABLE_FOR, do="burst", window=JOIN_WINDOW, prefix=prefix)
        return (sum(a["joins"] for a in answers), max(a["end"] for a in answers) - min(a["start"] for a in answers),
                sum(a["unavailable"] for a in answers))

    async def relay(self, rate: float, seconds: float) -> Step:
        answers = await self.ask("relayed", seconds + 60, do="relay", rate=rate / GENERATORS, seconds=seconds)
        return Step(rate, seconds, sum(a["sent"] for a in answers), sum(a["received"] for a in answers),
                    [x for a in answers for x in a["latencies"]])

    async def close(self) -> None:
        await self.ask("closed", 60, do="close")

    async def stop(self) -> None:
        for child in self.children:
            await child.stop()


@dataclass
class Server:
    """A server under test, running: its URL and how to stop it."""

    name: str
    url: str
    pid: int
    stop: Any


async def start_ours(root: Path = harness.ROOT) -> Server:
    """``python -m signaling`` as a user runs it, on a free port (from ``root``: another
    version of the package can be measured, for a before and after)."""
    return await start_signaling("ours", root)


async def start_signaling(name: str, root: Path, *flags: str, log: Optional[Path] = None) -> Server:
    """``python -m signaling --host 127.0.0.1 --port P [flags]`` from ``root``, once it answers
    ``/healthz``; its stderr into ``log`` (said when it fails to start), else nowhere."""
    port = free_port()
    with open(log or os.devnull, "wb") as stderr:  # the child holds its own copy
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "signaling", "--host", LOCAL, "--port", str(port), *flags,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=stderr,
            cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    try:
        await wait_listening(port, process, f"python -m signaling {' '.join(flags)}".strip(), healthz=True)
    except RuntimeError as error:
        await stopper(process)()
        said = log.read_text(errors="replace").strip().splitlines()[-3:] if log else []
        raise RuntimeError("; ".join([str(error), *said])) from None
    return Server(name, f"http://{LOCAL}:{port}", process.pid, stopper(process))


def stopper(process: asyncio.subprocess.Process) -> Any:
    """A function that ends ``process`` (SIGTERM, SIGKILL after ``STOP_WITHIN`` seconds) and waits for it."""
    async def stop() -> None:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), STOP_WITHIN)
            except asyncio.TimeoutError:
                process.kill()
                await process.wait()
    return stop


async def start_bare() -> Server:
    child = await harness.Child.start(HERE, "bare")
    ready = await child.expect("ready")
    return Server("bare", f"http://{LOCAL}:{ready['port']}", child.pid, child.stop)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOCAL, 0))
        return int(probe.getsockname()[1])


async def wait_listening(port: int, process: asyncio.subprocess.Process, what: str = "python -m signaling",
                         timeout: float = 30, healthz: bool = False) -> None:
    """Until ``process`` accepts connections on ``port`` (and, with ``healthz``, answers
    ``GET /healthz`` with 200: a node on Redis is ready once it has reached Redis)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.returncode is not None:
            raise RuntimeError(f"{what} exited ({process.returncode})")
        try:
            reader, writer = await asyncio.open_connection(LOCAL, port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        try:
            if not healthz:
                return
            writer.write(f"GET /healthz HTTP/1.0\r\nHost: {LOCAL}:{port}\r\n\r\n".encode())
            if (await reader.readline()).split()[1:2] == [b"200"]:
                return
        except OSError:
            pass
        finally:
            writer.close()
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{what} was not ready within {timeout:g} s")


@dataclass
class Result:
    """One round of one server."""

    joins: list[float]
    fixed: Step
    cpu_per_message: float
    """The server's CPU time per message relayed at the fixed rate, in microseconds."""
    saturation: float
    climb: list[Step]


async def one_round(server: Server, generators: Generators, clients: int, rate: float, seconds: float,
                    max_steps: int, profile: Optional[Path]) -> Result:
    await generators.open([server.url], clients)
    joins = await generators.join()
    before = harness.usage(server.pid).cpu_seconds
    fixed = await generators.relay(rate, seconds)
    cpu = harness.usage(server.pid).cpu_seconds - before
    spy = await start_py_spy(server, profile) if profile else None
    try:
        climb = await climb_rates(server, generators, rate / 2, seconds, max_steps)
    finally:
        if spy is not None:
            await stop_py_spy(spy)
    await generators.close()
    passed = [step.delivered_per_second for step in climb if step.passed]
    return Result(joins, fixed, cpu / max(1, fixed.received) * 1e6, max(passed) if passed else 0.0, climb)


async def climb_rates(server: Server, generators: Generators, rate: float, seconds: float,
                      max_steps: int) -> list[Step]:
    """Offer more and more until two steps in a row fail (one may be another job's burst on
    this shared machine), or ``max_steps`` are done."""
    climb: list[Step] = []
    failed = 0
    for _ in range(max_steps):
        before = [harness.usage(pid).cpu_seconds for pid in [server.pid, *generators.pids]]
        step = await generators.relay(rate, seconds)
        cpu = [(harness.usage(pid).cpu_seconds - was) / (seconds + GRACE)
               for pid, was in zip([server.pid, *generators.pids], before)]
        climb.append(step)
        print(f"    {rate:8.0f}/s offered: {step.delivered_per_second:8.0f}/s delivered, "
              f"median {percentile(step.latencies, 50):6.1f} ms, p99 {percentile(step.latencies, 99):7.1f} ms, "
              f"loss {step.loss:.1%}; CPU server {cpu[0]:.0%}, generators "
              + ", ".join(f"{c:.0%}" for c in cpu[1:]), file=sys.stderr)
        failed = 0 if step.passed else failed + 1
        if failed == 2:
            break
        await asyncio.sleep(GRACE)  # whatever queued drains before the next step
        rate *= STEP
    return climb


async def start_py_spy(server: Server, directory: Path, phase: str = "") -> list[asyncio.subprocess.Process]:
    """py-spy on ``server``, into ``DIR/NAME[-PHASE].txt`` (collapsed stacks) and ``.svg``."""
    directory.mkdir(parents=True, exist_ok=True)
    name = f"{server.name}-{phase}" if phase else server.name
    return [await asyncio.create_subprocess_exec(
        "py-spy", "record", "--pid", str(server.pid), "--rate", "200", "--format", fmt,
        "-o", str(directory / f"{name}.{suffix}"), stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL) for fmt, suffix in (("raw", "txt"), ("flamegraph", "svg"))]


async def stop_py_spy(spies: list[asyncio.subprocess.Process]) -> None:
    for spy in spies:
        spy.send_signal(2)  # SIGINT: py-spy writes its file and exits
        await spy.wait()


# Several nodes on Redis --------------------------------------------------------------------

class NoRedis(Exception):
    """The node rows were asked for and redis-server is not installed."""


def redis_program() -> str:
    program = shutil.which("redis-server")
    if program is None:
        raise NoRedis("bench/signaling_server.py: redis-server is not installed, and the rows with several "
                      "nodes need one (apt-get install redis-server; or --nodes none to leave those rows out)")
    return program


async def start_redis(program: str, directory: Path) -> Server:
    """A redis-server of the bench's own on a free port of 127.0.0.1, nothing on disk (as
    tests/redis_server.py runs one)."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        program, "--port", str(port), "--bind", LOCAL, "--save", "", "--appendonly", "no", "--dir", str(directory),
        "--protected-mode", "yes", "--loglevel", "warning",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    await wait_listening(port, process, "redis-server")
    return Server("redis", f"redis://{LOCAL}:{port}/0", process.pid, stopper(process))


async def start_nodes(count: int, redis: Server, root: Path, logs: Path) -> list[Server]:
    """``count`` nodes, ``python -m signaling --redis URL --node-name nK`` each, started together;
    all or none (those that started are stopped if one fails)."""
    started = await asyncio.gather(*(
        start_signaling(f"{count}-nodes-n{k}", root, "--redis", redis.url, "--node-name", f"n{k}",
                        log=logs / f"{count}-nodes-n{k}.log")
        for k in range(1, count + 1)), return_exceptions=True)
    nodes = [node for node in started if isinstance(node, Server)]
    failed = [error for error in started if isinstance(error, BaseException)]
    if failed:
        await stop_all(nodes)
        raise failed[0]
    return nodes


async def stop_all(servers: list[Server]) -> None:
    await asyncio.gather(*(server.stop() for server in servers))


@dataclass
class NodeResult:
    """One round of one set of servers: ours alone (the reference) or ``k`` nodes on Redis."""

    joins_per_second: float
    cpu_per_join: float
    """The CPU time of every node and of Redis per join of the burst, us."""
    fixed: Step
    cpu_per_message: float
    """The CPU time of every node and of Redis per message relayed at the fixed rate, us."""


async def node_round(servers: list[Server], redis: Optional[Server], generators: Generators, clients: int,
                     rate: float, seconds: float, prefix: str, profile: Optional[Path]) -> NodeResult:
    """Clients spread over ``servers`` (the two of a room on different ones when there are
    two or more), a burst of joins, then messages at ``rate`` for ``seconds``."""
    pids = [server.pid for server in servers] + ([redis.pid] if redis else [])
    await generators.open([server.url for server in servers], clients)
    spies = await profile_all(servers, profile, "joins")
    before = cpu_seconds(pids)
    try:
        joins, elapsed, unavailable = await generators.burst(prefix)
        await asyncio.sleep(GRACE)  # what the joins sent (presence, to each room) is through before the relay
    finally:
        await stop_py_spy(spies)
    join_cpu = [after - was for after, was in zip(cpu_seconds(pids), before)]  # a join costs more after its ack
    spies = await profile_all(servers, profile)
    before = cpu_seconds(pids)
    try:
        fixed = await generators.relay(rate, seconds)
    finally:
        await stop_py_spy(spies)
    relay_cpu = [after - was for after, was in zip(cpu_seconds(pids), before)]
    await generators.close()
    per_join = [cpu / joins * 1e6 for cpu in join_cpu]
    per_message = [cpu / max(1, fixed.received) * 1e6 for cpu in relay_cpu]
    print(f"    {len(servers)} server(s){' on Redis' if redis else ', no Redis'}: {joins / elapsed:.0f} joins/s, "
          f"{sum(per_join):.0f} us CPU a join{redis_part(per_join, redis)}"
          + (f", {unavailable} refused as 'unavailable' (asked again a second later)" if unavailable else "")
          + f"; {rate:g}/s offered: "
          f"{fixed.delivered_per_second:.0f}/s delivered, median {relay_median(fixed):.1f} ms, "
          f"p99 {relay_p99(fixed):.1f} ms, loss {fixed.loss:.1%}; {sum(per_message):.0f} us CPU a message"
          f"{redis_part(per_message, redis)}", file=sys.stderr)
    return NodeResult(joins / elapsed, sum(per_join), fixed, sum(per_message))


def redis_part(shares: list[float], redis: Optional[Server]) -> str:
    """Redis's share (the last of ``shares``), for the progress line."""
    return f" (Redis {shares[-1]:.0f})" if redis else ""


async def profile_all(servers: list[Server], directory: Optional[Path],
                      phase: str = "") -> list[asyncio.subprocess.Process]:
    return [spy for server in servers for spy in await start_py_spy(server, directory, phase)] if directory else []


def cpu_seconds(pids: list[int]) -> list[float]:
    return [harness.usage(pid).cpu_seconds for pid in pids]


async def node_rounds(number: int, ours: Server, redis: Server, nodes: list[int], generators: Generators,
                      clients: int, rate: float, seconds: float, root: Path, logs: Path,
                      profile: Optional[Path]) -> dict[int, NodeResult]:
    """One round of the node rows: ours alone (key 0), then each count of nodes, started afresh
    (a node idle on the same Redis would still decode every message published)."""
    print(f"round {number + 1}, ours without Redis, then on Redis with {', '.join(map(str, nodes))} node(s):",
          file=sys.stderr)
    results = {0: await node_round([ours], None, generators, clients, rate, seconds, f"r{number}n0", None)}
    for count in nodes:
        cluster = await start_nodes(count, redis, root, logs)
        try:
            results[count] = await node_round(cluster, redis, generators, clients, rate, seconds,
                                              f"r{number}n{count}", profile)
        except Exception:
            for node in cluster:  # what the nodes said beyond their joins: the logs go with the bench's directory
                lines = (logs / f"{node.name}.log").read_text(errors="replace").splitlines()
                said = [line for line in lines if " INFO " not in line][-5:] or lines[-5:]
                print(f"{node.name}'s log:", *said, sep="\n    ", file=sys.stderr)
            raise
        finally:
            await stop_all(cluster)
    return results


def relay_median(step: Step) -> float:
    return statistics.median(step.latencies) if step.latencies else float("nan")


def relay_p99(step: Step) -> float:
    return percentile(step.latencies, 99)


def node_rows(results: list[dict[int, NodeResult]], nodes: list[int], clients: int, rate: float) -> list[harness.Row]:
    """Each count of nodes beside ours alone without Redis (the baseline column)."""
    made = [
        ("joins per second", "per s", lambda r: r.joins_per_second, True),
        ("CPU of nodes and Redis per join", "us", lambda r: r.cpu_per_join, False),
        (f"relay latency median at {rate:g}/s", "ms", lambda r: relay_median(r.fixed), False),
        (f"relay latency p99 at {rate:g}/s", "ms", lambda r: relay_p99(r.fixed), False),
        (f"CPU of nodes and Redis per message relayed at {rate:g}/s", "us", lambda r: r.cpu_per_message, False),
    ]
    return [harness.Row(f"signaling on Redis, {count} node{'s' if count > 1 else ''}, {clients} clients: {name}",
                        unit, [measure(r[count]) for r in results], [measure(r[0]) for r in results],
                        higher_is_better=higher)
            for count in nodes for name, unit, measure, higher in made]


async def run(rounds: int, seconds: float, quick: bool, clients: int = 1000, rate: float = 2000,
              profile: Optional[Path] = None, ours_from: Path = harness.ROOT, nodes: Optional[list[int]] = None,
              node_rate: float = NODE_RATE) -> list[harness.Row]:
    """The rows of ours beside the bare relay, then (``nodes``: counts of nodes; None, 1 to 3,
    or 1 and 2 when ``quick``) those of ours on Redis beside ours alone."""
    nodes = ([1, 2] if quick else [1, 2, 3]) if nodes is None else nodes
    program = redis_program() if nodes else ""  # before anything starts
    if quick:
        rounds, clients, rate, seconds = 1, min(clients, 50), min(rate, 200), min(seconds, 0.5)
        node_rate = min(node_rate, 200)
    max_steps = 2 if quick else 30
    generators = await Generators.start()
    servers = [await start_ours(ours_from), await start_bare()]
    print(f"ours: pid {servers[0].pid}, bare python-socketio: pid {servers[1].pid}", file=sys.stderr)
    results: dict[str, list[Result]] = {"ours": [], "bare": []}
    on_redis: list[dict[int, NodeResult]] = []
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as directory:
        redis = await start_redis(program, Path(directory)) if nodes else None
        try:
            for number in range(rounds):
                for server in servers:
                    print(f"round {number + 1}, {server.name}:", file=sys.stderr)
                    results[server.name].append(await one_round(
                        server, generators, clients, rate, seconds, max_steps, profile if number == 0 else None))
                if redis is not None:
                    on_redis.append(await node_rounds(number, servers[0], redis, nodes, generators, clients, node_rate,
                                                      seconds, ours_from, Path(directory),
                                                      profile if number == 0 else None))
        finally:
            await stop_all(servers + ([redis] if redis else []))
            await generators.stop()
    return rows(results, clients, rate) + node_rows(on_redis, nodes, clients, node_rate)


def rows(results: dict[str, list[Result]], clients: int, rate: float) -> list[harness.Row]:
    """The table: medians over rounds of each round's figure (vs bare python-socketio)."""
    def each(measure: Any) -> dict[str, list[float]]:
        return {side: [measure(result) for result in results[side]] for side in ("ours", "bare")}

    rooms = f"{clients} clients"
    made = [
        (f"signaling {rooms}: join latency median", "ms", lambda r: statistics.median(r.joins), False),
        (f"signaling {rooms}: join latency p99", "ms", lambda r: percentile(r.joins, 99), False),
        (f"signaling {rooms}: relay latency median at {rate:g}/s", "ms", lambda r: relay_median(r.fixed), False),
        (f"signaling {rooms}: relay latency p99 at {rate:g}/s", "ms", lambda r: relay_p99(r.fixed), False),
        (f"signaling {rooms}: server CPU per message relayed at {rate:g}/s", "us", lambda r: r.cpu_per_message, False),
        (f"signaling {rooms}: relays at saturation", "per s", lambda r: r.saturation, True),
    ]
    out = []
    for name, unit, measure, higher in made:
        values = each(measure)
        out.append(harness.Row(name, unit, values["ours"], values["bare"], higher_is_better=higher))
    return out


async def measure(rounds: int, seconds: float, quick: bool) -> list[harness.Row]:
    """For bench/run.py: the rows, baseline bare python-socketio (ours alone for those on Redis)."""
    return await run(rounds, seconds, quick)


def node_counts(text: str) -> list[int]:
    """``--nodes``: counts of nodes separated by commas, or ``none``."""
    if text.strip().lower() == "none":
        return []
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: counts of nodes separated by commas (1,2,3), or none") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: every count of nodes is 1 or more")
    return counts


def main() -> None:
    if harness.run_child({"bare": bare_server, "load": generator}):
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of ours then the baseline (default 3)")
    parser.add_argument("--seconds", type=float, default=3, help="seconds at the fixed rate, and per climb step (default 3)")
    parser.add_argument("--clients", type=int, default=1000, help="clients, two a room (default 1000)")
    parser.add_argument("--rate", type=float, default=2000, help="the fixed offered rate, messages a second (default 2000)")
    parser.add_argument("--nodes", type=node_counts, default=None,
                        help="counts of nodes on Redis to measure, e.g. 1,2,3 (the default; 1,2 with --quick), "
                             "or none: needs redis-server")
    parser.add_argument("--node-rate", type=float, default=NODE_RATE,
                        help=f"the fixed offered rate of the rows on Redis, messages a second (default {NODE_RATE:g})")
    parser.add_argument("--quick", action="store_true", help="50 clients, half a second: a smoke test")
    parser.add_argument("--profile", type=Path, help="py-spy each server during its first climb (each node during its "
                                                     "first round's joins and relay), into this directory")
    parser.add_argument("--ours-from", type=Path, default=harness.ROOT,
                        help="a directory holding another version of the signaling package, to measure it as ours")
    args = parser.parse_args()
    try:
        rows_ = asyncio.run(run(args.rounds, args.seconds, args.quick, args.clients, args.rate, args.profile,
                                args.ours_from.resolve(), args.nodes, args.node_rate))
    except NoRedis as error:
        parser.exit(1, f"{error}\n")
    print("baseline: a bare python-socketio relay (the 'bare' column); "
          "for the rows 'on Redis', ours alone without Redis")
    print(harness.format_table(rows_))


if __name__ == "__main__":
    main()
