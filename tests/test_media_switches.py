"""The camera turned off and the sound muted, by the person or by a source that ends: the
calls go on and the others get a "camera off" picture or silence on the same tracks."""

import cv2  # noqa: F401  -- before av

import asyncio
import subprocess
import time

import numpy as np

import peer
from conftest import LOCAL, child_env, require
from media_check import likeness_to_testsrc, make_clip
from test_peer_window import window_geometry


def is_camera_off(picture: np.ndarray) -> bool:
    """The "camera off" picture: almost all of it dark (a dark grey with one line of text)."""
    return (picture.max(axis=2) < 60).mean() > 0.9


def is_testsrc(picture: np.ndarray, size: str = "320x240") -> bool:
    return likeness_to_testsrc(cv2.cvtColor(picture, cv2.COLOR_BGR2RGB), size) > 0.9


class Watcher:
    """What a bot receives from one member, as it comes: each picture with its arrival time,
    and the events of the room."""

    def __init__(self, room: peer.Room, member: peer.Member, audio: bool = False) -> None:
        self.room, self.member = room, member
        self.pictures: list[tuple[float, np.ndarray]] = []
        self.loudness: list[float] = []
        """The RMS of each 20 ms of sound received."""
        self.events: list[peer.Event] = []
        self._tasks = [asyncio.ensure_future(self._watch()), asyncio.ensure_future(self._listen())]
        if audio:
            self._tasks.append(asyncio.ensure_future(self._hear()))

    async def _watch(self) -> None:
        async for picture in self.room.frames(self.member):
            self.pictures.append((time.monotonic(), picture))

    async def _hear(self) -> None:
        async for samples in self.room.frames(self.member, kind="audio", latest=False):
            self.loudness.append(float(np.sqrt(np.mean(samples.astype(float) ** 2))))

    async def _listen(self) -> None:
        async for event in self.room.events():
            self.events.append(event)

    async def until(self, check, timeout: float, what: str, audio: bool = False) -> None:
        """Wait until the pictures (or loudness figures) that came after this call pass
        ``check`` (given them all)."""
        received = self.loudness if audio else self.pictures
        start, deadline = len(received), time.monotonic() + timeout
        while not check(received[start:]):
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


def showing_testsrc(pictures) -> bool:
    return len(pictures) >= 3 and all(is_testsrc(picture) for _, picture in pictures[-3:])


def silent(loudness) -> bool:
    return len(loudness) >= 10 and max(loudness[-10:]) < 30


def loud(loudness) -> bool:
    return len(loudness) >= 10 and min(loudness[-10:]) > 1000


async def test_v_and_m_in_the_window_turn_the_camera_off_and_mute_the_sound(server, processes, xvfb):
    """As a person does it: keys pressed in the window of one peer; a bot in the room sees
    and hears the difference, and the peer says each change."""
    xdotool = require("xdotool")
    env = child_env(DISPLAY=xvfb)
    sender = processes.peer("--room", "keys", "--server", server.url, "--video", "testsrc", "--video-size", "320x240",
                            "--fps", "15", "--audio", "sine", "--ice-host", LOCAL, name="sender", env=env)
    async with peer.join("keys", server=server.url, name="bot", ice_hosts=[LOCAL]) as room:
        watcher = Watcher(room, await room.wait_for_peer(), audio=True)
        try:
            await asyncio.to_thread(window_geometry, xvfb, r"room keys - bot")
            window_id = (await asyncio.to_thread(subprocess.run, [xdotool, "search", "--name", "room keys"], env=env,
                                                 capture_output=True, text=True)).stdout.split()[0]

            async def press(key: str) -> None:
                for command in (["windowfocus", "--sync", window_id], ["key", key]):
                    await asyncio.to_thread(subprocess.run, [xdotool, *command], env=env, check=True)

            await watcher.until(showing_testsrc, 20, "the test picture")
            await watcher.until(loud, 10, "the sine", audio=True)
            await press("v")
            await watcher.until(camera_off_for(0.5), 10, "the camera-off picture after v")
            sender.expect("^camera off")
            await press("v")
            await watcher.until(showing_testsrc, 10, "the test picture again after a second v")
            sender.expect("^camera on$")
            await press("m")
            await watcher.until(silent, 10, "silence after m", audio=True)
            sender.expect("^microphone muted")
            await press("m")
            await watcher.until(loud, 10, "the sine again after a second m", audio=True)
            sender.expect("^microphone on$")
        finally:
            watcher.stop()
        assert room.connected == [watcher.member]
    assert not [e for e in watcher.events if isinstance(e, peer.CallEnded)], watcher.events
    assert "Traceback" not in sender.output, sender.output


def test_the_keys_are_drawn_in_a_hint_line_at_the_bottom():
    from peer.media.window import Window
    from peer.media.window_process import State, compose

    window = Window()
    window.on_key("m", lambda: None, "mute")
    hint = next(c for c in reversed(window._controls) if c["op"] == "hint")
    assert hint["text"] == "q leave  f fullscreen  m mute"
    for size in ((480, 640), (120, 160)):
        state = State()
        state.tiles["bob"] = np.full((*size, 3), 128, np.uint8)
        bare, _ = compose(state)
        state.apply(hint, b"")
        hinted, _ = compose(state)
        assert hinted.shape == bare.shape
        assert (hinted[-20:] != bare[-20:]).any(), "no hint drawn at the bottom"
        assert (hinted[:-24] == bare[:-24]).all(), "the hint is more than one line"
        assert (hinted[:, -5:] == 128).all(), "the hint runs off the right edge"


def test_f_toggles_fullscreen_in_the_window_process():
    """The window process's side of ``f`` (a window manager makes it full screen: Xvfb has none)."""
    from peer.media.window import Window
    from peer.media.window_process import State

    window = Window()
    window.toggle_fullscreen()  # what f does
    state = State()
    for message in window._controls:
        state.apply(message, b"")
    assert state.fullscreen
    state.apply({"op": "fullscreen"}, b"")
    assert not state.fullscreen


async def test_the_window_shows_what_we_send_in_a_corner(server, processes, xvfb):
    """The local preview: the test picture sent, small in the top right corner over the
    other side's (plain green) video; with the camera off, the "camera off" picture there."""
    from test_peer_window import screenshot

    xdotool = require("xdotool")
    env = child_env(DISPLAY=xvfb)
    sender = processes.peer("--room", "preview", "--server", server.url, "--video", "testsrc", "--video-size",
                            "320x240", "--fps", "15", "--ice-host", LOCAL, name="sender", env=env)
    green = peer.FrameSource(fps=15, size=(320, 240))
    green.push(np.full((240, 320, 3), (0, 200, 0), np.uint8))
    async with peer.join("preview", server=server.url, name="bot", video=green, ice_hosts=[LOCAL]):
        def corner() -> np.ndarray:
            """The top right quarter's width of the window, as on the screen (RGB); read anew,
            as the window takes the size of the remote video only once it comes."""
            box = window_geometry(xvfb, r"room preview - bot")
            width = box[2] // 4
            return screenshot(xvfb, box)[8:8 + width * 3 // 4, box[2] - width - 8:box[2] - 8]

        async def until(check, what: str) -> None:
            deadline = time.monotonic() + 10
            while not await asyncio.to_thread(check):
                assert time.monotonic() < deadline, f"not within 10 s: {what}"
                await asyncio.sleep(0.2)

        await until(lambda: likeness_to_testsrc(corner(), "320x240") > 0.9, "the test picture in the corner")
        box = window_geometry(xvfb, r"room preview - bot")
        left = screenshot(xvfb, box)[box[3] // 3:box[3] * 2 // 3, :box[2] // 2]
        assert (np.abs(left.astype(int) - (0, 200, 0)).sum(axis=2) < 40).mean() > 0.9, "not the bot's green"
        window_id = (await asyncio.to_thread(subprocess.run, [xdotool, "search", "--name", "room preview"], env=env,
                                             capture_output=True, text=True)).stdout.split()[0]
        for command in (["windowfocus", "--sync", window_id], ["key", "v"]):
            await asyncio.to_thread(subprocess.run, [xdotool, *command], env=env, check=True)
        await until(lambda: is_camera_off(corner()), "the camera-off picture in the corner")
    assert "Traceback" not in sender.output, sender.output
