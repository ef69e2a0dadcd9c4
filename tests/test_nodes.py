"""Signaling on several nodes that share their rooms on one Redis (issue 14), with everything
real on 127.0.0.1: redis-server, `python -m signaling --redis` nodes, nginx from
deploy/nginx.conf, `python -m peer` processes and python-socketio clients.

Each test starts its own Redis and nodes (at once, in parallel: tests/nodes.py), since the
tests kill nodes and Redis; a node takes about a second to start.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
import urllib.request
from typing import Any

import av
import pytest

from conftest import LOCAL, Process, child_env, free_port
from nodes import Nginx, Nodes, health, until
from test_resilience import simultaneous_joins
from test_signaling_server import Client, sdp

CALL = ["--video", "testsrc", "--video-size", "160x120", "--fps", "10", "--ice-host", LOCAL, "--no-window"]
LEFT_WITHIN = 5.0
"""The contract: a killed node's members are out of their rooms, for the others, within 5 s."""
UNAVAILABLE = "unavailable"
BACK_WITHIN = 3.0
"""The contract: "about a second" from Redis answering again to the nodes' "is back"."""


async def expect(process: Process, pattern: str, timeout: float = 20, times: int = 1) -> re.Match:
    """``process.expect`` without blocking the event loop of the Socket.IO clients of a test."""
    return await asyncio.to_thread(process.expect, pattern, timeout, times)


async def connected(url: str, transports: tuple[str, ...] = ("websocket",)) -> Client:
    client = Client(url)
    await client.connect(transports=transports)
    return client


async def offer_and_answer(offerer: Client, answerer: Client, broadcast: bool = False) -> None:
    """``offerer`` sends an offer ``to`` ``answerer`` (or to the room, ``broadcast``), which
    answers the same way: each gets the other's, stamped with its sender, whichever nodes they
    are on."""
    offer = {"type": "offer", "sdp": sdp(f"offer-{offerer.id}")}
    assert await offerer.call("message", offer if broadcast else {**offer, "to": answerer.id}) == {"ok": True}
    got = await answerer.expect("message", lambda m: m.get("type") == "offer")
    assert got == {**offer, "from": offerer.id, "name": offerer.name}
    answer = {"type": "answer", "sdp": sdp(f"answer-{answerer.id}")}
    assert await answerer.call("message", answer if broadcast else {**answer, "to": offerer.id}) == {"ok": True}
    got = await offerer.expect("message", lambda m: m.get("type") == "answer")
    assert got == {**answer, "from": answerer.id, "name": answerer.name}


async def landing(nodes: Nodes, clients: list[Client], url: str,
                  transports: tuple[str, ...] = ("websocket",)) -> tuple[Client, str]:
    """A client connected to ``url`` (nginx), added to ``clients``, and the name of the node
    its session landed on (the one whose count of connections went up)."""
    before = nodes.connections()
    client = await connected(url, transports)
    clients.append(client)
    after = await asyncio.to_thread(until, lambda: (now := nodes.connections()) != before and now, 5,
                                    "a node counts the new session")
    return client, next(name for name, count in after.items() if count > before[name])


def unavailable(ack: Any, event: str) -> bool:
    return ack == {"ok": False, "event": event, "code": UNAVAILABLE,
                   "error": "the server cannot reach its room store; try again in a moment"}


def no_traceback(*processes: Any) -> None:
    for process in processes:
        assert "Traceback" not in process.output, f"{process.name}:\n{process.output}"


# A call across nodes


def test_a_call_across_two_nodes(redis_server, processes):
    """alice on one node, bob on another, one room: the call connects with the same
    verification code on both sides, video arrives both ways and chat goes both ways."""
    with Nodes(redis_server.url, 2) as nodes:
        alice = processes.peer("--room", "across", "--server", nodes[0].url, *CALL, name="alice")
        bob = processes.peer("--room", "across", "--server", nodes[1].url, *CALL, name="bob")
        code_a = alice.expect(r"connected to bob; verification code (\d{5}(?: \d{5}){4})").group(1)
        code_b = bob.expect(r"connected to alice; verification code (\d{5}(?: \d{5}){4})").group(1)
        assert code_a == code_b
        alice.expect("video from bob arrives")
        bob.expect("video from alice arrives")
        alice.send("hello bob")
        bob.expect(r"^\[alice\] hello bob$")
        bob.send("hi alice")
        alice.expect(r"^\[bob\] hi alice$")
        assert [h["connections"] for h in nodes.healths()] == [1, 1]
        assert [(h["rooms"], h["members"], h["redis"]) for h in nodes.healths()] == [(1, 2, "up")] * 2
        alice.interrupt()
        bob.expect("call with alice ended", timeout=5)
        assert alice.wait() == 0
        no_traceback(alice, bob, *nodes)


# Many joins at once


CONTENDERS, ROOMS = 50, 20


async def test_fifty_joins_at_once_over_three_nodes(redis_server):
    """50 clients join 20 rooms of two at the same instant, through three nodes: the three
    contenders of a room are on three nodes. Every room ends with exactly two members, the
    others are refused with room-full, nobody ever hears of a third member, and every pair
    relays an offer and an answer to each other across their nodes. (That each first member
    also hears ``peer-joined`` of the second: test_presence_of_simultaneous_joins.)"""
    with Nodes(redis_server.url, 3) as nodes:
        clients = await asyncio.gather(*(connected(nodes[k % 3].url) for k in range(CONTENDERS)))
        try:
            rooms = [f"seat-{k % ROOMS}" for k in range(CONTENDERS)]  # k, k+20, k+40: nodes k%3, (k+2)%3, (k+1)%3
            acks = await asyncio.gather(*(client.call("join", {"room": room, "name": f"c{k}"})
                                          for k, (client, room) in enumerate(zip(clients, rooms))))
            seated: dict[str, list[tuple[Client, dict]]] = {}
            for client, room, ack in zip(clients, rooms, acks):
                if ack["ok"]:
                    client.id, client.name = ack["id"], ack["name"]
                    seated.setdefault(room, []).append((client, ack))
                else:
                    assert ack["code"] == "room-full", ack
            assert sorted(len(pair) for pair in seated.values()) == [2] * ROOMS, acks
            healths = nodes.healths()
            assert [(h["rooms"], h["members"]) for h in healths] == [(ROOMS, 2 * ROOMS)] * 3, healths
            assert sum(h["connections"] for h in healths) == CONTENDERS

            # The second of each pair was told of the first (the offerer rule) and offers to it.
            pairs = []
            for pair in seated.values():
                (first, _), (second, ack) = sorted(pair, key=lambda seat: len(seat[1]["members"]))
                assert ack["members"] == [{"id": first.id, "name": first.name}], ack
                pairs.append((second, first))
            await asyncio.gather(*(offer_and_answer(second, first) for second, first in pairs))
            await asyncio.gather(*(client.sync() for client in clients if client.id))
            for client in clients:
                assert max(client.seen("userInRoom") or [0]) <= 2, client.events
                assert len(client.seen("peer-joined")) <= 1, client.events
        finally:
            await asyncio.gather(*(client.close() for client in clients))
        no_traceback(*nodes)


async def test_simultaneous_joins_on_two_nodes_make_one_call(redis_server):
    """Two real peers (the API's) join one room at the same instant through two nodes, five
    times: each time exactly one call, and chat over it."""
    with Nodes(redis_server.url, 2) as nodes:
        await simultaneous_joins(nodes[0].url, nodes[1].url, 5)
        no_traceback(*nodes)


async def test_presence_of_simultaneous_joins(redis_server):
    """Pairs joining one room each at the same instant through two nodes: as on one server,
    the first of each pair hears the head count 1, then ``peer-joined`` of the second and the
    head count 2; the second hears the head count 2 and of nobody joining. (The first's own
    count could come after what its node relays from the other node, had its node not held
    that back until its join was answered: ``DirectManager.holding``.)"""
    with Nodes(redis_server.url, 2) as nodes:
        pairs = [await asyncio.gather(connected(nodes[0].url), connected(nodes[1].url)) for _ in range(20)]
        clients = [client for pair in pairs for client in pair]
        try:
            acks = await asyncio.gather(*(client.call("join", {"room": f"order-{k}", "name": name})
                                          for k, pair in enumerate(pairs) for client, name in zip(pair, ("a", "b"))))
            await asyncio.gather(*(client.sync() for client in clients))
            await asyncio.sleep(0.5)  # anything else on its way from the other node
            heard = [(client.seen("userInRoom"), [joined["name"] for joined in client.seen("peer-joined")])
                     for client in clients]
            expected = [([1, 2], ["b" if client is pair[0] else "a"]) if not ack["members"] else ([2], [])
                        for ack, client, pair in zip(acks, clients, (pair for pair in pairs for _ in pair))]
            wrong = [(got, meant) for got, meant in zip(heard, expected) if got != meant]
            assert not wrong, f"{len(wrong)} of {len(clients)} members heard (head counts, joined): {wrong[:5]}"
        finally:
            await asyncio.gather(*(client.close() for client in clients))


async def test_a_burst_of_joins_on_one_node(redis_server):
    """200 clients join at once through one node, as the clients of a node that died come to
    the others: all are seated (100 rooms of two) and the node stays healthy."""
    with Nodes(redis_server.url, 1) as nodes:
        clients = await asyncio.gather(*(connected(nodes[0].url) for _ in range(200)))
        try:
            acks = await asyncio.gather(*(client.call("join", {"room": f"burst-{k // 2}", "name": f"b{k}"})
                                          for k, client in enumerate(clients)))
            refusals = [ack for ack in acks if not ack["ok"]]
            assert not refusals, f"{len(refusals)} of 200 refused, e.g. {refusals[0]}; {health(nodes[0].url)}"
            assert health(nodes[0].url) == (200, {"status": "ok", "node": "node1", "redis": "up", "rooms": 100,
                                                  "members": 200, "connections": 200})
        finally:
            await asyncio.gather(*(client.close() for client in clients))


# A node that dies


def test_a_killed_node_behind_nginx(redis_server, processes, tmp_path):
    """Two peers behind nginx land on two nodes. The node of bob is killed (SIGKILL): within
    5 s the other node takes bob out of the room and alice hears that he left; bob reconnects
    through nginx to the node left and rejoins (refused as "room-full" while his ghost holds
    the seat, asked again each second), and their call, peer to peer all along, goes on:
    chat both ways, and bob's video reaches alice with no gap."""
    recording = tmp_path / "alice-got.mp4"
    with Nodes(redis_server.url, 2) as nodes, Nginx(nodes.ports) as nginx:
        alice = processes.peer("--room", "failover", "--server", nginx.url, *CALL, "--record", str(recording),
                               "--verbose", name="alice")
        alice.expect("waiting for someone to join room failover")
        alice_node = next(node for node in nodes if health(node.url)[1]["connections"] == 1)
        bob_node = next(node for node in nodes if node is not alice_node)
        bob = processes.peer("--room", "failover", "--server", nginx.url, *CALL, name="bob")
        alice.expect("connected to bob")
        bob.expect("connected to alice")
        until(lambda: health(bob_node.url)[1]["connections"] == 1, 5, "bob on the other node (nginx's least_conn)")
        assert health(alice_node.url)[1]["members"] == 2

        killed = time.monotonic()
        nodes.kill(bob_node)
        bob.expect("lost the signaling server")
        # alice hears it as a leave ("bob left"; while their call's media still flows, the
        # peer says so only in its log, and waits for the heartbeat)
        alice.expect(r"\bbob left\b", timeout=LEFT_WITHIN + 1)
        assert time.monotonic() - killed < LEFT_WITHIN + 0.5, alice.output
        bob.expect("back in room failover", timeout=20)  # through nginx, on the node left
        both = {"status": "ok", "node": alice_node.name, "redis": "up", "rooms": 1, "members": 2, "connections": 2}
        until(lambda: health(alice_node.url) == (200, both), 10, f"both on {alice_node.name}: {health(alice_node.url)}")
        time.sleep(3)  # past the grace in which a peer back under a new id is confirmed
        bob.send("after the failover")
        alice.expect(r"^\[bob\] after the failover$")
        alice.send("welcome back")
        bob.expect(r"^\[alice\] welcome back$")
        # the same call all along (the README: a peer back from a signaling outage keeps its
        # calls instead of calling twice), as after a restart of the only server
        assert alice.output.count("connected to bob") == 1 and bob.output.count("connected to alice") == 1
        # and its statistics follow bob under his new id: his video's frame rate, not "-"
        before = len(alice.lines)
        until(lambda: any(line.startswith("status: ") for line in list(alice.lines)[before:]), 7, "a status line")
        status = next(line for line in list(alice.lines)[before:] if line.startswith("status: "))
        assert re.search(r"\bbob \d+(\.\d+)?/\d+(\.\d+)? fps in/out", status), status
        alice.interrupt()
        assert alice.wait() == 0
        no_traceback(alice, bob, alice_node)
    with av.open(str(recording)) as container:
        times = [float(frame.time) for frame in container.decode(video=0)]
    gap = max(b - a for a, b in zip(times, times[1:]))
    assert len(times) > 50 and gap < 1.0, f"{len(times)} frames over {times[-1]:.1f} s, a gap of {gap:.1f} s"


async def test_a_killed_nodes_members_leave_within_5_s(redis_server):
    """What the room hears when a node dies: its member leaves (``peer-left``, then the head
    count ``userInRoom``) within 5 s, as if it had left, and its seat is free again."""
    with Nodes(redis_server.url, 2) as nodes:
        a, b = await connected(nodes[0].url), await connected(nodes[1].url)
        newcomer = None
        try:
            await a.join("ghost", "alice")
            await b.join("ghost", "bob")
            assert await a.expect("peer-joined") == {"id": b.id, "name": "bob"}
            assert [await a.expect("userInRoom"), await a.expect("userInRoom")] == [1, 2]
            killed = time.monotonic()
            nodes.kill(nodes[1])
            assert await a.expect("peer-left", timeout=LEFT_WITHIN + 1) == {"id": b.id, "name": "bob"}
            assert time.monotonic() - killed < LEFT_WITHIN
            assert await a.expect("userInRoom", timeout=1) == 1
            newcomer = await connected(nodes[0].url)
            await newcomer.join("ghost", "bob")
            assert (status := health(nodes[0].url)) == (200, {"status": "ok", "node": "node1", "redis": "up", "rooms": 1,
                                                                "members": 2, "connections": 2}), status
        finally:
            await asyncio.gather(*(client.close() for client in (a, b, newcomer) if client))
        no_traceback(nodes[0])


# Redis away


def test_redis_unreachable_at_start():
    """No Redis at the URL: one clear line (a password in the URL not shown), exit status 1,
    within 5 s; the same from the environment variable."""
    port = free_port()
    url = f"redis://{LOCAL}:{port}/0"
    secret = f"redis://:hunter2@{LOCAL}:{port}/0"
    runs = [
        (url, [sys.executable, "-m", "signaling", "--host", LOCAL, "--port", str(free_port()), "--redis", url], child_env()),
        (f"redis://:***@{LOCAL}:{port}/0", [sys.executable, "-m", "signaling", "--host", LOCAL, "--port", str(free_port())],
         child_env(SIGNALING_REDIS=secret)),
    ]
    started = time.monotonic()
    children = [(shown, subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
                for shown, args, env in runs]
    for shown, child in children:
        out, err = child.communicate(timeout=15)
        assert child.returncode == 1, (child.returncode, out, err)
        assert time.monotonic() - started < 5 + 1, err  # both ran at once; a second for Python to start
        lines = err.splitlines()
        assert len(lines) == 1 and re.fullmatch(rf"signaling: cannot reach Redis at {re.escape(shown)}: \S.*", lines[0]), err
        assert "hunter2" not in out + err and "Traceback" not in err


async def test_redis_lost_and_back(redis_server, processes):
    """Redis killed while two nodes run: each says so in one WARNING line, /healthz answers
    503 "down", a join is refused with "unavailable" and so is a member's message, and a peer
    that comes meanwhile keeps asking; Redis back (empty): the "is back" line, the nodes put
    their members back, the pair made before goes on relaying, the waiting peer gets in and is
    called by a new one, and new joins work again, across the nodes."""
    with Nodes(redis_server.url, 2) as nodes:
        a, b = await connected(nodes[0].url), await connected(nodes[1].url)
        newcomers: list[Client] = []
        try:
            await a.join("before", "alice")
            await b.join("before", "bob")

            redis_server.stop()
            shown = re.escape(redis_server.url)
            for node in nodes:
                await expect(node, rf"WARNING.*lost Redis at {shown}: new joins refused until it is back \(.+\)", timeout=10)
            for node in nodes:
                status, body = health(node.url)
                assert status == 503 and body["status"] == "unavailable" and body["redis"] == "down", (status, body)
            c = await connected(nodes[0].url)
            newcomers.append(c)
            ack = await c.call("join", {"room": "during", "name": "carol"})
            assert unavailable(ack, "join"), ack
            assert await c.expect("error") == ack
            ack = await a.call("message", {"type": "offer", "sdp": sdp("during"), "to": b.id})
            assert unavailable(ack, "message"), ack
            carla = processes.peer("--room", "after-peers", "--server", nodes[0].url, *CALL, name="carla")
            # carol's refusal, then carla's (the peer asks again each second)
            await expect(nodes[0], r"refused join from \S+: the server cannot reach its room store", times=3)
            assert "joined room" not in carla.output, carla.output

            redis_server.start()
            back = time.monotonic()
            for node in nodes:
                await expect(node, rf"INFO.*Redis at {shown} is back: joins accepted again", timeout=10)
            assert time.monotonic() - back < BACK_WITHIN
            await expect(carla, "joined room after-peers as carla", timeout=5)
            await asyncio.to_thread(until, lambda: [(s, h["redis"], h["rooms"], h["members"])
                                                    for s, h in map(health, (n.url for n in nodes))]
                                    == [(200, "up", 2, 3)] * 2, 5, f"alice and bob back in their room, carla in hers: {nodes.healths()}")
            await offer_and_answer(b, a)  # the pair made before Redis went
            dan = processes.peer("--room", "after-peers", "--server", nodes[1].url, *CALL, name="dan")
            await expect(dan, "connected to carla")
            await expect(carla, "connected to dan")

            c, d = await connected(nodes[0].url), await connected(nodes[1].url)
            newcomers += [c, d]
            await c.join("after", "carol")
            ack = await d.join("after", "dave")
            assert ack["members"] == [{"id": c.id, "name": "carol"}], ack
            assert await c.expect("peer-joined") == {"id": d.id, "name": "dave"}
            await offer_and_answer(d, c)
        finally:
            await asyncio.gather(*(client.close() for client in (a, b, *newcomers)))
        no_traceback(*nodes)


# nginx with the clients that need stickiness


async def test_nginx_config_with_polling_and_websocket_clients(redis_server):
    """deploy/nginx.conf in front of two nodes: a long-polling-only client (many HTTP requests,
    all of them to the node of its session: stickiness) and a websocket client (any node: the
    one with fewer connections) meet in a room and relay to each other; a default client
    (polling, then the upgrade of its session) joins too. The page and /healthz come through."""
    with Nodes(redis_server.url, 2, "--room-size", "3") as nodes, Nginx(nodes.ports) as nginx:
        clients: list[Client] = []
        try:
            polling, polling_node = await landing(nodes, clients, nginx.url, ("polling",))
            await polling.join("sticky", "polly")
            # Websockets go to the node with fewer of them (least_conn): of two, one is on the
            # other node than the polling client's.
            ws_clients = [await landing(nodes, clients, nginx.url) for _ in range(2)]
            assert sorted(node for _, node in ws_clients) == ["node1", "node2"], ws_clients
            websocket = next(client for client, node in ws_clients if node != polling_node)
            await websocket.join("sticky", "wes")
            await offer_and_answer(websocket, polling)
            await offer_and_answer(polling, websocket, broadcast=True)  # the classic clients' way
            upgraded, _ = await landing(nodes, clients, nginx.url, ("polling", "websocket"))
            await upgraded.join("sticky", "upton")
            assert upgraded.sio.transport() == "websocket"
            await offer_and_answer(upgraded, polling)
            assert await polling.expect("peer-joined", lambda p: p["name"] == "upton")
            assert await websocket.expect("peer-joined", lambda p: p["name"] == "upton")
        finally:
            await asyncio.gather(*(client.close() for client in clients))

        status, body = health(nginx.url)
        assert status == 200 and body["node"] in ("node1", "node2"), body
        with urllib.request.urlopen(f"{nginx.url}/", timeout=5) as response:
            page = response.read().decode()
        assert response.status == 200 and "<html" in page.lower()
        script = re.search(r'src="(/web/[^"]+)"', page)
        assert script, page
        with urllib.request.urlopen(f"{nginx.url}{script.group(1)}", timeout=5) as response:
            assert response.status == 200
        log = nginx.access_log
        assert "transport=polling" in log and "transport=websocket" in log, log
        no_traceback(*nodes)
    assert "emerg" not in nginx.process.output and "[error]" not in nginx.process.output, nginx.process.output


def test_nginx_conf_is_rewritten_for_the_nodes(tmp_path):
    """What tests/nodes.py makes of deploy/nginx.conf: every node in both upstream groups,
    the listen address, and nothing written outside the test's directory."""
    from nodes import NGINX_CONF, nginx_conf

    text = nginx_conf(NGINX_CONF.read_text(), [7001, 7002], 7000, tmp_path)
    for group in ("signaling_any", "signaling_sticky"):
        block = text[text.index(f"upstream {group} {{"):]
        block = block[:block.index("}")]
        assert re.findall(r"server (\S+) max_fails", block) == [f"{LOCAL}:7001", f"{LOCAL}:7002"], block
    assert f"listen {LOCAL}:7000;" in text
    writes = [line for line in text.splitlines() if re.match(r"\s*(access_log|\w+_temp_path) ", line)]
    assert len(writes) == 6 and all(f" {tmp_path}/" in line for line in writes), writes


pytestmark = pytest.mark.timeout(120)
