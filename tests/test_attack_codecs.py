"""A hostile member's codec lists against a peer that prefers VP8: an offer or an answer that
lists only H.264 gets a call in H.264 (video both ways); one that lists only a codec nobody
knows gets one clear line, and the victim's other call goes on."""

from __future__ import annotations

import asyncio
import logging
import re
from contextlib import asynccontextmanager
from typing import AsyncIterator

import pytest
import socketio
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription

import peer
from conftest import LOCAL
from peer.ice import use_host_addresses
from signaling import protocol
from test_api import join, until
from test_attack_moved import chat_passes, our_call

SMALL = {"video": "testsrc", "video_size": "160x120", "fps": 10, "codec": "vp8"}


def only_h264(pc: RTCPeerConnection) -> None:
    """Offer or answer H.264 alone (with its retransmission codec) on every video transceiver."""
    codecs = RTCRtpSender.getCapabilities("video").codecs
    for transceiver in pc.getTransceivers():
        if transceiver.kind == "video":
            transceiver.setCodecPreferences([c for c in codecs if c.mimeType in ("video/H264", "video/rtx")])


def unknown_codecs(sdp: str) -> str:
    """``sdp`` with every video codec renamed to one nobody has."""
    return re.sub(r"(a=rtpmap:\d+ )(VP8|H264)/", r"\1XYZ/", sdp)


@asynccontextmanager
async def mallory_in(room: str, server) -> AsyncIterator[tuple[socketio.AsyncClient, asyncio.Queue]]:
    """A raw Socket.IO member ``mallory`` in ``room``, and the messages sent to it."""
    client = socketio.AsyncClient()
    inbox: asyncio.Queue = asyncio.Queue()
    client.on(protocol.MESSAGE, inbox.put_nowait)
    await client.connect(server.url, transports=["websocket"])
    try:
        await client.call(protocol.JOIN, {"room": room, "name": "mallory"})
        yield client, inbox
    finally:
        await client.disconnect()


async def next_of(inbox: asyncio.Queue, kind: str) -> dict:
    while (message := await asyncio.wait_for(inbox.get(), 10)).get("type") != kind:
        pass
    return message


async def frames_of(pc: RTCPeerConnection, count: int) -> None:
    """Until ``count`` video frames have been decoded from what ``pc`` receives."""
    track = await until(lambda: next((r.track for r in pc.getReceivers() if r.track.kind == "video"), None), 10,
                        "a video track")
    for _ in range(count):
        await asyncio.wait_for(track.recv(), 10)


def sent_codec(pc: RTCPeerConnection) -> str:
    """The codec of the first video codec ``pc`` negotiated (what it sends with)."""
    transceiver = next(t for t in pc.getTransceivers() if t.kind == "video")
    return transceiver._codecs[0].mimeType


async def test_an_offer_of_h264_alone_to_a_peer_preferring_vp8(server_of_three):
    use_host_addresses([LOCAL])
    pc = RTCPeerConnection()
    pc.addTrack(peer.FrameSource(fps=10, size=(160, 120)))
    only_h264(pc)
    try:
        async with join("h264-offer", server_of_three, "victim", **SMALL) as victim, \
                join("h264-offer", server_of_three, "bob") as bob, mallory_in("h264-offer", server_of_three) as (
                mallory, inbox):
            await our_call(victim, bob)
            await pc.setLocalDescription(await pc.createOffer())
            await mallory.emit(protocol.MESSAGE, {"type": "offer", "sdp": pc.localDescription.sdp,
                                                  "to": victim.me.id})
            answer = await next_of(inbox, "answer")
            await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
            await frames_of(pc, 10)
            member = next(m for m in victim.members if m.name == "mallory")
            await victim.wait_for_frames(10, member)
            assert sent_codec(victim.session.calls[member.id].pc) == "video/H264"
            await chat_passes(victim, bob, "after the H.264 offer")
    finally:
        await pc.close()


async def test_an_offer_of_an_unknown_codec_alone_is_refused_in_one_line(server_of_three, caplog):
    caplog.set_level(logging.WARNING)
    use_host_addresses([LOCAL])
    pc = RTCPeerConnection()
    pc.addTrack(peer.FrameSource(fps=10, size=(160, 120)))
    try:
        async with join("xyz-offer", server_of_three, "victim", **SMALL) as victim, \
                join("xyz-offer", server_of_three, "bob") as bob, mallory_in("xyz-offer", server_of_three) as (
                mallory, _):
            await our_call(victim, bob)
            await pc.setLocalDescription(await pc.createOffer())
            await mallory.emit(protocol.MESSAGE, {"type": "offer", "sdp": unknown_codecs(pc.localDescription.sdp),
                                                  "to": victim.me.id})
            line = await until(lambda: next((r.getMessage() for r in caplog.records if "mallory" in r.getMessage()
                                             and "offer" in r.getMessage()), None), 10, "a line on the offer")
            assert "ignored a bad offer from 'mallory'" in line and "video" in line, line
            await chat_passes(victim, bob, "after the unknown codec")
    finally:
        await pc.close()


@pytest.mark.parametrize("answered", ["h264", "unknown"])
async def test_an_answer_of_one_codec_to_a_peer_preferring_vp8(server_of_three, caplog, answered):
    """The victim is the newcomer, so it offers (VP8 first), and mallory's answer lists H.264
    alone (the call is in H.264) or a codec nobody knows (one line; the victim's call with bob
    goes on)."""
    caplog.set_level(logging.WARNING)
    use_host_addresses([LOCAL])
    pc = RTCPeerConnection()
    pc.addTrack(peer.FrameSource(fps=10, size=(160, 120)))
    try:
        async with mallory_in("one-answer", server_of_three) as (mallory, inbox), \
                join("one-answer", server_of_three, "victim", **SMALL) as victim:
            offer = await next_of(inbox, "offer")
            only_h264(pc)  # before the offer is taken: aiortc negotiates an answer's codecs then
            await pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            sdp = pc.localDescription.sdp
            if answered == "unknown":
                sdp = unknown_codecs(sdp)
            await mallory.emit(protocol.MESSAGE, {"type": "answer", "sdp": sdp, "to": offer["from"]})
            if answered == "h264":
                await frames_of(pc, 10)
                member = next(m for m in victim.members if m.name == "mallory")
                assert sent_codec(victim.session.calls[member.id].pc) == "video/H264"
            else:
                line = await until(lambda: next((r.getMessage() for r in caplog.records
                                                 if "mallory" in r.getMessage()), None), 10, "a line")
                assert "ignored a bad answer from 'mallory'" in line, line
            async with join("one-answer", server_of_three, "bob") as bob:
                await our_call(victim, bob)
                await chat_passes(victim, bob, f"after the {answered} answer")
    finally:
        await pc.close()
