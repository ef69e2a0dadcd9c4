"""The examples as people run them: real subprocesses against a real server, a real peer on the
other side (``python -m peer`` or an in-test ``peer.join`` client), all on 127.0.0.1."""

import cv2  # noqa: F401  -- before av

import asyncio
import datetime
import importlib.util
import re
import signal
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest

import peer
from conftest import LOCAL, ROOT, Process, free_port
from media_check import likeness_to_testsrc, make_clip, recorded_frames

EXAMPLES = ROOT / "examples"
SMALL = ["--video-size", "320x240", "--fps", "15"]
CLI_PEER = ["--video", "testsrc", *SMALL, "--ice-host", LOCAL, "--no-window"]


class Examples:
    """Starts ``python examples/NAME.py`` processes; whatever is still running at the end of
    the test gets SIGINT, then SIGKILL."""

    def __init__(self, server) -> None:
        self.server = server
        self.started: list[Process] = []

    def start(self, name: str, *flags: str, room: str, server: str = "") -> Process:
        args = [sys.executable, str(EXAMPLES / f"{name}.py"), "--room", room,
                "--server", server or self.server.url, "--ice-host", LOCAL, *flags]
        process = Process(args, name=name)
        self.started.append(process)
        return process

    def cleanup(self) -> None:
        for process in self.started:
            process.stop(signal.SIGINT, grace=10)


@pytest.fixture
def examples(server):
    started = Examples(server)
    yield started
    started.cleanup()


def ctrl_c(process: Process) -> None:
    """Ctrl-C ends the example at once, with exit code 0 and no traceback."""
    assert process.proc.poll() is None, f"{process.name} ended early:\n{process.output}"
    process.proc.send_signal(signal.SIGINT)
    assert process.wait(15) == 0, process.output
    assert "Traceback" not in process.output, process.output


async def expect(process: Process, pattern: str, timeout: float = 20) -> re.Match:
    """``Process.expect`` without blocking the event loop (an in-test peer lives on it)."""
    return await asyncio.to_thread(process.expect, pattern, timeout)


def client(room: str, server, **options):
    return peer.join(room, server=server.url, name="tester", ice_hosts=[LOCAL], **options)


async def settled_frame(room, member, check, timeout: float = 15):
    """The first frame from ``member`` that passes ``check`` (which returns a list of what is
    wrong with it); fails with what was wrong with the last one."""
    problems = ["no frame arrived"]

    async def first_good():
        nonlocal problems
        async for picture in room.frames(member, latest=True):
            problems = check(picture)
            if not problems:
                return picture

    try:
        return await asyncio.wait_for(first_good(), timeout)
    except asyncio.TimeoutError:
        raise AssertionError(f"no frame from {member.name} passed within {timeout} s: {problems}") from None


def mean_color(picture: np.ndarray, rows: slice, cols: slice) -> np.ndarray:
    return picture[rows, cols].reshape(-1, 3).mean(axis=0)


# echo_bot

RED, BLUE, GREEN, WHITE = (0, 0, 255), (255, 0, 0), (0, 255, 0), (255, 255, 255)  # BGR


def quadrants(top_left, top_right, bottom_left, bottom_right, size=(320, 240)) -> np.ndarray:
    width, height = size
    picture = np.zeros((height, width, 3), np.uint8)
    picture[:height // 2, :width // 2] = top_left
    picture[:height // 2, width // 2:] = top_right
    picture[height // 2:, :width // 2] = bottom_left
    picture[height // 2:, width // 2:] = bottom_right
    return picture


def quadrant_problems(picture: np.ndarray, expected: dict) -> list:
    height, width = picture.shape[:2]
    inner = {"top left": (slice(10, height // 2 - 10), slice(10, width // 2 - 10)),
             "top right": (slice(10, height // 2 - 10), slice(width // 2 + 10, width - 10)),
             "bottom left": (slice(height // 2 + 10, height - 10), slice(10, width // 2 - 10)),
             "bottom right": (slice(height // 2 + 10, height - 10), slice(width // 2 + 10, width - 10))}
    problems = []
    for where, color in expected.items():
        got = mean_color(picture, *inner[where])
        if np.abs(got - color).max() > 45:
            problems.append(f"{where} is {got.round()} (BGR), not {color}")
    return problems


async def test_echo_bot_sends_the_video_back_mirrored_and_echoes_chat(server, examples):
    bot = examples.start("echo_bot", room="echo")
    await expect(bot, "in room echo")
    source = peer.FrameSource(fps=15, size=(320, 240))
    source.push(quadrants(RED, BLUE, GREEN, WHITE))
    async with client("echo", server, video=source) as room:
        echo = await room.wait_for_peer()
        assert echo.name == "echo_bot"
        # Mirrored around the vertical axis: left and right swap, top and bottom stay.
        await settled_frame(room, echo, lambda picture: quadrant_problems(
            picture, {"top left": BLUE, "top right": RED, "bottom left": WHITE, "bottom right": GREEN}))
        room.send_text("hello écho ✓")
        message = await room.wait_for_message(lambda text: text.startswith("echo:"))
        assert (message.sender.name, message.text) == ("echo_bot", "echo: hello écho ✓")
    await expect(bot, "echoing tester")
    ctrl_c(bot)


# filter_bot

def blocks(size=(320, 240), block=40, seed=5) -> np.ndarray:
    """Blocks of random flat colours: sharp edges to find, blur or outline."""
    rng = np.random.default_rng(seed)
    colors = rng.integers(0, 256, (size[1] // block, size[0] // block, 3), dtype=np.uint8)
    return np.kron(colors, np.ones((block, block, 1), np.uint8))


def gray(picture: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(picture, cv2.COLOR_BGR2GRAY).astype(float)


def sharpness(picture: np.ndarray) -> float:
    """High-frequency energy: the variance of the Laplacian."""
    return float(cv2.Laplacian(gray(picture), cv2.CV_64F).var())


def difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(float) - b.astype(float)).mean())


def filter_bot_effects():
    spec = importlib.util.spec_from_file_location("filter_bot", EXAMPLES / "filter_bot.py")
    sys.path.insert(0, str(EXAMPLES))
    try:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(EXAMPLES))
    return module.EFFECTS


def edges_problems(sent: np.ndarray, got: np.ndarray) -> list:
    value = gray(got)
    near_edges = cv2.dilate(cv2.Canny(cv2.cvtColor(sent, cv2.COLOR_BGR2GRAY), 50, 150), np.ones((7, 7), np.uint8)) > 0
    bright = value > 128
    problems = []
    if (value < 50).mean() < 0.75:
        problems.append(f"only {(value < 50).mean():.0%} black")
    if not 0.01 < bright.mean() < 0.3:
        problems.append(f"{bright.mean():.1%} white")
    elif (bright & near_edges).sum() < 0.85 * bright.sum():
        problems.append(f"only {(bright & near_edges).sum() / bright.sum():.0%} of the white lies on the input's edges")
    return problems


def blur_problems(sent: np.ndarray, got: np.ndarray) -> list:
    problems = []
    if sharpness(got) > 0.2 * sharpness(sent):
        problems.append(f"high-frequency energy {sharpness(got):.0f}, input {sharpness(sent):.0f}")
    if difference(got, cv2.GaussianBlur(sent, (31, 31), 0)) > 12:
        problems.append(f"differs from the input blurred by {difference(got, cv2.GaussianBlur(sent, (31, 31), 0)):.1f}")
    return problems


def cartoon_problems(sent: np.ndarray, got: np.ndarray) -> list:
    expected = filter_bot_effects()["cartoon"](sent)
    problems = []
    if difference(got, expected) > 0.5 * difference(got, sent):
        problems.append(f"as far from the cartoon of the input ({difference(got, expected):.1f}) "
                        f"as from the input ({difference(got, sent):.1f})")
    dark = (gray(got) < 40).mean()
    if dark < (gray(sent) < 40).mean() + 0.03:
        problems.append(f"no dark outlines ({dark:.1%} dark)")
    return problems


@pytest.mark.parametrize("effect, problems", [("edges", edges_problems), ("blur", blur_problems),
                                              ("cartoon", cartoon_problems)])
async def test_filter_bot_applies_the_effect(server, examples, effect, problems):
    bot = examples.start("filter_bot", "--effect", effect, room=f"filter-{effect}")
    await expect(bot, f"{effect} in room filter-{effect}")
    sent = blocks()
    assert problems(sent, sent), "the input itself passes the check: it would prove nothing"
    source = peer.FrameSource(fps=15, size=(320, 240))
    source.push(sent)
    async with client(f"filter-{effect}", server, video=source) as room:
        bot_member = await room.wait_for_peer()
        await settled_frame(room, bot_member, lambda got: problems(sent, got))
    ctrl_c(bot)


# recorder_bot

def test_recorder_bot_records_each_peer_to_its_own_file(server, examples, processes, tmp_path):
    out = tmp_path / "recordings"
    bot = examples.start("recorder_bot", "--out", str(out), room="rec")
    bot.expect("recording room rec")
    alice = processes.peer("--room", "rec", "--server", server.url, *CLI_PEER, name="alice")
    alice.expect("connected to recorder_bot")
    bot.expect(r"recording alice to .*alice\.mp4")
    time.sleep(3)
    alice.interrupt()  # alice leaves: her file is finished at once
    assert alice.wait() == 0
    saved = bot.expect(r"saved (\S+alice\.mp4) \((\d+) frames of alice\)")
    assert Path(saved.group(1)) == out / "alice.mp4"

    bob = processes.peer("--room", "rec", "--server", server.url, *CLI_PEER, name="bob")
    bob.expect("connected to recorder_bot")
    bot.expect(r"recording bob to .*bob\.mp4")
    time.sleep(2)
    ctrl_c(bot)  # bob is still there: Ctrl-C finishes his file too
    bot.expect(r"saved \S+bob\.mp4 \(\d+ frames of bob\)")
    bob.expect("call with recorder_bot ended")

    assert sorted(p.name for p in out.iterdir()) == ["alice.mp4", "bob.mp4"]
    for path, seconds in ((out / "alice.mp4", 3), (out / "bob.mp4", 2)):
        frames = recorded_frames(str(path))
        assert len(frames) >= seconds * 15 * 0.6, f"{path.name}: {len(frames)} frames"
        assert frames[0].shape == (240, 320, 3)
        for picture in frames[2::10]:
            assert likeness_to_testsrc(picture, "320x240") > 0.95, f"{path.name} holds something other than testsrc"
        with av.open(str(path)) as container:
            duration = float(container.duration / av.time_base)
        assert seconds * 0.7 < duration < seconds + 3, f"{path.name} lasts {duration:.1f} s"


# player_bot

async def test_player_bot_plays_the_file_in_a_loop(server, examples, tmp_path):
    clip = make_clip(tmp_path / "clip.mp4")
    assert len(recorded_frames(str(clip))) == 30
    bot = examples.start("player_bot", "--file", str(clip), room="player")
    await expect(bot, "playing .*clip.mp4 in room player")
    kept, arrivals = [], []

    async def watch(room, player) -> None:
        started = None
        async for picture in room.frames(player, latest=False):
            now = time.monotonic()
            started = started or now
            arrivals.append(now - started)
            if len(arrivals) % 5 == 0:
                kept.append(cv2.cvtColor(picture, cv2.COLOR_BGR2RGB))
            if now - started > 5.5:  # almost three passes of the 2 s clip
                return

    async with client("player", server) as room:
        player = await room.wait_for_peer()
        try:
            await asyncio.wait_for(watch(room, player), 10)
        except asyncio.TimeoutError:
            pass  # frames stopped: said below
    # Frames keep coming at the clip's rate well after its end: the file loops.
    late = [t for t in arrivals if 4.0 < t <= 5.5]
    assert len(late) > 15, f"{len(late)} frames between 4.0 and 5.5 s: the clip did not loop (arrivals {arrivals[-5:]})"
    assert len(arrivals) < 5.5 * 15 * 1.5, f"{len(arrivals)} frames in 5.5 s: played faster than real time"
    for picture in kept:
        assert likeness_to_testsrc(picture, "320x240") > 0.95, "a frame unlike the clip"
    await expect(bot, "playing to tester")
    ctrl_c(bot)


# chat_bot

def test_chat_bot_answers_commands(server, examples, processes):
    bot = examples.start("chat_bot", room="chat")
    bot.expect("in room chat")
    alice = processes.peer("--room", "chat", "--server", server.url, "--video", "none", "--ice-host", LOCAL,
                           "--no-window", name="alice")
    alice.expect(r"^\[chat_bot\] hello alice! commands: /time")
    alice.send("/time")
    stamp = alice.expect(r"^\[chat_bot\] time: (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[+-]\d\d:\d\d)$").group(1)
    said = datetime.datetime.fromisoformat(stamp)
    assert abs((said - datetime.datetime.now().astimezone()).total_seconds()) < 60
    alice.send("/help")
    alice.expect(r"^\[chat_bot\] commands: /time \(the time here\), /stats .*, /help")
    alice.send("just talking")
    alice.send("/stats")
    alice.expect(r"^\[chat_bot\] stats: 1 peers connected, up 0:00:\d\d, 4 messages seen$")
    alice.send("/dance now")
    alice.expect(r"^\[chat_bot\] unknown command /dance; commands:")
    ctrl_c(bot)
    alice.expect("call with chat_bot ended")


def test_an_example_says_what_went_wrong_in_one_line(examples):
    nowhere = f"http://{LOCAL}:{free_port()}"
    bot = examples.start("chat_bot", room="x", server=nowhere)
    assert bot.wait(20) == 1
    assert len(bot.lines) == 1, bot.output
    assert bot.lines[0].startswith(f"chat_bot: cannot reach the signaling server at {nowhere} ("), bot.output
    assert bot.lines[0].endswith("Check the address, or start one with: python -m signaling"), bot.output


# swarm

def test_swarm_prints_a_table_with_no_failures(server, examples):
    swarm = examples.start("swarm", "--peers", "4", "--duration", "3", room="load")
    assert swarm.wait(60) == 0, swarm.output
    rows = [line.split() for line in swarm.lines if re.match(r"swarm-\d ", line)]
    assert len(rows) == 4, swarm.output
    for name, room, join, first_frame, fps, result in rows:
        assert room == f"load-{int(name.split('-')[1]) // 2}"
        assert result == "ok", swarm.output
        assert 0 < float(join) < float(first_frame) < 10
        assert 10 < float(fps) < 20, swarm.output
    assert "4 peers, 0 failures" in swarm.lines, swarm.output
    assert "Traceback" not in swarm.output


def test_swarm_stops_on_ctrl_c(server, examples):
    swarm = examples.start("swarm", "--peers", "2", "--duration", "60", room="load")
    swarm.expect("2 peers in 1 rooms")
    time.sleep(3)
    ctrl_c(swarm)
