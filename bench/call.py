"""One call's cost and its start: fps held, CPU and peak memory per peer, join to first frame.

    python bench/call.py [--rounds 3] [--seconds 30] [--warm-up 5] [--quick]

Two processes in a call on 127.0.0.1, each sending VP8 video (FFmpeg's ``testsrc``) at 30 fps
to the other, at 640x480 and at 1280x720. Ours is two ``python -m peer --video testsrc
--video-size WxH --fps 30 --no-window --audio none --ice-host 127.0.0.1`` as a user runs them,
with our signaling server in this process (``harness.server``), and ``--stats FILE`` for the
frames each receives a second. The baseline is bare aiortc in two processes: a ``MediaPlayer``
of the same ``testsrc`` sending, the track received consumed by ``recv()`` in a loop, SDP over
this process's pipes. Over ``--seconds`` after ``--warm-up``: the frames received a second on
each side, each peer's CPU (% of one core, from /proc) and its peak memory (VmHWM).

"join to first frame": two processes started and with everything imported are told to join at
once; from that moment (ours: ``peer.join(video="testsrc")``, which opens the source, connects
to the server, joins and negotiates; bare: opening the same source and ``createOffer``) to the
first decoded frame on both sides (the later of the two). Rounds alternate ours and bare.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]

import harness  # noqa: E402
from harness import LOCAL, Child, Link, Row  # noqa: E402

SIZES = ("640x480", "1280x720")
FPS = 30
JOIN_SIZE = "640x480"
WARM_UP = 5.0
STARTED_TIMEOUT = 60


def testsrc(size: str) -> str:
    return f"testsrc=size={size}:rate={FPS}"


# Ours: the CLI as a user runs it ---------------------------------------------------------

class CliPeer:
    """``python -m peer`` in a call; its output drained, its ``--stats`` lines read back."""

    def __init__(self, process: asyncio.subprocess.Process, stats: Path) -> None:
        self.process = process
        self.stats = stats
        self.connected = asyncio.Event()
        self.lines: list[str] = []
        self._reading = asyncio.ensure_future(self._read())

    @classmethod
    async def start(cls, name: str, room: str, size: str, server: str, directory: Path) -> "CliPeer":
        stats = directory / f"{name}.jsonl"
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "peer", "--room", room, "--name", name, "--server", server,
            "--video", "testsrc", "--video-size", size, "--fps", str(FPS), "--audio", "none", "--no-window",
            "--ice-host", LOCAL, "--stats", str(stats), "--downloads", str(directory),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            cwd=directory, env={**os.environ, "PYTHONPATH": str(harness.ROOT), "PYTHONUNBUFFERED": "1"})
        return cls(process, stats)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := (await self.process.stdout.readline()).decode(errors="replace"):
            self.lines.append(line)
            if "connected to" in line:
                self.connected.set()

    async def wait_connected(self) -> None:
        waiting = asyncio.ensure_future(self.connected.wait())
        await asyncio.wait([waiting, self._reading], timeout=STARTED_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if not self.connected.is_set():
            raise RuntimeError("python -m peer did not connect:\n" + "".join(self.lines[-20:]))

    def fps_in(self, since: float, until: float) -> float:
        """The mean of the frames received a second in the ``--stats`` lines written from ``since``
        to a second after ``until`` (the wall clock, as the lines give it; each line covers the
        second before it)."""
        values = []
        for line in self.stats.read_text().splitlines():
            record = json.loads(line)
            at = datetime.datetime.fromisoformat(record["time"].replace("Z", "+00:00")).timestamp()
            if since + 1 <= at <= until + 1 and record.get("fps_in") is not None:
                values.append(record["fps_in"])
        return statistics.mean(values) if values else float("nan")

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except asyncio.TimeoutError:
                self.process.kill()
                await self.process.wait()
        await self._reading


async def ours_call(server: str, size: str, number: int, warm_up: float, seconds: float) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory(prefix="bench-call-") as temporary:
        directory = Path(temporary)
        room = f"call-{size}-{number}"
        peers = [await CliPeer.start(name, room, size, server, directory) for name in ("a", "b")]
        try:
            await asyncio.gather(*(peer.wait_connected() for peer in peers))
            await asyncio.sleep(warm_up)
            since = time.time()
            before = [harness.usage(peer.process.pid) for peer in peers]
            started = harness.now()
            await asyncio.sleep(seconds)
            after = [harness.usage(peer.process.pid) for peer in peers]
            took = harness.now() - started
            await asyncio.sleep(1.2)  # the last second's --stats line
            return {"fps": [peer.fps_in(since, since + took) for peer in peers],
                    "cpu": [(a.cpu_seconds - b.cpu_seconds) / took * 100 for a, b in zip(after, before)],
                    "memory": [a.peak_rss_mb for a in after]}
        finally:
            await asyncio.gather(*(peer.stop() for peer in peers))


# The baseline: bare aiortc ---------------------------------------------------------------

async def bare_peer(link: Link, options: argparse.Namespace, rest: list[str]) -> None:
    """A bare aiortc peer sending ``testsrc`` of ``--size`` and consuming what it receives.
    With ``--join`` it waits for ``go`` before it opens anything (the join row)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", required=True)
    parser.add_argument("--offer", action="store_true")
    parser.add_argument("--join", action="store_true")
    args = parser.parse_args(rest)
    from aiortc.contrib.media import MediaPlayer
    if args.join:
        harness.bare_connection()  # everything imported before the clock starts
        link.send("ready")
        await link.receive()
    player = MediaPlayer(testsrc(args.size), format="lavfi")
    pc = harness.bare_connection()
    counter = _Counter(link)
    pc.on("track", lambda track: counter.consume(track))
    pc.addTrack(player.video)
    await (harness.bare_offer(pc, link) if args.offer else harness.bare_answer(pc, link))
    try:
        while (message := await link.receive())["kind"] == "count":
            link.send("count", frames=counter.frames, at=harness.now())
    except EOFError:
        pass
    finally:
        player.video.stop()
        await pc.close()


class _Counter:
    """Frames of a received track, taken as they come (``recv()`` in a loop); the parent hears of the first."""

    def __init__(self, link: Link) -> None:
        self.link = link
        self.frames = 0
        self.task: Optional[asyncio.Task] = None

    def consume(self, track: Any) -> None:
        if track.kind == "video":
            self.task = asyncio.ensure_future(self._run(track))

    async def _run(self, track: Any) -> None:
        from aiortc.mediastreams import MediaStreamError
        try:
            while True:
                await track.recv()
                self.frames += 1
                if self.frames == 1:
                    self.link.send("first", at=harness.now())
        except MediaStreamError:
            pass


async def bare_call(size: str, warm_up: float, seconds: float) -> dict[str, list[float]]:
    offerer = await Child.start(__file__, "bare", "--size", size, "--offer")
    answerer = await Child.start(__file__, "bare", "--size", size)
    peers = [offerer, answerer]
    try:
        await harness.pass_descriptions(offerer, answerer)
        await asyncio.gather(*(peer.expect("first") for peer in peers))
        await asyncio.sleep(warm_up)
        before = [peer.usage() for peer in peers]
        counts = await _counts(peers)
        await asyncio.sleep(seconds)
        after = [peer.usage() for peer in peers]
        counts_after = await _counts(peers)
        took = statistics.mean(b["at"] - a["at"] for a, b in zip(counts, counts_after))
        return {"fps": [(b["frames"] - a["frames"]) / (b["at"] - a["at"]) for a, b in zip(counts, counts_after)],
                "cpu": [(a.cpu_seconds - b.cpu_seconds) / took * 100 for a, b in zip(after, before)],
                "memory": [a.peak_rss_mb for a in after]}
    finally:
        await asyncio.gather(*(peer.stop() for peer in peers))


async def _counts(peers: list[Child]) -> list[dict[str, Any]]:
    for peer in peers:
        peer.send({"kind": "count"})
    return [await peer.expect("count") for peer in peers]


# Join to first frame ---------------------------------------------------------------------

async def ours_joiner(link: Link, options: argparse.Namespace, rest: list[str]) -> None:
    """Imports the API, says ``ready``; on ``go`` joins with ``testsrc``, says when its first
    frame came, stays until told to leave."""
    import peer
    link.send("ready")
    go = await link.receive()
    async with peer.join(go["room"], server=go["server"], name=go["name"], video="testsrc", video_size=JOIN_SIZE,
                         fps=FPS, ice_hosts=[LOCAL]) as room:
        await room.wait_for_frames(1, timeout=30)
        link.send("first", at=harness.now())
        await link.receive()


async def join_round(server: Optional[str], number: int) -> float:
    """Seconds from ``go`` to the later of both sides' first decoded frame; ours when ``server``
    is given, bare aiortc otherwise."""
    if server is not None:
        peers = [await Child.start(__file__, "ours-join") for _ in range(2)]
    else:
        peers = [await Child.start(__file__, "bare", "--size", JOIN_SIZE, "--join", *offer)
                 for offer in (["--offer"], [])]
    try:
        for peer in peers:
            await peer.expect("ready", STARTED_TIMEOUT)
        started = harness.now()
        for name, peer in zip("ab", peers):
            peer.send({"kind": "go", "room": f"join-{number}", "server": server, "name": name})
        if server is None:
            await harness.pass_descriptions(*peers)
        firsts = await asyncio.gather(*(peer.expect("first") for peer in peers))
        return (max(first["at"] for first in firsts) - started) * 1000
    finally:
        for peer in peers:
            peer.send({"kind": "leave"})
        await asyncio.gather(*(peer.stop() for peer in peers))


# The rounds ------------------------------------------------------------------------------

async def measure(rounds: int, seconds: float, quick: bool, warm_up: float = WARM_UP) -> list[Row]:
    """The rows, ours and bare alternating: per size fps received (the worse side's), CPU and
    peak memory (each peer's), then join to first frame."""
    sizes = SIZES[:1] if quick else SIZES
    if quick:
        rounds, seconds, warm_up = 1, min(seconds, 1.5), min(warm_up, 0.5)
    rows: list[Row] = []
    signaling, url = await harness.server()
    try:
        for size in sizes:
            fps = Row(f"fps received, {size} both ways, worse side", "fps", higher_is_better=True)
            cpu = Row(f"CPU per peer, {size}", "% of a core")
            memory = Row(f"peak memory per peer, {size}", "MB")
            for number in range(rounds):
                for side, result in (("ours", await ours_call(url, size, number, warm_up, seconds)),
                                     ("bare", await bare_call(size, warm_up, seconds))):
                    getattr(fps, side).append(min(result["fps"]))
                    getattr(cpu, side).extend(result["cpu"])
                    getattr(memory, side).extend(result["memory"])
            rows += [fps, cpu, memory]
        join = Row(f"join to first frame, {JOIN_SIZE} both ways", "ms")
        for number in range(rounds):
            join.ours.append(await join_round(url, number))
            join.bare.append(await join_round(None, number))
        rows.append(join)
    finally:
        await signaling.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of ours then bare aiortc (default 3)")
    parser.add_argument("--seconds", type=float, default=30, help="seconds measured per call (default 30)")
    parser.add_argument("--warm-up", type=float, default=WARM_UP,
                        help=f"seconds of call before measuring (default {WARM_UP:g})")
    parser.add_argument("--quick", action="store_true", help="a few seconds, 640x480 only: the smoke test")
    args = parser.parse_args()
    rows = asyncio.run(measure(args.rounds, args.seconds, args.quick, args.warm_up))
    print(harness.format_table(rows))


if __name__ == "__main__":
    if not harness.run_child({"bare": bare_peer, "ours-join": ours_joiner}):
        main()
