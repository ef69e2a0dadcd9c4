"""A room of four on one machine: the frames a second of every tile, and each peer's CPU.

    python bench/room.py [--rounds 3] [--seconds 10] [--size 640x480] [--quick]

Ours: our signaling server (rooms of four) in this process and four ``python -m peer --video
testsrc --no-window --audio none`` processes, each sending its testsrc to the three others and
showing (receiving and decoding) their three videos: twelve tiles. Each peer writes ``--stats``
lines (one a second per call, ``fps_in`` among them); a tile's figure is the mean of its
``fps_in`` over the measured seconds.

The baseline: bare aiortc done the simplest correct way, four processes, each a ``MediaPlayer``
of lavfi's testsrc (yuv420p, so that aiortc's three encoders of a frame never convert it at once)
relayed by one ``MediaRelay`` to an ``RTCPeerConnection`` per other peer, which encodes it on its
own as aiortc does; SDP passes through this process's pipes; every remote track is read and
counted. A tile's figure is its frames received over the measured seconds.

For both: the peers start, every tile gets frames, WARM_UP seconds pass, then ``--seconds`` are
measured: the fps of each tile (the row gives the lowest and the median of the twelve),
each peer's CPU (user and system time over the seconds, in % of one core) and its CPU per
frame received (ms: its CPU time over the frames its three tiles got; what a frame costs, which
a loaded machine changes less than the fps it lets through). Rounds alternate.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from harness import LOCAL, ROOT, Child, Link, Row  # noqa: E402

sys.path.insert(0, str(ROOT))  # this checkout's signaling server, not an installed one

PEERS = 4
WARM_UP = 2.0
"""Seconds between every tile having frames and the measure: encoders settle on their bitrate."""
QUICK = {"rounds": 1, "seconds": 1.0, "warm_up": 0.5}
START_TIMEOUT = 60.0


class Measure:
    """One round's figures: the fps of each peer's tiles, and each peer's CPU (% of a core)."""

    def __init__(self, tiles: list[list[float]], cpu: list[float]) -> None:
        self.per_peer = tiles
        self.tiles = [fps for peer in tiles for fps in peer]
        self.cpu = cpu

    @property
    def cost(self) -> list[float]:
        """Each peer's CPU per frame it received, in ms: the work a tile takes whatever the
        machine's load lets it show (the figure that moves least on a busy machine)."""
        return [cpu * 10 / sum(tiles) for cpu, tiles in zip(self.cpu, self.per_peer) if sum(tiles)]


# Ours: four CLI processes --------------------------------------------------------------

async def ours(size: str, seconds: float, warm_up: float, round_: int, root: Path = ROOT) -> Measure:
    from signaling import SignalingServer
    from signaling.server import ServerConfig
    server = SignalingServer(ServerConfig(room_size=PEERS))
    port = await server.start(LOCAL, 0)
    with tempfile.TemporaryDirectory(prefix="bench-room-") as folder:
        paths = [Path(folder) / f"p{i}.jsonl" for i in range(PEERS)]
        peers = [await asyncio.create_subprocess_exec(
            sys.executable, "-m", "peer", "--room", f"room{round_}", "--server", f"http://{LOCAL}:{port}",
            "--name", f"p{i}", "--video", "testsrc", "--video-size", size, "--no-window", "--audio", "none",
            "--no-audio-out", "--ice-host", LOCAL, "--stats", str(path), "--quiet",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            cwd=root) for i, path in enumerate(paths)]
        try:
            await _until(lambda: all(len(_tiles(path, 0.0)) == PEERS - 1 for path in paths), "every tile of ours")
            await asyncio.sleep(warm_up)
            start, before = time.time(), [harness.usage(p.pid).cpu_seconds for p in peers]
            await asyncio.sleep(seconds)
            cpu = [(harness.usage(p.pid).cpu_seconds - b) / seconds * 100 for p, b in zip(peers, before)]
            await asyncio.sleep(1.2)  # the stats line of the last second
            tiles = [list(_tiles(path, start, start + seconds + 0.5).values()) for path in paths]
            return Measure(tiles, cpu)
        finally:
            for process in peers:
                if process.returncode is None:
                    process.terminate()
            await asyncio.gather(*(p.wait() for p in peers))
            await server.stop()


def _tiles(path: Path, start: float, end: float = float("inf")) -> dict[str, float]:
    """Each remote member's mean ``fps_in`` in the stats lines of ``path`` written from ``start``
    to ``end`` (seconds since the epoch); only members with frames."""
    seen: dict[str, list[float]] = {}
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    for line in text.splitlines():
        try:
            stats = json.loads(line)
        except ValueError:
            continue  # a line being written
        at = datetime.datetime.fromisoformat(stats["time"].replace("Z", "+00:00")).timestamp()
        if start <= at <= end and stats.get("fps_in") is not None:
            seen.setdefault(stats["member_id"], []).append(stats["fps_in"])
    return {member: statistics.mean(values) for member, values in seen.items() if max(values) > 0}


async def _until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"not within {START_TIMEOUT:g} s: {what}")
        await asyncio.sleep(0.1)


# The baseline: four bare aiortc processes ----------------------------------------------

async def bare(size: str, seconds: float, warm_up: float) -> Measure:
    peers = [await Child.start(__file__, "bare", "--size", size) for _ in range(PEERS)]
    try:
        for i in range(PEERS):
            for j in range(i + 1, PEERS):
                peers[i].send({"kind": "offer", "to": j})
                offer = await peers[i].expect("description")
                peers[j].send({"kind": "offered", "from": i, "sdp": offer["sdp"]})
                answer = await peers[j].expect("description")
                peers[i].send({"kind": "answered", "from": j, "sdp": answer["sdp"]})

        async def counts() -> list[dict[str, int]]:
            found = []
            for child in peers:
                child.send({"kind": "count"})
                found.append((await child.expect("count"))["counts"])
            return found

        deadline = time.monotonic() + START_TIMEOUT
        while not all(len(c) == PEERS - 1 and all(c.values()) for c in await counts()):
            if time.monotonic() > deadline:
                raise RuntimeError("not every tile of the baseline got frames")
            await asyncio.sleep(0.1)
        await asyncio.sleep(warm_up)
        before, used, start = await counts(), [c.usage().cpu_seconds for c in peers], time.monotonic()
        await asyncio.sleep(seconds)
        after, took = await counts(), time.monotonic() - start
        cpu = [(c.usage().cpu_seconds - u) / took * 100 for c, u in zip(peers, used)]
        tiles = [[(a[k] - b[k]) / took for k in a] for a, b in zip(after, before)]
        return Measure(tiles, cpu)
    finally:
        await asyncio.gather(*(c.stop() for c in peers))


async def bare_peer(link: Link, options: argparse.Namespace, rest: list[str]) -> None:
    """A bare aiortc member of the mesh: testsrc relayed to one connection per other member."""
    from aiortc import RTCSessionDescription
    from aiortc.contrib.media import MediaPlayer, MediaRelay
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="640x480")
    size = parser.parse_args(rest).size
    player = MediaPlayer(f"testsrc=size={size}:rate=30,format=yuv420p", format="lavfi")
    relay = MediaRelay()
    connections: dict[int, Any] = {}
    counts: dict[str, int] = {}
    readers: list[asyncio.Task] = []

    def connect(other: int) -> Any:
        pc = connections[other] = harness.bare_connection()
        pc.addTrack(relay.subscribe(player.video, buffered=False))

        @pc.on("track")
        def on_track(track: Any) -> None:
            counts[str(other)] = 0

            async def read() -> None:
                while True:
                    await track.recv()
                    counts[str(other)] += 1
            readers.append(asyncio.ensure_future(read()))
        return pc

    while True:
        message = await link.receive()
        if message["kind"] == "offer":
            pc = connect(message["to"])
            await pc.setLocalDescription(await pc.createOffer())
            link.send("description", **harness.description(pc))
        elif message["kind"] == "offered":
            pc = connect(message["from"])
            await pc.setRemoteDescription(RTCSessionDescription(sdp=message["sdp"], type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            link.send("description", **harness.description(pc))
        elif message["kind"] == "answered":
            await connections[message["from"]].setRemoteDescription(
                RTCSessionDescription(sdp=message["sdp"], type="answer"))
        elif message["kind"] == "count":
            link.send("count", counts=dict(counts))


# The rows ----------------------------------------------------------------------------------

async def measure(rounds: int, seconds: float, quick: bool, size: str = "640x480",
                  warm_up: Optional[float] = None, root: Path = ROOT) -> list[Row]:
    """The room's rows: ours and the baseline alternating ``rounds`` times. ``root``: the
    checkout whose ``python -m peer`` is ours (another one's, to compare before a change)."""
    if quick:
        rounds, seconds, warm_up = QUICK["rounds"], QUICK["seconds"], QUICK["warm_up"]
    warm_up = WARM_UP if warm_up is None else warm_up
    lowest = Row(f"room of four {size}, fps of the slowest of 12 tiles", "fps", higher_is_better=True)
    median = Row(f"room of four {size}, fps per tile, median of 12", "fps", higher_is_better=True)
    cpu = Row(f"room of four {size}, CPU per peer, median of 4", "% of a core")
    cpu_max = Row(f"room of four {size}, CPU of the busiest peer", "% of a core")
    cost = Row(f"room of four {size}, CPU per frame received, median of 4 peers", "ms")
    for round_ in range(rounds):
        for side, result in (("ours", await ours(size, seconds, warm_up, round_, root)),
                             ("bare", await bare(size, seconds, warm_up))):
            getattr(lowest, side).append(min(result.tiles))
            getattr(median, side).append(statistics.median(result.tiles))
            getattr(cpu, side).append(statistics.median(result.cpu))
            getattr(cpu_max, side).append(max(result.cpu))
            getattr(cost, side).append(statistics.median(result.cost))
    return [lowest, median, cpu, cpu_max, cost]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of ours then the baseline (default 3)")
    parser.add_argument("--seconds", type=float, default=10, help="seconds measured a round (default 10)")
    parser.add_argument("--size", default="640x480", help="video size each peer sends (default 640x480)")
    parser.add_argument("--warm-up", type=float, default=WARM_UP, help=f"seconds before measuring (default {WARM_UP:g})")
    parser.add_argument("--quick", action="store_true", help="one short round (the smoke test)")
    parser.add_argument("--peer-root", type=Path, default=ROOT,
                        help="the checkout whose python -m peer is ours (default this one): to measure before a change")
    args = parser.parse_args()
    rows = asyncio.run(measure(args.rounds, args.seconds, args.quick, args.size, args.warm_up, args.peer_root))
    print(harness.format_table(rows))


if __name__ == "__main__":
    if not harness.run_child({"bare": bare_peer}):
        main()
