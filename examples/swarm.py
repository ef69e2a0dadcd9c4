"""Swarm: a load test. Starts N test peers in rooms of two, in this one process, and prints
how each fared: join time, first-frame time, frames per second received, failures.

    python examples/swarm.py --room load --peers 10 --duration 20 --server http://HOST:8080

Peers 0 and 1 meet in room ``load-0``, 2 and 3 in ``load-1``, and so on; each sends
``testsrc`` and counts the frames it receives for ``--duration`` seconds. The run is
bounded: everything is over after the duration plus the join and frame timeouts.
"""

import asyncio
import time
from dataclasses import dataclass
from typing import Optional

import _common
import peer

TIMEOUT = 20.0
"""For joining, for the partner to connect and for the first frame, each."""


@dataclass
class Result:
    name: str
    room: str
    join: Optional[float] = None
    first_frame: Optional[float] = None
    fps: Optional[float] = None
    error: str = ""


async def one_peer(args, result: Result, counted: asyncio.Event, everyone_counted) -> None:
    started = time.monotonic()
    try:
        joining = peer.join(result.room, server=args.server, name=result.name, ice_hosts=args.ice_host,
                            video="testsrc", video_size=args.video_size, fps=args.fps)
        async with joining as room:
            result.join = time.monotonic() - started
            partner = await room.wait_for_peer(timeout=TIMEOUT)
            await room.wait_for_frames(1, partner, timeout=TIMEOUT)
            result.first_frame = time.monotonic() - started
            frames, since = 0, time.monotonic()

            async def count() -> None:
                nonlocal frames
                async for _ in room.frames(partner, latest=False):
                    frames += 1
            counting = asyncio.ensure_future(count())
            await asyncio.wait([counting], timeout=args.duration)
            counting.cancel()
            result.fps = frames / (time.monotonic() - since)
            if frames == 0:
                result.error = "no frames after the first"
            counted.set()
            await everyone_counted()  # stay until every partner has counted too
    except peer.PeerError as error:  # joins, and the waits' WaitTimeout and RoomClosed
        result.error = str(error) or type(error).__name__
    finally:
        counted.set()


async def main(args):
    results = [Result(f"{args.name}-{n}", f"{args.room}-{n // 2}") for n in range(args.peers)]
    counted = [asyncio.Event() for _ in results]

    async def everyone_counted() -> None:
        await asyncio.gather(*(event.wait() for event in counted))

    print(f"{args.peers} peers in {(args.peers + 1) // 2} rooms against {args.server} "
          f"for {args.duration:g} s ...", flush=True)
    peers = [asyncio.ensure_future(one_peer(args, r, counted[n], everyone_counted)) for n, r in enumerate(results)]
    try:
        await asyncio.wait(peers, timeout=args.duration + 3 * TIMEOUT)
    finally:  # also on Ctrl-C: every peer leaves its room
        for task, result in zip(peers, results, strict=True):
            if not task.done():
                result.error = result.error or "did not finish in time"
                task.cancel()
        await asyncio.gather(*peers, return_exceptions=True)

    def seconds(value: Optional[float]) -> str:
        return "-" if value is None else f"{value:.2f}"

    print(f"{'peer':<14} {'room':<14} {'join s':>7} {'first frame s':>14} {'fps':>6}  result")
    for r in results:
        print(f"{r.name:<14} {r.room:<14} {seconds(r.join):>7} {seconds(r.first_frame):>14} "
              f"{'-' if r.fps is None else f'{r.fps:.1f}':>6}  {r.error or 'ok'}")
    failures = sum(1 for r in results if r.error)
    print(f"{len(results)} peers, {failures} failures", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    parser = _common.parser("Start N test peers in rooms of two and print how each fared.")
    parser.add_argument("--peers", type=int, default=4, help="how many peers (default 4; an odd one out fails)")
    parser.add_argument("--duration", type=float, default=10, help="seconds each peer counts frames (default 10)")
    parser.add_argument("--video-size", default="320x240", help="testsrc size (default 320x240)")
    parser.add_argument("--fps", type=int, default=15, help="testsrc frame rate (default 15)")
    _common.run(main, parser.parse_args())
