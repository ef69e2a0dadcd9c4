"""The bot API (``import peer``) used in-process against a real server, peers on 127.0.0.1."""

import cv2  # noqa: F401  -- before av

import asyncio
import gc
import hashlib
import os
import re
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any, Optional

import aiohttp
import av
import numpy as np
import pytest

import peer
from conftest import LOCAL, free_port
from media_check import likeness_to_testsrc, recorded_frames
from signaling import SignalingServer

SMALL = {"video_size": "320x240", "fps": 15}
MB = 1024 * 1024


def join(room: str, server, name: str, **options):
    return peer.join(room, server=server.url, name=name, ice_hosts=[LOCAL], **options)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def random_file(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path


async def until(condition, timeout: float, what: str) -> Any:
    """Poll ``condition`` until it returns something true, and return that."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.05)
    return value


# Files

async def test_a_20_mb_file_arrives_intact_with_progress(server, tmp_path):
    source = random_file(tmp_path / "out" / "big.bin", 20 * MB)
    downloads = tmp_path / "downloads"
    reported = []
    async with join("files", server, "alice") as alice, join("files", server, "bob", downloads=downloads) as bob:
        to_bob = await alice.wait_for_peer()
        await bob.wait_for_peer()
        sent = await asyncio.wait_for(alice.send_file(
            source, to=to_bob, progress=lambda member, done, size: reported.append((member.name, done, size))), 60)
        received = await bob.wait_for(peer.FileReceived)
    receiving = [event async for event in past(bob, peer.FileProgress)]

    expected = sha256(source)
    assert sent == received.sha256 == expected
    assert received.sender.name == "alice"
    assert received.path == downloads / "big.bin"
    assert sha256(received.path) == expected
    assert sorted(p.name for p in downloads.iterdir()) == ["big.bin"], "a leftover beside the file"
    # The sender's progress: increasing, to the size, in many steps.
    assert {(name, size) for name, _, size in reported} == {("bob", 20 * MB)}
    done = [d for _, d, _ in reported]
    assert done == sorted(set(done)) and done[-1] == 20 * MB and len(done) > 100
    # The receiver's too.
    assert {(e.sender.name, e.name, e.size) for e in receiving} == {("alice", "big.bin", 20 * MB)}
    done = [e.done for e in receiving]
    assert done == sorted(set(done)) and done[-1] == 20 * MB and len(done) > 100


async def past(room, kind):
    """The events of ``kind`` a closed room had (its iterators end once it is closed)."""
    async for event in room.events():
        if isinstance(event, kind):
            yield event


async def no_file_left(downloads: Path) -> None:
    """Nothing in ``downloads``: neither the file nor its hidden ``.part`` (removed on the
    writer thread, so allow it a moment)."""
    await until(lambda: not any(downloads.iterdir()), 3, f"downloads still holds {list(downloads.iterdir())}")


async def test_the_sender_leaving_mid_transfer_gives_a_clear_error_and_no_file(server, tmp_path):
    source = random_file(tmp_path / "out" / "big.bin", 20 * MB)
    downloads = tmp_path / "downloads"
    async with join("leaving", server, "bob", downloads=downloads) as bob:
        async with join("leaving", server, "alice") as alice:
            await alice.wait_for_peer()
            await bob.wait_for_peer()
            sending = asyncio.ensure_future(alice.send_file(source))
            await bob.wait_for(peer.FileProgress, lambda event: event.done >= 2 * MB)
            partial = [p.name for p in downloads.iterdir()]
            assert len(partial) == 1 and re.fullmatch(r"\.big\.bin\.\w+\.part", partial[0]), \
                f"the partial file is hidden: {partial}"
            sending.cancel()  # the bot stops sending and leaves, half-way
        failed = await bob.wait_for(peer.FileFailed, timeout=10)
        assert failed.sender.name == "alice" and failed.name == "big.bin"
        assert re.fullmatch(r"alice left during the transfer after (\d+) of 20971520 bytes; nothing was saved",
                            failed.reason), failed.reason
        await no_file_left(downloads)
    assert not [event async for event in past(bob, peer.FileReceived)]


async def test_a_killed_sender_gives_a_clear_error_and_no_file(server, processes, tmp_path):
    source = random_file(tmp_path / "out" / "huge.bin", 40 * MB)
    downloads = tmp_path / "downloads"
    async with join("killed", server, "bob", downloads=downloads) as bob:
        alice = processes.peer("--room", "killed", "--server", server.url, "--video", "none", "--ice-host", LOCAL,
                               "--no-window", "--send", str(source), "--downloads", str(tmp_path / "alice-dl"),
                               name="alice")
        await bob.wait_for(peer.FileProgress, lambda event: event.done >= 3 * MB, timeout=20)
        alice.proc.send_signal(signal.SIGKILL)
        failed = await bob.wait_for(peer.FileFailed, timeout=10)
        assert failed.sender.name == "alice" and failed.name == "huge.bin"
        assert "nothing was saved" in failed.reason and "after" in failed.reason, failed.reason
        assert re.search(r"alice left|connection was renewed", failed.reason), failed.reason
        await no_file_left(downloads)


def test_cli_sends_and_saves_files_with_progress(server, processes, tmp_path):
    source = random_file(tmp_path / "out" / "report.bin", 5 * MB)
    flags = ["--room", "cli-files", "--server", server.url, "--video", "none", "--ice-host", LOCAL, "--no-window"]
    bob = processes.peer(*flags, "--downloads", str(tmp_path / "bob-downloads"), name="bob")
    bob.expect("joined room cli-files")
    alice = processes.peer(*flags, "--send", str(source), "--downloads", str(tmp_path / "alice-downloads"),
                           name="alice")
    alice.expect(r"^sent report\.bin to bob \(sha256 " + sha256(source)[:16] + "…\\)$", timeout=30)
    saved = bob.expect(r"^received report\.bin from alice: saved to (\S+) \(sha256 (\w{16})…\)$").group(1, 2)
    assert saved == (str(tmp_path / "bob-downloads" / "report.bin"), sha256(source)[:16])
    assert sha256(Path(saved[0])) == sha256(source)
    for process, what in ((alice, "sending report.bin to bob"), (bob, "receiving report.bin from alice")):
        percents = [int(m.group(1)) for line in process.lines
                    if line.startswith(what) and (m := re.search(r"\] +(\d+)% ", line))]
        assert len(percents) >= 3 and percents == sorted(percents) and percents[-1] == 100, process.output
        assert re.search(rf"^{what}: \[#{{20}}\] 100% 5\.24MB/5\.24MB in \d\d:\d\d, [\d.]+[kMG]?B/s$", process.output,
                         re.MULTILINE), process.output
    assert not (tmp_path / "alice-downloads").exists()
    for process in (alice, bob):
        process.interrupt()
        assert process.wait() == 0
        assert "Traceback" not in process.output


# Waiting

async def test_wait_helpers_time_out_saying_what_they_waited_for(server):
    async with join("lonely", server, "alone") as room:
        for waiting, what in [
            (lambda: room.wait_for_peer(timeout=0.5), "a connected peer in room 'lonely'"),
            (lambda: room.wait_for_frames(5, timeout=0.5), "5 video frames from anyone"),
            (lambda: room.wait_for_frames(3, kind="audio", timeout=0.5), "3 audio frames from anyone"),
            (lambda: room.wait_for_message(lambda text: text == "hi", timeout=0.5), "a matching message"),
            (lambda: room.wait_for(peer.FileReceived, timeout=0.5), "a FileReceived event"),
        ]:
            started = time.monotonic()
            with pytest.raises(TimeoutError) as error:
                await waiting()
            assert str(error.value) == f"timed out waiting for {what}"
            assert 0.45 < time.monotonic() - started < 2
            assert isinstance(error.value, peer.WaitTimeout) and isinstance(error.value, peer.PeerError)


async def test_waits_the_room_closes_under_end_in_one_kind_of_error(server):
    """A bot catches ``peer.PeerError`` alone: a wait cut short by the room closing is one
    (``peer.RoomClosed``, also a ConnectionError), and so is asking to record nobody's media."""
    async with join("closing", server, "alone") as room:
        waits = [asyncio.ensure_future(room.wait_for(peer.FileReceived, timeout=30)),
                 asyncio.ensure_future(room.wait_for_frames(5, timeout=30))]
        await asyncio.sleep(0.2)
        with pytest.raises(peer.NothingToRecord) as refused:
            room.record(peer.Member("nobody", "nobody"), "never.mp4")
        assert isinstance(refused.value, ValueError) and isinstance(refused.value, peer.PeerError)
    for wait in waits:
        with pytest.raises(peer.RoomClosed) as error:
            await wait
        assert isinstance(error.value, ConnectionError) and isinstance(error.value, peer.PeerError)


# JSON messages

async def test_send_json_reaches_peers_and_refuses_what_they_would_drop(server):
    """``send_json`` raises ValueError for what the other side would drop (not JSON, over
    64 KiB), whether or not anyone is connected yet; a good value arrives as a DataMessage."""
    refused = [float("nan"), float("-inf"), {"big": "x" * 70_000}]
    async with join("json", server, "alice") as alice:
        for value in refused:
            with pytest.raises(ValueError):
                alice.send_json(value)
        async with join("json", server, "bob") as bob:
            await until(lambda: alice.send_json({"hello": [1, 2.5, None]}) == 1, 15, "bob's control channel open")
            message = await bob.wait_for(peer.DataMessage)
            assert message.value == {"hello": [1, 2.5, None]} and message.sender.name == "alice"
            for value in refused:
                with pytest.raises(ValueError):
                    alice.send_json(value)


async def test_waiting_for_frames_that_do_not_come_says_how_many_came(server):
    async with join("silent", server, "sender", video=peer.FrameSource(fps=15, size=(320, 240))) as sender, \
            join("silent", server, "receiver") as receiver:
        member = await receiver.wait_for_peer()
        await receiver.wait_for_frames(1, member)
        with pytest.raises(TimeoutError, match=r"^timed out waiting for 10000 video frames from sender \(got \d+\)$"):
            await receiver.wait_for_frames(10000, member, timeout=0.5)
        assert sender.connected


# Frames

BITS = 10
"""A counter shown as 10 black or white columns, which survives VP8."""


def counter_picture(number: int) -> np.ndarray:
    picture = np.zeros((240, 320, 3), np.uint8)
    for bit in range(BITS):
        if number >> bit & 1:
            picture[:, bit * 32:(bit + 1) * 32] = 255
    return picture


def read_counter(picture: np.ndarray) -> int:
    brightness = picture.mean(axis=2)
    return sum(1 << bit for bit in range(BITS) if brightness[20:220, bit * 32 + 8:(bit + 1) * 32 - 8].mean() > 128)


async def test_latest_frames_never_lag_and_every_frame_comes_in_order(server):
    assert read_counter(counter_picture(677)) == 677
    source = peer.FrameSource(fps=15, size=(320, 240))
    pushed: dict[int, float] = {}

    async def count_up() -> None:  # a new number every 0.2 s, each shown in about 3 frames
        for number in range(1, 1 << BITS):
            source.push(counter_picture(number))
            pushed[number] = time.monotonic()
            await asyncio.sleep(0.2)

    async def slow(room, member, latest: bool) -> list[tuple[int, float]]:
        """A consumer that takes 0.5 s per frame: (number, how long it had been superseded)."""
        seen = []
        async for picture in room.frames(member, latest=latest):
            number, now = read_counter(picture), time.monotonic()
            seen.append((number, now - pushed[number + 1] if number + 1 in pushed else 0.0))
            if len(seen) == 8:
                return seen
            await asyncio.sleep(0.5)

    async with join("lag", server, "sender", video=source) as sender, join("lag", server, "receiver") as receiver:
        counting = asyncio.ensure_future(count_up())
        member = await receiver.wait_for_peer()
        await receiver.wait_for_frames(5, member)
        newest, every = await asyncio.gather(slow(receiver, member, True), slow(receiver, member, False))
        counting.cancel()
        assert sender.connected

    # latest=True: each frame is the newest; numbers jump by what was sent during the 0.5 s
    assert all(behind < 0.3 for _, behind in newest), newest
    steps = [b[0] - a[0] for a, b in zip(newest, newest[1:], strict=False)]
    assert all(2 <= step <= 4 for step in steps), newest
    # latest=False: every frame, in order (each number in about 3 frames), so it falls behind
    steps = [b[0] - a[0] for a, b in zip(every, every[1:], strict=False)]
    assert all(step in (0, 1) for step in steps) and sum(steps) >= 1, every
    assert every[-1][1] > 1.5, f"8 frames at 0.5 s each should be far behind: {every}"


async def test_remote_audio_arrives_as_numpy_arrays(server):
    async with join("audio", server, "tone", audio="sine") as tone, join("audio", server, "ear") as ear:
        member = await ear.wait_for_peer()
        chunks = []
        async for samples in ear.frames(member, kind="audio", latest=False):
            chunks.append(samples)
            if len(chunks) == 60:
                break
        assert tone.connected
    assert all(isinstance(c, np.ndarray) and c.dtype == np.int16 for c in chunks)
    assert chunks[0].shape == (1, 1920), "20 ms of 48 kHz stereo, interleaved"
    left = np.concatenate([c.reshape(-1)[::2] for c in chunks[20:]]).astype(float)
    spectrum = np.abs(np.fft.rfft(left * np.hanning(len(left))))
    peak = np.fft.rfftfreq(len(left), 1 / 48000)[spectrum.argmax()]
    assert abs(peak - 440) < 5, f"the loudest frequency is {peak:.0f} Hz, not the 440 Hz sine"
    assert np.abs(left).max() > 1000


# Recording

async def test_a_bot_records_what_a_peer_sends(server, tmp_path):
    async with join("record", server, "alice", video="testsrc", audio="sine", **SMALL) as alice, \
            join("record", server, "bot") as bot:
        member = await bot.wait_for_peer()
        await alice.wait_for_peer()
        recorder = bot.record(member, tmp_path / "alice.mp4")
        assert isinstance(recorder, peer.Recorder)
        await asyncio.sleep(2)
        await recorder.stop()
        await recorder.stop()  # twice is fine
        bot.record(member, tmp_path / "unfinished.webm")
        await asyncio.sleep(1)
    # leaving the room finished the second recording
    for path, seconds in ((tmp_path / "alice.mp4", 2), (tmp_path / "unfinished.webm", 1)):
        frames = recorded_frames(str(path))
        assert len(frames) >= seconds * 15 * 0.6, f"{path.name}: {len(frames)} frames"
        assert all(likeness_to_testsrc(picture, "320x240") > 0.95 for picture in frames[2::10]), path.name
        with av.open(str(path)) as container:
            audio = sum(frame.samples for frame in container.decode(audio=0))
        assert audio > seconds * 48000 * 0.5, f"{path.name}: {audio} audio samples"
    assert recorder.frames_written == len(recorded_frames(str(tmp_path / "alice.mp4")))


# The signaling server going and coming back

async def test_a_bot_hears_of_a_signaling_outage_and_stays_in_its_call(tmp_path):
    port = free_port()
    first = SignalingServer()
    await first.start(LOCAL, port)
    url = f"http://{LOCAL}:{port}"
    async with peer.join("outage", server=url, name="a", ice_hosts=[LOCAL]) as a, \
            peer.join("outage", server=url, name="b", ice_hosts=[LOCAL]) as b:
        await a.wait_for_peer()
        await first.stop()  # a clean goodbye to every client, as on Ctrl-C
        await a.wait_for(peer.SignalingLost, timeout=5)
        again = SignalingServer()
        await again.start(LOCAL, port)
        try:
            await asyncio.gather(a.wait_for(peer.Rejoined, timeout=15), b.wait_for(peer.Rejoined, timeout=15))
            a.send_text("still here")
            await b.wait_for_message(lambda text: text == "still here", timeout=5)
            for room in (a, b):
                with pytest.raises(TimeoutError):  # in all that happened, no call ended
                    await room.wait_for(peer.CallEnded, timeout=0.2)
        finally:
            await again.stop()


# Cancellation leaves nothing behind

def open_sockets() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return count


def open_http_sessions() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, aiohttp.ClientSession) and not o.closed)


class Leftovers:
    """What runs now, to compare with after the bot is gone."""

    def __init__(self) -> None:
        self.tasks = asyncio.all_tasks()
        self.threads = set(threading.enumerate())
        self.sockets = open_sockets()
        self.sessions = open_http_sessions()

    def now(self) -> list[str]:
        tasks = [t for t in asyncio.all_tasks() - self.tasks if t is not asyncio.current_task() and not t.done()]
        threads = [t for t in set(threading.enumerate()) - self.threads
                   if t.is_alive() and not t.name.startswith("asyncio_")]  # the loop's default executor
        found = [f"task {t.get_coro()!r}" for t in tasks] + [f"thread {t.name}" for t in threads]
        if open_sockets() > self.sockets:
            found.append(f"{open_sockets() - self.sockets} sockets")
        return found

    async def none_within(self, grace: float = 3.0) -> None:
        deadline = time.monotonic() + grace
        while (found := self.now()) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert not found, f"left behind: {found}"
        assert open_http_sessions() <= self.sessions, "an aiohttp session left open"


async def cancelled(bot: asyncio.Task) -> None:
    """The bot ends, cancelled, soon after ``cancel()`` (it swallowed nothing)."""
    done, _ = await asyncio.wait([bot], timeout=15)
    assert done, "the bot runs on after cancel(): the cancellation was lost"
    assert bot.cancelled(), f"the bot ended otherwise: {bot.exception()!r}"


async def a_bot(url: str, reached: dict, video="testsrc", send: Optional[Path] = None) -> None:
    """A bot as people write them: media both ways, a frames consumer it never cancels
    (the room's iterators end with the room), events, maybe a file."""
    async with peer.join("cancel", server=url, name="bot", video=video, audio="sine", ice_hosts=[LOCAL],
                         **SMALL) as room:
        reached["joined"].set()

        async def watch() -> None:
            async for _ in room.frames(latest=True):
                pass
        asyncio.ensure_future(watch())
        partner = await room.wait_for_peer()
        await room.wait_for_frames(10, partner)
        reached["call"].set()
        if send is not None:
            await room.send_file(send, to=partner,
                                 progress=lambda member, done, size: done > MB and reached["sending"].set())
        async for _ in room.events():
            pass


@pytest.mark.parametrize("point, video", [
    *((delay, "testsrc") for delay in (0.0, 0.02, 0.04, 0.06, 0.08, 0.15)),  # connecting, joining, negotiating
    ("joined", "testsrc"), ("call", "testsrc"), ("sending", "testsrc"),
    (0.06, "FrameSource"), ("call", "FrameSource"),
])
async def test_a_bot_cancelled_at_any_point_leaves_nothing_behind(server, processes, tmp_path, point, video):
    partner = processes.peer("--room", "cancel", "--server", server.url, "--video", "testsrc", "--video-size",
                             "320x240", "--fps", "15", "--ice-host", LOCAL, "--no-window",
                             "--downloads", str(tmp_path / "partner-downloads"), name="partner")
    await asyncio.to_thread(partner.expect, "waiting for someone to join room cancel")
    send = random_file(tmp_path / "big.bin", 40 * MB) if point == "sending" else None
    before = Leftovers()
    reached = {"joined": asyncio.Event(), "call": asyncio.Event(), "sending": asyncio.Event()}
    source = peer.FrameSource(fps=15, size=(320, 240)) if video == "FrameSource" else video
    bot = asyncio.ensure_future(a_bot(server.url, reached, source, send))
    if isinstance(point, float):
        await asyncio.sleep(point)  # wherever it is by then
    else:
        await asyncio.wait_for(reached[point].wait(), 20)
    bot.cancel()
    await cancelled(bot)
    await before.none_within()
    if point == "call":
        await asyncio.to_thread(partner.expect, "connected to bot", 5)


async def test_a_bot_cancelled_while_connecting_leaves_nothing_behind(tmp_path):
    with socket.socket() as silent:  # accepts connections and never answers
        silent.bind((LOCAL, 0))
        silent.listen(8)
        before = Leftovers()
        reached = {"joined": asyncio.Event(), "call": asyncio.Event(), "sending": asyncio.Event()}
        bot = asyncio.ensure_future(a_bot(f"http://{LOCAL}:{silent.getsockname()[1]}", reached))
        await asyncio.sleep(0.5)
        assert not bot.done() and not reached["joined"].is_set()
        bot.cancel()
        await cancelled(bot)
        await before.none_within()


# ICE settings per room

async def test_host_addresses_are_each_tasks_own():
    """aioice asks one function of its module for host addresses; ours answers per task."""
    import aioice.ice
    from peer.ice import use_host_addresses

    async def addresses(chosen):
        use_host_addresses(chosen)
        await asyncio.sleep(0.01)  # the other task sets its own meanwhile
        return aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True)

    first, second = await asyncio.gather(addresses([LOCAL]), addresses(["203.0.113.7", "::1"]))
    assert first == [LOCAL] and second == ["203.0.113.7", "::1"]


async def test_two_rooms_in_one_process_keep_their_own_host_addresses(server, processes):
    """Room A gathers on 127.0.0.1; room B, joined after it in the same process, on an address
    this machine does not have (nothing is sent: binding to it fails). When a peer then calls
    A, A still answers from 127.0.0.1: the last room to connect no longer decides for all."""
    async with join("room-a", server, "a"), \
               peer.join("room-b", server=server.url, name="b", ice_hosts=["203.0.113.7"]):
        caller = processes.peer("--room", "room-a", "--server", server.url, "--video", "testsrc",
                                "--video-size", "320x240", "--ice-host", LOCAL, "--no-window", name="caller")
        await asyncio.to_thread(caller.expect, r"connected to a; verification code", 20)


async def test_join_takes_ice_settings_as_one_object(server):
    """``ice=peer.IceSettings(...)`` is what ``ice_hosts`` and the rest build: the offer a
    member of the room receives lists host candidates on the addresses chosen, and no other."""
    from test_signaling_server import Client

    async with Client(server.url) as listener:
        await listener.join("ice-object", "listener")
        async with peer.join("ice-object", server=server.url, name="bot", ice=peer.IceSettings(host_addresses=(LOCAL,))):
            offer = await listener.expect("message", lambda message: message.get("type") == "offer")
    hosts = re.findall(r"a=candidate:\S+ \d+ udp \d+ (\S+) \d+ typ host", offer["sdp"])
    assert hosts and set(hosts) == {LOCAL}, offer["sdp"]


def test_join_refuses_settings_given_twice():
    with pytest.raises(ValueError, match="not both"):
        peer.join("twice", ice=peer.IceSettings(), ice_hosts=[LOCAL])
    with pytest.raises(ValueError, match="not both"):
        peer.join("twice", media=peer.LocalMedia(), video="testsrc")


# Media opened before joining

async def test_media_given_outlives_a_join_that_fails_and_joins_elsewhere(server):
    """The CLI opens its camera once, before its window, tries the default server, and joins
    one it hosts when nothing answers: the sources stay open after the failed join, and the
    room that takes them sends them (and stops them when it closes)."""
    media = await peer.LocalMedia.open("testsrc", size="320x240", fps=15)
    try:
        with pytest.raises(peer.SignalingUnreachable):
            async with peer.join("given", server=f"http://{LOCAL}:{free_port()}", media=media):
                pass
        async with peer.join("given", server=server.url, name="sender", media=media, ice_hosts=[LOCAL]) as sender, \
                   join("given", server, "watcher") as watcher:
            assert sender.name == watcher.name == "given"
            await watcher.wait_for_frames(10, timeout=20)
        assert media.video is not None and media.video.readyState == "ended"
    finally:
        media.stop()
