"""Benchmarks: our peer beside bare aiortc, measured in one run on this machine.

    python bench/bench.py [--rounds 5]

Each scenario runs ``rounds`` times for our stack and for a bare aiortc baseline (two
RTCPeerConnections exchanging SDP directly, no signaling), alternating so that machine
noise hits both alike; the table shows medians and the ratio ours / baseline. Everything
runs in this one process on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Awaitable, Callable

import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, VideoStreamTrack
from aiortc.contrib.media import MediaPlayer

import peer
from peer.ice import use_host_addresses
from signaling import SignalingServer

LOCAL = "127.0.0.1"
BITS = 8
BLOCK = 40


def stamp(picture: np.ndarray, number: int) -> None:
    """Write ``number`` into the picture as 8 black/white blocks that survive VP8."""
    for bit in range(BITS):
        value = 255 if number >> bit & 1 else 0
        picture[0:BLOCK, bit * BLOCK:(bit + 1) * BLOCK] = value


def read_stamp(picture: np.ndarray) -> int:
    number = 0
    for bit in range(BITS):
        if picture[BLOCK // 4:3 * BLOCK // 4, bit * BLOCK + BLOCK // 4:(bit + 1) * BLOCK - BLOCK // 4].mean() > 127:
            number |= 1 << bit
    return number


class StampedFrames(VideoStreamTrack):
    """Baseline sender: 640x480 frames at 30 fps, each stamped with its number and send time."""

    def __init__(self, sent: dict[int, float]) -> None:
        super().__init__()
        self.sent = sent
        self.count = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        picture = np.full((480, 640, 3), 90, np.uint8)
        number = self.count % 256
        stamp(picture, number)
        self.count += 1
        self.sent[number] = time.perf_counter()
        frame = av.VideoFrame.from_ndarray(picture, format="bgr24")
        frame.pts, frame.time_base = pts, time_base
        return frame


# Bare aiortc ------------------------------------------------------------------------

async def bare_pair(video: object = None) -> tuple[RTCPeerConnection, RTCPeerConnection, asyncio.Future]:
    """Two connected pcs; the future resolves to the receiver's first remote video track."""
    a, b = (RTCPeerConnection(RTCConfiguration(iceServers=[])) for _ in range(2))
    track = asyncio.get_running_loop().create_future()
    b.on("track", lambda t: t.kind == "video" and not track.done() and track.set_result(t))
    if video is not None:
        a.addTrack(video)
    return a, b, track


async def bare_negotiate(a: RTCPeerConnection, b: RTCPeerConnection) -> None:
    await a.setLocalDescription(await a.createOffer())
    await b.setRemoteDescription(a.localDescription)
    await b.setLocalDescription(await b.createAnswer())
    await a.setRemoteDescription(b.localDescription)


async def opened(channel) -> None:
    while channel.readyState != "open":
        await asyncio.sleep(0.005)


async def baseline_first_frame() -> float:
    player = MediaPlayer("testsrc=size=640x480:rate=30", format="lavfi")
    a, b, track = await bare_pair(player.video)
    start = time.perf_counter()
    await bare_negotiate(a, b)
    await (await track).recv()
    elapsed = time.perf_counter() - start
    player.video.stop()
    await a.close(), await b.close()
    return elapsed


async def baseline_latency(frames: int = 90) -> float:
    sent: dict[int, float] = {}
    a, b, track = await bare_pair(StampedFrames(sent))
    await bare_negotiate(a, b)
    remote = await track
    delays = []
    for _ in range(frames):
        picture = (await remote.recv()).to_ndarray(format="bgr24")
        delays.append(time.perf_counter() - sent[read_stamp(picture)])
    await a.close(), await b.close()
    return statistics.median(delays[15:])


async def baseline_throughput(size: int) -> float:
    chunk = os.urandom(16 * 1024)
    size -= size % len(chunk)
    a, b, _ = await bare_pair()
    channel = a.createDataChannel("bulk")
    received = 0
    done = asyncio.Event()

    def on_datachannel(remote):
        @remote.on("message")
        def on_message(message):
            nonlocal received
            received += len(message)
            if received >= size:
                done.set()

    b.on("datachannel", on_datachannel)
    await bare_negotiate(a, b)
    await opened(channel)
    drained = asyncio.Event()
    channel.bufferedAmountLowThreshold = 256 * 1024
    channel.on("bufferedamountlow", drained.set)
    start = time.perf_counter()
    for _ in range(size // len(chunk)):
        while channel.bufferedAmount > 1024 * 1024:
            drained.clear()
            await drained.wait()
        channel.send(chunk)
    await done.wait()
    elapsed = time.perf_counter() - start
    await a.close(), await b.close()
    return size / elapsed / 1e6


async def baseline_round_trip(rounds: int = 50) -> float:
    a, b, _ = await bare_pair()
    channel = a.createDataChannel("chat")
    b.on("datachannel", lambda remote: remote.on("message", lambda m: remote.send(m)))
    replies: asyncio.Queue = asyncio.Queue()
    channel.on("message", replies.put_nowait)
    await bare_negotiate(a, b)
    await opened(channel)
    times = []
    for i in range(rounds):
        start = time.perf_counter()
        channel.send(f"ping {i}")
        await replies.get()
        times.append(time.perf_counter() - start)
    await a.close(), await b.close()
    return statistics.median(times) * 1000


# Ours -------------------------------------------------------------------------------

async def with_server(work: Callable[[str], Awaitable[float]]) -> float:
    server = SignalingServer()
    port = await server.start(LOCAL, 0)
    try:
        return await work(f"http://{LOCAL}:{port}")
    finally:
        await server.stop()


async def ours_first_frame(url: str) -> float:
    start = time.perf_counter()
    async with peer.join("bench", server=url, name="a", video="testsrc", ice_hosts=[LOCAL]) as a, \
               peer.join("bench", server=url, name="b", video="none", ice_hosts=[LOCAL]) as b:
        await b.wait_for_frames(1)
        elapsed = time.perf_counter() - start
    assert a.me is not None
    return elapsed


async def ours_latency(url: str, frames: int = 90) -> float:
    source = peer.FrameSource(fps=30)
    sent: dict[int, float] = {}
    async with peer.join("bench", server=url, name="a", video=source, ice_hosts=[LOCAL]), \
               peer.join("bench", server=url, name="b", ice_hosts=[LOCAL]) as b:
        other = await b.wait_for_peer()

        async def produce() -> None:
            number = 0
            while True:
                picture = np.full((480, 640, 3), 90, np.uint8)
                stamp(picture, number % 256)
                sent[number % 256] = time.perf_counter()
                source.push(picture)
                number += 1
                await asyncio.sleep(1 / 30)

        producer = asyncio.ensure_future(produce())
        delays = []
        async for picture in b.frames(other, latest=False):
            delays.append(time.perf_counter() - sent[read_stamp(picture)])
            if len(delays) == frames:
                break
        producer.cancel()
    return statistics.median(delays[15:])


async def ours_throughput(url: str, size: int) -> float:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "payload.bin"
        path.write_bytes(os.urandom(size))
        async with peer.join("bench", server=url, name="a", ice_hosts=[LOCAL]) as a, \
                   peer.join("bench", server=url, name="b", ice_hosts=[LOCAL], downloads=Path(folder) / "in") as b:
            await a.wait_for_peer()
            await b.wait_for_peer()
            start = time.perf_counter()
            sha256 = await a.send_file(path)
            elapsed = time.perf_counter() - start
            assert sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    return size / elapsed / 1e6


async def ours_round_trip(url: str, rounds: int = 50) -> float:
    async with peer.join("bench", server=url, name="a", ice_hosts=[LOCAL]) as a, \
               peer.join("bench", server=url, name="b", ice_hosts=[LOCAL]) as b:
        await a.wait_for_peer()
        await b.wait_for_peer()

        async def echo() -> None:
            async for event in b.events(history=False):
                if isinstance(event, peer.ChatMessage):
                    b.send_text(event.text)

        echoer = asyncio.ensure_future(echo())
        times = []
        for i in range(rounds):
            start = time.perf_counter()
            a.send_text(f"ping {i}")
            await a.wait_for_message(lambda text, i=i: text == f"ping {i}")
            times.append(time.perf_counter() - start)
        echoer.cancel()
    return statistics.median(times) * 1000


SCENARIOS = [
    ("join/negotiate to first decoded frame, ms", lambda: with_server(ours_first_frame), baseline_first_frame, 1000),
    ("frame made to frame decoded, 640x480 VP8, ms", lambda: with_server(ours_latency), baseline_latency, 1000),
    ("data channel throughput, 20 MB, MB/s", lambda: with_server(lambda url: ours_throughput(url, 20_000_000)),
     lambda: baseline_throughput(20_000_000), 1),
    ("chat round trip, ms", lambda: with_server(ours_round_trip), baseline_round_trip, 1),
]


async def main(rounds: int) -> None:
    use_host_addresses([LOCAL])
    print(f"{'scenario':48} {'ours':>9} {'bare aiortc':>12} {'ratio':>7}")
    for title, ours, baseline, scale in SCENARIOS:
        ours_values, base_values = [], []
        for _ in range(rounds):
            ours_values.append(await ours() * scale)
            base_values.append(await baseline() * scale)
        mine, theirs = statistics.median(ours_values), statistics.median(base_values)
        print(f"{title:48} {mine:9.1f} {theirs:12.1f} {mine / theirs:7.2f}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    asyncio.run(main(parser.parse_args().rounds))
