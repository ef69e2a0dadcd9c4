"""Call statistics as people and bots meet them: ``room.stats()``, ``--stats FILE``, the status
line, and the window's overlay toggled with ``s``."""

import cv2  # noqa: F401  -- before av

import asyncio
import contextlib
import datetime
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
from aiortc.rtp import RtcpReceiverInfo, RtcpRrPacket, RtpPacket, is_rtcp

import peer
from conftest import LOCAL, ROOT, Server, child_env, require
from media_check import likeness_to_testsrc
from test_api import until
from test_attack_small import HOSTILE_NAME, HOSTILE_NAME_SHOWN, RAW_CONTROL, stamping_server  # noqa: F401 -- a fixture
from test_peer_window import screenshot, window_geometry


def join(room: str, server, name: str, **options):
    return peer.join(room, server=server.url, name=name, ice_hosts=[LOCAL], **options)


async def test_room_stats_give_each_calls_video_rates_and_path(server):
    async with join("stats", server, "alice", video="testsrc") as alice, \
            join("stats", server, "bob", video="testsrc") as bob:
        await alice.wait_for_peer()
        await bob.wait_for_peer()
        await alice.wait_for_frames(30)
        first = await alice.stats()
        again = await alice.stats()  # within the second: the same reading, not a new one
        assert again == first
        (call,) = await bob.stats()  # bob's first reading: the rates over a second of it
        assert call.member.name == "alice"
        assert isinstance(call, peer.CallStats)
        assert call.resolution_in == (640, 480) and call.resolution_out == (640, 480)
        assert call.fps_in is not None and call.fps_in > 10
        assert call.fps_out is not None and call.fps_out > 10
        assert call.bitrate_in is not None and call.bitrate_in > 10_000
        assert call.bitrate_out is not None and call.bitrate_out > 10_000
        assert call.codec == "VP8"
        assert call.path == "direct"
        assert call.loss_in is not None and 0 <= call.loss_in <= 1
        assert abs(call.time - time.time()) < 5
        # The round trip comes from the other side's receiver reports, about once a second.
        deadline = time.monotonic() + 10
        while (rtt := (await bob.stats())[0].rtt_ms) is None and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert rtt is not None and 0 <= rtt < 1000
        line = json.loads(json.dumps(call.as_dict()))
        assert line["member"] == "alice" and line["resolution_in"] == "640x480" and line["path"] == "direct"


async def test_a_peer_sending_nothing_has_no_outgoing_video_figures(server):
    async with join("one-way", server, "alice", video="testsrc") as alice, join("one-way", server, "bob") as bob:
        await bob.wait_for_peer()
        await alice.wait_for_peer()
        await bob.wait_for_frames(10)
        (call,) = await bob.stats()
        assert call.resolution_in == (640, 480) and call.fps_in is not None and call.fps_in > 10
        assert call.resolution_out is None and call.fps_out is None
        (theirs,) = await alice.stats()
        assert theirs.resolution_in is None and theirs.fps_in is None
        assert theirs.fps_out is not None and theirs.fps_out > 10



def test_stats_file_has_a_json_line_a_second_per_call_and_the_status_line_is_printed_unless_quiet(
        server, processes, tmp_path):
    out = tmp_path / "out.jsonl"
    flags = ["--room", "cli", "--server", server.url, "--no-window", "--video", "testsrc", "--video-size", "320x240",
             "--fps", "15", "--ice-host", LOCAL]
    alice = processes.peer(*flags, "--stats", str(out), "--quiet", name="alice")
    alice.expect("joined room cli")
    bob_name = 'bob "the\\ón"'  # quotes, a backslash, a letter beyond ASCII: JSON escapes them
    bob = processes.peer(*flags, name=bob_name)
    bob.expect(r"status: 1 connected \| alice \d+/\d+ fps in/out, rtt .+, direct")

    def lines() -> list[str]:
        return out.read_text().splitlines() if out.exists() else []

    # Six readings of a connected call: any five seconds in a row include a status line's turn.
    deadline = time.monotonic() + 15
    while len(lines()) < 6:
        assert time.monotonic() < deadline, f"not 6 lines of statistics in 15 s: {lines()}"
        time.sleep(0.2)
    alice.interrupt()
    assert alice.wait() == 0
    assert "status:" not in alice.output, "--quiet printed a status line"

    assert '"member": "bob \\"the\\\\\\u00f3n\\""' in out.read_text()
    records = [json.loads(line) for line in lines()]
    assert {(r["member"], r["member_id"]) for r in records} == {(bob_name, records[0]["member_id"])}
    for record in records:
        assert record.keys() >= {"time", "member", "member_id", "path", "codec", "resolution_in", "resolution_out",
                                 "fps_in", "fps_out", "bitrate_in", "bitrate_out", "rtt_ms", "loss_in", "loss_out"}
        assert record["path"] == "direct" and record["codec"] == "VP8"
        assert record["resolution_in"] == record["resolution_out"] == "320x240"
        assert record["fps_in"] > 0 and record["fps_out"] > 0  # a busy machine may send fewer than 15 now and then
        assert record["bitrate_in"] > 0 and record["bitrate_out"] > 0
    assert sorted(r["fps_in"] for r in records)[len(records) // 2] > 7
    times = [datetime.datetime.fromisoformat(r["time"].replace("Z", "+00:00")).timestamp() for r in records]
    gaps = [later - earlier for earlier, later in zip(times, times[1:])]
    assert all(gap >= 0.99 for gap in gaps), f"more than a line a second: {gaps}"


def test_a_stats_path_that_cannot_be_written_is_said_at_the_start(tmp_path):
    for path, reason in ((tmp_path / "no" / "such" / "dir.jsonl", "No such file or directory"),
                         (tmp_path, "Is a directory")):
        finished = subprocess.run([sys.executable, "-m", "peer", "--room", "r", "--no-window", "--video", "none",
                                   "--server", "http://127.0.0.1:9", "--stats", str(path)],
                                  capture_output=True, text=True, timeout=30, env=child_env(), cwd=ROOT)
        assert finished.returncode == 2
        assert f"--stats {path}: {reason}" in finished.stderr.splitlines()[-1]
        assert "Traceback" not in finished.stderr


def test_s_shows_the_statistics_over_the_tile_and_hides_them_again(server, processes, xvfb):
    xdotool = require("xdotool")
    env = child_env(DISPLAY=xvfb)
    flags = ["--room", "overlay", "--server", server.url, "--video", "testsrc", "--ice-host", LOCAL]
    alice = processes.peer(*flags, "--video", "none", name="alice", env=env)  # no preview over the tile
    alice.expect("waiting for someone")
    processes.peer(*flags, "--no-window", name="bob")
    alice.expect("connected to bob")
    box = window_geometry(xvfb, r"room overlay - bob")
    deadline = time.monotonic() + 10
    while likeness_to_testsrc(screenshot(xvfb, box), top=0.7) < 0.95:
        assert time.monotonic() < deadline, "bob's picture is not shown"
        time.sleep(0.3)

    def overlay_region() -> np.ndarray:
        """Under the name, where the second and third lines of figures go (the first one says
        "measuring" until there are figures): a part of testsrc that does not move (its cyan bar)."""
        return screenshot(xvfb, box)[62:100, 90:160].astype(int)

    def changed(before: np.ndarray) -> float:
        return float((np.abs(overlay_region() - before).max(axis=2) > 60).mean())

    window_id = subprocess.run([xdotool, "search", "--name", "room overlay"], env=env,
                               capture_output=True, text=True).stdout.split()[0]

    def press_s() -> None:
        subprocess.run([xdotool, "windowfocus", "--sync", window_id], env=env, check=True)
        subprocess.run([xdotool, "key", "s"], env=env, check=True)

    plain = overlay_region()
    press_s()
    deadline = time.monotonic() + 10
    while (share := changed(plain)) < 0.5:
        assert time.monotonic() < deadline, f"no statistics drawn after s ({share:.0%} of their place changed)"
        time.sleep(0.2)
    press_s()
    deadline = time.monotonic() + 5
    while (share := changed(plain)) > 0.05:
        assert time.monotonic() < deadline, f"the statistics stay after a second s ({share:.0%} still changed)"
        time.sleep(0.2)
    assert "Traceback" not in alice.output


def test_the_overlay_is_drawn_only_while_on_and_goes_with_its_tile():
    """What the window process draws from the lines the parent sends (no X server needed)."""
    from peer.media.window_process import State, compose

    state = State()
    picture = np.full((480, 640, 3), 128, np.uint8)
    state.apply({"op": "frame", "id": "bob", "name": "bob", "w": 640, "h": 480, "size": picture.nbytes},
                picture.tobytes())
    plain, _ = compose(state)
    state.apply({"op": "stats", "id": "bob", "lines": ["in  640x480 30 fps 500 kbit/s", "VP8, direct"]}, b"")
    assert (compose(state)[0] == plain).all(), "statistics drawn with the overlay off"
    state.apply({"op": "overlay", "on": True}, b"")
    shown, _ = compose(state)
    drawn = (shown != plain).any(axis=2)
    second_line = np.s_[62:80, 10:90]
    assert drawn[40:58, 10:190].mean() > 0.5 and drawn[second_line].mean() > 0.5, "not two lines under the name"
    assert not drawn[100:].any(), "drawn elsewhere"
    state.apply({"op": "remove", "id": "bob"}, b"")
    state.apply({"op": "frame", "id": "bob", "name": "bob", "w": 640, "h": 480, "size": picture.nbytes},
                picture.tobytes())
    again = (compose(state)[0] != plain).any(axis=2)
    assert again[40:58, 10:190].mean() > 0.5 and not again[second_line].any(), \
        "a tile that came back shows the figures of its last call, not one 'measuring' line"


def test_a_stats_file_that_fills_up_is_said_once_and_the_peer_leaves_cleanly(server, processes):
    """/dev/full: every write fails as on a full disk. The failure is said once, the call goes
    on (chat still arrives), and leaving neither retries the lost lines nor shows a traceback."""
    flags = ["--room", "full", "--server", server.url, "--no-window", "--video", "testsrc", "--video-size", "160x120",
             "--fps", "5", "--audio", "none", "--ice-host", LOCAL]
    alice = processes.peer(*flags, "--stats", "/dev/full", "--quiet", name="alice")
    alice.expect("joined room full")
    bob = processes.peer(*flags, "--quiet", name="bob")
    alice.expect("stopped writing statistics to /dev/full: No space left on device")
    bob.send("still here")
    alice.expect(r"\[bob\] still here")
    alice.interrupt()
    assert alice.wait() == 0, alice.output
    assert alice.output.count("stopped writing statistics") == 1
    assert "Traceback" not in alice.output


def test_a_stats_pipe_nobody_reads_neither_hangs_the_start_nor_blocks_the_call(server, processes, tmp_path):
    """A FIFO: with no reader, opening it for writing would wait for one forever, before
    joining and without a word; with a reader that stops reading, a write into the full pipe
    would stop the event loop, and with it the call."""
    fifo = tmp_path / "stats.fifo"
    os.mkfifo(fifo)
    flags = ["--room", "fifo", "--server", server.url, "--no-window", "--video", "testsrc", "--video-size",
             "160x120", "--fps", "5", "--audio", "none", "--ice-host", LOCAL]
    unread = subprocess.run([sys.executable, "-m", "peer", *flags, "--stats", str(fifo)],
                            capture_output=True, text=True, timeout=30, env=child_env(), cwd=ROOT)
    assert unread.returncode == 2 and f"--stats {fifo}: " in unread.stderr.splitlines()[-1], unread.stderr
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # holds the pipe open and never reads
    filler = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    try:
        with contextlib.suppress(BlockingIOError):
            while True:
                os.write(filler, b"x" * 4096)  # the pipe full before the peer writes a line
        alice = processes.peer(*flags, "--stats", str(fifo), "--quiet", name="alice")
        alice.expect("joined room fifo")
        bob = processes.peer(*flags, "--quiet", name="bob")
        alice.expect("connected to bob")
        alice.expect("stopped writing statistics to")
        bob.send("still here")
        alice.expect(r"\[bob\] still here")
        alice.interrupt()
        assert alice.wait() == 0, alice.output
        assert "Traceback" not in alice.output
    finally:
        os.close(filler)
        os.close(reader)


async def test_forged_receiver_reports_and_rtp_from_a_stranger_ssrc_give_no_impossible_figures():
    """mallory, through raw aiortc on her side of the call, sends the victim receiver reports
    claiming a round trip of minus 18 hours (a delay since the victim's report longer than the
    time since it), everything lost and absurd counts, then video packets of a stream the victim
    never heard of whose sequence numbers leap. The victim's figures for mallory stay possible
    (a round trip is never 0 or below; a loss is a share, 0 to 1, or unknown), and its call with
    bob reads as before."""
    server = Server("--room-size", "3")
    media = {"video": "testsrc", "video_size": "160x120", "fps": 10}
    try:
        async with join("forged", server, "victim", **media) as victim, join("forged", server, "bob", **media) as bob, \
                join("forged", server, "mallory", **media) as mallory:
            await until(lambda: len(victim.connected) == 2, 20, "the victim connected to bob and mallory")
            await mallory.wait_for_peer()
            await bob.wait_for_peer()
            await victim.wait_for_frames(10, mallory.me)
            await victim.wait_for_frames(10, bob.me)
            pc = next(call.pc for call in mallory.session.calls.values() if call.remote.id == victim.me.id)
            video = next(t for t in pc.getTransceivers() if t.kind == "video")
            transport = video.sender.transport
            reports = video.receiver._RTCRtpReceiver__lsr  # the victim's sender reports mallory has had
            await until(lambda: reports, 10, "a sender report from the victim")
            await victim.stats()  # a reading before the forgeries, for the rates after them
            for _ in range(3):
                for ssrc, lsr in list(reports.items()):
                    forged = RtcpReceiverInfo(ssrc=ssrc, fraction_lost=255, packets_lost=-(2 ** 23), highest_sequence=0,
                                              jitter=2 ** 32 - 1, lsr=lsr, dlsr=2 ** 32 - 1)
                    await transport._send_rtp(bytes(RtcpRrPacket(ssrc=1, reports=[forged])))
                await asyncio.sleep(0.1)
            for sequence in (0, 30000, 60000, 65000):
                packet = RtpPacket(payload_type=video._codecs[0].payloadType, sequence_number=sequence, ssrc=0xDEADBEEF,
                                   payload=bytes(10))
                await transport._send_rtp(packet.serialize())
            for _ in range(3):
                await asyncio.sleep(1)
                figures = {call.member.name: call for call in await victim.stats()}
                attacked = figures["mallory"]
                assert attacked.rtt_ms is None or attacked.rtt_ms > 0, attacked
                assert attacked.loss_in is None or 0 <= attacked.loss_in <= 1, attacked
                assert attacked.loss_out is not None and 0 <= attacked.loss_out <= 1, attacked
                assert figures["bob"].fps_in and figures["bob"].loss_in is not None and 0 <= figures["bob"].loss_in <= 1
                assert figures["bob"].rtt_ms is None or figures["bob"].rtt_ms > 0
            count = await victim.wait_for_frames(1, mallory.me)
            await victim.wait_for_frames(count + 10, mallory.me)  # the attacked call goes on
    finally:
        server.stop()


async def test_loss_in_counts_the_video_stream_not_its_retransmissions(server):
    """bob's network loses every fifth packet of his video: alice asks for them again, and
    he sends them once more on a stream of their own (RTX). aiortc's statistics give one
    receiver the figures of whichever of its streams came last, here the retransmissions,
    which lose nothing; the loss alice reads is of the video stream, about a fifth."""
    media = {"video": "testsrc", "video_size": "320x240", "fps": 15}
    async with join("lossy", server, "alice", **media) as alice, join("lossy", server, "bob", **media) as bob:
        await alice.wait_for_peer()
        await bob.wait_for_peer()
        pc = next(iter(bob.session.calls.values())).pc
        video = next(t for t in pc.getTransceivers() if t.kind == "video")
        payload_type = video._codecs[0].payloadType
        transport = video.sender.transport
        send = transport._send_rtp
        sent = 0

        async def lossy(data: bytes) -> None:
            nonlocal sent
            if not is_rtcp(data) and data[1] & 0x7F == payload_type:
                sent += 1
                if sent % 5 == 0:
                    return
            await send(data)

        transport._send_rtp = lossy
        await alice.wait_for_frames(20)
        await alice.stats()
        await asyncio.sleep(3)
        (call,) = await alice.stats()
        assert call.loss_in is not None and 0.1 < call.loss_in < 0.3, call


async def test_a_hostile_name_reaches_the_status_line_escaped_and_the_stats_file_as_json(stamping_server, processes,
                                                                                          tmp_path):
    """A server that stamps any name lets mallory call herself escape sequences and a newline:
    the victim's status line shows them escaped, on one line; its --stats file holds them as
    JSON escapes, each record on its own line."""
    out = tmp_path / "stats.jsonl"
    victim = processes.peer("--room", "names", "--server", stamping_server.url, "--no-window", "--video", "none",
                            "--audio", "none", "--ice-host", LOCAL, "--stats", str(out), name="victim")
    await asyncio.to_thread(victim.expect, "waiting for someone to join room names")
    async with peer.join("names", name=HOSTILE_NAME, server=stamping_server.url, ice_hosts=[LOCAL], video="testsrc",
                         video_size="160x120", fps=10):
        await asyncio.to_thread(victim.expect, re.escape(f"status: 1 connected | {HOSTILE_NAME_SHOWN} ") + r"\d+/- fps")
    assert not RAW_CONTROL.search(victim.output), repr(RAW_CONTROL.search(victim.output))
    text = out.read_text()
    assert not RAW_CONTROL.search(text.replace("\n", "")), repr(RAW_CONTROL.search(text))
    assert {json.loads(line)["member"] for line in text.splitlines()} == {HOSTILE_NAME}


async def test_connections_renewed_again_and_again_while_read_cost_no_error_and_the_lines_go_on(server, processes,
                                                                                                 tmp_path):
    """mallory offers anew every few tenths of a second, so the victim throws its connection
    away for a fresh one again and again while its CLI reads them every second for --stats
    and the status line. No reading fails aloud; once she stops, the lines go on."""
    from peer.call import _START_OFFER

    out = tmp_path / "stats.jsonl"
    victim = processes.peer("--room", "churn", "--server", server.url, "--no-window", "--video", "testsrc",
                            "--video-size", "160x120", "--fps", "10", "--audio", "none", "--ice-host", LOCAL,
                            "--stats", str(out), name="victim")
    await asyncio.to_thread(victim.expect, "waiting for someone to join room churn")
    async with join("churn", server, "mallory", video="testsrc", video_size="160x120", fps=10) as mallory:
        await mallory.wait_for_peer()
        call = next(iter(mallory.session.calls.values()))
        for _ in range(8):
            call._inbox.put(_START_OFFER, ours=True)  # a fresh connection, and an offer on it
            await asyncio.sleep(0.4)
        await mallory.wait_for_peer()
        written = len(out.read_text().splitlines()) if out.exists() else 0
        deadline = time.monotonic() + 15
        while not [line for line in out.read_text().splitlines()[written:] if json.loads(line)["fps_in"]]:
            assert time.monotonic() < deadline, f"no figures since the renewals: {out.read_text()}"
            await asyncio.sleep(0.2)
        await asyncio.to_thread(victim.expect, r"status: 1 connected \| mallory \d+/\d+ fps", 15)
    assert victim.output.count("connected to mallory;") >= 4, victim.output  # renewed, and read meanwhile
    assert "Traceback" not in victim.output and "could not show the call statistics" not in victim.output, \
        victim.output
