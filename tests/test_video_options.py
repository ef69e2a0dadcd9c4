"""--codec, --bitrate, --video-size, --fps and --video screen, as a person starts them, checked
on what reaches the other side: the codec negotiated, the frames' size, rate and colour, and
the bytes a second."""

import cv2  # noqa: F401  -- before av

import asyncio
import re
import subprocess
import sys
import time

import numpy as np
import pytest

import peer
from conftest import LOCAL, child_env
from media_check import likeness_to_testsrc
from peer.cli import parse_args
from test_peer_window import window_geometry

BIG_TESTSRC = "lavfi:testsrc=size=640x480:rate=30"
"""A source of another size and rate than the tests ask for: what the receiver gets shows
that the peer scaled and thinned it."""
NOISY = "lavfi:testsrc=size=640x480:rate=30,noise=alls=30:allf=t"
"""Noise fills any bitrate: what is sent is what the encoder is allowed, not what it needs."""
HEADLESS = ["--ice-host", LOCAL, "--no-window"]


def join(room: str, server, name: str, **options):
    return peer.join(room, server=server.url, name=name, ice_hosts=[LOCAL], **options)


def first_video_codec(sdp: str) -> str:
    """The first codec of the video section of ``sdp``: the one aiortc sends with."""
    media = sdp.split("\r\nm=")
    video = next(section for section in media if section.startswith("video"))
    first = video.splitlines()[0].split()[3]
    return re.search(rf"a=rtpmap:{first} ([^/]+)/", video).group(1)


async def received_bytes(room: peer.Room) -> int:
    """Bytes the room's only call has received so far (its ICE transport's count)."""
    call = next(iter(room.session.calls.values()))
    return sum(stats.bytesReceived for stats in (await call.pc.getStats()).values() if stats.type == "transport")


async def frame_rate(room: peer.Room, member: peer.Member, frames: int = 45) -> float:
    """Frames a second arriving from ``member``, over the next ``frames`` of them."""
    start = await room.wait_for_frames(10, member)
    began = time.monotonic()
    await room.wait_for_frames(start + frames, member, timeout=20)
    return frames / (time.monotonic() - began)


async def one_frame(room: peer.Room, member: peer.Member) -> np.ndarray:
    async for picture in room.frames(member):
        return picture
    raise AssertionError("the video ended")


@pytest.mark.parametrize("codec,mime", [("h264", "H264"), ("vp8", "VP8")])
async def test_codec_is_what_the_other_side_receives(server, processes, codec, mime):
    """One side asking is enough: the receiver states no preference, and both the offer and the
    answer it holds put the codec first (aiortc sends with the first), whoever offered."""
    processes.peer("--room", f"codec-{codec}", "--server", server.url, "--video", "testsrc", "--video-size",
                   "320x240", "--fps", "15", "--codec", codec, *HEADLESS, name="sender")
    async with join(f"codec-{codec}", server, "receiver") as receiver:
        member = await receiver.wait_for_peer()
        await receiver.wait_for_frames(10, member)
        picture = await one_frame(receiver, member)
        pc = receiver.session.calls[member.id].pc
        assert first_video_codec(pc.remoteDescription.sdp) == mime
        assert first_video_codec(pc.localDescription.sdp) == mime
    assert likeness_to_testsrc(picture[..., ::-1], "320x240") > 0.9


async def test_bots_with_different_codecs_each_send_their_own(server):
    """A bot asking for h264 meets one asking for vp8: each sends what it asked for, and each
    decodes the other's (the codec a side's sender encodes with is the first of its list; what
    each side's shared encoder encoded, ``peer.media.encoding``, says which it was)."""
    async with join("mixed", server, "h", video="testsrc", codec="h264", video_size="320x240", fps=15) as h, \
            join("mixed", server, "v", video="testsrc", codec="vp8", video_size="320x240", fps=15) as v:
        for room in (h, v):
            await room.wait_for_frames(10, await room.wait_for_peer())
        sent = {room.me.name: set(room.session.media.video_encoder.encodes) for room in (h, v)}
    assert sent == {"h": {"video/h264"}, "v": {"video/vp8"}}, sent


async def test_video_size_and_fps_are_what_arrives(server, processes):
    """A 640x480, 30 fps source sent with --video-size 320x240 --fps 15 arrives at that size and
    about that rate."""
    processes.peer("--room", "shape", "--server", server.url, "--video", BIG_TESTSRC, "--video-size", "320x240",
                   "--fps", "15", *HEADLESS, name="sender")
    async with join("shape", server, "receiver") as receiver:
        member = await receiver.wait_for_peer()
        rate = await frame_rate(receiver, member)
        picture = await one_frame(receiver, member)
    assert picture.shape == (240, 320, 3)
    assert 10 <= rate <= 20, rate
    assert likeness_to_testsrc(picture[..., ::-1], "320x240") > 0.9


async def test_a_bot_gets_its_video_size_and_fps_too(server):
    async with join("bot-shape", server, "sender", video=BIG_TESTSRC, video_size="160x120", fps=10) as _, \
            join("bot-shape", server, "receiver") as receiver:
        member = await receiver.wait_for_peer()
        rate = await frame_rate(receiver, member, frames=30)
        picture = await one_frame(receiver, member)
    assert picture.shape == (120, 160, 3)
    assert 6 <= rate <= 14, rate


async def sent_bitrate(server, processes, rate: str, *flags: str) -> float:
    """The bits a second that arrive over 5 s from a peer started with ``--bitrate rate``."""
    room = f"bitrate-{rate}"
    processes.peer("--room", room, "--server", server.url, "--video", NOISY, "--bitrate", rate, *flags, *HEADLESS,
                   name=f"sender-{rate}")
    async with join(room, server, "receiver") as receiver:
        await receiver.wait_for_frames(10, await receiver.wait_for_peer())
        await asyncio.sleep(1)  # past the first key frame
        before, began = await received_bytes(receiver), time.monotonic()
        await asyncio.sleep(5)
        return (await received_bytes(receiver) - before) * 8 / (time.monotonic() - began)


async def test_bitrate_sets_what_is_sent(server, processes):
    """Measured here: 210 kbit/s and 2.0 Mbit/s, for VP8 and H.264 alike (one process each:
    the bitrate is set for a whole process). H.264 at 15 fps sends what is asked too (libx264
    is told the rate: it sent a third of it when told 30 fps)."""
    low, high, h264 = await asyncio.gather(sent_bitrate(server, processes, "200k"),
                                           sent_bitrate(server, processes, "2M"),
                                           sent_bitrate(server, processes, "1M", "--codec", "h264", "--fps", "15",
                                                        "--video-size", "320x240"))
    assert 100_000 < low < 400_000, low
    assert 1_000_000 < high < 3_000_000, high
    assert 500_000 < h264 < 1_500_000, h264


BGR = (40, 160, 230)
"""An orange no test picture has, painted over the whole screen."""


def paint_screen(display: str, processes, size: tuple) -> None:
    """Cover the X screen with one colour: a window of its size (there is no window manager)."""
    script = ("import cv2, numpy, sys; cv2.namedWindow('paint', cv2.WINDOW_AUTOSIZE); "
              f"cv2.imshow('paint', numpy.full(({size[1]}, {size[0]}, 3), {BGR}, numpy.uint8)); "
              "cv2.moveWindow('paint', 0, 0)\n"
              "while cv2.waitKey(100) != 27: pass")
    processes.add(_Painter([sys.executable, "-c", script], child_env(DISPLAY=display)))
    window_geometry(display, "^paint$")


class _Painter:
    """A child process ``processes`` stops at the end of the test."""

    def __init__(self, args: list, env: dict) -> None:
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.mark.parametrize("flags,size", [((), (1280, 800)), (("--video-size", "320x200"), (320, 200))])
async def test_the_screen_is_shared(server, processes, xvfb, flags, size):
    """Under Xvfb (1280x800): what the screen shows reaches the other side, at the screen's size
    or the one asked for."""
    await asyncio.to_thread(paint_screen, xvfb, processes, (1280, 800))
    processes.peer("--room", "screen", "--server", server.url, "--video", "screen", "--fps", "10", *flags, *HEADLESS,
                   name="sharer", env=child_env(DISPLAY=xvfb))
    async with join("screen", server, "viewer") as viewer:
        member = await viewer.wait_for_peer()
        await viewer.wait_for_frames(5, member)
        picture = await one_frame(viewer, member)
    assert picture.shape == (size[1], size[0], 3)
    middle = picture[size[1] // 4:size[1] * 3 // 4, size[0] // 4:size[0] * 3 // 4].reshape(-1, 3).mean(axis=0)
    assert np.abs(middle - BGR).max() < 20, middle


# Bad values: one line, and no call

@pytest.mark.parametrize("flags,message", [
    (("--bitrate", "5k"), r"--bitrate: bitrate 5000 bit/s is out of bounds"),
    (("--bitrate", "fast"), r"--bitrate: not a bitrate: 'fast'"),
    (("--video-size", "641x480"), r"--video-size: not a video size: '641x480'"),
    (("--video-size", "big"), r"--video-size: not a video size: 'big'"),
    (("--fps", "0"), r"--fps: not a frame rate: '0'"),
    (("--fps", "1000"), r"--fps: not a frame rate: '1000'"),
    (("--codec", "av1"), r"--codec: invalid choice: 'av1'"),
])
def test_bad_video_values_are_refused_in_one_line(capsys, flags, message):
    with pytest.raises(SystemExit) as exited:
        parse_args(["--room", "bad", *flags])
    assert exited.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("python -m peer: error:")]
    assert len(errors) == 1 and re.search(message, errors[0]), errors


def test_a_bad_bitrate_stops_the_peer_before_it_joins(processes):
    cli = processes.peer("--room", "bad", "--bitrate", "20M", *HEADLESS, name="bad")
    assert cli.wait() == 2
    assert cli.lines[-1] == "python -m peer: error: argument --bitrate: bitrate 20000000 bit/s is out of bounds: " \
                            "give one from 100k to 10M", cli.output


def test_sharing_the_screen_without_a_display_says_so(processes):
    env = child_env()
    env.pop("DISPLAY", None)
    cli = processes.peer("--room", "nodisplay", "--video", "screen", *HEADLESS, name="sharer", env=env)
    assert cli.wait() != 0
    assert cli.lines == ["peer: no screen to share: DISPLAY is not set. Start it from a desktop session, "
                         "or use --video testsrc."], cli.output


@pytest.mark.parametrize("options", [{"codec": "av1"}, {"bitrate": "50k"}, {"bitrate": 10**9}, {"bitrate": "2 M"}])
def test_join_refuses_bad_video_values(options):
    with pytest.raises(ValueError):
        peer.join("bad", **options)


async def test_join_refuses_a_bad_size_or_rate(server):
    for options in ({"video_size": "100"}, {"fps": 0}):
        with pytest.raises(ValueError):
            async with join("bad", server, "bot", video="testsrc", **options):
                pass
