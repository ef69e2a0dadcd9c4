"""What makes one call cheaper and its start quicker (bench/call.py) must not break what it
touches: a join opens its media while it connects to the server, and whichever fails, the
other is closed."""

import cv2  # noqa: F401  -- before av

import asyncio
import subprocess
import sys

import aiohttp
import pytest

import peer
from conftest import LOCAL, child_env, free_port
from peer.api import _open_while_connecting
from peer.session import Session


async def connections(server) -> int:
    """How many Socket.IO sessions the server has open now."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/healthz") as response:
            return (await response.json())["connections"]


async def until_connections(server, count: int) -> None:
    async with asyncio.timeout(10):
        while await connections(server) != count:
            await asyncio.sleep(0.02)


async def test_media_failing_after_the_connection_is_up_closes_it(server):
    """The media fails once the signaling connection is open: the error is the media's, and
    the connection goes (the server sees nobody left)."""
    session = Session("costs", server.url, "bot")

    async def media_failing_once_connected() -> peer.LocalMedia:
        await until_connections(server, 1)
        raise peer.MediaError("no camera found.")

    with pytest.raises(peer.MediaError, match="no camera"):
        await _open_while_connecting(session, media_failing_once_connected)
    await until_connections(server, 0)


async def test_a_wrong_video_is_said_before_an_unreachable_server():
    """As when the media was opened first: the person hears of the wrong ``video`` whatever
    the server does."""
    with pytest.raises(peer.MediaError, match="no such camera or file"):
        async with peer.join("costs", server=f"http://{LOCAL}:{free_port()}", video="/no/such/video.mp4"):
            pass


async def test_media_opened_beside_an_unreachable_server_is_stopped():
    session = Session("costs", f"http://{LOCAL}:{free_port()}", "bot")
    opened: list[peer.LocalMedia] = []

    async def open_media() -> peer.LocalMedia:
        opened.append(await peer.LocalMedia.open("testsrc", size="160x120", fps=15))
        return opened[0]

    with pytest.raises(peer.SignalingUnreachable):
        await _open_while_connecting(session, open_media)
    assert opened and opened[0].video is not None and opened[0].video.readyState == "ended"


async def test_a_join_cancelled_while_opening_leaves_nothing_open(server):
    """Cancelled with the media still opening and the connection up: both are closed."""
    session = Session("costs", server.url, "bot")
    opened: list[peer.LocalMedia] = []

    async def slow_media() -> peer.LocalMedia:
        await until_connections(server, 1)
        opened.append(await peer.LocalMedia.open("testsrc", size="160x120", fps=15))
        await asyncio.Event().wait()  # never done: the join is cancelled meanwhile
        raise AssertionError("not reached")

    joining = asyncio.ensure_future(_open_while_connecting(session, slow_media))
    async with asyncio.timeout(10):
        while not opened:
            await asyncio.sleep(0.02)
    joining.cancel()
    try:
        with pytest.raises(asyncio.CancelledError):
            await joining
        await until_connections(server, 0)
    finally:
        opened[0].stop()


async def test_a_join_with_video_still_sends_it(server):
    """The media opened beside the connection is the one the calls send."""
    async with peer.join("costs-video", server=server.url, name="sender", video="testsrc", video_size="320x240",
                         fps=15, ice_hosts=[LOCAL]), \
            peer.join("costs-video", server=server.url, name="watcher", ice_hosts=[LOCAL]) as watcher:
        await watcher.wait_for_frames(5, timeout=20)
        async for picture in watcher.frames():
            assert picture.shape == (240, 320, 3)
            break


def test_a_peer_loads_opencv_only_for_the_camera_off_picture():
    """OpenCV is 26 MB of a peer's memory and only draws the "camera off" picture: it is
    loaded then, and the picture is still drawn."""
    code = ("import sys, peer\n"
            "from peer.media.sources import camera_off_picture\n"
            "assert 'cv2' not in sys.modules, 'OpenCV loaded by import peer'\n"
            "picture = camera_off_picture(320, 240)\n"
            "assert picture.shape == (240, 320, 3) and picture.max() > 150 and picture.min() < 30\n")
    done = subprocess.run([sys.executable, "-c", code], env=child_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


async def test_testsrc_is_made_as_it_is_sent_not_a_second_ahead():
    """aiortc's player reads a second ahead of the clock: for a synthetic source that is 30
    pictures held for nothing (83 MB at 1280x720). Made at the pace it is sent, only the
    picture due waits."""
    media = await peer.LocalMedia.open("testsrc", size="640x480", fps=30)
    try:
        player = media._players[0]  # aiortc's MediaPlayer: its queue is what it read ahead
        await player.video.recv()
        await asyncio.sleep(0.5)
        assert player.video._queue.qsize() < 25
    finally:
        media.stop()


def test_big_buffers_go_back_to_the_system_where_the_c_library_allows():
    """glibc here: the threshold is fixed. A C library without ``mallopt`` (macOS, musl) is
    left alone, without an error."""
    from peer.memory import return_big_buffers

    class NoMallopt:
        pass

    assert return_big_buffers() is True
    assert return_big_buffers(NoMallopt()) is False
