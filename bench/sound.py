"""Playback delay and buffer level of the speaker over a call, on a sound server of its own.

    python bench/sound.py [--seconds 30]

Starts PulseAudio with a null sink as the default output (tests/soundserver.py, so nothing of
this machine's sound is touched; Debian's ``pulseaudio`` must be installed), a signaling
server, a bot sending a 880 Hz tone and a bot playing what it hears (``room.play_audio()``).
At every callback of the playback device it notes how long the sound then played waited
between its arrival (pushed into the jitter buffer from the event loop) and the device taking
it, and how much waits in the buffer. Prints the median and maximum delay and the buffer's
level per stretch of the call: flat, not growing, is what a long call needs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import peer  # noqa: E402
from peer.media.speaker import RATE, JitterBuffer  # noqa: E402
from signaling import SignalingServer  # noqa: E402
from soundserver import SoundServer, dominant_frequency  # noqa: E402

LOCAL = "127.0.0.1"
STRETCHES = 6


def watch(buffer: JitterBuffer, samples: list[tuple[float, float, int]]) -> None:
    """Note (time, delay, level) each time the device's thread pulls from ``buffer``."""
    pull = buffer.pull

    def noted(count: int):  # type: ignore[no-untyped-def]
        played = pull(count)
        samples.append((time.monotonic(), buffer.delay if played is not None else float("nan"), buffer.level))
        return played

    buffer.pull = noted  # type: ignore[method-assign]


async def measure(seconds: float, sound: SoundServer) -> None:
    server = SignalingServer()
    port = await server.start(LOCAL, 0)
    url = f"http://{LOCAL}:{port}"
    samples: list[tuple[float, float, int]] = []
    try:
        async with peer.join("sound", server=url, name="singer", ice_hosts=[LOCAL],
                             audio="lavfi:sine=frequency=880:sample_rate=48000") as singer, \
                peer.join("sound", server=url, name="ear", ice_hosts=[LOCAL]) as ear:
            await singer.wait_for_peer()
            speaker = ear.play_audio()
            while not speaker.buffers:
                await asyncio.sleep(0.01)
            watch(speaker.buffers[0], samples)
            heard = asyncio.ensure_future(asyncio.to_thread(sound.record, 2))
            await asyncio.sleep(seconds)
            tone = dominant_frequency(await heard)
            buffer = speaker.buffers[0]
            underruns, dropped = buffer.underruns, buffer.dropped
    finally:
        await server.stop()
    report(samples, tone, underruns, dropped)


def report(samples: list[tuple[float, float, int]], tone, underruns: int, dropped: int) -> None:
    start = samples[0][0]
    span = (samples[-1][0] - start) / STRETCHES
    delays = [delay * 1000 for _, delay, _ in samples if delay == delay]
    print(f"{len(samples)} device callbacks over {samples[-1][0] - start:.0f} s; tone heard: {tone and round(tone)} Hz")
    print(f"arrival to device callback, ms: median {statistics.median(delays):.1f}, "
          f"p99 {statistics.quantiles(delays, n=100)[98]:.1f}, max {max(delays):.1f}")
    print(f"underruns {underruns}, dropped {dropped / RATE * 1000:.0f} ms")
    print("buffer level per stretch, ms (median / max):")
    for stretch in range(STRETCHES):
        levels = [level / RATE * 1000 for at, _, level in samples
                  if stretch * span <= at - start < (stretch + 1) * span]
        if levels:
            print(f"  {stretch * span:5.0f}-{(stretch + 1) * span:3.0f} s  "
                  f"{statistics.median(levels):5.1f} / {max(levels):5.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    sound = SoundServer("pulseaudio")
    os.environ["PULSE_SERVER"] = sound.env["PULSE_SERVER"]
    try:
        asyncio.run(measure(args.seconds, sound))
    finally:
        sound.stop()


if __name__ == "__main__":
    main()
