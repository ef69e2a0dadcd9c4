"""Our peer and the classic room-relay pattern: a classic client calls our peer, in both
orders of arrival, through our server and through a minimal classic relay server. The
client is a tutorial's: it greets on every data channel it is given, ``control`` included."""

import asyncio

import pytest

from classic import ClassicClient, loopback_only
from conftest import LOCAL, classic_relay

STEADY = 5
"""Seconds the call must stand after chat went both ways."""


@pytest.mark.parametrize("first", ["classic", "peer"])
async def test_classic_client_calls_our_peer(any_server, processes, first, tmp_path):
    loopback_only()
    client = ClassicClient(any_server, "classic", greet=True)
    flags = ["--room", "classic", "--server", any_server, "--video", "testsrc", "--video-size", "320x240",
             "--ice-host", LOCAL, "--no-window", "--record", str(tmp_path / "classic.mp4")]
    if first == "classic":
        await client.start()
        await asyncio.sleep(0.5)
        ours = processes.peer(*flags, name="ours")
    else:
        ours = processes.peer(*flags, name="ours")
        await asyncio.to_thread(ours.expect, "joined room classic", 15)
        await client.start()
    try:
        await asyncio.wait_for(client.connected.wait(), 20)
        await asyncio.to_thread(ours.expect, "connected to", 15)
        for _ in range(100):
            if client.frames >= 10 and client.chat and client.chat.readyState == "open":
                break
            await asyncio.sleep(0.1)
        assert client.frames >= 10, "the classic client got no video from our peer"
        client.chat.send("hello from a tutorial")
        await asyncio.to_thread(ours.expect, r"\] hello from a tutorial$", 10)
        ours.send("hello back")
        for _ in range(100):
            if "hello back" in client.received:
                break
            await asyncio.sleep(0.1)
        assert "hello back" in client.received
        await asyncio.sleep(STEADY)  # a heartbeat taken up by its greeting broke the call within 3 s
        assert client.received == ["hello back"], "something of ours other than chat reached the tutorial"
        assert len([line for line in ours.lines if "connected to" in line]) == 1
        assert not [line for line in ours.lines if "lost" in line or "dropped" in line]
        await client.pc.close()  # a classic client just goes: no bye, no presence on a classic server
        await asyncio.to_thread(ours.expect, "call with .* ended", 10)
    finally:
        await client.stop()
    assert "Traceback" not in ours.output
    assert [path.name for path in tmp_path.iterdir()] == ["classic.mp4"], "one connection, one recording"


def test_two_of_our_peers_on_a_classic_relay(processes):
    """Both speak the classic pattern there: the newcomer's widened offer meets the standing
    offer of the one there first, which answers it on a fresh connection."""
    relay = classic_relay(processes)
    flags = ["--room", "pair", "--server", relay, "--video", "testsrc", "--video-size", "320x240",
             "--ice-host", LOCAL, "--no-window"]
    alice = processes.peer(*flags, name="alice")
    alice.expect("waiting for someone to join room pair")
    bob = processes.peer(*flags, name="bob")
    bob.expect("connected to peer", 15)
    alice.expect("connected to peer", 15)
    bob.send("hi alice")
    alice.expect(r"^\[peer\] hi alice$", 10)
    alice.send("hi bob")
    bob.expect(r"^\[peer\] hi bob$", 10)
    for ours in (alice, bob):
        assert not [line for line in ours.lines if "lost" in line or "refused" in line], ours.output
