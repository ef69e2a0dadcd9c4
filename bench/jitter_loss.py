"""The video jitter buffers on a lossy path with a long round trip, simulated: peer/jitter.py's
``VideoJitterBuffer`` (ours) against aiortc 1.16's ``JitterBuffer(capacity=512, is_video=True)``
(bare), fed the same packets.

Not a two-process bench: no sockets and no clock, so that loss and round trip are exactly what
is asked, on a loopback that loses nothing. A sender at 30 fps of ``size`` packets a frame
(marker bit on each frame's last); each packet lost at random; the receiver's NACKs made by
aiortc's own ``NackGenerator`` (every missing packet asked again at each new loss, until 128
behind), each answered by a retransmission one round trip later, itself lost at the same rate.
Rows per path: frames handed on whole (of 900, 30 s), keyframe requests (PLI), and frames handed
on that are not one whole frame (stale or partial: what the decoder must not get). Rounds are
seeds.

    python bench/jitter_loss.py [--rounds N] [--seconds S] [--quick]
"""

from __future__ import annotations

import argparse
import heapq
import random
import sys
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiortc.jitterbuffer import JitterBuffer  # noqa: E402
from aiortc.rtcrtpreceiver import NackGenerator  # noqa: E402
from aiortc.rtp import RtpPacket  # noqa: E402

from bench.harness import Row, format_table  # noqa: E402
from peer.jitter import VideoJitterBuffer  # noqa: E402

PATHS = [(5, 0.05, 0.05), (5, 0.25, 0.02), (10, 0.25, 0.03), (30, 0.15, 0.05), (30, 0.25, 0.02)]
"""(packets a frame, round trip in seconds, loss): 5 packets is VP8 at aiortc's 1.5 Mbps cap."""


def simulate(make: Callable[[], Any], size: int, rtt: float, loss: float, seconds: float,
             seed: int) -> tuple[int, int, int]:
    """Frames handed on whole, keyframe requests, frames handed on not whole."""
    rng = random.Random(seed)
    buffer, nacks = make(), NackGenerator()
    queue: list[tuple[float, float, tuple[int, int, bool, bytes]]] = []
    sent: dict[int, tuple[int, int, bool, bytes]] = {}
    for frame in range(int(seconds * 30)):
        for index in range(size):
            number = (frame * size + index) % 65536
            sent[number] = (number, frame * 3000, index == size - 1, b"%d.%d;" % (frame, index))
            heapq.heappush(queue, (frame / 30 + index * 0.001 + rng.random() * 0.002, rng.random(), sent[number]))
    whole, plis, broken = set(), 0, 0
    while queue:
        now, _, (number, timestamp, marker, data) = heapq.heappop(queue)
        if rng.random() < loss:
            continue
        packet = RtpPacket(payload_type=96, marker=int(marker), sequence_number=number, timestamp=timestamp)
        packet._data = data  # type: ignore[attr-defined]
        if nacks.add(packet):
            for missing in sorted(nacks.missing):
                heapq.heappush(queue, (now + rtt, rng.random(), sent[missing]))
        pli, first = buffer.add(packet)
        plis += pli
        for made in [first] + getattr(buffer, "more", list)() if first is not None else []:
            parts = made.data.split(b";")[:-1]
            frames = {part.split(b".")[0] for part in parts}
            if len(frames) == 1 and len(parts) == size:
                whole.add(frames.pop())
            else:
                broken += 1
    return len(whole), plis, broken


def measure_now(rounds: int, seconds: float) -> list[Row]:
    rows = []
    for size, rtt, loss in PATHS:
        name = f"{size} pkt/frame, {rtt * 1000:.0f} ms RTT, {loss:.0%} loss"
        whole = Row(f"{name}: frames whole", f"of {int(seconds * 30)}", higher_is_better=True)
        plis = Row(f"{name}: keyframe requests", "PLI")
        broken = Row(f"{name}: frames not whole", "frames")
        for seed in range(rounds):
            for side, make in (("ours", VideoJitterBuffer), ("bare", lambda: JitterBuffer(512, is_video=True))):
                figures = simulate(make, size, rtt, loss, seconds, seed)
                for row, figure in zip((whole, plis, broken), figures):
                    getattr(row, side).append(float(figure))
        rows += [whole, plis, broken]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--quick", action="store_true", help="one round of 2 s (a smoke test)")
    args = parser.parse_args()
    rounds, seconds = (1, 2.0) if args.quick else (args.rounds, args.seconds)
    print(format_table(measure_now(rounds, seconds)))


if __name__ == "__main__":
    main()
