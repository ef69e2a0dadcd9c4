"""Call statistics as people and bots meet them: ``room.stats()``, ``--stats FILE``, the status
line, and the window's overlay toggled with ``s``."""

import cv2  # noqa: F401  -- before av

import asyncio
import datetime
import json
import subprocess
import time
from pathlib import Path

import numpy as np

import peer
from conftest import LOCAL, child_env, require
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

