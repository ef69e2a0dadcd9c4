"""Attacks on the encode-once path of a mesh (``peer.media.encoding``): one member's RTCP
reaches the one encoder every member's picture comes from, so a hostile or broken member must
not spoil the others' picture. Real calls between bots on 127.0.0.1 (rooms of three)."""

import cv2  # noqa: F401  -- before av

import asyncio
import fractions
import itertools
import time

import aiortc.codecs.h264
import aiortc.codecs.vpx
import av
import numpy as np
import pytest
from aiortc.codecs.vpx import VpxPayloadDescriptor
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, pack_remb_fci

import peer
from peer.media import encoding
from test_mesh_encoding import SMALL, join, video_receiver, watch_keyframes


async def remb(room: peer.Room, member: peer.Member, bitrate: int) -> None:
    """``room`` tells ``member`` that its path carries ``bitrate`` bits/s (RTCP REMB)."""
    receiver, ssrc = video_receiver(room, member)
    packet = RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=receiver._RTCRtpReceiver__rtcp_ssrc, media_ssrc=0)
    packet.fci = pack_remb_fci(bitrate, [ssrc])
    await receiver._send_rtcp(packet)


async def receiving_a(*rooms: peer.Room) -> list[peer.Member]:
    """Member "a" as each of ``rooms`` knows it, once each has had some of its frames."""
    members = []
    for room in rooms:
        while not any(m.name == "a" for m in room.connected):
            await room.wait_for_peer()
        members.append(next(m for m in room.connected if m.name == "a"))
        await room.wait_for_frames(15, members[-1])
    return members


async def test_a_member_swinging_its_bitrate_estimate_does_not_make_every_frame_a_keyframe(server_of_three):
    """aiortc 1.16's encoders start a new context (whose first frame is a keyframe) when the
    bitrate moves by more than a tenth. b sends REMB swinging between the floor and the
    ceiling ten times a second: the shared encoder must not follow it frame by frame, or c
    (honest) gets keyframes only, a picture starved of bits, for as long as b likes."""
    async with join("remb", server_of_three, "a", video="testsrc", **SMALL) as a, \
            join("remb", server_of_three, "b") as b, join("remb", server_of_three, "c") as c:
        sender_b, sender_c = await receiving_a(b, c)
        seen = watch_keyframes(c, sender_c)
        frames = a.session.media.video_encoder.frames
        for swing in range(40):
            await remb(b, sender_b, 100_000 if swing % 2 else 50_000_000)
            await asyncio.sleep(0.1)
        frames = a.session.media.video_encoder.frames - frames
        assert frames >= 10
        assert len(seen) <= frames / 3, f"{len(seen)} keyframes in {frames} frames"


async def test_the_slowest_receiver_leaving_lets_the_others_have_their_bitrate(monkeypatch):
    """The lowest estimate goes with the receiver that sent it: the encoder aims at the lowest
    of those left, not at a path nobody sends on any more until someone's next REMB."""
    monkeypatch.setattr(encoding, "BITRATE_GAP", 0)
    media = peer.LocalMedia(peer.FrameSource(fps=15, size=(64, 48)))
    try:
        slow, fast = (media.subscribe()[0] for _ in range(2))
        for track in (slow, fast):
            track.codec = "video/vp8"
            media.video_encoder.join(track)
        encoding._Packer(fast).target_bitrate = 1_200_000
        encoding._Packer(slow).target_bitrate = 300_000
        assert media.video_encoder.encoder("video/vp8").target_bitrate == 300_000
        slow.stop()
        assert media.video_encoder.encoder("video/vp8").target_bitrate == 1_200_000
        fast.stop()
    finally:
        media.stop()


def frame_at(seconds: float) -> av.VideoFrame:
    frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="bgr24")
    frame.pts, frame.time_base = round(seconds * 90_000), fractions.Fraction(1, 90_000)
    return frame


def test_each_codec_stamps_a_frame_with_the_frames_own_time():
    """Both codecs encode one private copy of each frame, and PyAV rebases a frame's pts to the
    encoder's time base as it encodes it (libx264's: 1/30 s): a VP8 encoded after H.264 stamped
    frames 15 ms apart with one RTP timestamp, which receivers take for one frame."""
    media = peer.LocalMedia(peer.FrameSource(fps=30, size=(64, 48)))
    try:
        shared = media.video_encoder
        jobs = [(encoding._Codec("video/h264"), False), (encoding._Codec("video/vp8"), False)]
        for seconds in (0.0, 0.030, 0.045, 0.080, 0.090):
            stamps = {mime: encoded.timestamp for mime, encoded in shared._encode(frame_at(seconds), jobs)}
            assert stamps.keys() == {"video/h264", "video/vp8"}
            assert all(abs(stamp - seconds * 90_000) <= 1 for stamp in stamps.values()), (seconds, stamps)
    finally:
        media.stop()


async def test_a_vp8_receiver_beside_an_h264_one_gets_one_timestamp_per_frame(server_of_three):
    """The same in a real call: b receives H.264 (its encoder is the first), c VP8, from a bot
    pushing pictures as it makes them, every 20 ms (its frames are stamped by the clock, not on
    a 1/30 s grid): two pictures must never share an RTP timestamp at c."""
    source = peer.FrameSource(fps=30, size=(160, 120))

    async def push() -> None:
        for number in itertools.count():
            source.push(np.full((120, 160, 3), number % 250, np.uint8))
            await asyncio.sleep(0.02)

    pushing = asyncio.ensure_future(push())
    try:
        async with join("stamps", server_of_three, "a", video=source) as a, \
                join("stamps", server_of_three, "b", codec="h264") as b:
            sender = await b.wait_for_peer()
            await b.wait_for_frames(5, sender)
            async with join("stamps", server_of_three, "c", codec="vp8") as c:
                while not any(m.name == "a" for m in c.connected):
                    await c.wait_for_peer()
                sender = next(m for m in c.connected if m.name == "a")
                await c.wait_for_frames(5, sender)
                pictures: dict[int, set[int]] = {}
                receiver, ssrc = video_receiver(c, sender)
                take = receiver._handle_rtp_packet

                async def handle(packet, arrival_time_ms):
                    if packet.ssrc == ssrc and packet.payload:
                        descriptor, _ = VpxPayloadDescriptor.parse(packet.payload)
                        pictures.setdefault(packet.timestamp, set()).add(descriptor.picture_id)
                    await take(packet, arrival_time_ms)

                receiver._handle_rtp_packet = handle
                await c.wait_for_frames(60, sender)
            assert set(a.session.media.video_encoder.encodes) == {"video/h264", "video/vp8"}
            shared = {stamp: ids for stamp, ids in pictures.items() if len(ids) > 1}
    finally:
        pushing.cancel()
    assert len(pictures) >= 30 and not shared, f"{len(shared)} of {len(pictures)} timestamps hold two pictures"


async def test_an_encoder_failing_on_one_frame_does_not_end_the_rooms_video(server_of_three, monkeypatch):
    """One encoder error (libvpx refusing one frame) ended the shared encoder for good: every
    member's video froze, and members joining later got none, with nothing but a log line. The
    frame is lost; the encoder starts anew, and the video goes on for those there and those
    who come."""
    failures = 0
    encode = aiortc.codecs.vpx.Vp8Encoder.encode

    def failing_once(self, frame, force_keyframe=False):
        nonlocal failures
        if failures == 0 and encoding_started.is_set():
            failures += 1
            raise RuntimeError("one frame refused")
        return encode(self, frame, force_keyframe)

    encoding_started = asyncio.Event()
    monkeypatch.setattr(aiortc.codecs.vpx.Vp8Encoder, "encode", failing_once)
    async with join("fails", server_of_three, "a", video="testsrc", **SMALL) as a, join("fails", server_of_three, "b") as b:
        sender = await b.wait_for_peer()
        await b.wait_for_frames(10, sender)
        encoding_started.set()
        await b.wait_for_frames(15, sender, timeout=10)
        assert failures == 1
        async with join("fails", server_of_three, "c") as c:
            while not any(m.name == "a" for m in c.connected):
                await c.wait_for_peer()
            await c.wait_for_frames(10, next(m for m in c.connected if m.name == "a"), timeout=10)
        await b.wait_for_frames(10, sender, timeout=10)


async def test_an_encoder_failing_on_every_frame_ends_the_video(monkeypatch):
    """An encoder that fails on every frame, made anew or not, is no transient: after
    ``MAX_FAILURES`` frames the video of its codec ends (its senders stop), as it did on the
    first failure."""
    def failing(self, frame, force_keyframe=False):
        raise RuntimeError("every frame refused")

    monkeypatch.setattr(aiortc.codecs.vpx.Vp8Encoder, "encode", failing)
    media = peer.LocalMedia(peer.FrameSource(fps=30, size=(64, 48)))
    try:
        track = media.subscribe()[0]
        track.codec = "video/vp8"
        with pytest.raises(MediaStreamError):
            await asyncio.wait_for(track.recv(), 10)
        assert media.video_encoder.frames == encoding.MAX_FAILURES
        track.stop()
    finally:
        media.stop()


async def test_a_member_flooding_keyframe_requests_gives_the_others_one_keyframe_a_gap(server_of_three):
    """b asks for a keyframe (PLI) 50 times a second: every receiver of the codec gets each
    keyframe forced, so they come no more often than one a ``KEYFRAME_GAP`` (0.2 s; libwebrtc's
    own sender allows one each 0.3 s), not one a frame as b would like. (Counted in frames, not
    timed: about one frame in six at 30 fps.)"""
    async with join("flood", server_of_three, "a", video="testsrc", fps=30, video_size="320x240") as a, \
            join("flood", server_of_three, "b") as b, join("flood", server_of_three, "c") as c:
        sender_b, sender_c = await receiving_a(b, c)
        seen = watch_keyframes(c, sender_c)
        receiver, ssrc = video_receiver(b, sender_b)
        frames = a.session.media.video_encoder.frames
        for _ in range(100):
            await receiver._send_rtcp_pli(ssrc)
            await asyncio.sleep(0.02)
        frames = a.session.media.video_encoder.frames - frames
        assert len(seen) >= 2, "the requests were not honoured"
        assert len(seen) <= frames / 2, f"{len(seen)} keyframes in {frames} frames"  # about 1 in 6 at 30 fps


async def test_a_codec_that_cannot_encode_ends_only_its_own_receivers_video(server_of_three, monkeypatch):
    """Members choose the codec: c asks for H.264, which fails on every frame here (a PyAV
    built without libx264 would). c's video ends; b's VP8, from the same shared encoder, goes
    on, as it did when each connection encoded on its own."""
    failures = 0

    def failing(self, frame, force_keyframe=False):
        nonlocal failures
        failures += 1
        raise RuntimeError("no H.264 here")

    monkeypatch.setattr(aiortc.codecs.h264.H264Encoder, "encode", failing)
    async with join("h264", server_of_three, "a", video="testsrc", **SMALL) as a, \
            join("h264", server_of_three, "b", codec="vp8") as b:
        (sender,) = await receiving_a(b)
        async with join("h264", server_of_three, "c", codec="h264") as c:
            await c.wait_for_peer()
            deadline = time.monotonic() + 10
            while failures < encoding.MAX_FAILURES:
                assert time.monotonic() < deadline, "c's H.264 was never encoded"
                await asyncio.sleep(0.02)
            shared = a.session.media.video_encoder
            before = await b.wait_for_frames(1, sender)
            await b.wait_for_frames(before + 15, sender, timeout=10)
            assert not shared.ended and not any(o.codec == "video/h264" for o in shared._outputs)


def test_a_bitrate_asked_while_a_frame_is_encoded_waits_for_the_next_frame(monkeypatch):
    """aiortc's encoders read the bitrate twice in a frame: moved in between, from the event
    loop while the thread encodes, aiortc made its own libx264 context (the slow preset) in
    place of ours. The move waits while the codec is busy; the next settle makes it."""
    monkeypatch.setattr(encoding, "BITRATE_GAP", 0)
    codec = encoding._Codec("video/h264")
    start = codec.encoder.target_bitrate
    codec.busy = True
    codec.aim(start // 2)
    assert codec.encoder.target_bitrate == start
    codec.busy = False
    codec.settle()
    assert codec.encoder.target_bitrate == start // 2
