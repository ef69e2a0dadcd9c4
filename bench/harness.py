"""What every benchmark shares: child processes, rounds that alternate, the table.

Every figure of the suite is taken between separate sender and receiver processes, as users
run them: one process would share one event loop and hide what each side really costs. The
parent starts children (``Child``), talks to each over its stdin and stdout in JSON lines, and
runs ours and the bare aiortc baseline in alternating rounds (``alternate``) so that the
noise of a 2-core machine falls on both alike. Results are ``Row`` objects: medians with min
and max, and the ratio ours / baseline, which is the result (absolute figures move with the
machine by a factor of three).

A child is ``python bench/<module>.py --child ROLE [ARGS]``; its module calls
``run_child(ROLES)``, which hands the role function a ``Link`` to the parent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping, Sequence

if TYPE_CHECKING:  # only named: a bare child importing the harness must not pay numpy's import (cold start)
    import numpy as np

LOCAL = "127.0.0.1"
BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
LINE_LIMIT = 16 * 1024 * 1024  # an SDP with every candidate fits many times over

# Frame numbers stamped into pictures --------------------------------------------------

BITS = 8
BLOCK = 40


def stamp(picture: np.ndarray, number: int) -> None:
    """Write ``number % 256`` into the top left of a BGR picture as 8 black/white blocks that survive VP8 and H.264."""
    for bit in range(BITS):
        value = 255 if number >> bit & 1 else 0
        picture[0:BLOCK, bit * BLOCK:(bit + 1) * BLOCK] = value


def read_stamp(picture: np.ndarray) -> int:
    """The number ``stamp`` wrote, read from the middle of each block (the edges blur)."""
    number = 0
    for bit in range(BITS):
        block = picture[BLOCK // 4:3 * BLOCK // 4, bit * BLOCK + BLOCK // 4:(bit + 1) * BLOCK - BLOCK // 4]
        if block.mean() > 127:
            number |= 1 << bit
    return number


# Results -------------------------------------------------------------------------------

@dataclass
class Row:
    """One line of the table: what was measured, the values of each round for both sides."""

    name: str
    unit: str
    ours: list[float] = field(default_factory=list)
    bare: list[float] = field(default_factory=list)
    higher_is_better: bool = False

    @staticmethod
    def median(values: Sequence[float]) -> float:
        return statistics.median(values) if values else float("nan")

    @property
    def ratio(self) -> float:
        """Ours / baseline of the medians (below 1 is faster for times, above 1 for rates)."""
        bare = self.median(self.bare)
        return self.median(self.ours) / bare if bare else float("nan")

    def cells(self) -> list[str]:
        def spread(values: list[float]) -> str:
            if not values:
                return "-"
            return f"{self.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"
        ratio = f"{self.ratio:.2f}" if self.bare else "-"
        return [f"{self.name}, {self.unit}", spread(self.ours), spread(self.bare), ratio]


HEADER = ["measure", "ours: median (min-max)", "bare aiortc: median (min-max)", "ratio"]


def format_table(rows: Sequence[Row]) -> str:
    """The rows as a plain text table, for the terminal."""
    lines = [HEADER] + [row.cells() for row in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]
    return "\n".join(
        "  ".join(cell.ljust(width) if i == 0 else cell.rjust(width) for i, (cell, width) in enumerate(zip(line, widths)))
        for line in lines)


def markdown_table(rows: Sequence[Row]) -> str:
    """The rows as a Markdown table, for docs/benchmarks.md."""
    lines = [HEADER, ["---"] * len(HEADER)] + [row.cells() for row in rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


async def alternate(rounds: int, ours: Callable[[], Awaitable[float]], bare: Callable[[], Awaitable[float]],
                    row: Row) -> Row:
    """Run ours, then the baseline, ``rounds`` times, adding each result to ``row``."""
    for _ in range(rounds):
        row.ours.append(await ours())
        row.bare.append(await bare())
    return row


# Processes ------------------------------------------------------------------------------

@dataclass
class Usage:
    """What a process has used so far, read from /proc (Linux)."""

    cpu_seconds: float
    peak_rss_mb: float


def usage(pid: int) -> Usage:
    ticks = os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime and stime, fields 14 and 15 of stat(5)
    peak = 0.0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    return Usage(cpu, peak)


class Child:
    """A child process of the bench, spoken to in JSON lines over its stdin and stdout.

    Lines on its stdout that are not JSON objects (a library's print) are passed to our stderr.
    """

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, script: str | Path, role: str, *args: str, env: Mapping[str, str] | None = None) -> "Child":
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(script), "--child", role, *args,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=LINE_LIMIT,
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
        return cls(process)

    @property
    def pid(self) -> int:
        return self.process.pid

    def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message).encode() + b"\n")

    async def receive(self, timeout: float = 60) -> dict[str, Any]:
        """The next JSON object the child writes; an error if it exits or says nothing in time."""
        return await asyncio.wait_for(self._next_object(), timeout)

    async def _next_object(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        while True:
            line = await self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"bench child {self.pid} exited ({await self.process.wait()})")
            try:
                message = json.loads(line)
            except ValueError:
                message = None
            if isinstance(message, dict):
                return message
            sys.stderr.write(line.decode(errors="replace"))

    async def expect(self, kind: str, timeout: float = 60) -> dict[str, Any]:
        """The next message, which must be of ``kind`` (the child's ``error`` message is raised)."""
        message = await self.receive(timeout)
        if message.get("kind") == "error":
            raise RuntimeError(f"bench child {self.pid}: {message.get('error')}")
        if message.get("kind") != kind:
            raise RuntimeError(f"bench child {self.pid} said {message!r}, expected {kind!r}")
        return message

    def usage(self) -> Usage:
        return usage(self.pid)

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 5)
            except asyncio.TimeoutError:
                self.process.kill()
                await self.process.wait()


class Link:
    """The child's side of ``Child``: JSON lines from the parent on stdin, to it on stdout."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.stdout = sys.stdout
        sys.stdout = sys.stderr  # anything else printed must not mix with our lines

    def send(self, kind: str, **fields: Any) -> None:
        self.stdout.write(json.dumps({"kind": kind, **fields}) + "\n")
        self.stdout.flush()

    async def receive(self) -> dict[str, Any]:
        line = await self.reader.readline()
        if not line:
            raise EOFError("the bench parent went away")
        message = json.loads(line)
        assert isinstance(message, dict)
        return message


Role = Callable[[Link, argparse.Namespace, list[str]], Awaitable[None]]


def run_child(roles: Mapping[str, Role]) -> bool:
    """If this process was started as ``--child ROLE``, run that role and return True."""
    if "--child" not in sys.argv:
        return False
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", choices=sorted(roles), required=True)
    options, rest = parser.parse_known_args()

    async def main() -> None:
        reader = asyncio.StreamReader(limit=LINE_LIMIT)
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        link = Link(reader)
        try:
            await roles[options.child](link, options, rest)
        except Exception as error:  # the parent says which child failed and why
            link.send("error", error=f"{type(error).__name__}: {error}")
            raise

    asyncio.run(main())
    return True


# Bare aiortc, SDP over the pipes ---------------------------------------------------------

def bare_connection() -> Any:
    """An RTCPeerConnection as the baseline makes it: no STUN, ICE on 127.0.0.1 only.

    aioice leaves loopback out of its host candidates; a bare program points the function that
    chooses them at 127.0.0.1 itself (importing our ``peer.ice`` would load all of ``peer`` and
    bill our imports to the baseline, which bench/cold_start.py counts)."""
    import aioice.ice
    from aiortc import RTCConfiguration, RTCPeerConnection

    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: [LOCAL]
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


def description(pc: Any) -> dict[str, str]:
    return {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type}


async def bare_offer(pc: Any, link: Link) -> None:
    """Offer over the parent's pipes (the parent passes it to the answering child), take the answer."""
    from aiortc import RTCSessionDescription
    await pc.setLocalDescription(await pc.createOffer())
    link.send("description", **description(pc))
    answer = await link.receive()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))


async def bare_answer(pc: Any, link: Link) -> None:
    """Take the offer the parent passes on, answer it."""
    from aiortc import RTCSessionDescription
    offer = await link.receive()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type=offer["type"]))
    await pc.setLocalDescription(await pc.createAnswer())
    link.send("description", **description(pc))


async def pass_descriptions(offerer: Child, answerer: Child) -> None:
    """The parent's part of ``bare_offer``/``bare_answer``: offer one way, answer back."""
    offer = await offerer.expect("description")
    answerer.send(offer)
    answer = await answerer.expect("description")
    offerer.send(answer)


async def server() -> tuple[Any, str]:
    """Our signaling server in the parent process (not on the media path), and its URL."""
    from signaling import SignalingServer
    signaling = SignalingServer()
    port = await signaling.start(LOCAL, 0)
    return signaling, f"http://{LOCAL}:{port}"


def now() -> float:
    """The clock both processes of a round read: CLOCK_MONOTONIC, the same in every process of a machine."""
    return time.monotonic()
