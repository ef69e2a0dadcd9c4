"""The camera turned off and the sound muted, by the person or by a source that ends: the
calls go on and the others get a "camera off" picture or silence on the same tracks."""

import cv2  # noqa: F401  -- before av

import asyncio
import time

import numpy as np

import peer
from conftest import LOCAL
from media_check import likeness_to_testsrc, make_clip


def is_camera_off(picture: np.ndarray) -> bool:
    """The "camera off" picture: almost all of it dark (a dark grey with one line of text)."""
    return (picture.max(axis=2) < 60).mean() > 0.9


def is_testsrc(picture: np.ndarray, size: str = "320x240") -> bool:
    return likeness_to_testsrc(cv2.cvtColor(picture, cv2.COLOR_BGR2RGB), size) > 0.9


class Watcher:
    """What a bot receives from one member, as it comes: each picture with its arrival time,
    and the events of the room."""

    def __init__(self, room: peer.Room, member: peer.Member) -> None:
        self.room, self.member = room, member
        self.pictures: list[tuple[float, np.ndarray]] = []
        self.events: list[peer.Event] = []
        self._tasks = [asyncio.ensure_future(self._watch()), asyncio.ensure_future(self._listen())]

    async def _watch(self) -> None:
        async for picture in self.room.frames(self.member):
            self.pictures.append((time.monotonic(), picture))

    async def _listen(self) -> None:
        async for event in self.room.events():
            self.events.append(event)

    async def until(self, check, timeout: float, what: str) -> None:
        """Wait until the pictures that came after this call pass ``check`` (given them all)."""
        start, deadline = len(self.pictures), time.monotonic() + timeout
        while not check(self.pictures[start:]):
            assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
            await asyncio.sleep(0.05)

    def stop(self) -> None:
        for task in self._tasks:
            task.cancel()


def camera_off_for(seconds: float):
    """A check: the newest pictures are the "camera off" one, and have been for ``seconds``."""
    def check(pictures) -> bool:
        off = [at for at, picture in pictures if is_camera_off(picture)]
        return bool(off) and is_camera_off(pictures[-1][1]) and off[-1] - off[0] >= seconds
    return check


async def test_a_video_file_that_ends_leaves_the_camera_off_picture_and_the_call_goes_on(server, processes, tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", seconds=1)
    sender = processes.peer("--room", "ends", "--server", server.url, "--video", str(clip), "--no-window",
                            "--ice-host", LOCAL, name="sender")
    async with peer.join("ends", server=server.url, name="watcher", ice_hosts=[LOCAL]) as room:
        watcher = Watcher(room, await room.wait_for_peer())
        try:
            await watcher.until(lambda pictures: any(is_testsrc(p) for _, p in pictures[-3:]), 20, "the clip")
            await watcher.until(camera_off_for(2.0), 10, "two seconds of the camera-off picture")
        finally:
            watcher.stop()
        assert room.connected == [watcher.member]
        assert "call with" not in sender.output, sender.output
    off = [at for at, picture in watcher.pictures if is_camera_off(picture)]
    assert len(off) >= 2 * 2, f"{len(off)} camera-off pictures in 2 s: the stream stalled"
    assert not [e for e in watcher.events if isinstance(e, peer.CallEnded)], watcher.events
    sender.expect("your video stopped .*sending a 'camera off' picture")
    assert sender.output.count("your video stopped") == 1, sender.output
    assert "Traceback" not in sender.output, sender.output
