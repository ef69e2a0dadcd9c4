"""Cold start: from launching the processes to each peer's first decoded frame, ours beside bare aiortc.

    python bench/cold_start.py [--rounds 5] [--quick]

Ours: the signaling server (``python -m signaling``) is launched; once it says it listens, two
``python -m peer --video testsrc --no-window --audio none`` join one room through it. Each peer
says ``video from NAME arrives`` when the other's first frame is decoded; the bench notes the
time it reads each line (and, for where the time goes, each ``joined room`` and ``connected to``
line). Counted from the server's launch: imports, Socket.IO connect and join, the offer and
answer relayed, ICE and DTLS, the first frames encoded and decoded.

The baseline: two processes of bare aiortc launched at once (their imports counted), each with a
640x480 lavfi testsrc from ``MediaPlayer``; the offer and answer go through this process's pipes
(``harness.bare_offer``/``bare_answer``); each child says when it imported, connected and decoded
its first frame. Rounds alternate, so machine noise hits both alike. No server: the simplest
correct way to the same frames.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

sys.path[:0] = [str(Path(__file__).resolve().parent.parent)]

from bench import harness  # noqa: E402
from bench.harness import Row  # noqa: E402

ROOM = "cold-start"
NAMES = ("a", "b")
WAIT = 60.0
"""Seconds a round may take before it counts as broken."""
PEER_FLAGS = ["--video", "testsrc", "--no-window", "--audio", "none", "--no-audio-out", "--quiet",
              "--ice-host", harness.LOCAL]
"""What users run headless, sound left out (the baseline sends none) and no status line; ICE on
127.0.0.1 as the baseline's."""
LISTENING = re.compile(r"listening: peers use --server (\S+)")
STAGES = {"joined": re.compile(r"^joined room "), "connected": re.compile(r"^connected to "),
          "frame": re.compile(r"^video from \S+ arrives")}


@dataclass
class Round:
    """When each process reached each stage, in seconds from the launch: ``stages[name][stage]``."""

    stages: dict[str, dict[str, float]] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    """CPU seconds each process of the round used by the time both peers had a frame."""

    def at(self, stage: str) -> list[float]:
        return sorted(times[stage] for times in self.stages.values() if stage in times)


# Ours --------------------------------------------------------------------------------------------

async def launch(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, cwd=harness.ROOT, env={**os.environ, "PYTHONPATH": str(harness.ROOT)})


async def watch(stream: Optional[asyncio.StreamReader], start: float, times: dict[str, float],
                patterns: dict[str, re.Pattern[str]], keep: list[str]) -> None:
    """Note when each pattern first shows in ``stream``'s lines (seconds since ``start``), keep the lines."""
    assert stream is not None
    while line := (await stream.readline()).decode(errors="replace"):
        keep.append(line)
        for stage, pattern in patterns.items():
            if stage not in times and pattern.search(line):
                times[stage] = harness.now() - start


async def ours() -> Round:
    """Server launched, then the two peers as soon as it listens; until both saw a frame."""
    result = Round()
    processes: list[asyncio.subprocess.Process] = []
    output: list[str] = []
    watchers: list[asyncio.Task[None]] = []
    start = harness.now()
    try:
        server = await launch("-m", "signaling", "--host", harness.LOCAL, "--port", "0")
        processes.append(server)
        url = await asyncio.wait_for(listening(server, output), WAIT)
        result.stages["server"] = {"listening": harness.now() - start}
        watchers.append(asyncio.ensure_future(watch(server.stderr, start, {}, {}, output)))
        for name in NAMES:
            process = await launch("-m", "peer", "--room", ROOM, "--name", name, "--server", url, *PEER_FLAGS)
            processes.append(process)
            result.stages[name] = {}
            watchers += [asyncio.ensure_future(watch(process.stdout, start, result.stages[name], STAGES, output)),
                         asyncio.ensure_future(watch(process.stderr, start, {}, {}, output))]
        while len(result.at("frame")) < len(NAMES):
            if any(process.returncode is not None for process in processes):
                raise RuntimeError("a process of the round ended:\n" + "".join(output))
            if harness.now() - start > WAIT:
                raise RuntimeError(f"no frames on both sides in {WAIT:g} s:\n" + "".join(output))
            await asyncio.sleep(0.01)  # the watchers note the times; this only waits for them
        result.cpu = {name: harness.usage(process.pid).cpu_seconds for name, process in zip(["server", *NAMES], processes)}
    finally:
        await asyncio.gather(*(harness.Child(process).stop() for process in processes))
        await asyncio.gather(*watchers, return_exceptions=True)
    return result


async def listening(server: asyncio.subprocess.Process, output: list[str]) -> str:
    """The URL the server says it listens on (it logs it on stderr)."""
    assert server.stderr is not None
    while line := (await server.stderr.readline()).decode(errors="replace"):
        output.append(line)
        if match := LISTENING.search(line):
            return match.group(1)
    raise RuntimeError("the signaling server ended:\n" + "".join(output))


# Bare aiortc -------------------------------------------------------------------------------------

async def bare() -> Round:
    """Two bare children launched at once, SDP through our pipes; until both saw a frame."""
    result = Round()
    start = harness.now()
    offerer, answerer = await asyncio.gather(harness.Child.start(__file__, "bare", "offer"),
                                             harness.Child.start(__file__, "bare", "answer"))
    try:
        await asyncio.wait_for(asyncio.gather(stages(offerer, answerer, start, result.stages.setdefault("a", {})),
                                              stages(answerer, offerer, start, result.stages.setdefault("b", {}))),
                               WAIT)
        result.cpu = {"a": offerer.usage().cpu_seconds, "b": answerer.usage().cpu_seconds}
    finally:
        await asyncio.gather(offerer.stop(), answerer.stop())
    return result


async def stages(child: harness.Child, other: harness.Child, start: float, times: dict[str, float]) -> None:
    """Note when ``child`` says it imported, connected and decoded its first frame, and pass
    the description it sends to ``other`` (the parent's part of ``bare_offer``/``bare_answer``)."""
    while "frame" not in times:
        message = await child.receive(WAIT)
        kind = message.get("kind")
        if kind == "error":
            raise RuntimeError(f"bench child {child.pid}: {message.get('error')}")
        if kind == "description":
            other.send(message)
        elif kind in ("imported", "connected", "frame"):
            times[kind] = harness.now() - start


async def bare_child(link: harness.Link, options: argparse.Namespace, rest: list[str]) -> None:
    """One bare aiortc peer: imports, a testsrc player, offer or answer over the pipes, the first frame."""
    from aiortc.contrib.media import MediaPlayer
    link.send("imported")
    player = MediaPlayer("testsrc=size=640x480:rate=30", format="lavfi")
    pc = harness.bare_connection()
    first = asyncio.get_running_loop().create_future()

    @pc.on("connectionstatechange")
    def on_state() -> None:
        if pc.connectionState == "connected":
            link.send("connected")

    @pc.on("track")
    def on_track(track: Any) -> None:
        if track.kind == "video" and not first.done():
            first.set_result(track)

    assert player.video is not None  # testsrc is video
    pc.addTrack(player.video)
    if rest == ["offer"]:
        await harness.bare_offer(pc, link)
    else:
        await harness.bare_answer(pc, link)
    await (await first).recv()
    link.send("frame")
    try:
        await link.receive()  # until the parent goes away (or stops us)
    except EOFError:
        pass
    finally:
        player.video.stop()
        await pc.close()


# The rows ----------------------------------------------------------------------------------------

async def measure(rounds: int, seconds: float, quick: bool) -> list[Row]:
    """``rounds`` rounds of each side, alternating (one with ``quick``); ``seconds`` is unused:
    a round lasts as long as the start does."""
    await asyncio.to_thread(compile_ours)
    rounds = 1 if quick else rounds
    whole = Row("cold start: server and two peers launched to both peers' first decoded frame", "ms")
    peers = Row("cold start: two peers launched (server up) to both peers' first decoded frame", "ms")
    cpu = Row("cold start: CPU time of all its processes until then", "ms")
    for _ in range(rounds):
        for side, run in (("ours", ours), ("bare", bare)):
            result = await run()
            frame = result.at("frame")[-1]
            getattr(whole, side).append(frame * 1000)
            getattr(peers, side).append((frame - max(result.at("listening"), default=0)) * 1000)
            getattr(cpu, side).append(sum(result.cpu.values()) * 1000)
            print(f"cold start, {side}: {describe(result)}", file=sys.stderr, flush=True)
    return [whole, peers, cpu]


def compile_ours() -> None:
    """Our packages' bytecode, written once before the rounds, as an installed package has it
    (pip compiles at install; aiortc's is there): where PYTHONDONTWRITEBYTECODE is set, each
    round would otherwise compile our modules from source, a cost no user pays twice."""
    for package in ("peer", "signaling"):
        compileall.compile_dir(harness.ROOT / package, quiet=1)


def describe(result: Round) -> str:
    """Each stage of a round (the later of the two peers), for where the time goes."""
    order = ["listening", "imported", "joined", "connected", "frame"]
    return ", ".join([f"{stage} {max(times) * 1000:.0f} ms" for stage in order if (times := result.at(stage))]
                     + [f"cpu {name} {seconds * 1000:.0f} ms" for name, seconds in result.cpu.items()])


def main() -> None:
    if harness.run_child({"bare": bare_child}):
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0, help="unused: a round lasts as long as the start does")
    parser.add_argument("--quick", action="store_true", help="one round each (CI's smoke test)")
    args = parser.parse_args()
    print(harness.format_table(asyncio.run(measure(args.rounds, args.seconds, args.quick))))


if __name__ == "__main__":
    main()
