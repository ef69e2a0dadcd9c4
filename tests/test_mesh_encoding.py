"""A mesh encodes each local video once for all its connections (``peer.media.encoding``):
what that could break, in real calls between bots on 127.0.0.1 (rooms of three)."""

import cv2  # noqa: F401  -- before av

import asyncio
import time

import aiortc.codecs.vpx
import av
from aiortc.codecs.vpx import VpxPayloadDescriptor
import pytest

import peer
from conftest import LOCAL
from peer.media import encoding
from test_media_switches import Watcher, is_camera_off, is_testsrc, showing_testsrc

SMALL = {"video_size": "320x240", "fps": 15}


def join(room: str, server, name: str, **options):
    return peer.join(room, server=server.url, name=name, ice_hosts=[LOCAL], **options)


def watch_keyframes(room: peer.Room, member: peer.Member) -> list[float]:
    """When each VP8 keyframe from ``member`` reaches ``room``: its first RTP packet, seen as
    ``room``'s receiver takes it (PyAV's decoded frames do not say which were keyframes)."""
    found: list[float] = []
    receiver, ssrc = video_receiver(room, member)
    take = receiver._handle_rtp_packet

    async def handle(packet, arrival_time_ms):
        if packet.ssrc == ssrc and packet.payload:
            descriptor, data = VpxPayloadDescriptor.parse(packet.payload)
            if descriptor.partition_start and descriptor.partition_id == 0 and data and not data[0] & 1:
                found.append(time.monotonic())
        await take(packet, arrival_time_ms)

    receiver._handle_rtp_packet = handle
    return found


def video_receiver(room: peer.Room, member: peer.Member):
    """``room``'s RTCRtpReceiver of ``member``'s video, and the sender's SSRC it receives."""
    pc = room.session.calls[member.id].pc
    receiver = next(r for r in pc.getReceivers() if r.track is not None and r.track.kind == "video")
    ssrc = next(s.source for s in receiver.getSynchronizationSources())
    return receiver, ssrc


async def test_a_member_joining_a_running_call_gets_picture(server_of_three):
    """The third member's connection starts when the shared encoder has long been running:
    it must get a keyframe (asked for as it starts), not wait for the encoder's next one."""
    async with join("late", server_of_three, "a", video="testsrc", **SMALL) as a, join("late", server_of_three, "b") as b:
        sender = await b.wait_for_peer()
        await b.wait_for_frames(30, sender)
        async with join("late", server_of_three, "c") as c:
            await c.wait_for_frames(5, sender, timeout=10)
            picture = await anext(c.frames(sender))
            assert is_testsrc(picture)
        assert a.session.media.video_encoder.encodes["video/vp8"] > 0


async def test_a_keyframe_request_from_one_receiver_reaches_every_receiver(server_of_three):
    """b's PLI (a real RTCP packet from its receiver) makes the one encoder send a keyframe,
    which c decodes too: every connection of the codec shares the encoder."""
    async with join("pli", server_of_three, "a", video="testsrc", bitrate="300k", **SMALL) as a, \
            join("pli", server_of_three, "b") as b, join("pli", server_of_three, "c") as c:
        sender = next(m for m in (await b.wait_for_peer(), await c.wait_for_peer()) if m.name == "a")
        for room in (b, c):
            while not any(m.name == "a" for m in room.connected):
                await room.wait_for_peer()
            await room.wait_for_frames(15, sender)
        seen = watch_keyframes(c, sender)
        receiver, ssrc = video_receiver(b, sender)
        for _ in range(3):
            await asyncio.sleep(1.0)
            asked, before = time.monotonic(), len(seen)
            await receiver._send_rtcp_pli(ssrc)
            deadline = asked + 5
            while len(seen) == before:
                assert time.monotonic() < deadline, f"c saw no keyframe after b's request ({len(seen)} in all)"
                await asyncio.sleep(0.02)


async def test_receivers_on_different_codecs_both_get_video(server_of_three):
    """One sender, b asking for H.264 and c for VP8: it encodes each frame once per codec, and
    both see its picture."""
    async with join("codecs", server_of_three, "a", video="testsrc", **SMALL) as a, \
            join("codecs", server_of_three, "b", codec="h264") as b, \
            join("codecs", server_of_three, "c", codec="vp8") as c:
        for room in (b, c):
            while not any(m.name == "a" for m in room.connected):
                await room.wait_for_peer()
            sender = next(m for m in room.connected if m.name == "a")
            await room.wait_for_frames(10, sender)
            assert is_testsrc(await anext(room.frames(sender)))
        codecs = {s.member.name: s.codec for s in await a.stats()}
        assert codecs == {"b": "H264", "c": "VP8"}, codecs
        assert set(a.session.media.video_encoder.encodes) == {"video/h264", "video/vp8"}


async def test_camera_off_and_on_reaches_both_members_of_a_mesh(server_of_three):
    async with join("camera", server_of_three, "a", video="testsrc", **SMALL) as a, \
            join("camera", server_of_three, "b") as b, join("camera", server_of_three, "c") as c:
        watchers = []
        for room in (b, c):
            while not any(m.name == "a" for m in room.connected):
                await room.wait_for_peer()
            watchers.append(Watcher(room, next(m for m in room.connected if m.name == "a")))
        try:
            for watcher in watchers:
                await watcher.until(showing_testsrc, 15, "a's testsrc")
            a.session.media.set_camera(False)
            for watcher in watchers:
                await watcher.until(lambda pictures: bool(pictures) and is_camera_off(pictures[-1][1]), 10,
                                    "the camera-off picture")
            a.session.media.set_camera(True)
            for watcher in watchers:
                await watcher.until(showing_testsrc, 10, "a's testsrc again")
        finally:
            for watcher in watchers:
                watcher.stop()


class CountedSource(peer.FrameSource):
    """A bot's frames, counted as the connections take them."""

    def __init__(self) -> None:
        super().__init__(fps=15, size=(320, 240))
        self.made = 0

    async def recv(self):
        frame = await super().recv()
        self.made += 1
        return frame


async def test_a_video_sent_to_two_members_is_encoded_once_a_frame(server_of_three, monkeypatch):
    """Counted in the real call: aiortc's VP8 encoder runs once per frame of the source, not once
    per frame and connection (b and c send no video, so every encode in this process is a's)."""
    encodes = 0
    encode = aiortc.codecs.vpx.Vp8Encoder.encode

    def counted(self, frame, force_keyframe=False):
        nonlocal encodes
        encodes += 1
        return encode(self, frame, force_keyframe)

    monkeypatch.setattr(aiortc.codecs.vpx.Vp8Encoder, "encode", counted)
    source = CountedSource()
    async with join("count", server_of_three, "a", video=source) as a, \
            join("count", server_of_three, "b") as b, join("count", server_of_three, "c") as c:
        for room in (b, c):
            while not any(m.name == "a" for m in room.connected):
                await room.wait_for_peer()
        for room in (b, c):
            await room.wait_for_frames(45, next(m for m in room.connected if m.name == "a"))
        made, done = source.made, encodes
    assert made >= 45
    assert done <= made + 1, f"{done} encodes of {made} frames"
    stats = a.session.media.video_encoder
    assert stats.encodes["video/vp8"] == pytest.approx(stats.frames, abs=1)


async def test_a_sender_not_as_expected_gets_frames_and_encodes_them_itself():
    """Written against aiortc 1.16's RTCRtpSender: one without the private parts it hooks is
    left alone, and its track hands it frames, as before (fail soft)."""
    media = peer.LocalMedia(peer.FrameSource(fps=15, size=(64, 48)))
    try:
        track = media.subscribe()[0]
        assert not track.bind(object())
        frame = await asyncio.wait_for(track.recv(), 5)
        assert isinstance(frame, av.VideoFrame) and (frame.width, frame.height) == (64, 48)
        track.stop()
    finally:
        media.stop()


async def test_the_shared_encoder_aims_at_the_lowest_receivers_estimate_within_the_ceiling(monkeypatch):
    """REMB sets ``target_bitrate`` on what aiortc takes for the sender's encoder (the packer):
    the one encoder of the codec aims at the lowest estimate, and never above aiortc's ceiling
    (``--bitrate``, peer.media.codecs). (How often it may move: test_attack_mesh_encoding.)"""
    monkeypatch.setattr(encoding, "BITRATE_GAP", 0)
    media = peer.LocalMedia(peer.FrameSource(fps=15, size=(64, 48)))
    try:
        tracks = [media.subscribe()[0] for _ in range(2)]
        for track in tracks:
            track.codec = "video/vp8"
            media.video_encoder.join(track)
        first, second = (encoding._Packer(track) for track in tracks)
        first.target_bitrate, second.target_bitrate = 900_000, 400_000
        assert media.video_encoder.encoder("video/vp8").target_bitrate == 400_000
        second.target_bitrate = 1_200_000
        assert media.video_encoder.encoder("video/vp8").target_bitrate == 900_000
        first.target_bitrate = 50_000_000
        assert media.video_encoder.encoder("video/vp8").target_bitrate == 1_200_000
        second.target_bitrate = 50_000_000
        assert media.video_encoder.encoder("video/vp8").target_bitrate == aiortc.codecs.vpx.MAX_BITRATE
        for track in tracks:
            track.stop()
    finally:
        media.stop()
