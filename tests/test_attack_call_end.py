"""Attacks on the end of a call and of its connections: a member that says ``bye`` and goes on
talking to the call it ended, one that makes the victim close a connection twice at once, and
one whose second track of a kind replaces its first while both still send."""

from __future__ import annotations

import asyncio

import pytest
import socketio
from aiortc import RTCPeerConnection, RTCSessionDescription

import peer
from conftest import LOCAL
from peer.api import CallEnded, TrackReceived
from peer.ice import use_host_addresses
from signaling import protocol
from test_api import join, until
from test_attack_moved import chat_passes, our_call


async def an_offer() -> tuple[RTCPeerConnection, str]:
    """A raw aiortc connection with a chat channel, and its offer."""
    use_host_addresses([LOCAL])
    pc = RTCPeerConnection()
    pc.createDataChannel("chat")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


async def test_a_call_ended_by_bye_answers_nothing_more(server_of_three):
    """mallory offers, then sends ``bye`` and a second offer right behind it: the call that
    the bye ended must not take up that offer (a call nobody holds any more, whose connection
    nobody would close), and its task ends; the victim's call with bob goes on."""
    attacker = socketio.AsyncClient()
    answers: asyncio.Queue = asyncio.Queue()
    attacker.on(protocol.MESSAGE, lambda message: answers.put_nowait(message) if message.get("type") == "answer"
                else None)
    pcs: list[RTCPeerConnection] = []
    try:
        async with join("bye", server_of_three, "victim") as victim, join("bye", server_of_three, "bob") as bob:
            await our_call(victim, bob)
            await attacker.connect(server_of_three.url, transports=["websocket"])
            await attacker.call(protocol.JOIN, {"room": "bye", "name": "mallory"})
            first, sdp = await an_offer()
            pcs.append(first)
            await attacker.emit(protocol.MESSAGE, {"type": "offer", "sdp": sdp, "to": victim.me.id})
            answer = await asyncio.wait_for(answers.get(), 10)
            await first.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
            mallory = next(m.id for m in victim.members if m.name == "mallory")
            call = victim.session.calls[mallory]
            second, sdp = await an_offer()
            pcs.append(second)
            await attacker.emit(protocol.MESSAGE, {"type": "bye", "to": victim.me.id})
            await attacker.emit(protocol.MESSAGE, {"type": "offer", "sdp": sdp, "to": victim.me.id})
            await victim.wait_for(CallEnded, lambda event: event.member.id == mallory)
            # Whatever was queued behind the bye goes with the call: its task ends, its last
            # connection stays closed, and no connection of it lives on unheld.
            await until(lambda: all(task.done() for task in call._tasks), 5, "the ended call's task to end")
            assert call.pc.signalingState == "closed"
            held = victim.session.calls.get(mallory)
            assert held is None or held is not call
            await chat_passes(victim, bob, "after the bye")
    finally:
        for pc in pcs:
            await pc.close()
        if attacker.connected:
            await attacker.disconnect()


@pytest.mark.parametrize("then", ["hang-up", "renew"])
async def test_a_connection_cut_while_the_call_moves_on_still_closes(server_of_three, then):
    """A member that sends an oversized message has its connection cut, by a task of that
    connection. If the call ends (the member leaves, or says bye), or the member's next offer
    renews the connection, while that close is under way, the task is cancelled half-way
    through aiortc's ``close()``: the close that follows must not wait forever for it (the
    call would never end, or would handle no signaling again). The cut is started here as
    the receipt of an oversized message starts it (tests/test_attack_more.py sends one)."""
    async with join("cut", server_of_three, "victim") as victim, join("cut", server_of_three, "bob") as bob, \
               join("cut", server_of_three, "carol") as carol:
        call = await our_call(victim, bob)
        await our_call(victim, carol)
        cut = call._connection
        cut._cut_off()
        for _ in range(3):  # the cut is under way in its task
            await asyncio.sleep(0)
        if then == "renew":
            await asyncio.wait_for(call._renew(), 10)
            assert cut.pc.connectionState == "closed"
            await chat_passes(victim, carol, "after the cut")
        else:
            await asyncio.wait_for(call.close("left", notify=False), 10)  # as when the server says bob left
            assert cut.pc.connectionState == "closed" and bob.me.id not in victim.session.calls
            await chat_passes(victim, carol, "after the cut")


async def test_a_second_video_track_does_not_leave_the_first_piling_up_frames(server_of_three):
    """mallory offers two video sections and sends on both: the room reads one track per member
    and kind, the newest, but aiortc queues every frame of a track nobody reads, for as long as
    the connection lives (decoded, some 100 KiB each at this size). So the track it replaced
    must go on being drained."""
    attacker = socketio.AsyncClient()
    answers: asyncio.Queue = asyncio.Queue()
    attacker.on(protocol.MESSAGE, lambda message: answers.put_nowait(message) if message.get("type") == "answer"
                else None)
    use_host_addresses([LOCAL])
    pc = RTCPeerConnection()
    sources = [peer.FrameSource(fps=15, size=(320, 240)) for _ in range(2)]
    try:
        async with join("twice", server_of_three, "victim") as victim, \
                   join("twice", server_of_three, "bob") as bob:
            for source in sources:
                pc.addTrack(source)
            await pc.setLocalDescription(await pc.createOffer())
            await attacker.connect(server_of_three.url, transports=["websocket"])
            await attacker.call(protocol.JOIN, {"room": "twice", "name": "mallory"})
            await attacker.emit(protocol.MESSAGE, {"type": "offer", "sdp": pc.localDescription.sdp,
                                                   "to": victim.me.id})
            answer = await asyncio.wait_for(answers.get(), 10)
            await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
            await until(lambda: len([e for e in victim._history if isinstance(e, TrackReceived)]) == 2, 10,
                        "both of mallory's tracks")
            first, second = (e.track for e in victim._history if isinstance(e, TrackReceived))
            read = victim._remote_media  # the room's reader of mallory's video
            newest = await read(None, "video")
            assert newest.track is second
            await until(lambda: newest.count >= 30, 20, "30 frames of the newest track")
            assert first._queue.qsize() < 10, f"{first._queue.qsize()} frames of the replaced track wait unread"
            await our_call(victim, bob)
            await chat_passes(victim, bob, "after the second track")
    finally:
        await pc.close()
        for source in sources:
            source.stop()
        if attacker.connected:
            await attacker.disconnect()
